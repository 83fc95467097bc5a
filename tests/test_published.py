"""fcmlc's experiment models on the real data, checked against what the collaborations and
public fits report, and against independent re-implementations of their chi2 methods
(tests/_published.py).

fcmlc's chi2 is the model x ~ N(diag(mu(theta)) E beta, C) with free multiplicative
normalisations beta, profiled exactly. The public data live in ../shared/data relative to the
repository root; tests that need them skip when they are absent. Published / public-fit values
and their sources are tabulated in docs/experiments.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcmlc import experiments as ex
from fcmlc.physics import Grid

from _published import (chi2_fcmlc, chi2_fcmlc_null, chi2_free_scale, chi2_numpy, chi2_numpy_null,
                        chi2_prospect_relative, s2_of, spectrum_quadrature)

from conftest import DANSS_DIR, DATA, need as _need

#: coarse grid over the paper's range for the method comparisons (21 x 21, s2 up to 1)
COARSE = Grid(ue4_range=(0.001, 0.707), dm2_range=(0.01, 10.0), shape=(21, 21))


def _delta(c):
    return c - c.min()


def _compare(ours, theirs, limit=100.0):
    """Points where either Delta chi2 <= limit and |difference| > max(1, 15 % of the smaller)."""
    a, b = _delta(ours), _delta(theirs)
    m = (a <= limit) | (b <= limit)
    dev = np.abs(a - b)
    bad = m & (dev > np.maximum(1.0, 0.15 * np.minimum(a, b)))
    return dev, m, bad


def _best(c, grid):
    i = np.unravel_index(np.argmin(c), c.shape)
    return float(s2_of(grid.ue4[i[1]])), float(grid.dm2[i[0]]), float(c[i]), i


# --------------------------------------------------------------------------------------
# fcmlc's chi2 (chi2_scan, C++ kernel) against the closed-form NumPy profile
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["PROSPECT", "DANSS", "NEOS", "BEST", "GALLIUM"])
def test_chi2_scan_matches_numpy_profile(name):
    """chi2_scan (the public API every test below uses) equals the formula of the Experiment
    docstring, x^T C^-1 x - b^T G^-1 b, computed here in NumPy, including sin^2 2theta = 1."""
    e = ex.load(name, data_dir=_need(DATA)) if name in ("PROSPECT", "DANSS", "NEOS") else ex.load(name)
    g = Grid(ue4_range=(0.001, 0.707), dm2_range=(0.01, 10.0), shape=(11, 11))
    ours = chi2_fcmlc(e, e.observed, g)
    np.testing.assert_allclose(ours, chi2_numpy(e, e.observed, g), rtol=1e-7, atol=1e-7)
    assert chi2_fcmlc_null(e, e.observed) == pytest.approx(chi2_numpy_null(e, e.observed), rel=1e-7, abs=1e-7)


# --------------------------------------------------------------------------------------
# independent implementations of the collaborations' methods
# --------------------------------------------------------------------------------------

def test_prospect_relative_method(prospect):
    """PROSPECT's relative chi2 (Delta = M - M_e P/P_e, released V as is) against fcmlc.

    The relative method evaluates fcmlc's quadratic form at beta_e = M_e / P_e, whereas fcmlc
    minimises it over beta (the GLS estimate under the correlated V): so fcmlc <= relative at
    every point, exactly, and the two differ where the prediction is far from the data. On the
    coarse grid the max(1, 15 %) agreement holds at every point with Delta chi2 <= 100 except
    one, (dm2 = 10 eV^2, sin^2 2theta = 1): 82 (fcmlc) vs 95 (relative), 16 %."""
    g = COARSE
    ours = chi2_fcmlc(prospect, prospect.observed, g)
    P = prospect.expectation_grid(g).reshape(g.n_dm2, g.n_ue4, -1)
    theirs = chi2_prospect_relative(prospect.observed, P, prospect.covariance)
    # explanation, exactly: relative = fcmlc's form at beta_e = M_e / P_e >= its minimum
    assert np.all(ours <= theirs + 1e-8 * theirs)
    Ci = np.linalg.inv(prospect.covariance)
    p = P[7, 13]
    beta = prospect.observed.reshape(10, 16).sum(0) / p.reshape(10, 16).sum(0)
    r = prospect.observed - p * np.tile(beta, 10)
    assert float(r @ Ci @ r) == pytest.approx(theirs[7, 13], rel=1e-10)
    # the minima agree closely
    assert abs(ours.min() - theirs.min()) < 1.0
    dev, m, bad = _compare(ours, theirs)
    known = np.zeros_like(bad)
    known[-1, -1] = True  # dm2 = 10 eV^2, s2 = 1 (explained above)
    assert not np.any(bad & ~known), [(g.dm2[i], s2_of(g.ue4[j])) for i, j in np.argwhere(bad & ~known)]
    d = _delta(ours)[-1, -1], _delta(theirs)[-1, -1]
    assert abs(d[0] - d[1]) <= 0.20 * min(d)  # the one known point: within 20 %
    assert dev[m & ~known].max() < 8.0


def test_neos_independent(neos):
    """NEOS: ratio to an unoscillated reference with a free total normalisation, the ratio
    recomputed by brute-force quadrature (2 keV true energy x 400 baselines) from the model's
    inputs; agreement within max(1, 15 %) everywhere with Delta chi2 <= 100."""
    d = neos.definition()
    edges = np.asarray(d["observable"]["prompt_edges"])
    sl = d["detectors"][0]["segments"][0]["slices"][0]
    ff, r = d["reactor"]["fission_fractions"], d["response"]
    args = (ff, r["a"], r["b"], r.get("combine", "quadrature"), r["prompt_offset"])
    S = spectrum_quadrature(edges, sl, COARSE.dm2, s2_of(COARSE.ue4), *args)
    S0 = spectrum_quadrature(edges, sl, [1.0], [0.0], *args)[0, 0]
    theirs = chi2_free_scale(neos.observed, S / S0, np.linalg.inv(neos.covariance))
    ours = chi2_fcmlc(neos, neos.observed, COARSE)
    dev, m, bad = _compare(ours, theirs)
    assert not np.any(bad), dev[m].max()
    assert abs(ours.min() - theirs.min()) < 0.1


def test_danss_independent(danss):
    """DANSS bottom/top ratio as in public global fits: sigma = 0.19 sqrt(E) + 0.0868 E MeV,
    free normalisation, chi2 with the published inverse covariance as is; the ratio by
    brute-force quadrature. Agreement within max(1, 15 %) everywhere with Delta chi2 <= 100."""
    d = danss.definition()
    edges = np.asarray(d["observable"]["prompt_edges"])
    ff = d["reactor"]["fission_fractions"]
    s2 = s2_of(COARSE.ue4)
    num, den = (spectrum_quadrature(edges, d["detectors"][k]["segments"][0]["slices"][0], COARSE.dm2, s2, ff,
                                    0.19, 0.0868, "linear", 1.806) for k in (0, 1))
    M = np.loadtxt(DANSS_DIR / "inverse_covariance.txt")
    theirs = chi2_free_scale(danss.observed, num / den, M)
    ours = chi2_fcmlc(danss, danss.observed, COARSE)
    dev, m, bad = _compare(ours, theirs)
    assert not np.any(bad), dev[m].max()
    assert dev[m].max() < 0.2


# --------------------------------------------------------------------------------------
# real-data best fits against the published / public-fit values (docs/experiments.md)
# --------------------------------------------------------------------------------------

def test_prospect_best_fit(prospect):
    """Public re-analysis of the release: minimum near 1.8 eV^2, sin^2 2theta ~ 0.1; PROSPECT:
    compatible with no oscillation."""
    g = Grid.paper()
    s2, dm2, cmin, _ = _best(chi2_fcmlc(prospect, prospect.observed, g), g)
    assert abs(np.log10(dm2 / 1.8)) < 0.1  # same oscillation island as the re-analysis (+-25 %)
    assert 0.05 < s2 < 0.2  # amplitude within a factor 2 of 0.1 (weakly constrained, Delta chi2 ~ 4)
    dnull = chi2_fcmlc_null(prospect, prospect.observed) - cmin
    # 2-15: not significant; the re-analysis' ~10 uses its own treatment of the covariance
    assert 2.0 < dnull < 15.0


def test_danss_best_fit(danss):
    """Public global fit (arXiv:2005.01756 model): 1.32 eV^2, sin^2 2theta 0.072, chi2_min 21.35,
    chi2(null) 33.4; DANSS: 1.4 eV^2, 0.05. The global minimum is not at maximal mixing."""
    g = Grid.paper()
    c = chi2_fcmlc(danss, danss.observed, g)
    s2, dm2, cmin, _ = _best(c, g)
    assert abs(np.log10(dm2 / 1.32)) < 0.05  # the 1.3 eV^2 island (+-12 %), as DANSS and the public fit
    assert 0.072 / 2 < s2 < 0.072 * 1.5  # amplitude within a factor ~2 (0.05 here, 0.05 DANSS, 0.072 public)
    c0 = chi2_fcmlc_null(danss, danss.observed)
    assert c0 == pytest.approx(33.4, abs=0.5)  # same data and inverse covariance: only rounding of the files
    assert abs(cmin - 21.35) < 2.0  # resolution/geometry details of the public fit are not all known
    assert 8.0 < c0 - cmin < 14.0  # public fit: 12.05
    assert c[:, -1].min() - cmin > 1.0  # maximal mixing is disfavoured


def test_neos_best_fit(neos):
    """NEOS 2017: best fit 1.73 eV^2, sin^2 2theta 0.05 (PRL 118, 121802)."""
    g = Grid.paper()
    s2, dm2, cmin, _ = _best(chi2_fcmlc(neos, neos.observed, g), g)
    assert abs(np.log10(dm2 / 1.73)) < 0.05  # the 1.7 eV^2 island (+-12 %)
    assert 0.05 / 2 < s2 < 0.05 * 2  # within a factor 2 (digitised covariance, approximate model)
    dnull = chi2_fcmlc_null(neos, neos.observed) - cmin
    assert 5.0 < dnull < 20.0  # a 2-3 sigma preference, as NEOS; ours 13.5 with the digitised matrix


def test_best_best_fit():
    """BEST 2022 alone: dm2 = 3.3 eV^2, sin^2 2theta = 0.42 (arXiv:2109.11482); a rate-only fit
    of two ratios is degenerate along dm2 above ~1 eV^2, so dm2 is pinned loosely."""
    b = ex.load("BEST")
    g = Grid.paper()
    s2, dm2, cmin, _ = _best(chi2_fcmlc(b, b.observed, g), g)
    assert 1.0 < dm2 < 10.0  # fast-oscillation plateau: only a lower bound is meaningful
    assert 0.42 / 1.5 < s2 < 0.42 * 1.5  # the deficit sets the amplitude: ~0.4
    assert cmin < 1.0  # two ratios, two parameters: nearly perfect fit
    dnull = chi2_fcmlc_null(b, b.observed) - cmin
    assert 25.0 < dnull < 45.0  # ~0.78 +- 0.05 in both zones: a 4-5 sigma deficit per zone


def test_gallium_best_fit():
    """SAGE + GALLEX source runs: R ~ 0.87 on average, a ~2.5 sigma deficit; the oscillation fit
    prefers sin^2 2theta ~ 0.2-0.5 at dm2 ~ 1-3 eV^2 (Giunti and Laveder, arXiv:1006.3244)."""
    e = ex.load("GALLIUM")
    g = Grid.paper()
    s2, dm2, cmin, _ = _best(chi2_fcmlc(e, e.observed, g), g)
    assert 0.5 < dm2 < 10.0  # degenerate in dm2 above ~1 eV^2
    assert 0.1 < s2 < 0.6  # amplitude of a 13 % average deficit
    dnull = chi2_fcmlc_null(e, e.observed) - cmin
    assert 4.0 < dnull < 10.0  # ~2.5 sigma
