"""Tests of the data-release loaders (PROSPECT 2020, DANSS 2018, NEOS 2017).

The public data live outside the repository, in ../shared/data relative to the repository
root; every test here is skipped when that folder (or the release in it) is absent.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fcmlc import experiments as ex
from fcmlc.physics import Grid, sin2_2theta

from conftest import DANSS_DIR, DATA, NEOS_DIR, PROSPECT_DIR, need as _need


def _profiled_chi2(e, grid):
    """Shape-only chi2 on a grid with the free multiplicative normalisations profiled exactly
    (x ~ N(diag(mu) E beta, C)): chi2 = x^T C^-1 x - b^T G^-1 b, b = E^T (mu * C^-1 x),
    G = E^T diag(mu) C^-1 diag(mu) E. Returns (chi2 per grid point, chi2 at no oscillation)."""
    Ci = np.linalg.inv(e.covariance)
    x = e.observed
    y = Ci @ x
    E = e.normalisation_matrix

    def chi2(mu):
        ME = mu[:, :, None] * E[None]
        b = np.einsum("pik,i->pk", ME, y)
        G = np.einsum("pik,ij,pjl->pkl", ME, Ci, ME)
        return x @ y - np.einsum("pk,pk->p", b, np.linalg.solve(G, b[..., None])[..., 0])

    return chi2(e.expectation_grid(grid)), float(chi2(e.null_expectation[None])[0])


# --------------------------------------------------------------------------------------
# PROSPECT
# --------------------------------------------------------------------------------------

def test_prospect_release(prospect):
    e = prospect
    assert e.name == "PROSPECT" and e.n_bins == 160 and e.kind == "covariance" and e.linear_in_s2
    assert e.bin_labels[0] == "baseline 1 (6.658-7.351 m), 0.8-1.2 MeV"
    assert e.bin_labels[-1] == "baseline 10 (8.527-9.250 m), 6.8-7.2 MeV"
    C = np.loadtxt(PROSPECT_DIR / "1.2_Osc_CovarianceMatrix.txt", delimiter=",")
    np.testing.assert_array_equal(e.covariance, C)
    assert np.linalg.eigvalsh(e.covariance)[0] > 0
    # N0 equals the release's null prediction, baseline-major like the covariance
    null = np.concatenate([np.loadtxt(PROSPECT_DIR / f"1.6_Osc_NullOscPred{b}.txt", delimiter=",")[:, 1]
                           for b in range(1, 11)])
    np.testing.assert_allclose(e.null_expectation, null, rtol=1e-12)
    # observed: sum of the active segments' spectra = the 50,559 published IBD events
    assert e.observed is not None and e.observed.shape == (160,)
    assert e.observed.sum() == pytest.approx(50559.4, abs=0.1)
    # the covariance's diagonal follows the observed spectrum of baseline 1 (ordering check)
    stat1 = np.sqrt(np.diag(C))[:16]
    assert np.corrcoef(stat1, e.observed[:16])[0, 1] > 0.8
    assert e.n_norm_groups == 16 and e.norm_prior == 0.0 and e.shape_only
    np.testing.assert_array_equal(e.norm_groups, np.tile(np.arange(16), 10))  # one per energy, all baselines
    # fast oscillations average out, slow ones leave N0
    np.testing.assert_allclose(e.expectation(1 / np.sqrt(2), 1e4) / null, 0.5, atol=1e-4)
    np.testing.assert_allclose(e.expectation(0.3, 1e-6), null, rtol=1e-9)


def test_prospect_release_round_trip(prospect, tmp_path):
    p = tmp_path / "prospect.toml"
    p.write_text(prospect.to_toml())
    back = ex.from_toml(p)
    assert back.definition_hash == prospect.definition_hash
    np.testing.assert_array_equal(back.expectation(0.1, 1.7), prospect.expectation(0.1, 1.7))


def test_prospect_best_fit_location(prospect):
    """Orientation, not tuning: a public re-analysis of this release finds its chi2 minimum
    near dm2 ~ 1.8 eV^2, sin^2(2 theta) ~ 0.1; the profiled shape-only chi2 here agrees."""
    g = Grid(ue4_range=(0.05, 0.5), dm2_range=(0.5, 5.0), shape=(24, 40))
    c, c0 = _profiled_chi2(prospect, g)
    i = int(np.argmin(c))
    u, dm2 = g.points()[i]
    assert 1.4 < dm2 < 2.2 and 0.05 < sin2_2theta(u) < 0.2
    assert 2.0 < c0 - c[i] < 15.0


def test_load_with_data_dir():
    _need(DATA)
    p = ex.load("prospect", data_dir=DATA)
    assert p.observed is not None and p.n_bins == 160
    assert ex.load("PROSPECT", data_dir=PROSPECT_DIR).definition_hash == p.definition_hash
    assert ex.load("STEREO", data_dir=DATA) is ex.load("STEREO")  # no release: built-in


def test_load_data_dir_missing_release(tmp_path):
    with pytest.raises(FileNotFoundError, match="prospect-2020-oscillation"):
        ex.load("PROSPECT", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        ex.load("PROSPECT", data_dir=tmp_path / "nowhere")
    (tmp_path / "BEST.toml").write_text(ex.load("BEST").to_toml().replace("observed = 0.791", "observed = 0.8"))
    assert ex.load("best", data_dir=tmp_path).observed[0] == 0.8  # a model file in data_dir wins


@pytest.fixture()
def prospect_copy(tmp_path):
    dst = tmp_path / "release"
    shutil.copytree(_need(PROSPECT_DIR), dst)
    return dst


def test_prospect_missing_file(prospect_copy):
    (prospect_copy / "1.3_Osc_DetResponse100.txt").unlink()
    with pytest.raises(FileNotFoundError, match="1.3_Osc_DetResponse100.txt"):
        ex.load_prospect_release(prospect_copy)


def test_prospect_malformed_files(prospect_copy):
    f = prospect_copy / "1.2_Osc_CovarianceMatrix.txt"
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"1.2_Osc_CovarianceMatrix.txt: expected a 160 x 160 matrix"):
        ex.load_prospect_release(prospect_copy)
    f.write_text("\n".join(lines) + "\n")
    g = prospect_copy / "1.4_Osc_Prompt100.txt"
    g.write_text(g.read_text().replace("83.4985", "eighty"))
    with pytest.raises(ValueError, match=r"1.4_Osc_Prompt100.txt: line 1: not a list of numbers"):
        ex.load_prospect_release(prospect_copy)
    shutil.copy(PROSPECT_DIR / "1.4_Osc_Prompt100.txt", g)
    h = prospect_copy / "1.3_Osc_DetResponse15.txt"
    h.write_text("\n".join(h.read_text().splitlines()[:10]) + "\n")
    with pytest.raises(ValueError, match=r"1.3_Osc_DetResponse15.txt: expected 16 rows x 82 columns, got 10 x 82"):
        ex.load_prospect_release(prospect_copy)


# --------------------------------------------------------------------------------------
# DANSS
# --------------------------------------------------------------------------------------

def test_danss_ratio(danss):
    e = danss
    assert e.name == "DANSS" and e.n_bins == 24 and not e.linear_in_s2
    r = np.loadtxt(DANSS_DIR / "bottom_top_ratio.txt")
    M = np.loadtxt(DANSS_DIR / "inverse_covariance.txt")
    np.testing.assert_array_equal(e.observed, r[:, 2])
    np.testing.assert_allclose(e.covariance @ M, np.eye(24), atol=1e-8)
    assert np.linalg.eigvalsh(e.covariance)[0] > 0
    assert e.bin_labels[0] == "bottom/top, 1-1.25 MeV"
    # null ratio ~ (10.7/12.7)^2 with the finite core; the data are close to it
    assert np.all(np.abs(e.null_expectation - e.observed.mean()) < 0.03)
    assert e.n_norm_groups == 1 and e.norm_prior == 0.0 and e.nuisance_directions().shape == (24, 1)
    with pytest.raises(NotImplementedError):
        e.deficit([1.0])


def test_danss_best_fit_location(danss):
    """Orientation: DANSS 2018 reports its best fit at dm2 = 1.4 eV^2, sin^2(2 theta) = 0.05.
    With the positron kinetic energy as energy variable the local minimum at small mixing
    lands there (this test guards that modelling choice)."""
    g = Grid(ue4_range=(0.02, 0.3), dm2_range=(0.3, 5.0), shape=(30, 50))
    c, c0 = _profiled_chi2(danss, g)
    s2 = sin2_2theta(g.points()[:, 0])
    c = np.where(s2 < 0.2, c, np.inf)
    i = int(np.argmin(c))
    assert 1.1 < g.points()[i, 1] < 1.7 and 0.02 < s2[i] < 0.1
    assert c0 - c[i] > 5


def test_danss_errors(tmp_path):
    src = _need(DANSS_DIR)
    d = tmp_path / "danss"
    shutil.copytree(src, d)
    M = np.loadtxt(src / "inverse_covariance.txt")
    M[0, 0] = -1.0
    np.savetxt(d / "inverse_covariance.txt", M)
    with pytest.raises(ValueError, match=r"inverse_covariance.txt: not positive definite"):
        ex.load_danss_ratio(d)
    np.savetxt(d / "inverse_covariance.txt", np.eye(23))
    with pytest.raises(ValueError, match=r"inverse_covariance.txt: expected 24 rows x 24 columns"):
        ex.load_danss_ratio(d)
    (d / "inverse_covariance.txt").unlink()
    with pytest.raises(FileNotFoundError, match="inverse_covariance.txt"):
        ex.load_danss_ratio(d)


# --------------------------------------------------------------------------------------
# NEOS
# --------------------------------------------------------------------------------------

def test_neos_ratio(neos):
    e = neos
    assert e.name == "NEOS" and e.n_bins == 61 and e.linear_in_s2
    A = np.loadtxt(NEOS_DIR / "AllData.dat", delimiter=",")
    V = np.loadtxt(NEOS_DIR / "NeutrinoCovMatrix.dat", delimiter=",")
    np.testing.assert_array_equal(e.observed, A[:, 4])
    np.testing.assert_allclose(e.covariance[:60, :60], 0.5 * (V + V.T), rtol=1e-14)
    assert e.covariance[60, 60] == pytest.approx(A[60, 5] ** 2 + A[60, 6] ** 2)
    np.testing.assert_array_equal(e.covariance[60, :60], 0.0)
    assert np.linalg.eigvalsh(e.covariance)[0] > 0
    np.testing.assert_allclose(e.null_expectation, 1.0, rtol=1e-14)  # ratio to an unoscillated reference
    assert e.bin_labels[-1] == "NEOS, 7-10 MeV"
    D = e.deficit([2.37])
    np.testing.assert_allclose(e.expectation(0.15, 2.37), 1.0 - sin2_2theta(0.15) * D[0], rtol=1e-13)


def test_neos_errors(tmp_path):
    src = _need(NEOS_DIR)
    d = tmp_path / "neos"
    shutil.copytree(src, d)
    V = np.loadtxt(src / "NeutrinoCovMatrix.dat", delimiter=",")
    np.savetxt(d / "NeutrinoCovMatrix.dat", V[:50, :50], delimiter=",")
    with pytest.raises(ValueError, match=r"NeutrinoCovMatrix.dat: expected a 60 x 60 or 61 x 61 matrix"):
        ex.load_neos_ratio(d)
    W = V.copy()
    W[5, 5] = -1.0
    np.savetxt(d / "NeutrinoCovMatrix.dat", W, delimiter=",")
    with pytest.raises(ValueError, match=r"NeutrinoCovMatrix.dat: the symmetrised covariance is not positive"):
        ex.load_neos_ratio(d)
