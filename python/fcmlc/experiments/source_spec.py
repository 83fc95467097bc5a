"""Radioactive-source experiments on gallium (``kind = "pulls"``) from their specification:
validation and the model arrays (source lines x detector geometry -> rates, pull Jacobian).

    [experiment] [neutrino_sources.<name>] [target] [[measurements]] [[pulls]]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import gallium as ga
from .core import Experiment, LinearPart
from .geometry import source_distance_slices
from .schema import WEIGHT_RTOL, SpecReader, begin, canonical

_SOURCE_TOP = ("schema", "experiment", "neutrino_sources", "target", "measurements", "pulls")


def _geometry(ctx: SpecReader, d: Any, field: str) -> dict:
    if not isinstance(d, dict):
        raise ctx.err(field, "must be a table")
    shape = ctx.string(ctx.req(d, "shape", field), f"{field}.shape", ("cylinder", "sphere"))
    if shape == "sphere":
        ctx.table(d, field, ("shape", "radius", "n_slices"))
        g = {"shape": "sphere", "radius": ctx.number(ctx.req(d, "radius", field), f"{field}.radius", 0.0, True)}
    else:
        ctx.table(d, field, ("shape", "radius", "height", "source_height", "exclude_sphere_radius", "n_slices"))
        g = {"shape": "cylinder",
             "radius": ctx.number(ctx.req(d, "radius", field), f"{field}.radius", 0.0, True),
             "height": ctx.number(ctx.req(d, "height", field), f"{field}.height", 0.0, True)}
        g["source_height"] = ctx.number(ctx.req(d, "source_height", field), f"{field}.source_height",
                                        lo=0.0, hi=g["height"])
        g["exclude_sphere_radius"] = ctx.number(d.get("exclude_sphere_radius", 0.0),
                                                f"{field}.exclude_sphere_radius", lo=0.0)
    g["n_slices"] = ctx.integer(d.get("n_slices", 200), f"{field}.n_slices", 10)
    return g


def build_source(ctx: SpecReader, spec: dict) -> Experiment:
    """Validate a ``kind = "pulls"`` specification and build the experiment."""
    canon, meta = begin(ctx, spec, _SOURCE_TOP)
    name = meta["name"]

    srcs = ctx.req(spec, "neutrino_sources", "")
    if not isinstance(srcs, dict) or not srcs:
        raise ctx.err("neutrino_sources", "must be a non-empty table of sources ([neutrino_sources.<name>])")
    src_c, src_lines = {}, {}
    for sname, s in srcs.items():
        f = f"neutrino_sources.{sname}"
        ctx.table(s, f, ("lines",))
        lines = ctx.array(ctx.req(s, "lines", f), f"{f}.lines", (None, 3), lo=0.0, lo_open=True)
        src_c[sname] = {"lines": lines.tolist()}
        src_lines[sname] = lines
    canon["neutrino_sources"] = src_c

    tg = ctx.table(spec.get("target", {}), "target", ("threshold", "final_Z"))
    threshold = ctx.number(tg.get("threshold", ga.GA_THRESHOLD), "target.threshold", lo=0.0, lo_open=True)
    Z = ctx.integer(tg.get("final_Z", ga.GE_Z), "target.final_Z", 1)
    canon["target"] = {"threshold": threshold, "final_Z": Z}
    for sname, lines in src_lines.items():
        if np.any(lines[:, 0] <= threshold):
            raise ctx.err(f"neutrino_sources.{sname}.lines", f"a line lies below the capture threshold {threshold:g} MeV")

    meas = ctx.req(spec, "measurements", "")
    if not isinstance(meas, list) or not meas or not all(isinstance(x, dict) for x in meas):
        raise ctx.err("measurements", "must be a non-empty array of tables ([[measurements]])")
    meas_c, names, boxes, rows, stat, obs = [], [], [], [], [], []
    for i, m in enumerate(meas):
        f = f"measurements[{i}]"
        ctx.table(m, f, ("name", "source", "geometry", "observed", "stat_sigma"))
        mname = ctx.string(ctx.req(m, "name", f), f"{f}.name")
        if mname in names:
            raise ctx.err(f"{f}.name", f"duplicate measurement name {mname!r}")
        sname = ctx.string(ctx.req(m, "source", f), f"{f}.source")
        if sname not in src_lines:
            raise ctx.err(f"{f}.source", f"unknown source {sname!r} (defined: {', '.join(src_lines)})")
        geo = _geometry(ctx, ctx.req(m, "geometry", f), f"{f}.geometry")
        sig = ctx.number(ctx.req(m, "stat_sigma", f), f"{f}.stat_sigma", lo=0.0, lo_open=True)
        mc = {"name": mname, "source": sname, "geometry": geo, "stat_sigma": sig}
        if "observed" in m:
            mc["observed"] = ctx.number(m["observed"], f"{f}.observed")
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
        typ = ctx.string(ctx.req(p, "type", f), f"{f}.type", ("excited_state", "normalization"))
        if typ == "excited_state":
            ctx.table(p, f, ("name", "type", "excitation_energy", "bgt_ratio", "sigma", "truncate_at_zero",
                             "applies_to"))
        else:
            ctx.table(p, f, ("name", "type", "sigma", "applies_to"))
        pname = ctx.string(ctx.req(p, "name", f), f"{f}.name")
        if pname in pnames:
            raise ctx.err(f"{f}.name", f"duplicate pull name {pname!r}")
        sg = ctx.number(ctx.req(p, "sigma", f), f"{f}.sigma", lo=0.0, lo_open=True)
        ap = p.get("applies_to", "all")
        if ap == "all":
            targets = list(range(n))
        else:
            lst = ctx.strings(ap, f"{f}.applies_to")
            for t in lst:
                if t not in names:
                    raise ctx.err(f"{f}.applies_to", f"unknown measurement {t!r} (measurements: {', '.join(names)})")
            targets = [names.index(t) for t in lst]
        pc: dict[str, Any] = {"name": pname, "type": typ, "sigma": sg, "applies_to": ap if ap == "all" else list(ap)}
        if typ == "excited_state":
            pc["excitation_energy"] = ctx.number(ctx.req(p, "excitation_energy", f), f"{f}.excitation_energy", lo=0.0)
            pc["bgt_ratio"] = ctx.number(ctx.req(p, "bgt_ratio", f), f"{f}.bgt_ratio", lo=0.0)
            pc["truncate_at_zero"] = ctx.boolean(p.get("truncate_at_zero", True), f"{f}.truncate_at_zero")
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
                      approximate=meta["approximate"], sources=meta["sources"], definition=canonical(canon),
                      pull_names=pnames, pull_jacobian=J, pull_covariance=S, pull_lower=np.array(lowers, dtype=float),
                      stat_sigma=np.array(stat))
