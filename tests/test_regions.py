"""HPD regions (Eq. 3), raster-scan limits (Eq. 4) and region geometry on known distributions."""
import numpy as np
import pytest
from scipy import stats

from fcmlc import regions
from fcmlc.physics import Grid
from fcmlc.posterior import Posterior

GRID = Grid.square(100)  # the paper's ranges, 100 x 100 like its y grid
LU, LD = np.log10(GRID.ue4), np.log10(GRID.dm2)


def gaussian_posterior(mu=(-1.5, -0.5), sigma=(0.25, 0.3), rho=0.5):
    """Correlated 2-D Gaussian in (log10|Ue4|, log10 dm2), well inside the grid."""
    C = np.array([[sigma[0] ** 2, rho * sigma[0] * sigma[1]], [rho * sigma[0] * sigma[1], sigma[1] ** 2]])
    Ci = np.linalg.inv(C)
    U, D = np.meshgrid(LU, LD)
    d = np.stack([U - mu[0], D - mu[1]], axis=-1)
    r2 = np.einsum("...i,ij,...j", d, Ci, d)
    return Posterior(GRID.ue4, GRID.dm2, np.exp(-0.5 * r2)), np.asarray(mu), C, Ci


@pytest.mark.parametrize("level", [0.68, 0.9, 0.95])
def test_hpd_of_gaussian_has_the_level_mass_and_the_chi2_ellipse(level):
    post, mu, C, Ci = gaussian_posterior()
    mask = post.credible_region(level)
    # Mass: whole cells, so at least the level and less than one cell more (exact).
    m = post.mass[mask].sum()
    assert level <= m < level + post.mass.max()
    # Area: the HPD region of a Gaussian is the ellipse r^2 <= chi2_2 quantile,
    # area pi sqrt(det C) q. Tolerance 1%: measured <= 0.2%; a systematic error of one
    # cell along the boundary would be 5-8% of the area here.
    q = stats.chi2.ppf(level, df=2)
    area = np.pi * np.sqrt(np.linalg.det(C)) * q
    assert post.cell_area[mask].sum() == pytest.approx(area, rel=0.01)
    # Threshold vs the analytic density on the ellipse (normalised over the grid,
    # which holds all but ~1e-12 of the Gaussian): within 1%.
    h_true = np.exp(-q / 2) / (2 * np.pi * np.sqrt(np.linalg.det(C)))
    assert post.hpd_threshold(level) == pytest.approx(h_true, rel=0.01)
    # Boundary: one closed contour on the ellipse. Mahalanobis radius of every vertex
    # within 0.02 of sqrt(q) (0.02 sigma ~ 0.2 cell widths; measured < 0.006).
    lines = post.contours(level)
    assert len(lines) == 1
    v = np.log10(lines[0])
    np.testing.assert_array_equal(v[0], v[-1])
    dv = v - mu
    r = np.sqrt(np.einsum("...i,ij,...j", dv, Ci, dv))
    np.testing.assert_allclose(r, np.sqrt(q), atol=0.02)
    x, y = v[:, 0], v[:, 1]
    enclosed = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    assert enclosed == pytest.approx(area, rel=0.01)


def test_regions_are_nested_and_level_one_is_the_support():
    post, *_ = gaussian_posterior()
    masks = [post.credible_region(lv) for lv in (0.5, 0.68, 0.9, 0.95, 0.99)]
    for inner, outer in zip(masks, masks[1:]):
        assert np.all(outer[inner])
    # Level 1: every cell needed for the running sum to reach 1 in double precision;
    # cells whose mass is below its rounding (~1e-16) are the only ones left out.
    full = post.credible_region(1.0)
    assert np.all(full[post.mass > 1e-14]) and not np.any(full[post.mass == 0])
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\]"):
        post.credible_region(90)
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\]"):
        post.credible_region(0.0)


def test_ties_are_all_in_or_all_out():
    # Two plateaus: 30% of the mass on a dense block, 70% spread uniformly elsewhere.
    d = np.ones((10, 10))
    d[2:4, 2:4] = 0.3 * 96 / (0.7 * 4)  # block of 4 cells holds 30%
    m1 = regions.hpd_region(d, 0.2)
    assert m1.sum() == 4  # all four tied block cells, although 3 would reach 20%
    assert regions.hpd_region(d, 0.3 + 1e-9).sum() == 100  # the whole tied plateau joins
    assert regions.hpd_threshold(d, 0.3) == pytest.approx(d.max())


def test_cell_areas_weight_mass_but_density_ranks_cells():
    d = np.array([[1.0, 2.0, 3.0]])
    area = np.array([[10.0, 1.0, 1.0]])  # the least dense cell holds most of the mass
    assert regions.hpd_region(d, 0.3, area).tolist() == [[False, True, True]]  # 5/15 >= 0.3
    assert regions.hpd_region(d, 0.4, area).tolist() == [[True, True, True]]


def test_credible_level_map_is_exactly_the_region_membership():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 6, size=(30, 40)).astype(float)  # many ties and zeros
    area = rng.uniform(0.5, 1.5, size=d.shape)
    lvl = regions.credible_level_map(d, area)
    for level in np.concatenate([np.linspace(0.01, 1.0, 100), [0.68, 0.9, 0.95]]):
        np.testing.assert_array_equal(regions.hpd_region(d, level, area), lvl < level)


def test_credible_level_of_a_point():
    post, *_ = gaussian_posterior()
    u, d = post.best_point()
    assert post.credible_level_of(u, d) == 0.0
    rng = np.random.default_rng(1)
    pu = 10 ** rng.uniform(LU[0], LU[-1], 200)
    pd = 10 ** rng.uniform(LD[0], LD[-1], 200)
    lv = post.credible_level_of(pu, pd)
    for level in (0.68, 0.9):
        mask = post.credible_region(level)
        iu = np.abs(LU[None, :] - np.log10(pu)[:, None]).argmin(axis=1)
        idm = np.abs(LD[None, :] - np.log10(pd)[:, None]).argmin(axis=1)
        np.testing.assert_array_equal(lv < level, mask[idm, iu])
    with pytest.raises(ValueError, match="outside the grid"):
        post.credible_level_of(0.9, 1.0)


def test_raster_limits_of_row_gaussians_match_the_truncated_quantile():
    # Row j: log10|Ue4| ~ N(mu_j, 0.3) (truncated to the grid), any dm2 profile.
    edges = regions.cell_edges(GRID.ue4)
    w = np.diff(edges)
    mu = np.linspace(-2.5, -0.8, LD.size)[:, None]
    dens = stats.norm.pdf(LU[None, :], mu, 0.3) * np.exp(-LD[:, None] ** 2)
    post = Posterior(GRID.ue4, GRID.dm2, dens)
    for level in (0.68, 0.9, 0.95):
        lim = np.log10(post.upper_limits(level))
        fa, fb = stats.norm.cdf(edges[0], mu[:, 0], 0.3), stats.norm.cdf(edges[-1], mu[:, 0], 0.3)
        exact = stats.norm.ppf(fa + level * (fb - fa), mu[:, 0], 0.3)
        # The density is constant within a cell, so the CDF is linear there: the error
        # is at most w^2/8 * max|f'/f| = w/8 * w z/sigma ~ 0.02 w at z = 1.64 (measured
        # 0.015 w with the density sampled at the centres).
        np.testing.assert_allclose(lim, exact, rtol=0, atol=0.03 * w[0])
        s2 = post.upper_limits(level, x="sin2")
        np.testing.assert_allclose(s2, 4 * 10 ** (2 * lim) * (1 - 10 ** (2 * lim)), rtol=1e-12)


def test_raster_limit_of_a_uniform_row_is_exact_and_empty_rows_are_nan():
    edges = np.array([0.0, 1.0, 3.0, 4.0])
    d = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    lim = regions.raster_upper_limits(d, edges, 0.9)
    assert lim[0] == pytest.approx(3.6, abs=1e-12)
    assert np.isnan(lim[1])
    assert lim[2] == pytest.approx(1.0 + 0.9 * 2.0, abs=1e-12)
    assert regions.raster_upper_limits(d, edges, 1.0)[0] == pytest.approx(4.0, abs=1e-12)
    with pytest.raises(ValueError, match="n_x \\+ 1 = 4"):
        regions.raster_upper_limits(d, edges[:-1], 0.9)


def test_iou():
    a = np.zeros((5, 5), bool)
    b = np.zeros((5, 5), bool)
    assert regions.iou(a, b) == 1.0  # two empty regions agree
    a[:2] = True
    b[1:3] = True
    assert regions.iou(a, b) == pytest.approx(5 / 15)
    assert regions.iou(a, a) == 1.0
    assert regions.iou(a, ~a) == 0.0
    w = np.ones((5, 5))
    w[1] = 3.0
    assert regions.iou(a, b, w) == pytest.approx(15 / 25)
    with pytest.raises(ValueError, match="same shape"):
        regions.iou(a, b[:4])


def test_cell_edges():
    e = regions.cell_edges(GRID.ue4)
    np.testing.assert_allclose(np.diff(e), LU[1] - LU[0], rtol=1e-12)
    np.testing.assert_allclose(0.5 * (e[1:] + e[:-1]), LU, rtol=0, atol=1e-14)
    np.testing.assert_allclose(regions.cell_edges([1.0, 2.0, 4.0], log=False), [0.5, 1.5, 3.0, 5.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        regions.cell_edges([1.0, 3.0, 2.0])
    with pytest.raises(ValueError, match="> 0 for log10"):
        regions.cell_edges([0.0, 1.0])


def test_mask_contours_run_halfway_between_centres():
    x = 10.0 ** np.arange(10)
    y = 10.0 ** np.arange(8)
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    (line,) = regions.mask_contours(mask, x, y)
    lx, ly = np.log10(line).T
    assert lx.min() == pytest.approx(2.5) and lx.max() == pytest.approx(6.5)
    assert ly.min() == pytest.approx(1.5) and ly.max() == pytest.approx(4.5)
    with pytest.raises(ValueError, match="boolean"):
        regions.mask_contours(mask.astype(int), x, y)
