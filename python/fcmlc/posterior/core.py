"""p(y | x) on the (|Ue4|, dm2) grid: the :class:`Posterior` with the credible regions of the
FCMLC paper (Eq. 3), raster-scan upper limits (Eq. 4), best point, contours and summary.

Grid ordering: a map has shape (n_dm2, n_ue4) (rows are dm2); flattened, |Ue4| runs fastest.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import regions as _regions
from ..physics import sin2_2theta
from .npz import read_posterior_npz, write_posterior_npz
from .plot import PosteriorPlots

__all__ = ["Posterior"]


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


class Posterior(PosteriorPlots):
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

    Plots: :meth:`plot` (:mod:`fcmlc.posterior.plot`); files: :meth:`to_npz` / :meth:`from_npz`.
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
        self._source = None  # (experiments, data vector) of the fit, for diagnostics()

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
    def extent(self) -> tuple:
        """(|Ue4| low, |Ue4| high, dm2 low, dm2 high): the outer cell edges, the plane the cells
        cover (|Ue4| at most 1/sqrt 2, where sin^2 2theta = 1)."""
        lu, ld = self._lu_edges, self._ld_edges
        return (float(10 ** lu[0]), float(min(10 ** lu[-1], 2 ** -0.5)), float(10 ** ld[0]), float(10 ** ld[-1]))

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
        tol = _regions.EDGE_TOL  # a point on the outer edge, up to rounding, is in the outer cell
        if np.any((lu < eu[0] - tol) | (lu > eu[-1] + tol) | (ld < ed[0] - tol) | (ld > ed[-1] + tol)):
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
        arrays (broadcast); raises if a point lies outside the grid's cells (by more than
        :data:`fcmlc.regions.EDGE_TOL` in log10: a point on the outer edge is in the outer cell).
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

    def with_source(self, experiments, x) -> "Posterior":
        """Remember the experiments (names, objects or an ExperimentSet) and the data vector this
        posterior was fitted to, for :meth:`diagnostics` (FCMLC and the exact posterior set it).
        Returns self."""
        self._source = (experiments, np.array(x, dtype=float, copy=True))
        return self

    def diagnostics(self, experiments=None, x=None, **kwargs):
        """How far to trust this fit: :func:`fcmlc.diagnostics.diagnose` of the data vector it
        was fitted to (or ``x``), judging this posterior against the exact one. ``kwargs``:
        n_toys, seed, groups, thresholds, threads, model (see there)."""
        if experiments is None or x is None:
            if self._source is None:
                raise ValueError("this posterior does not know its data: pass experiments and x (posteriors from "
                                 "FCMLC.posterior and fcmlc.exact carry them; one read from a file does not)")
            experiments = self._source[0] if experiments is None else experiments
            x = self._source[1] if x is None else x
        # fcmlc.diagnostics compares Posterior objects, so it builds on this module: imported here
        from ..diagnostics import diagnose

        return diagnose(experiments, x, posterior=self, **kwargs)

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

    def summary_text(self, levels=(0.68, 0.9, 0.95)) -> str:
        """:meth:`summary` as text for people: what was fitted, the best point and marginal modes
        in sin^2(2 theta) and dm2, and per credible level the region's cells, enclosed mass, share
        of the (log10|Ue4|, log10 dm2) plane, whether it excludes the no-oscillation edge and the
        tightest raster-scan upper limit (with the dm2 where it is reached); then grid-edge
        warnings. ``print(posterior)`` prints it with the default levels."""
        s = self.summary(levels)
        what = [str(self.meta[k]) for k in ("method",) if self.meta.get(k)]
        exps = self.meta.get("experiments") or self.meta.get("experiment")
        if exps:
            what.append(", ".join(exps) if isinstance(exps, (list, tuple)) else str(exps))
        b, m = s["best_point"], s["marginal_mode"]
        lines = [f"Posterior{' (' + ': '.join(what) + ')' if what else ''} on {s['grid']['n_ue4']} x "
                 f"{s['grid']['n_dm2']} cells (|Ue4| x dm2), |Ue4| {10 ** self._lu_edges[0]:.3g}-"
                 f"{10 ** self._lu_edges[-1]:.3g}, dm2 {10 ** self._ld_edges[0]:.3g}-{10 ** self._ld_edges[-1]:.3g} eV^2",
                 f"  best point (densest cell): sin^2(2 theta) = {b['sin2_2theta']:.3g}, dm2 = {b['dm2']:.3g} eV^2 "
                 f"(|Ue4| = {b['ue4']:.3g})",
                 f"  marginal modes: sin^2(2 theta) = {float(sin2_2theta(m['ue4'])):.3g}, dm2 = {m['dm2']:.3g} eV^2",
                 "  highest-density credible regions (plane: share of the log10|Ue4| x log10 dm2 plane; raster "
                 "limit: per dm2 row, Eq. 4):",
                 "  level  cells   mass  plane  no-oscillation edge  tightest raster-scan upper limit"]
        for lv in levels:
            v = s["levels"][f"{float(lv):g}"]
            lim = self.upper_limits(lv, x="sin2")
            if np.any(np.isfinite(lim)):
                j = int(np.nanargmin(lim))
                limit = f"sin^2(2 theta) < {lim[j]:.3g} at dm2 = {self._dm2[j]:.3g} eV^2"
            else:
                limit = "none (no mass)"
            lines.append(f"  {100 * float(lv):>4.3g}%  {v['n_cells']:>5d}  {v['mass']:.3f}  {100 * v['area_fraction']:>4.0f}%  "
                         f"{'excluded' if v['excludes_null'] else 'allowed':<19s}  {limit}")
        lines += [f"  warning: {w}" for w in s["edge_warnings"]]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary_text()

    def __repr__(self) -> str:
        bu, bd = self.best_point()
        return f"Posterior({self._dm2.size} dm2 x {self._ue4.size} |Ue4| cells, best point |Ue4|={bu:.3g}, dm2={bd:.3g} eV^2)"

    # ---- I/O (NPZ + JSON, no pickle; format: fcmlc.posterior.npz) ----

    def to_npz(self, path) -> Path:
        """Write ue4, dm2, the cell masses, the density and JSON metadata to ``path`` (.npz)."""
        return write_posterior_npz(self, path)

    @classmethod
    def from_npz(cls, path) -> "Posterior":
        """Read a file written by :meth:`to_npz` (arrays exactly as written; no pickle)."""
        f = read_posterior_npz(path)
        return cls(f["ue4"], f["dm2"], f["mass"], meta=f["meta"], _normalised=True)
