"""Counter-based RNG and realization samplers: bit-exactness, invariance, statistics."""
import numpy as np
import pytest
from scipy import stats

from fcmlc import _core, reference
from fcmlc.simulation import covariance_factor


def test_philox_matches_reference_and_numpy():
    assert np.array_equal(_core.philox_blocks(5, 7, 3, 4, 1, 3), reference.philox_blocks(5, 7, 3, 4, 1, 3))
    # numpy.random.Philox increments its counter before each block
    raw = np.random.Philox(key=[5, 7], counter=[0, 3, 4, 1]).random_raw(8).reshape(2, 4)
    assert np.array_equal(raw, _core.philox_blocks(5, 7, 3, 4, 1, 3)[1:])


def test_normals_match_reference():
    # Same Box-Muller on the same bits; libm vs NumPy log/cos may differ in the last ulp.
    np.testing.assert_allclose(_core.standard_normals(9, 1, 2, 3, 1, 101),
                               reference.standard_normals(9, 1, 2, 3, 1, 101), rtol=1e-14, atol=1e-14)


def spd(n, seed=0):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T / n + 0.1 * np.eye(n)


def test_gaussian_matches_reference_and_is_thread_and_chunk_invariant():
    n = 9
    C = spd(n)
    Ft, lower = covariance_factor(C)
    assert lower
    mu = np.random.default_rng(1).normal(size=(6, n))
    pid = np.arange(10, 16)
    a = _core.simulate_gaussian(mu, Ft, lower, 11, 5, pid, 4, threads=1)
    b = _core.simulate_gaussian(mu, Ft, lower, 11, 5, pid, 4, threads=2)
    assert np.array_equal(a, b)
    # chunking: points split in two calls, realizations split with real_offset
    c1 = _core.simulate_gaussian(mu[:2], Ft, lower, 11, 5, pid[:2], 4)
    c2 = _core.simulate_gaussian(mu[2:], Ft, lower, 11, 5, pid[2:], 2, real_offset=0)
    c3 = _core.simulate_gaussian(mu[2:], Ft, lower, 11, 5, pid[2:], 2, real_offset=2)
    assert np.array_equal(np.concatenate([c1, np.concatenate([c2, c3], axis=1)]), a)
    ref = reference.simulate_gaussian(mu, Ft, 11, 5, pid, 4)
    np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)
    f32 = _core.simulate_gaussian(mu, Ft, lower, 11, 5, pid, 4, float32=True)
    assert f32.dtype == np.float32 and np.array_equal(f32, a.astype(np.float32))


def test_sample_covariance_matches_C():
    # Box's M-like check via the whitened sample: if x ~ N(mu, C) then W(x - mu) ~ N(0, I);
    # n S ~ Wishart(n, I). Test every whitened coordinate's variance with a chi2 test and
    # the off-diagonal correlations with Fisher z, Bonferroni-corrected at 1e-3 overall.
    n, N = 6, 20000
    C = spd(n, seed=4)
    Ft, lower = covariance_factor(C)
    x = _core.simulate_gaussian(np.zeros((1, n)), Ft, lower, 3, 1, np.array([0]), N)[0]
    W = np.linalg.inv(np.linalg.cholesky(C))
    w = x @ W.T
    S = w.T @ w  # known zero mean
    alpha = 1e-3 / (n + n * (n - 1) // 2)
    for i in range(n):
        p = stats.chi2.sf(S[i, i], N)
        assert min(p, 1 - p) * 2 > alpha
    r = S / np.sqrt(np.outer(np.diag(S), np.diag(S)))
    z = np.arctanh(r[np.triu_indices(n, 1)]) * np.sqrt(N - 3)
    assert np.all(2 * stats.norm.sf(np.abs(z)) > alpha)


def test_singular_psd_covariance_uses_eigen_factor():
    v = np.array([1.0, 2.0, -1.0, 0.5])
    C = np.outer(v, v) + np.diag([1.0, 1.0, 0.0, 0.0]) * 0 + np.outer([0, 1, 1, 0], [0, 1, 1, 0])
    Ft, lower = covariance_factor(C)
    assert not lower and Ft.shape == (2, 4)
    np.testing.assert_allclose(Ft.T @ Ft, C, atol=1e-12)
    x = _core.simulate_gaussian(np.zeros((1, 4)), Ft, lower, 1, 1, np.array([0]), 50)[0]
    # every realization lies in the column space of C
    null = np.linalg.svd(C)[2][2:]
    assert np.abs(x @ null.T).max() < 1e-10


@pytest.mark.parametrize("C, msg", [
    (np.array([[1.0, 0.5], [0.4, 1.0]]), "not symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive semi-definite"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "non-finite"),
    (np.ones((2, 3)), "square"),
])
def test_bad_covariances_are_rejected(C, msg):
    with pytest.raises(ValueError, match=msg):
        covariance_factor(C, "test covariance")


def test_pulls_match_reference_with_truncation():
    mu = np.array([[0.9, 0.8, 0.95], [0.7, 0.75, 0.8]])
    J = np.array([[0.1, 0.0], [0.05, 0.2], [0.0, 0.1]])
    Lp = np.linalg.cholesky(np.array([[1.0, 0.3], [0.3, 1.0]]))
    lo = np.array([-0.5, -np.inf])  # first pull truncated: rejection must kick in often
    sigma = np.array([0.05, 0.04, 0.06])
    pid = np.array([3, 8])
    a = _core.simulate_pulls(mu, J, np.ascontiguousarray(Lp), lo, sigma, 7, 2, pid, 20, threads=1)
    b = _core.simulate_pulls(mu, J, np.ascontiguousarray(Lp), lo, sigma, 7, 2, pid, 20, threads=2)
    assert np.array_equal(a, b)
    ref = reference.simulate_pulls(mu, J, Lp, lo, sigma, 7, 2, pid, 20)
    np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)


def test_pull_truncation_distribution():
    # One pull with lower bound 0 and no statistical noise: x = mu (1 + pi), pi ~ N(0,1) | pi >= 0
    # i.e. a half-normal: compare with a KS test.
    mu = np.ones((1, 1))
    x = _core.simulate_pulls(mu, np.ones((1, 1)), np.ones((1, 1)), np.zeros(1), np.zeros(1), 5, 9,
                             np.array([0]), 4000)[0, :, 0]
    assert x.min() >= 1.0
    assert stats.kstest(x - 1.0, stats.halfnorm.cdf).pvalue > 1e-3


def test_sampler_input_errors():
    Ft = np.eye(3)
    with pytest.raises(ValueError, match="factor_t"):
        _core.simulate_gaussian(np.zeros((2, 4)), Ft, True, 1, 1, np.arange(2), 3)
    with pytest.raises(ValueError, match="point_ids"):
        _core.simulate_gaussian(np.zeros((2, 3)), Ft, True, 1, 1, np.arange(3), 3)
    with pytest.raises(ValueError, match="non-finite"):
        _core.simulate_gaussian(np.full((2, 3), np.nan), Ft, True, 1, 1, np.arange(2), 3)
    with pytest.raises(ValueError, match="threads"):
        _core.simulate_gaussian(np.zeros((2, 3)), Ft, True, 1, 1, np.arange(2), 3, threads=0)


def test_gaussian_normalisation_groups_match_reference_bit_for_bit():
    # x = mu (1 + sigma E w) + F z, w ~ N(0, I_k) from the PURPOSE_NORM stream (only when sigma > 0)
    assert _core.PURPOSE_NORM == reference.PURPOSE_NORM
    n, sigma = 7, 0.1
    groups = np.array([0, 0, 1, 1, 1, 2, 2])
    mu = np.random.default_rng(2).uniform(100, 200, size=(3, n))
    pid = np.array([4, 9, 2])
    # F = 0: x is mu (1 + sigma w_g) exactly, in C++ and in NumPy
    F0 = np.zeros((n, n))
    a = _core.simulate_gaussian(mu, F0, False, 3, 8, pid, 5, norm_groups=groups, norm_sigma=sigma)
    ref = reference.simulate_gaussian(mu, F0, 3, 8, pid, 5, norm_groups=groups, norm_sigma=sigma)
    np.testing.assert_array_equal(a, ref)
    # with a covariance: the same up to the summation order of F z; sigma = 0 draws no w
    Ft, lower = covariance_factor(spd(n))
    b = _core.simulate_gaussian(mu, Ft, lower, 3, 8, pid, 5, norm_groups=groups, norm_sigma=sigma, threads=2)
    np.testing.assert_allclose(b, reference.simulate_gaussian(mu, Ft, 3, 8, pid, 5, norm_groups=groups, norm_sigma=sigma), rtol=1e-12)
    np.testing.assert_array_equal(b, _core.simulate_gaussian(mu, Ft, lower, 3, 8, pid, 5, norm_groups=groups,
                                                             norm_sigma=sigma, threads=1))
    np.testing.assert_array_equal(_core.simulate_gaussian(mu, Ft, lower, 3, 8, pid, 5, norm_groups=groups),
                                  _core.simulate_gaussian(mu, Ft, lower, 3, 8, pid, 5))


def test_normalisation_group_spread():
    # F = 0: x_i / mu_i - 1 = sigma w_g(i): one value per group and realization, sd sigma
    n, sigma, N = 6, 0.05, 20000
    groups = np.array([0, 0, 0, 1, 1, 1])
    x = _core.simulate_gaussian(np.full((1, n), 500.0), np.zeros((n, n)), False, 1, 2, np.array([0]), N,
                                norm_groups=groups, norm_sigma=sigma)[0]
    f = x / 500.0 - 1.0
    assert np.all(f[:, 0] == f[:, 1]) and np.all(f[:, 3] == f[:, 5]) and not np.all(f[:, 0] == f[:, 3])
    for g in (0, 3):
        assert abs(f[:, g].std() / sigma - 1) < 5 * np.sqrt(0.5 / N)
        assert abs(f[:, g].mean()) < 5 * sigma / np.sqrt(N)
    assert abs(np.corrcoef(f[:, 0], f[:, 3])[0, 1]) < 5 / np.sqrt(N)
    with pytest.raises(ValueError, match="group"):
        _core.simulate_gaussian(np.ones((1, n)), np.eye(n), True, 1, 2, np.array([0]), 2,
                                norm_groups=np.full(n, -1), norm_sigma=0.1)
