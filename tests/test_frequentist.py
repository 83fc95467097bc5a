"""Frequentist inference: chi2 scans against a plain NumPy reference, Wilks regions and raster
limits, Feldman-Cousins critical values against exact results (Wilks' theorem for a linear-
Gaussian model, Chernoff's mixture at a physical boundary), determinism (threads, chunking,
Dask, resume) and the `fc` / `wilks` commands.

Monte Carlo checks use order-statistic bounds: the FC critical value at level L from n toys is
the k-th smallest Delta-chi2 (k = ceil(L n)), and for continuous toys with CDF F,
F(X_(k)) ~ Beta(k, n - k + 1) exactly. A check accepts X_(k) in
[F^-1(Beta^-1(a/2)) - eps, F^-1(Beta^-1(1 - a/2))] with a = 1e-4 per comparison; eps is the
grid-discretisation bound computed in the test (the grid minimum can only lie above the
continuous minimum, so the grid Delta-chi2 can only be *smaller*, by at most eps).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats

from fcmlc import experiments as ex
from fcmlc import frequentist as fq
from fcmlc.frequentist import fc as fq_fc
from fcmlc.physics import Grid, sin2_2theta, ue4_from_sin2_2theta
from fcmlc.simulation import realizations

SMALL = Grid(shape=(11, 11))
MIXED = ["STEREO", "DANSS", "BEST"]  # linear covariance, non-linear covariance (ratio), pulls
ALPHA = 1e-4  # two-sided false-failure probability of one order-statistic comparison


# --- a NumPy reference chi2 (independent of the whitening / kernel route) -------------------


def _reference_chi2(experiments, grid, X):
    """chi2 (n_data, n_points) by the textbook formula, point by point
    (:func:`fcmlc.reference.chi2_map`: the multiplicative normalisations beta of the groups
    profiled by solving the normal equations of x ~ N(diag(mu) E beta, C)), mu_e from the
    experiment's own ``expectation_grid``."""
    from fcmlc import reference

    X = np.atleast_2d(np.asarray(X, dtype=float))
    total = np.zeros((X.shape[0], grid.n_points))
    off = 0
    for e in experiments:
        n = e.n_bins
        mu = np.asarray(e.expectation_grid(grid), dtype=float)
        groups = e.norm_groups if e.kind == "covariance" else None
        for i in range(X.shape[0]):
            total[i] += reference.chi2_map(X[i, off:off + n], mu, e.covariance, groups, e.norm_prior)
        off += n
    return total


def _n_effective(e):
    k = e.n_norm_groups if e.kind == "covariance" else 0
    return int(np.linalg.matrix_rank(np.asarray(e.covariance, dtype=float))) - k


class LinearGaussian:
    """A duck-typed experiment (what Chi2Model and the samplers read): mu = N0 - s2 D(dm2),
    Gaussian covariance C, optionally one multiplicative normalisation group over all bins
    (x ~ N(beta mu, C); free for norm_prior = 0, else beta ~ N(1, norm_prior^2), in the chi2 and
    in the realizations alike)."""

    kind = "covariance"
    linear_in_s2 = True
    observed = None

    def __init__(self, name, N0, C, deficit, normalisation=True, norm_prior=0.0, stream_id=12345, groups=None):
        self.name = name
        self.null_expectation = np.asarray(N0, dtype=float)
        self.n_bins = self.null_expectation.size
        self.covariance = np.asarray(C, dtype=float)
        self._deficit = deficit
        if groups is None:
            groups = np.zeros(self.n_bins, dtype=np.int64) if normalisation else np.full(self.n_bins, -1)
        self.norm_groups = np.asarray(groups, dtype=np.int64)
        self.n_norm_groups = int(self.norm_groups.max()) + 1
        self.norm_prior = float(norm_prior)
        self.stream_id = stream_id
        self.definition_hash = f"test-{name}"

    @property
    def normalisation_matrix(self):
        E = np.zeros((self.n_bins, self.n_norm_groups))
        has = self.norm_groups >= 0
        E[np.flatnonzero(has), self.norm_groups[has]] = 1.0
        return E

    def nuisance_directions(self, mu=None):
        mu = self.null_expectation if mu is None else np.asarray(mu, dtype=float)
        return mu[:, None] * self.normalisation_matrix

    def deficit(self, dm2):
        return np.array([self._deficit(float(d)) for d in np.atleast_1d(dm2)])

    def expectation(self, ue4, dm2):
        s2 = sin2_2theta(np.asarray(ue4, dtype=float))
        return self.null_expectation - s2[..., None] * self.deficit(np.ravel(dm2)).reshape(np.shape(s2) + (-1,))

    def expectation_grid(self, grid):
        p = grid.points()
        return self.null_expectation - sin2_2theta(p[:, 0])[:, None] * self.deficit(p[:, 1])


def _profiled_precision(e):
    """C^-1 with the normalisations at the null expectation profiled out."""
    Ci = np.linalg.inv(e.covariance)
    if e.n_norm_groups == 0:
        return Ci
    V = e.nuisance_directions()
    CV = Ci @ V
    return Ci - CV @ np.linalg.inv(V.T @ CV) @ CV.T


def _correlated_cov(N0, rho=0.3):
    s = np.sqrt(N0)
    i = np.arange(N0.size)
    return np.outer(s, s) * rho ** np.abs(i[:, None] - i[None, :])


def _two_parameter_experiment(sigma=0.02):
    """mu = N0 - s2 (v1 + ln(dm2) v2): linear in (a, b) = (s2, s2 ln dm2), Fisher matrix
    diag(1/sigma^2), no normalisation (a multiplicative one would make the model non-linear), so Wilks' theorem (2 dof) is exact for
    the continuous MLE when it stays inside the grid."""
    n = 10
    N0 = np.linspace(800.0, 1200.0, n)
    C = _correlated_cov(N0)
    tmp = LinearGaussian("LG2", N0, C, lambda d: np.zeros(n), normalisation=False)
    P = _profiled_precision(tmp)
    t = np.linspace(-1, 1, n)
    v1, v2 = N0 * (1 + 0.8 * t), N0 * np.sin(2.5 * t)
    v2 = v2 - (v1 @ P @ v2) / (v1 @ P @ v1) * v1
    v1 = v1 / (sigma * np.sqrt(v1 @ P @ v1))
    v2 = v2 / (sigma * np.sqrt(v2 @ P @ v2))
    return LinearGaussian("LG2", N0, C, lambda d: v1 + np.log(d) * v2, normalisation=False)


def _order_statistic_band(n, level, ppf, alpha=ALPHA):
    k = fq.order_statistic_index(level, n) + 1
    lo, hi = stats.beta.ppf([alpha / 2, 1 - alpha / 2], k, n - k + 1)
    return float(ppf(lo)), float(ppf(hi))


def _discretisation_bound(model, ue4_samples, dm2_samples):
    """max over continuous parameter points q of min_grid chi2(Asimov(q)): for a linear model this
    is exactly how far the grid minimum can lie above the continuous minimum of a toy whose MLE
    is q (Pythagoras in whitened space)."""
    X = np.stack([fq.asimov_data(model, u, d) for u, d in zip(ue4_samples, dm2_samples)])
    return float(np.max(fq.chi2_scan(model, X).min))


# --- chi2 scan vs the NumPy reference --------------------------------------------------------


@pytest.mark.parametrize("names,grid", [
    (["STEREO"], Grid.paper()),
    (["BEST"], Grid(shape=(31, 27))),
    (["GALLIUM", "BEST"], Grid(shape=(31, 27))),
    (MIXED, Grid(shape=(25, 21))),
])
def test_chi2_scan_matches_numpy_reference(names, grid):
    model = fq.Chi2Model(names, grid)
    exps = [ex.load(n) for n in names]
    pts = grid.points()[[grid.n_points // 3, grid.n_points - 5]]
    X = realizations(exps, pts[:, 0], pts[:, 1], n_per_point=2, seed=5).reshape(4, -1)
    ref = _reference_chi2(exps, grid, X)
    scan = fq.chi2_scan(model, X, threads=2)
    got = scan.chi2.reshape(4, -1)
    # float64 throughout; covariances have condition numbers <= ~1e2, chi2 ~ 1e2: the two routes
    # (inverse vs whitening + projection) agree to ~1e-12 relative; 1e-9 leaves room for BLAS order
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scan.min, ref.min(axis=1), rtol=1e-9, atol=1e-9)
    for i in range(4):  # the reported location attains the minimum (ties may pick either twin)
        assert ref[i, scan.best_index[i]] == pytest.approx(ref[i].min(), rel=1e-9, abs=1e-9)
    one = fq.chi2_scan(model, X[1])
    np.testing.assert_array_equal(one.chi2, scan.chi2[1])
    assert one.min == scan.min[1] and one.best_index == scan.best_index[1]
    assert model.n_effective_bins == sum(_n_effective(e) for e in exps)


def test_chi2_scan_threads_and_input_forms():
    model = fq.Chi2Model(MIXED, SMALL)
    exps = model.experiments
    X = realizations(exps, [0.1, 0.2, 0.05], [1.0, 2.0, 0.5], n_per_point=3, seed=1).reshape(9, -1)
    a = fq.chi2_scan(model, X, threads=1)
    b = fq.chi2_scan(model, X, threads=2)
    np.testing.assert_array_equal(a.chi2, b.chi2)
    parts = np.split(X[0], np.cumsum(model.n_bins_each)[:-1])
    np.testing.assert_array_equal(fq.chi2_scan(model, dict(zip(model.names, parts))).chi2, a.chi2[0])
    np.testing.assert_array_equal(fq.chi2_scan(model, list(parts)).chi2, a.chi2[0])


# --- Wilks and raster ------------------------------------------------------------------------


def test_wilks_thresholds_and_regions():
    # the 2-dof values quoted in the paper (to their 2 decimals) and the 1-dof 90 % raster value
    for L, v in [(0.6827, 2.30), (0.90, 4.61), (0.95, 5.99), (0.99, 9.21)]:
        assert round(fq.wilks_threshold(L, 2), 2) == v
    assert round(fq.wilks_threshold(0.90, 1), 2) == 2.71
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 12, size=(5, 6))
    regs = fq.wilks_regions(d)
    assert sorted(regs) == list(fq.WILKS_LEVELS)
    for L, m in regs.items():
        np.testing.assert_array_equal(m, d <= stats.chi2.ppf(L, 2))
    with pytest.raises(ValueError, match="NaN"):
        fq.wilks_regions(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        fq.wilks_threshold(1.5)


def test_raster_limits_exact_for_piecewise_linear_rows():
    g = Grid(shape=(41, 5))
    logu = np.log(g.ue4)
    slopes = np.array([2.0, 5.0, 10.0, 40.0, 0.0])  # last row: flat, never crosses
    best = np.array([0, 3, 10, 20, 0])
    d = np.abs(logu[None, :] - logu[best][:, None]) * slopes[:, None] + 0.7  # offset removed per row
    lim = fq.raster_limits(d, 0.90, g)
    thr = stats.chi2.ppf(0.90, 1)
    expect = np.exp(logu[best] + thr / np.where(slopes > 0, slopes, np.nan))
    expect[expect > g.ue4[-1]] = np.nan  # no crossing inside the grid
    np.testing.assert_allclose(lim, expect, rtol=1e-12)  # linear in log|Ue4|: interpolation is exact
    assert np.isnan(lim[-1])
    with pytest.raises(ValueError, match="does not match"):
        fq.raster_limits(d, 0.9, Grid(shape=(5, 41)))


# --- toys are the realizations of simulate ---------------------------------------------------


def _exact_and_centred(model, pids, n_toys, seed, **kw):
    """fc_toys with the float64 profile everywhere (kernel.centred = False), then with the
    default centred float32 form: ((delta, best), (delta, best))."""
    k = model.kernel
    k.centred = False
    try:
        exact = fq.fc_toys(model, pids, n_toys, seed=seed, return_best=True, **kw)
    finally:
        k.centred = True
    return exact, fq.fc_toys(model, pids, n_toys, seed=seed, return_best=True, **kw)


#: |Delta-chi2 (centred float32) - Delta-chi2 (float64 profile)| allowed. The float32 part is
#: s2^2 |L_p^-1 c(s2)|^2, at most the full-mixing size of the experiments' chi2 (<~ 1e4 here),
#: rounded with unit roundoff 2^-24 = 6e-8 over <= 21-term sums: <~ 1e-3 expected (measured
#: 7e-5 for STEREO, 1.2e-3 for the global fit); critical values: 1e-3 relative.
CENTRED_ATOL = 5e-3
CENTRED_RTOL_CRITICAL = 1e-3


def test_fc_toys_are_simulate_realizations():
    model = fq.Chi2Model(MIXED, SMALL).prepare_toys()
    pids = np.array([3, 60, 117])
    (delta, best), (delta32, _) = _exact_and_centred(model, pids, 9, seed=21)
    np.testing.assert_allclose(delta32, delta, rtol=0, atol=CENTRED_ATOL)
    pts = SMALL.points()[pids]
    for i, p in enumerate(pids):
        X = realizations(model.experiments, pts[i:i + 1, 0], pts[i:i + 1, 1], n_per_point=9, seed=21,
                         point_ids=[p])[0]
        scan = fq.chi2_scan(model, X)
        ref = scan.chi2.reshape(9, -1)[:, p] - scan.min
        # toys are formed in whitened space (c + M z) instead of whitening x = mu + F z, or (groups)
        # x = mu + F z by another summation order than simulate's: rounding only
        np.testing.assert_allclose(delta[i], ref, rtol=0, atol=1e-8)
        np.testing.assert_array_equal(best[i], scan.best_index)
    # toy_offset: toys 4..8 are the same toys
    np.testing.assert_array_equal(fq.fc_toys(model, pids, 5, seed=21, toy_offset=4), delta32[:, 4:])
    assert np.all(delta >= 0) and np.all(delta32 >= 0)


@pytest.mark.parametrize("names, grid", [("STEREO", None), ("STEREO,PROSPECT,DANSS,NEOS,GALLIUM,BEST",
                                                                 Grid(shape=(31, 31)))])
def test_centred_float32_fc_statistic_matches_float64_profile(names, grid):
    # the centred form (float32 quadratic form per grid point, float64 row terms, exact chi2 at
    # the true point) against the float64 profile q - |L_p^-1 b'(p)|^2 on the same toys
    model = fq.Chi2Model(names, grid).prepare_toys()
    n = model.grid.n_points
    pids = np.array([0, n // 7, n // 3, n // 2, (4 * n) // 5, n - 1])
    (d64, b64), (d32, b32) = _exact_and_centred(model, pids, 48, seed=3, threads=2)
    diff = np.abs(d32 - d64)
    assert diff.max() <= CENTRED_ATOL, diff.max()
    assert diff.max() > 0  # the centred path is in use
    assert np.all(d32 >= 0)
    assert np.mean(b32 == b64) > 0.95  # best points differ only at near-ties
    levels = [0.68, 0.9, 0.95]
    c64, c32 = fq.critical_values(d64, levels), fq.critical_values(d32, levels)
    np.testing.assert_allclose(c32, c64, rtol=CENTRED_RTOL_CRITICAL, atol=1e-6)
    # bit-identical for any thread count
    np.testing.assert_array_equal(fq.fc_toys(model, pids, 48, seed=3, threads=1), d32)


# --- Feldman-Cousins against exact results ---------------------------------------------------


def test_fc_equals_wilks_for_linear_gaussian_model():
    sigma = 0.02
    e = _two_parameter_experiment(sigma)
    s_lo, s_hi = 0.25 - 8 * sigma, 0.25 + 8 * sigma
    grid = Grid(ue4_range=(float(ue4_from_sin2_2theta(s_lo)), float(ue4_from_sin2_2theta(s_hi))),
                dm2_range=(float(np.exp(-1.2)), float(np.exp(1.2))), shape=(101, 151))
    model = fq.Chi2Model([e], grid)
    iu, idm = np.argmin(np.abs(grid.sin2_2theta - 0.25)), 75
    pids = [int(grid.index(iu, idm)), int(grid.index(iu + 7, idm - 9)), int(grid.index(iu - 6, idm + 11))]
    # discretisation bound from continuous points within 3.5 sigma (in a and b) of the truths
    rng = np.random.default_rng(1)
    us, ds = [], []
    for p in pids:
        u0, d0 = grid.points()[p]
        a = sin2_2theta(u0) + sigma * rng.uniform(-3.5, 3.5, 300)
        b = sin2_2theta(u0) * np.log(d0) + sigma * rng.uniform(-3.5, 3.5, 300)
        us.append(ue4_from_sin2_2theta(a))
        ds.append(np.exp(b / a))
    eps = _discretisation_bound(model, np.concatenate(us), np.concatenate(ds))
    assert eps < 0.05  # the grid resolves sigma well; keeps the check sharp
    n = 3000
    levels = (0.6827, 0.90, 0.95)
    res = fq.feldman_cousins(model, n_toys=n, seed=3, levels=levels, points=pids, progress=False)
    for L in levels:
        lo, hi = _order_statistic_band(n, L, lambda q: stats.chi2.ppf(q, 2))
        c = res.critical_value(L).ravel()[pids]
        assert np.all(c >= lo - eps) and np.all(c <= hi), (L, c, lo - eps, hi)


def test_fc_below_wilks_at_physical_boundary():
    """mu = N0 - s2 v with s2 >= 0 and the truth at the smallest grid s2 (~1e-9 << sigma): the
    Delta-chi2 of the toys is Chernoff's 1/2 chi2_0 + 1/2 chi2_1 (dm2 does not enter), so the FC
    critical value at level L is chi2_1^-1(2L - 1), far below Wilks' 2-dof (and 1-dof) value."""
    sigma = 0.01
    n = 12
    N0 = np.full(n, 1000.0)
    C = _correlated_cov(N0, 0.2)
    tmp = LinearGaussian("LB", N0, C, lambda d: np.zeros(n))
    P = _profiled_precision(tmp)
    v = N0 * np.linspace(0.5, 1.5, n) ** 2
    v = v / (sigma * np.sqrt(v @ P @ v))
    e = LinearGaussian("LB", N0, C, lambda d: v)
    grid = Grid(ue4_range=(1e-5, float(ue4_from_sin2_2theta(30 * sigma))), shape=(401, 3))
    model = fq.Chi2Model([e], grid)
    assert grid.sin2_2theta[0] < 1e-6 * sigma
    eps = _discretisation_bound(model, ue4_from_sin2_2theta(np.linspace(1e-6, 4 * sigma, 400)), np.ones(400))
    assert eps < 0.02
    mix_ppf = lambda q: stats.chi2.ppf(max(2 * q - 1, 0.0), 1)  # noqa: E731
    n_toys = 4000
    levels = (0.68, 0.90, 0.95)
    pids = [int(grid.index(0, j)) for j in (0, 1, 2)]
    res = fq.feldman_cousins(model, n_toys=n_toys, seed=8, levels=levels, points=pids, progress=False)
    for L in levels:
        lo, hi = _order_statistic_band(n_toys, L, mix_ppf)
        c = res.critical_value(L).ravel()[pids]
        assert np.all(c >= lo - eps) and np.all(c <= hi), (L, c, lo - eps, hi)
        assert np.all(c < fq.wilks_threshold(L, 1) - 0.5) and np.all(c < fq.wilks_threshold(L, 2) - 1.5)
    # about half of the toys fit best at the boundary (Delta = 0 up to eps)
    d = fq.fc_toys(model, pids[:1], n_toys, seed=8)[0]
    frac0 = np.mean(d <= eps)
    assert abs(frac0 - 0.5) < 4.5 * np.sqrt(0.25 / n_toys)


def test_fc_region_and_critical_values_convention():
    d = np.array([[3.0, 1.0, 2.0, 4.0, 0.5]])
    # ceil(0.6 * 5) = 3rd smallest = 2.0; ceil(0.9 * 1000) = 900th smallest, no float fuzz
    assert fq.critical_values(d, [0.6])[0, 0] == 2.0
    assert fq.order_statistic_index(0.9, 1000) == 899
    res = fq.feldman_cousins("STEREO", SMALL, n_toys=20, seed=1, levels=(0.9,), points=[5, 6], progress=False)
    assert res.done.sum() == 2 and np.isnan(res.critical).sum() == SMALL.n_points - 2
    dc = np.zeros((SMALL.n_dm2, SMALL.n_ue4))
    reg = res.region(dc, 0.9)
    assert reg.sum() == 2  # points not computed are outside
    with pytest.raises(ValueError, match="level 0.5 was not computed"):
        res.critical_value(0.5)


# --- determinism, resume, Dask -----------------------------------------------------------------


def _file_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _contents(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in f}, {k: f.attrs[k] for k in f.attrs}


@pytest.fixture(scope="module")
def fc_model():
    return fq.Chi2Model(MIXED, SMALL).prepare_toys()


@pytest.fixture(scope="module")
def fc_reference(fc_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fc") / "ref.h5"
    res = fq.feldman_cousins(fc_model, n_toys=40, seed=7, out=out, threads=1, chunk_points=200, progress=False)
    assert res.complete
    return out, res


def test_fc_identical_for_threads_and_chunking(fc_model, fc_reference, tmp_path):
    _, ref = fc_reference
    for threads, chunk in [(2, 7), (2, 121), (1, 1000)]:
        r = fq.feldman_cousins(fc_model, n_toys=40, seed=7, threads=threads, chunk_points=chunk, progress=False)
        np.testing.assert_array_equal(r.critical, ref.critical)
    other = fq.feldman_cousins(fc_model, n_toys=40, seed=8, threads=2, progress=False)
    assert not np.array_equal(other.critical, ref.critical)


def test_fc_resume_gives_identical_file(fc_model, fc_reference, tmp_path, monkeypatch):
    ref_path, _ = fc_reference
    # 1) a partial run over some points, then the full run
    p1 = tmp_path / "partial.h5"
    r = fq.feldman_cousins(fc_model, n_toys=40, seed=7, out=p1, threads=2, chunk_points=200,
                           points=np.arange(30, 77), progress=False)
    assert not r.complete and r.done.sum() == 47
    fq.feldman_cousins(fc_model, n_toys=40, seed=7, out=p1, threads=2, chunk_points=200, progress=False)
    assert _file_digest(p1) == _file_digest(ref_path)
    # 2) interrupted mid-run (Ctrl-C after the third chunk), then resumed with other threads/chunks
    p2 = tmp_path / "killed.h5"
    real = fq_fc.fc_chunk
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fq_fc, "fc_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        fq.feldman_cousins(fc_model, n_toys=40, seed=7, out=p2, threads=1, chunk_points=10, progress=False)
    monkeypatch.setattr(fq_fc, "fc_chunk", real)
    with h5py.File(p2, "r") as f:
        assert f["done"][...].sum() == 30 and not f.attrs["complete"]
    res = fq.feldman_cousins(fc_model, n_toys=40, seed=7, out=p2, threads=2, chunk_points=33, progress=False)
    assert res.complete
    assert _file_digest(p2) == _file_digest(ref_path)
    # a finished file is loaded, not recomputed
    monkeypatch.setattr(fq_fc, "fc_chunk", lambda *a, **k: pytest.fail("recomputed a finished file"))
    again = fq.feldman_cousins(fc_model, n_toys=40, seed=7, out=p2, progress=False)
    np.testing.assert_array_equal(again.critical, res.critical)


def test_fc_dask_local_cluster_identical(fc_model, fc_reference):
    distributed = pytest.importorskip("distributed")
    _, ref = fc_reference
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        r = fq.feldman_cousins(fc_model, n_toys=40, seed=7, scheduler=client, chunk_points=9, threads=1,
                               progress=False)
    np.testing.assert_array_equal(r.critical, ref.critical)


def test_fc_file_settings_mismatch_refused(fc_model, fc_reference, tmp_path):
    ref_path, ref = fc_reference
    p = tmp_path / "x.h5"
    p.write_bytes(ref_path.read_bytes())
    before = _file_digest(p)
    for kw, what in [({"seed": 8}, "seed"), ({"n_toys": 41}, "n_toys"), ({"levels": (0.9,)}, "levels")]:
        args = {"n_toys": 40, "seed": 7, **kw}
        with pytest.raises(ValueError, match=f"different settings.*{what}"):
            fq.feldman_cousins(fc_model, out=p, progress=False, **args)
    with pytest.raises(ValueError, match="different settings.*experiments"):
        fq.feldman_cousins(fq.Chi2Model(["STEREO"], SMALL), n_toys=40, seed=7, out=p, progress=False)
    assert _file_digest(p) == before  # untouched
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="cannot be read as HDF5"):
        fq.feldman_cousins(fc_model, n_toys=40, seed=7, out=junk, progress=False)
    r = fq.feldman_cousins(fc_model, n_toys=40, seed=8, out=p, overwrite=True, progress=False, threads=2)
    assert r.seed == 8 and r.complete and _file_digest(p) != before
    loaded = fq.FCResult.load(ref_path)
    np.testing.assert_array_equal(loaded.critical, ref.critical)
    assert loaded.experiments == tuple(MIXED) and loaded.n_toys == 40 and loaded.grid == SMALL


def test_bad_inputs_give_clear_errors(fc_model):
    x = fq.asimov_data(fc_model, 0.1, 1.0)
    bad = x.copy()
    bad[130] = np.nan  # STEREO has 126 bins: DANSS bin 4
    with pytest.raises(ValueError, match="non-finite value.*DANSS bin 4"):
        fq.chi2_scan(fc_model, bad)
    with pytest.raises(ValueError, match=f"must have {fc_model.n_bins} bins"):
        fq.chi2_scan(fc_model, x[:-1])
    with pytest.raises(ValueError, match="data dict must have exactly the keys"):
        fq.chi2_scan(fc_model, {"STEREO": x[:126]})
    for kw, msg in [({"n_toys": 0}, "n_toys"), ({"seed": -1}, "seed"), ({"levels": (0.9, 1.0)}, r"\(0, 1\)"),
                    ({"points": [SMALL.n_points]}, "points"), ({"chunk_points": 0}, "chunk_points"),
                    ({"backend": "gpu"}, "backend")]:
        with pytest.raises(ValueError, match=msg):
            fq.feldman_cousins(fc_model, **{"n_toys": 5, **kw}, progress=False)
    with pytest.raises(ValueError, match="unknown|available|STERIO"):
        fq.Chi2Model("STERIO", SMALL)
    with pytest.raises(ValueError, match="more than once"):
        fq.Chi2Model("STEREO,STEREO", SMALL)
    e = _two_parameter_experiment()
    e.covariance = -e.covariance
    with pytest.raises(ValueError, match="positive semi-definite"):
        fq.Chi2Model([e], SMALL)


# --- command line -----------------------------------------------------------------------------


def test_cli_fc_and_wilks_end_to_end(tmp_path, capsys):
    from fcmlc.cli import main

    fc = tmp_path / "fc.h5"
    args = ["fc", "--experiments", "STEREO,BEST", "--grid", "11", "--toys", "50", "--seed", "4", "-o", str(fc),
            "--threads", "2", "--no-progress", "--levels", "0.68,0.9"]
    assert main(args) == 0
    res = fq.FCResult.load(fc)
    assert res.complete and res.levels == (0.68, 0.9) and res.n_toys == 50 and res.seed == 4
    direct = fq.feldman_cousins("STEREO,BEST", SMALL, n_toys=50, seed=4, levels=(0.68, 0.9), progress=False)
    np.testing.assert_array_equal(res.critical, direct.critical)
    assert main(args[:-2] + ["--levels", "0.68,0.95"]) == 2  # other settings, same file
    assert "different settings" in capsys.readouterr().err
    assert main(args[:-2] + ["--levels", "0.68,1.2"]) == 2
    assert "(0, 1)" in capsys.readouterr().err

    model = fq.Chi2Model("STEREO,BEST", SMALL)
    x = fq.asimov_data(model, 0.2, 1.5, seed=3)
    for suffix in (".txt", ".npy", ".csv"):
        f = tmp_path / f"x{suffix}"
        if suffix == ".npy":
            np.save(f, x)
        else:
            np.savetxt(f, x, delimiter="," if suffix == ".csv" else " ")
        out = tmp_path / f"w{suffix[1:]}"
        assert main(["wilks", "--experiments", "STEREO,BEST", "--grid", "11", "--data", str(f), "-o", str(out),
                     "--fc", str(fc)]) == 0
    text = capsys.readouterr().out
    assert "best fit" in text and "chi2_min / ndof" in text and "95%" in text
    z = np.load(out / "delta_chi2.npz")
    scan = fq.chi2_scan(model, x)
    np.testing.assert_allclose(z["delta_chi2"], scan.delta_chi2, rtol=1e-12, atol=1e-9)
    for L, thr in [(0.6827, 2.30), (0.9, 4.61), (0.95, 5.99), (0.99, 9.21)]:
        np.testing.assert_array_equal(z[f"wilks_{L:g}"], scan.delta_chi2 <= fq.wilks_threshold(L, 2))
        assert abs(fq.wilks_threshold(L, 2) - thr) < 0.005
    np.testing.assert_array_equal(z["raster_90_ue4"], scan.raster(0.9))
    np.testing.assert_array_equal(z["fc_0.9"], res.region(scan.delta_chi2, 0.9))
    s = json.loads((out / "summary.json").read_text())
    assert s["best_fit"]["index"] == scan.best_index and s["ndof"] == model.n_effective_bins - 2
    dnull = float(np.sum(model.whiten(x) ** 2)) - scan.min
    assert s["null_excluded_95_wilks_2dof"] == (dnull > 5.991)
    assert (out / "wilks.png").stat().st_size > 1000

    # --asimov (exact expectation: best fit at the truth's grid point, chi2_min ~ 0)
    out = tmp_path / "asimov"
    p = SMALL.points()[60]
    assert main(["wilks", "--experiments", "STEREO", "--grid", "11", "--asimov", str(p[0]), str(p[1]),
                 "-o", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["best_fit"]["index"] == 60 and s["chi2_min"] < 1e-8
    # bad inputs -> exit code 2 with a message
    bad = tmp_path / "bad.txt"
    np.savetxt(bad, x[:-1])
    assert main(["wilks", "--experiments", "STEREO,BEST", "--grid", "11", "--data", str(bad), "-o",
                 str(tmp_path / "b")]) == 2
    assert "needs one vector of 128 values" in capsys.readouterr().err
    np.savetxt(bad, np.where(np.arange(x.size) == 3, np.nan, x))
    assert main(["wilks", "--experiments", "STEREO,BEST", "--grid", "11", "--data", str(bad), "-o",
                 str(tmp_path / "b")]) == 2
    assert "non-finite value (nan) in STEREO bin 3" in capsys.readouterr().err
    assert main(["wilks", "--experiments", "STEREO", "--grid", "11", "--observed", "--seed", "2", "-o",
                 str(tmp_path / "b")]) == 2
    assert "--seed only applies to --asimov" in capsys.readouterr().err
    assert main(["wilks", "--experiments", "STEREO", "--grid", "11", "--observed", "-o", str(tmp_path / "b")]) == 2
    assert "no published data for STEREO" in capsys.readouterr().err
    assert main(["wilks", "--experiments", "GALLIUM,BEST", "--grid", "11", "--observed", "-o",
                 str(tmp_path / "obs")]) == 0


# --- the optional torch backend ---------------------------------------------------------------


def _boundary_model():
    sigma, n = 0.01, 12
    N0 = np.full(n, 1000.0)
    C = _correlated_cov(N0, 0.2)
    # no normalisation groups: the torch backend serves only experiments without them
    P = _profiled_precision(LinearGaussian("LB", N0, C, lambda d: np.zeros(n), normalisation=False))
    v = N0 * np.linspace(0.5, 1.5, n) ** 2
    v = v / (sigma * np.sqrt(v @ P @ v))
    grid = Grid(ue4_range=(1e-5, float(ue4_from_sin2_2theta(30 * sigma))), shape=(401, 3))
    return fq.Chi2Model([LinearGaussian("LB", N0, C, lambda d: v, normalisation=False)], grid)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (lambda: __import__("importlib").util.find_spec("torch") is not None
         and __import__("torch").cuda.is_available())(), reason="needs CUDA"))])
def test_torch_backend_statistically_equivalent(device, tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    # pull experiments: the torch backend uses simulate's own pull sampler -> the same toys
    model = fq.Chi2Model(["GALLIUM", "BEST"], SMALL)
    pids = [0, 57, 120]
    np.testing.assert_allclose(fq.fc_toys(model, pids, 64, seed=2, backend="torch", device=device),
                               fq.fc_toys(model, pids, 64, seed=2), rtol=0, atol=1e-9)
    # Gaussian experiments: other draws, same distribution (Chernoff mixture at the boundary,
    # order-statistic bands as in test_fc_below_wilks_at_physical_boundary; eps there < 0.02)
    m = _boundary_model()
    n_toys, levels = 4000, (0.68, 0.90, 0.95)
    res = fq.feldman_cousins(m, n_toys=n_toys, seed=8, levels=levels, points=[0, 1], progress=False,
                             backend="torch", device=device)
    assert res.toy_source == f"torch-{device}"
    mix_ppf = lambda q: stats.chi2.ppf(max(2 * q - 1, 0.0), 1)  # noqa: E731
    for L in levels:
        lo, hi = _order_statistic_band(n_toys, L, mix_ppf)
        c = res.critical_value(L).ravel()[[0, 1]]
        assert np.all(c >= lo - 0.02) and np.all(c <= hi), (L, c)
    # experiments with normalisation groups are not ported to torch: a clear error
    with pytest.raises(ValueError, match="normalisation"):
        fq.feldman_cousins("STEREO,DANSS", SMALL, n_toys=30, seed=1, progress=False, backend="torch", device=device)
    return
    # deterministic and independent of chunking; the toy source is part of the file's settings
    out = tmp_path / "t.h5"
    a = fq.feldman_cousins("STEREO,DANSS", SMALL, n_toys=30, seed=1, out=out, chunk_points=50, progress=False,
                           backend="torch", device=device)
    b = fq.feldman_cousins("STEREO,DANSS", SMALL, n_toys=30, seed=1, chunk_points=7, progress=False,
                           backend="torch", device=device)
    np.testing.assert_array_equal(a.critical, b.critical)
    with pytest.raises(ValueError, match="toy_source"):
        fq.feldman_cousins("STEREO,DANSS", SMALL, n_toys=30, seed=1, out=out, progress=False)


# --- the multiplicative normalisation profile -------------------------------------------------


class _WithPrior:
    """A built-in experiment with its normalisation groups given a Gaussian prior sigma (the
    chi2 and the realizations both read norm_prior)."""

    def __init__(self, e, sigma):
        self._e, self.norm_prior = e, float(sigma)
        self.name = e.name + "-prior"

    def __getattr__(self, k):
        return getattr(self._e, k)


def _realize(exps, ue4, dm2, n_per_point, seed, point_ids=None):
    """simulate's realizations for duck-typed experiments too (its samplers and keying)."""
    from fcmlc.simulation import Sampler, expectation_rows

    ue4, dm2 = np.atleast_1d(ue4).astype(float), np.atleast_1d(dm2).astype(float)
    pid = np.arange(ue4.size) if point_ids is None else np.asarray(point_ids, dtype=np.int64)
    return np.concatenate([Sampler.of(e).sample(expectation_rows(e, ue4, dm2), seed, pid, n_per_point)
                           for e in exps], axis=2)


LARGE_MIXING = Grid(ue4_range=(0.03, 0.7), shape=(9, 5))  # sin^2(2 theta) up to ~1.0


@pytest.mark.parametrize("name", ["STEREO", "PROSPECT", "DANSS"])
@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_chi2_is_the_profile_of_the_gaussian_likelihood(name, sigma):
    # chi2(theta; x) = min_beta -2 log L(x | beta, theta) + const for the simulator's own model
    # x ~ N(diag(mu) E beta, C) [beta ~ N(1, sigma^2)], minimised here by scipy, independently
    from scipy.optimize import minimize

    base = ex.load(name)
    e = base if sigma == 0 else _WithPrior(base, sigma)
    grid = LARGE_MIXING
    assert sin2_2theta(grid.ue4).max() > 0.95
    model = fq.Chi2Model([e], grid)
    rng = np.random.default_rng(7)
    pts = grid.points()[rng.choice(grid.n_points, 2, replace=False)]
    X = _realize([e], pts[:, 0], pts[:, 1], 1, 3)[:, 0]
    scan = fq.chi2_scan(model, X)
    Ci = np.linalg.pinv(np.asarray(base.covariance), rcond=1e-10, hermitian=True)
    E = base.normalisation_matrix
    mu_grid = np.asarray(base.expectation_grid(grid))
    check = list(rng.choice(grid.n_points, 4, replace=False)) + [int(np.argmax(
        sin2_2theta(grid.points()[:, 0])))]
    for i, x in enumerate(X):
        for p in check:
            U = mu_grid[p][:, None] * E

            def f(b, U=U, x=x):
                r = x - U @ b
                return r @ Ci @ r + (np.sum((b - 1) ** 2) / sigma**2 if sigma else 0.0)

            def jac(b, U=U, x=x):
                return -2 * U.T @ Ci @ (x - U @ b) + (2 * (b - 1) / sigma**2 if sigma else 0.0)

            H = 2 * U.T @ Ci @ U + (2 * np.eye(E.shape[1]) / sigma**2 if sigma else 0.0)
            res = minimize(f, np.ones(E.shape[1]), jac=jac, hess=lambda b, H=H: H, method="trust-exact",
                           options={"gtol": 1e-10})
            got = scan.chi2.reshape(len(X), -1)[i, p]
            assert got == pytest.approx(res.fun, rel=1e-7, abs=1e-6), (p, got, res.fun)


def _grouped_toy(C, stream=5):
    n = C.shape[0]
    N0 = np.linspace(900.0, 300.0, n)
    t = np.linspace(0, 1, n)
    return LinearGaussian("TOY", N0, C, lambda d: N0 * np.sin(d * (1 + 3 * t)) ** 2, stream_id=stream,
                          groups=np.repeat([0, 1, 2], n // 3))


def test_chi2_invariant_under_per_group_rescaling():
    # free normalisations: (x, C) -> (D x, D C D) with D constant on each group changes nothing
    n = 12
    N0 = np.linspace(900.0, 300.0, n)
    C = _correlated_cov(N0, 0.4) + 0.02**2 * np.outer(N0, N0)
    d = np.repeat([1.3, 0.7, 2.1], n // 3)
    grid = Grid(ue4_range=(0.02, 0.7), shape=(15, 6))
    a = fq.Chi2Model([_grouped_toy(C)], grid)
    b = fq.Chi2Model([_grouped_toy(d[:, None] * C * d[None, :])], grid)
    X = _realize(a.experiments, [0.3, 0.6], [1.0, 3.0], 2, 1).reshape(4, -1)
    np.testing.assert_allclose(fq.chi2_scan(b, X * d).chi2, fq.chi2_scan(a, X).chi2, rtol=1e-9, atol=1e-8)
    # ... and it is what the NumPy oracle says
    ref = _reference_chi2(a.experiments, grid, X)
    np.testing.assert_allclose(fq.chi2_scan(a, X).chi2.reshape(4, -1), ref, rtol=1e-9, atol=1e-8)


def test_multiplicative_and_additive_profiles_agree_only_at_small_mixing():
    from fcmlc import reference

    e = ex.load("STEREO")
    C = np.asarray(e.covariance)
    E = e.normalisation_matrix
    N0 = e.null_expectation
    D = e.deficit([1.5])[0]
    x = realizations([e], [0.05], [1.5], seed=2)[0, 0]

    def additive(mu):  # the old model: shifts along the null prediction, V = diag(N0) E
        Ci = np.linalg.pinv(C, rcond=1e-10, hermitian=True)
        V = N0[:, None] * E
        y = x - mu
        a = np.linalg.lstsq(V.T @ Ci @ V, V.T @ Ci @ y, rcond=None)[0]
        r = y - V @ a
        return r @ Ci @ r

    diffs = {}
    for s2 in (1e-3, 0.9):
        mu = N0 - s2 * D
        diffs[s2] = abs(reference.chi2_profiled(x, mu, C, e.norm_groups) - additive(mu))
    assert diffs[1e-3] < 0.05 and diffs[0.9] > 1.0, diffs


def test_fc_toys_with_normalisation_prior_are_simulate_realizations():
    # sigma > 0: toys draw w as simulate does; threads and chunking give identical results
    e = _WithPrior(ex.load("DANSS"), 0.05)
    s = _WithPrior(ex.load("STEREO"), 0.02)
    model = fq.Chi2Model([s, e], SMALL).prepare_toys()
    pids = np.array([5, 77])
    (delta, best), (delta32, _) = _exact_and_centred(model, pids, 6, seed=4, threads=2)
    np.testing.assert_allclose(delta32, delta, rtol=0, atol=CENTRED_ATOL)
    np.testing.assert_array_equal(fq.fc_toys(model, pids, 6, seed=4, threads=1), delta32)
    pts = SMALL.points()[pids]
    for i, p in enumerate(pids):
        X = _realize([s, e], pts[i:i + 1, 0], pts[i:i + 1, 1], 6, 4, point_ids=[p])[0]
        scan = fq.chi2_scan(model, X)
        np.testing.assert_allclose(delta[i], scan.chi2.reshape(6, -1)[:, p] - scan.min, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(best[i], scan.best_index)


# --- pruning of the FC grid scan ----------------------------------------------------------------


@pytest.mark.parametrize("names, grid", [("STEREO", None), ("PROSPECT", Grid(shape=(41, 41))),
                                         ("STEREO,PROSPECT,DANSS,NEOS,GALLIUM,BEST", Grid(shape=(31, 31)))])
def test_fc_pruning_is_bit_identical(names, grid):
    # grid points whose lower bound exceeds the running minimum are skipped (kernel.prune): the
    # minimum, its index (tie rule) and so Delta-chi2 are those of the full scan, bit for bit
    model = fq.Chi2Model(names, grid).prepare_toys()
    k = model.kernel
    n = model.grid.n_points
    pids = np.array([0, n // 7, n // 3, n // 2, (4 * n) // 5, n - 1])
    k.prune = False
    try:
        d0, b0 = fq.fc_toys(model, pids, 16, seed=5, return_best=True, threads=2)
    finally:
        k.prune = True
    k.reset_prune_stats()
    d1, b1 = fq.fc_toys(model, pids, 16, seed=5, return_best=True, threads=2)
    np.testing.assert_array_equal(d1, d0)
    np.testing.assert_array_equal(b1, b0)
    evaluated, scanned = k.prune_stats
    assert scanned == len(pids) * 2 * n  # 16 toys: two groups of eight lanes per point
    assert 0 < evaluated < scanned  # the pruned path is in use and skips points
    np.testing.assert_array_equal(fq.fc_toys(model, pids, 16, seed=5, threads=1), d0)


def test_fc_pruning_reference_bound():
    # The reference bound (linalg.prune_reference): |Lf_p c|^2 <= A_p |R_j c|^2 for every c, with
    # R_j the float32 factor at the row's largest s2; it is tighter than K_p alone where G'(p) is
    # nearly singular, so fewer points are computed, and the result is the full scan's bit for bit.
    from fcmlc.frequentist.linalg import prune_factors, prune_reference
    model = fq.Chi2Model("STEREO", Grid(shape=(41, 41))).prepare_toys()
    part = [p for p in model._parts if p.norm][0]
    g = model.grid
    ref, A, B = prune_reference(part.factors, g.sin2_2theta, g.n_dm2)
    assert ref.shape == (g.n_dm2,) and np.all(ref == np.argmax(g.sin2_2theta))
    kn = int(round((np.sqrt(8 * part.factors.shape[1] + 1) - 1) / 2))
    Lf = np.zeros((g.n_points, kn, kn))
    r, c = np.tril_indices(kn)
    Lf[:, r, c] = part.factors.astype(np.float32)
    rng = np.random.default_rng(3)
    for p in rng.choice(g.n_points, 40, replace=False):
        R = Lf[(p // g.n_ue4) * g.n_ue4 + ref[p // g.n_ue4]]
        c = rng.normal(size=(kn, 200)) * rng.lognormal(size=(kn, 1))
        lhs = np.sum((Lf[p] @ c) ** 2, axis=0)
        assert np.all(lhs <= A[p] * np.sum((R @ c) ** 2, axis=0))
    # the ratio A_p / (the exact alpha_p) is the rounding allowance only: about 1 + 4 (kn + 2) 2^-24
    assert np.all(A[ref[0]::g.n_ue4] < 1.0 + 1e-3) and np.all(B >= 0)

    k = model.kernel
    pids = np.array([0, 300, 700, 1000, 1500, 1680])
    k.prune = False
    try:
        d_full = fq.fc_toys(model, pids, 32, seed=9, threads=2)
    finally:
        k.prune = True
    i = [j for j, p in enumerate(model._parts) if p.norm][0]
    stats = []
    for with_ref in (False, True):
        if with_ref:
            k.set_prune_factors(i, prune_factors(part.factors), ref, A, B)
        else:
            k.set_prune_factors(i, prune_factors(part.factors))
        k.reset_prune_stats()
        np.testing.assert_array_equal(fq.fc_toys(model, pids, 32, seed=9, threads=2), d_full)
        stats.append(k.prune_stats[0])
    assert stats[1] < stats[0]  # the reference bound skips more points
    with pytest.raises(ValueError, match="ref, A and B together"):
        k.set_prune_factors(i, prune_factors(part.factors), ref, A)
    with pytest.raises(ValueError, match="-1 or in"):
        k.set_prune_factors(i, prune_factors(part.factors), ref + 100, A, B)
