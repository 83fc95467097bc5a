"""Training is deterministic and resumable (issue 12, parts 1 and 4).

* The same seed, data and thread count give bit-identical weights and transition matrix, also
  while another process keeps the second core busy, and whether the training set is held in
  memory or streamed.
* No preset stops on the clock; a model stopped by an explicit time budget says it is
  machine-dependent.
* An interrupted run (at several points: inside the regressor's epochs, between the networks,
  inside a flow epoch, before the transition matrix; once or twice) resumes from its checkpoint
  and ends bit-identical to an uninterrupted run; a checkpoint of other settings is refused.

Every comparison is exact (torch.equal / assert_array_equal): determinism means the same bits.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import write_linear_gaussian
from fcmlc.cli import main
from fcmlc.dataset import open_dataset
from fcmlc.exceptions import IncompatibleError, OutputExistsError
from fcmlc.models import TrainConfig, train
from fcmlc.models.checkpoint import TrainingCheckpoint, checkpoint_dir
from fcmlc.models.samples import Samples
from fcmlc.physics import Grid

A = np.array([[1.0, 0.3], [0.2, 1.0], [0.7, -0.5]])

# Every kind of state a resume must restore acts in this run (the reference fixture asserts it):
# regressor dropout masks (a generator carried across epochs); a reduce-on-plateau schedule that
# halves the learning rate three times (patience 0); a regressor whose best epoch is not its last
# (the early-stopping record picks the weights); a flow stopped by patience (min_delta 0.1 nats);
# the flow's own dropout (torch's global generator); dequantisation noise.
CFG = {
    "regressor": {"hidden": [16, 8], "max_epochs": 6, "batch_size": 64, "lr": 3e-2, "patience": 10,
                  "lr_plateau_patience": 0},
    "flow": {"n_layers": 1, "hidden": 8, "n_blocks": 1, "max_epochs": 4, "batch_size": 128, "lr": 2e-2,
             "patience": 1, "min_delta": 0.1},
    "yhat_shape": [8, 9], "y_shape": [10, 11], "chunk_rows": 200, "threads": 1,
}
# checkpoint writes of one run with CFG: after regressor epochs 1-5, after the regressor (6),
# after flow epochs 1-2 (7, 8; the third epoch stops it), after the flow (9)
N_SAVES = 9


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_linear_gaussian(tmp_path_factory.mktemp("ds") / "toy.h5", A, 0.3, Grid(shape=(9, 9)), 12, seed=3)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """The uninterrupted run, saved."""
    out = tmp_path_factory.mktemp("ref") / "model"
    model = train(dataset, out=out, config=CFG, device="cpu", seed=4, progress=False)
    r, f = model.info["training"]["regressor"], model.info["training"]["flow"]
    assert r["epochs"] == 6 and len(set(r["lr"])) == 4 and r["best_epoch"] < 5, r
    assert f["epochs"] == 3 and f["stop_reason"] == "patience", f
    return model


def assert_same_model(a, b):
    for name in ("regressor", "flow"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert list(sa) == list(sb)
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{name}.{k} differs"
    np.testing.assert_array_equal(a.transition, b.transition)


class Interrupt:
    """Ctrl-C right after the listed checkpoint writes (1-based counts), or inside an epoch: after
    two chunks (of 4) of the given call of Samples.chunks, i.e. after some optimizer steps that no
    checkpoint holds."""

    def __init__(self, monkeypatch, after_saves=(), at_chunks_call=None):
        self.saves, self.chunk_calls = 0, 0
        after_saves = set(after_saves)
        save, chunks = TrainingCheckpoint.save, Samples.chunks

        def counted_save(ckpt, state):
            save(ckpt, state)
            self.saves += 1
            if self.saves in after_saves:
                raise KeyboardInterrupt

        def counted_chunks(samples, shuffle_seed=None):
            self.chunk_calls += 1
            for i, chunk in enumerate(chunks(samples, shuffle_seed)):
                if self.chunk_calls == at_chunks_call and i == 2:
                    raise KeyboardInterrupt
                yield chunk

        monkeypatch.setattr(TrainingCheckpoint, "save", counted_save)
        monkeypatch.setattr(Samples, "chunks", counted_chunks)


# ---------------------------------------------------------------------------------------------
# determinism


def test_fast_preset_stops_on_epochs_not_on_the_clock():
    for preset in ("fast", "paper"):
        assert TrainConfig.preset(preset, ["STEREO"]).time_budget is None
    fast = TrainConfig.fast(["STEREO"])
    # the settings measured in benchmarks/results/training_presets.md
    assert (fast.regressor.batch_size, fast.regressor.max_epochs, fast.regressor.patience) == (256, 200, 8)
    assert (fast.flow.batch_size, fast.flow.lr, fast.flow.max_epochs, fast.flow.lr_schedule) == (2048, 2e-3, 8, "cosine")


def test_same_seed_same_bits_while_the_other_core_is_busy(dataset, reference):
    def run(threads, busy):
        if not busy:
            return train(dataset, config={**CFG, "threads": threads}, device="cpu", seed=4, progress=False)
        # a second process spinning on a core for the whole run (it says when it has started)
        spinner = subprocess.Popen([sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert spinner.stdout.readline().strip() == "spinning"
            return train(dataset, config={**CFG, "threads": threads}, device="cpu", seed=4, progress=False)
        finally:
            spinner.kill()
            spinner.wait()

    assert_same_model(run(1, busy=True), reference)  # and the reference was saved: same bits in memory
    assert_same_model(run(2, busy=True), run(2, busy=False))
    assert reference.info["training"]["machine_dependent"] is False


def test_streamed_and_in_memory_training_sets_give_the_same_model(dataset, reference):
    streamed = train(dataset, config={**CFG, "in_memory": False}, device="cpu", seed=4, progress=False)
    assert streamed.info["dataset"]["in_memory"] is False and reference.info["dataset"]["in_memory"] is True
    assert_same_model(streamed, reference)


@pytest.mark.parametrize("chunk_rows", [200, 701, 1000])
def test_streamed_chunks_equal_in_memory_chunks(dataset, monkeypatch, chunk_rows):
    # a read window of 500 samples (2^18 in use) so that window boundaries fall inside this dataset
    monkeypatch.setattr(Samples, "window_rows", 500)
    with open_dataset(dataset) as ds:
        idx = np.sort(np.random.default_rng(0).choice(ds.split_indices("train"), 701, replace=False))
        mem, disk = (Samples(ds, idx, None, in_memory, chunk_rows) for in_memory in (True, False))
        for seed in (None, (4, 14, 0), (4, 27, 3)):
            got = list(zip(mem.chunks(seed), disk.chunks(seed)))
            assert len(got) == -(-701 // chunk_rows)
            for (xm, ym), (xd, yd) in got:
                np.testing.assert_array_equal(xm, xd)
                np.testing.assert_array_equal(ym, yd)


def test_time_budget_is_recorded_as_machine_dependent(dataset, tmp_path, capsys):
    out = tmp_path / "m"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CFG))
    assert main(["train", str(dataset), "-o", str(out), "--config", str(cfg), "--time-budget", "1e-4",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "MACHINE-DEPENDENT: a wall-clock time budget of 0.0001 s was set: it stopped the regressor and the " \
           "flow" in capsys.readouterr().out
    tr = json.loads((out / "config.json").read_text())["training"]
    assert tr["machine_dependent"] is True and "time budget" in tr["machine_dependent_reason"]
    assert tr["regressor"]["stop_reason"] == "time_budget"


# ---------------------------------------------------------------------------------------------
# checkpoints and resume


@pytest.mark.parametrize("after_saves, at_chunks_call", [
    ((4,), None),  # inside the regressor's epochs, after its best epoch
    ((6,), None),  # regressor done, flow not started
    ((), 16),      # inside the flow's second epoch (calls before: the moments, 6 x (epoch, validation) of
                   # the regressor, the flow's validation set, its first epoch)
    ((8,), None),  # flow: two epochs done, the third stops it by patience
    ((N_SAVES,), None),  # both networks done, transition matrix pending
    ((2, 7), None),  # interrupted twice
])
def test_interrupted_run_resumes_to_the_same_model(dataset, reference, tmp_path, monkeypatch, capsys,
                                                   after_saves, at_chunks_call):
    out = tmp_path / "model"
    ckpt_file = checkpoint_dir(out) / "checkpoint.pt"
    with monkeypatch.context() as m:
        Interrupt(m, after_saves, at_chunks_call)
        for _ in range(len(after_saves) or 1):
            with pytest.raises(KeyboardInterrupt, match="interrupted: checkpoint kept in"):
                train(dataset, out=out, config=CFG, device="cpu", seed=4, progress=False)
            assert ckpt_file.is_file() and not out.exists()
    model = train(dataset, out=out, config=CFG, device="cpu", seed=4, progress=False)
    assert "resuming the interrupted training run" in capsys.readouterr().err
    assert_same_model(model, reference)
    from fcmlc.models import FCMLC

    assert_same_model(FCMLC.load(out, device="cpu"), reference)
    assert not checkpoint_dir(out).exists()  # the partial area is gone after success
    tr = model.info["training"]
    assert len(tr["resumed"]) == max(1, len(after_saves))
    ref = reference.info["training"]
    for net in ("regressor", "flow"):
        for k in ("epochs", "best_epoch", "stop_reason"):
            assert tr[net][k] == ref[net][k], (net, k)
    assert tr["regressor"]["lr"] == ref["regressor"]["lr"] and tr["flow"]["val_nll"] == ref["flow"]["val_nll"]


def test_checkpoint_of_other_settings_is_refused(dataset, tmp_path, monkeypatch):
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        Interrupt(m, (2,))
        with pytest.raises(KeyboardInterrupt):
            train(dataset, out=out, config=CFG, device="cpu", seed=4, progress=False)
    other = {**CFG, "flow": {**CFG["flow"], "max_epochs": 2}}
    with pytest.raises(IncompatibleError, match=r"seed: checkpoint has 4, this run 5.*--restart"):
        train(dataset, out=out, config=CFG, device="cpu", seed=5, progress=False)
    with pytest.raises(IncompatibleError, match=r"config\.flow\.max_epochs: checkpoint has 4, this run 2"):
        train(dataset, out=out, config=other, device="cpu", seed=4, progress=False)
    with pytest.raises(IncompatibleError, match=r"torch_threads: checkpoint has 1, this run 2"):
        train(dataset, out=out, config={**CFG, "threads": 2}, device="cpu", seed=4, progress=False)
    model = train(dataset, out=out, config=other, device="cpu", seed=4, progress=False, restart=True)
    assert model.info["training"]["resumed"] == [] and model.info["training"]["flow"]["epochs"] == 2
    assert not checkpoint_dir(out).exists()


def test_cli_ctrl_c_keeps_the_checkpoint_and_the_same_command_resumes(dataset, reference, tmp_path, monkeypatch,
                                                                      capsys):
    out = tmp_path / "model"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CFG))
    argv = ["train", str(dataset), "-o", str(out), "--config", str(cfg), "--seed", "4", "--device", "cpu",
            "--no-progress"]
    with monkeypatch.context() as m:
        Interrupt(m, (7,))
        assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fcmlc train: interrupted: checkpoint kept in ")
    assert "(regressor done, flow: 1 epoch done); rerun the same command to resume" in err[0]
    assert main(argv) == 0
    assert "resumed from a checkpoint (regressor done, flow: 1 epoch done)" in capsys.readouterr().out
    from fcmlc.models import FCMLC

    assert_same_model(FCMLC.load(out, device="cpu"), reference)


def test_model_directory_replaced_whole_and_foreign_directory_refused(dataset, reference, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "regressor.pt").write_bytes(b"an older model's file")
    cfg = {**CFG, "regressor": {**CFG["regressor"], "max_epochs": 1}, "flow": {**CFG["flow"], "max_epochs": 1}}
    train(dataset, out=out, config=cfg, device="cpu", seed=4, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "flow.pt", "regressor.pt", "scalers.npz",
                                                     "transition.npz"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"holds files that are not a model's \(keep\.txt\)"):
        train(dataset, out=tmp_path / "notes", config=cfg, device="cpu", seed=4, progress=False)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_cosine_flow_schedule_decays_and_resumes_to_the_same_model(dataset, tmp_path, monkeypatch):
    """The cosine learning rate is a function of the position in the run only: a run interrupted
    after its first flow epoch resumes to the same weights as an uninterrupted one."""
    cfg = {**CFG, "flow": {**CFG["flow"], "lr_schedule": "cosine", "patience": 10, "min_delta": 0.0}}
    ref = train(dataset, config=cfg, device="cpu", seed=4, progress=False)
    f = ref.info["training"]["flow"]
    assert f["epochs"] == 4
    # lr recorded after each epoch e: the value at its last step, between the schedule's values at the
    # epoch's end and start, lr (1 + cos(pi t / 4)) / 2 with t = e + 1 and t = e
    cos = [2e-2 * 0.5 * (1 + np.cos(np.pi * t / 4)) for t in range(5)]
    assert all(cos[e + 1] < got < cos[e] for e, got in enumerate(f["lr"])), f["lr"]
    out = tmp_path / "model"
    with monkeypatch.context() as m:
        Interrupt(m, (7,))
        with pytest.raises(KeyboardInterrupt):
            train(dataset, out=out, config=cfg, device="cpu", seed=4, progress=False)
    assert_same_model(train(dataset, out=out, config=cfg, device="cpu", seed=4, progress=False), ref)
    with pytest.raises(ValueError, match="lr_schedule"):
        train(dataset, config={**CFG, "flow": {"lr_schedule": "linear"}}, device="cpu", seed=4, progress=False)


def test_same_seed_gives_byte_identical_model_files(dataset, reference, tmp_path):
    """Not only the same tensors: the same bytes (torch names the archive inside a file after the
    file's name; the model files are written through a file object so a temporary name with the
    process id does not end up in them), so the checksums in config.json agree across runs."""
    a = train(dataset, out=tmp_path / "a", config=CFG, device="cpu", seed=4, progress=False)
    reference.save(tmp_path / "b")
    assert_same_model(a, reference)
    for name in ("regressor.pt", "flow.pt", "scalers.npz", "transition.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    import zipfile

    for name in ("regressor.pt", "flow.pt"):  # no per-process name inside (another process gives the same bytes)
        assert {n.split("/")[0] for n in zipfile.ZipFile(tmp_path / "a" / name).namelist()} == {"archive"}
