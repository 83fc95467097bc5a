"""Oscillation kernels against the NumPy reference and analytic limits."""
import numpy as np
import pytest
import scipy.special

import fcmlc
from fcmlc import _core, reference
from fcmlc.physics import Grid, sin2_2theta, ue4_from_sin2_2theta


def test_sine_integral_matches_scipy():
    x = np.concatenate([np.linspace(0, 4, 41), np.geomspace(4.0001, 1e5, 60)])
    ours = np.array([_core.sine_integral(v) for v in x])
    # Series below 4 (alternating, terms up to ~3.5) and continued fraction above: a few ulp
    # of values up to ~1.85.
    np.testing.assert_allclose(ours, scipy.special.sici(x)[0], rtol=0, atol=2e-15)


def random_boxes(rng, n):
    out = []
    for _ in range(n):
        dm2 = 10 ** rng.uniform(-2, 1.3)
        L1 = rng.uniform(0.5, 300)
        dL = rng.choice([0, 1e-6, 1e-3, 0.1, 1, 5]) * rng.uniform()
        E1 = rng.uniform(0.4, 9)
        dE = rng.choice([0, 1e-6, 1e-3, 0.1, 1, 4]) * rng.uniform()
        a = 2 * fcmlc.physics.OSC_K * dm2
        span_L = a * dL / E1
        span_E = a * (L1 + dL) * (1 / E1 - 1 / (E1 + dE))
        # The brute-force reference is a tensor rule with ~4 nodes per radian in each
        # direction; keep its node count (memory, time) bounded. Wider boxes are covered by
        # the fast-oscillation limit tests below.
        if (4 * span_L + 24) * (4 * span_E + 24) > 1e6:
            continue
        out.append((dm2, L1, L1 + dL, E1, E1 + dE))
    return np.array(out)


def test_box_average_matches_bruteforce_quadrature():
    rng = np.random.default_rng(12)
    boxes = random_boxes(rng, 300)
    ours = _core.box_mean_sin2_elementwise(*[np.ascontiguousarray(boxes[:, i]) for i in range(5)])
    ref = np.array([reference.box_mean_sin2(*b) for b in boxes])
    # The reference resolves the phase with >= 4 Gauss-Legendre nodes per radian (error
    # < 1e-12); the closed forms are good to ~1e-11 in the worst (widest-phase) boxes.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


def test_no_oscillation_gives_one():
    L = np.array([5.0, 10.0]); E = np.array([2.0, 6.0])
    assert np.all(fcmlc.averaged_survival_probability(0.0, 1.0, L, L + 1, E, E + 0.5) == 1.0)
    assert np.all(fcmlc.averaged_survival_probability(0.3, 0.0, L, L + 1, E, E + 0.5) == 1.0)
    assert np.all(fcmlc.survival_probability(0.0, 3.0, L, E) == 1.0)


@pytest.mark.parametrize("dm2", [300.0, 3000.0, 3e4])
def test_fast_oscillation_averages_to_half_amplitude(dm2):
    # Over a bin many oscillation lengths wide, <sin^2> -> 1/2 with corrections
    # O(1/phase span): P -> 1 - sin^2(2 theta)/2.
    ue4 = 0.3
    p = fcmlc.averaged_survival_probability(ue4, dm2, 9.0, 11.0, 3.0, 3.5)
    span = 2 * fcmlc.physics.OSC_K * dm2 * 2.0 / 3.5
    assert abs(p - (1 - sin2_2theta(ue4) / 2)) < 2.0 / span


def test_point_probability_is_wrong_in_the_fast_regime_and_average_is_right():
    # The bin-centre value oscillates between 1 - s2 and 1; the average does not.
    ue4, L, E = 0.2, 10.0, 3.0
    dm2 = np.linspace(200, 210, 50)
    centre = fcmlc.survival_probability(ue4, dm2, L, E)
    avg = fcmlc.averaged_survival_probability(ue4, dm2, L - 0.5, L + 0.5, E - 0.2, E + 0.2)
    target = 1 - sin2_2theta(ue4) / 2
    assert np.ptp(centre) > 0.5 * sin2_2theta(ue4)
    assert np.max(np.abs(avg - target)) < 0.01 * sin2_2theta(ue4)


def test_point_limit_of_box_average():
    p_box = fcmlc.averaged_survival_probability(0.2, 1.5, 10.0, 10.0, 3.0, 3.0)
    assert p_box == pytest.approx(fcmlc.survival_probability(0.2, 1.5, 10.0, 3.0), abs=1e-15)
    tiny = fcmlc.averaged_survival_probability(0.2, 1.5, 10.0, 10.0 + 1e-7, 3.0, 3.0 + 1e-7)
    # A box of side h averages to the value at its centre up to O(h^2) ~ 1e-14 here (the
    # corner value differs at O(h) ~ 1e-9, so compare with the centre).
    centre = fcmlc.survival_probability(0.2, 1.5, 10.0 + 0.5e-7, 3.0 + 0.5e-7)
    assert tiny == pytest.approx(centre, abs=1e-12)


def test_broadcasting_shapes():
    p = fcmlc.averaged_survival_probability(np.array([0.1, 0.2])[:, None], 1.0, 9.0, 10.0,
                                            np.array([2.0, 3.0, 4.0]), np.array([2.5, 3.5, 4.5]))
    assert p.shape == (2, 3)


def test_bin_deficit_matches_reference():
    rng = np.random.default_rng(3)
    boxes = np.column_stack([np.full(12, 9.0), np.full(12, 10.0), np.linspace(2, 7, 12), np.linspace(2.4, 7.4, 12)])
    W = rng.uniform(0, 1, size=(5, 12)) * (rng.uniform(size=(5, 12)) < 0.5)
    indptr = np.concatenate([[0], np.cumsum((W != 0).sum(1))]).astype(np.int64)
    indices = np.concatenate([np.flatnonzero(r) for r in W]).astype(np.int64)
    weights = W[W != 0]
    dm2 = np.array([0.01, 0.3, 2.0, 9.0])
    ours = _core.bin_deficit(dm2, boxes, indptr, indices, weights)
    np.testing.assert_allclose(ours, reference.bin_deficit(dm2, boxes, W), rtol=0, atol=1e-11)
    assert np.array_equal(ours, _core.bin_deficit(dm2, boxes, indptr, indices, weights, threads=1))


@pytest.mark.parametrize("bad, msg", [
    (dict(L_lo=-1.0), "L_lo"), (dict(E_lo=0.0), "E_lo"), (dict(E_hi=1.0), "E_lo <= E_hi"),
])
def test_bad_boxes_are_rejected(bad, msg):
    args = dict(L_lo=1.0, L_hi=2.0, E_lo=2.0, E_hi=3.0)
    args.update(bad)
    with pytest.raises(ValueError, match=msg):
        fcmlc.averaged_survival_probability(0.1, 1.0, **args)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="Ue4"):
        fcmlc.survival_probability(1.5, 1.0, 10, 3)
    with pytest.raises(ValueError, match="dm2"):
        fcmlc.survival_probability(0.1, -1.0, 10, 3)
    with pytest.raises(ValueError, match="finite"):
        fcmlc.averaged_survival_probability(np.nan, 1.0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="boxes"):
        _core.box_mean_sin2_grid(np.array([1.0]), np.zeros((3, 3)))


def test_grid_paper_and_conversions():
    g = Grid.paper()
    assert g.shape == (101, 101) and g.n_points == 10201
    assert g.ue4[0] == pytest.approx(1e-3) and g.ue4[-1] == pytest.approx(2 ** -0.5)
    assert g.dm2[0] == pytest.approx(0.01) and g.dm2[-1] == pytest.approx(10.0)
    pts = g.points()
    assert pts.shape == (10201, 2) and pts[1, 0] > pts[0, 0] and pts[1, 1] == pts[0, 1]
    iu, idm = g.unravel(g.index(7, 3))
    assert (iu, idm) == (7, 3)
    np.testing.assert_allclose(ue4_from_sin2_2theta(sin2_2theta(g.ue4)), g.ue4, rtol=1e-7)
    assert Grid.from_dict(g.to_dict()) == g
    with pytest.raises(ValueError):
        Grid(shape=(1, 5))
    with pytest.raises(ValueError):
        Grid(ue4_range=(0.5, 0.1))


def test_grid_shape_must_be_integers():
    # a float shape used to be truncated silently (3.5 -> 3)
    for bad in [(3.5, 3), (3, 3.0), (True, 3), (1, 3)]:
        with pytest.raises(ValueError, match="two integers >= 2"):
            Grid(shape=bad)
    assert Grid(shape=(np.int64(3), 4)).shape == (3, 4)
