"""The ``npe`` and ``nre`` estimators (fcmlc.estimators.npe, fcmlc.estimators.nre).

* On the linear-Gaussian toy of tests/test_pipeline_toy.py (x = A y + N(0, sigma^2 I_3) on a
  log grid over the paper's ranges, flat prior in log) each posterior is close to the analytic
  one, by that file's measure: the overlap sum_c min(p_c, q_c) of the cell masses (1 - total
  variation), averaged over its six test vectors.
* Model directories: save/load (through ``FCMLC.load`` and ``fcmlc.estimators.load``) gives
  bit-identical posteriors; a corrupted file is refused naming it.
* Training is deterministic (same seed -> the same bits) and resumable (a run interrupted after
  a checkpoint or inside an epoch ends with the same weights).
* ``fcmlc train --estimator npe`` then ``fcmlc fit`` work end to end; bad data vectors are refused.
* Fresh simulations (``fresh_simulations``, ``--fresh-simulations``): each epoch's pairs are the
  simulator's realizations at continuous truths (equal to ``fcmlc.simulation.realizations`` at
  them, for any thread count); training on them is deterministic and resumable; datasets of
  other experiment definitions are refused.

Small networks and few epochs throughout: the whole file trains in well under a minute on one core.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _toys import linear_gaussian_masses, overlap
from conftest import write_linear_gaussian
from fcmlc import estimators
from fcmlc.cli import main
from fcmlc.estimators.config import NPEConfig, NREConfig
from fcmlc.estimators.grid_model import GridModel
from fcmlc.exceptions import IncompatibleError
from fcmlc.models import FCMLC, ModelDirectoryError
from fcmlc.models.checkpoint import TrainingCheckpoint, checkpoint_dir
from fcmlc.models.samples import Samples
from fcmlc.physics import Grid

A = np.array([[1.0, 0.3], [0.2, 1.0], [0.7, -0.5]])
SIGMA = 0.3
#: test_pipeline_toy's truths, ~3 posterior standard deviations inside the box
TRUTHS = np.array([[-2.2, -1.0], [-1.5, 0.0], [-1.0, 0.3], [-2.0, 0.2], [-1.2, -1.1], [-1.6, -0.5]])

# Small networks, a short schedule, one thread (at these batch sizes the per-step overhead
# dominates; a shared 2-core machine runs two threads slower). 15 x 15 grid points x 60
# realizations (9,744 training pairs). Measured overlaps with these settings: npe 0.85-0.91
# (mean 0.89), nre 0.87-0.93 (mean 0.91).
COMMON = {"threads": 1, "y_shape": [40, 40], "embedding_hidden": [32, 32], "embedding_size": 4, "lr": 5e-3,
          "batch_size": 512, "max_epochs": 8, "patience": 3}
CONFIGS = {"npe": {**COMMON, "n_layers": 3, "hidden": 32, "n_blocks": 1},
           "nre": {**COMMON, "classifier_hidden": [64, 64]}}
#: Mean overlap required. A few epochs on ~10k pairs leave a network-limited error of ~0.1 (the
#: measured means above); the posterior grid's resolution costs nothing here (both posteriors are
#: compared cell by cell on the same grid). A flat posterior over the +-3 sigma box scores < 0.5
#: and the exact posterior shifted by 2 sigma < 0.35 (asserted in test_pipeline_toy.py), so 0.80
#: separates a working estimator from a wrong one.
OVL_THRESHOLD = 0.80

# the determinism / resume runs: a 9 x 9 x 12 toy, tiny networks, chunks of 200 pairs (4 per epoch)
TINY = {"threads": 1, "y_shape": [10, 11], "embedding_hidden": [8], "embedding_size": 3, "lr": 2e-2,
        "batch_size": 64, "max_epochs": 4, "patience": 10, "chunk_rows": 200, "lr_plateau_patience": 0}
TINY_NET = {"npe": {"n_layers": 2, "hidden": 8, "n_blocks": 1, "flow_dropout": 0.1}, "nre": {"classifier_hidden": [8]}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # posteriors in the tests, same reason as the configs' "threads"
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    ds = write_linear_gaussian(d / "toy.h5", A, SIGMA, Grid(shape=(15, 15)), 60, seed=11)
    xs = TRUTHS @ A.T + SIGMA * np.random.default_rng(12).standard_normal((len(TRUTHS), A.shape[0]))
    return ds, d, xs


@pytest.fixture(scope="module")
def trained(toy):
    """{estimator: (model, its directory)} for npe and nre on the toy."""
    ds, d, _ = toy
    return {name: (estimators.train(ds, out=d / name, estimator=name, config=cfg, device="cpu", seed=4,
                                    progress=False), d / name) for name, cfg in CONFIGS.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_linear_gaussian(tmp_path_factory.mktemp("tiny") / "tiny.h5", A, SIGMA, Grid(shape=(9, 9)), 12, seed=3)


def tiny_config(name):
    return {**TINY, **TINY_NET[name]}


def assert_same_weights(a, b):
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


# ---------------------------------------------------------------------------------------------
# accuracy


@pytest.mark.parametrize("name", ["npe", "nre"])
def test_posterior_close_to_the_analytic_posterior(trained, toy, name):
    model, _ = trained[name]
    xs = toy[2]
    posts = model.posterior(xs)
    ovl = [overlap(p.mass, linear_gaussian_masses(model.y_grid, x, A, SIGMA)) for p, x in zip(posts, xs)]
    print(f"{name}: overlaps {np.round(ovl, 3)}, mean {np.mean(ovl):.3f}")
    assert np.mean(ovl) >= OVL_THRESHOLD, f"{name}: mean overlap {np.mean(ovl):.3f} ({np.round(ovl, 3)})"
    # no single vector may be badly off either (a mean can hide one failure): 0.1 below the mean threshold
    assert min(ovl) >= OVL_THRESHOLD - 0.1, f"{name}: overlaps per vector {np.round(ovl, 3)}"
    assert posts[0].meta["method"] == name.upper() and posts[0].meta["estimator"] == name
    hist = model.info["training"]["networks"][model.network_name]
    assert hist["epochs"] >= 1 and hist["stop_reason"] in ("max_epochs", "patience")
    assert np.isfinite(hist["best_val_loss"]) and model.info["training"]["machine_dependent"] is False


def test_compiled_npe_evaluation_equals_normflows(trained, toy):
    model, _ = trained["npe"]
    xs = toy[2][:2]
    fast = model.log_density_grid(xs)
    assert model.kernel_layers() is not None  # the compiled path was taken
    ref = GridModel.log_density_grid(model, xs)  # normflows, float32
    # the kernel is exact in float64; normflows runs the float32 weights in float32, whose
    # rounding accumulates over the layers to ~5e-6 of the log density (measured; log densities
    # here span -1 to -25): 2e-5 relative is far above that and far below any visible difference
    # in a posterior (a density factor of at most 1.0005 at log density -25)
    np.testing.assert_allclose(fast, ref, rtol=2e-5, atol=1e-5)


def test_batch_equals_single_and_options_are_ignored(trained, toy):
    for name in ("npe", "nre"):
        model, _ = trained[name]
        xs = toy[2][:3]
        batch = model.posterior_density(xs)
        for i, x in enumerate(xs):
            # the embedding of a vector in a batch of 3 or alone: the same float32 products up to
            # the order of summation (~1e-7 relative), which the flow and exp carry to ~1e-6
            np.testing.assert_allclose(model.posterior_density(x)[0], batch[i], rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(model.posterior_density(xs, n_samples=7, seed=3, bandwidth="cv_ml",
                                                              bandwidth_floor=0.0), batch)
        with pytest.raises(TypeError, match="unexpected keyword"):
            model.posterior_density(xs, kde=True)


# ---------------------------------------------------------------------------------------------
# model directories


@pytest.mark.parametrize("name", ["npe", "nre"])
def test_save_load_gives_identical_posteriors(trained, toy, name):
    model, path = trained[name]
    xs = toy[2][:2]
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["format"] == "fcmlc-model" and cfg["estimator"] == name and set(cfg["files"]) == set(model.FILES)
    for loaded in (FCMLC.load(path, device="cpu"), estimators.load(path, device="cpu")):
        assert type(loaded) is type(model) and loaded.estimator == name
        assert loaded.experiments == model.experiments and loaded.y_grid == model.y_grid
        np.testing.assert_array_equal(loaded.posterior_density(xs), model.posterior_density(xs))
    post = loaded.posterior(xs[0])
    assert post.meta["method"] == name.upper()


def test_corrupted_or_foreign_files_are_refused(trained, tmp_path):
    import shutil

    _, path = trained["nre"]
    d = tmp_path / "m"
    shutil.copytree(path, d)
    raw = bytearray((d / "network.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "network.pt").write_bytes(bytes(raw))
    with pytest.raises(ModelDirectoryError, match=r"network\.pt: sha256 checksum mismatch"):
        estimators.load(d)
    (d / "network.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelDirectoryError, match=r"network\.pt: cannot be read as a weights-only torch file"):
        estimators.load(d, verify=False)
    (d / "scalers.npz").unlink()
    with pytest.raises(ModelDirectoryError, match=r"scalers\.npz is missing"):
        estimators.load(d)
    from fcmlc.estimators.npe import NPEModel

    with pytest.raises(ModelDirectoryError, match="holds a 'nre' model, not 'npe'"):
        NPEModel.load(path)


def test_a_model_directory_of_any_estimator_is_replaceable_other_files_are_not(tmp_path):
    from fcmlc.exceptions import OutputExistsError
    from fcmlc.models.directory import check_replaceable

    d = tmp_path / "m"
    d.mkdir()
    (d / "member_3.pt").write_bytes(b"w")  # a file another estimator's config.json records
    (d / "config.json").write_text(json.dumps({"format": "fcmlc-model", "files": {"member_3.pt": {"sha256": "0"}}}))
    check_replaceable(d, ("network.pt", "scalers.npz"))
    (d / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"holds files that are not a model's \(notes\.txt\)"):
        check_replaceable(d, ("network.pt", "scalers.npz"))


def test_bad_data_vectors_are_refused(trained):
    model, _ = trained["npe"]
    with pytest.raises(ValueError, match=r"x must have shape \(3,\) or \(n, 3\)"):
        model.posterior(np.zeros(4))
    with pytest.raises(ValueError, match=r"NaN or infinite values \(data vector\(s\) \[1\]\)"):
        model.posterior([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]])
    with pytest.raises(ValueError, match="x contains no data vectors"):
        model.posterior(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="numeric array"):
        trained["nre"][0].posterior_density(["a", "b", "c"])


def test_settings_presets_and_overlay():
    fast = NPEConfig.resolve({"hyperparameters": "fast", "hidden": 32})
    assert fast.hyperparameters == "fast" and fast.hidden == 32 and fast.max_epochs == NPEConfig.fast().max_epochs
    assert (fast.lr_schedule, fast.batch_size, fast.max_epochs) == ("cosine", 2048, 24)
    assert NREConfig.fast().lr_schedule == "plateau" and NPEConfig.resolve(None).lr_schedule == "plateau"
    assert NPEConfig.resolve(None).time_budget is None and NREConfig.fast().time_budget is None
    assert NREConfig.resolve({"classifier_hidden": [16, 8]}).classifier_hidden == (16, 8)
    with pytest.raises(ValueError, match=r"unknown NPEConfig configuration keys: \['regressor'\]"):
        NPEConfig.resolve({"regressor": {}})
    with pytest.raises(ValueError, match="unknown hyper-parameter preset 'paper'"):
        NREConfig.resolve({"hyperparameters": "paper"})
    with pytest.raises(ValueError, match="activation must be one of"):
        NREConfig.resolve({"activation": "gelu"})


# ---------------------------------------------------------------------------------------------
# determinism and resuming


@pytest.fixture(scope="module")
def references(tiny):
    """The uninterrupted tiny runs (npe with flow dropout: torch's global generator is in play)."""
    return {name: estimators.train(tiny, estimator=name, config=tiny_config(name), device="cpu", seed=4,
                                   progress=False) for name in ("npe", "nre")}


@pytest.mark.parametrize("name", ["npe", "nre"])
def test_same_seed_same_bits_other_seed_other_weights(tiny, references, name):
    again = estimators.train(tiny, estimator=name, config=tiny_config(name), device="cpu", seed=4, progress=False)
    assert_same_weights(again, references[name])  # determinism means the same bits
    other = estimators.train(tiny, estimator=name, config=tiny_config(name), device="cpu", seed=5, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(other.network.state_dict().values(),
                                                     references[name].network.state_dict().values()))


def test_time_budget_is_recorded_as_machine_dependent(tiny):
    model = estimators.train(tiny, estimator="nre", config={**tiny_config("nre"), "time_budget": 1e-4}, device="cpu",
                             progress=False)
    tr = model.info["training"]
    assert tr["networks"]["classifier"]["stop_reason"] == "time_budget" and tr["machine_dependent"] is True
    assert "it stopped the classifier" in tr["machine_dependent_reason"]


class Interrupt:
    """Ctrl-C right after the ``after_save``-th checkpoint write, or inside an epoch: after two of
    the four chunks of the ``at_chunks_call``-th call of ``source.chunks`` (the training set's)."""

    def __init__(self, monkeypatch, after_save=None, at_chunks_call=None, source=Samples):
        self.saves, self.calls = 0, 0
        save, chunks = TrainingCheckpoint.save, source.chunks

        def counted_save(ckpt, state):
            save(ckpt, state)
            self.saves += 1
            if self.saves == after_save:
                raise KeyboardInterrupt

        def counted_chunks(samples, shuffle_seed=None):
            self.calls += 1
            for i, chunk in enumerate(chunks(samples, shuffle_seed)):
                if self.calls == at_chunks_call and i == 2:
                    raise KeyboardInterrupt
                yield chunk

        monkeypatch.setattr(TrainingCheckpoint, "save", counted_save)
        monkeypatch.setattr(source, "chunks", counted_chunks)


@pytest.mark.parametrize("name, after_save, at_chunks_call, done", [
    ("npe", 2, None, 2),   # after the second epoch's checkpoint
    ("npe", None, 5, 2),   # inside the third epoch (calls before: moments, validation set, two epochs)
    ("nre", 1, None, 1),
])
def test_interrupted_run_resumes_to_the_same_weights(tiny, references, tmp_path, monkeypatch, capsys, name,
                                                     after_save, at_chunks_call, done):
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        Interrupt(m, after_save, at_chunks_call)
        with pytest.raises(KeyboardInterrupt, match="interrupted: checkpoint kept in"):
            estimators.train(tiny, out=out, estimator=name, config=tiny_config(name), device="cpu", seed=4,
                             progress=False)
    assert (checkpoint_dir(out) / "checkpoint.pt").is_file() and not out.exists()
    with pytest.raises(IncompatibleError, match="seed: checkpoint has 4, this run 5"):
        estimators.train(tiny, out=out, estimator=name, config=tiny_config(name), device="cpu", seed=5,
                         progress=False)
    model = estimators.train(tiny, out=out, estimator=name, config=tiny_config(name), device="cpu", seed=4,
                             progress=False)
    assert f"({name} {model.network_name}: {done} epoch{'s' * (done > 1)} done)" in capsys.readouterr().err
    assert_same_weights(model, references[name])
    assert_same_weights(estimators.load(out, device="cpu"), references[name])
    assert not checkpoint_dir(out).exists() and len(model.info["training"]["resumed"]) == 1
    ref = references[name].info["training"]["networks"][model.network_name]
    assert model.info["training"]["networks"][model.network_name]["val_loss"] == ref["val_loss"]


def test_cosine_schedule_resumes_to_the_same_weights(tiny, tmp_path, monkeypatch):
    # the per-batch cosine learning rate is a function of the position in training only, so a run
    # interrupted inside an epoch ends with the uninterrupted run's weights; the recorded rate
    # after each epoch is lr (1 + cos(pi t)) / 2 at t = (epochs done) / max_epochs
    cfg = {**tiny_config("npe"), "lr_schedule": "cosine"}
    ref = estimators.train(tiny, estimator="npe", config=cfg, device="cpu", seed=4, progress=False)
    lrs = ref.info["training"]["networks"]["flow"]["lr"]
    n = cfg["max_epochs"]
    # the last batch of epoch e sets the rate at t = (e + (n_train - last batch) / n_train) / n: between
    # the epoch boundaries' values
    for e, lr in enumerate(lrs):
        hi, lo = (cfg["lr"] * 0.5 * (1 + np.cos(np.pi * t / n)) for t in (e, e + 1))
        assert lo <= lr <= hi
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        Interrupt(m, None, 5)  # inside the third epoch
        with pytest.raises(KeyboardInterrupt):
            estimators.train(tiny, out=out, estimator="npe", config=cfg, device="cpu", seed=4, progress=False)
    model = estimators.train(tiny, out=out, estimator="npe", config=cfg, device="cpu", seed=4, progress=False)
    assert_same_weights(model, ref)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        NPEConfig.resolve({"lr_schedule": "step"})


# ---------------------------------------------------------------------------------------------
# command line


def test_cli_train_then_fit(tiny, tmp_path, capsys):
    out = tmp_path / "npe-model"
    cfg = json.dumps({k: v for k, v in tiny_config("npe").items() if k != "max_epochs"})
    assert main(["train", str(tiny), "-o", str(out), "--estimator", "npe", "--config", cfg, "--max-epochs", "2",
                 "--patience", "5", "--seed", "1", "--device", "cpu", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "NPE model for TOY (3 features)" in text and "flow:" in text and "2 epochs (max_epochs)" in text
    saved = json.loads((out / "config.json").read_text())
    assert saved["estimator"] == "npe" and saved["training_config"]["max_epochs"] == 2
    assert saved["training_config"]["patience"] == 5
    vec = tmp_path / "x.txt"
    np.savetxt(vec, [-2.0, -0.5, -1.0])
    res = tmp_path / "fit"
    assert main(["fit", str(out), "--data", str(vec), "-o", str(res), "--no-diagnostics"]) == 0
    assert "90% credible region" in capsys.readouterr().out
    assert {p.name for p in res.iterdir()} == {"posterior.npz", "posterior.png", "summary.json"}
    summary = json.loads((res / "summary.json").read_text())
    assert len(summary["regions"]) == 3 and summary["model"]["directory"] == str(out)


# ---------------------------------------------------------------------------------------------
# fresh simulations


@pytest.fixture(scope="module")
def best_tiny(tmp_path_factory):
    """A BEST dataset (a real experiment: the simulator can draw it anew), 9 x 9 x 12."""
    from fcmlc.simulation import simulate

    path = tmp_path_factory.mktemp("best") / "best.h5"
    simulate(["BEST"], Grid(shape=(9, 9)), n_per_point=12, seed=3, out=path, progress=False)
    return path


def fresh_config():
    return {**tiny_config("npe"), "fresh_simulations": True}


def test_fresh_simulations_are_the_simulators_at_continuous_truths(best_tiny):
    from fcmlc import experiments as ex
    from fcmlc.dataset import open_dataset
    from fcmlc.estimators.fresh import FreshSimulations
    from fcmlc.models.regressor import as_seed
    from fcmlc.simulation import realizations

    with open_dataset(best_tiny) as ds:
        grid = ds.grid
    src = FreshSimulations([ex.load("BEST")], grid, 1000, 7, base=None, float32=False, threads=1)
    x, y = src.draw((4, 58, 2))
    assert x.shape == (1000, 2) and y.shape == (1000, 2)
    lo, hi = np.log10([grid.ue4_range[0], grid.dm2_range[0]]), np.log10([grid.ue4_range[1], grid.dm2_range[1]])
    assert np.all((y >= lo) & (y <= hi))
    assert not np.isin(y[:, 0], np.log10(grid.points()[:, 0])).any()  # continuous truths, not grid points
    assert len(np.unique(y, axis=0)) == 143  # ceil(1000 / 7) truths, 7 realizations each (one left out)
    # each pair is a realization of the simulator at its truth: fcmlc.simulation.realizations at
    # the epoch's truths (in the order drawn: they key the random streams) with the epoch's seed
    rng = np.random.default_rng([as_seed((4, 58, 2)), 61])
    truths = np.stack([rng.uniform(lo[0], hi[0], 143), rng.uniform(lo[1], hi[1], 143)], axis=1)
    ref = realizations(["BEST"], 10 ** truths[:, 0], 10 ** truths[:, 1], 7, seed=src.simulation_seed((4, 58, 2)),
                       threads=1)
    ref_of = {tuple(t): {tuple(r) for r in rows} for t, rows in zip(truths, ref)}
    assert all(tuple(xi) in ref_of[tuple(yi)] for xi, yi in zip(x, y))
    two = FreshSimulations([ex.load("BEST")], grid, 1000, 7, base=None, float32=False, threads=2)
    np.testing.assert_array_equal(two.draw((4, 58, 2))[0], x)  # any thread count: the same numbers
    assert not np.array_equal(src.draw((4, 58, 3))[1], y)  # another epoch: other truths
    val = FreshSimulations([ex.load("BEST")], grid, 300, 7, float32=False, chunk_rows=128, fixed_key=(4, 59))
    first, again = (np.concatenate([c[0] for c in val.chunks()]) for _ in range(2))
    assert first.shape == (300, 2) and np.array_equal(first, again)  # a validation set: the same every pass
    with pytest.raises(ValueError, match="needs a key"):
        next(src.chunks())


def test_fresh_simulation_training_is_deterministic_and_resumes(best_tiny, tmp_path, monkeypatch, capsys):
    from fcmlc.estimators.fresh import FreshSimulations
    from fcmlc.validation.scoreboard import _row_label

    ref = estimators.train(best_tiny, estimator="npe", config=fresh_config(), device="cpu", seed=4, progress=False)
    assert "fresh simulations" in ref.info["dataset"]["training_data"]
    assert "validation: 78 pairs drawn once, one at each of as many other truths" in ref.info["dataset"]["training_data"]
    assert ref.info["training"]["networks"]["flow"]["dequantize_widths_log10"] == [0.0, 0.0]
    assert_same_weights(estimators.train(best_tiny, estimator="npe", config=fresh_config(), device="cpu", seed=4,
                                         progress=False), ref)
    on_dataset = estimators.train(best_tiny, estimator="npe", config=tiny_config("npe"), device="cpu", seed=4,
                                  progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(on_dataset.network.state_dict().values(),
                                                     ref.network.state_dict().values()))
    assert (_row_label(ref), _row_label(on_dataset)) == ("npe (fresh)", "npe")  # the scoreboard's rows
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        Interrupt(m, None, 4, source=FreshSimulations)  # inside the third epoch (call 1: the validation set)
        with pytest.raises(KeyboardInterrupt, match="interrupted: checkpoint kept in"):
            estimators.train(best_tiny, out=out, estimator="npe", config=fresh_config(), device="cpu", seed=4,
                             progress=False)
    model = estimators.train(best_tiny, out=out, estimator="npe", config=fresh_config(), device="cpu", seed=4,
                             progress=False)
    assert "(npe flow: 2 epochs done)" in capsys.readouterr().err
    assert_same_weights(model, ref)
    assert estimators.load(out).info["dataset"]["training_data"] == ref.info["dataset"]["training_data"]


def test_fresh_simulations_refuse_other_definitions(best_tiny, tiny, tmp_path, capsys):
    from conftest import write_dataset

    with pytest.raises(IncompatibleError, match="'TOY' cannot be loaded"):
        estimators.train(tiny, estimator="npe", config=fresh_config(), progress=False)
    other = write_dataset(tmp_path / "other.h5", Grid(shape=(9, 9)),
                          {"BEST": np.ones((81, 12, 2))}, seed=1, hashes=("an-older-definition",))
    with pytest.raises(IncompatibleError, match="definition of BEST loaded with no data directory differs"):
        estimators.train(other, estimator="npe", config=fresh_config(), progress=False)
    with pytest.raises(ValueError, match="data directory is used only with fresh simulations"):
        estimators.train(best_tiny, estimator="npe", config=tiny_config("npe"), data_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="only by fresh simulations"):
        estimators.train(best_tiny, estimator="fcmlc", data_dir=tmp_path, progress=False)
    args = ["train", str(best_tiny), "-o", str(tmp_path / "m"), "--no-progress"]
    assert main(args + ["--fresh-simulations"]) == 2  # fcmlc: no such option
    assert "--fresh-simulations is for --estimator npe or nre" in capsys.readouterr().err
    assert main(args + ["--estimator", "npe", "--data-dir", str(tmp_path)]) == 2
    assert "--data-dir is used only with --fresh-simulations" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
