"""Region algorithms on a rectilinear grid of cells, in plain NumPy.

Used by :class:`fcmlc.posterior.Posterior` (Bayesian credible regions of the FCMLC
paper, Eq. 3 and Eq. 4) and reusable by the frequentist code (a Wilks or
Feldman-Cousins region is a boolean mask on the same grid; :func:`iou` and
:func:`mask_contours` compare and draw them).

Conventions
-----------
* A map has shape ``(n_y, n_x)``: rows follow the vertical axis (dm2 in the
  paper's figures), columns the horizontal one (|Ue4| or sin^2 2theta).
* Grid points are cell *centres*. Cell edges lie halfway between neighbouring
  centres in the working variable (log10 for the oscillation parameters, whose
  prior is uniform in log); the outer edges extend half a cell beyond the first
  and last centre (:func:`cell_edges`).
* A density is per unit cell area in the working variables; ``mass = density *
  cell_area``. Credible regions rank cells by *density* (the highest-density
  construction), the coverage sums *mass*. With equal cells (log-uniform grids)
  the two orderings coincide.
"""
from __future__ import annotations

import numpy as np

from ._checks import check_level

__all__ = [
    "EDGE_TOL",
    "cell_edges",
    "cell_widths",
    "cell_areas",
    "check_density",
    "hpd_threshold",
    "hpd_region",
    "credible_level_map",
    "raster_upper_limits",
    "iou",
    "threshold_contours",
    "mask_contours",
    "EDGE_NAMES",
    "edges_touched",
    "point_edges",
    "edge_warnings",
]

#: The four edges of a (dm2 rows x |Ue4| columns) map, in the order edges_touched reports them.
#: The low-|Ue4| edge is the no-oscillation limit: a region reaching it is the usual exclusion
#: shape, not a warning; the other three are limits of the scanned grid, beyond which the
#: best point or the region may continue.
EDGE_NAMES = ("low |Ue4| (no-oscillation limit)", "high |Ue4|", "low dm2", "high dm2")

#: log10 units: a point this close to a cell edge touches both cells (truths on grid points,
#: chi2 grids on the posterior grid's boundary, whose edges are rounded through 10**log10).
EDGE_TOL = 1e-9


# ---- cells ----------------------------------------------------------------------------


def cell_edges(centres, log: bool = True) -> np.ndarray:
    """Edges of the cells around strictly increasing ``centres`` (n,) -> (n + 1,).

    Inner edges are midpoints of neighbouring centres, the outer edges sit half a
    cell beyond the end centres. With ``log=True`` (default) the construction is
    done in log10(centres) and the edges are returned *in log10*.
    """
    c = np.asarray(centres, dtype=float)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"cell centres must be a 1-D array with at least 2 entries, got shape {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"cell centres must be finite; first bad index {int(np.flatnonzero(~np.isfinite(c))[0])}")
    if log:
        if np.any(c <= 0):
            raise ValueError(f"cell centres must be > 0 for log10 cells; got {c[c <= 0][0]!r}")
        c = np.log10(c)
    d = np.diff(c)
    if np.any(d <= 0):
        i = int(np.flatnonzero(d <= 0)[0])
        raise ValueError(f"cell centres must be strictly increasing; centres[{i}] = {c[i]!r} >= centres[{i + 1}] = {c[i + 1]!r}")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - 0.5 * d[0]], mid, [c[-1] + 0.5 * d[-1]]])


def cell_widths(centres, log: bool = True) -> np.ndarray:
    """Widths of the cells of :func:`cell_edges` (in log10 when ``log=True``)."""
    return np.diff(cell_edges(centres, log=log))


def cell_areas(x_centres, y_centres, log: bool = True) -> np.ndarray:
    """Cell areas (n_y, n_x) of the grid ``x_centres`` x ``y_centres`` (rows follow y),
    in the working variables (log10 x log10 when ``log=True``)."""
    return np.outer(cell_widths(y_centres, log=log), cell_widths(x_centres, log=log))


# ---- highest-density credible regions (Eq. 3) ----------------------------------------------


def check_density(density) -> np.ndarray:
    """``density`` as a float array, checked: not empty, finite and >= 0 (a ValueError naming the
    first bad entry otherwise)."""
    d = np.asarray(density, dtype=float)
    if d.size == 0:
        raise ValueError("density is empty")
    if not np.all(np.isfinite(d)):
        bad = np.argwhere(~np.isfinite(d))[0]
        raise ValueError(f"density must be finite; density[{', '.join(map(str, bad))}] = {d[tuple(bad)]!r}")
    if np.any(d < 0):
        bad = np.argwhere(d < 0)[0]
        raise ValueError(f"density must be >= 0; density[{', '.join(map(str, bad))}] = {d[tuple(bad)]!r}")
    return d


def _density_and_mass(density, cell_area):
    d = check_density(density)
    if cell_area is None:
        mass = d
    else:
        a = np.asarray(cell_area, dtype=float)
        if a.shape != d.shape:
            raise ValueError(f"cell_area must have the shape of density {d.shape}, got {a.shape}")
        if not np.all((a > 0) & np.isfinite(a)):
            raise ValueError("cell_area must be finite and > 0")
        mass = d * a
    if not mass.sum() > 0:
        raise ValueError("density has zero total mass: no credible region can be built")
    return d, mass


def _sorted_cumulative(d, mass):
    """Cells sorted by decreasing density (stable), and the normalised cumulative mass
    including each cell: cum[i] = sum of mass of the first i+1 sorted cells / total."""
    order = np.argsort(-d.ravel(), kind="stable")
    ds = d.ravel()[order]
    cum = np.cumsum(mass.ravel()[order])
    cum = cum / cum[-1]
    return order, ds, cum


def hpd_threshold(density, level, cell_area=None) -> float:
    """Density threshold h of the highest-density region with credibility ``level`` (Eq. 3).

    Cells are sorted by decreasing density; h is the density of the first cell at
    which the cumulative mass reaches ``level``. The region {density >= h} is the
    smallest set of *whole* cells, in that order, holding at least ``level`` of the
    mass: its mass exceeds ``level`` by less than the mass of the cells at density h
    (one cell, unless several share that exact density, in which case all of them
    are included). ``cell_area`` (same shape) weights density into mass; None means
    equal cells. The cumulative sum is normalised by its own last element, so level 1
    reaches the last cell that still changes the running sum in double precision
    (cells lighter than ~1e-16 of the total may be left out).
    """
    level = check_level(level, "credibility level")
    d, mass = _density_and_mass(density, cell_area)
    _, ds, cum = _sorted_cumulative(d, mass)
    i = min(int(np.searchsorted(cum, level, side="left")), ds.size - 1)
    return float(ds[i])


def hpd_region(density, level, cell_area=None) -> np.ndarray:
    """Boolean mask of the highest-density credible region: ``density >= hpd_threshold``."""
    d = np.asarray(density, dtype=float)
    return d >= hpd_threshold(d, level, cell_area)


def credible_level_map(density, cell_area=None) -> np.ndarray:
    """For every cell, the posterior mass of the cells strictly denser than it.

    A cell lies in the HPD region of level L exactly when its value here is < L
    (this is the same sorted cumulative sum as :func:`hpd_threshold`, so the
    equivalence holds to the last bit). Evaluated at the true parameter point it is
    the credibility at which the truth is first covered: the quantity of the
    expected-coverage checks.
    """
    d, mass = _density_and_mass(density, cell_area)
    order, ds, cum = _sorted_cumulative(d, mass)
    first = np.searchsorted(-ds, -ds, side="left")  # first sorted index sharing each density
    cum0 = np.concatenate([[0.0], cum])
    out = np.empty(ds.size)
    out[order] = cum0[first]
    return out.reshape(d.shape)


# ---- raster scan (Eq. 4) -----------------------------------------------------------------


def raster_upper_limits(density, x_edges, level) -> np.ndarray:
    """Upper limit in x for every row of ``density`` (n_rows, n_x), by the raster scan.

    Each row is treated as the conditional distribution p(x | row) (the dm2 row of
    the paper's Eq. 4). The density is taken constant within each cell of
    ``x_edges`` (n_x + 1,), so the conditional CDF is piecewise linear in x; the
    limit x_L solves CDF(x_L) = ``level``, i.e. a fraction 1 - level of the row's
    mass lies above it (Eq. 4 with alpha = 1 - level). Returned in the variable of
    ``x_edges`` (log10|Ue4| in fcmlc); NaN for rows with no mass. Quantiles are
    invariant under monotone reparametrisation, so the limit is the same whether
    the density is written per |Ue4| or per log10|Ue4|, as long as the cells carry
    the same mass.
    """
    level = check_level(level, "credibility level")
    d = np.asarray(density, dtype=float)
    e = np.asarray(x_edges, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"density must be a 2-D map (n_rows, n_x), got shape {d.shape}")
    if e.shape != (d.shape[1] + 1,):
        raise ValueError(f"x_edges must have n_x + 1 = {d.shape[1] + 1} entries, got shape {e.shape}")
    w = np.diff(e)
    if not np.all(np.isfinite(e)) or np.any(w <= 0):
        raise ValueError("x_edges must be finite and strictly increasing")
    check_density(d)
    mass = d * w
    tot = mass.sum(axis=1)
    out = np.full(d.shape[0], np.nan)
    rows = np.flatnonzero(tot > 0)
    if rows.size == 0:
        return out
    cum = np.cumsum(mass[rows], axis=1)
    cum = cum / cum[:, -1:]
    cum0 = np.concatenate([np.zeros((rows.size, 1)), cum], axis=1)  # CDF at the edges
    i = np.clip((cum0 < level).sum(axis=1) - 1, 0, d.shape[1] - 1)  # cum0[i] < level <= cum0[i + 1]
    r = np.arange(rows.size)
    lo, hi = cum0[r, i], cum0[r, i + 1]
    frac = np.clip((level - lo) / (hi - lo), 0.0, 1.0)
    out[rows] = e[i] + frac * w[i]
    return out


# ---- comparing and drawing regions -------------------------------------------------------


def iou(mask_a, mask_b, cell_area=None) -> float:
    """Intersection over union of two regions given as boolean masks on the same grid,
    weighted by ``cell_area`` when given (cell counts otherwise). Two empty regions
    agree perfectly: 1.0."""
    a = np.asarray(mask_a, dtype=bool)
    b = np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    w = np.ones(a.shape) if cell_area is None else np.broadcast_to(np.asarray(cell_area, dtype=float), a.shape)
    union = float(w[a | b].sum())
    if union == 0.0:
        return 1.0
    return float(w[a & b].sum()) / union


def _lines(field, x, y, threshold):
    import contourpy

    gen = contourpy.contour_generator(
        x=np.asarray(x, dtype=float),
        y=np.asarray(y, dtype=float),
        z=np.asarray(field, dtype=float),
        line_type=contourpy.LineType.Separate,
    )
    return [np.asarray(v, dtype=float) for v in gen.lines(float(threshold)) if len(v) >= 2]


def threshold_contours(field, x_centres, y_centres, threshold, log: bool = True) -> list:
    """Lines where ``field`` (n_y, n_x) crosses ``threshold``, by contourpy's marching
    squares with linear interpolation between cell centres. The interpolation is done
    in log10 of the centres when ``log=True``; vertices are returned as (N, 2) arrays
    of (x, y) in the original (not log) units. Lines that reach the grid boundary are
    open; closed lines repeat their first vertex."""
    xc = np.asarray(x_centres, dtype=float)
    yc = np.asarray(y_centres, dtype=float)
    f = np.asarray(field, dtype=float)
    if f.shape != (yc.size, xc.size):
        raise ValueError(f"field must have shape (n_y, n_x) = {(yc.size, xc.size)}, got {f.shape}")
    if log:
        lines = _lines(f, np.log10(xc), np.log10(yc), threshold)
        return [10.0**v for v in lines]
    return _lines(f, xc, yc, threshold)


def extend_to_cell_edges(field, ue4_centres, dm2_centres):
    """The cell field (n_dm2, n_ue4) extended to the grid's outer cell edges for drawing: one
    more row/column at each outer edge holding the edge cell's value, so that a region drawn by
    interpolation between centres reaches the edge of the cells it holds (not their centres).
    The high-|Ue4| edge is clipped at 1/sqrt(2) (sin^2 2theta = 1). Returns (field, ue4, dm2)."""
    lu = cell_edges(ue4_centres)
    ld = cell_edges(dm2_centres)
    u = 10.0 ** np.concatenate([[lu[0]], np.log10(ue4_centres), [min(lu[-1], -0.5 * np.log10(2.0))]])
    d = 10.0 ** np.concatenate([[ld[0]], np.log10(dm2_centres), [ld[-1]]])
    f = np.pad(np.asarray(field, dtype=float), 1, mode="edge")
    if not u[-1] > u[-2]:  # the last centre already at 1/sqrt(2)
        u, f = u[:-1], f[:, :-1]
    return f, u, d


def mask_contours(mask, x_centres, y_centres, log: bool = True) -> list:
    """Boundary lines of a boolean region on the grid (cells as in :func:`cell_edges`):
    the 0.5 level of the 0/1 field, i.e. halfway between inside and outside centres
    (in log10 when ``log=True``). Returns a list of (N, 2) arrays of (x, y)."""
    m = np.asarray(mask)
    if m.dtype != bool:
        raise ValueError(f"mask must be a boolean array, got dtype {m.dtype}")
    return threshold_contours(m.astype(float), x_centres, y_centres, 0.5, log=log)


def edges_touched(mask, include_null: bool = False) -> list:
    """Names (from :data:`EDGE_NAMES`) of the grid edges that a region mask (n_dm2, n_ue4) reaches.

    Without ``include_null`` the low-|Ue4| (no-oscillation) edge is left out: an allowed region
    reaching it is the usual exclusion shape, while reaching any other edge means the region may
    continue beyond the scanned grid."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (n_dm2, n_ue4), got shape {m.shape}")
    if not m.any():
        return []
    hit = (m[:, 0].any(), m[:, -1].any(), m[0, :].any(), m[-1, :].any())
    return [n for i, (n, h) in enumerate(zip(EDGE_NAMES, hit)) if h and (include_null or i > 0)]


def point_edges(i_ue4: int, i_dm2: int, shape) -> list:
    """Names of the grid-limit edges (not the no-oscillation one) on which the point with column
    ``i_ue4`` and row ``i_dm2`` of a (n_dm2, n_ue4) grid lies: a best point there may be a
    minimum of the scanned grid only, the true one lying beyond it."""
    n_dm2, n_ue4 = (int(v) for v in shape)
    hit = (False, i_ue4 == n_ue4 - 1, i_dm2 == 0, i_dm2 == n_dm2 - 1)
    return [n for n, h in zip(EDGE_NAMES, hit) if h]


def edge_warnings(i_ue4: int, i_dm2: int, shape, masks: dict, point: str = "best point") -> list:
    """Plain-text grid-edge warnings of one fit: the `point` (column ``i_ue4``, row ``i_dm2`` of a
    (n_dm2, n_ue4) grid) on a grid-limit edge (:func:`point_edges`), and each region of ``masks``
    (label -> mask, e.g. {"90%": mask}) reaching one (:func:`edges_touched`)."""
    out = []
    e = point_edges(i_ue4, i_dm2, shape)
    if e:
        out.append(f"{point} on the grid's {' and '.join(e)} edge")
    for label, m in masks.items():
        e = edges_touched(m)
        if e:
            out.append(f"{label} region reaches the grid's {' and '.join(e)} edge")
    return out
