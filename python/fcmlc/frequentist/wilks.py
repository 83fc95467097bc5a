"""Wilks' theorem on a chi2 map: critical values by chi2 quantiles, confidence regions, the
one-parameter raster limits, the goodness of fit of the best fit and the test of no
oscillation, and the summary `fcmlc wilks` writes.

The functions here take a :class:`~fcmlc.frequentist.chi2.Chi2Model` and its
:class:`~fcmlc.frequentist.chi2.Chi2Scan` as arguments (they use their public attributes) and
import neither, so the chi2 module can offer ``Chi2Scan.wilks`` / ``Chi2Scan.raster``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_levels
from ..physics import Grid
from ..regions import edge_warnings

#: Default Wilks levels: 1 sigma (2-D), 90%, 95%, 99%.
WILKS_LEVELS = (0.6827, 0.90, 0.95, 0.99)


def _chi2_dist():
    """scipy.stats.chi2, imported on first use (scipy.stats costs ~0.5 s: `import fcmlc` and
    `fcmlc --help` stay light)."""
    from scipy.stats import chi2

    return chi2


def wilks_threshold(level: float, dof: int = 2) -> float:
    """Delta-chi2 threshold of Wilks' theorem: the `level` quantile of chi2 with `dof` degrees
    of freedom (2.30, 4.61, 5.99, 9.21 for 68.27/90/95/99% with 2 dof)."""
    (level,) = check_levels((level,), "confidence level")
    return float(_chi2_dist().ppf(level, dof))


def wilks_regions(delta_chi2, levels=WILKS_LEVELS, dof: int = 2) -> dict:
    """Wilks' confidence regions: {level: bool mask (Delta-chi2 <= chi2_dof quantile)}, levels
    ascending."""
    d = np.asarray(delta_chi2, dtype=float)
    if np.any(np.isnan(d)):
        raise ValueError("delta_chi2 contains NaN")
    return {L: d <= wilks_threshold(L, dof) for L in check_levels(levels)}


def raster_limits(delta_chi2, level: float = 0.90, grid: Grid | None = None) -> np.ndarray:
    """One-parameter raster scan: for each dm2 row, Delta-chi2 relative to the row minimum
    against the 1-dof threshold (2.71 at 90%); returns the upper limit on |Ue4| per dm2,
    shape (n_dm2,), interpolated linearly in log|Ue4| between the last grid point below and the
    first above the threshold (above the row's best fit). NaN where the row never crosses the
    threshold (no limit inside the grid). `grid` defaults to the paper's ranges with the map's
    shape."""
    d = np.asarray(delta_chi2, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"delta_chi2 must be a (n_dm2, n_ue4) map, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("delta_chi2 contains NaN or inf")
    grid = Grid(shape=(d.shape[1], d.shape[0])) if grid is None else grid
    if (grid.n_dm2, grid.n_ue4) != d.shape:
        raise ValueError(f"map shape {d.shape} does not match the grid (n_dm2, n_ue4) = {(grid.n_dm2, grid.n_ue4)}")
    thr = wilks_threshold(level, 1)
    logu = np.log(grid.ue4)
    out = np.full(d.shape[0], np.nan)
    for j, row in enumerate(d):
        row = row - row.min()
        u0 = int(np.argmin(row))
        above = np.flatnonzero(row[u0:] > thr)
        if above.size == 0:
            continue
        u = u0 + int(above[0])
        f = (thr - row[u - 1]) / (row[u] - row[u - 1])
        out[j] = math.exp(logu[u - 1] + f * (logu[u] - logu[u - 1]))
    return out


# --- tests of one data vector ------------------------------------------------------------------


def goodness_of_fit(chi2_min: float, ndof: int) -> float | None:
    """p-value of the best fit, P(chi2_ndof >= chi2_min) (``Chi2Scan.min`` against
    ``Chi2Scan.ndof``); None when ndof <= 0 (no test possible)."""
    return float(_chi2_dist().sf(float(chi2_min), int(ndof))) if int(ndof) > 0 else None


@dataclass(frozen=True)
class NoOscillationTest:
    """No oscillation (sin^2(2 theta) = 0, not a grid point) against the grid's best fit."""

    chi2: float  #: chi2 of the null hypothesis (the whitened data's |r|^2)
    delta_chi2: float  #: chi2 - min(chi2, grid minimum): >= 0
    p_value: float  #: P(chi2_dof >= delta_chi2) by Wilks' theorem
    level: float
    dof: int
    threshold: float  #: wilks_threshold(level, dof)
    excluded: bool  #: delta_chi2 > threshold


def no_oscillation_test(model, x, scan=None, level: float = 0.95, dof: int = 2,
                        threads: int | None = None) -> NoOscillationTest:
    """Delta-chi2 of no oscillation for one data vector `x` of `model` (a Chi2Model), its Wilks
    p-value and whether it is excluded at `level`. `scan`: the data's Chi2Scan when already
    computed (else it is computed with `threads`)."""
    scan = model.chi2(x, threads=threads) if scan is None else scan
    chi2_null = float(np.sum(model.whiten(x) ** 2))
    delta = chi2_null - min(chi2_null, float(scan.min))
    thr = wilks_threshold(level, dof)
    return NoOscillationTest(chi2_null, delta, float(_chi2_dist().sf(delta, dof)), float(level), int(dof), thr,
                             bool(delta > thr))


def summary(model, scan, x, meta: dict | None = None, levels=WILKS_LEVELS, scan_seconds: float | None = None,
            fc=None) -> dict:
    """The summary of a Wilks scan of one data vector `x` (what `fcmlc wilks` writes to
    summary.json): `meta` (the data source's description) first, then the experiments, grid,
    best fit, chi2_min / ndof and its goodness-of-fit p-value, the no-oscillation test at 95 %
    (2 dof), the Wilks thresholds and region sizes at `levels` (2 dof), the number of dm2 rows
    with a 90 % raster limit, `scan_seconds`, grid-edge warnings and, with `fc` (an FCResult of
    the same experiments and grid: :func:`fcmlc.frequentist.check_compatible`), its file and
    the Feldman-Cousins region sizes."""
    grid = scan.grid
    regions = wilks_regions(scan.delta_chi2, levels, 2)
    raster = raster_limits(scan.delta_chi2, 0.90, grid)
    null = no_oscillation_test(model, x, scan, 0.95, 2)
    ub, db = scan.best_point
    out = dict(meta or {})
    out.update({
        "experiments": list(model.names), "grid": grid.to_dict(),
        "best_fit": {"ue4": ub, "sin2_2theta": scan.best_sin2_2theta, "dm2": db, "index": int(scan.best_index)},
        "chi2_min": float(scan.min), "ndof": scan.ndof,
        "gof_p_value": goodness_of_fit(scan.min, scan.ndof),
        "chi2_null": null.chi2, "delta_chi2_null": null.delta_chi2,
        "null_excluded_95_wilks_2dof": null.excluded,
        "wilks_thresholds_2dof": {f"{L:g}": wilks_threshold(L, 2) for L in regions},
        "region_cells": {f"{L:g}": int(m.sum()) for L, m in regions.items()},
        "raster_90_limits_found": int(np.isfinite(raster).sum()),
        "scan_seconds": scan_seconds,
    })
    iu, idm = grid.unravel(int(scan.best_index))
    out["edge_warnings"] = edge_warnings(int(iu), int(idm), scan.chi2.shape,
                                         {f"{100 * L:g}%": m for L, m in regions.items()}, point="best fit")
    if fc is not None:
        out["fc_file"] = str(Path(fc.path).resolve()) if fc.path is not None else None
        out["fc_region_cells"] = {f"{L:g}": int(fc.region(scan.delta_chi2, L).sum()) for L in fc.levels}
    return out
