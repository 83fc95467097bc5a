"""Unit tests of the learning components: MC-dropout regressor, scalers, flow, model directory."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import write_dataset, write_linear_gaussian
from fcmlc.dataset import open_dataset
from fcmlc.models import (FCMLC, CellGrid, ConditionalFlow, MCDropoutMLP, ModelDirectoryError, Regressor,
                          Standardizer, TrainConfig, default_hidden_layers, train, transition_matrix)
from fcmlc.physics import Grid

# ---------------------------------------------------------------------------------------------
# helpers


A_SMALL = np.array([[1.0, 0.3], [0.2, 1.0], [0.7, -0.5]])

TINY = {
    "regressor": {"hidden": [16, 8], "max_epochs": 2, "batch_size": 128},
    "flow": {"n_layers": 1, "hidden": 8, "n_blocks": 1, "max_epochs": 2},
    "yhat_shape": [8, 9], "y_shape": [10, 11], "time_budget": None,
}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    p = tmp_path_factory.mktemp("ds") / "tiny.h5"
    return write_linear_gaussian(p, A_SMALL, 0.3, Grid(shape=(9, 9)), 10, seed=3)


@pytest.fixture(scope="module")
def tiny_model(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    model = train(tiny_dataset, out=out, config=TINY, device="cpu", seed=5, progress=False)
    return model, out


# ---------------------------------------------------------------------------------------------
# regressor


def test_table_iii_layer_sizes():
    assert default_hidden_layers(1) == (100, 100, 50, 25, 10)
    assert default_hidden_layers(6) == (150, 100, 50, 25, 25)
    cfg = TrainConfig.default(["BEST"])
    assert cfg.flow.dropout == 0.10 and cfg.flow.weight_decay == 1e-5  # Table IV, BEST row
    paper = TrainConfig.paper(["STEREO"])
    assert (paper.regressor.batch_size, paper.regressor.lr, paper.regressor.patience) == (32, 1e-3, 50)
    assert (paper.flow.batch_size, paper.flow.lr, paper.flow.dropout) == (512, 5e-4, 0.15)


def _regressor(n_features=7, hidden=(12, 6), dropout=0.2, seed=0):
    torch.manual_seed(seed)
    net = MCDropoutMLP(n_features, hidden, dropout)
    rng = np.random.default_rng(seed)
    xs = Standardizer(rng.normal(size=n_features), rng.uniform(0.5, 2.0, n_features))
    ys = Standardizer([-1.5, -0.5], [0.8, 0.9])
    return Regressor(net, xs, ys, "cpu")


def test_regressor_shapes_and_dropout_placement():
    reg = _regressor()
    assert [m.in_features for m in reg.net.hidden] == [7, 12]
    assert reg.net.out.out_features == 2
    s = reg.predict_samples(np.zeros((3, 7)), n_samples=5, seed=1)
    assert s.shape == (3, 5, 2) and s.dtype == np.float64
    assert reg.predict_samples(np.zeros(7), n_samples=4, seed=1).shape == (1, 4, 2)
    with pytest.raises(ValueError, match=r"\(n, 7\)"):
        reg.predict_samples(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="NaN"):
        reg.predict_samples(np.full(7, np.nan))


def test_mc_dropout_is_stochastic_in_eval_mode_and_reproducible():
    reg = _regressor()
    reg.net.eval()  # dropout must stay on regardless
    x = np.random.default_rng(2).normal(size=(4, 7))
    a = reg.predict_samples(x, n_samples=200, seed=11)
    b = reg.predict_samples(x, n_samples=200, seed=11)
    c = reg.predict_samples(x, n_samples=200, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(a.std(axis=1) > 0)  # stochastic predictions for every data vector
    # more rows than one network pass (several dropout-mask blocks): still reproducible
    big = reg.predict_samples(np.repeat(x, 30, axis=0), n_samples=500, seed=3)
    np.testing.assert_array_equal(big, reg.predict_samples(np.repeat(x, 30, axis=0), n_samples=500, seed=3))
    assert not np.array_equal(big[:, :250], big[:, 250:])
    # the global torch RNG is not consumed
    torch.manual_seed(0)
    r0 = torch.rand(3)
    torch.manual_seed(0)
    reg.predict_samples(x, n_samples=10, seed=1)
    assert torch.equal(torch.rand(3), r0)
    # no dropout -> deterministic network
    det = _regressor(dropout=0.0)
    d = det.predict_samples(x, n_samples=3, seed=0)
    np.testing.assert_allclose(d, d[:, :1, :].repeat(3, axis=1))


def test_forward_with_given_masks_equals_generator_draws():
    """Training draws a chunk's masks at once (draw_masks) and slices them per batch; that is
    the same network as drawing per pass from the same generator: the Bernoulli draws come in
    the same order and shapes. The products h * mask * (1/keep) and h * (mask / keep) differ
    only in float32 rounding, hence rtol 1e-6 (a few ulp)."""
    from fcmlc.models.regressor import make_generator

    reg = _regressor(dropout=0.3)
    x = torch.randn(64, reg.n_features)
    a = reg.net(x, generator=make_generator(5))
    masks = reg.net.draw_masks(64, make_generator(5))
    b = reg.net(x, masks=masks)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # row slices of the masks give the rows of the full pass
    torch.testing.assert_close(reg.net(x[10:20], masks=[m[10:20] for m in masks]), b[10:20], rtol=1e-6, atol=1e-6)
    assert not torch.equal(b, reg.net(x, masks=reg.net.draw_masks(64, make_generator(6))))
    with pytest.raises(ValueError, match="dropout masks"):
        reg.net(x, masks=masks[:-1])


def test_standardizer_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    data[:, 2] = 5.0  # constant column: scale 1, maps to 0
    s = Standardizer.fit(data)
    z = s.transform(data)
    np.testing.assert_allclose(z[:, [0, 1, 3]].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, [0, 1, 3]].std(0), 1, atol=1e-12)
    assert s.scale[2] == 1.0 and np.all(z[:, 2] == 0)
    np.testing.assert_allclose(s.inverse(z), data, rtol=0, atol=1e-12)
    zt = s.transform(torch.as_tensor(data, dtype=torch.float64))
    np.testing.assert_allclose(zt.numpy(), z)
    np.savez(tmp_path / "s.npz", **s.to_arrays("x"))
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        s2 = Standardizer.from_arrays(f, "x")
    np.testing.assert_array_equal(s2.mean, s.mean)
    np.testing.assert_array_equal(s2.scale, s.scale)
    with pytest.raises(ValueError):
        Standardizer([0.0], [0.0])


# ---------------------------------------------------------------------------------------------
# flow and transition matrix


def test_transition_matrix_is_normalised_over_y():
    ys = Standardizer([-1.5, -0.5], [0.8, 0.9])
    flow = ConditionalFlow.create(ys, seed=1, n_layers=1, hidden=8, n_blocks=1)
    g = Grid.paper()
    yhat_grid, y_grid = CellGrid.over(g, (4, 5)), CellGrid.over(g, (6, 7))
    T = transition_matrix(flow, yhat_grid, y_grid, progress=False)
    assert T.shape == (20, 42) and T.dtype == np.float32
    np.testing.assert_allclose(T.sum(axis=1) * y_grid.cell_area, 1.0, rtol=1e-5)
    # T[k, c] is the flow's density at (y_c | y_hat_k), up to the row normalisation
    k, c = 7, 30
    lp = flow.log_prob(y_grid.log_points()[[c, c + 1]], yhat_grid.log_points()[[k, k]])
    assert T[k, c] / T[k, c + 1] == pytest.approx(np.exp(lp[0] - lp[1]), rel=1e-4)
    # cells: |Ue4| fastest, edges cover the paper's ranges
    np.testing.assert_allclose(10 ** y_grid.log_ue4_edges[[0, -1]], g.ue4_range)
    assert y_grid.log_points()[1, 1] == y_grid.log_points()[0, 1]


# ---------------------------------------------------------------------------------------------
# the pipeline: training, posterior, save / load


def test_train_writes_complete_model_directory(tiny_model):
    model, out = tiny_model
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "flow.pt", "regressor.pt", "scalers.npz", "transition.npz"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "fcmlc-model" and cfg["format_version"] == 2
    assert cfg["experiments"] == ["TOY"] and cfg["n_features"] == 3
    assert cfg["experiment_hashes"] == {"TOY": "linear-gaussian-3"}
    assert cfg["dataset"]["seed"] == 3 and cfg["dataset"]["path"].endswith("tiny.h5")
    assert set(cfg["files"]) == {"regressor.pt", "flow.pt", "scalers.npz", "transition.npz"}
    assert cfg["regressor"]["hidden"] == [16, 8] and cfg["training"]["regressor"]["epochs"] == 2
    assert model.transition.shape == (72, 110)


def test_posterior_batch_and_seed(tiny_model):
    model, _ = tiny_model
    x = np.array([[-2.0, -0.5, -1.0], [-0.8, 0.3, -0.2]])
    posts = model.posterior(x, n_samples=200, seed=4)
    assert isinstance(posts, list) and len(posts) == 2
    single = model.posterior(x[0], n_samples=200, seed=4)
    d_batch = model.posterior_density(x, n_samples=200, seed=4)
    d_again = model.posterior_density(x, n_samples=200, seed=4)
    np.testing.assert_array_equal(d_batch, d_again)
    assert d_batch.shape == (2, 11, 10)  # (n, n_dm2, n_ue4)
    assert np.all(d_batch >= 0) and np.all(d_batch.sum(axis=(1, 2)) > 0)
    assert not np.array_equal(d_batch, model.posterior_density(x, n_samples=200, seed=5))
    assert type(single).__name__ == "Posterior"


def test_bad_x_refused_with_clear_error(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ValueError, match=r"3 features = the bins of TOY \(3 bins\)"):
        model.posterior(np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        model.posterior(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.posterior(np.array([0.0, np.inf, 1.0]))
    with pytest.raises(ValueError):
        model.posterior(np.zeros((1, 3, 1)))


def test_save_load_round_trip_identical_posteriors(tiny_model, tmp_path):
    model, out = tiny_model
    loaded = FCMLC.load(out, device="cpu")
    assert loaded.experiments == ["TOY"] and loaded.n_features == 3
    np.testing.assert_array_equal(loaded.transition, model.transition)
    x = np.array([[-2.0, -0.5, -1.0], [-0.8, 0.3, -0.2]])
    np.testing.assert_array_equal(loaded.posterior_density(x, n_samples=300, seed=9),
                                  model.posterior_density(x, n_samples=300, seed=9))
    # saving the loaded model again gives a loadable, equivalent directory
    loaded.save(tmp_path / "again")
    again = FCMLC.load(tmp_path / "again", device="cpu")
    np.testing.assert_array_equal(again.sample_yhat(x, 50, seed=1), model.sample_yhat(x, 50, seed=1))


def _copy(out, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(out, dst)
    return dst


def test_corrupted_file_refused(tiny_model, tmp_path):
    _, out = tiny_model
    d = _copy(out, tmp_path)
    raw = bytearray((d / "regressor.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "regressor.pt").write_bytes(bytes(raw))
    with pytest.raises(ModelDirectoryError, match=r"regressor\.pt: sha256 checksum mismatch"):
        FCMLC.load(d)
    (d / "flow.pt").unlink()
    with pytest.raises(ModelDirectoryError, match=r"flow\.pt is missing"):
        FCMLC.load(d)


def test_mismatched_config_refused(tiny_model, tmp_path):
    _, out = tiny_model
    d = _copy(out, tmp_path)
    cfg = json.loads((d / "config.json").read_text())

    def write(c):
        (d / "config.json").write_text(json.dumps(c))

    write({**cfg, "format_version": 99})
    with pytest.raises(ModelDirectoryError, match="format version 99"):
        FCMLC.load(d)
    write({**cfg, "regressor": {**cfg["regressor"], "hidden": [16, 9]}})
    with pytest.raises(ModelDirectoryError, match=r"regressor\.pt: the regressor weights do not match"):
        FCMLC.load(d)
    write({**cfg, "n_features": 4, "regressor": {**cfg["regressor"], "n_features": 4}})
    with pytest.raises(ModelDirectoryError, match=r"scalers\.npz: input scaler has 3 features"):
        FCMLC.load(d)
    write({**cfg, "grids": {**cfg["grids"], "y": {**cfg["grids"]["y"], "shape": [12, 11]}}})
    with pytest.raises(ModelDirectoryError, match=r"transition\.npz: T has shape"):
        FCMLC.load(d)
    write({**cfg, "flow": {**cfg["flow"], "hidden": 9}})
    with pytest.raises(ModelDirectoryError, match=r"flow\.pt: the flow weights do not match"):
        FCMLC.load(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelDirectoryError, match="config.json: not valid JSON"):
        FCMLC.load(d)
    with pytest.raises(ModelDirectoryError, match="not a directory"):
        FCMLC.load(tmp_path / "nowhere")


def test_same_seed_same_model(tiny_dataset, tiny_model):
    model, _ = tiny_model
    again = train(tiny_dataset, config=TINY, device="cpu", seed=5, progress=False)
    for k, v in model.regressor.state_dict().items():
        assert torch.equal(v, again.regressor.state_dict()[k]), k
    np.testing.assert_array_equal(model.transition, again.transition)


def test_streaming_matches_in_memory_shapes(tiny_dataset):
    cfg = {**TINY, "in_memory": False, "chunk_rows": 100,
           "regressor": {**TINY["regressor"], "max_epochs": 1}, "flow": {**TINY["flow"], "max_epochs": 1}}
    model = train(tiny_dataset, config=cfg, device="cpu", seed=1, progress=False)
    assert model.info["dataset"]["in_memory"] is False
    assert model.posterior_density(np.zeros(3), n_samples=50).shape == (1, 11, 10)


def test_time_budget_stops_gracefully(tiny_dataset):
    cfg = {**TINY, "time_budget": 0.01, "regressor": {**TINY["regressor"], "max_epochs": 1000},
           "flow": {**TINY["flow"], "max_epochs": 1000}}
    model = train(tiny_dataset, config=cfg, device="cpu", seed=1, progress=False)
    tr = model.info["training"]
    assert tr["regressor"]["stop_reason"] == "time_budget" and tr["flow"]["stop_reason"] == "time_budget"
    # The budget is checked after each epoch: training stops long before max_epochs, with at
    # least one finished epoch (a tiny dataset's epoch may take less than the 10 ms budget).
    assert 1 <= tr["regressor"]["epochs"] < 1000 and np.isfinite(tr["regressor"]["best_val_mse"])


def test_experiment_subset_selects_columns(tmp_path):
    grid = Grid(shape=(5, 5))
    rng = np.random.default_rng(0)
    data = {"A": rng.normal(size=(25, 6, 2)), "B": rng.normal(size=(25, 6, 3))}
    p = write_dataset(tmp_path / "two.h5", grid, data, 0, hashes=("ha", "hb"))
    cfg = {**TINY, "regressor": {**TINY["regressor"], "max_epochs": 1}, "flow": {**TINY["flow"], "max_epochs": 1}}
    m = train(p, experiments=["B"], config=cfg, device="cpu", progress=False)
    assert m.experiments == ["B"] and m.n_features == 3 and m.info["experiment_hashes"] == {"B": "hb"}
    with open_dataset(p) as ds:
        with pytest.raises(ValueError, match=r"not in the dataset"):
            train(ds, experiments=["C"], config=cfg, progress=False)


def test_cli_train_and_fit(tiny_dataset, tmp_path, capsys):
    from fcmlc.cli import inference as cli_inference
    import argparse

    parser = argparse.ArgumentParser(prog="fcmlc")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_inference.register(sub)
    out = tmp_path / "model"
    cfg = json.dumps({k: v for k, v in TINY.items() if k != "time_budget"})
    args = parser.parse_args(["train", str(tiny_dataset), "-o", str(out), "--epochs", "1", "--time-budget", "0",
                              "--device", "cpu", "--config", cfg, "--no-progress", "--seed", "2"])
    assert args.func(args) == 0
    assert "FCMLC model for TOY (3 features)" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["training_config"]["time_budget"] is None

    vec = tmp_path / "x.txt"
    np.savetxt(vec, [-2.0, -0.5, -1.0])
    res = tmp_path / "res"
    args = parser.parse_args(["fit", str(out), "--data", str(vec), "-o", str(res), "--samples", "200"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "best point: |Ue4| =" in text and "90% credible region" in text
    assert {p.name for p in res.iterdir()} == {"posterior.npz", "posterior.png", "summary.json"}
    summary = json.loads((res / "summary.json").read_text())
    assert summary["input"] == "data" and len(summary["regions"]) == 3
    assert set(summary["excludes_null"]) == {"0.68", "0.90", "0.95"}
    # an earlier fit is replaced only with --overwrite (checked before the fit), all files together
    args = parser.parse_args(["fit", str(out), "--data", str(vec), "-o", str(res), "--samples", "200"])
    with pytest.raises(FileExistsError, match="--overwrite"):
        args.func(args)
    args = parser.parse_args(["fit", str(out), "--data", str(vec), "-o", str(res), "--samples", "200", "--overwrite"])
    assert args.func(args) == 0 and json.loads((res / "summary.json").read_text()) == summary | {
        "seconds": json.loads((res / "summary.json").read_text())["seconds"]}
    capsys.readouterr()

    np.save(tmp_path / "bad.npy", np.zeros(5))
    args = parser.parse_args(["fit", str(out), "--data", str(tmp_path / "bad.npy"), "-o", str(res)])
    with pytest.raises(ValueError, match="one vector of 3 values"):
        args.func(args)
    args = parser.parse_args(["fit", str(out), "--observed", "-o", str(res)])
    with pytest.raises(ValueError, match="cannot load the model's experiments"):
        args.func(args)
