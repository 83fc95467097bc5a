"""The numeric part of an FCMLC fit (paper Sec. II B): KDE, Eq. 2 integration, the Posterior.

Working variables are (log10|Ue4|, log10 dm2): the prior of the paper is uniform in
the logarithm of each parameter, so densities here are per unit log10|Ue4| per unit
log10 dm2, and grid cells are uniform in log space.

* :func:`kde_grid` - p(y_hat | x): a Gaussian product-kernel density of the m
  stochastic network predictions, evaluated on the y_hat grid (C++, batched).
* :func:`integrate` - Eq. 2 on grids, p(y | x)[c] = sum_k T[k, c] p(y_hat_k | x) dA_k,
  with the transition matrix T[k, :] = p(y | y_hat cell k) on the y grid (C++, batched).
* :class:`Posterior` - p(y | x) on the y grid: highest-density credible regions
  (Eq. 3), raster-scan upper limits (Eq. 4), best point, contours, plots, NPZ I/O.
* :func:`posterior_from_samples` - the three steps above in one call.

Grid ordering: a map has shape (n_dm2, n_ue4) (rows are dm2, as in the paper's
figures, where dm2 is the vertical axis); flattened, |Ue4| runs fastest (the
ordering of :class:`fcmlc.physics.Grid`). The y_hat grid uses the same ordering,
so the KDE output (n_b, n_a) flattens to the row index k of T.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from . import _core
from . import regions as _regions
from ._io import npz_header
from .physics import sin2_2theta

__all__ = [
    "kde_bandwidth",
    "kde_grid",
    "integrate",
    "cell_areas",
    "Posterior",
    "posterior_from_samples",
]

cell_areas = _regions.cell_areas

_NPZ_FORMAT = "fcmlc.Posterior"
_NPZ_VERSION = 1


# ---- KDE -------------------------------------------------------------------------------


def _as_sample_sets(samples) -> tuple[np.ndarray, bool]:
    x = np.asarray(samples, dtype=float)
    if x.ndim not in (2, 3) or x.shape[-1] != 2:
        raise ValueError(
            "samples must have shape (m, 2) or (batch, m, 2) with columns (log10|Ue4|, log10 dm2); "
            f"got shape {x.shape}"
        )
    single = x.ndim == 2
    return np.ascontiguousarray(x[None] if single else x), single


def _statsmodels_kde(data, bw):
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    with warnings.catch_warnings():
        # statsmodels >= 0.15 warns about its default random generator, unused here.
        warnings.simplefilter("ignore", FutureWarning)
        return KDEMultivariate(data, var_type="cc", bw=bw)


def kde_bandwidth(samples, method="normal_reference") -> np.ndarray:
    """Per-dimension bandwidths (h_a, h_b) of each sample set.

    ``method``:

    * ``'normal_reference'`` - statsmodels' KDEMultivariate rule of thumb,
      1.06 * std * m**(-1/(4 + d)) with d = 2 and std the population standard
      deviation (ddof=0, as ``np.std``), computed here;
    * ``'cv_ml'`` - leave-one-out maximum-likelihood cross-validation, delegated to
      ``statsmodels KDEMultivariate(..., bw='cv_ml').bw`` (slow: O(m^2) per step).

    samples (m, 2) -> (2,); (batch, m, 2) -> (batch, 2).
    """
    x, single = _as_sample_sets(samples)
    m = x.shape[1]
    if method == "normal_reference":
        h = 1.06 * np.std(x, axis=1) * m ** (-1.0 / (4 + 2))
    elif method == "cv_ml":
        if m < 3:
            raise ValueError(f"bandwidth='cv_ml' needs at least 3 samples per set (statsmodels), got m = {m}")
        if not np.all(np.isfinite(x)):
            raise ValueError("samples contain non-finite values")
        h = np.array([_statsmodels_kde(xi, "cv_ml").bw for xi in x], dtype=float)
    else:
        raise ValueError(f"bandwidth method must be 'normal_reference' or 'cv_ml', got {method!r}")
    return h[0] if single else h


def kde_grid(samples, a_centres, b_centres, bandwidth="normal_reference", threads=None) -> np.ndarray:
    """Gaussian product-kernel density of the samples on the grid ``a_centres`` x ``b_centres``.

    f(a, b) = 1/(m h_a h_b) sum_j phi((a - x_j)/h_a) phi((b - y_j)/h_b), phi the
    standard normal density: statsmodels' ``KDEMultivariate(samples, 'cc', bw).pdf``
    evaluated at the grid points, computed in C++ through the separable form (n_a m +
    n_b m exponentials and one matrix product per set).

    samples: (m, 2) or (batch, m, 2), columns (axis a, axis b) = (log10|Ue4|, log10 dm2)
        for the y_hat grid of fcmlc.
    a_centres (n_a,), b_centres (n_b,): grid centres in the same variables.
    bandwidth: 'normal_reference' (default), 'cv_ml' (see :func:`kde_bandwidth`),
        a pair (h_a, h_b) for every set, or an array (batch, 2).
    threads: None = all cores. Results are bit-identical for any thread count.

    Returns (n_b, n_a), or (batch, n_b, n_a): rows follow axis b.
    """
    x, single = _as_sample_sets(samples)
    if isinstance(bandwidth, str):
        h = kde_bandwidth(x, bandwidth)
    else:
        h = np.asarray(bandwidth, dtype=float)
        if h.shape == (2,):
            h = np.broadcast_to(h, (x.shape[0], 2))
        elif h.shape != (x.shape[0], 2):
            raise ValueError(
                f"bandwidth must be 'normal_reference', 'cv_ml', a pair (h_a, h_b) or an array of shape "
                f"(batch, 2) = {(x.shape[0], 2)}; got shape {h.shape}"
            )
    a = np.asarray(a_centres, dtype=float)
    b = np.asarray(b_centres, dtype=float)
    out = _core.kde_grid_2d(x, a, b, np.ascontiguousarray(h), threads)
    return out[0] if single else out


# ---- Eq. 2 -------------------------------------------------------------------------------


def integrate(p_yhat, transition, cell_area, threads=None, check_transition=True) -> np.ndarray:
    """Eq. 2 on grids: p(y | x)[c] = sum_k T[k, c] p(y_hat_k | x) dA_k.

    p_yhat: density on the y_hat grid, shape (..., *cell_area.shape): the trailing
        dimensions match ``cell_area`` ((n_k,) or (n_b, n_a)), leading ones are a batch.
    transition: T, shape (n_k, n_c); row k is p(y | y_hat = centre of cell k) on the
        y grid (flattened, |Ue4| fastest), n_k = cell_area.size.
    cell_area: dA_k of the y_hat cells in the working variables (see :func:`cell_areas`).
    check_transition: scan T for negative / non-finite entries first (one pass over T;
        pass False when T was validated once, e.g. when it was loaded with a model).
        Non-finite entries are still reported when they reach the result.

    Returns (..., n_c). Every output element is summed over k in increasing order,
    so results are bit-identical for any thread count and batch composition.
    """
    dA = np.asarray(cell_area, dtype=float)
    p = np.asarray(p_yhat, dtype=float)
    if dA.ndim == 0 or p.shape[p.ndim - dA.ndim :] != dA.shape:
        raise ValueError(
            f"p_yhat must end with the shape of cell_area {dA.shape} (one value per y_hat cell); got shape {p.shape}"
        )
    batch = p.shape[: p.ndim - dA.ndim]
    p2 = np.ascontiguousarray(p.reshape(-1, dA.size))
    T = np.asarray(transition, dtype=float)
    out = _core.integrate_grid(p2, T, np.ascontiguousarray(dA.ravel()), threads, bool(check_transition))
    return out.reshape(*batch, T.shape[1])


# ---- the Posterior ---------------------------------------------------------------------


def _check_axis(c, name, upper=None):
    c = np.asarray(c, dtype=float)
    if c.ndim != 1 or c.size < 2:
        raise ValueError(f"{name} centres must be a 1-D array with at least 2 entries, got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError(f"{name} centres must be finite and > 0")
    if upper is not None and np.any(c > upper):
        raise ValueError(f"{name} centres must be <= {upper}, got max {c.max()!r}")
    if np.any(np.diff(c) <= 0):
        raise ValueError(f"{name} centres must be strictly increasing")
    return c


def _readonly(a):
    a = np.array(a, dtype=float, copy=True)
    a.flags.writeable = False
    return a


class Posterior:
    """p(y | x) on a (|Ue4|, dm2) grid, with the credible regions of the FCMLC paper.

    Parameters
    ----------
    ue4 : (n_u,) |Ue4| cell centres, strictly increasing (log-spaced in fcmlc).
    dm2 : (n_d,) dm2 cell centres [eV^2], strictly increasing.
    density : (n_d, n_u) non-negative values proportional to the posterior density
        per unit log10|Ue4| per unit log10 dm2 (rows are dm2), or the flat (n_d*n_u,)
        vector with |Ue4| fastest. It is normalised here to unit total mass.
    meta : optional JSON-serialisable dict stored with the posterior (experiment,
        truth, model version, ...).

    Cells: centred on the grid points, edges halfway between neighbours in log10,
    outer edges half a cell beyond the end points (:func:`fcmlc.regions.cell_edges`);
    the mass of a cell is density x cell area in (log10|Ue4|, log10 dm2), i.e. the
    prior is uniform in log and the density is constant within a cell.
    """

    def __init__(self, ue4, dm2, density, *, meta=None, _normalised=False):
        u = _check_axis(ue4, "|Ue4|", upper=1.0)
        d = _check_axis(dm2, "dm2")
        dens = np.asarray(density, dtype=float)
        if dens.shape == (u.size * d.size,):
            dens = dens.reshape(d.size, u.size)
        if dens.shape != (d.size, u.size):
            raise ValueError(
                f"density must have shape (n_dm2, n_ue4) = {(d.size, u.size)} (rows are dm2) or be the flat "
                f"vector of {u.size * d.size} values with |Ue4| fastest; got shape {dens.shape}"
            )
        _regions.check_density(dens)
        self._ue4 = _readonly(u)
        self._dm2 = _readonly(d)
        self._lu_edges = _readonly(_regions.cell_edges(u))
        self._ld_edges = _readonly(_regions.cell_edges(d))
        self._area = _readonly(np.outer(np.diff(self._ld_edges), np.diff(self._lu_edges)))
        mass = dens * self._area
        total = mass.sum()
        if not total > 0 or not np.isfinite(total):
            raise ValueError("density has zero (or non-finite) total mass: not a posterior")
        if _normalised:  # ``density`` holds the normalised cell masses (from_npz)
            self._mass = _readonly(dens)
            self._density = _readonly(self._mass / self._area)
        else:
            self._mass = _readonly(mass / total)
            self._density = _readonly(self._mass / self._area)
        self.meta = dict(meta or {})
        try:
            json.dumps(self.meta)  # stored as JSON, never pickled
        except TypeError as e:
            raise ValueError(f"meta must be JSON-serialisable: {e}") from None
        self._level_map = None

    # ---- construction helpers ----

    @classmethod
    def from_grid(cls, grid, values, *, meta=None) -> "Posterior":
        """From a :class:`fcmlc.physics.Grid` and values on its points ((n_points,) with
        |Ue4| fastest, or (n_dm2, n_ue4))."""
        return cls(grid.ue4, grid.dm2, values, meta=meta)

    # ---- arrays ----

    @property
    def ue4(self) -> np.ndarray:
        """|Ue4| cell centres (n_u,)."""
        return self._ue4

    @property
    def dm2(self) -> np.ndarray:
        """dm2 cell centres (n_d,) [eV^2]."""
        return self._dm2

    @property
    def sin2(self) -> np.ndarray:
        """sin^2(2 theta_ee) at the |Ue4| centres."""
        return sin2_2theta(self._ue4)

    @property
    def shape(self) -> tuple:
        """(n_dm2, n_ue4)."""
        return self._density.shape

    @property
    def log10_ue4_edges(self) -> np.ndarray:
        return self._lu_edges

    @property
    def log10_dm2_edges(self) -> np.ndarray:
        return self._ld_edges

    @property
    def cell_area(self) -> np.ndarray:
        """Cell areas (n_d, n_u) in (log10|Ue4|, log10 dm2)."""
        return self._area

    @property
    def mass(self) -> np.ndarray:
        """Posterior probability of each cell (n_d, n_u); sums to 1."""
        return self._mass

    @property
    def density(self) -> np.ndarray:
        """Posterior density per unit log10|Ue4| per unit log10 dm2 (n_d, n_u)."""
        return self._density

    def marginal_ue4(self) -> np.ndarray:
        """Marginal probability of each |Ue4| cell (n_u,), summed over dm2; sums to 1."""
        return self._mass.sum(axis=0)

    def marginal_dm2(self) -> np.ndarray:
        """Marginal probability of each dm2 cell (n_d,), summed over |Ue4|; sums to 1."""
        return self._mass.sum(axis=1)

    def best_point(self) -> tuple:
        """(|Ue4|, dm2) at the centre of the highest-density cell (first one on ties)."""
        i_d, i_u = np.unravel_index(int(np.argmax(self._density)), self.shape)
        return float(self._ue4[i_u]), float(self._dm2[i_d])

    # ---- Eq. 3: highest-density credible regions ----

    def hpd_threshold(self, level) -> float:
        """Density threshold h_alpha of Eq. 3 for credibility ``level`` (e.g. 0.9).

        Whole cells are taken in order of decreasing density until their mass reaches
        ``level``; h is the density of the last one. The region {density >= h} holds
        at least ``level`` and exceeds it by less than the mass of the cell(s) at
        density h (cells of exactly equal density are all in or all out).
        """
        return _regions.hpd_threshold(self._density, level, self._area)

    def credible_region(self, level) -> np.ndarray:
        """Boolean mask (n_d, n_u) of the highest-density credible region (Eq. 3)."""
        return self._density >= self.hpd_threshold(level)

    def region_mass(self, level) -> float:
        """Posterior mass actually enclosed by :meth:`credible_region` (>= level)."""
        return float(self._mass[self.credible_region(level)].sum())

    def credible_level_map(self) -> np.ndarray:
        """Mass of the cells denser than each cell (n_d, n_u): a cell is in the region of
        level L exactly when this is < L."""
        if self._level_map is None:
            self._level_map = _readonly(_regions.credible_level_map(self._density, self._area))
        return self._level_map

    def _cell_of(self, ue4, dm2):
        lu = np.log10(np.asarray(ue4, dtype=float))
        ld = np.log10(np.asarray(dm2, dtype=float))
        eu, ed = self._lu_edges, self._ld_edges
        if np.any(~np.isfinite(lu)) or np.any(~np.isfinite(ld)):
            raise ValueError("|Ue4| and dm2 must be finite and > 0")
        if np.any((lu < eu[0]) | (lu > eu[-1]) | (ld < ed[0]) | (ld > ed[-1])):
            raise ValueError(
                f"point outside the grid: |Ue4| must lie in [{10 ** eu[0]:.4g}, {10 ** eu[-1]:.4g}] and dm2 in "
                f"[{10 ** ed[0]:.4g}, {10 ** ed[-1]:.4g}] eV^2 (cell edges)"
            )
        iu = np.clip(np.searchsorted(eu, lu, side="right") - 1, 0, self._ue4.size - 1)
        idm = np.clip(np.searchsorted(ed, ld, side="right") - 1, 0, self._dm2.size - 1)
        return idm, iu

    def credible_level_of(self, ue4, dm2):
        """Posterior mass of the cells strictly denser than the cell containing (|Ue4|, dm2).

        The point is inside the credible region of level L exactly when this is < L, so
        over many trials with the truth drawn from the prior, the fraction of trials
        with credible_level_of(truth) < L is the observed coverage at L. Scalars or
        arrays (broadcast); raises if a point lies outside the grid's cells.
        """
        idm, iu = self._cell_of(ue4, dm2)
        v = self.credible_level_map()[idm, iu]
        return float(v) if np.ndim(v) == 0 else v

    def excludes_null(self, level) -> bool:
        """True when the smallest-|Ue4| column (the no-oscillation edge of the grid) lies
        outside the credible region at every dm2: the data exclude the null at ``level``."""
        return not bool(self.credible_region(level)[:, 0].any())

    # ---- Eq. 4: raster scan ----

    def upper_limits(self, level=0.9, x: str = "ue4") -> np.ndarray:
        """Raster-scan upper limit for every dm2 row (Eq. 4 with alpha = 1 - level).

        Each row is the conditional posterior p(|Ue4| | dm2, x); the density is constant
        within a cell in log10|Ue4|, so the conditional CDF is interpolated linearly in
        log10|Ue4| inside the cell where it crosses ``level``. The limit leaves 1 - level
        of the row's mass above it. Returned as |Ue4| (x='ue4') or sin^2(2 theta)
        (x='sin2'), shape (n_d,); NaN for rows without mass. Limits can reach the grid's
        outer cell edge (half a cell beyond the last centre).
        """
        lim = 10.0 ** _regions.raster_upper_limits(self._density, self._lu_edges, level)
        if x == "ue4":
            return lim
        if x == "sin2":
            return sin2_2theta(np.minimum(lim, 1.0 / np.sqrt(2.0)))
        raise ValueError(f"x must be 'ue4' or 'sin2', got {x!r}")

    # ---- geometry ----

    def contours(self, level) -> list:
        """Boundary of the credible region as a list of (N, 2) vertex arrays (|Ue4|, dm2).

        contourpy's marching squares on the density field at the threshold
        :meth:`hpd_threshold` (the density is mass / cell area, so this is the
        mass-threshold field), interpolated linearly between cell centres in
        (log10|Ue4|, log10 dm2). Lines reaching the grid boundary are open.
        """
        return _regions.threshold_contours(self._density, self._ue4, self._dm2, self.hpd_threshold(level))

    # ---- reporting ----

    def edge_warnings(self, levels=(0.68, 0.9, 0.95)) -> list:
        """Plain-text warnings when the best point or a credible region touches a limit of the
        grid (high |Ue4|, low or high dm2): the posterior may continue beyond it (widen the grid,
        e.g. ``--dm2-range``). The low-|Ue4| edge is the no-oscillation limit, not a warning."""
        i_d, i_u = np.unravel_index(int(np.argmax(self._density)), self.shape)
        masks = {f"{100 * float(lv):g}%": self.credible_region(lv) for lv in levels}
        return _regions.edge_warnings(int(i_u), int(i_d), self.shape, masks)

    def summary(self, levels=(0.68, 0.9, 0.95)) -> dict:
        """Plain-Python dict (JSON-ready): best point, marginal modes and, for each level,
        the threshold, region size, enclosed mass, null exclusion and the tightest
        raster-scan upper limit."""
        bu, bd = self.best_point()
        out = {
            "best_point": {"ue4": bu, "dm2": bd, "sin2_2theta": float(sin2_2theta(bu))},
            "marginal_mode": {
                "ue4": float(self._ue4[np.argmax(self.marginal_ue4())]),
                "dm2": float(self._dm2[np.argmax(self.marginal_dm2())]),
            },
            "grid": {"n_ue4": int(self._ue4.size), "n_dm2": int(self._dm2.size)},
            "levels": {},
        }
        for lv in levels:
            mask = self.credible_region(lv)
            lim = self.upper_limits(lv)
            out["levels"][f"{float(lv):g}"] = {
                "threshold": self.hpd_threshold(lv),
                "n_cells": int(mask.sum()),
                "area_fraction": float(self._area[mask].sum() / self._area.sum()),
                "mass": float(self._mass[mask].sum()),
                "excludes_null": self.excludes_null(lv),
                "min_upper_limit_ue4": float(np.nanmin(lim)) if np.any(np.isfinite(lim)) else None,
            }
        out["edge_warnings"] = self.edge_warnings(levels)
        if self.meta:
            out["meta"] = self.meta
        return out

    def __repr__(self) -> str:
        bu, bd = self.best_point()
        return f"Posterior({self._dm2.size} dm2 x {self._ue4.size} |Ue4| cells, best point |Ue4|={bu:.3g}, dm2={bd:.3g} eV^2)"

    # ---- I/O (NPZ + JSON, no pickle) ----

    def to_npz(self, path) -> Path:
        """Write ue4, dm2, the cell masses, the density and JSON metadata to ``path`` (.npz)."""
        path = Path(path)
        header = {"format": _NPZ_FORMAT, "version": _NPZ_VERSION, "meta": self.meta}
        np.savez_compressed(path, ue4=self._ue4, dm2=self._dm2, mass=self._mass, density=self._density,
                            header=np.array(json.dumps(header)))
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def from_npz(cls, path) -> "Posterior":
        """Read a file written by :meth:`to_npz` (arrays exactly as written; no pickle)."""
        with np.load(path, allow_pickle=False) as f:
            missing = {"ue4", "dm2", "mass", "header"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: not an fcmlc posterior file (missing {sorted(missing)})")
            header = npz_header(f, path, _NPZ_FORMAT, _NPZ_VERSION)
            return cls(f["ue4"], f["dm2"], f["mass"], meta=header.get("meta"), _normalised=True)

    # ---- plotting ----

    def plot(self, ax=None, levels=(0.68, 0.9, 0.95), x="sin2", truth=None, overlays=None, title=None, best_point=False):
        """Credible regions in the field's conventions; returns the Axes.

        Log-log axes, horizontal sin^2(2 theta_ee) (x='sin2') or |Ue4| (x='ue4'),
        vertical dm2 [eV^2]; the HPD regions at ``levels`` filled (darker = lower level)
        with their boundaries drawn and named in the legend.

        truth: (|Ue4|, dm2) marked with a star. best_point: mark the densest cell.
        overlays: other regions drawn as lines, a list of tuples
            ``(label, region)`` or ``(label, region, style_dict)`` where region is
            - a boolean mask (n_d, n_u) on this posterior's grid (e.g. a Wilks or
              Feldman-Cousins region from the same chi2 grid),
            - a tuple ``(mask, ue4_centres, dm2_centres)`` for a mask on another grid,
            - another :class:`Posterior` (its HPD regions at ``levels``; line style per level),
            - a list of (N, 2) arrays of (|Ue4|, dm2) vertices (e.g. :meth:`contours`
              or a published curve).
        """
        from . import plotting as P

        if ax is None:
            _, ax = P.pyplot().subplots(figsize=(6.0, 5.0), constrained_layout=True)
        levels = sorted(float(v) for v in levels)
        colours = P.level_colours(levels)
        dmax = float(self._density.max())
        for lv in levels[::-1]:  # innermost (lowest level) last, on top
            h = self.hpd_threshold(lv)
            P.fill_between_thresholds(
                ax, self._density, self._ue4, self._dm2, h, 2.0 * dmax + 1.0, x=x, facecolor=colours[lv], alpha=0.9,
                label=f"FCMLC {P.level_label(lv)} CR", zorder=1,
            )
            P.draw_lines(ax, self.contours(lv), x=x, color=P.METHOD_STYLES["fcmlc"]["color"], linewidth=1.0, zorder=2)
        for i, item in enumerate(overlays or ()):
            self._draw_overlay(ax, item, i, levels, x)
        if truth is not None:
            tu, td = truth
            ax.plot(P.to_xaxis(tu, x), td, label="truth", zorder=5, **P.METHOD_STYLES["truth"])
        if best_point:
            bu, bd = self.best_point()
            ax.plot(P.to_xaxis(bu, x), bd, label="best point", zorder=5, **P.METHOD_STYLES["best_fit"])
        P.setup_oscillation_axes(ax, x=x, ue4_range=(self._ue4[0], self._ue4[-1]), dm2_range=(self._dm2[0], self._dm2[-1]), title=title)
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
        return ax

    def _draw_overlay(self, ax, item, i, levels, x):
        from . import plotting as P

        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError("each overlay must be (label, region) or (label, region, style_dict)")
        label, region = item[0], item[1]
        style = {"color": P.OVERLAY_COLOURS[i % len(P.OVERLAY_COLOURS)], "zorder": 3}
        key = str(label).lower().replace("-", "_").replace(" ", "_")
        for name, st in P.METHOD_STYLES.items():
            if name in key:
                style.update({k: v for k, v in st.items() if k in ("color", "linestyle")})
        if len(item) == 3:
            style.update(item[2])
        if isinstance(region, Posterior):
            for j, lv in enumerate(levels):
                st = {**style, "linestyle": P.LEVEL_LINESTYLES[j % len(P.LEVEL_LINESTYLES)]}
                P.draw_lines(ax, region.contours(lv), x=x, label=f"{label} {P.level_label(lv)}", **st)
            return
        if isinstance(region, np.ndarray) and region.dtype == bool:
            if region.shape != self.shape:
                raise ValueError(
                    f"overlay {label!r}: mask shape {region.shape} differs from this grid {self.shape}; "
                    "pass (mask, ue4_centres, dm2_centres) for a mask on another grid"
                )
            P.draw_mask(ax, region, self._ue4, self._dm2, x=x, label=label, **style)
            return
        if isinstance(region, tuple) and len(region) == 3 and np.asarray(region[0]).dtype == bool:
            mask, u, d = region
            P.draw_mask(ax, np.asarray(mask), np.asarray(u, dtype=float), np.asarray(d, dtype=float), x=x, label=label, **style)
            return
        if isinstance(region, (list, tuple)):
            P.draw_lines(ax, region, x=x, label=label, **style)
            return
        raise ValueError(
            f"overlay {label!r}: region must be a boolean mask, (mask, ue4, dm2), a Posterior or a list of "
            f"(N, 2) arrays; got {type(region).__name__}"
        )


# ---- one call --------------------------------------------------------------------------


def posterior_from_samples(samples, yhat_ue4, yhat_dm2, transition, ue4, dm2, bandwidth="normal_reference",
                           threads=None, check_transition=True, meta=None):
    """The numeric part of one FCMLC fit (or of a batch of fits).

    samples: (m, 2) or (batch, m, 2) network predictions y_hat in the working variables
        (log10|Ue4|, log10 dm2).
    yhat_ue4 (n_a,), yhat_dm2 (n_b,): the y_hat grid as |Ue4| and dm2 centres (the KDE
        is evaluated at their log10).
    transition: (n_b * n_a, n_u * n_d), row k = p(y | y_hat cell k) per unit
        log10|Ue4| log10 dm2 on the y grid ``ue4`` x ``dm2`` (|Ue4| fastest).
    Returns a :class:`Posterior`, or a list of them for a batch.
    """
    la, lb = np.log10(np.asarray(yhat_ue4, dtype=float)), np.log10(np.asarray(yhat_dm2, dtype=float))
    p = kde_grid(samples, la, lb, bandwidth=bandwidth, threads=threads)
    dA = cell_areas(yhat_ue4, yhat_dm2)
    post = integrate(p, transition, dA, threads=threads, check_transition=check_transition)
    n_u, n_d = np.asarray(ue4).size, np.asarray(dm2).size
    if post.shape[-1] != n_u * n_d:
        raise ValueError(f"transition has {post.shape[-1]} y cells, the y grid has {n_d} x {n_u} = {n_u * n_d}")
    if post.ndim == 1:
        return Posterior(ue4, dm2, post.reshape(n_d, n_u), meta=meta)
    return [Posterior(ue4, dm2, q.reshape(n_d, n_u), meta=meta) for q in post]
