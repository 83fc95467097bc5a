"""Eq. 2 integration kernel against NumPy, and the Posterior object (API, I/O, plots).

Integration tolerance: 1e-12 relative. Each output is a sum of n_k non-negative terms
p_k dA_k T[k, c] (densities), so there is no cancellation; our kernel sums in
increasing k with one rounding per term, BLAS in another order: the difference is
bounded by n_k * 2^-53 (2.8e-13 for n_k = 2500, the paper's 50 x 50 y_hat grid).
"""
import json

import numpy as np
import pytest

from fcmlc import _core, reference
from fcmlc.physics import Grid
from fcmlc.posterior import Posterior, cell_areas, integrate, kde_grid, posterior_from_samples

RTOL = 1e-12


# ---- integration -----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 13])
def test_integrate_matches_numpy(batch):
    rng = np.random.default_rng(batch)
    nb, na, nc = 11, 27, 301  # remainders everywhere (4-row, 8-column micro-kernels)
    p = rng.random((batch, nb, na))
    T = rng.random((nb * na, nc))
    dA = rng.uniform(0.5, 2.0, (nb, na))
    ours = integrate(p, T, dA)
    assert ours.shape == (batch, nc)
    ref = (p.reshape(batch, -1) * dA.ravel()) @ T
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=0)
    np.testing.assert_allclose(ours, reference.integrate(p.reshape(batch, -1), T, dA.ravel()), rtol=RTOL, atol=0)


def test_integrate_shapes():
    rng = np.random.default_rng(0)
    T = rng.random((12, 7))
    dA = np.full(12, 0.1)
    assert integrate(rng.random(12), T, dA).shape == (7,)
    assert integrate(rng.random((2, 3, 12)), T, dA).shape == (2, 3, 7)
    assert integrate(rng.random((5, 3, 4)), T, dA.reshape(3, 4)).shape == (5, 7)


def test_integrate_is_bit_identical_for_any_threads_and_batching():
    rng = np.random.default_rng(1)
    p = rng.random((9, 50 * 50))
    T = rng.random((50 * 50, 1000))
    dA = np.full(2500, 1e-3)
    r1 = integrate(p, T, dA, threads=1)
    np.testing.assert_array_equal(r1, integrate(p, T, dA, threads=2))
    np.testing.assert_array_equal(r1, integrate(p, T, dA, threads=3))
    # a fit computed alone or inside any batch gives the same bits
    for i in (0, 4, 8):
        np.testing.assert_array_equal(r1[i], integrate(p[i], T, dA, threads=2))
    np.testing.assert_array_equal(r1[2:5], integrate(p[2:5], T, dA))


@pytest.mark.parametrize("pos", [(0, 0), (300, 130), (599, 299)])
def test_integrate_finds_a_bad_transition_entry_anywhere(pos):
    # k beyond the first 256-row block, columns in the 8-wide remainder, both product paths
    rng = np.random.default_rng(9)
    T = rng.random((600, 300))
    T[pos] = -1e-300
    for batch, threads in [(1, 1), (2, 2), (10, 1), (10, 2)]:
        with pytest.raises(ValueError, match=rf"transition\[{pos[0]}, {pos[1]}\]"):
            integrate(rng.random((batch, 600)), T, np.ones(600), threads=threads)


def test_deterministic_matmul_signed_values():
    rng = np.random.default_rng(2)
    for M, N, K in [(1, 1, 1), (3, 17, 5), (4, 8, 256), (9, 130, 513), (260, 9, 3)]:
        A = rng.standard_normal((M, K))
        B = rng.standard_normal((K, N))
        C = _core.matmul_deterministic(A, B, 1)
        np.testing.assert_array_equal(C, _core.matmul_deterministic(A, B, 2))
        # signed terms: compare on the scale of sum |a||b| (K roundings at most)
        scale = np.abs(A) @ np.abs(B)
        assert np.all(np.abs(C - A @ B) <= 2 * K * np.finfo(float).eps * scale)
    assert _core.gemm_isa() in ("avx2-fma", "portable")


def test_integrate_bad_input():
    T = np.ones((6, 4))
    dA = np.ones(6)
    with pytest.raises(ValueError, match=r"end with the shape of cell_area \(6,\)"):
        integrate(np.ones(5), T, dA)
    with pytest.raises(ValueError, match=r"transition must have shape \(n_yhat_cells, n_y_cells\) = \(6, n_y_cells\)"):
        integrate(np.ones(6), np.ones((5, 4)), dA)
    p = np.ones((2, 6))
    p[1, 3] = -0.5
    with pytest.raises(ValueError, match=r"p_yhat\[1, 3\] \(batch 1, y_hat cell 3\) = -0.5"):
        integrate(p, T, dA)
    bad = T.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"transition\[2, 1\] \(y_hat cell 2, y cell 1\) = nan"):
        integrate(np.ones(6), bad, dA)
    with pytest.raises(ValueError, match=r"transition\[2, 1\] .* = nan"):  # caught even unchecked
        integrate(np.ones(6), bad, dA, check_transition=False)
    bad[2, 1] = -1.0
    for batch in (0, 1, 2, 5, 7):  # streaming (< 4 rows), blocked and empty-batch paths
        with pytest.raises(ValueError, match=r"non-negative density p\(y \| y_hat\); transition\[2, 1\]"):
            integrate(np.ones((batch, 6)), bad, dA)
    integrate(np.ones(6), bad, dA, check_transition=False)  # unchecked: a negative entry passes
    big = np.full((6, 4), 1e308)
    with pytest.raises(ValueError, match="overflowed"):
        integrate(np.ones(6), big, dA)
    with pytest.raises(ValueError, match=r"cell_area\[0\] = 0"):
        integrate(np.ones(6), T, np.zeros(6))


# ---- Posterior -------------------------------------------------------------------------


def make_posterior(n=40, mu=(-1.2, 0.0), sig=(0.3, 0.4)):
    g = Grid.square(n)
    U, D = np.meshgrid(np.log10(g.ue4), np.log10(g.dm2))
    dens = np.exp(-0.5 * (((U - mu[0]) / sig[0]) ** 2 + ((D - mu[1]) / sig[1]) ** 2))
    return g, Posterior(g.ue4, g.dm2, 7.0 * dens, meta={"experiment": "toy", "truth": [0.06, 1.0]})


def test_posterior_normalisation_marginals_and_best_point():
    g, post = make_posterior()
    assert post.shape == (40, 40)
    assert post.mass.sum() == pytest.approx(1.0, abs=1e-14)
    np.testing.assert_allclose(post.density * post.cell_area, post.mass, rtol=1e-15)
    assert post.marginal_ue4().shape == (40,) and post.marginal_dm2().shape == (40,)
    assert post.marginal_ue4().sum() == pytest.approx(1.0) and post.marginal_dm2().sum() == pytest.approx(1.0)
    u, d = post.best_point()
    assert abs(np.log10(u) + 1.2) <= 0.5 * np.diff(np.log10(g.ue4))[0] + 1e-12
    assert abs(np.log10(d)) <= 0.5 * np.diff(np.log10(g.dm2))[0] + 1e-12
    # flat input with |Ue4| fastest (Grid ordering) and from_grid give the same object
    flat = Posterior.from_grid(g, post.density.ravel())
    np.testing.assert_allclose(flat.density, post.density, rtol=1e-15)
    with pytest.raises(ValueError):
        post.density[0, 0] = 1.0  # read-only


def test_excludes_null():
    _, signal = make_posterior(mu=(-1.0, 0.0), sig=(0.15, 0.3))
    assert signal.excludes_null(0.95)
    _, null_like = make_posterior(mu=(-3.5, 0.0), sig=(0.8, 0.8))
    assert not null_like.excludes_null(0.9)


def test_summary_is_json_ready():
    _, post = make_posterior()
    s = post.summary()
    json.dumps(s)
    assert set(s["levels"]) == {"0.68", "0.9", "0.95"}
    for lv, v in s["levels"].items():
        assert v["mass"] >= float(lv)
        assert v["n_cells"] == int(post.credible_region(float(lv)).sum())
    assert s["meta"]["experiment"] == "toy"


def test_summary_text_reads_the_summary():
    _, post = make_posterior()
    s, text = post.summary(), post.summary_text()
    assert str(post) == text and "{" not in text  # print(post) is the text, not a dict
    b = s["best_point"]
    assert f"sin^2(2 theta) = {b['sin2_2theta']:.3g}, dm2 = {b['dm2']:.3g} eV^2" in text
    rows = [ln.split() for ln in text.splitlines() if ln.strip().startswith(("68%", "90%", "95%"))]
    assert [r[0] for r in rows] == ["68%", "90%", "95%"]
    for r, (lv, v) in zip(rows, s["levels"].items()):
        assert int(r[1]) == v["n_cells"] and r[2] == f"{v['mass']:.3f}"
        assert r[4] == ("excluded" if v["excludes_null"] else "allowed")
        lim = post.upper_limits(float(lv), x="sin2")
        assert f"< {np.nanmin(lim):.3g} at dm2" in " ".join(r)


def test_points_on_the_outer_cell_edges_are_inside_up_to_rounding():
    # the posterior's outer edges come from 10**log10 of the centres; a chi2 grid's end point on
    # the same edge (the paper's ranges) differs from it by rounding (1e-13 here, far below
    # EDGE_TOL = 1e-9 in log10 and far above one ulp) and must still land in the edge cell
    g = Grid(shape=(25, 25))
    lu, ld = np.log10(g.ue4), np.log10(g.dm2)
    hu, hd = lu[1] - lu[0], ld[1] - ld[0]
    cu = 10 ** np.linspace(lu[0] + hu / 2, lu[-1] - hu / 2, 24)  # 24 cells spanning exactly the grid's ranges
    cd = 10 ** np.linspace(ld[0] + hd / 2, ld[-1] - hd / 2, 24)
    post = Posterior(cu, cd, np.ones((24, 24)))
    for u, d, cell in ((g.ue4[0], g.dm2[-1], (23, 0)), (g.ue4[-1] * (1 + 1e-13), g.dm2[0] * (1 - 1e-13), (0, 23))):
        assert post.credible_level_of(u, d) == post.credible_level_map()[cell]
    with pytest.raises(ValueError, match="outside the grid"):
        post.credible_level_of(g.ue4[0] * 0.999, 1.0)


def test_npz_round_trip_is_exact_and_pickle_free(tmp_path):
    _, post = make_posterior()
    path = post.to_npz(tmp_path / "fit.npz")
    back = Posterior.from_npz(path)
    for name in ("ue4", "dm2", "density", "mass", "cell_area"):
        np.testing.assert_array_equal(getattr(back, name), getattr(post, name))
    assert back.meta == post.meta
    with np.load(path, allow_pickle=False) as f:  # nothing in the file needs pickle
        assert set(f.files) == {"ue4", "dm2", "mass", "density", "header"}
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not an fcmlc posterior file"):
        Posterior.from_npz(tmp_path / "other.npz")


def test_posterior_bad_input():
    g = Grid.square(5)
    with pytest.raises(ValueError, match=r"shape \(n_dm2, n_ue4\) = \(5, 5\)"):
        Posterior(g.ue4, g.dm2, np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"density must be >= 0; density\[1, 2\]"):
        d = np.ones((5, 5))
        d[1, 2] = -1
        Posterior(g.ue4, g.dm2, d)
    with pytest.raises(ValueError, match="zero"):
        Posterior(g.ue4, g.dm2, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="strictly increasing"):
        Posterior(g.ue4[::-1], g.dm2, np.ones((5, 5)))
    with pytest.raises(ValueError, match="JSON|serializable"):
        Posterior(g.ue4, g.dm2, np.ones((5, 5)), meta={"x": object()})


def test_posterior_from_samples_is_the_kde_integrate_chain():
    rng = np.random.default_rng(3)
    yg = Grid.square(12)  # y_hat grid
    g = Grid.square(15)  # y grid
    T = rng.random((yg.n_points, g.n_points))
    samples = np.column_stack([rng.normal(-1.5, 0.2, 300), rng.normal(0.0, 0.3, 300)])
    post = posterior_from_samples(samples, yg.ue4, yg.dm2, T, g.ue4, g.dm2)
    p = kde_grid(samples, np.log10(yg.ue4), np.log10(yg.dm2))
    q = integrate(p, T, cell_areas(yg.ue4, yg.dm2)).reshape(15, 15)
    np.testing.assert_allclose(post.density, Posterior(g.ue4, g.dm2, q).density, rtol=1e-15)
    batch = posterior_from_samples(np.stack([samples, samples[::-1]]), yg.ue4, yg.dm2, T, g.ue4, g.dm2)
    assert len(batch) == 2
    np.testing.assert_allclose(batch[1].density, post.density, rtol=1e-12)


def test_plot_writes_a_png(tmp_path):
    g, post = make_posterior(n=50)
    _, other = make_posterior(n=50, mu=(-1.0, 0.2))
    wilks = post.credible_region(0.5)
    coarse = Grid.square(20)
    fc = (np.log10(coarse.ue4)[None, :] > -1.3) & (np.log10(coarse.dm2)[:, None] < 0.5)
    ax = post.plot(
        truth=(0.06, 1.0),
        overlays=[("Wilks", wilks), ("Feldman-Cousins", (fc, coarse.ue4, coarse.dm2)), ("other fit", other),
                  ("sensitivity", other.contours(0.9), {"linewidth": 3})],
        title="toy fit",
        best_point=True,
    )
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert "sin" in ax.get_xlabel() and "m^2_{41}" in ax.get_ylabel()
    out = tmp_path / "fit.png"
    ax.figure.savefig(out, dpi=60)
    assert out.exists() and out.stat().st_size > 1000
    ax2 = post.plot(x="ue4", levels=(0.9,))
    assert "U_{e4}" in ax2.get_xlabel()
    with pytest.raises(ValueError, match="differs from this grid"):
        post.plot(overlays=[("bad", np.zeros((3, 3), bool))])
    import matplotlib.pyplot as plt

    plt.close("all")


def test_edge_warnings_name_the_grid_limits_only():
    g = Grid(shape=(20, 30))
    lu, ld = np.meshgrid(np.log10(g.ue4), np.log10(g.dm2))

    def post(cu, cd, w=0.15):
        return Posterior(g.ue4, g.dm2, np.exp(-0.5 * ((lu - cu) ** 2 + (ld - cd) ** 2) / w ** 2))

    # a peak in the middle of the grid: no warning
    assert post(-1.5, 0.0).edge_warnings() == []
    assert post(-1.5, 0.0).summary()["edge_warnings"] == []
    # a peak at the high-dm2 edge: best point and regions flagged, naming that edge
    w = post(-1.5, 1.0).edge_warnings()
    assert w[0] == "best point on the grid's high dm2 edge"
    assert all("high dm2" in s for s in w) and len(w) == 4
    # a region reaching only the no-oscillation (low |Ue4|) limit is the usual exclusion shape
    flat = Posterior(g.ue4, g.dm2, np.exp(-0.5 * ((lu + 3.0) / 0.3) ** 2 - 0.5 * (ld / 0.2) ** 2))
    assert flat.edge_warnings() == []
