"""Reactor experiments (``kind = "covariance"``) from their specification: validation and the
model arrays (true spectrum x response x baseline slices -> sparse weights, covariance,
normalisation groups).

    [experiment] [reactor] [observable] [response] [[detectors]] ([[detectors.segments]])
    [events] [systematics] [covariance] [null_prediction] [observed]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .core import Experiment, LinearPart, check_covariance
from .schema import WEIGHT_RTOL, SpecReader, begin, canonical
from .spectra import IBD_THRESHOLD, ISOTOPES, PROMPT_OFFSET, RESOLUTION_COMBINE, gaussian_response, true_spectrum

OBSERVABLES = ("spectrum", "ratio", "ratio_to_reference")
SHAPE_ONLY = ("per_energy_bin", "total", "none")
SYSTEMATICS = ("uncorrelated", "energy_correlated", "detector_correlated", "total_correlated")

_REACTOR_TOP = ("schema", "experiment", "reactor", "observable", "response", "detectors", "events",
                "systematics", "covariance", "null_prediction", "observed")


def _response(ctx: SpecReader, d: Any, field: str, n_prompt: int, n_true: int) -> tuple[dict, Any]:
    """Validate a response table. Returns (canonical, key) where key identifies the matrix."""
    if not isinstance(d, dict):
        raise ctx.err(field, "must be a table")
    typ = ctx.string(ctx.req(d, "type", field), f"{field}.type", ("gaussian", "matrix"))
    if typ == "gaussian":
        ctx.table(d, field, ("type", "a", "b", "combine", "prompt_offset"))
        a = ctx.number(d.get("a", 0.0), f"{field}.a", lo=0.0)
        b = ctx.number(d.get("b", 0.0), f"{field}.b", lo=0.0)
        combine = ctx.string(d.get("combine", "quadrature"), f"{field}.combine", RESOLUTION_COMBINE)
        if a == 0 and b == 0:
            raise ctx.err(field, "a Gaussian resolution needs a > 0 or b > 0 (sigma/E = a/sqrt(E) (+) b, or "
                                 "sigma = a sqrt(E) + b E with combine = 'linear')")
        off = ctx.number(d.get("prompt_offset", PROMPT_OFFSET), f"{field}.prompt_offset")
        rc = {"type": "gaussian", "a": a, "b": b, "prompt_offset": off}
        if combine != "quadrature":  # the default is not stored: existing models keep their hash
            rc["combine"] = combine
        return rc, ("gaussian", a, b, off, combine)
    ctx.table(d, field, ("type", "matrix"))
    M = ctx.array(ctx.req(d, "matrix", field), f"{field}.matrix", (n_prompt, n_true), lo=0.0)
    return {"type": "matrix", "matrix": M.tolist()}, ("matrix", M)


def build_reactor(ctx: SpecReader, spec: dict) -> Experiment:
    """Validate a ``kind = "covariance"`` specification and build the experiment."""
    canon, meta = begin(ctx, spec, _REACTOR_TOP)
    name = meta["name"]

    # reactor: spectrum in true energy ------------------------------------------------
    rx = ctx.table(ctx.req(spec, "reactor", ""), "reactor", ("fission_fractions", "spectrum", "true_energy"))
    true_canon, tedges = ctx.edges(ctx.req(rx, "true_energy", "reactor"), "reactor.true_energy")
    n_true = tedges.size - 1
    if ("fission_fractions" in rx) == ("spectrum" in rx):
        raise ctx.err("reactor", "give exactly one of 'fission_fractions' (Huber-Mueller flux x IBD) "
                                 "or 'spectrum' (events per true-energy bin)")
    if "fission_fractions" in rx:
        ff = ctx.table(rx["fission_fractions"], "reactor.fission_fractions", ISOTOPES)
        ffc = {k: ctx.number(ff[k], f"reactor.fission_fractions.{k}", lo=0.0) for k in ff}
        if sum(ffc.values()) <= 0:
            raise ctx.err("reactor.fission_fractions", "at least one fission fraction must be > 0")
        S, En, wn, sn = true_spectrum(tedges, ffc)
        nodes = (En, wn, sn)
        e_lo = np.maximum(tedges[:-1], IBD_THRESHOLD)
        reactor_c = {"fission_fractions": ffc, "true_energy": true_canon}
    else:
        S = ctx.array(rx["spectrum"], "reactor.spectrum", (n_true,), lo=0.0)
        nodes = None
        e_lo = tedges[:-1].copy()
        reactor_c = {"spectrum": S.tolist(), "true_energy": true_canon}
    if not np.any(S > 0):
        raise ctx.err("reactor", "the true-energy spectrum has no events (all bins zero or below the IBD threshold)")
    canon["reactor"] = reactor_c

    # observable ---------------------------------------------------------------------------
    ob = ctx.table(ctx.req(spec, "observable", ""), "observable",
                   ("type", "prompt_edges", "shape_only", "norm_prior", "numerator", "denominator"))
    otype = ctx.string(ctx.req(ob, "type", "observable"), "observable.type", OBSERVABLES)
    pcanon, pedges = ctx.edges(ctx.req(ob, "prompt_edges", "observable"), "observable.prompt_edges")
    n_prompt = pedges.size - 1
    shape_only = ctx.string(ob.get("shape_only", "none"), "observable.shape_only", SHAPE_ONLY)
    norm_prior = ctx.number(ob.get("norm_prior", 0.0), "observable.norm_prior", lo=0.0)
    obc = {"type": otype, "prompt_edges": pcanon, "shape_only": shape_only, "norm_prior": norm_prior}
    if otype == "ratio":
        obc["numerator"] = ctx.string(ctx.req(ob, "numerator", "observable"), "observable.numerator")
        obc["denominator"] = ctx.string(ctx.req(ob, "denominator", "observable"), "observable.denominator")
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
    dets = ctx.req(spec, "detectors", "")
    if not isinstance(dets, list) or not dets or not all(isinstance(x, dict) for x in dets):
        raise ctx.err("detectors", "must be a non-empty array of tables ([[detectors]])")
    det_c, det_names, det_raw, det_boxes, det_events = [], [], [], [], []
    for i, d in enumerate(dets):
        f = f"detectors[{i}]"
        ctx.table(d, f, ("name", "events", "segments"))
        dname = ctx.string(ctx.req(d, "name", f), f"{f}.name")
        if dname in det_names:
            raise ctx.err(f"{f}.name", f"duplicate detector name {dname!r}")
        dc: dict[str, Any] = {"name": dname}
        if "events" in d:
            dc["events"] = ctx.number(d["events"], f"{f}.events", lo=0.0, lo_open=True)
        segs = ctx.req(d, "segments", f)
        if not isinstance(segs, list) or not segs or not all(isinstance(x, dict) for x in segs):
            raise ctx.err(f"{f}.segments", "must be a non-empty array of tables ([[detectors.segments]])")
        seg_c = []
        boxes = []  # per detector: list of (n_slices*n_true, 4) arrays
        raw_cols = []  # matching (n_prompt, n_slices*n_true) weight blocks
        for j, s in enumerate(segs):
            g = f"{f}.segments[{j}]"
            ctx.table(s, g, ("slices", "efficiency", "response", "label"))
            sl = ctx.array(ctx.req(s, "slices", g), f"{g}.slices", (None, 3))
            for k, (lo, hi, w) in enumerate(sl):
                if lo <= 0:
                    raise ctx.err(f"{g}.slices[{k}]", f"baseline must be > 0 m, got L_lo = {lo:g}")
                if hi < lo:
                    raise ctx.err(f"{g}.slices[{k}]", f"needs L_lo <= L_hi, got {lo:g} > {hi:g}")
                if w <= 0:
                    raise ctx.err(f"{g}.slices[{k}]", f"weight must be > 0, got {w:g}")
            eff = ctx.number(s.get("efficiency", 1.0), f"{g}.efficiency", lo=0.0, lo_open=True)
            sc: dict[str, Any] = {"slices": sl.tolist(), "efficiency": eff}
            if "label" in s:
                sc["label"] = ctx.string(s["label"], f"{g}.label")
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
        ctx.table(ev, "events", ("total", "stat_inflation"))
        if "total" in ev:
            total_events = ctx.number(ev["total"], "events.total", lo=0.0, lo_open=True)
            evc["total"] = total_events
        inflation = ctx.number(ev.get("stat_inflation", 1.0), "events.stat_inflation", lo=0.0, lo_open=True)
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
        npd = ctx.table(spec["null_prediction"], "null_prediction", ("values",))
        null_given = ctx.array(ctx.req(npd, "values", "null_prediction"), "null_prediction.values", (n_bins,),
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
        cv = ctx.table(spec["covariance"], "covariance", ("matrix",))
        M = ctx.array(ctx.req(cv, "matrix", "covariance"), "covariance.matrix", (n_bins, n_bins))
        try:
            C = check_covariance(M, "covariance.matrix", n_bins)
        except ValueError as e:
            raise ctx.err("covariance.matrix", str(e).split(": ", 1)[1]) from None
        canon["covariance"] = {"matrix": M.tolist()}
        if "systematics" in spec:
            raise ctx.err("systematics", "not used when an explicit [covariance] matrix is given; remove one of them")
    else:
        sy = ctx.table(spec.get("systematics", {}), "systematics", SYSTEMATICS)
        syc = {k: ctx.number(sy.get(k, 0.0), f"systematics.{k}", lo=0.0) for k in SYSTEMATICS}
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
        ov = ctx.table(spec["observed"], "observed", ("values",))
        observed = ctx.array(ctx.req(ov, "values", "observed"), "observed.values", (n_bins,))
        canon["observed"] = {"values": observed.tolist()}

    labels = [f"{groups[g]}, {pedges[e]:g}-{pedges[e + 1]:g} MeV" for g in range(n_groups) for e in range(n_prompt)]
    return Experiment(name=name, description=meta["description"], kind="covariance", bin_labels=labels,
                      parts=parts, covariance=C, norm_groups=norm_groups, norm_prior=norm_prior, observed=observed,
                      approximate=meta["approximate"], sources=meta["sources"], definition=canonical(canon))
