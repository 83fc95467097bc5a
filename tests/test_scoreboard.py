"""The estimator scoreboard (fcmlc.validation.scoreboard, `fcmlc benchmark-estimators`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_untrained_best_model

from fcmlc import experiments as ex
from fcmlc.exact import ExactModel, grid_of_centres
from fcmlc.exceptions import IncompatibleError
from fcmlc.models.flow import CellGrid
from fcmlc.physics import Grid
from fcmlc.posterior import Posterior
from fcmlc.validation.coverage_check import KL_MASS_FLOOR, _distances
from fcmlc.validation.scoreboard import Scoreboard, score, scoreboard


class ExactAsModel:
    """The exact posterior on a model's cells, offered through the estimator interface: a model
    that IS the reference. ``blur`` > 0 flattens it (density ** (1 - blur)): a worse estimator."""

    estimator = "exact-stand-in"

    def __init__(self, name: str, blur: float = 0.0):
        self.experiments = [name]
        self.n_features = ex.load(name).n_bins
        grid = Grid(shape=(9, 9))
        self.y_grid = CellGrid.over(grid, (12, 12))
        self.info = {"dataset": {"grid": grid.to_dict()}, "training": {"total_seconds": 1.5}}
        self.exact = ExactModel([ex.load(name)], grid_of_centres(self.y_grid.ue4_centres, self.y_grid.dm2_centres))
        self.blur = blur

    def posterior_density(self, X, n_samples=1000, seed=0, threads=None):
        lp = self.exact.log_posterior(np.atleast_2d(X)) * (1.0 - self.blur)
        return np.exp(lp - lp.max(axis=(1, 2), keepdims=True))

    def posterior(self, x, n_samples=1000, seed=0, threads=None):
        return Posterior(self.y_grid.ue4_centres, self.y_grid.dm2_centres, self.posterior_density(x)[0])


def test_distances_of_known_cell_masses():
    areas = np.ones((1, 2))
    ex_ = np.array([[[0.5, 0.5]]])
    est = np.array([[[0.25, 0.75]]])
    tv, kl, ious = _distances(est, ex_, areas, np.zeros(1, bool), (0.5,))
    assert tv[0] == pytest.approx(0.25)
    assert kl[0] == pytest.approx(0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75))
    # an estimator with no mass where the exact posterior has some: finite, by the floor
    tv0, kl0, _ = _distances(np.array([[[0.0, 1.0]]]), ex_, areas, np.zeros(1, bool), (0.5,))
    assert tv0[0] == pytest.approx(0.5)
    assert kl0[0] == pytest.approx(0.5 * np.log(0.5 / KL_MASS_FLOOR) + 0.5 * np.log(0.5))


def test_the_exact_posterior_scores_zero_distance_and_the_exact_coverage():
    row = score(ExactAsModel("BEST"), trials=150, seed=3, fit_vectors=2)
    assert row["total_variation"]["mean"] < 1e-9  # the same densities up to float rounding
    assert abs(row["kl"]["mean"]) < 1e-9
    assert all(v == pytest.approx(1.0) for v in row["iou"].values())
    assert row["coverage"] == row["exact_coverage"]
    assert row["task"] == "BEST" and row["estimator"] == "exact-stand-in" and row["train_seconds"] == 1.5


def test_scoreboard_numbers_are_in_range_and_rank_the_closer_estimator_first(tmp_path):
    board = scoreboard([ExactAsModel("BEST", blur=0.6), ExactAsModel("BEST")], trials=120, seed=5, fit_vectors=2)
    for r in board.rows:
        assert all(0.0 <= c <= 1.0 for c in r["coverage"] + r["exact_coverage"])
        assert all(lo <= c <= hi for c, (lo, hi) in zip(r["coverage"], r["coverage_band"]))
        assert 0.0 <= r["total_variation"]["mean"] <= 1.0 and np.isfinite(r["kl"]["mean"]) and r["kl"]["mean"] >= 0
        assert all(0.0 <= v <= 1.0 for v in r["iou"].values())
        assert r["fit_seconds_median"] > 0
    blurred, exact = board.rows
    assert blurred["total_variation"]["mean"] > 0.05  # a flattened posterior is measurably farther
    assert all(b >= e for b, e in zip(blurred["coverage"], exact["coverage"]))  # ... and over-covers: wider regions
    board.rows[1]["estimator"] = "sharp"
    assert board.best() == {"BEST": "sharp"}
    md = board.to_markdown()
    assert md.count("\n| BEST |") == 2 and "**sharp**" in md
    board.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"scoreboard.md", "scoreboard.json", "scoreboard.png"}
    again = Scoreboard.load(tmp_path)
    assert again.rows[0]["coverage"] == board.rows[0]["coverage"]
    assert json.loads((tmp_path / "scoreboard.json").read_text())["format"] == "fcmlc-scoreboard"


def test_models_of_one_task_share_the_exact_posteriors(monkeypatch):
    # the scoreboard computes each trial's exact posterior once for all models of a task, and
    # the rows are those of separate score() calls
    from fcmlc.validation.scoreboard import SharedExact

    calls = []
    orig = ExactModel.log_posterior

    def counted(self, x):
        if isinstance(self, SharedExact):
            calls.append(len(np.atleast_2d(x)))
        return orig(self, x)

    monkeypatch.setattr(ExactModel, "log_posterior", counted)
    models = [ExactAsModel("BEST", blur=0.6), ExactAsModel("BEST", blur=0.3)]
    board = scoreboard(models, trials=90, seed=5, fit_vectors=2)
    assert sum(calls) == 90
    for m, row in zip(models, board.rows):
        alone = score(m, trials=90, seed=5, fit_vectors=2)
        for key in ("coverage", "exact_coverage", "total_variation", "kl", "iou"):
            assert row[key] == alone[key], key


def test_benchmark_estimators_cli_end_to_end(tmp_path, capsys):
    """A real model directory (conftest.write_untrained_best_model) through the command."""
    from fcmlc.cli import main

    write_untrained_best_model(tmp_path / "m")
    out = tmp_path / "board"
    assert main(["benchmark-estimators", str(tmp_path / "m"), "-o", str(out), "--trials", "60",
                 "--fit-vectors", "2", "--samples", "50", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| BEST | fcmlc |" in text
    row = json.loads((out / "scoreboard.json").read_text())["rows"][0]
    assert 0.0 <= row["total_variation"]["mean"] <= 1.0
    # a second run into the same directory is refused without --overwrite, and nothing is lost
    before = (out / "scoreboard.md").read_text()
    assert main(["benchmark-estimators", str(tmp_path / "m"), "-o", str(out), "--trials", "60"]) != 0
    assert (out / "scoreboard.md").read_text() == before
    assert main(["benchmark-estimators", "-o", str(tmp_path / "none")]) != 0


def test_a_model_trained_on_other_definitions_is_refused(tmp_path, capsys):
    # scoring against trials of another model (e.g. the built-in PROSPECT for a model trained on
    # the official release) would compare the estimator with the wrong answer: refused, naming the
    # experiment and --data-dir
    from fcmlc.cli import main

    write_untrained_best_model(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["experiment_hashes"]["BEST"] == ex.load("BEST").definition_hash
    cfg["experiment_hashes"]["BEST"] = "0" * len(cfg["experiment_hashes"]["BEST"])
    cfg_path.write_text(json.dumps(cfg))
    assert main(["benchmark-estimators", str(tmp_path / "m"), "-o", str(tmp_path / "board"), "--trials", "20",
                 "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "the definition of BEST" in err and "--data-dir" in err
    assert not (tmp_path / "board" / "scoreboard.md").exists()


def test_an_exact_model_on_other_cells_is_refused():
    from fcmlc.validation import coverage

    with pytest.raises(ValueError, match="not on the model's posterior cells"):
        coverage(ExactAsModel("BEST"), trials=5, methods=("fcmlc", "exact"), exact=ExactModel([ex.load("BEST")],
                                                                                              Grid(shape=(5, 5))))


def test_coverage_of_a_model_trained_on_other_definitions_is_refused(tmp_path, capsys):
    # `fcmlc coverage` simulates its trials from the experiments it loads: a model trained on
    # other definitions (a data release, another version) is refused as by the scoreboard (it only
    # warned before), and --data-dir is how to load the ones it was trained on
    from fcmlc.cli import main
    from fcmlc.validation import coverage

    write_untrained_best_model(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["experiment_hashes"]["BEST"] = "0" * len(cfg["experiment_hashes"]["BEST"])
    cfg_path.write_text(json.dumps(cfg))
    assert main(["coverage", str(tmp_path / "m"), "-o", str(tmp_path / "cov"), "--trials", "10", "--samples", "20",
                 "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "the definition of BEST" in err and "--data-dir" in err
    assert not (tmp_path / "cov" / "coverage.json").exists()
    from fcmlc.models import FCMLC

    with pytest.raises(IncompatibleError, match="the definition of BEST"):
        coverage(FCMLC.load(tmp_path / "m", device="cpu"), trials=10, n_samples=20)
