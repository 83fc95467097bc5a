"""Drawing the truths of a coverage check and locating each one for every method: its
posterior credibility level (FCMLC), its chi2 off the grid (Wilks, FC) and its nearest chi2-grid
point (FC critical values). How the methods use these is described in
:mod:`fcmlc.validation.coverage_check`.
"""
from __future__ import annotations

import math

import numpy as np

from ..experiments import combine
from ..physics import Grid
from .raster import EDGE_TOL, bin_index

__all__ = ["TRUTH_STREAM", "draw_truths", "truth_credible_levels", "chi2_at", "nearest_points"]

#: Truths of a coverage check come from ``numpy.random.default_rng([seed, TRUTH_STREAM])``.
TRUTH_STREAM = 0xC0FE


def draw_truths(mode, n, seed, urange, drange, grid):
    """``n`` truths (|Ue4|, dm2, grid point ids or None) of a coverage check: ``mode``
    'continuous' draws log-uniformly over the ranges, 'grid' uniformly among ``grid``'s points."""
    rng = np.random.default_rng([seed, TRUTH_STREAM])
    if mode == "continuous":
        lu = rng.uniform(math.log10(urange[0]), math.log10(urange[1]), n)
        ld = rng.uniform(math.log10(drange[0]), math.log10(drange[1]), n)
        return 10.0 ** lu, 10.0 ** ld, None
    pid = rng.integers(0, grid.n_points, n)
    pts = grid.points()[pid]
    return pts[:, 0].copy(), pts[:, 1].copy(), pid


def truth_credible_levels(density, log_ue4_edges, log_dm2_edges, ue4, dm2, closed: bool = False) -> np.ndarray:
    """Credibility level of each truth: the posterior mass of the cells strictly denser than
    the truth's cell (a truth is in the HPD region of level L exactly when this is < L).

    density: (n, n_dm2, n_ue4) posterior densities on cells of equal area (uniform in log10);
    edges in log10; ue4, dm2: (n,) truths. ``closed=True``: a truth within 1e-9 (log10) of a
    cell edge belongs to every cell it touches and gets the smallest of their levels (the HPD
    region as a union of closed cells contains it if any touching cell is in).
    Computed in O(cells) per trial, without sorting; equal to
    :func:`fcmlc.regions.credible_level_map` at the truth's cell up to rounding.
    """
    d = np.asarray(density, dtype=float)
    eu = np.asarray(log_ue4_edges, dtype=float)
    ed = np.asarray(log_dm2_edges, dtype=float)
    if d.ndim != 3 or d.shape[1:] != (ed.size - 1, eu.size - 1):
        raise ValueError(f"density must have shape (n, {ed.size - 1}, {eu.size - 1}), got {d.shape}")
    lu, ld = np.log10(np.asarray(ue4, dtype=float)), np.log10(np.asarray(dm2, dtype=float))
    if lu.shape != (d.shape[0],) or ld.shape != (d.shape[0],):
        raise ValueError(f"need one truth per density: {d.shape[0]} (|Ue4|, dm2) pairs")
    tol = EDGE_TOL
    if np.any((lu < eu[0] - tol) | (lu > eu[-1] + tol) | (ld < ed[0] - tol) | (ld > ed[-1] + tol)):
        raise ValueError("a truth lies outside the posterior grid")
    flat = d.reshape(d.shape[0], -1)
    tot = flat.sum(axis=1)
    if np.any(~(tot > 0)):
        raise ValueError(f"posterior {int(np.flatnonzero(~(tot > 0))[0])} has zero total mass")
    if closed:
        cu = [bin_index(lu - tol, eu), bin_index(lu + tol, eu)]
        cd = [bin_index(ld - tol, ed), bin_index(ld + tol, ed)]
    else:
        cu, cd = [bin_index(lu, eu)], [bin_index(ld, ed)]
    r = np.arange(d.shape[0])
    out = np.full(d.shape[0], np.inf)
    for iu in cu:
        for idm in cd:
            dt = d[r, idm, iu]
            above = np.where(flat > dt[:, None], flat, 0.0).sum(axis=1)
            out = np.minimum(out, above / tot)
    return out


def chi2_at(chi2_model, x, ue4, dm2) -> np.ndarray:
    """chi2 of data ``x`` (n, n_bins) at arbitrary points (|Ue4|_i, dm2_i) (n,), one point per
    data vector: the exact profile chi2 of the experiments' model (normalisations and pulls
    profiled, :meth:`fcmlc.frequentist.Chi2Model.chi2_at`), i.e. the chi2 that
    :func:`fcmlc.frequentist.chi2_scan` gives at a grid point, evaluated off the grid."""
    if chi2_model.experiments is None:
        raise ValueError("this Chi2Model was unpickled without its experiments")
    mu = combine(list(chi2_model.experiments)).expectation(np.asarray(ue4, float), np.asarray(dm2, float))
    return np.atleast_1d(chi2_model.chi2_at(np.atleast_2d(x), np.atleast_2d(mu)))


def nearest_points(grid: Grid, ue4, dm2) -> np.ndarray:
    """Flat index (dm2-major) of the point of the log-uniform ``grid`` nearest to each (ue4, dm2) in log10."""
    lu = np.log10(grid.ue4)
    ld = np.log10(grid.dm2)
    iu = np.clip(np.rint((np.log10(ue4) - lu[0]) / (lu[1] - lu[0])).astype(np.int64), 0, grid.n_ue4 - 1)
    idm = np.clip(np.rint((np.log10(dm2) - ld[0]) / (ld[1] - ld[0])).astype(np.int64), 0, grid.n_dm2 - 1)
    return idm * grid.n_ue4 + iu
