"""Tests of fcmlc.validation (coverage, compare, MSE maps) and the `coverage` / `compare` commands.

The coverage machinery is checked against cases whose answer is known exactly:

* an *exact* Bayesian posterior (the true likelihood of a Gaussian experiment, prior uniform
  over the grid points, truths drawn from that prior) is calibrated: the probability that the
  truth lies in the HPD region R_L(x) equals E_x[posterior mass of R_L(x)], which we estimate
  from the same trials; the observed coverage must agree within binomial error;
* Feldman-Cousins regions with truths on the FC grid cover at ceil(L n)/(n + 1) ~ L by
  construction (n toys), up to binomial error;
* identical regions have IoU 1, and a half-plane against a half-plane has a known IoU.

Statistical tolerances: 4 binomial standard deviations of the coverage fraction (a correct
implementation fails with probability ~6e-5 per comparison; the seeds are fixed, so the tests
are deterministic).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import write_untrained_best_model
from fcmlc import experiments as ex
from fcmlc import regions
from fcmlc.frequentist import Chi2Model, chi2_scan, feldman_cousins, wilks_threshold
from fcmlc.models import CellGrid
from fcmlc.physics import Grid
from fcmlc.simulation import realizations
from fcmlc.validation import (CoverageResult, chi2_at, common_raster, compare, coverage, regrid_cells, regrid_points,
                              truth_credible_levels)

# ---------------------------------------------------------------------------------------------
# helpers


def cells_centred_on(grid: Grid) -> CellGrid:
    """Cells whose centres are the grid's points (the grid's extent plus half a cell each side)."""
    lu, ld = np.log10(grid.ue4), np.log10(grid.dm2)
    hu, hd = lu[1] - lu[0], ld[1] - ld[0]
    return CellGrid((10 ** (lu[0] - hu / 2), 10 ** (lu[-1] + hu / 2)), (10 ** (ld[0] - hd / 2), 10 ** (ld[-1] + hd / 2)),
                    grid.shape)


class ExactPosterior:
    """A stand-in for an FCMLC model returning the exact posterior of a covariance-type
    experiment: likelihood N(x; mu(p), generation covariance) (the distribution realizations
    are drawn from), prior uniform over the points of ``grid``, one posterior cell per point."""

    def __init__(self, name: str, grid: Grid):
        self.exp = ex.load(name)
        assert self.exp.kind == "covariance"
        self.experiments = [name]
        self.n_features = self.exp.n_bins
        self.grid = grid
        self.y_grid = cells_centred_on(grid)
        L = np.linalg.cholesky(self.exp.covariance)  # the simulator: x = mu + F z (free normalisations)
        self.W = np.linalg.inv(L)
        self.wmu = self.exp.expectation(*grid.points().T) @ self.W.T  # (n_points, n_bins)
        self.densities = []

    def posterior_density(self, X, n_samples=1000, seed=0, threads=None):
        wx = np.atleast_2d(X) @ self.W.T
        chi2 = (wx ** 2).sum(1)[:, None] - 2 * wx @ self.wmu.T + (self.wmu ** 2).sum(1)[None, :]
        logp = -0.5 * chi2
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        d = p.reshape(len(p), self.grid.n_dm2, self.grid.n_ue4)
        self.densities.append(d)
        return d


def ranges_only(name: str, grid: Grid):
    """A model stand-in for the frequentist methods only (no posterior is ever requested)."""
    def never(*a, **k):
        raise AssertionError("posterior_density must not be called")

    e = ex.load(name)
    return SimpleNamespace(experiments=[name], n_features=e.n_bins, y_grid=cells_centred_on(grid),
                           posterior_density=never)


def binomial_sd(p, n):
    return math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------------------------------------
# locating the truth


def test_truth_credible_levels_match_credible_level_map():
    rng = np.random.default_rng(1)
    dens = rng.gamma(0.5, size=(6, 7, 9))
    eu, ed = np.linspace(-3, 0, 10), np.linspace(-2, 1, 8)
    lu = rng.uniform(-3, 0, 6)
    ld = rng.uniform(-2, 1, 6)
    got = truth_credible_levels(dens, eu, ed, 10 ** lu, 10 ** ld)
    for i in range(6):
        iu = np.searchsorted(eu, lu[i], side="right") - 1
        idm = np.searchsorted(ed, ld[i], side="right") - 1
        want = regions.credible_level_map(dens[i])[idm, iu]
        assert got[i] == pytest.approx(want, abs=1e-12)
        # membership of the HPD region is the same decision
        for L in (0.3, 0.68, 0.9):
            assert regions.hpd_region(dens[i], L)[idm, iu] == (got[i] < L)


def test_truth_on_a_cell_corner_takes_the_smallest_touching_level():
    dens = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # rows dm2
    eu, ed = np.array([0.0, 1.0, 2.0]) - 3, np.array([0.0, 1.0, 2.0]) - 2
    corner = (np.array([10 ** -2.0]), np.array([10 ** -1.0]))  # the common corner of all four cells
    closed = truth_credible_levels(dens, eu, ed, *corner, closed=True)
    assert closed[0] == 0.0  # the densest cell (4) touches the corner
    inner = truth_credible_levels(dens, eu, ed, np.array([10 ** -2.5]), np.array([10 ** -1.5]), closed=True)
    assert inner[0] == pytest.approx(0.9)  # mass above the density-1 cell: (2 + 3 + 4) / 10


def test_chi2_at_matches_the_grid_scan_at_grid_points():
    g = Grid(shape=(9, 8))
    cm = Chi2Model(["STEREO", "BEST"], g)
    pts = g.points()
    pid = np.array([0, 5, 17, 40, 71])
    x = realizations(ex.combine([ex.load("STEREO"), ex.load("BEST")]), pts[pid, 0], pts[pid, 1], 1, seed=4)[:, 0]
    scan = chi2_scan(cm, x)
    want = scan.chi2.reshape(len(pid), -1)[np.arange(len(pid)), pid]
    got = chi2_at(cm, x, pts[pid, 0], pts[pid, 1])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# coverage


@pytest.fixture(scope="module")
def exact_run():
    grid = Grid(shape=(11, 11))
    model = ExactPosterior("STEREO", grid)
    res = coverage(model, trials=2000, levels=(0.5, 0.68, 0.9, 0.95), seed=3, methods=("fcmlc", "wilks"),
                   truths="grid", grid=grid, n_samples=10)
    return model, grid, res


def test_exact_posterior_is_calibrated(exact_run):
    """P(truth in R_L) = E[posterior mass of R_L] for the exact posterior and truths from its prior."""
    model, grid, res = exact_run
    dens = np.concatenate(model.densities)
    assert dens.shape[0] == res.n_trials
    for i, L in enumerate(res.levels):
        expected = np.mean([d.ravel()[regions.hpd_region(d, L).ravel()].sum() / d.sum() for d in dens])
        assert L <= expected < L + 0.1  # whole cells: the region overshoots L by less than one cell
        obs = res.fraction["fcmlc"][i]
        assert abs(obs - expected) < 4 * binomial_sd(expected, res.n_trials), (L, obs, expected)
    # the expected-coverage curve obeys the same identity at every nominal level
    for nu in (0.2, 0.4, 0.6, 0.8):
        j = int(np.argmin(np.abs(res.curve_nominal - nu)))
        nu = res.curve_nominal[j]
        expected = np.mean([d.ravel()[(regions.credible_level_map(d) < nu).ravel()].sum() / d.sum() for d in dens])
        assert abs(res.curve["fcmlc"][j] - expected) < 4 * binomial_sd(expected, res.n_trials)


def test_coverage_decisions_are_the_hpd_and_wilks_regions(exact_run):
    model, grid, res = exact_run
    dens = np.concatenate(model.densities)
    pid = np.array([grid.nearest(u, d) for u, d in zip(res.truth_ue4, res.truth_dm2)])
    iu, idm = grid.unravel(pid)
    for i, L in enumerate(res.levels):
        inside = np.array([regions.hpd_region(dens[k], L)[idm[k], iu[k]] for k in range(res.n_trials)])
        np.testing.assert_array_equal(res.covered["fcmlc"][:, i], inside)
    # Wilks: Delta-chi2 at the truth's grid point from an independent scan of the same realizations
    X = realizations([model.exp], res.truth_ue4, res.truth_dm2, 1, seed=3,
                     point_ids=(1 << 40) + np.arange(res.n_trials))[:, 0]
    scan = chi2_scan(Chi2Model(["STEREO"], grid), X)
    d = scan.delta_chi2.reshape(res.n_trials, -1)[np.arange(res.n_trials), pid]
    for i, L in enumerate(res.levels):
        np.testing.assert_array_equal(res.covered["wilks"][:, i], d <= wilks_threshold(L))


def test_coverage_result_properties_and_io(exact_run, tmp_path):
    _, grid, res = exact_run
    for m in res.methods:
        f = res.fraction[m]
        lo, hi = res.interval[m]
        assert np.all((0 <= lo) & (lo <= f) & (f <= hi) & (hi <= 1))
        c = res.curve[m]
        assert np.all(np.diff(c) >= 0)
    # FCMLC: covered at nominal nu when the mass above the truth's cell is < nu (never at 0);
    # Wilks: when chi2_2 CDF(Delta-chi2) <= nu, so at nu = 0 exactly when the truth is the grid minimum
    assert res.curve["fcmlc"][0] == 0.0 and res.curve["fcmlc"][-1] >= res.fraction["fcmlc"][-1]
    assert res.curve["wilks"][0] == np.mean(res.statistic["wilks"] == 0.0) > 0 and res.curve["wilks"][-1] == 1.0
    s = res.summary()
    assert s["coverage"]["fcmlc"]["0.9"]["covered"] == int(res.covered["fcmlc"][:, 2].sum())
    json.dumps(s)
    back = CoverageResult.load(res.save(tmp_path / "cov"))
    assert back.levels == res.levels and back.methods == res.methods and back.truths == "grid"
    for m in res.methods:
        np.testing.assert_array_equal(back.covered[m], res.covered[m])
        np.testing.assert_array_equal(back.statistic[m], res.statistic[m])
    np.testing.assert_array_equal(back.truth_ue4, res.truth_ue4)
    res.plot().figure.savefig(tmp_path / "cov.png")
    with pytest.raises(ValueError, match="not a coverage result"):
        np.savez(tmp_path / "other.npz", a=np.zeros(2))
        CoverageResult.load(tmp_path / "other.npz")


def test_coverage_is_reproducible_and_seeded():
    grid = Grid(shape=(7, 7))
    a = coverage(ExactPosterior("STEREO", grid), trials=60, seed=5, grid=grid, n_samples=5)
    b = coverage(ExactPosterior("STEREO", grid), trials=60, seed=5, grid=grid, n_samples=5)
    c = coverage(ExactPosterior("STEREO", grid), trials=60, seed=6, grid=grid, n_samples=5)
    assert a.truths == "continuous" and a.methods == ("fcmlc", "exact", "wilks")
    np.testing.assert_array_equal(a.truth_ue4, b.truth_ue4)
    for m in a.methods:
        np.testing.assert_array_equal(a.statistic[m], b.statistic[m])
    assert not np.array_equal(a.truth_ue4, c.truth_ue4)
    # continuous truths fill the whole log range, off the grid points
    lu = np.log10(a.truth_ue4)
    assert np.log10(grid.ue4_range[0]) <= lu.min() and lu.max() <= np.log10(grid.ue4_range[1])
    assert not np.any(np.isclose(lu[:, None], np.log10(grid.ue4)[None, :], atol=1e-9, rtol=0))


@pytest.fixture(scope="module")
def best_fc():
    grid = Grid(shape=(9, 9))
    fc = feldman_cousins(["BEST"], grid, n_toys=400, seed=11, levels=(0.68, 0.9, 0.95), progress=False)
    return grid, fc


def test_feldman_cousins_coverage_is_nominal_for_truths_on_its_grid(best_fc):
    """BEST's pulls make its Delta-chi2 non-chi2; FC with truths on its grid still covers at
    ceil(L n)/(n + 1) (n toys) up to binomial error plus the critical values' own toy noise."""
    grid, fc = best_fc
    n_trials = 3000
    res = coverage(ranges_only("BEST", grid), trials=n_trials, seed=2, fc=fc, methods=("wilks", "fc"), truths="grid")
    assert res.methods == ("wilks", "fc")
    for i, L in enumerate(res.levels):
        target = math.ceil(L * fc.n_toys) / (fc.n_toys + 1)
        sd = math.hypot(binomial_sd(target, n_trials), binomial_sd(target, fc.n_toys * grid.n_points))
        assert abs(res.fraction["fc"][i] - target) < 4 * sd, (L, res.fraction["fc"][i])
    # the FC decision is Delta-chi2 <= the truth point's critical value
    pid = np.array([grid.nearest(u, d) for u, d in zip(res.truth_ue4, res.truth_dm2)])
    for i, L in enumerate(res.levels):
        np.testing.assert_array_equal(res.covered["fc"][:, i],
                                      res.statistic["fc"] <= fc.critical_value(L).ravel()[pid])


def test_coverage_rejects_bad_input(best_fc):
    grid, fc = best_fc
    m = ranges_only("BEST", grid)
    with pytest.raises(ValueError, match="trials"):
        coverage(m, trials=0, methods=("wilks",))
    with pytest.raises(ValueError, match="levels"):
        coverage(m, trials=5, levels=(0.9, 1.5), methods=("wilks",))
    with pytest.raises(ValueError, match="needs a Feldman-Cousins result"):
        coverage(m, trials=5, methods=("fc",))
    with pytest.raises(ValueError, match="methods"):
        coverage(m, trials=5, methods=("bayes",))
    with pytest.raises(ValueError, match="truths"):
        coverage(m, trials=5, methods=("wilks",), truths="random")
    with pytest.raises(ValueError, match="not computed"):
        coverage(m, trials=5, fc=fc, levels=(0.99,), methods=("fc",))
    with pytest.raises(ValueError, match="is for"):
        coverage(ranges_only("STEREO", grid), trials=5, fc=fc, methods=("fc",))
    with pytest.raises(ValueError, match="outside the model's posterior grid"):
        coverage(m, trials=5, methods=("wilks",), grid=Grid((1e-4, 0.5), (1e-2, 10.0), (9, 9)))
    half = dataclasses.replace(fc, done=np.zeros_like(fc.done))
    with pytest.raises(ValueError, match="incomplete"):
        coverage(m, trials=5, fc=half, methods=("fc",))


def test_validation_checks_follow_the_common_rules(best_fc, tmp_path):
    """Seeds follow the one rule of fcmlc._checks ([0, 2^64)); compare and coverage share one
    Feldman-Cousins compatibility check; a saved coverage file leaves no temporary behind."""
    from fcmlc.exceptions import IncompatibleError

    grid, fc = best_fc
    m = ranges_only("BEST", grid)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^64\)"):
        coverage(m, trials=5, methods=("wilks",), grid=grid, seed=2 ** 64)
    with pytest.raises(ValueError, match="seed"):
        coverage(m, trials=5, methods=("wilks",), grid=grid, seed=-1)
    res = coverage(m, trials=5, methods=("wilks",), grid=grid, seed=2 ** 64 - 1)
    assert res.meta["seed"] == 2 ** 64 - 1
    other = dataclasses.replace(fc, definition_hashes=tuple("x" * 16 for _ in fc.definition_hashes))
    x = np.zeros(ex.load("BEST").n_bins)
    for call in (lambda: coverage(m, trials=5, fc=other, methods=("fc",)), lambda: compare(m, x, fc=other)):
        with pytest.raises(IncompatibleError, match="other definitions of BEST"):
            call()
    with pytest.raises(IncompatibleError, match="is for"):
        compare(ranges_only("STEREO", grid), np.zeros(ex.load("STEREO").n_bins), fc=fc)
    path = res.save(tmp_path / "cov.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cov.npz"]
    assert CoverageResult.load(path).meta["seed"] == 2 ** 64 - 1


# ---------------------------------------------------------------------------------------------
# compare


def test_common_raster_iou_known_answer():
    grid = Grid(shape=(15, 15))  # points at the ends of the ranges
    cells = CellGrid.over(grid, (14, 14))  # every point on a cell corner (the default layout)
    ru, rd, exact = common_raster(cells.log_ue4_edges, cells.log_dm2_edges, grid)
    assert exact and ru.size - 1 == 28
    a = np.zeros((14, 14), bool)
    a[:, :7] = True  # left half of the |Ue4| range
    b = np.zeros((15, 15), bool)
    b[:, :7] = True  # points 0..6: up to halfway between points 6 and 7 = 6.5 / 14 of the range
    A = regrid_cells(a, cells.log_ue4_edges, cells.log_dm2_edges, ru, rd)
    B = regrid_points(b, grid, ru, rd)
    assert regions.iou(A, A) == 1.0
    assert regions.iou(A, B) == pytest.approx(6.5 / 7, abs=1e-12)
    assert A.mean() == pytest.approx(0.5, abs=1e-12)


def test_compare_identical_regions_and_outputs(best_fc, tmp_path):
    grid = Grid(shape=(9, 9))
    model = ExactPosterior("STEREO", grid)
    fc0 = feldman_cousins(["STEREO"], grid, n_toys=50, seed=1, levels=(0.9, 0.95), progress=False)
    # an FC result whose critical values are Wilks' thresholds gives Wilks' regions exactly
    crit = np.stack([np.full((9, 9), wilks_threshold(L)) for L in fc0.levels])
    fc = dataclasses.replace(fc0, critical=crit)
    x = realizations([model.exp], [0.2], [1.5], 1, seed=9)[0, 0]
    res = compare(model, x, fc=fc, levels=(0.9, 0.95), truth=(0.2, 1.5), out=tmp_path / "cmp")
    for L in (0.9, 0.95):
        assert res.iou[L]["wilks-fc"] == 1.0
        np.testing.assert_array_equal(res.regions["wilks"][L], res.regions["fc"][L])
        np.testing.assert_array_equal(res.regions["fcmlc"][L], res.posterior.credible_region(L))
        assert 0.0 <= res.iou[L]["fcmlc-wilks"] <= 1.0
    assert res.meta["raster"]["exact"]  # cells centred on the points: all edges are raster edges
    # the exact posterior (normalisations integrated out) is the fourth method, on the posterior's cells
    assert set(res.regions) == {"fcmlc", "exact", "wilks", "fc"} and "fcmlc-exact" in res.iou[0.9]
    assert 0.0 <= res.meta["fcmlc_vs_exact"]["total_variation"] <= 1.0
    assert any(lab.startswith("exact") for lab in res.plot().get_legend_handles_labels()[1])
    s = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert s["iou"]["0.9"]["wilks-fc"] == 1.0 and s["truth"] == {"ue4": 0.2, "dm2": 1.5}
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    # the figure marks the chi2 best fit of the same data (inside the axes) beside the FCMLC best point
    ax = res.plot()
    labels = ax.get_legend_handles_labels()[1]
    assert "χ² best fit" in labels and "best point" in labels
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "χ² best fit"]
    xs, ys = line.get_data()
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert x0 <= xs[0] <= x1 and y0 <= ys[0] <= y1
    with pytest.raises(ValueError, match="data vector of 126"):
        compare(model, x[:-1], fc=fc)
    with pytest.raises(ValueError, match="not in the Feldman-Cousins result"):
        compare(model, x, fc=fc, levels=(0.68,))


# ---------------------------------------------------------------------------------------------
# a saved FCMLC model: MSE maps and the command line


@pytest.fixture(scope="module")
def best_model_dir(tmp_path_factory):
    """conftest.write_untrained_best_model: (directory, grid)."""
    return write_untrained_best_model(tmp_path_factory.mktemp("model") / "best")


def test_mse_maps_against_direct_computation(best_model_dir, tmp_path):
    from fcmlc.dataset import open_dataset
    from fcmlc.models import FCMLC
    from fcmlc.simulation import simulate
    from fcmlc.validation import mse_maps

    path, grid = best_model_dir
    model = FCMLC.load(path, device="cpu")
    ds_path = simulate(["BEST"], grid, n_per_point=10, seed=1, out=tmp_path / "best.h5", progress=False)
    maps = mse_maps(model, ds_path, bins=(3, 3), n_samples=20, seed=2, batch=10 ** 6)
    with open_dataset(ds_path) as ds:
        for split, name in (("test_interpolation", "interpolation"), ("test_random", "random")):
            idx = ds.split_indices(split)
            assert maps.maps[name]["count"].sum() == idx.size
            y = np.log10(ds.targets(idx))
            seed0 = int(np.random.SeedSequence([2, 0]).generate_state(1)[0])
            pred = model.regressor.predict_mean(ds.features(idx).astype(float), 20, seed=seed0)
            se = (pred - y) ** 2
            assert maps.overall[name] == pytest.approx(se.mean(), rel=1e-12)
            # bin (0, 0): lowest third of both log ranges (grid points 0..2 of 9 on each axis)
            sel = (y[:, 0] < np.log10(grid.ue4[3]) - 1e-9) & (y[:, 1] < np.log10(grid.dm2[3]) - 1e-9)
            if sel.any():
                assert maps.maps[name]["mse"][0, 0] == pytest.approx(se[sel].mean(), rel=1e-12)
                assert maps.maps[name]["mse_ue4"][0, 0] == pytest.approx(se[sel, 0].mean(), rel=1e-12)
    per_point = mse_maps(model, ds_path, bins=None, n_samples=20, variables="standardised")
    assert per_point.maps["random"]["mse"].shape == (9, 9)
    per_point.plot().savefig(tmp_path / "mse.png")
    with pytest.raises(ValueError, match="variables"):
        mse_maps(model, ds_path, variables="linear")


def _run_cli(argv):
    from fcmlc.cli import validation as cli_validation

    parser = argparse.ArgumentParser(prog="fcmlc")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_validation.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_coverage_and_compare_end_to_end(best_model_dir, tmp_path, capsys):
    path, grid = best_model_dir
    fc_path = tmp_path / "fc.h5"
    feldman_cousins(["BEST"], grid, n_toys=100, seed=4, levels=(0.68, 0.9, 0.95), out=fc_path, progress=False)
    out = tmp_path / "cov"
    assert _run_cli(["coverage", str(path), "--trials", "300", "-o", str(out), "--fc", str(fc_path), "--seed", "1",
                     "--threads", "1", "--samples", "50", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "fcmlc" in text and "wilks" in text and "fc " in text
    res = CoverageResult.load(out / "coverage.npz")
    assert res.n_trials == 300 and res.methods == ("fcmlc", "exact", "wilks", "fc")
    summary = json.loads((out / "coverage.json").read_text())
    assert summary["coverage"]["fc"]["0.9"]["observed"] == pytest.approx(res.fraction["fc"][1])
    assert (out / "coverage.png").stat().st_size > 0

    cmp_out = tmp_path / "cmp"
    assert _run_cli(["compare", str(path), "--fc", str(fc_path), "--asimov", "0.3", "2.0", "--seed", "5",
                     "-o", str(cmp_out)]) == 0
    assert "IoU(wilks-fc)" in capsys.readouterr().out
    s = json.loads((cmp_out / "comparison.json").read_text())
    assert set(s["iou"]) == {"0.9", "0.95"} and "realization" in s["input"]

    # an earlier run's outputs are refused before any trial runs, unless --overwrite
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="already holds coverage.npz.*--overwrite"):
        _run_cli(["coverage", str(path), "--trials", "5", "-o", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="levels"):
        _run_cli(["coverage", str(path), "--trials", "5", "-o", str(fresh), "--levels", "0.9", "1.2"])
    with pytest.raises(ValueError, match="--seed only applies"):
        _run_cli(["compare", str(path), "--observed", "--seed", "3", "-o", str(fresh)])
    with pytest.raises(ValueError, match="--trials"):
        _run_cli(["coverage", str(path), "--trials", "0", "-o", str(fresh)])
    assert not fresh.exists()  # nothing written, not even the directory


class ExactModelStandIn:
    """An FCMLC stand-in whose posterior *is* fcmlc.exact's (same cells): the coverage check's
    exact method must then agree with it trial by trial."""

    def __init__(self, names, grid: Grid):
        from fcmlc.exact import ExactModel

        self.experiments = list(names)
        self.exact = ExactModel(names, grid)
        self.n_features = self.exact.n_bins
        self.y_grid = cells_centred_on(grid)

    def posterior_density(self, X, n_samples=1000, seed=0, threads=None):
        return np.exp(self.exact.log_posterior(np.atleast_2d(X)))


def test_coverage_scores_fcmlc_against_the_exact_posterior():
    grid = Grid(ue4_range=(0.02, 0.7), dm2_range=(0.3, 10.0), shape=(9, 8))
    res = coverage(ExactModelStandIn(["NEOS", "BEST"], grid), trials=80, seed=2, grid=grid, truths="grid",
                   n_samples=5)
    assert res.methods == ("fcmlc", "exact", "wilks")
    np.testing.assert_allclose(res.statistic["exact"], res.statistic["fcmlc"], atol=1e-12)
    d = res.meta["fcmlc_vs_exact"]
    assert d["n_trials"] == 80 and d["total_variation"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert all(v == pytest.approx(1.0) for v in d["iou_mean"].values())
    # a posterior that ignores the data is far from the exact one
    class Flat(ExactModelStandIn):
        def posterior_density(self, X, n_samples=1000, seed=0, threads=None):
            return np.ones((len(np.atleast_2d(X)), grid.n_dm2, grid.n_ue4))

    far = coverage(Flat(["NEOS", "BEST"], grid), trials=40, seed=2, grid=grid, truths="grid", n_samples=5,
                   methods=("fcmlc", "exact"))
    assert 0.3 < far.meta["fcmlc_vs_exact"]["total_variation"]["mean"] <= 1.0


def test_every_marker_of_a_comparison_figure_lies_inside_its_axes():
    # the report's Figs. 3 and 5 are Comparison plots: a null-like truth (the grid's lowest |Ue4|,
    # sin^2 2theta = 4e-6) and best points on the grid's edge must still show inside the axes
    grid = Grid(shape=(9, 9))
    model = ExactPosterior("STEREO", grid)
    x = realizations([model.exp], [grid.ue4[0]], [1.0], 1, seed=9)[0, 0]
    yg = model.y_grid  # the posterior's cells: truths on their outer edges, beyond the centres
    for truth in ((yg.ue4_range[0], 1.0), (grid.ue4[-1], yg.dm2_range[1])):
        ax = compare(model, x, levels=(0.9, 0.95), truth=truth, grid=grid, exact=False).plot()
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        markers = [ln for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "", " ")]
        assert {ln.get_label() for ln in markers} >= {"truth", "best point", "χ² best fit"}
        for ln in markers:
            xs, ys = ln.get_data()
            assert np.all((x0 <= np.asarray(xs)) & (np.asarray(xs) <= x1)), (ln.get_label(), xs, (x0, x1))
            assert np.all((y0 <= np.asarray(ys)) & (np.asarray(ys) <= y1)), (ln.get_label(), ys, (y0, y1))
