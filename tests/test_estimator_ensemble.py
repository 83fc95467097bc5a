"""The ``ensemble`` estimator (issue 15): FCMLC with a deep ensemble of MC-dropout regressors.

* On the linear-Gaussian toy of tests/test_pipeline_toy.py its posterior is close to the
  analytic one (the same overlap measure and threshold, see there), and a saved model gives the
  same posteriors.
* Determinism: the same seed gives the same bits; a one-member ensemble is the fcmlc model bit
  for bit; an interrupted run (inside a member, between members, after the regressors, twice)
  resumes to the same model as an uninterrupted one.
* The model directory names the estimator and the members; validation.mse runs on the model
  unchanged; ``fcmlc train --estimator ensemble`` and ``fcmlc fit`` work end to end.

Every determinism comparison is exact (torch.equal / assert_array_equal).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_linear_gaussian
from fcmlc import estimators
from fcmlc.cli import main
from fcmlc.exceptions import IncompatibleError
from fcmlc.models import FCMLC, EnsembleConfig, EnsembleFCMLC, Regressor, train
from fcmlc.models.checkpoint import checkpoint_dir
from fcmlc.physics import Grid
from test_pipeline_toy import A, CONFIG, GRID, OVL_THRESHOLD, SIGMA, TRUTHS, overlap, true_masses
from test_training_determinism import CFG, Interrupt, assert_same_model

K = 3
#: realizations per grid point of the toy: a third of test_pipeline_toy's 120, so that three
#: regressors and the flow train in about the time of its one model (the flow's epochs dominate);
#: measured overlaps with it 0.86-0.90 (mean 0.88), with 120: 0.87-0.92 (mean 0.90)
N_PER_POINT = 40


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A 3-member ensemble on test_pipeline_toy's data and settings (each member with its regressor settings)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in test_pipeline_toy: one thread is fastest at these sizes
    try:
        d = tmp_path_factory.mktemp("toy")
        ds = write_linear_gaussian(d / "toy.h5", A, SIGMA, GRID, N_PER_POINT, seed=11)
        model = estimators.train(ds, out=d / "model", estimator="ensemble", config={**CONFIG, "ensemble": {"members": K}},
                                 device="cpu", seed=4, progress=False)
        xs = TRUTHS @ A.T + SIGMA * np.random.default_rng(12).standard_normal((len(TRUTHS), A.shape[0]))
        yield model, d / "model", xs
    finally:
        torch.set_num_threads(threads)


def test_posterior_overlaps_the_analytic_posterior(toy):
    model, _, xs = toy
    assert isinstance(model, EnsembleFCMLC) and model.n_members == K
    posts = model.posterior(xs, n_samples=999, seed=0)
    ovl = [overlap(p.mass, true_masses(model, x)) for p, x in zip(posts, xs)]
    print(f"ensemble overlaps {np.round(ovl, 3)}, mean {np.mean(ovl):.3f}")
    # test_pipeline_toy's threshold and reasoning (0.80 separates a working pipeline from a prior-like or
    # shifted posterior; the KDE floor and the grid cost a few per cent even for perfect networks): the
    # ensemble must do at least as well as one regressor is required to
    assert np.mean(ovl) >= OVL_THRESHOLD, f"mean overlap {np.mean(ovl):.3f} (per vector {np.round(ovl, 3)})"
    assert min(ovl) >= OVL_THRESHOLD - 0.1, f"overlaps per vector {np.round(ovl, 3)}"
    assert posts[0].meta["estimator"] == "ensemble" and posts[0].meta["members"] == K


def test_saved_model_gives_identical_posteriors_and_names_its_estimator(toy):
    model, path, xs = toy
    loaded = FCMLC.load(path, device="cpu")
    assert type(loaded) is EnsembleFCMLC and loaded.estimator == "ensemble" and loaded.n_members == K
    assert estimators.load(path, device="cpu").estimator == "ensemble"
    np.testing.assert_array_equal(model.posterior_density(xs[:2], n_samples=500, seed=7),
                                  loaded.posterior_density(xs[:2], n_samples=500, seed=7))  # same bits
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["estimator"] == "ensemble" and cfg["regressor"]["members"] == K
    assert cfg["training_config"]["ensemble"] == {"members": K}
    keys = torch.load(path / "regressor.pt", weights_only=True)
    assert {k.split(".")[1] for k in keys} == {str(k) for k in range(K)}  # every member's weights
    tr = cfg["training"]["regressor"]
    assert len(tr["members"]) == K and tr["epochs"] == sum(h["epochs"] for h in tr["members"])
    assert len({h["seed"] for h in tr["members"]}) == K and tr["members"][0]["seed"] == 4


def test_samples_are_pooled_evenly_over_the_members(toy):
    model, _, xs = toy
    net = model.regressor.net
    assert net.split(10) == [3, 3, 4] and net.split(2) == [0, 1, 1]
    pooled = model.regressor.predict_samples(model.features.transform(xs[:2]), n_samples=10, seed=5)
    assert pooled.shape == (2, 10, 2)
    # member 0 draws its masks first from the block's generator: its share equals its own samples
    first = Regressor(net.members[0], model.regressor.x_scaler, model.regressor.y_scaler, "cpu")
    np.testing.assert_array_equal(pooled[:, :3], first.predict_samples(model.features.transform(xs[:2]), 3, seed=5))
    # the members differ (independent seeds), so the other shares are not member 0's
    other = first.predict_samples(model.features.transform(xs[:2]), 10, seed=5)[:, 3:]
    assert not np.allclose(pooled[:, 3:], other)


# ---------------------------------------------------------------------------------------------
# determinism and resuming, on test_training_determinism's small settings (each run < 1 s)

ENS = {**CFG, "ensemble": {"members": K}}
# checkpoint writes of one run with ENS: 5 per member (after epochs 1-5 of 6), one after each of
# the first two members (7: 6, 12), after the regressors (18), after flow epochs (19, 20; the
# third stops it by patience, asserted in `reference`), after the flow (21)
N_SAVES = 21


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_linear_gaussian(tmp_path_factory.mktemp("ds") / "toy.h5", A, 0.3, Grid(shape=(9, 9)), 12, seed=3)


@pytest.fixture(scope="module")
def reference(dataset):
    model = estimators.train(dataset, estimator="ensemble", config=ENS, device="cpu", seed=4, progress=False)
    tr = model.info["training"]
    assert [h["epochs"] for h in tr["regressor"]["members"]] == [6] * K
    assert tr["flow"]["epochs"] == 3 and tr["flow"]["stop_reason"] == "patience", tr["flow"]
    return model


def test_same_seed_same_bits_other_seed_other_weights(dataset, reference):
    assert_same_model(estimators.train(dataset, estimator="ensemble", config=ENS, device="cpu", seed=4,
                                       progress=False), reference)
    other = estimators.train(dataset, estimator="ensemble", config=ENS, device="cpu", seed=5, progress=False)
    assert not torch.equal(other.regressor.state_dict()["members.0.out.weight"],
                           reference.regressor.state_dict()["members.0.out.weight"])


def test_one_member_ensemble_is_the_fcmlc_model(dataset):
    one = estimators.train(dataset, estimator="ensemble", config={**CFG, "ensemble": {"members": 1}}, device="cpu",
                           seed=4, progress=False)
    ref = train(dataset, config=CFG, device="cpu", seed=4, progress=False)
    sa, sb = ref.regressor.state_dict(), one.regressor.state_dict()
    assert sorted(sb) == sorted("members.0." + k for k in sa)
    assert all(torch.equal(sa[k], sb["members.0." + k]) for k in sa)
    fa, fb = ref.flow.state_dict(), one.flow.state_dict()
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    np.testing.assert_array_equal(ref.transition, one.transition)


@pytest.mark.parametrize("after_saves, at_chunks_call", [
    ((3,), None),   # inside member 0's epochs
    ((6,), None),   # member 0 done, member 1 not started
    ((), 17),       # inside member 1's second epoch (calls before: member 0's moments and 6 x (epoch,
                    # validation), member 1's moments, first epoch and validation)
    ((12,), None),  # two members done
    ((18,), None),  # all members done, flow not started
    ((4, 14), None),  # interrupted twice: in member 0, then in member 2
])
def test_interrupted_run_resumes_to_the_same_model(dataset, reference, tmp_path, monkeypatch, capsys,
                                                   after_saves, at_chunks_call):
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        Interrupt(m, after_saves, at_chunks_call)
        for _ in range(len(after_saves) or 1):
            with pytest.raises(KeyboardInterrupt, match="interrupted: checkpoint kept in"):
                estimators.train(dataset, out=out, estimator="ensemble", config=ENS, device="cpu", seed=4,
                                 progress=False)
            assert (checkpoint_dir(out) / "checkpoint.pt").is_file() and not out.exists()
    model = estimators.train(dataset, out=out, estimator="ensemble", config=ENS, device="cpu", seed=4,
                             progress=False)
    assert "resuming the interrupted training run" in capsys.readouterr().err
    assert_same_model(model, reference)
    assert_same_model(FCMLC.load(out, device="cpu"), reference)
    assert not checkpoint_dir(out).exists()
    tr, ref = model.info["training"], reference.info["training"]
    assert len(tr["resumed"]) == max(1, len(after_saves))
    for a, b in zip(tr["regressor"]["members"], ref["regressor"]["members"]):
        assert a["val_loss"] == b["val_loss"] and a["lr"] == b["lr"]
    assert tr["flow"]["val_nll"] == ref["flow"]["val_nll"]


def test_checkpoint_says_which_member_and_refuses_other_members(dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model"
    argv = ["train", str(dataset), "-o", str(out), "--estimator", "ensemble", "--config", json.dumps(ENS),
            "--seed", "4", "--device", "cpu", "--no-progress"]
    with monkeypatch.context() as m:
        Interrupt(m, (8,))
        assert main(argv) == 130
    assert ("(regressor: 1 of 3 ensemble members done, member 1: 2 epochs done); rerun the same command"
            in capsys.readouterr().err)
    with pytest.raises(IncompatibleError, match=r"config\.ensemble\.members: checkpoint has 3, this run 2"):
        estimators.train(dataset, out=out, estimator="ensemble", config={**CFG, "ensemble": {"members": 2}},
                         device="cpu", seed=4, progress=False)


def test_regressor_validation_runs_unchanged_on_the_ensemble(dataset, reference):
    """validation.mse uses model.regressor.predict_mean: the pooled mean over the members."""
    from fcmlc.validation import mse_maps

    maps = mse_maps(reference, dataset, bins=(3, 3), n_samples=30)
    assert maps.overall and all(np.isfinite(v) and v > 0 for v in maps.overall.values())


# ---------------------------------------------------------------------------------------------
# configuration and the command line


def test_configuration_is_checked(dataset):
    with pytest.raises(ValueError, match=r"ensemble\.members must be a positive integer, got 0"):
        estimators.train(dataset, estimator="ensemble", config={**CFG, "ensemble": {"members": 0}}, progress=False)
    with pytest.raises(ValueError, match=r"unknown ensemble configuration keys: \['size'\]"):
        estimators.train(dataset, estimator="ensemble", config={**CFG, "ensemble": {"size": 3}}, progress=False)
    with pytest.raises(ValueError, match="train with estimator 'ensemble'"):
        estimators.train(dataset, estimator="fcmlc", config=ENS, progress=False)


def test_cli_train_ensemble_and_fit(dataset, tmp_path, capsys):
    out, res = tmp_path / "model", tmp_path / "fit"
    # no ensemble settings: the default number of members (3, as K here)
    assert EnsembleConfig().members == K
    assert main(["train", str(dataset), "-o", str(out), "--estimator", "ensemble", "--config", json.dumps(CFG),
                 "--seed", "4", "--device", "cpu", "--no-progress"]) == 0
    assert json.loads((out / "config.json").read_text())["regressor"]["members"] == K
    text = capsys.readouterr().out
    assert f"{out}: FCMLC ensemble model for TOY (3 features)" in text
    assert "regressor: 18 epochs (max_epochs), best validation mse" in text and "flow:" in text
    vec = tmp_path / "x.txt"
    np.savetxt(vec, np.array([-1.5, 0.0]) @ A.T)
    assert main(["fit", str(out), "--data", str(vec), "-o", str(res), "--samples", "300"]) == 0
    assert "best point: |Ue4| =" in capsys.readouterr().out
    assert {p.name for p in res.iterdir()} >= {"posterior.npz", "summary.json"}
