"""Coverage checks of FCMLC credible regions, Wilks and Feldman-Cousins regions (paper Sec. II C 2,
Fig. 4): truths drawn from the prior, one simulated realization each, FCMLC posteriors, Wilks
and Feldman-Cousins regions; observed coverage at nominal levels with binomial intervals and
the whole expected-coverage curve -> :class:`fcmlc.validation.CoverageResult`.

Variables: y = (log10|Ue4|, log10 dm2); the prior of the paper is uniform in y over the grid's
ranges.

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

import time
from dataclasses import dataclass

import numpy as np

from .. import __version__
from .._checks import check_levels, check_positive_int, check_seed, check_threads
from .._progress import progress_bar
from .._torch_env import torch_threads
from ..exact import ExactModel, grid_of_centres
from ..frequentist import Chi2Model, chi2_scan, wilks_threshold
from ..physics import Grid
from ..regions import hpd_region, iou
from ..simulation import realizations
from .coverage_result import METHODS, CoverageResult
from .inputs import chi2_grid, load_fc, load_model, model_experiments, y_ranges
from .truth import chi2_at, draw_truths, nearest_points, truth_credible_levels

__all__ = ["coverage", "FCMLC_BATCH", "CHI2_BATCH", "TRIAL_KEY_OFFSET"]

#: Trials per batch of FCMLC fits (the dropout seed of batch b is (seed, b)).
FCMLC_BATCH = 200
#: Data vectors per batch of chi2 scans.
CHI2_BATCH = 256
#: Realization i of a coverage check is keyed as point id TRIAL_KEY_OFFSET + i.
TRIAL_KEY_OFFSET = 1 << 40


@dataclass
class _Trials:
    """The trials of a check: truths (|Ue4|, dm2), their chi2-grid point ids ('grid' truths,
    else None) and one realization x (n_trials, n_bins) each."""

    ue4: np.ndarray
    dm2: np.ndarray
    point_id: np.ndarray | None
    x: np.ndarray

    @property
    def n(self) -> int:
        return int(self.ue4.size)


# ---------------------------------------------------------------------------------------------
# steps


def _check_methods(methods, fc) -> tuple:
    """The methods to evaluate, in :data:`METHODS` order; None = all that apply."""
    if methods is None:
        methods = ("fcmlc", "exact", "wilks") + (("fc",) if fc is not None else ())
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
    return methods


def _select_trials(eset, truths: str, trials: int, seed: int, grid: Grid, threads) -> _Trials:
    """Trial selection: truths from the prior over the chi2 grid's ranges (or its points), and
    one realization of the experiments at each."""
    tu, td, tpid = draw_truths(truths, trials, seed, grid.ue4_range, grid.dm2_range, grid)
    x = realizations(eset, tu, td, n_per_point=1, seed=seed,
                     point_ids=TRIAL_KEY_OFFSET + np.arange(trials, dtype=np.int64), threads=threads)[:, 0, :]
    return _Trials(tu, td, tpid, x)


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


def _cell_edges_and_area(model):
    yg = model.y_grid
    eu, ed = np.asarray(yg.log_ue4_edges, float), np.asarray(yg.log_dm2_edges, float)
    areas = np.diff(ed)[:, None] * np.diff(eu)[None, :]
    if not np.allclose(areas, areas.flat[0], rtol=1e-9, atol=0):
        raise ValueError("the model's posterior grid must have cells of equal area in log10")
    return eu, ed, areas


def _fcmlc_statistic(model, tr: _Trials, closed: bool, n_samples, seed, threads, bar, exact=None, levels=()):
    """FCMLC evaluation: per trial the credibility level of the truth (posterior mass of the
    denser cells; 1 for a failed fit, which never covers) and which fits failed. With ``exact``
    (an :class:`fcmlc.exact.ExactModel` on the posterior cells) also the exact posterior's
    statistic and, per trial, the total-variation distance of FCMLC from it, the Kullback-Leibler
    divergence KL(exact || FCMLC) and the IoU of their HPD regions at ``levels`` (NaN for failed
    fits)."""
    eu, ed, areas = _cell_edges_and_area(model)
    s_f = np.empty(tr.n)
    failed = np.zeros(tr.n, bool)
    s_e = np.empty(tr.n) if exact is not None else None
    tv = np.full(tr.n, np.nan)
    kl = np.full(tr.n, np.nan)
    ious = np.full((tr.n, len(levels)), np.nan)
    with torch_threads(threads):
        for b, s0 in enumerate(range(0, tr.n, FCMLC_BATCH)):
            sl = slice(s0, min(tr.n, s0 + FCMLC_BATCH))
            dens, bad = _fcmlc_densities(model, tr.x[sl], n_samples, seed, threads, b)
            s_f[sl] = truth_credible_levels(dens, eu, ed, tr.ue4[sl], tr.dm2[sl], closed=closed)
            s_f[sl][bad] = 1.0  # a failed fit never covers the truth
            failed[sl] = bad
            if exact is not None:
                ex = np.exp(exact.log_posterior(tr.x[sl]))
                s_e[sl] = truth_credible_levels(ex, eu, ed, tr.ue4[sl], tr.dm2[sl], closed=closed)
                tv[sl], kl[sl], ious[sl] = _distances(dens, ex, areas, bad, levels)
            if bar is not None:
                bar.update(sl.stop - sl.start)
    return s_f, failed, s_e, (tv, kl, ious)


#: cell masses of the estimator below this floor count as this floor in KL(exact || estimator):
#: a cell the estimator gives no mass at all would make the divergence infinite although the
#: posterior is otherwise close (KDE and flow tails underflow far from the data); with the floor
#: such cells add at most (exact mass) x log(exact mass / 1e-300) nats (about 690 x that mass)
KL_MASS_FLOOR = 1e-300


def _distances(dens, ex, areas, bad, levels):
    """Per trial: total-variation distance of the two posteriors' cell masses, KL(exact || estimator)
    in nats over the cells (estimator masses floored at :data:`KL_MASS_FLOOR`) and the IoU (area)
    of their HPD regions at each level."""
    mf = dens * areas
    mf /= mf.sum(axis=(1, 2), keepdims=True)
    me = ex * areas
    me /= me.sum(axis=(1, 2), keepdims=True)
    tv = 0.5 * np.abs(mf - me).sum(axis=(1, 2))
    pos = me > 0
    kl = np.where(pos, me * (np.log(np.where(pos, me, 1.0)) - np.log(np.maximum(mf, KL_MASS_FLOOR))), 0.0)
    kl = kl.sum(axis=(1, 2))
    ious = np.array([[iou(hpd_region(f, L, areas), hpd_region(e, L, areas), areas) for L in levels]
                     for f, e in zip(dens, ex)]).reshape(len(dens), len(levels))
    tv[bad] = np.nan
    kl[bad] = np.nan
    ious[bad] = np.nan
    return tv, kl, ious


def _exact_statistic(model, exact, tr: _Trials, closed: bool, bar):
    """The exact posterior's credibility level of each truth (when FCMLC is not evaluated)."""
    eu, ed, _ = _cell_edges_and_area(model)
    s_e = np.empty(tr.n)
    for s0 in range(0, tr.n, CHI2_BATCH):
        sl = slice(s0, min(tr.n, s0 + CHI2_BATCH))
        s_e[sl] = truth_credible_levels(np.exp(exact.log_posterior(tr.x[sl])), eu, ed, tr.ue4[sl], tr.dm2[sl],
                                        closed=closed)
        if bar is not None:
            bar.update(sl.stop - sl.start)
    return s_e


def _distance_summary(tv, kl, ious, levels) -> dict:
    ok = np.isfinite(tv)
    if not ok.any():
        return {}
    return {"n_trials": int(ok.sum()),
            "total_variation": {"mean": float(np.mean(tv[ok])), "median": float(np.median(tv[ok])),
                                "p90": float(np.quantile(tv[ok], 0.9))},
            "kl": {"mean": float(np.mean(kl[ok])), "median": float(np.median(kl[ok])),
                   "p90": float(np.quantile(kl[ok], 0.9)), "units": "nats, KL(exact || estimator) over the cells"},
            "iou_mean": {f"{L:g}": float(np.mean(ious[ok, i])) for i, L in enumerate(levels)}}


def _delta_chi2(eset, grid: Grid, tr: _Trials, threads, bar) -> np.ndarray:
    """Wilks/FC evaluation: Delta-chi2 at each truth - at its grid point ('grid' truths) or at
    the truth itself - against the minimum of the chi2 scan on ``grid``."""
    cm = Chi2Model(eset.experiments, grid)
    delta = np.empty(tr.n)
    for s0 in range(0, tr.n, CHI2_BATCH):
        sl = slice(s0, min(tr.n, s0 + CHI2_BATCH))
        sc = chi2_scan(cm, tr.x[sl], threads=threads)
        gmin = np.asarray(sc.min, dtype=float)
        if tr.point_id is not None:
            flat = sc.chi2.reshape(sc.chi2.shape[0], -1)
            ct = flat[np.arange(flat.shape[0]), tr.point_id[sl]]
        else:  # chi2 at the truth itself, the same profile chi2 as the scan
            ct = chi2_at(cm, tr.x[sl], tr.ue4[sl], tr.dm2[sl])
        delta[sl] = ct - np.minimum(gmin, ct)
        if bar is not None:
            bar.update(sl.stop - sl.start)
    return delta


def _wilks_decisions(delta, levels):
    """(covered (n, n_levels), statistic = chi2_2 CDF of Delta-chi2)."""
    from scipy.stats import chi2 as _chi2  # heavy: loaded when needed

    thr = np.array([wilks_threshold(L, 2) for L in levels])
    return delta[:, None] <= thr[None, :], _chi2.cdf(delta, 2)


def _fc_decisions(delta, levels, fc, grid: Grid, tr: _Trials):
    """(covered (n, n_levels), statistic = Delta-chi2): against the critical value of the truth's
    grid point, or of the grid point nearest to it."""
    pid = tr.point_id if tr.point_id is not None else nearest_points(grid, tr.ue4, tr.dm2)
    crit = np.stack([fc.critical_value(L).ravel()[pid] for L in levels], axis=1)
    return delta[:, None] <= crit, delta


def _coverage_meta(model, eset, fc, grid: Grid, truths, seed, n_samples, trials, interval_method, threads,
                   timings) -> dict:
    urange, drange = y_ranges(model)
    return {
        "experiments": list(eset.names), "seed": seed, "n_samples": n_samples, "trials": trials,
        "chi2_grid": grid.to_dict(),
        "posterior_grid": {"ue4_range": list(urange), "dm2_range": list(drange),
                           "shape": [int(model.y_grid.n_ue4), int(model.y_grid.n_dm2)]},
        "fc": None if fc is None else {"path": None if fc.path is None else str(fc.path), "n_toys": int(fc.n_toys),
                                      "seed": int(fc.seed), "levels": list(fc.levels)},
        "model": (getattr(model, "info", None) or {}).get("directory"),
        "interval_method": interval_method, "fcmlc_batch": FCMLC_BATCH, "threads": threads,
        "seconds": timings, "fcmlc_version": __version__,
        "truth_location": ("FCMLC: the posterior cell containing the truth; Wilks: Delta-chi2 at the truth itself; "
                           "FC: Delta-chi2 at the truth vs the nearest grid point's critical value")
        if truths == "continuous" else
        ("truths on chi2 grid points; Wilks/FC: Delta-chi2 at the truth's grid point; FCMLC: smallest level of the "
         "closed cells touching the truth"),
    }


# ---------------------------------------------------------------------------------------------
# the check


def coverage(model, trials: int = 2000, levels=(0.68, 0.90, 0.95), seed: int = 0, methods=None, fc=None,
             n_samples: int = 1000, threads=None, truths: str = "continuous", grid: Grid | None = None,
             experiments=None, band: float = 0.6827, interval_method: str = "beta", curve_points: int = 101,
             progress: bool = False, exact=None) -> CoverageResult:
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

    * 'exact': the exact posterior on the same cells (:mod:`fcmlc.exact`) -> the same HPD test;
      with 'fcmlc' also the total-variation distance of each FCMLC posterior from the exact one,
      KL(exact || FCMLC) and the IoU of their HPD regions, summarised in ``meta['fcmlc_vs_exact']``.

    methods: subset of ('fcmlc', 'exact', 'wilks', 'fc'); None = all that apply ('fc' only with ``fc``).
    grid: chi2 grid and range of the truths when no ``fc`` is given (default: the model's
    training grid, recorded in its directory; else n + 1 points per axis over its posterior grid).
    experiments: the experiment objects to simulate (default: the model's, loaded by name).
    band: confidence of the binomial bands (0.6827 = 1 sigma), ``interval_method`` 'beta'
    (Clopper-Pearson) or 'wilson'. curve_points: nominal levels of the expected-coverage curve
    (evenly spaced over [0, 1]).

    exact: an :class:`fcmlc.exact.ExactModel` to use for 'exact' (e.g. one shared by several
    models of the same task, :func:`fcmlc.validation.scoreboard`); it must be on the model's
    posterior cells and of the simulated experiments (ValueError otherwise). None: built here.

    ``model`` may be any object with ``experiments``, ``y_grid`` (cells uniform in log10, with
    ``ue4_range``, ``dm2_range``, ``n_ue4``, ``n_dm2``, ``log_ue4_edges``, ``log_dm2_edges``) and
    ``posterior_density(X, n_samples=, seed=, threads=)`` returning (n, n_dm2, n_ue4), e.g. an
    exact posterior for testing. Same arguments -> same result.
    """
    model = load_model(model)
    trials = check_positive_int(trials, "trials")
    levels = check_levels(levels)
    seed = check_seed(seed)
    n_samples = check_positive_int(n_samples, "n_samples")
    curve_points = check_positive_int(curve_points, "curve_points")
    if curve_points < 2:
        raise ValueError("curve_points must be >= 2")
    if truths not in ("continuous", "grid"):
        raise ValueError(f"truths must be 'continuous' or 'grid', got {truths!r}")
    if interval_method not in ("beta", "wilson"):
        raise ValueError(f"interval_method must be 'beta' (Clopper-Pearson) or 'wilson', got {interval_method!r}")
    if not 0 < float(band) < 1:
        raise ValueError(f"band must lie in (0, 1), got {band!r}")
    threads = check_threads(threads)
    fc = load_fc(fc)
    methods = _check_methods(methods, fc)
    eset = model_experiments(model, experiments)
    grid = chi2_grid(model, eset, fc, grid, fc_levels=levels if "fc" in methods else None)
    needs_chi2 = "wilks" in methods or "fc" in methods

    timings = {}
    t = time.perf_counter()
    tr = _select_trials(eset, truths, trials, seed, grid, threads)
    timings["simulate"] = time.perf_counter() - t

    bar = None
    if progress:
        bar = progress_bar(total=trials * (("fcmlc" in methods or "exact" in methods) + needs_chi2), unit="fit",
                           desc="coverage")
    covered, stat, distances = {}, {}, {}
    failed = np.zeros(trials, bool)
    lv = np.asarray(levels)
    try:
        if "exact" not in methods:
            exact = None
        else:
            t = time.perf_counter()
            yg = model.y_grid
            cells = grid_of_centres(yg.ue4_centres, yg.dm2_centres)
            if exact is None:
                exact = ExactModel(eset.experiments, cells, threads=threads)
            elif exact.grid != cells or list(exact.names) != [str(e.name) for e in eset.experiments]:
                raise ValueError(f"the exact model given ({exact!r}) is not on the model's posterior cells "
                                 f"{cells.shape} for the experiments {[str(e.name) for e in eset.experiments]}")
            timings["exact_setup"] = time.perf_counter() - t
        if "fcmlc" in methods:
            t = time.perf_counter()
            stat["fcmlc"], failed, s_e, dist = _fcmlc_statistic(model, tr, truths == "grid", n_samples, seed,
                                                                    threads, bar, exact, levels)
            covered["fcmlc"] = stat["fcmlc"][:, None] < lv[None, :]
            timings["fcmlc_fits"] = time.perf_counter() - t
            if exact is not None:
                stat["exact"] = s_e
                distances = _distance_summary(*dist, levels)
        elif exact is not None:
            t = time.perf_counter()
            stat["exact"] = _exact_statistic(model, exact, tr, truths == "grid", bar)
            timings["exact_fits"] = time.perf_counter() - t
        if exact is not None:
            covered["exact"] = stat["exact"][:, None] < lv[None, :]
        if needs_chi2:
            t = time.perf_counter()
            delta = _delta_chi2(eset, grid, tr, threads, bar)
            timings["chi2_scans"] = time.perf_counter() - t
            if "wilks" in methods:
                covered["wilks"], stat["wilks"] = _wilks_decisions(delta, levels)
            if "fc" in methods:
                covered["fc"], stat["fc"] = _fc_decisions(delta, levels, fc, grid, tr)
    finally:
        if bar is not None:
            bar.close()

    meta = _coverage_meta(model, eset, fc, grid, truths, seed, n_samples, trials, interval_method, threads, timings)
    if distances:
        meta["fcmlc_vs_exact"] = distances
    return CoverageResult(levels, methods, truths, tr.ue4, tr.dm2, covered, stat, np.linspace(0.0, 1.0, curve_points),
                          float(band), failed, meta)
