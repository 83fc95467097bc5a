"""Tests of fcmlc.experiments: built-in models, the TOML schema, and the expectation model.

Physics checks: no oscillation gives the null prediction; fast oscillations average to
1 - sin^2(2 theta)/2; the C++ box-averaged model agrees with independent plain-NumPy
quadratures (reactor: STEREO cells; source: BEST inner sphere in closed form and a GALLEX
cylinder by (r, z) quadrature).
"""
from __future__ import annotations

import hashlib
import json
import math
from importlib import resources

import numpy as np
import pytest
from scipy.special import ndtr

from fcmlc import experiments as ex
from fcmlc.experiments import geometry, gallium
from fcmlc.physics import Grid, sin2_2theta, ue4_from_sin2_2theta

K = 1.2669326794198488  # oscillation constant, eV^-2 MeV / m

SIZES = {"STEREO": 126, "PROSPECT": 160, "DANSS": 24, "NEOS": 61, "GALLIUM": 4, "BEST": 2}
KINDS = {"STEREO": "covariance", "PROSPECT": "covariance", "DANSS": "covariance", "NEOS": "covariance",
         "GALLIUM": "pulls", "BEST": "pulls"}
N_NUIS = {"STEREO": 21, "PROSPECT": 16, "DANSS": 1, "NEOS": 1, "GALLIUM": 0, "BEST": 0}


@pytest.fixture(scope="module", params=list(SIZES))
def exp(request):
    return ex.load(request.param)


# --------------------------------------------------------------------------------------
# catalogue
# --------------------------------------------------------------------------------------

def test_available_order():
    assert ex.available() == ["STEREO", "PROSPECT", "DANSS", "NEOS", "GALLIUM", "BEST"]


def test_builtin_sizes_and_metadata(exp):
    assert exp.n_bins == SIZES[exp.name]
    assert exp.kind == KINDS[exp.name]
    assert len(exp.bin_labels) == exp.n_bins and len(set(exp.bin_labels)) == exp.n_bins
    assert exp.null_expectation.shape == (exp.n_bins,) and np.all(exp.null_expectation > 0)
    assert exp.covariance.shape == (exp.n_bins, exp.n_bins)
    assert exp.n_norm_groups == N_NUIS[exp.name] and exp.norm_groups.shape == (exp.n_bins,)
    assert exp.normalisation_matrix.shape == (exp.n_bins, N_NUIS[exp.name])
    assert exp.nuisance_directions().shape == (exp.n_bins, N_NUIS[exp.name])
    assert exp.norm_prior == 0.0  # every built-in fits the shape only (free normalisations)
    assert exp.shape_only == (N_NUIS[exp.name] > 0)
    assert exp.linear_in_s2 == (exp.name != "DANSS")
    assert exp.approximate is True  # every built-in uses numbers marked approximate
    assert exp.sources and exp.description
    want = int.from_bytes(hashlib.sha256(exp.name.encode()).digest()[:8], "little")
    assert exp.stream_id == want and 0 <= exp.stream_id < 2 ** 64
    if exp.kind == "pulls":
        k = len(exp.pull_names)
        assert exp.pull_jacobian.shape == (exp.n_bins, k)
        assert exp.pull_covariance.shape == (k, k) and exp.pull_lower.shape == (k,)
        assert exp.stat_sigma.shape == (exp.n_bins,)
        assert exp.observed is not None and exp.observed.shape == (exp.n_bins,)
    else:
        assert exp.pull_names is None and exp.pull_jacobian is None and exp.stat_sigma is None
        assert exp.observed is None  # published reactor data are read by the release loaders
    if exp.name == "STEREO":
        assert exp.bin_labels[2 * 21 + 2] == "cell 3, 2.125-2.375 MeV"


def test_load_is_case_insensitive_and_cached():
    assert ex.load("stereo") is ex.load(" STEREO ")
    assert ex.load("Best").name == "BEST"


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="STEREO, PROSPECT, DANSS, NEOS, GALLIUM, BEST"):
        ex.load("MiniBooNE")


def test_model_files_are_package_data():
    """The TOML files sit inside the package (shipped by wheel.packages = ["python/fcmlc"])."""
    root = resources.files("fcmlc.experiments").joinpath("data")
    for name in ex.available():
        assert root.joinpath(f"{name}.toml").is_file()
        assert ex.builtin_toml(name).lstrip().startswith("# fcmlc built-in experiment model")


def test_immutable(exp):
    with pytest.raises(AttributeError):
        exp.name = "X"
    with pytest.raises(AttributeError):
        exp.covariance = np.eye(exp.n_bins)
    with pytest.raises(ValueError):
        exp.covariance[0, 0] = 1.0
    with pytest.raises(ValueError):
        exp.null_expectation[0] = 1.0
    d = exp.definition()
    d["experiment"]["name"] = "changed"
    assert exp.definition()["experiment"]["name"] == exp.name


# --------------------------------------------------------------------------------------
# expectation model
# --------------------------------------------------------------------------------------

def test_no_oscillation_gives_null(exp):
    dm2 = np.array([0.0, 0.01, 0.7, 3.0, 10.0, 1e4])
    mu = exp.expectation(np.zeros_like(dm2), dm2)
    np.testing.assert_allclose(mu, np.broadcast_to(exp.null_expectation, mu.shape), rtol=1e-14, atol=0)
    mu = exp.expectation(np.array([0.01, 0.3, 0.7]), 0.0)  # dm2 = 0: no oscillation either
    np.testing.assert_allclose(mu, np.broadcast_to(exp.null_expectation, mu.shape), rtol=1e-12, atol=0)


def test_fast_oscillations_average(exp):
    """At dm2 = 1e4 eV^2 (far outside the grid; allowed) the phase 1.267 dm2 L/E varies by
    hundreds of radians over every reactor box and by >~50 rad over the thinnest source
    slice, so each box average of sin^2 is within 1/(2 dphi) of 1/2 and the sum over many boxes
    with unrelated phases is closer still: mu / N0 = 1 - sin^2(2 theta)/2 to 1e-4. (The DANSS
    ratio of two such spectra is unchanged: mu = N0.)"""
    ue4 = 0.5  # sin^2(2 theta) = 0.75
    s2 = float(sin2_2theta(ue4))
    r = exp.expectation(ue4, 1e4) / exp.null_expectation
    target = 1.0 if not exp.linear_in_s2 else 1.0 - s2 / 2
    np.testing.assert_allclose(r, target, atol=1e-4, rtol=0)


def test_point_evaluation_would_be_wrong_there():
    """Why bins must be averaged: evaluating P at the box centres misses the limit badly."""
    e = ex.load("STEREO")
    spec = e.definition()
    lo, hi, _ = spec["detectors"][0]["segments"][0]["slices"][0]
    edges = np.array(spec["observable"]["prompt_edges"])
    E = 0.5 * (edges[1:] + edges[:-1]) + 0.782
    P_point = 1 - 1.0 * np.sin(K * 1e4 * 0.5 * (lo + hi) / E) ** 2
    assert np.max(np.abs(P_point - 0.5)) > 0.2
    np.testing.assert_allclose(e.expectation(1 / math.sqrt(2), 1e4)[:21] / e.null_expectation[:21], 0.5, atol=1e-4)


def test_expectation_shapes_and_broadcast(exp):
    assert exp.expectation(0.1, 1.0).shape == (exp.n_bins,)
    u = np.array([0.0, 0.1, 0.3])
    d = np.array([0.5, 1.0, 0.5])
    mu = exp.expectation(u, d)
    assert mu.shape == (3, exp.n_bins)
    np.testing.assert_allclose(mu[1], exp.expectation(0.1, 1.0), rtol=1e-13)
    np.testing.assert_allclose(mu[0], exp.null_expectation, rtol=1e-14)
    np.testing.assert_allclose(mu[2], exp.expectation(0.3, 0.5), rtol=1e-13)
    assert exp.expectation(0.2, d).shape == (3, exp.n_bins)
    assert exp.expectation(u[:, None], d[None, :]).shape == (3, 3, exp.n_bins)


@pytest.mark.parametrize("ue4, dm2", [(-0.1, 1.0), (1.1, 1.0), (0.1, -1.0), (float("nan"), 1.0),
                                      (0.1, float("inf"))])
def test_expectation_validates(ue4, dm2):
    with pytest.raises(ValueError):
        ex.load("BEST").expectation(ue4, dm2)


def test_linear_in_s2_and_deficit(exp):
    dm2 = np.array([0.3, 2.0, 9.0])
    if not exp.linear_in_s2:
        with pytest.raises(NotImplementedError, match="ratio"):
            exp.deficit(dm2)
        return
    D = exp.deficit(dm2)
    assert D.shape == (3, exp.n_bins)
    assert np.all(D >= 0) and np.all(D <= exp.null_expectation[None, :] + 1e-12)
    for u in (0.05, 0.4):
        np.testing.assert_allclose(exp.expectation(u, dm2), exp.null_expectation - sin2_2theta(u) * D, rtol=1e-13)
    assert exp.deficit(2.0).shape == (1, exp.n_bins)
    with pytest.raises(ValueError):
        exp.deficit([-1.0])


def test_linear_parts_reproduce_expectation(exp):
    """mu from the exposed boxes and weights with plain NumPy box averages (4 x 4
    Gauss-Legendre in L and E): at dm2 = 0.02 eV^2 the phase changes by < 0.1 rad across any
    box, so this quadrature is exact to ~1e-10 and checks the kernel and the CSR plumbing."""
    parts = exp.linear_parts
    assert len(parts) == (1 if exp.linear_in_s2 else 2)
    dm2, s2 = 0.02, 0.3
    vals = []
    for p in parts:
        W = p.dense()
        np.testing.assert_allclose(W.sum(axis=1), p.null, rtol=1e-12)
        b = p.boxes
        # mean of sin^2(k L / E) over a small-phase box by 4 x 4 Gauss-Legendre
        x, w = np.polynomial.legendre.leggauss(4)
        x, w = 0.5 * (x + 1), 0.5 * w
        L = b[:, 0:1, None] + (b[:, 1:2, None] - b[:, 0:1, None]) * x[None, :, None]
        E = b[:, 2:3, None] + (b[:, 3:4, None] - b[:, 2:3, None]) * x[None, None, :]
        m = (w[None, :, None] * w[None, None, :] * np.sin(K * dm2 * L / E) ** 2).sum(axis=(1, 2))
        vals.append(p.null - s2 * W @ m)
    mu = vals[0] if len(vals) == 1 else vals[0] / vals[1]
    np.testing.assert_allclose(exp.expectation(ue4_from_sin2_2theta(s2), dm2), mu, rtol=1e-9)
    with pytest.raises(AttributeError):
        parts[0].weights = None


def test_expectation_grid_matches_pointwise(exp):
    g = Grid(shape=(4, 5))
    mu = exp.expectation_grid(g, threads=1)
    assert mu.shape == (g.n_points, exp.n_bins)
    pts = g.points()
    np.testing.assert_allclose(mu, exp.expectation(pts[:, 0], pts[:, 1]), rtol=1e-12)


def test_ratio_model_is_ratio_of_spectra():
    """DANSS: the ratio is the bottom spectrum over the top spectrum, both linear in s2."""
    e = ex.load("DANSS")
    spec = e.definition()
    spec_b = json.loads(json.dumps(spec))
    spec_b["observable"] = {"type": "spectrum", "prompt_edges": spec["observable"]["prompt_edges"],
                            "shape_only": "total", "norm_prior": 0.0}
    spec_b["detectors"] = [d for d in spec["detectors"] if d["name"] == "bottom"]
    spec_t = json.loads(json.dumps(spec_b))
    spec_t["detectors"] = [d for d in spec["detectors"] if d["name"] == "top"]
    bottom, top = ex.from_dict(spec_b), ex.from_dict(spec_t)
    for u, d in ((0.2, 1.4), (0.4, 5.0)):
        ratio = bottom.expectation(u, d) / top.expectation(u, d)
        norm = (bottom.null_expectation / top.null_expectation) / e.null_expectation
        np.testing.assert_allclose(e.expectation(u, d), ratio / norm, rtol=1e-12)
    # geometry: the null ratio is about (10.7 / 12.7)^2 (1/L^2 with a finite core)
    assert 0.66 < e.null_expectation.mean() < 0.73


def _stereo_brute_force(e, cell: int, s2: float, dm2: float) -> np.ndarray:
    """Plain NumPy: mu/N0 for one STEREO cell by direct quadrature over true energy (1 keV
    steps) and distance (400 points over the cell's slice), Huber 235U flux x Vogel-Beacom
    IBD, Gaussian prompt response with sigma = 0.113 sqrt(E_prompt)."""
    spec = e.definition()
    lo, hi, _ = spec["detectors"][cell]["segments"][0]["slices"][0]
    edges = np.array(spec["observable"]["prompt_edges"])
    E = np.arange(1.806, 12.0, 0.001) + 0.0005
    a = [4.367, -4.577, 2.100, -5.294e-1, 6.186e-2, -2.777e-3]
    flux = np.exp(sum(c * E ** k for k, c in enumerate(a)))
    Ee = E - 1.29333236
    xs = Ee * np.sqrt(np.clip(Ee ** 2 - 0.51099895 ** 2, 0, None))
    Ep = E - 0.782
    G = np.diff(ndtr((edges[:, None] - Ep[None]) / (0.113 * np.sqrt(Ep))[None]), axis=0)
    L = lo + (hi - lo) * (np.arange(400) + 0.5) / 400
    P = 1 - s2 * np.mean(np.sin(K * dm2 * L[:, None] / E[None, :]) ** 2, axis=0)
    return (G * (flux * xs * P)[None]).sum(1) / (G * (flux * xs)[None]).sum(1)


@pytest.mark.parametrize("dm2", [0.3, 1.0, 3.0, 10.0])
def test_reactor_matches_brute_force(dm2):
    """STEREO cells 1 and 6 against an independent quadrature, at maximal mixing (s2 = 1) to
    expose every error. Tolerance 1e-3 on mu/N0: the model averages the oscillation uniformly
    inside 20 keV true-energy bins while the true weight (spectrum x response) varies across a
    bin; this error falls quadratically with the bin width (2e-3 at 50 keV, 3e-4 at 20 keV)."""
    e = ex.load("STEREO")
    for cell in (0, 5):
        bf = _stereo_brute_force(e, cell, 1.0, dm2)
        mu = e.expectation(1 / math.sqrt(2), dm2)[cell * 21:(cell + 1) * 21] / e.null_expectation[cell * 21:(cell + 1) * 21]
        np.testing.assert_allclose(mu, bf, atol=1e-3, rtol=0)


CR_LINES = np.array([[0.747, 0.8163, 60.8], [0.752, 0.0849, 61.5], [0.427, 0.0895, 26.7], [0.432, 0.0093, 27.1]])


@pytest.mark.parametrize("dm2", [0.5, 2.0, 9.3, 40.0])
def test_best_inner_matches_closed_form(dm2):
    """Source at the centre of a sphere: dV/L^2 = dL dOmega, so L is uniform on [0, R] and
    <sin^2(k L)> = 1/2 - sin(2 k R)/(4 k R), k = 1.267 dm2 / E, summed over the 51Cr lines."""
    e = ex.load("BEST")
    R = 0.6675
    w = CR_LINES[:, 1] * CR_LINES[:, 2]
    w /= w.sum()
    k = K * dm2 / CR_LINES[:, 0]
    m = 0.5 - np.sin(2 * k * R) / (4 * k * R)
    s2 = 0.6
    want = 1 - s2 * (w * m).sum()
    got = e.expectation(ue4_from_sin2_2theta(s2), dm2)[0]
    assert abs(got - want) < 1e-9


@pytest.mark.parametrize("dm2", [0.7, 3.0, 12.0])
def test_gallex_matches_rz_quadrature(dm2):
    """GALLEX Cr1 (cylinder R 1.9 m, H 5 m, source on the axis 2.7 m above the bottom) by a
    midpoint (r, z) quadrature of P(L) r / L^2 (azimuthal symmetry), independent of the
    solid-angle construction of the model; 1000 x 2600 points give ~1e-5 accuracy."""
    e = ex.load("GALLIUM")
    nr, nz = 1000, 2600
    r = 1.9 * (np.arange(nr) + 0.5) / nr
    z = 5.0 * (np.arange(nz) + 0.5) / nz - 2.7
    L2 = r[:, None] ** 2 + z[None, :] ** 2
    wgt = r[:, None] / L2
    L = np.sqrt(L2)
    w = CR_LINES[:, 1] * CR_LINES[:, 2]
    w /= w.sum()
    msin = sum(wl * (wgt * np.sin(K * dm2 * L / El) ** 2).sum() / wgt.sum() for El, wl in zip(CR_LINES[:, 0], w))
    s2 = 0.5
    got = e.expectation(ue4_from_sin2_2theta(s2), dm2)[0]
    assert abs(got - (1 - s2 * msin)) < 2e-4


# --------------------------------------------------------------------------------------
# covariance, pulls, nuisances
# --------------------------------------------------------------------------------------

def _chi2_free_norm(exp, x, C, mu):
    """min over beta of (x - diag(mu) E beta)^T C^-1 (...): x^T C^-1 x - b^T G^-1 b."""
    Ci = np.linalg.inv(C)
    y = Ci @ x
    if exp.n_norm_groups == 0:
        return float((x - mu) @ Ci @ (x - mu))
    V = exp.nuisance_directions(mu)
    b = V.T @ y
    return float(x @ y - b @ np.linalg.solve(V.T @ Ci @ V, b))


def test_covariance_symmetric_psd(exp):
    C = exp.covariance
    np.testing.assert_array_equal(C, C.T)
    assert np.linalg.eigvalsh(C)[0] > 0  # positive definite: chi2 needs C^-1
    E = exp.normalisation_matrix
    V = exp.nuisance_directions()
    if V.shape[1]:
        # every bin in exactly one group; columns are N0 restricted to each group, partitioning N0
        np.testing.assert_array_equal(E.sum(axis=1), 1.0)
        np.testing.assert_array_equal(np.argmax(E, axis=1), exp.norm_groups)
        np.testing.assert_allclose(V.sum(axis=1), exp.null_expectation, rtol=1e-14)
        mu = exp.expectation(0.2, 1.5)
        np.testing.assert_allclose(exp.nuisance_directions(mu), mu[:, None] * E, rtol=0)
    else:
        np.testing.assert_array_equal(exp.norm_groups, -1)


def test_free_normalisation_chi2_is_scale_invariant(exp):
    """With free multiplicative normalisations, rescaling each group's data by k_g and the
    covariance by the same factors (C -> K C K) leaves the profiled chi2 unchanged."""
    if exp.n_norm_groups == 0:
        pytest.skip("no normalisation groups (pulls model)")
    rng = np.random.default_rng(1)
    mu = exp.expectation(0.15, 1.3)
    x = exp.null_expectation + np.linalg.cholesky(exp.covariance) @ rng.standard_normal(exp.n_bins)
    k = (0.7 + 0.6 * rng.random(exp.n_norm_groups))[exp.norm_groups]
    c1 = _chi2_free_norm(exp, x, exp.covariance, mu)
    c2 = _chi2_free_norm(exp, k * x, exp.covariance * np.outer(k, k), mu)
    c3 = _chi2_free_norm(exp, 2.5 * x, 6.25 * exp.covariance, mu)
    assert c2 == pytest.approx(c1, rel=1e-8) and c3 == pytest.approx(c1, rel=1e-8)
    # and the data at the expectation rescaled per group fit perfectly
    assert _chi2_free_norm(exp, k * mu, exp.covariance, mu) == pytest.approx(0.0, abs=1e-6 * c1)


def test_pull_model_consistency():
    for name in ("GALLIUM", "BEST"):
        e = ex.load(name)
        NJ = e.null_expectation[:, None] * e.pull_jacobian
        np.testing.assert_allclose(e.covariance, np.diag(e.stat_sigma ** 2) + NJ @ e.pull_covariance @ NJ.T,
                                   rtol=1e-12)
        # excited-state pulls: truncated at B(GT) = 0, shared by every measurement
        for i, p in enumerate(e.pull_names):
            if p.startswith("BGT"):
                assert np.all(e.pull_jacobian[:, i] > 0)
        np.testing.assert_allclose(e.pull_lower[:2], [-0.34 / 8.52, -1.76 / 8.52], rtol=1e-12)
        np.testing.assert_allclose(np.sqrt(np.diag(e.pull_covariance))[:2], [0.26 / 8.52, 0.14 / 8.52], rtol=1e-12)
    g, b = ex.load("GALLIUM"), ex.load("BEST")
    np.testing.assert_allclose(g.stat_sigma, [0.11, 0.10, 0.12, 0.084])
    np.testing.assert_allclose(g.observed, [0.953, 0.812, 0.95, 0.791])
    np.testing.assert_allclose(b.observed, [0.791, 0.766])
    np.testing.assert_allclose(b.pull_jacobian[:, 2:], np.eye(2))
    # total BEST error close to the published +-0.05 (stat + syst + cross section)
    assert np.all(np.abs(np.sqrt(np.diag(b.covariance)) - 0.05) < 0.005)


def test_gallium_jacobian_is_dlnsigma():
    """J = d ln sigma_source / d r_x by finite differences of the phase-space cross section."""
    e = ex.load("GALLIUM")
    r0 = np.array([0.34 / 8.52, 1.76 / 8.52])

    def sigma(r):
        """Source-averaged cross section: sum_l b_l sigma_l (1 + sum_x r_x phi_x(E_l))."""
        E = CR_LINES[:, 0]
        gs = gallium.phase_space(E)
        phi = [gallium.phase_space(E, x) / gs for x in (0.175, 0.5)]
        return (CR_LINES[:, 1] * CR_LINES[:, 2] * (1 + r[0] * phi[0] + r[1] * phi[1])).sum()

    h = 1e-6
    for q in range(2):
        dr = np.zeros(2)
        dr[q] = h
        fd = (math.log(sigma(r0 + dr)) - math.log(sigma(r0 - dr))) / (2 * h)
        assert abs(fd - e.pull_jacobian[0, q]) < 1e-6
    assert 0.55 < e.pull_jacobian[0, 0] < 0.7 and 0.15 < e.pull_jacobian[0, 1] < 0.25


# --------------------------------------------------------------------------------------
# definitions, hashes, TOML round trip
# --------------------------------------------------------------------------------------

def test_definition_hash_stable(exp):
    d = exp.definition()
    json.dumps(d)  # JSON-able
    assert exp.definition_hash == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()
    again = ex.from_dict(d)
    assert again.definition_hash == exp.definition_hash
    assert again.stream_id == exp.stream_id


def test_toml_round_trip(exp, tmp_path):
    p = tmp_path / f"{exp.name}.toml"
    p.write_text(exp.to_toml())
    back = ex.from_toml(p)
    assert back.definition_hash == exp.definition_hash
    for attr in ("null_expectation", "covariance", "norm_groups", "normalisation_matrix"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(exp, attr))
    assert back.norm_prior == exp.norm_prior
    np.testing.assert_array_equal(back.expectation(0.2, [0.8, 4.0]), exp.expectation(0.2, [0.8, 4.0]))
    assert back.bin_labels == exp.bin_labels


@pytest.mark.parametrize("edit", [
    lambda d: d["response"].__setitem__("a", 0.12),
    lambda d: d["response"].__setitem__("combine", "linear"),
    lambda d: d["events"].__setitem__("total", 2e5),
    lambda d: d["detectors"][2]["segments"][0]["slices"][0].__setitem__(1, 10.4),
    lambda d: d["observable"].__setitem__("norm_prior", 0.2),
    lambda d: d["experiment"].__setitem__("description", "changed"),
])
def test_definition_hash_changes_with_any_field(edit):
    e = ex.load("STEREO")
    d = e.definition()
    edit(d)
    assert ex.from_dict(d).definition_hash != e.definition_hash


def test_resolution_combine():
    """combine = "quadrature" (default, not stored: old files keep their hash) or "linear"
    (sigma = a sqrt(E) + b E, the DANSS model of public global fits)."""
    from fcmlc.experiments import spectra

    E = np.array([1.0, 3.0, 6.0])
    np.testing.assert_allclose(spectra.resolution_sigma(E, 0.19, 0.0868, "linear"), 0.19 * np.sqrt(E) + 0.0868 * E)
    np.testing.assert_allclose(spectra.resolution_sigma(E, 0.19, 0.0868), np.hypot(0.19 * np.sqrt(E), 0.0868 * E))
    e = ex.load("STEREO")
    d = e.definition()
    assert "combine" not in d["response"]
    d["response"]["combine"] = "quadrature"
    assert ex.from_dict(d).definition_hash == e.definition_hash
    danss = ex.load("DANSS")
    r = danss.definition()["response"]
    assert r == {"type": "gaussian", "a": 0.19, "b": 0.0868, "combine": "linear", "prompt_offset": 1.806}
    # the response matrix uses the linear sum: its width at E_prompt = 4 MeV is 0.19*2 + 0.0868*4 MeV
    te = np.arange(1.8, 12.0001, 0.02)
    pe = np.arange(0.0, 10.0001, 0.02)
    R = spectra.gaussian_response(te, pe, 0.19, 0.0868, 1.806, combine="linear")
    t = int(np.argmin(np.abs(0.5 * (te[1:] + te[:-1]) - 5.806)))
    c = 0.5 * (pe[1:] + pe[:-1])
    m = (R[:, t] * c).sum() / R[:, t].sum()
    sd = np.sqrt((R[:, t] * (c - m) ** 2).sum() / R[:, t].sum())
    assert sd == pytest.approx(0.19 * 2 + 0.0868 * 4, rel=0.01)


def test_definition_hash_changes_for_pulls():
    e = ex.load("BEST")
    d = e.definition()
    d["measurements"][0]["observed"] = 0.80
    e2 = ex.from_dict(d)
    assert e2.definition_hash != e.definition_hash and e2.observed[0] == 0.80


def test_builtin_slices_match_geometry():
    """The slices stored in the model files are what the documented geometry gives
    (reactor_distance_moments + equal_rms_slice; see the comments in each file)."""
    cases = {
        "STEREO": [((c, 0.2, 0.8, "across", (0.37, 0.9, 0.9))) for c in np.linspace(9.4, 11.1, 6)],
        "DANSS": [(12.7, 1.6, 3.6, "along", (1.0, 1.0, 1.0)), (10.7, 1.6, 3.6, "along", (1.0, 1.0, 1.0))],
        "NEOS": [(23.7, 1.55, 3.8, "across", (1.0, 1.0, 1.0))],
    }
    edges = [6.65826, 7.35108, 7.49064, 7.67506, 7.78471, 7.96415, 8.06882, 8.18346, 8.30308, 8.52737, 9.2501]
    cases["PROSPECT"] = [((lo + hi) / 2, 0.2175, 0.508, "across", (math.hypot(hi - lo, 0.145), 0.145, 1.176))
                         for lo, hi in zip(edges[:-1], edges[1:])]
    for name, args in cases.items():
        d = ex.load(name).definition()
        stored = [det["segments"][0]["slices"][0] for det in d["detectors"]]
        assert len(stored) == len(args)
        for (lo, hi, w), a in zip(stored, args):
            m, s = geometry.reactor_distance_moments(*a, n=6)
            want = geometry.equal_rms_slice(m, s)
            assert abs(lo - want[0]) < 2e-3 and abs(hi - want[1]) < 2e-3 and w == 1.0, (name, a)


def test_source_slices():
    s = geometry.source_distance_slices("sphere", radius=0.6675, n_slices=50)
    np.testing.assert_allclose(s[:, 2], 1 / 50)  # uniform in L
    c = geometry.source_distance_slices("cylinder", radius=1.09, height=2.345, source_height=1.1725,
                                        exclude_sphere_radius=0.6675)
    assert c[0, 0] == pytest.approx(0.6675) and c[:, 2].sum() == pytest.approx(1.0)
    assert c[-1, 1] == pytest.approx(math.hypot(1.09, 1.1725))


# --------------------------------------------------------------------------------------
# user models (TOML): first-class, validated
# --------------------------------------------------------------------------------------

USER_TOML = """
schema = 1
[experiment]
name = "TOY"
kind = "covariance"
description = "a two-detector toy"
[reactor]
fission_fractions = {U235 = 1.0}
true_energy = {min = 1.8, max = 9.0, step = 0.1}
[observable]
type = "spectrum"
prompt_edges = {min = 1.0, max = 7.0, step = 1.0}
shape_only = "per_energy_bin"
norm_prior = 0.1
[response]
type = "gaussian"
a = 0.06
[events]
total = 1.0e4
[systematics]
uncorrelated = 0.02
[[detectors]]
name = "near"
[[detectors.segments]]
slices = [[7.0, 7.5, 1.0]]
[[detectors]]
name = "far"
[[detectors.segments]]
slices = [[9.0, 9.5, 1.0]]
"""


def _write(tmp_path, text: str, name="user.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_user_model(tmp_path):
    e = ex.from_toml(_write(tmp_path, USER_TOML))
    assert e.name == "TOY" and e.n_bins == 12 and e.nuisance_directions().shape == (12, 6)
    assert e.n_norm_groups == 6 and e.norm_prior == pytest.approx(0.1) and not e.shape_only
    np.testing.assert_array_equal(e.norm_groups, np.tile(np.arange(6), 2))
    assert not e.approximate
    assert e.null_expectation.sum() == pytest.approx(1e4)
    near, far = e.null_expectation[:6].sum(), e.null_expectation[6:].sum()
    assert near / far == pytest.approx((9.0 * 9.5) / (7.0 * 7.5), rel=1e-12)  # <1/L^2> over each slice
    assert e.bin_labels[7] == "far, 2-3 MeV"
    np.testing.assert_allclose(np.diag(e.covariance), e.null_expectation + (0.02 * e.null_expectation) ** 2)
    with pytest.raises(FileNotFoundError):
        ex.from_toml(tmp_path / "nope.toml")


BAD_CASES = [
    # (replace old -> new in USER_TOML, expected message fragments)
    ('name = "TOY"\n', "", ["experiment.name", "missing required field"]),
    ("[[detectors]]\nname = \"near\"\n[[detectors.segments]]\nslices = [[7.0, 7.5, 1.0]]\n",
     "[[detectors]]\nname = \"near\"\n[[detectors.segments]]\nslices = [[7.0, 7.5]]\n",
     ["detectors[0].segments[0].slices", "wrong shape"]),
    ("slices = [[9.0, 9.5, 1.0]]", "slices = [[-9.0, 9.5, 1.0]]", ["detectors[1].segments[0].slices[0]", "> 0"]),
    ("slices = [[9.0, 9.5, 1.0]]", "slices = [[9.5, 9.0, 1.0]]", ["detectors[1].segments[0].slices[0]", "L_lo <= L_hi"]),
    ("a = 0.06", "a = nan", ["response.a", "NaN"]),
    ("total = 1.0e4", "total = -5.0", ["events.total", "> 0"]),
    ('type = "spectrum"', 'type = "histogram"', ["observable.type", "must be one of"]),
    ("uncorrelated = 0.02", "uncorrelated = 0.02\nbogus = 1", ["systematics.bogus", "unknown field"]),
    ("step = 1.0}", "step = 0.7}", ["observable.prompt_edges", "whole number"]),
    ("[events]\ntotal = 1.0e4\n", "", ["events", "normalisation"]),
    ("a = 0.06", "a = 0.06\nb = \"x\"", ["response.b", "must be a number"]),
    ("kind = \"covariance\"", "kind = \"likelihood\"", ["experiment.kind", "must be one of"]),
    ("a = 0.06", "a = 0.06\ncombine = \"sum\"", ["response.combine", "must be one of 'quadrature', 'linear'"]),
    ("a = 0.06", "a = 0.06\ncombine = 1", ["response.combine", "must be a string"]),
]


@pytest.mark.parametrize("old, new, msgs", BAD_CASES)
def test_malformed_user_models(tmp_path, old, new, msgs):
    assert old in USER_TOML
    p = _write(tmp_path, USER_TOML.replace(old, new, 1), "bad.toml")
    with pytest.raises(ValueError) as info:
        ex.from_toml(p)
    text = str(info.value)
    assert "bad.toml" in text
    for m in msgs:
        assert m in text, text


def _with_covariance(matrix: list) -> str:
    body = USER_TOML.replace("[systematics]\nuncorrelated = 0.02\n", "")
    rows = ",\n".join("  [" + ", ".join(repr(float(x)) for x in row) + "]" for row in matrix)
    return body + f"[covariance]\nmatrix = [\n{rows}\n]\n"


def test_explicit_covariance_checks(tmp_path):
    n = 12
    good = np.eye(n) * 4.0
    e = ex.from_toml(_write(tmp_path, _with_covariance(good.tolist())))
    np.testing.assert_array_equal(e.covariance, good)
    bad = np.eye(n)
    bad[0, 1] = bad[1, 0] = 2.0  # eigenvalue -1
    with pytest.raises(ValueError, match=r"bad.toml: field 'covariance.matrix': not positive semi-definite"):
        ex.from_toml(_write(tmp_path, _with_covariance(bad.tolist()), "bad.toml"))
    asym = np.eye(n)
    asym[0, 1] = 0.5
    with pytest.raises(ValueError, match="covariance.matrix': not symmetric"):
        ex.from_toml(_write(tmp_path, _with_covariance(asym.tolist()), "bad.toml"))
    nan = np.eye(n).tolist()
    nan[3][3] = float("nan")
    with pytest.raises(ValueError, match=r"covariance.matrix': contains NaN at index \[3, 3\]"):
        ex.from_toml(_write(tmp_path, _with_covariance(nan), "bad.toml"))
    with pytest.raises(ValueError, match=r"covariance.matrix': wrong shape: expected 12 x 12, got 11 x 11"):
        ex.from_toml(_write(tmp_path, _with_covariance(np.eye(11).tolist()), "bad.toml"))


def test_invalid_toml_syntax(tmp_path):
    with pytest.raises(ValueError, match="bad.toml: not valid TOML"):
        ex.from_toml(_write(tmp_path, "[experiment\nname = 1", "bad.toml"))


def test_malformed_pulls_model(tmp_path):
    good = ex.load("BEST").to_toml()
    for old, new, msg in [
        ('source = "Cr51"', 'source = "Co60"', "unknown source 'Co60'"),
        ("stat_sigma = 0.035302", "stat_sigma = -0.035302", "measurements[0].stat_sigma"),
        ('applies_to = ["BEST inner"]', 'applies_to = ["BEST middle"]', "unknown measurement 'BEST middle'"),
        ("radius = 0.6675, n_slices", "radius = 0.0, n_slices", "measurements[0].geometry.radius"),
    ]:
        assert old in good, old
        with pytest.raises(ValueError, match="bad.toml") as info:
            ex.from_toml(_write(tmp_path, good.replace(old, new, 1), "bad.toml"))
        assert msg in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------
# combining experiments
# --------------------------------------------------------------------------------------

def test_combine():
    s = ex.combine(["BEST", ex.load("DANSS"), "gallium"])
    assert s.names == ["BEST", "DANSS", "GALLIUM"] and s.n_bins == 2 + 24 + 4
    assert s.slices == {"BEST": slice(0, 2), "DANSS": slice(2, 26), "GALLIUM": slice(26, 30)}
    mu = s.expectation(0.2, 1.5)
    assert mu.shape == (30,)
    parts = s.split(mu)
    for n in s.names:
        np.testing.assert_array_equal(parts[n], ex.load(n).expectation(0.2, 1.5))
    assert s.expectation([0.1, 0.2], [1.0, 2.0]).shape == (2, 30)
    assert s.split(np.zeros((5, 30)))["DANSS"].shape == (5, 24)
    g = Grid(shape=(3, 3))
    assert s.expectation_grid(g).shape == (9, 30)
    assert s.observed is None  # the built-in DANSS model carries no data
    np.testing.assert_array_equal(ex.combine(["BEST", "GALLIUM"]).observed, [0.791, 0.766, 0.953, 0.812, 0.95, 0.791])
    C = s.covariance
    assert C.shape == (30, 30)
    np.testing.assert_array_equal(C[2:26, 2:26], ex.load("DANSS").covariance)
    np.testing.assert_array_equal(C[:2, 2:], 0.0)
    # groups numbered across experiments: BEST and GALLIUM have none, DANSS one
    np.testing.assert_array_equal(s.norm_groups, [-1] * 2 + [0] * 24 + [-1] * 4)
    np.testing.assert_array_equal(ex.combine(["DANSS", "NEOS"]).norm_groups, [0] * 24 + [1] * 61)
    other = ex.combine(["GALLIUM", "BEST", "DANSS"])
    assert other.definition_hash != s.definition_hash
    with pytest.raises(ValueError, match="more than once"):
        ex.combine(["BEST", "best"])
    with pytest.raises(ValueError):
        ex.combine([])
    with pytest.raises(ValueError):
        s.split(np.zeros(29))


def test_load_takes_a_toml_model_path(tmp_path):
    # the CLI's --experiments takes TOML paths; the Python API does too
    path = tmp_path / "my.toml"
    path.write_text(ex.builtin_toml("BEST"))
    e = ex.load(str(path))
    assert e.name == "BEST" and e.n_bins == ex.load("BEST").n_bins
    with pytest.raises(FileNotFoundError, match="not found"):
        ex.load(str(tmp_path / "missing.toml"))
