"""Experiment model specifications (the TOML schema): validation, canonical form, and build.

A specification is a nested dict (parsed TOML). :func:`build` validates it, fills defaults,
and returns an :class:`~fcmlc.experiments.core.Experiment` whose ``definition()`` is the
canonical specification. Every validation error is a ValueError of the form

    "<source>: field '<path>': <what is wrong>"

so that a user sees which file and which entry to fix. The schema is documented in
docs/experiments.md; two kinds exist:

``kind = "covariance"`` (reactor spectra)
    [experiment] [reactor] [observable] [response] [[detectors]] ([[detectors.segments]])
    [events] [systematics] [covariance] [null_prediction] [observed]
``kind = "pulls"`` (radioactive sources on gallium)
    [experiment] [neutrino_sources.<name>] [target] [[measurements]] [[pulls]]
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from . import gallium as ga
from .core import Experiment, LinearPart, check_covariance
from .geometry import source_distance_slices
from .spectra import IBD_THRESHOLD, ISOTOPES, PROMPT_OFFSET, RESOLUTION_COMBINE, gaussian_response, true_spectrum

SCHEMA_VERSION = 1
OBSERVABLES = ("spectrum", "ratio", "ratio_to_reference")
SHAPE_ONLY = ("per_energy_bin", "total", "none")
SYSTEMATICS = ("uncorrelated", "energy_correlated", "detector_correlated", "total_correlated")
#: weights below this fraction of a bin's largest weight are dropped from the sparse matrix
WEIGHT_RTOL = 1e-12


class _Ctx:
    """Where a specification came from, for error messages."""

    def __init__(self, source: str):
        self.source = str(source)

    def err(self, field: str, msg: str) -> ValueError:
        return ValueError(f"{self.source}: field '{field}': {msg}")


# --------------------------------------------------------------------------------------
# typed getters
# --------------------------------------------------------------------------------------

def _table(ctx: _Ctx, d: Any, field: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(d, dict):
        raise ctx.err(field or "<top level>", f"must be a table, got {type(d).__name__}")
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise ctx.err(f"{field + '.' if field else ''}{unknown[0]}",
                      f"unknown field (allowed here: {', '.join(allowed)})")
    return d


def _req(ctx: _Ctx, d: dict, key: str, field: str):
    if key not in d:
        raise ctx.err(f"{field}.{key}" if field else key, "missing required field")
    return d[key]


def _str(ctx: _Ctx, v: Any, field: str, choices: tuple[str, ...] | None = None, nonempty: bool = True) -> str:
    if not isinstance(v, str):
        raise ctx.err(field, f"must be a string, got {type(v).__name__}")
    if nonempty and not v.strip():
        raise ctx.err(field, "must not be empty")
    if choices is not None and v not in choices:
        raise ctx.err(field, f"must be one of {', '.join(repr(c) for c in choices)}; got {v!r}")
    return v


def _bool(ctx: _Ctx, v: Any, field: str) -> bool:
    if not isinstance(v, bool):
        raise ctx.err(field, f"must be true or false, got {v!r}")
    return v


def _num(ctx: _Ctx, v: Any, field: str, lo: float | None = None, lo_open: bool = False,
         hi: float | None = None, allow_inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ctx.err(field, f"must be a number, got {type(v).__name__} {v!r}")
    x = float(v)
    if math.isnan(x):
        raise ctx.err(field, "is NaN (must be a finite number)")
    if math.isinf(x) and not allow_inf:
        raise ctx.err(field, "must be finite")
    if lo is not None and (x < lo or (lo_open and x == lo)):
        raise ctx.err(field, f"must be {'>' if lo_open else '>='} {lo:g}, got {x:g}")
    if hi is not None and x > hi:
        raise ctx.err(field, f"must be <= {hi:g}, got {x:g}")
    return x


def _int(ctx: _Ctx, v: Any, field: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ctx.err(field, f"must be an integer, got {v!r}")
    if v < lo:
        raise ctx.err(field, f"must be >= {lo}, got {v}")
    return int(v)


def _array(ctx: _Ctx, v: Any, field: str, shape: tuple[int | None, ...], lo: float | None = None,
           lo_open: bool = False) -> np.ndarray:
    """A (nested) list of numbers with the given shape (None = any length >= 1)."""
    if not isinstance(v, (list, tuple)):
        raise ctx.err(field, f"must be an array, got {type(v).__name__}")
    try:
        a = np.array(v, dtype=float)
    except (TypeError, ValueError):
        raise ctx.err(field, "must be an array of numbers"
                      + (" with rows of equal length" if len(shape) > 1 else "")) from None
    if any(isinstance(x, bool) for x in np.array(v, dtype=object).ravel()):
        raise ctx.err(field, "must contain numbers, not booleans")
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)) or a.size == 0:
        want = " x ".join("n" if s is None else str(s) for s in shape)
        raise ctx.err(field, f"wrong shape: expected {want}, got {' x '.join(map(str, a.shape)) or 'empty'}")
    if np.any(np.isnan(a)):
        idx = tuple(int(i) for i in np.argwhere(np.isnan(a))[0])
        raise ctx.err(field, f"contains NaN at index {list(idx)}")
    if not np.all(np.isfinite(a)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise ctx.err(field, f"contains an infinite value at index {list(idx)}")
    if lo is not None:
        bad = (a < lo) | (a == lo) if lo_open else (a < lo)
        if np.any(bad):
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ctx.err(field, f"entries must be {'>' if lo_open else '>='} {lo:g}; "
                                 f"index {list(idx)} is {a[idx]:g}")
    return a


def _str_list(ctx: _Ctx, v: Any, field: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ctx.err(field, "must be an array of strings")
    return list(v)


def _edges(ctx: _Ctx, v: Any, field: str) -> tuple[Any, np.ndarray]:
    """Bin edges: an explicit increasing list, or {min, max, step}. Returns (canonical, edges)."""
    if isinstance(v, dict):
        _table(ctx, v, field, ("min", "max", "step"))
        lo = _num(ctx, _req(ctx, v, "min", field), f"{field}.min", lo=0.0, lo_open=True)
        hi = _num(ctx, _req(ctx, v, "max", field), f"{field}.max")
        step = _num(ctx, _req(ctx, v, "step", field), f"{field}.step", lo=0.0, lo_open=True)
        if hi <= lo:
            raise ctx.err(field, f"max ({hi:g}) must exceed min ({lo:g})")
        n = (hi - lo) / step
        k = int(round(n))
        if k < 1 or abs(n - k) > 1e-6:
            raise ctx.err(field, f"(max - min) / step = {n:g} is not a whole number of bins")
        e = np.round(lo + step * np.arange(k + 1), 12)
        e[-1] = hi
        return {"min": lo, "max": hi, "step": step}, e
    e = _array(ctx, v, field, (None,), lo=0.0, lo_open=True)
    if e.size < 2:
        raise ctx.err(field, "needs at least two edges")
    if np.any(np.diff(e) <= 0):
        i = int(np.argmax(np.diff(e) <= 0))
        raise ctx.err(field, f"edges must increase strictly (edge {i + 1} = {e[i + 1]:g} after {e[i]:g})")
    return [float(x) for x in e], e


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------

def build(spec: dict, source: str = "<dict>") -> Experiment:
    """Validate a specification dict and build the experiment."""
    ctx = _Ctx(source)
    if not isinstance(spec, dict):
        raise ctx.err("<top level>", "an experiment specification must be a table")
    exp = _req(ctx, spec, "experiment", "")
    if not isinstance(exp, dict):
        raise ctx.err("experiment", "must be a table")
    kind = _str(ctx, _req(ctx, exp, "kind", "experiment"), "experiment.kind", ("covariance", "pulls"))
    if "schema" in spec:
        sv = _int(ctx, spec["schema"], "schema", 1)
        if sv > SCHEMA_VERSION:
            raise ctx.err("schema", f"version {sv} is newer than this fcmlc understands ({SCHEMA_VERSION})")
    if kind == "covariance":
        return _build_reactor(ctx, spec)
    return _build_source(ctx, spec)


def _experiment_meta(ctx: _Ctx, d: Any) -> dict:
    _table(ctx, d, "experiment", ("name", "description", "kind", "approximate", "sources", "notes"))
    return {
        "name": _str(ctx, _req(ctx, d, "name", "experiment"), "experiment.name"),
        "description": _str(ctx, d.get("description", ""), "experiment.description", nonempty=False),
        "kind": d["kind"],
        "approximate": _bool(ctx, d.get("approximate", False), "experiment.approximate"),
        "sources": _str_list(ctx, d.get("sources", []), "experiment.sources"),
        "notes": _str_list(ctx, d.get("notes", []), "experiment.notes"),
    }


# --------------------------------------------------------------------------------------
# reactor (covariance) experiments
# --------------------------------------------------------------------------------------

_REACTOR_TOP = ("schema", "experiment", "reactor", "observable", "response", "detectors", "events",
                "systematics", "covariance", "null_prediction", "observed")


def _response(ctx: _Ctx, d: Any, field: str, n_prompt: int, n_true: int) -> tuple[dict, Any]:
    """Validate a response table. Returns (canonical, key) where key identifies the matrix."""
    if not isinstance(d, dict):
        raise ctx.err(field, "must be a table")
    typ = _str(ctx, _req(ctx, d, "type", field), f"{field}.type", ("gaussian", "matrix"))
    if typ == "gaussian":
        _table(ctx, d, field, ("type", "a", "b", "combine", "prompt_offset"))
        a = _num(ctx, d.get("a", 0.0), f"{field}.a", lo=0.0)
        b = _num(ctx, d.get("b", 0.0), f"{field}.b", lo=0.0)
        combine = _str(ctx, d.get("combine", "quadrature"), f"{field}.combine", RESOLUTION_COMBINE)
        if a == 0 and b == 0:
            raise ctx.err(field, "a Gaussian resolution needs a > 0 or b > 0 (sigma/E = a/sqrt(E) (+) b, or "
                                 "sigma = a sqrt(E) + b E with combine = 'linear')")
        off = _num(ctx, d.get("prompt_offset", PROMPT_OFFSET), f"{field}.prompt_offset")
        rc = {"type": "gaussian", "a": a, "b": b, "prompt_offset": off}
        if combine != "quadrature":  # the default is not stored: existing models keep their hash
            rc["combine"] = combine
        return rc, ("gaussian", a, b, off, combine)
    _table(ctx, d, field, ("type", "matrix"))
    M = _array(ctx, _req(ctx, d, "matrix", field), f"{field}.matrix", (n_prompt, n_true), lo=0.0)
    return {"type": "matrix", "matrix": M.tolist()}, ("matrix", M)


def _build_reactor(ctx: _Ctx, spec: dict) -> Experiment:
    _table(ctx, spec, "", _REACTOR_TOP)
    canon: dict[str, Any] = {"schema": SCHEMA_VERSION}
    meta = _experiment_meta(ctx, spec["experiment"])
    canon["experiment"] = meta
    name = meta["name"]

    # reactor: spectrum in true energy ------------------------------------------------
    rx = _table(ctx, _req(ctx, spec, "reactor", ""), "reactor", ("fission_fractions", "spectrum", "true_energy"))
    true_canon, tedges = _edges(ctx, _req(ctx, rx, "true_energy", "reactor"), "reactor.true_energy")
    n_true = tedges.size - 1
    if ("fission_fractions" in rx) == ("spectrum" in rx):
        raise ctx.err("reactor", "give exactly one of 'fission_fractions' (Huber-Mueller flux x IBD) "
                                 "or 'spectrum' (events per true-energy bin)")
    if "fission_fractions" in rx:
        ff = _table(ctx, rx["fission_fractions"], "reactor.fission_fractions", ISOTOPES)
        ffc = {k: _num(ctx, ff[k], f"reactor.fission_fractions.{k}", lo=0.0) for k in ff}
        if sum(ffc.values()) <= 0:
            raise ctx.err("reactor.fission_fractions", "at least one fission fraction must be > 0")
        S, En, wn, sn = true_spectrum(tedges, ffc)
        nodes = (En, wn, sn)
        e_lo = np.maximum(tedges[:-1], IBD_THRESHOLD)
        reactor_c = {"fission_fractions": ffc, "true_energy": true_canon}
    else:
        S = _array(ctx, rx["spectrum"], "reactor.spectrum", (n_true,), lo=0.0)
        nodes = None
        e_lo = tedges[:-1].copy()
        reactor_c = {"spectrum": S.tolist(), "true_energy": true_canon}
    if not np.any(S > 0):
        raise ctx.err("reactor", "the true-energy spectrum has no events (all bins zero or below the IBD threshold)")
    canon["reactor"] = reactor_c

    # observable ---------------------------------------------------------------------------
    ob = _table(ctx, _req(ctx, spec, "observable", ""), "observable",
                ("type", "prompt_edges", "shape_only", "norm_prior", "numerator", "denominator"))
    otype = _str(ctx, _req(ctx, ob, "type", "observable"), "observable.type", OBSERVABLES)
    pcanon, pedges = _edges(ctx, _req(ctx, ob, "prompt_edges", "observable"), "observable.prompt_edges")
    n_prompt = pedges.size - 1
    shape_only = _str(ctx, ob.get("shape_only", "none"), "observable.shape_only", SHAPE_ONLY)
    norm_prior = _num(ctx, ob.get("norm_prior", 0.0), "observable.norm_prior", lo=0.0)
    obc = {"type": otype, "prompt_edges": pcanon, "shape_only": shape_only, "norm_prior": norm_prior}
    if otype == "ratio":
        obc["numerator"] = _str(ctx, _req(ctx, ob, "numerator", "observable"), "observable.numerator")
        obc["denominator"] = _str(ctx, _req(ctx, ob, "denominator", "observable"), "observable.denominator")
        if obc["numerator"] == obc["denominator"]:
            raise ctx.err("observable.denominator", "must differ from the numerator")
    else:
        for k in ("numerator", "denominator"):
            if k in ob:
                raise ctx.err(f"observable.{k}", "only used with type = 'ratio'")
    canon["observable"] = obc

    # responses -------------------------------------------------------------------------
    resp_cache: dict[Any, np.ndarray] = {}

    def response_matrix(key) -> np.ndarray:
        if key[0] == "matrix":
            return key[1]
        if key not in resp_cache:
            resp_cache[key] = gaussian_response(tedges, pedges, key[1], key[2], key[3], spectrum_nodes=nodes,
                                                combine=key[4])
        return resp_cache[key]

    default_resp = None
    if "response" in spec:
        rc, default_resp = _response(ctx, spec["response"], "response", n_prompt, n_true)
        canon["response"] = rc

    # detectors and segments ----------------------------------------------------------------
    dets = _req(ctx, spec, "detectors", "")
    if not isinstance(dets, list) or not dets or not all(isinstance(x, dict) for x in dets):
        raise ctx.err("detectors", "must be a non-empty array of tables ([[detectors]])")
    det_c, det_names, det_raw, det_boxes, det_events = [], [], [], [], []
    for i, d in enumerate(dets):
        f = f"detectors[{i}]"
        _table(ctx, d, f, ("name", "events", "segments"))
        dname = _str(ctx, _req(ctx, d, "name", f), f"{f}.name")
        if dname in det_names:
            raise ctx.err(f"{f}.name", f"duplicate detector name {dname!r}")
        dc: dict[str, Any] = {"name": dname}
        if "events" in d:
            dc["events"] = _num(ctx, d["events"], f"{f}.events", lo=0.0, lo_open=True)
        segs = _req(ctx, d, "segments", f)
        if not isinstance(segs, list) or not segs or not all(isinstance(x, dict) for x in segs):
            raise ctx.err(f"{f}.segments", "must be a non-empty array of tables ([[detectors.segments]])")
        seg_c = []
        boxes = []  # per detector: list of (n_slices*n_true, 4) arrays
        raw_cols = []  # matching (n_prompt, n_slices*n_true) weight blocks
        for j, s in enumerate(segs):
            g = f"{f}.segments[{j}]"
            _table(ctx, s, g, ("slices", "efficiency", "response", "label"))
            sl = _array(ctx, _req(ctx, s, "slices", g), f"{g}.slices", (None, 3))
            for k, (lo, hi, w) in enumerate(sl):
                if lo <= 0:
                    raise ctx.err(f"{g}.slices[{k}]", f"baseline must be > 0 m, got L_lo = {lo:g}")
                if hi < lo:
                    raise ctx.err(f"{g}.slices[{k}]", f"needs L_lo <= L_hi, got {lo:g} > {hi:g}")
                if w <= 0:
                    raise ctx.err(f"{g}.slices[{k}]", f"weight must be > 0, got {w:g}")
            eff = _num(ctx, s.get("efficiency", 1.0), f"{g}.efficiency", lo=0.0, lo_open=True)
            sc: dict[str, Any] = {"slices": sl.tolist(), "efficiency": eff}
            if "label" in s:
                sc["label"] = _str(ctx, s["label"], f"{g}.label")
            if "response" in s:
                rc, rkey = _response(ctx, s["response"], f"{g}.response", n_prompt, n_true)
                sc["response"] = rc
            elif default_resp is not None:
                rkey = default_resp
            else:
                raise ctx.err(f"{g}.response", "no detector response: give a top-level [response] or one per segment")
            seg_c.append(sc)
            R = response_matrix(rkey)  # (n_prompt, n_true)
            geo = sl[:, 2] / (sl[:, 0] * sl[:, 1])  # slice weight x <1/L^2> over the slice
            # boxes: slice-major, true-energy-minor
            bx = np.empty((sl.shape[0], n_true, 4))
            bx[:, :, 0] = sl[:, 0:1]
            bx[:, :, 1] = sl[:, 1:2]
            bx[:, :, 2] = e_lo[None, :]
            bx[:, :, 3] = np.maximum(tedges[1:], e_lo)[None, :]
            boxes.append(bx.reshape(-1, 4))
            blk = eff * geo[None, :, None] * (S[None, None, :] * R[:, None, :])  # (n_prompt, n_slices, n_true)
            raw_cols.append(blk.reshape(n_prompt, -1))
        dc["segments"] = seg_c
        det_c.append(dc)
        det_names.append(dname)
        det_boxes.append(np.concatenate(boxes))
        det_raw.append(np.concatenate(raw_cols, axis=1))
        det_events.append(dc.get("events"))
    canon["detectors"] = det_c
    for i, raw in enumerate(det_raw):
        tot = raw.sum(axis=1)
        if not np.any(tot > 0):
            raise ctx.err(f"detectors[{i}]", "no events reach the prompt-energy range (check energies and response)")

    # which detectors form the data vector -------------------------------------------------
    if otype == "ratio":
        for k in ("numerator", "denominator"):
            if obc[k] not in det_names:
                raise ctx.err(f"observable.{k}", f"no detector named {obc[k]!r} (detectors: {', '.join(det_names)})")
        unused = [n for n in det_names if n not in (obc["numerator"], obc["denominator"])]
        if unused:
            raise ctx.err("detectors", f"detector {unused[0]!r} is not used by the ratio")
        groups = [f"{obc['numerator']}/{obc['denominator']}"]
    else:
        groups = list(det_names)
    n_groups = len(groups)
    n_bins = n_groups * n_prompt
    if shape_only == "per_energy_bin" and n_groups == 1:
        raise ctx.err("observable.shape_only", "'per_energy_bin' with a single spectrum leaves no information "
                                               "(every bin gets its own free normalisation); use 'total'")

    # events ------------------------------------------------------------------------------
    ev = spec.get("events")
    evc: dict[str, Any] = {}
    total_events = None
    inflation = 1.0
    if ev is not None:
        _table(ctx, ev, "events", ("total", "stat_inflation"))
        if "total" in ev:
            total_events = _num(ctx, ev["total"], "events.total", lo=0.0, lo_open=True)
            evc["total"] = total_events
        inflation = _num(ctx, ev.get("stat_inflation", 1.0), "events.stat_inflation", lo=0.0, lo_open=True)
        evc["stat_inflation"] = inflation
        canon["events"] = evc
    per_det = [e is not None for e in det_events]
    if any(per_det) and not all(per_det):
        missing = det_names[per_det.index(False)]
        raise ctx.err("detectors", f"either every detector gives 'events' or none does (detector {missing!r} has none)")
    if all(per_det) and total_events is not None:
        raise ctx.err("events.total", "give either events.total or events per detector, not both")
    have_counts = all(per_det) or total_events is not None

    # counts per detector and prompt bin (for normalisation and statistics)
    raw_tot = [r.sum(axis=1) for r in det_raw]
    counts = None
    if have_counts:
        if all(per_det):
            counts = [rt * (e / rt.sum()) for rt, e in zip(raw_tot, det_events)]
        else:
            k = total_events / sum(rt.sum() for rt in raw_tot)
            counts = [rt * k for rt in raw_tot]

    # explicit null prediction ------------------------------------------------------------------
    null_given = None
    if "null_prediction" in spec:
        if otype != "spectrum":
            raise ctx.err("null_prediction", "only meaningful for observable type 'spectrum'")
        npd = _table(ctx, spec["null_prediction"], "null_prediction", ("values",))
        null_given = _array(ctx, _req(ctx, npd, "values", "null_prediction"), "null_prediction.values", (n_bins,),
                            lo=0.0, lo_open=True)
        canon["null_prediction"] = {"values": null_given.tolist()}

    # weights and parts -----------------------------------------------------------------------
    boxes_all = np.concatenate(det_boxes)
    offs = np.cumsum([0] + [b.shape[0] for b in det_boxes])
    if otype == "ratio":
        parts = []
        iden = [det_names.index(obc["numerator"]), det_names.index(obc["denominator"])]
        scale = n_prompt / raw_tot[iden[1]].sum()
        for di in iden:
            if np.any(raw_tot[di] <= 0):
                p = int(np.argmin(raw_tot[di]))
                raise ctx.err(f"detectors[{di}]", f"prompt bin {p} has no events, the ratio is undefined")
            parts.append(LinearPart.from_dense(det_boxes[di], det_raw[di] * scale, WEIGHT_RTOL))
        null_counts = None
    else:
        W = np.zeros((n_bins, boxes_all.shape[0]))
        for di, raw in enumerate(det_raw):
            W[di * n_prompt:(di + 1) * n_prompt, offs[di]:offs[di + 1]] = raw
        row = W.sum(axis=1)
        if np.any(row <= 0):
            r = int(np.argmin(row))
            raise ctx.err("observable.prompt_edges", f"bin {r} ({groups[r // n_prompt]}, "
                                                     f"{pedges[r % n_prompt]:g}-{pedges[r % n_prompt + 1]:g} MeV) "
                                                     "receives no events")
        if otype == "ratio_to_reference":
            target = np.ones(n_bins)
        elif null_given is not None:
            target = null_given
        elif have_counts:
            target = np.concatenate(counts)
        else:
            raise ctx.err("events", "a spectrum needs its normalisation: events.total, events per detector, "
                                    "or [null_prediction]")
        parts = [LinearPart.from_dense(boxes_all, W, WEIGHT_RTOL, row_sums=target)]
        null_counts = null_given
    null = parts[0].null / parts[1].null if otype == "ratio" else parts[0].null

    # covariance ----------------------------------------------------------------------------
    if "covariance" in spec:
        cv = _table(ctx, spec["covariance"], "covariance", ("matrix",))
        M = _array(ctx, _req(ctx, cv, "matrix", "covariance"), "covariance.matrix", (n_bins, n_bins))
        try:
            C = check_covariance(M, "covariance.matrix", n_bins)
        except ValueError as e:
            raise ctx.err("covariance.matrix", str(e).split(": ", 1)[1]) from None
        canon["covariance"] = {"matrix": M.tolist()}
        if "systematics" in spec:
            raise ctx.err("systematics", "not used when an explicit [covariance] matrix is given; remove one of them")
    else:
        sy = _table(ctx, spec.get("systematics", {}), "systematics", SYSTEMATICS)
        syc = {k: _num(ctx, sy.get(k, 0.0), f"systematics.{k}", lo=0.0) for k in SYSTEMATICS}
        canon["systematics"] = syc
        # statistical counts behind each bin
        if null_counts is not None:
            var_rel = inflation / null_counts
        elif not have_counts:
            raise ctx.err("events", "the covariance is built from event counts: give events.total or events per "
                                    "detector (or an explicit [covariance] matrix)")
        elif otype == "ratio":
            var_rel = inflation * (1.0 / counts[iden[0]] + 1.0 / counts[iden[1]])
        else:
            var_rel = inflation / np.concatenate(counts)
        if not np.all(np.isfinite(var_rel)):
            raise ctx.err("events", "a bin has no events, its statistical error is undefined")
        energy = np.tile(np.arange(n_prompt), n_groups)
        group = np.repeat(np.arange(n_groups), n_prompt)
        V = np.diag(var_rel + syc["uncorrelated"] ** 2)
        V += syc["energy_correlated"] ** 2 * (energy[:, None] == energy[None, :])
        V += syc["detector_correlated"] ** 2 * (group[:, None] == group[None, :])
        V += syc["total_correlated"] ** 2
        C = V * np.outer(null, null)

    # normalisation groups (one statistical model: a multiplicative normalisation per group) ----
    if shape_only == "per_energy_bin":
        norm_groups = np.tile(np.arange(n_prompt), n_groups)
    elif shape_only == "total":
        norm_groups = np.zeros(n_bins, dtype=np.int64)
    else:
        norm_groups = np.full(n_bins, -1, dtype=np.int64)
        if norm_prior > 0:
            raise ctx.err("observable.norm_prior", "a prior on the normalisation needs normalisation groups "
                                                   "(shape_only = 'per_energy_bin' or 'total')")

    # observed ------------------------------------------------------------------------------------
    observed = None
    if "observed" in spec:
        ov = _table(ctx, spec["observed"], "observed", ("values",))
        observed = _array(ctx, _req(ctx, ov, "values", "observed"), "observed.values", (n_bins,))
        canon["observed"] = {"values": observed.tolist()}

    labels = [f"{groups[g]}, {pedges[e]:g}-{pedges[e + 1]:g} MeV" for g in range(n_groups) for e in range(n_prompt)]
    return Experiment(name=name, description=meta["description"], kind="covariance", bin_labels=labels,
                      parts=parts, covariance=C, norm_groups=norm_groups, norm_prior=norm_prior, observed=observed,
                      approximate=meta["approximate"], sources=meta["sources"], definition=_jsonable(canon))


# --------------------------------------------------------------------------------------
# source (pulls) experiments
# --------------------------------------------------------------------------------------

_SOURCE_TOP = ("schema", "experiment", "neutrino_sources", "target", "measurements", "pulls")


def _geometry(ctx: _Ctx, d: Any, field: str) -> dict:
    if not isinstance(d, dict):
        raise ctx.err(field, "must be a table")
    shape = _str(ctx, _req(ctx, d, "shape", field), f"{field}.shape", ("cylinder", "sphere"))
    if shape == "sphere":
        _table(ctx, d, field, ("shape", "radius", "n_slices"))
        g = {"shape": "sphere", "radius": _num(ctx, _req(ctx, d, "radius", field), f"{field}.radius", 0.0, True)}
    else:
        _table(ctx, d, field, ("shape", "radius", "height", "source_height", "exclude_sphere_radius", "n_slices"))
        g = {"shape": "cylinder",
             "radius": _num(ctx, _req(ctx, d, "radius", field), f"{field}.radius", 0.0, True),
             "height": _num(ctx, _req(ctx, d, "height", field), f"{field}.height", 0.0, True)}
        g["source_height"] = _num(ctx, _req(ctx, d, "source_height", field), f"{field}.source_height",
                                  lo=0.0, hi=g["height"])
        g["exclude_sphere_radius"] = _num(ctx, d.get("exclude_sphere_radius", 0.0),
                                          f"{field}.exclude_sphere_radius", lo=0.0)
    g["n_slices"] = _int(ctx, d.get("n_slices", 200), f"{field}.n_slices", 10)
    return g


def _build_source(ctx: _Ctx, spec: dict) -> Experiment:
    _table(ctx, spec, "", _SOURCE_TOP)
    canon: dict[str, Any] = {"schema": SCHEMA_VERSION}
    meta = _experiment_meta(ctx, spec["experiment"])
    canon["experiment"] = meta
    name = meta["name"]

    srcs = _req(ctx, spec, "neutrino_sources", "")
    if not isinstance(srcs, dict) or not srcs:
        raise ctx.err("neutrino_sources", "must be a non-empty table of sources ([neutrino_sources.<name>])")
    src_c, src_lines = {}, {}
    for sname, s in srcs.items():
        f = f"neutrino_sources.{sname}"
        _table(ctx, s, f, ("lines",))
        lines = _array(ctx, _req(ctx, s, "lines", f), f"{f}.lines", (None, 3), lo=0.0, lo_open=True)
        src_c[sname] = {"lines": lines.tolist()}
        src_lines[sname] = lines
    canon["neutrino_sources"] = src_c

    tg = _table(ctx, spec.get("target", {}), "target", ("threshold", "final_Z"))
    threshold = _num(ctx, tg.get("threshold", ga.GA_THRESHOLD), "target.threshold", lo=0.0, lo_open=True)
    Z = _int(ctx, tg.get("final_Z", ga.GE_Z), "target.final_Z", 1)
    canon["target"] = {"threshold": threshold, "final_Z": Z}
    for sname, lines in src_lines.items():
        if np.any(lines[:, 0] <= threshold):
            raise ctx.err(f"neutrino_sources.{sname}.lines", f"a line lies below the capture threshold {threshold:g} MeV")

    meas = _req(ctx, spec, "measurements", "")
    if not isinstance(meas, list) or not meas or not all(isinstance(x, dict) for x in meas):
        raise ctx.err("measurements", "must be a non-empty array of tables ([[measurements]])")
    meas_c, names, boxes, rows, stat, obs = [], [], [], [], [], []
    for i, m in enumerate(meas):
        f = f"measurements[{i}]"
        _table(ctx, m, f, ("name", "source", "geometry", "observed", "stat_sigma"))
        mname = _str(ctx, _req(ctx, m, "name", f), f"{f}.name")
        if mname in names:
            raise ctx.err(f"{f}.name", f"duplicate measurement name {mname!r}")
        sname = _str(ctx, _req(ctx, m, "source", f), f"{f}.source")
        if sname not in src_lines:
            raise ctx.err(f"{f}.source", f"unknown source {sname!r} (defined: {', '.join(src_lines)})")
        geo = _geometry(ctx, _req(ctx, m, "geometry", f), f"{f}.geometry")
        sig = _num(ctx, _req(ctx, m, "stat_sigma", f), f"{f}.stat_sigma", lo=0.0, lo_open=True)
        mc = {"name": mname, "source": sname, "geometry": geo, "stat_sigma": sig}
        if "observed" in m:
            mc["observed"] = _num(ctx, m["observed"], f"{f}.observed")
        meas_c.append(mc)
        names.append(mname)
        stat.append(sig)
        obs.append(mc.get("observed"))
        g = {k: v for k, v in geo.items() if k not in ("shape", "n_slices")}
        try:
            sl = source_distance_slices(geo["shape"], n_slices=geo["n_slices"], **g)
        except ValueError as e:
            raise ctx.err(f"{f}.geometry", str(e)) from None
        lines = src_lines[sname]
        lw = lines[:, 1] * lines[:, 2]
        lw = lw / lw.sum()
        bx = np.empty((lines.shape[0], sl.shape[0], 4))
        bx[:, :, 0] = sl[None, :, 0]
        bx[:, :, 1] = sl[None, :, 1]
        bx[:, :, 2] = lines[:, 0:1]
        bx[:, :, 3] = lines[:, 0:1]
        boxes.append(bx.reshape(-1, 4))
        rows.append((lw[:, None] * sl[None, :, 2]).ravel())
    canon["measurements"] = meas_c
    if any(o is not None for o in obs) and any(o is None for o in obs):
        raise ctx.err(f"measurements[{[o is None for o in obs].index(True)}].observed",
                      "either every measurement gives 'observed' or none does")

    n = len(meas_c)
    offs = np.cumsum([0] + [b.shape[0] for b in boxes])
    W = np.zeros((n, offs[-1]))
    for i, r in enumerate(rows):
        W[i, offs[i]:offs[i + 1]] = r
    part = LinearPart.from_dense(np.concatenate(boxes), W, WEIGHT_RTOL)

    # pulls -------------------------------------------------------------------------------
    pulls = spec.get("pulls", [])
    if not isinstance(pulls, list) or not all(isinstance(x, dict) for x in pulls):
        raise ctx.err("pulls", "must be an array of tables ([[pulls]])")
    pull_c, pnames, sigmas, lowers, applies, kinds = [], [], [], [], [], []
    for p_i, p in enumerate(pulls):
        f = f"pulls[{p_i}]"
        typ = _str(ctx, _req(ctx, p, "type", f), f"{f}.type", ("excited_state", "normalization"))
        if typ == "excited_state":
            _table(ctx, p, f, ("name", "type", "excitation_energy", "bgt_ratio", "sigma", "truncate_at_zero",
                               "applies_to"))
        else:
            _table(ctx, p, f, ("name", "type", "sigma", "applies_to"))
        pname = _str(ctx, _req(ctx, p, "name", f), f"{f}.name")
        if pname in pnames:
            raise ctx.err(f"{f}.name", f"duplicate pull name {pname!r}")
        sg = _num(ctx, _req(ctx, p, "sigma", f), f"{f}.sigma", lo=0.0, lo_open=True)
        ap = p.get("applies_to", "all")
        if ap == "all":
            targets = list(range(n))
        else:
            lst = _str_list(ctx, ap, f"{f}.applies_to")
            for t in lst:
                if t not in names:
                    raise ctx.err(f"{f}.applies_to", f"unknown measurement {t!r} (measurements: {', '.join(names)})")
            targets = [names.index(t) for t in lst]
        pc: dict[str, Any] = {"name": pname, "type": typ, "sigma": sg, "applies_to": ap if ap == "all" else list(ap)}
        if typ == "excited_state":
            pc["excitation_energy"] = _num(ctx, _req(ctx, p, "excitation_energy", f), f"{f}.excitation_energy", lo=0.0)
            pc["bgt_ratio"] = _num(ctx, _req(ctx, p, "bgt_ratio", f), f"{f}.bgt_ratio", lo=0.0)
            pc["truncate_at_zero"] = _bool(ctx, p.get("truncate_at_zero", True), f"{f}.truncate_at_zero")
            lowers.append(-pc["bgt_ratio"] if pc["truncate_at_zero"] else -np.inf)
        else:
            lowers.append(-1.0)  # a rate scale 1 + pi cannot become negative
        pull_c.append(pc)
        pnames.append(pname)
        sigmas.append(sg)
        applies.append(targets)
        kinds.append(typ)
    canon["pulls"] = pull_c

    k = len(pull_c)
    J = np.zeros((n, k))
    for i, m in enumerate(meas_c):
        lines = src_lines[m["source"]]
        xi = {q: ga.excited_state_coefficient(lines, pull_c[q]["excitation_energy"], threshold, Z)
              for q in range(k) if kinds[q] == "excited_state" and i in applies[q]}
        denom = 1.0 + sum(xi[q] * pull_c[q]["bgt_ratio"] for q in xi)
        for q in range(k):
            if i not in applies[q]:
                continue
            J[i, q] = xi[q] / denom if kinds[q] == "excited_state" else 1.0
    S = np.diag(np.square(sigmas)) if k else np.zeros((0, 0))
    null = part.null
    NJ = null[:, None] * J
    C = np.diag(np.square(stat)) + NJ @ S @ NJ.T
    observed = None if obs[0] is None else np.array(obs, dtype=float)
    return Experiment(name=name, description=meta["description"], kind="pulls", bin_labels=names, parts=[part],
                      covariance=C, norm_groups=None, norm_prior=0.0, observed=observed,
                      approximate=meta["approximate"], sources=meta["sources"], definition=_jsonable(canon),
                      pull_names=pnames, pull_jacobian=J, pull_covariance=S, pull_lower=np.array(lowers, dtype=float),
                      stat_sigma=np.array(stat))


def _jsonable(d: Any) -> Any:
    """Canonical JSON-able copy: floats stay floats, -inf/inf/nan are rejected by json.dumps
    only if present (the schema never stores them)."""
    return json.loads(json.dumps(d, allow_nan=False))
