"""The C++ KDE kernel against statsmodels' KDEMultivariate and the NumPy reference.

Tolerance: 1e-12 relative. Every grid value is a sum of m positive terms
exp(-u_a^2/2) exp(-u_b^2/2), so there is no cancellation: the relative difference
between two implementations is bounded by the per-term difference (our vectorised
exp and glibc's differ by ~1 ulp; the exponent arguments are computed with the same
operations as statsmodels) plus the summation-order difference (< m * 2^-53 ~ 1e-13
for m = 1000 in the worst case, ~sqrt(m) * 2^-53 typically). 1e-12 keeps a 10x
margin while any real mistake (bandwidth convention, normalisation, a missed sample)
shows up at >= 1e-4. Values below the smallest normal double (2.2e-308, grid points
tens of bandwidths from every sample) are subnormal and carry fewer significant bits:
they are compared with an absolute tolerance of 2.2e-308.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fcmlc import reference
from fcmlc.posterior import kde_bandwidth, kde_grid

RTOL = 1e-12
TINY = np.finfo(float).tiny  # 2.2e-308


def statsmodels_kde(data, bw):
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return KDEMultivariate(data, var_type="cc", bw=bw)


def grid_points(a, b):
    A, B = np.meshgrid(a, b)  # rows follow b
    return np.column_stack([A.ravel(), B.ravel()])


def random_sets(rng, batch, m):
    centre = rng.uniform([-2.5, -1.5], [-0.5, 0.5], size=(batch, 1, 2))
    scale = rng.uniform(0.05, 0.5, size=(batch, 1, 2))
    return centre + scale * rng.standard_normal((batch, m, 2))


def test_matches_statsmodels_pdf_user_bandwidth():
    rng = np.random.default_rng(1)
    x = random_sets(rng, 3, 300)
    a = np.linspace(-3.0, 0.0, 23)  # odd sizes: vector remainders in both kernels
    b = np.linspace(-2.0, 1.0, 17)
    for xi in x:
        h = rng.uniform(0.05, 0.4, size=2)
        ours = kde_grid(xi, a, b, bandwidth=h)
        ref = statsmodels_kde(xi, h).pdf(grid_points(a, b)).reshape(b.size, a.size)
        np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=TINY)


def test_normal_reference_is_statsmodels_rule():
    rng = np.random.default_rng(2)
    x = random_sets(rng, 2, 1000)
    a, b = np.linspace(-3, 0, 50), np.linspace(-2, 1, 50)
    for xi in x:
        kde = statsmodels_kde(xi, "normal_reference")
        np.testing.assert_allclose(kde_bandwidth(xi), kde.bw, rtol=1e-15)
        ours = kde_grid(xi, a, b)  # default: normal_reference
        ref = kde.pdf(grid_points(a, b)).reshape(50, 50)
        np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=TINY)
    # the batched rule is the per-set rule
    np.testing.assert_array_equal(kde_bandwidth(x), np.stack([kde_bandwidth(xi) for xi in x]))


def test_cv_ml_delegates_to_statsmodels():
    rng = np.random.default_rng(3)
    x = random_sets(rng, 1, 40)[0]
    h = kde_bandwidth(x, "cv_ml")
    np.testing.assert_array_equal(h, statsmodels_kde(x, "cv_ml").bw)
    a, b = np.linspace(-3, 0, 11), np.linspace(-2, 1, 9)
    np.testing.assert_array_equal(kde_grid(x, a, b, bandwidth="cv_ml"), kde_grid(x, a, b, bandwidth=h))


def test_matches_numpy_reference_far_into_the_tails():
    # Kernel values from 1 down to ~1e-290 (all normal doubles): checks the vectorised
    # exponential over its whole useful range, not only near the samples.
    rng = np.random.default_rng(4)
    x = 0.02 * rng.standard_normal((1, 150, 2))
    h = np.array([0.1, 0.07])
    a = np.linspace(-2.5, 2.5, 41)  # up to 25 bandwidths away
    b = np.linspace(-1.7, 1.7, 27)
    ours = kde_grid(x, a, b, bandwidth=h)
    ref = reference.kde_grid(x, a, b, h)
    assert ref.min() < 1e-250 and ref.min() > 1e-300
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=TINY)


def test_bit_identical_for_any_thread_count_and_batch_split():
    rng = np.random.default_rng(5)
    x = random_sets(rng, 5, 257)
    a, b = np.linspace(-3, 0, 50), np.linspace(-2, 1, 50)
    r1 = kde_grid(x, a, b, threads=1)
    r2 = kde_grid(x, a, b, threads=2)
    r3 = kde_grid(x, a, b, threads=3)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(r1, r3)
    # one set at a time (the within-set parallel path) gives the same bits
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(kde_grid(x[i], a, b, threads=2), r1[i])
        np.testing.assert_array_equal(kde_grid(x[i], a, b, threads=1), r1[i])


def test_shapes_and_normalisation():
    rng = np.random.default_rng(6)
    x = random_sets(rng, 2, 100)
    a, b = np.linspace(-5, 2, 120), np.linspace(-4, 3, 110)  # wide grid: mass ~ 1
    out = kde_grid(x, a, b)
    assert out.shape == (2, 110, 120)
    assert kde_grid(x[0], a, b).shape == (110, 120)
    mass = out.sum(axis=(1, 2)) * (a[1] - a[0]) * (b[1] - b[0])
    np.testing.assert_allclose(mass, 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "samples, bandwidth, match",
    [
        (np.zeros((10, 3)), (0.1, 0.1), r"shape \(m, 2\) or \(batch, m, 2\)"),
        (np.zeros((2, 3, 10, 2)), (0.1, 0.1), r"got shape \(2, 3, 10, 2\)"),
        (np.zeros((10, 2)), (0.0, 0.1), r"bandwidth\[0, 0\].*= 0"),
        (np.zeros((10, 2)), (0.1, -1.0), r"bandwidth\[0, 1\] \(axis-b"),
        (np.zeros((10, 2)), (0.1, np.nan), r"finite and > 0"),
        (np.zeros((10, 2)), np.ones((3, 2)), r"shape \(batch, 2\) = \(1, 2\)"),
        (np.zeros((10, 2)), "normal_reference", r"all samples of set 0 share one value"),
        (np.zeros((10, 2)), "silverman", r"'normal_reference' or 'cv_ml'"),
    ],
)
def test_bad_input_is_a_clear_value_error(samples, bandwidth, match):
    with pytest.raises(ValueError, match=match):
        kde_grid(samples, np.linspace(0, 1, 5), np.linspace(0, 1, 4), bandwidth=bandwidth)


def test_nan_sample_position_is_reported():
    x = np.zeros((2, 10, 2)) + np.arange(10)[None, :, None]
    x[1, 7, 1] = np.nan
    with pytest.raises(ValueError, match=r"\[1, 7, 1\] \(set 1, sample 7, axis-b \(log10 dm2\)\)"):
        kde_grid(x, np.linspace(0, 1, 5), np.linspace(0, 1, 4), bandwidth=(0.1, 0.1))
    with pytest.raises(ValueError, match=r"a_centres contains a non-finite value \(inf\) at index 2"):
        kde_grid(x[0], np.array([0.0, 1.0, np.inf]), np.linspace(0, 1, 4), bandwidth=(0.1, 0.1))
    with pytest.raises(ValueError, match="threads must be >= 1"):
        kde_grid(x[0], np.linspace(0, 1, 5), np.linspace(0, 1, 4), bandwidth=(0.1, 0.1), threads=0)


PORTABLE_SCRIPT = r"""
import numpy as np
from fcmlc import _core, reference
from fcmlc.posterior import kde_grid, integrate
assert _core.gemm_isa() == "portable", _core.gemm_isa()
rng = np.random.default_rng(7)
x = rng.normal(size=(3, 200, 2)) * 0.3 - 1
a, b = np.linspace(-3, 1, 21), np.linspace(-2.5, 0.5, 13)
k1, k2 = kde_grid(x, a, b, threads=1), kde_grid(x, a, b, threads=2)
assert np.array_equal(k1, k2)
h = reference.normal_reference_bandwidth(x)
np.testing.assert_allclose(k1, reference.kde_grid(x, a, b, h), rtol=1e-12, atol=0)
T = rng.random((a.size * b.size, 37))
dA = np.full((b.size, a.size), 0.01)
i1, i2 = integrate(k1, T, dA, threads=1), integrate(k1, T, dA, threads=2)
assert np.array_equal(i1, i2)
np.testing.assert_allclose(i1, reference.integrate(k1.reshape(3, -1), T, dA.ravel()), rtol=1e-12, atol=0)
np.save(__import__("sys").argv[1], k1)
"""


def test_portable_arithmetic_path(tmp_path):
    """FCMLC_NO_SIMD=1 selects the portable kernels (glibc exp, multiply-add): same checks."""
    env = dict(os.environ, FCMLC_NO_SIMD="1")
    out = tmp_path / "k.npy"
    res = subprocess.run([sys.executable, "-c", PORTABLE_SCRIPT, str(out)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 200, 2)) * 0.3 - 1
    simd = kde_grid(x, np.linspace(-3, 1, 21), np.linspace(-2.5, 0.5, 13))
    np.testing.assert_allclose(np.load(out), simd, rtol=RTOL, atol=TINY)
