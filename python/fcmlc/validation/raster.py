"""Log-uniform bins and the common raster on which regions of different grids are compared.

FCMLC regions live on the posterior's cells (equal cells, edges in log10), Wilks and
Feldman-Cousins regions on chi2-grid points (each point owns the cell halfway to its
neighbours, as :func:`fcmlc.regions.cell_edges` and ``draw_mask`` have it). Both are mapped onto
one log-uniform raster (:func:`common_raster`) so their areas can be compared.
"""
from __future__ import annotations

import math

import numpy as np

from ..physics import Grid
from ..regions import EDGE_TOL, cell_edges

__all__ = ["EDGE_TOL", "bin_edges", "bin_index", "common_raster", "regrid_cells", "regrid_points"]


def bin_edges(lo, hi, n):
    """``n`` log-uniform bins over [lo, hi]: their n + 1 edges in log10."""
    return np.linspace(math.log10(lo), math.log10(hi), int(n) + 1)


def bin_index(v_log, edges_log):
    """Index of the bin (edges ``edges_log``, ascending) containing each ``v_log``; values on an
    inner edge go to the upper bin, values outside to the first or last bin."""
    return np.clip(np.searchsorted(edges_log, v_log, side="right") - 1, 0, edges_log.size - 2)


def common_raster(log_ue4_edges, log_dm2_edges, grid: Grid, max_pixels: int = 2000):
    """Pixel edges (log10) of the common raster on which FCMLC cells (``log_*_edges``, equal cells)
    and chi2-grid points (``grid``: each point owns the cell halfway to its neighbours, as
    :func:`fcmlc.regions.cell_edges` and ``draw_mask`` have it) are compared, over the posterior
    grid's extent.

    Per axis the pixel count is lcm(n_cells, 2 (n_points - 1)) when that is <= ``max_pixels``
    (else ``max_pixels``). ``exact`` is True when every cell edge and every halfway edge inside
    the extent falls on a pixel edge (within 1e-9 of the extent): areas on the raster are then
    the exact areas of the regions as drawn (e.g. the default 100 x 100 cells and 101 x 101
    points over the same ranges: 200 x 200 pixels). Returns (ue4 edges, dm2 edges, exact).
    """
    out, exact = [], True
    for ce, pts in ((np.asarray(log_ue4_edges, float), grid.ue4), (np.asarray(log_dm2_edges, float), grid.dm2)):
        lo, hi = float(ce[0]), float(ce[-1])
        n = math.lcm(ce.size - 1, 2 * (pts.size - 1))
        if n > max_pixels:
            n = int(max_pixels)
        r = np.linspace(lo, hi, n + 1)
        need = np.concatenate([ce, cell_edges(pts)])
        need = need[(need > lo) & (need < hi)]
        pos = (need - lo) / (hi - lo) * n
        if np.any(np.abs(pos - np.rint(pos)) > 1e-9 * n):
            exact = False
        out.append(r)
    return out[0], out[1], exact


def _pixel_centres(raster_u, raster_d):
    return 0.5 * (raster_u[1:] + raster_u[:-1]), 0.5 * (raster_d[1:] + raster_d[:-1])


def regrid_cells(mask, log_ue4_edges, log_dm2_edges, raster_u, raster_d) -> np.ndarray:
    """A mask on cells (edges in log10) -> the raster: each pixel takes the cell containing its centre."""
    m = np.asarray(mask, dtype=bool)
    cu, cd = _pixel_centres(raster_u, raster_d)
    return m[np.ix_(bin_index(cd, np.asarray(log_dm2_edges)), bin_index(cu, np.asarray(log_ue4_edges)))]


def regrid_points(mask, grid: Grid, raster_u, raster_d) -> np.ndarray:
    """A mask on chi2-grid points -> the raster: each pixel takes the grid point nearest to its
    centre in log10 (the cells of :func:`fcmlc.regions.cell_edges`, as drawn by ``draw_mask``)."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != (grid.n_dm2, grid.n_ue4):
        raise ValueError(f"mask must have the grid's shape {(grid.n_dm2, grid.n_ue4)}, got {m.shape}")
    cu, cd = _pixel_centres(raster_u, raster_d)
    return m[np.ix_(bin_index(cd, cell_edges(grid.dm2)), bin_index(cu, cell_edges(grid.ue4)))]
