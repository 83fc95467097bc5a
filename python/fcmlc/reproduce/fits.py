"""The fits behind Figs. 2, 3 and 5: the Asimov sensitivity curve, and one FCMLC / Wilks /
Feldman-Cousins comparison on a data vector with the numbers the report prints (extent of each
region, whether it holds the truth or excludes no oscillation, grid-edge warnings)."""
from __future__ import annotations

import numpy as np

from ..frequentist import Chi2Model, chi2_scan, raster_limits, wilks_threshold
from ..physics import Grid, sin2_2theta
from ..regions import edges_touched, point_edges
from ..validation import compare
from .scales import FIT_LEVELS, SENSITIVITY_LEVEL, Scale


def sensitivity(eset, grid: Grid, level: float = SENSITIVITY_LEVEL):
    """Asimov sensitivity: the raster-scan (1 dof Wilks) upper limit on |Ue4| per dm2 for the
    no-oscillation expectation. Returns (ue4_limit, dm2) with NaN where there is no limit."""
    cm = Chi2Model(eset.experiments, grid)
    scan = chi2_scan(cm, np.asarray(eset.null_expectation, dtype=float))
    return raster_limits(scan.delta_chi2, level, grid), grid.dm2


def wilks_2dof(level) -> float:
    """The Delta-chi2 threshold of Wilks' theorem with 2 degrees of freedom at ``level``."""
    return wilks_threshold(level, 2)


def region_extent(mask, ue4, dm2) -> dict | None:
    """sin^2 2theta and dm2 ranges spanned by a region mask (n_dm2, n_ue4) on centres ue4 x dm2."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    s = sin2_2theta(np.asarray(ue4)[cols])
    d = np.asarray(dm2)[rows]
    return {"sin2_min": float(s.min()), "sin2_max": float(s.max()), "dm2_min": float(d.min()),
            "dm2_max": float(d.max()), "n_cells": int(mask.sum())}


def compare_fit(model, x, fc, exps, sc: Scale, seed: int, threads, truth):
    """validation.compare plus the numbers the report needs (extent of regions, truth inside)."""
    comp = compare(model, x, fc=fc, experiments=exps, levels=FIT_LEVELS, n_samples=sc.mc_samples, seed=seed,
                   threads=threads, truth=truth)
    post = comp.posterior
    s = comp.summary()
    info = {"best_point": s["best_point"], "iou": s["iou"], "area_fraction": s["area_fraction"],
            "seconds": s.get("seconds"), "regions": {}}
    g = comp.grid
    d = comp.scan.delta_chi2

    # where the chi2 puts its best fit, how credible FCMLC finds that point, and grid-edge warnings
    bu, bd = comp.scan.best_point
    try:
        info["chi2_best_credible_level"] = float(post.credible_level_of(bu, bd))
    except ValueError:  # outside the posterior grid
        info["chi2_best_credible_level"] = None
    iu_b, id_b = g.unravel(int(comp.scan.best_index))
    id_f, iu_f = np.unravel_index(int(np.argmax(post.density)), post.shape)  # the FCMLC best point's cell
    info["edges"] = {
        "chi2_best": point_edges(int(iu_b), int(id_b), (g.n_dm2, g.n_ue4)),
        "fcmlc_best": point_edges(int(iu_f), int(id_f), post.shape),
        "regions": {f"{L:g}": {m: edges_touched(comp.regions[m][L]) for m in comp.regions} for L in FIT_LEVELS},
    }
    if truth is not None:
        info["truth"] = {"ue4": truth[0], "dm2": truth[1], "sin2_2theta": float(sin2_2theta(truth[0]))}
        # a truth on the boundary of the parameter space (the null-like one) is in the outermost
        # posterior cell (credible_level_of allows for the rounding of the cell edges)
        try:
            info["truth_credible_level"] = float(post.credible_level_of(*truth))
        except ValueError:  # a truth outside the posterior grid
            info["truth_credible_level"] = None
        p = g.nearest(*truth)
        iu, idm = g.unravel(p)
        info["truth_delta_chi2_nearest_point"] = float(d[idm, iu])
    for L in FIT_LEVELS:
        key = f"{L:g}"
        reg = {"fcmlc": region_extent(comp.regions["fcmlc"][L], post.ue4, post.dm2),
               "fcmlc_excludes_null": bool(post.excludes_null(L)),
               "fcmlc_mass": float(post.region_mass(L))}
        for m in ("wilks", "fc"):
            if m in comp.regions:
                mask = comp.regions[m][L]
                reg[m] = region_extent(mask, g.ue4, g.dm2)
                reg[f"{m}_excludes_null"] = bool(not mask[:, 0].any())
                if truth is not None:
                    reg[f"{m}_contains_truth"] = bool(mask[idm, iu])
        if truth is not None and info["truth_credible_level"] is not None:
            reg["fcmlc_contains_truth"] = bool(info["truth_credible_level"] < L)
        info["regions"][key] = reg
    return comp, info
