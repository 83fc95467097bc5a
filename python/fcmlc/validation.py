"""Validation of FCMLC against the truth and against the frequentist methods
(paper Sec. II C 1-2, Fig. 2, Fig. 4, Sec. IV).

* :func:`mse_maps` - binned mean squared error of the regressor's predictions on the test
  set, the interpolation and random samples separately (Fig. 2).
* :func:`coverage` - coverage checks (Sec. II C 2, Fig. 4): truths drawn from the prior,
  one simulated realization each, FCMLC posteriors, Wilks and Feldman-Cousins regions;
  observed coverage at nominal levels with binomial intervals and the whole
  expected-coverage curve -> :class:`CoverageResult`.
* :func:`compare` - one data vector, FCMLC credible regions vs Wilks and FC confidence
  regions on one figure, with intersection-over-union -> :class:`Comparison`.

Variables: y = (log10|Ue4|, log10 dm2), the prior of the paper is uniform in y over the grid's
ranges, and areas (IoU) are measured in y.

How the truth is located (``truths=`` of :func:`coverage`)
---------------------------------------------------------
``"continuous"`` (default; the paper's check): y drawn uniformly over the ranges of the chi2
grid (the model's training grid unless ``grid`` or ``fc`` says otherwise; its points must lie
inside the posterior grid).

* FCMLC: the posterior's y-grid cell that contains the truth; the truth is covered at level
  L when the posterior mass of the cells strictly denser than that cell is < L (exactly the
  membership test of the highest-density region, :func:`fcmlc.regions.credible_level_map`).
* Wilks: the test statistic is evaluated *at the truth itself*, not at a grid point:
  Delta-chi2_t = chi2(x; truth) - min(min over the chi2 grid, chi2(x; truth)), with
  chi2(x; truth) = the exact profile chi2 at the truth, as the grid scan computes it
  (:meth:`fcmlc.frequentist.Chi2Model.chi2_at`), and covered when Delta-chi2_t <= the chi2(2 dof)
  quantile. The grid minimum is above the continuum minimum by a fraction of a cell, which
  makes Delta-chi2_t slightly small (coverage slightly high) on a coarse grid.
* Feldman-Cousins: the same Delta-chi2_t against the critical value of the *nearest* chi2-grid
  point in y (FC critical values exist only on the grid). Approximate: critical values are
  taken as constant over a grid cell.

``"grid"``: truths drawn uniformly among the points of the chi2 grid (the FC grid when one is
given, else the model's training grid): a log-uniform prior discretised on the grid.

* Wilks and FC use Delta-chi2 at the truth's grid point from the grid scan, i.e. exactly the
  statistic whose toy distribution FC tabulated: FC coverage is then nominal up to the toys'
  Monte-Carlo error (the ceil(L n)-th of n toys covers a fresh draw with probability
  ceil(L n)/(n + 1) for a continuous statistic, at least that with ties). This is the check
  that makes the FC comparison exact.
* FCMLC: with the default grids (n x n points, (n - 1) x (n - 1) posterior cells over the same
  ranges) every grid point lies on a cell corner. The truth is covered when the HPD region,
  as a union of *closed* cells, contains it: the smallest credibility level among the cells
  touching the point (one cell for interior points). This favours coverage slightly; use
  ``"continuous"`` for the paper's FCMLC check.

Random streams: truths come from ``numpy.random.default_rng([seed, 0xC0FE])``; realization i
is drawn by :func:`fcmlc.simulation.realizations` with ``seed`` and point id 2**40 + i, a key
no grid point of a dataset or of FC toys uses, so trials never reproduce training data or FC
toys. MC-dropout masks of batch b (``FCMLC_BATCH`` trials) are seeded with (seed, b). The same
arguments give the same result.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .physics import Grid, sin2_2theta
from ._io import jsonable as _jsonable, npz_header
from ._threads import torch_threads as _torch_threads

__all__ = [
    "MSEMaps",
    "mse_maps",
    "CoverageResult",
    "coverage",
    "Comparison",
    "compare",
    "truth_credible_levels",
    "chi2_at",
    "common_raster",
    "regrid_cells",
    "regrid_points",
    "binomial_interval",
    "FCMLC_BATCH",
    "CHI2_BATCH",
    "TRIAL_KEY_OFFSET",
]

#: Trials per batch of FCMLC fits (the dropout seed of batch b is (seed, b)).
FCMLC_BATCH = 200
#: Data vectors per batch of chi2 scans.
CHI2_BATCH = 256
#: Realization i of a coverage check is keyed as point id TRIAL_KEY_OFFSET + i.
TRIAL_KEY_OFFSET = 1 << 40
_TRUTH_STREAM = 0xC0FE
_EDGE_TOL = 1e-9  # log10 units: a truth this close to a cell edge touches both cells ("grid" truths)
_FORMAT = "fcmlc.CoverageResult"
_FORMAT_VERSION = 1
METHODS = ("fcmlc", "wilks", "fc")
METHOD_LABELS = {"fcmlc": "FCMLC (HPD)", "wilks": "Wilks", "fc": "Feldman-Cousins"}


# ---------------------------------------------------------------------------------------------
# small helpers


def _version() -> str:
    from . import __version__

    return __version__


def _check_levels(levels, name="levels") -> tuple:
    try:
        lv = tuple(float(v) for v in np.atleast_1d(levels))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers in (0, 1), got {levels!r}") from None
    if not lv:
        raise ValueError(f"{name} must not be empty")
    for v in lv:
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} must lie in (0, 1) (e.g. 0.9 for 90%), got {v!r}")
    if len(set(lv)) != len(lv):
        raise ValueError(f"{name} contain duplicates: {list(lv)}")
    return tuple(sorted(lv))


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_positive_int(v, name) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _load_model(model):
    if isinstance(model, (str, os.PathLike)):
        from .models import FCMLC

        return FCMLC.load(model, device="cpu")
    for attr in ("experiments", "y_grid", "posterior_density"):
        if not hasattr(model, attr):
            raise ValueError(f"model must be an FCMLC model (or a model directory); {type(model).__name__} has no "
                             f"{attr!r}")
    return model


def _load_fc(fc):
    if fc is None:
        return None
    from .frequentist import FCResult

    if isinstance(fc, (str, os.PathLike)):
        p = Path(fc)
        if not p.is_file():
            raise FileNotFoundError(f"Feldman-Cousins file {str(p)!r} not found")
        return FCResult.load(p)
    if not isinstance(fc, FCResult):
        raise ValueError(f"fc must be an FCResult or the path of an `fcmlc fc` HDF5 file, got {type(fc).__name__}")
    return fc


def _model_experiments(model, experiments):
    """Experiment objects (an ExperimentSet) in the model's feature order."""
    from . import experiments as ex
    from .frequentist import resolve_experiments

    exps = resolve_experiments(model.experiments if experiments is None else experiments)
    names = [e.name for e in exps]
    if [n.upper() for n in names] != [str(n).upper() for n in model.experiments]:
        raise ValueError(f"experiments {names} differ from the model's {list(model.experiments)} (same names, same "
                         "order needed)")
    saved = (getattr(model, "info", None) or {}).get("experiment_hashes") or {}
    changed = [e.name for e in exps if saved.get(e.name) and saved[e.name] != e.definition_hash]
    if changed:
        warnings.warn(f"the definition of {', '.join(changed)} differs from the one the model was trained on: "
                      "the validation may not be meaningful", stacklevel=3)
    eset = ex.combine(exps)
    n_feat = getattr(model, "n_features", None)
    if n_feat is not None and eset.n_bins != int(n_feat):
        raise ValueError(f"the experiments {names} have {eset.n_bins} bins but the model expects {n_feat} features")
    return eset


def _y_ranges(model):
    yg = model.y_grid
    return tuple(map(float, yg.ue4_range)), tuple(map(float, yg.dm2_range))


def _default_chi2_grid(model) -> Grid:
    """The model's training grid (from its dataset record), else n + 1 points per axis over its y grid."""
    d = (getattr(model, "info", None) or {}).get("dataset") or {}
    if d.get("grid"):
        return Grid.from_dict(d["grid"])
    (u0, u1), (d0, d1) = _y_ranges(model)
    return Grid((u0, u1), (d0, d1), (model.y_grid.n_ue4 + 1, model.y_grid.n_dm2 + 1))


def _check_grid_inside(grid: Grid, urange, drange):
    """The chi2 grid's points must lie inside the posterior grid's cells (so a truth on a grid
    point has a posterior cell, and both methods see the same parameter space)."""
    lu, ld = np.log10(grid.ue4_range), np.log10(grid.dm2_range)
    pu, pd = np.log10(urange), np.log10(drange)
    tol = _EDGE_TOL
    if lu[0] < pu[0] - tol or lu[1] > pu[1] + tol or ld[0] < pd[0] - tol or ld[1] > pd[1] + tol:
        raise ValueError(f"the chi2 grid spans |Ue4| {grid.ue4_range}, dm2 {grid.dm2_range} eV^2, outside the model's "
                         f"posterior grid (|Ue4| {urange}, dm2 {drange}): use a grid over the model's ranges")


def binomial_interval(count, n, confidence=0.6827, method="beta"):
    """Two-sided binomial confidence interval (lower, upper) of count / n, via statsmodels'
    ``proportion_confint`` (``method='beta'``: Clopper-Pearson, exact and conservative;
    ``'wilson'``: Wilson score). ``confidence`` 0.6827 gives 1-sigma bands."""
    from statsmodels.stats.proportion import proportion_confint

    confidence = float(confidence)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    c = np.asarray(count, dtype=float)
    lo, hi = proportion_confint(c, int(n), alpha=1.0 - confidence, method=method)
    lo = np.where(c <= 0, 0.0, np.nan_to_num(np.asarray(lo, dtype=float), nan=0.0))
    hi = np.where(c >= n, 1.0, np.nan_to_num(np.asarray(hi, dtype=float), nan=1.0))
    return lo, hi


# ---------------------------------------------------------------------------------------------
# Fig. 2: binned MSE maps


@dataclass
class MSEMaps:
    """Binned MSE of the regressor's predictions (Fig. 2).

    ``maps[split]`` holds ``mse`` (n_dm2_bins, n_ue4_bins): the mean over the samples of a bin of
    the squared error averaged over the two outputs (the network's training loss), ``mse_ue4``
    and ``mse_dm2`` per output, and ``count`` (samples per bin; empty bins are NaN).
    ``overall[split]`` is the unbinned MSE. Errors are in ``variables``: 'log10' (y =
    log10|Ue4|, log10 dm2) or 'standardised' (y scaled by the model's target scaler, the units
    of the training loss). Bin edges are in |Ue4| and dm2 [eV^2] (log-uniform bins).
    """

    ue4_edges: np.ndarray
    dm2_edges: np.ndarray
    variables: str
    maps: dict
    overall: dict
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"variables": self.variables, "bins": [len(self.ue4_edges) - 1, len(self.dm2_edges) - 1],
                "overall_mse": {k: float(v) for k, v in self.overall.items()},
                "n_test_samples": {k: int(m["count"].sum()) for k, m in self.maps.items()}, **self.meta}

    def plot(self, fig=None, x: str = "sin2", cmap: str = "Reds", vmin=None, vmax=None):
        """Two panels (interpolation, random sample) of the binned MSE on log-log axes with the
        field's conventions (sin^2 2theta or |Ue4| horizontally, dm2 vertically); white = small
        error, as in Fig. 2; grey = no test sample in the bin. Returns the Figure."""
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure

        from . import plotting as P

        if fig is None:
            fig = Figure(figsize=(11.0, 4.6), layout="constrained")
        names = [s for s in ("interpolation", "random") if s in self.maps] or list(self.maps)
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        vals = np.concatenate([self.maps[s]["mse"][np.isfinite(self.maps[s]["mse"])] for s in names])
        vals = vals[vals > 0]
        lo = vmin if vmin is not None else (float(vals.min()) if vals.size else 1e-6)
        hi = vmax if vmax is not None else (float(vals.max()) if vals.size else 1.0)
        norm = LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001))
        import matplotlib

        cm = matplotlib.colormaps[cmap].with_extremes(bad="0.8")
        ue = np.minimum(self.ue4_edges, 1.0 / np.sqrt(2.0))  # sin^2 2theta is monotone up to |Ue4| = 1/sqrt(2)
        xe = P.to_xaxis(ue, x)
        mesh = None
        for ax, s in zip(axes, names):
            m = np.ma.masked_invalid(np.where(self.maps[s]["mse"] > 0, self.maps[s]["mse"], np.nan))
            mesh = ax.pcolormesh(xe, self.dm2_edges, m, norm=norm, cmap=cm, shading="flat")
            P.setup_oscillation_axes(ax, x=x, ue4_range=(ue[0], ue[-1]),
                                     dm2_range=(self.dm2_edges[0], self.dm2_edges[-1]),
                                     title=f"{s} sample: MSE {self.overall[s]:.3g} ({self.variables})")
        if mesh is not None:
            fig.colorbar(mesh, ax=list(axes), label=f"MSE ({self.variables} units)")
        return fig


def _bin_edges(lo, hi, n):
    return np.linspace(math.log10(lo), math.log10(hi), int(n) + 1)


def _bin_index(v_log, edges_log):
    return np.clip(np.searchsorted(edges_log, v_log, side="right") - 1, 0, edges_log.size - 2)


def mse_maps(model, dataset, bins=(20, 20), n_samples: int = 100, seed: int = 0, variables: str = "log10",
             max_per_split=None, batch: int = 2048, threads=None) -> MSEMaps:
    """Binned MSE maps of the regressor on the test set (paper Sec. II C 1, Fig. 2).

    The prediction for a data vector is the mean of ``n_samples`` MC-dropout predictions
    (``model.regressor.predict_mean``, seeded per batch with (seed, batch index)). Errors are
    taken in ``variables``: 'log10' (log10|Ue4|, log10 dm2) or 'standardised' (the model's
    target scaler: the units of the training loss). The interpolation sample (held-out grid
    points) and the random sample (held-out realizations) are mapped separately.

    bins: (n_ue4_bins, n_dm2_bins), log-uniform over the dataset grid's ranges, or None for one
    bin per grid point (the paper's "binned in each unique Ue4, dm2"). max_per_split: use a
    seeded random subset of at most this many samples per split (None: all).
    dataset: a path or an open :class:`fcmlc.dataset.SimDataset` (its experiments must contain
    the model's, in the model's order).
    """
    from .dataset import SimDataset, open_dataset
    from .models.pipeline import _feature_columns

    if variables not in ("log10", "standardised"):
        raise ValueError(f"variables must be 'log10' or 'standardised', got {variables!r}")
    n_samples = _check_positive_int(n_samples, "n_samples")
    seed = _check_seed(seed)
    batch = _check_positive_int(batch, "batch")
    model = _load_model(model)
    if not hasattr(model, "regressor"):
        raise ValueError("mse_maps needs an FCMLC model with a regressor")
    own = not isinstance(dataset, SimDataset)
    ds = open_dataset(dataset) if own else dataset
    try:
        ds.require_complete()
        _, cols = _feature_columns(ds, list(model.experiments))
        g = ds.grid
        if bins is None:
            from .regions import cell_edges

            nb_u, nb_d = g.n_ue4, g.n_dm2
            eu, ed = cell_edges(g.ue4), cell_edges(g.dm2)  # one bin per grid point, edges in log10
        else:
            try:
                nb_u, nb_d = (int(b) for b in bins)
            except (TypeError, ValueError):
                raise ValueError(f"bins must be (n_ue4_bins, n_dm2_bins) or None, got {bins!r}") from None
            if nb_u < 1 or nb_d < 1:
                raise ValueError(f"bins must be positive, got {bins!r}")
            eu, ed = _bin_edges(*g.ue4_range, nb_u), _bin_edges(*g.dm2_range, nb_d)
        rng = np.random.default_rng([seed, 0x3E5])
        maps, overall, counts = {}, {}, {}
        t0 = time.perf_counter()
        with _torch_threads(threads):
            for split, name in (("test_interpolation", "interpolation"), ("test_random", "random")):
                idx = ds.split_indices(split)
                if max_per_split is not None and idx.size > int(max_per_split):
                    idx = np.sort(rng.choice(idx, size=int(max_per_split), replace=False))
                if idx.size == 0:
                    raise ValueError(f"the dataset's {split} split is empty")
                y = np.log10(ds.targets(idx))
                pred = np.empty_like(y)
                for b, s0 in enumerate(range(0, idx.size, batch)):
                    xb = ds.features(idx[s0:s0 + batch]).astype(np.float64)
                    if cols is not None:
                        xb = xb[:, cols]
                    sb = int(np.random.SeedSequence([seed, b]).generate_state(1)[0])
                    pred[s0:s0 + batch] = model.regressor.predict_mean(model.features.transform(xb), n_samples,
                                                                       seed=sb)
                if variables == "standardised":
                    y = model.regressor.y_scaler.transform(y)
                    pred = model.regressor.y_scaler.transform(pred)
                se = (pred - y) ** 2  # (n, 2)
                ty = np.log10(ds.targets(idx))
                iu, idm = _bin_index(ty[:, 0], eu), _bin_index(ty[:, 1], ed)
                flat = idm * nb_u + iu
                cnt = np.bincount(flat, minlength=nb_u * nb_d).astype(float)
                with np.errstate(invalid="ignore", divide="ignore"):
                    su = np.bincount(flat, weights=se[:, 0], minlength=nb_u * nb_d) / cnt
                    sd = np.bincount(flat, weights=se[:, 1], minlength=nb_u * nb_d) / cnt
                shape = (nb_d, nb_u)
                maps[name] = {"mse": (0.5 * (su + sd)).reshape(shape), "mse_ue4": su.reshape(shape),
                              "mse_dm2": sd.reshape(shape), "count": cnt.reshape(shape).astype(np.int64)}
                overall[name] = float(se.mean())
                counts[name] = int(idx.size)
        meta = {"mc_samples": n_samples, "seed": seed, "experiments": list(model.experiments),
                "dataset": str(getattr(ds, "path", "")), "samples_used": counts,
                "seconds": time.perf_counter() - t0}
        return MSEMaps(10.0 ** eu, 10.0 ** ed, variables, maps, overall, meta)
    finally:
        if own:
            ds.close()


# ---------------------------------------------------------------------------------------------
# locating the truth


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
    tol = _EDGE_TOL
    if np.any((lu < eu[0] - tol) | (lu > eu[-1] + tol) | (ld < ed[0] - tol) | (ld > ed[-1] + tol)):
        raise ValueError("a truth lies outside the posterior grid")
    flat = d.reshape(d.shape[0], -1)
    tot = flat.sum(axis=1)
    if np.any(~(tot > 0)):
        raise ValueError(f"posterior {int(np.flatnonzero(~(tot > 0))[0])} has zero total mass")
    if closed:
        cu = [_bin_index(lu - tol, eu), _bin_index(lu + tol, eu)]
        cd = [_bin_index(ld - tol, ed), _bin_index(ld + tol, ed)]
    else:
        cu, cd = [_bin_index(lu, eu)], [_bin_index(ld, ed)]
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
    from .experiments import combine

    mu = combine(list(chi2_model.experiments)).expectation(np.asarray(ue4, float), np.asarray(dm2, float))
    return np.atleast_1d(chi2_model.chi2_at(np.atleast_2d(x), np.atleast_2d(mu)))


def _nearest_points(grid: Grid, ue4, dm2) -> np.ndarray:
    lu = np.log10(grid.ue4)
    ld = np.log10(grid.dm2)
    iu = np.clip(np.rint((np.log10(ue4) - lu[0]) / (lu[1] - lu[0])).astype(np.int64), 0, grid.n_ue4 - 1)
    idm = np.clip(np.rint((np.log10(dm2) - ld[0]) / (ld[1] - ld[0])).astype(np.int64), 0, grid.n_dm2 - 1)
    return idm * grid.n_ue4 + iu


# ---------------------------------------------------------------------------------------------
# coverage


@dataclass
class CoverageResult:
    """Outcome of :func:`coverage`.

    levels (n_levels,) nominal levels; for each method m in ``methods``:
    ``covered[m]`` (n_trials, n_levels) bool, ``fraction[m]``, ``interval[m]`` (2, n_levels)
    binomial bands (``band`` confidence, Clopper-Pearson unless ``meta['interval_method']``
    says otherwise). ``statistic[m]`` (n_trials,): the level at which the truth is first
    covered - FCMLC: posterior mass of denser cells (covered at L iff < L); Wilks: chi2_2 CDF of
    Delta-chi2 at the truth (covered iff <= L); FC: Delta-chi2 at the truth (no continuous
    curve: critical values exist only at the FC levels). ``curve_nominal`` (n_curve,) and
    ``curve[m]`` (n_curve,): the expected-coverage curve, the empirical CDF of the statistic
    (FCMLC, Wilks), with ``curve_interval[m]`` (2, n_curve).
    """

    levels: tuple
    methods: tuple
    truths: str
    truth_ue4: np.ndarray
    truth_dm2: np.ndarray
    covered: dict
    statistic: dict
    curve_nominal: np.ndarray
    band: float = 0.6827
    failed: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    # -- derived --
    @property
    def n_trials(self) -> int:
        return int(self.truth_ue4.size)

    @property
    def fraction(self) -> dict:
        return {m: self.covered[m].mean(axis=0) for m in self.methods}

    @property
    def interval(self) -> dict:
        meth = self.meta.get("interval_method", "beta")
        return {m: np.array(binomial_interval(self.covered[m].sum(axis=0), self.n_trials, self.band, meth))
                for m in self.methods}

    @property
    def curve(self) -> dict:
        out = {}
        for m in self.methods:
            s = self.statistic[m]
            if m == "fcmlc":
                out[m] = (s[:, None] < self.curve_nominal[None, :]).mean(axis=0)
            elif m == "wilks":
                out[m] = (s[:, None] <= self.curve_nominal[None, :]).mean(axis=0)
        return out

    @property
    def curve_interval(self) -> dict:
        meth = self.meta.get("interval_method", "beta")
        return {m: np.array(binomial_interval(np.rint(c * self.n_trials), self.n_trials, self.band, meth))
                for m, c in self.curve.items()}

    def summary(self) -> dict:
        """JSON-ready: for every method and level the observed coverage and its band."""
        fr, iv = self.fraction, self.interval
        table = {}
        for m in self.methods:
            table[m] = {f"{L:g}": {"nominal": L, "observed": float(fr[m][i]), "band": [float(iv[m][0, i]),
                                                                                       float(iv[m][1, i])],
                                   "covered": int(self.covered[m][:, i].sum())}
                        for i, L in enumerate(self.levels)}
        return {"n_trials": self.n_trials, "truths": self.truths, "levels": list(self.levels),
                "methods": list(self.methods), "band_confidence": self.band,
                "n_failed_fcmlc_fits": int(0 if self.failed is None else self.failed.sum()),
                "coverage": table, "meta": self.meta}

    def __repr__(self) -> str:
        fr = self.fraction
        parts = [f"{m}: " + ", ".join(f"{L:g}->{fr[m][i]:.3f}" for i, L in enumerate(self.levels)) for m in self.methods]
        return f"CoverageResult({self.n_trials} trials, truths={self.truths!r}; " + "; ".join(parts) + ")"

    # -- I/O --
    def save(self, path) -> Path:
        """Write every array and the settings to ``path`` (.npz; the settings as a JSON header;
        no pickle). Returns the path written."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        header = {"format": _FORMAT, "version": _FORMAT_VERSION, "levels": list(self.levels),
                  "methods": list(self.methods), "truths": self.truths, "band": self.band, "meta": self.meta}
        arrays = {"truth_ue4": self.truth_ue4, "truth_dm2": self.truth_dm2, "curve_nominal": self.curve_nominal,
                  "failed": np.zeros(self.n_trials, bool) if self.failed is None else self.failed}
        for m in self.methods:
            arrays[f"covered_{m}"] = self.covered[m]
            arrays[f"statistic_{m}"] = self.statistic[m]
        np.savez_compressed(path, header=np.array(json.dumps(_jsonable(header))), **arrays)
        return path

    @classmethod
    def load(cls, path) -> "CoverageResult":
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"coverage file {str(path)!r} not found")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a coverage result file ({e})") from None
        with z:
            if "header" not in z.files:
                raise ValueError(f"{path}: not a coverage result file (no header)")
            h = npz_header(z, path, _FORMAT, _FORMAT_VERSION)
            methods = tuple(h["methods"])
            return cls(tuple(h["levels"]), methods, h["truths"], z["truth_ue4"], z["truth_dm2"],
                       {m: z[f"covered_{m}"] for m in methods}, {m: z[f"statistic_{m}"] for m in methods},
                       z["curve_nominal"], float(h["band"]), z["failed"], h.get("meta") or {})

    # -- plot --
    def plot(self, ax=None, title=None):
        """Observed vs nominal coverage: the expected-coverage curves (FCMLC, Wilks) with their
        binomial bands, the observed coverage at each nominal level (all methods) with error
        bars, and the diagonal. Returns the Axes."""
        from matplotlib.figure import Figure

        from . import plotting as P

        if ax is None:
            ax = Figure(figsize=(5.6, 5.2), layout="constrained").subplots()
        colours = {"fcmlc": P.METHOD_STYLES["fcmlc"]["color"], "wilks": P.METHOD_STYLES["wilks"]["color"],
                   "fc": P.METHOD_STYLES["feldman_cousins"]["color"]}
        markers = {"fcmlc": "o", "wilks": "s", "fc": "D"}
        ax.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1.0, label="nominal")
        cv, ci = self.curve, self.curve_interval
        for m, c in cv.items():
            ax.fill_between(self.curve_nominal, ci[m][0], ci[m][1], color=colours[m], alpha=0.25, linewidth=0)
            ax.plot(self.curve_nominal, c, color=colours[m], linewidth=1.4, label=f"{METHOD_LABELS[m]} (curve)")
        fr, iv = self.fraction, self.interval
        lv = np.asarray(self.levels)
        for k, m in enumerate(self.methods):
            off = (k - (len(self.methods) - 1) / 2) * 0.006
            ax.errorbar(lv + off, fr[m], yerr=[fr[m] - iv[m][0], iv[m][1] - fr[m]], fmt=markers[m], color=colours[m],
                        markersize=5, capsize=2, linestyle="none", label=f"{METHOD_LABELS[m]} at levels")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("nominal (expected) coverage")
        ax.set_ylabel("observed coverage")
        ax.set_title(title or f"coverage: {self.n_trials} trials ({self.truths} truths), "
                               f"{100 * self.band:.3g}% bands", fontsize="medium")
        ax.legend(loc="upper left", fontsize="small", framealpha=0.85)
        return ax


def _draw_truths(mode, n, seed, urange, drange, grid):
    rng = np.random.default_rng([seed, _TRUTH_STREAM])
    if mode == "continuous":
        lu = rng.uniform(math.log10(urange[0]), math.log10(urange[1]), n)
        ld = rng.uniform(math.log10(drange[0]), math.log10(drange[1]), n)
        return 10.0 ** lu, 10.0 ** ld, None
    pid = rng.integers(0, grid.n_points, n)
    pts = grid.points()[pid]
    return pts[:, 0].copy(), pts[:, 1].copy(), pid


def _fcmlc_densities(model, X, n_samples, seed, threads, batch_index):
    """posterior_density for one batch; a batch that fails is redone trial by trial and the
    trials that still fail are reported (None)."""
    s = int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])
    try:
        return model.posterior_density(X, n_samples=n_samples, seed=s, threads=threads), np.zeros(len(X), bool)
    except ValueError:
        pass
    out, bad = [], np.zeros(len(X), bool)
    shape = (model.y_grid.n_dm2, model.y_grid.n_ue4)
    for i in range(len(X)):
        try:
            out.append(model.posterior_density(X[i:i + 1], n_samples=n_samples, seed=s, threads=threads)[0])
        except ValueError:
            out.append(np.ones(shape))
            bad[i] = True
    return np.stack(out), bad


def coverage(model, trials: int = 2000, levels=(0.68, 0.90, 0.95), seed: int = 0, methods=None, fc=None,
             n_samples: int = 1000, threads=None, truths: str = "continuous", grid: Grid | None = None,
             experiments=None, band: float = 0.6827, interval_method: str = "beta", curve_points: int = 101,
             progress: bool = False) -> CoverageResult:
    """Coverage check of FCMLC credible regions, Wilks and Feldman-Cousins regions (Sec. II C 2).

    ``trials`` truths are drawn from the prior (uniform in log10|Ue4|, log10 dm2 over the
    ranges of the chi2 grid - by default the model's training grid, i.e. the paper's bounds;
    ``truths='grid'``: uniform over that grid's points - see the module docstring for how each
    method locates the truth in either mode), one realization of the
    model's experiments is simulated at each (:func:`fcmlc.simulation.realizations`), and

    * 'fcmlc': the FCMLC posterior (``model.posterior_density``, ``n_samples`` MC-dropout
      samples, in batches of :data:`FCMLC_BATCH`) -> is the truth in the HPD region of level L?
    * 'wilks': chi2 scan on ``grid`` -> Delta-chi2 at the truth <= chi2_2 quantile?
    * 'fc': the same Delta-chi2 <= the FC critical value (``fc``: an FCResult or the path of
      an ``fcmlc fc`` file for the model's experiments; its grid is the chi2 grid; every level
      in ``levels`` must be among its levels).

    The chi2 grid's points must lie inside the posterior grid (the model's ranges).

    methods: subset of ('fcmlc', 'wilks', 'fc'); None = all that apply ('fc' only with ``fc``).
    grid: chi2 grid and range of the truths when no ``fc`` is given (default: the model's
    training grid, recorded in its directory; else n + 1 points per axis over its posterior grid).
    experiments: the experiment objects to simulate (default: the model's, loaded by name).
    band: confidence of the binomial bands (0.6827 = 1 sigma), ``interval_method`` 'beta'
    (Clopper-Pearson) or 'wilson'. curve_points: nominal levels of the expected-coverage curve
    (evenly spaced over [0, 1]).

    ``model`` may be any object with ``experiments``, ``y_grid`` (cells uniform in log10, with
    ``ue4_range``, ``dm2_range``, ``n_ue4``, ``n_dm2``, ``log_ue4_edges``, ``log_dm2_edges``) and
    ``posterior_density(X, n_samples=, seed=, threads=)`` returning (n, n_dm2, n_ue4), e.g. an
    exact posterior for testing. Same arguments -> same result.
    """
    from .frequentist import Chi2Model, chi2_scan, wilks_threshold
    from .simulation import realizations

    model = _load_model(model)
    trials = _check_positive_int(trials, "trials")
    levels = _check_levels(levels)
    seed = _check_seed(seed)
    n_samples = _check_positive_int(n_samples, "n_samples")
    curve_points = _check_positive_int(curve_points, "curve_points")
    if curve_points < 2:
        raise ValueError("curve_points must be >= 2")
    if truths not in ("continuous", "grid"):
        raise ValueError(f"truths must be 'continuous' or 'grid', got {truths!r}")
    if interval_method not in ("beta", "wilson"):
        raise ValueError(f"interval_method must be 'beta' (Clopper-Pearson) or 'wilson', got {interval_method!r}")
    if not 0 < float(band) < 1:
        raise ValueError(f"band must lie in (0, 1), got {band!r}")
    if threads is not None:
        threads = _check_positive_int(threads, "threads")
    fc = _load_fc(fc)
    if methods is None:
        methods = ("fcmlc", "wilks") + (("fc",) if fc is not None else ())
    elif isinstance(methods, str):
        methods = tuple(s.strip() for s in methods.split(",") if s.strip())
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be distinct names among {METHODS}, got {list(methods)}")
    methods = tuple(m for m in METHODS if m in methods)
    if "fc" in methods and fc is None:
        raise ValueError("method 'fc' needs a Feldman-Cousins result: pass fc=FCResult or the path of an "
                         "`fcmlc fc` file")

    eset = _model_experiments(model, experiments)
    urange, drange = _y_ranges(model)
    if fc is not None:
        if [n.upper() for n in fc.experiments] != [n.upper() for n in eset.names]:
            raise ValueError(f"the Feldman-Cousins result is for {list(fc.experiments)} but the model is for "
                             f"{eset.names}")
        hashes = [e.definition_hash for e in eset.experiments]
        bad = [n for n, a, b in zip(eset.names, fc.definition_hashes, hashes) if a and b and a != b]
        if bad:
            raise ValueError(f"the Feldman-Cousins result was computed with other definitions of {', '.join(bad)}")
        if not fc.complete:
            raise ValueError(f"the Feldman-Cousins result is incomplete ({int(fc.done.sum())}/{fc.done.size} grid "
                             "points): finish it by rerunning the same `fcmlc fc` command")
        if "fc" in methods:
            missing = [L for L in levels if not any(abs(L - f) < 1e-9 for f in fc.levels)]
            if missing:
                raise ValueError(f"levels {missing} were not computed in the Feldman-Cousins result (it has "
                                 f"{list(fc.levels)}); choose levels among those")
        if grid is not None and grid != fc.grid:
            raise ValueError("grid differs from the Feldman-Cousins result's grid")
        grid = fc.grid
    elif grid is None:
        grid = _default_chi2_grid(model)
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be an fcmlc Grid, got {type(grid).__name__}")
    needs_chi2 = "wilks" in methods or "fc" in methods
    _check_grid_inside(grid, urange, drange)

    timings = {}
    t = time.perf_counter()
    tu, td, tpid = _draw_truths(truths, trials, seed, grid.ue4_range, grid.dm2_range, grid)
    X = realizations(eset, tu, td, n_per_point=1, seed=seed,
                     point_ids=TRIAL_KEY_OFFSET + np.arange(trials, dtype=np.int64), threads=threads)[:, 0, :]
    timings["simulate"] = time.perf_counter() - t

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=trials * (("fcmlc" in methods) + needs_chi2), unit="fit", desc="coverage")
    covered, stat = {}, {}
    failed = np.zeros(trials, bool)
    lv = np.asarray(levels)
    try:
        if "fcmlc" in methods:
            t = time.perf_counter()
            yg = model.y_grid
            eu, ed = np.asarray(yg.log_ue4_edges, float), np.asarray(yg.log_dm2_edges, float)
            areas = np.diff(ed)[:, None] * np.diff(eu)[None, :]
            if not np.allclose(areas, areas.flat[0], rtol=1e-9, atol=0):
                raise ValueError("the model's posterior grid must have cells of equal area in log10")
            s_f = np.empty(trials)
            with _torch_threads(threads):
                for b, s0 in enumerate(range(0, trials, FCMLC_BATCH)):
                    sl = slice(s0, min(trials, s0 + FCMLC_BATCH))
                    dens, bad = _fcmlc_densities(model, X[sl], n_samples, seed, threads, b)
                    s_f[sl] = truth_credible_levels(dens, eu, ed, tu[sl], td[sl], closed=(truths == "grid"))
                    s_f[sl][bad] = 1.0  # a failed fit never covers the truth
                    failed[sl] = bad
                    if bar is not None:
                        bar.update(sl.stop - sl.start)
            stat["fcmlc"] = s_f
            covered["fcmlc"] = s_f[:, None] < lv[None, :]
            timings["fcmlc_fits"] = time.perf_counter() - t
        if needs_chi2:
            t = time.perf_counter()
            cm = Chi2Model(eset.experiments, grid)
            delta = np.empty(trials)
            for s0 in range(0, trials, CHI2_BATCH):
                sl = slice(s0, min(trials, s0 + CHI2_BATCH))
                sc = chi2_scan(cm, X[sl], threads=threads)
                gmin = np.asarray(sc.min, dtype=float)
                if truths == "grid":
                    flat = sc.chi2.reshape(sc.chi2.shape[0], -1)
                    ct = flat[np.arange(flat.shape[0]), tpid[sl]]
                else:  # chi2 at the truth itself, the same profile chi2 as the scan
                    ct = chi2_at(cm, X[sl], tu[sl], td[sl])
                delta[sl] = ct - np.minimum(gmin, ct)
                if bar is not None:
                    bar.update(sl.stop - sl.start)
            timings["chi2_scans"] = time.perf_counter() - t
            if "wilks" in methods:
                from scipy.stats import chi2 as _chi2

                thr = np.array([wilks_threshold(L, 2) for L in levels])
                covered["wilks"] = delta[:, None] <= thr[None, :]
                stat["wilks"] = _chi2.cdf(delta, 2)
            if "fc" in methods:
                pid = tpid if truths == "grid" else _nearest_points(grid, tu, td)
                crit = np.stack([fc.critical_value(L).ravel()[pid] for L in levels], axis=1)
                covered["fc"] = delta[:, None] <= crit
                stat["fc"] = delta
    finally:
        if bar is not None:
            bar.close()

    meta = {
        "experiments": list(eset.names), "seed": seed, "n_samples": n_samples, "trials": trials,
        "chi2_grid": grid.to_dict(),
        "posterior_grid": {"ue4_range": list(urange), "dm2_range": list(drange),
                           "shape": [int(model.y_grid.n_ue4), int(model.y_grid.n_dm2)]},
        "fc": None if fc is None else {"path": None if fc.path is None else str(fc.path), "n_toys": int(fc.n_toys),
                                      "seed": int(fc.seed), "levels": list(fc.levels)},
        "model": (getattr(model, "info", None) or {}).get("directory"),
        "interval_method": interval_method, "fcmlc_batch": FCMLC_BATCH, "threads": threads,
        "seconds": timings, "fcmlc_version": _version(),
        "truth_location": ("FCMLC: the posterior cell containing the truth; Wilks: Delta-chi2 at the truth itself; "
                           "FC: Delta-chi2 at the truth vs the nearest grid point's critical value")
        if truths == "continuous" else
        ("truths on chi2 grid points; Wilks/FC: Delta-chi2 at the truth's grid point; FCMLC: smallest level of the "
         "closed cells touching the truth"),
    }
    return CoverageResult(levels, methods, truths, tu, td, covered, stat, np.linspace(0.0, 1.0, curve_points),
                          float(band), failed, meta)


# ---------------------------------------------------------------------------------------------
# comparison on one data vector


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
    from .regions import cell_edges

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


def regrid_cells(mask, log_ue4_edges, log_dm2_edges, raster_u, raster_d) -> np.ndarray:
    """A mask on cells (edges in log10) -> the raster: each pixel takes the cell containing its centre."""
    m = np.asarray(mask, dtype=bool)
    cu = 0.5 * (raster_u[1:] + raster_u[:-1])
    cd = 0.5 * (raster_d[1:] + raster_d[:-1])
    return m[np.ix_(_bin_index(cd, np.asarray(log_dm2_edges)), _bin_index(cu, np.asarray(log_ue4_edges)))]


def regrid_points(mask, grid: Grid, raster_u, raster_d) -> np.ndarray:
    """A mask on chi2-grid points -> the raster: each pixel takes the grid point nearest to its
    centre in log10 (the cells of :func:`fcmlc.regions.cell_edges`, as drawn by ``draw_mask``)."""
    from .regions import cell_edges

    m = np.asarray(mask, dtype=bool)
    if m.shape != (grid.n_dm2, grid.n_ue4):
        raise ValueError(f"mask must have the grid's shape {(grid.n_dm2, grid.n_ue4)}, got {m.shape}")
    cu = 0.5 * (raster_u[1:] + raster_u[:-1])
    cd = 0.5 * (raster_d[1:] + raster_d[:-1])
    return m[np.ix_(_bin_index(cd, cell_edges(grid.dm2)), _bin_index(cu, cell_edges(grid.ue4)))]


@dataclass
class Comparison:
    """FCMLC, Wilks and FC regions for one data vector (:func:`compare`).

    ``posterior``: the FCMLC :class:`fcmlc.posterior.Posterior`; ``scan``: the chi2 scan on
    ``grid``; ``regions[method][level]``: bool masks on each method's own grid (FCMLC: posterior
    cells (n_dm2, n_ue4); Wilks/FC: chi2-grid points); ``iou[level]['fcmlc-wilks' | 'fcmlc-fc' |
    'wilks-fc']``: intersection over union on the common raster (areas in log10|Ue4| x log10
    dm2, :func:`common_raster`); ``area_fraction[method][level]``: the region's share of the
    plane on that raster.
    """

    posterior: object
    scan: object
    grid: Grid
    levels: tuple
    regions: dict
    iou: dict
    area_fraction: dict
    truth: tuple | None = None
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        bu, bd = self.posterior.best_point()
        sb = self.scan.best_point
        return {
            "levels": list(self.levels),
            "iou": {f"{L:g}": dict(v) for L, v in self.iou.items()},
            "area_fraction": {m: {f"{L:g}": float(a) for L, a in d.items()} for m, d in self.area_fraction.items()},
            "best_point": {"fcmlc": {"ue4": bu, "dm2": bd, "sin2_2theta": float(sin2_2theta(bu))},
                           "chi2": {"ue4": float(sb[0]), "dm2": float(sb[1]), "sin2_2theta": float(sin2_2theta(sb[0])),
                                    "chi2_min": float(self.scan.min)}},
            "truth": None if self.truth is None else {"ue4": float(self.truth[0]), "dm2": float(self.truth[1])},
            **self.meta,
        }

    def plot(self, ax=None, x: str = "sin2", title=None):
        """FCMLC credible regions filled, Wilks (dashed red) and FC (dash-dot green) boundaries per
        level, the FCMLC best point (+) and the chi2 best fit (red X), IoU in the title. Returns
        the Axes."""
        from matplotlib.figure import Figure

        from . import plotting as P

        if ax is None:
            ax = Figure(figsize=(6.4, 5.6), layout="constrained").subplots()
        g = self.grid
        overlays = []
        styles = ("--", ":", "-.", "-")
        for method, lab in (("wilks", "Wilks"), ("fc", "Feldman-Cousins")):
            if method not in self.regions:
                continue
            for j, L in enumerate(self.levels):
                overlays.append((f"{lab} {P.level_label(L)}", (self.regions[method][L], g.ue4, g.dm2),
                                 {"linestyle": styles[j % len(styles)]}))
        self.posterior.plot(ax=ax, levels=self.levels, x=x, truth=self.truth, overlays=overlays, best_point=True)
        bu, bd = self.scan.best_point  # the chi2 best fit of the same data, on the chi2 grid
        ax.plot(P.to_xaxis(bu, x), bd, label="χ² best fit", zorder=6, **P.METHOD_STYLES["chi2_best"])
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
        lines = []
        for L in self.levels:
            lines.append(f"{P.level_label(L)}: " + ", ".join(f"IoU({k})={v:.2f}" for k, v in self.iou[L].items()))
        ax.set_title(title or "\n".join(lines), fontsize="small")
        return ax

    def save(self, directory) -> dict:
        """Write comparison.json (summary), comparison.png (figure) and posterior.npz to ``directory``."""
        from matplotlib.figure import Figure

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "comparison.json").write_text(json.dumps(_jsonable(self.summary()), indent=2))
        fig = Figure(figsize=(6.4, 5.6), layout="constrained")
        self.plot(ax=fig.subplots())
        fig.savefig(d / "comparison.png", dpi=120)
        self.posterior.to_npz(d / "posterior.npz")
        return {"json": d / "comparison.json", "png": d / "comparison.png", "posterior": d / "posterior.npz"}


def compare(model, x, fc=None, experiments=None, levels=(0.90, 0.95), n_samples: int = 1000, seed: int = 0,
            grid: Grid | None = None, threads=None, truth=None, out=None, max_pixels: int = 2000) -> Comparison:
    """FCMLC credible regions, Wilks and Feldman-Cousins confidence regions for one data vector.

    x: the data vector (the model's experiments' bins concatenated in the model's order).
    fc: FCResult or path (optional; its grid is then the chi2 grid and must cover ``levels``);
    grid: chi2 grid without ``fc`` (default: the model's training grid). Its points must lie
    inside the model's posterior grid; the comparison covers the posterior grid's extent.

    IoU: the FCMLC regions live on the posterior's cells, the frequentist ones on chi2-grid
    points. Both are mapped onto a common log-uniform raster over the parameter ranges
    (:func:`common_raster`; FCMLC pixel = the cell containing it, frequentist pixel = nearest
    grid point), and IoU = area(A and B) / area(A or B) with areas in (log10|Ue4|, log10 dm2):
    exact for the regions as drawn when the raster is exact (default grids: 200 x 200 pixels).
    out: directory to write comparison.json, comparison.png and posterior.npz to.
    """
    from .frequentist import Chi2Model, chi2_scan, wilks_regions
    from .posterior import Posterior

    model = _load_model(model)
    levels = _check_levels(levels)
    seed = _check_seed(seed)
    n_samples = _check_positive_int(n_samples, "n_samples")
    fc = _load_fc(fc)
    eset = _model_experiments(model, experiments)
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size != eset.n_bins:
        raise ValueError(f"x must be one data vector of {eset.n_bins} values ({', '.join(eset.names)} concatenated), "
                         f"got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or infinite values")
    urange, drange = _y_ranges(model)
    if fc is not None:
        if [n.upper() for n in fc.experiments] != [n.upper() for n in eset.names]:
            raise ValueError(f"the Feldman-Cousins result is for {list(fc.experiments)} but the model is for "
                             f"{eset.names}")
        if not fc.complete:
            raise ValueError("the Feldman-Cousins result is incomplete: finish it by rerunning `fcmlc fc`")
        missing = [L for L in levels if not any(abs(L - f) < 1e-9 for f in fc.levels)]
        if missing:
            raise ValueError(f"levels {missing} are not in the Feldman-Cousins result (it has {list(fc.levels)})")
        if grid is not None and grid != fc.grid:
            raise ValueError("grid differs from the Feldman-Cousins result's grid")
        grid = fc.grid
    elif grid is None:
        grid = _default_chi2_grid(model)
    _check_grid_inside(grid, urange, drange)

    t0 = time.perf_counter()
    with _torch_threads(threads):
        dens = model.posterior_density(x[None, :], n_samples=n_samples, seed=seed, threads=threads)[0]
    yg = model.y_grid
    post = Posterior(10.0 ** np.asarray(yg.log_ue4_centres), 10.0 ** np.asarray(yg.log_dm2_centres), dens,
                     meta={"method": "FCMLC", "experiments": list(eset.names), "n_samples": n_samples, "seed": seed})
    t1 = time.perf_counter()
    scan = chi2_scan(Chi2Model(eset.experiments, grid), x, threads=threads)
    t2 = time.perf_counter()
    regions = {"fcmlc": {L: post.credible_region(L) for L in levels}, "wilks": wilks_regions(scan.delta_chi2, levels)}
    regions["wilks"] = {L: regions["wilks"][float(L)] for L in levels}
    if fc is not None:
        regions["fc"] = {L: fc.region(scan.delta_chi2, L) for L in levels}
    ru, rd, exact = common_raster(yg.log_ue4_edges, yg.log_dm2_edges, grid, max_pixels)
    from .regions import iou as _iou

    on_raster = {"fcmlc": {L: regrid_cells(m, yg.log_ue4_edges, yg.log_dm2_edges, ru, rd)
                           for L, m in regions["fcmlc"].items()}}
    for m in ("wilks", "fc"):
        if m in regions:
            on_raster[m] = {L: regrid_points(mask, grid, ru, rd) for L, mask in regions[m].items()}
    iou, area = {}, {}
    for L in levels:
        iou[L] = {}
        names = list(on_raster)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                iou[L][f"{a}-{b}"] = _iou(on_raster[a][L], on_raster[b][L])
    for m, d in on_raster.items():
        area[m] = {L: float(r.mean()) for L, r in d.items()}
    meta = {"experiments": list(eset.names), "n_samples": n_samples, "seed": seed, "chi2_grid": grid.to_dict(),
            "posterior_grid": {"ue4_range": list(urange), "dm2_range": list(drange),
                               "shape": [int(yg.n_ue4), int(yg.n_dm2)]},
            "raster": {"shape": [ru.size - 1, rd.size - 1], "exact": bool(exact),
                       "definition": "IoU of areas in log10|Ue4| x log10 dm2 over the parameter ranges; FCMLC "
                                     "pixel = containing posterior cell, Wilks/FC pixel = nearest chi2-grid point"},
            "fc": None if fc is None else {"path": None if fc.path is None else str(fc.path), "n_toys": int(fc.n_toys)},
            "seconds": {"fcmlc": t1 - t0, "chi2_scan": t2 - t1}, "fcmlc_version": _version()}
    res = Comparison(post, scan, grid, levels, regions, iou, area, None if truth is None else tuple(map(float, truth)),
                     meta)
    if out is not None:
        res.save(out)
    return res



