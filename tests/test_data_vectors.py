"""fcmlc.data_vectors (the data vector of a fit or scan: a file, the published data, or the
expectation / one realization at a point) and fcmlc.fit_summary (a fit's summary.json)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fcmlc import experiments as ex
from fcmlc.data_vectors import (DataSource, data_source, experiment_set_asimov, model_data_source,
                                model_experiments, observed_vector, read_vector)
from fcmlc.fit_summary import SUMMARY_LEVELS, fit_summary
from fcmlc.physics import Grid
from fcmlc.posterior import Posterior
from fcmlc.simulation import realizations


def test_read_vector_formats(tmp_path):
    x = np.array([1.5, -2.0, 3.25])
    np.savetxt(tmp_path / "x.txt", x)
    np.savetxt(tmp_path / "x.csv", x[None, :], delimiter=",")  # one row: reshaped to a vector
    np.save(tmp_path / "x.npy", x[:, None])  # one column: reshaped to a vector
    np.savez(tmp_path / "named.npz", x=x, other=np.zeros(7))
    np.savez(tmp_path / "single.npz", whatever=x)
    for name in ("x.txt", "x.csv", "x.npy", "named.npz", "single.npz"):
        np.testing.assert_array_equal(read_vector(tmp_path / name, 3), x)

    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(ValueError, match="several arrays"):
        read_vector(tmp_path / "two.npz", 3)
    with pytest.raises(ValueError, match="one vector of 4 values"):
        read_vector(tmp_path / "x.txt", 4)
    np.save(tmp_path / "m.npy", np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        read_vector(tmp_path / "m.npy", 3)
    (tmp_path / "bad.txt").write_text("1 2 x\n")
    with pytest.raises(ValueError, match="cannot read"):
        read_vector(tmp_path / "bad.txt", 3)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_vector(tmp_path / "missing.txt", 3)


def _exps(*observed):
    items = [SimpleNamespace(name=f"E{i}", observed=o) for i, o in enumerate(observed)]
    return SimpleNamespace(experiments=items, names=[e.name for e in items])


def test_observed_vector():
    np.testing.assert_array_equal(observed_vector(_exps([1, 2], [3.0])), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"no published data for E1 \(of E0, E1\)"):
        observed_vector(_exps([1, 2], None))


def test_data_source_choices(tmp_path):
    calls = []

    def load():
        calls.append("load")
        return _exps([4.0, 5.0])

    def asimov(exps, ue4, dm2, seed):
        return np.array([ue4, dm2]) if seed is None else np.array([ue4, dm2]) + seed

    np.savetxt(tmp_path / "x.txt", [1.0, 2.0])
    src = data_source(2, load, asimov, data=tmp_path / "x.txt")
    assert isinstance(src, DataSource) and not calls  # a file needs no experiments
    assert src.meta == {"input": "data", "file": str((tmp_path / "x.txt").resolve())} and src.truth is None
    assert src.experiments is None

    src = data_source(2, load, asimov, observed=True)
    np.testing.assert_array_equal(src.x, [4.0, 5.0])
    assert src.meta == {"input": "observed"} and src.description == "observed data" and calls == ["load"]

    src = data_source(2, load, asimov, asimov=(0.1, 2.0))
    np.testing.assert_array_equal(src.x, [0.1, 2.0])
    assert src.meta == {"input": "asimov", "ue4": 0.1, "dm2": 2.0} and src.truth == (0.1, 2.0)
    src = data_source(2, load, asimov, asimov=(0.1, 2.0), seed=3)
    np.testing.assert_array_equal(src.x, [3.1, 5.0])
    assert src.meta == {"input": "realization", "ue4": 0.1, "dm2": 2.0, "seed": 3}
    assert "seed 3" in src.description

    with pytest.raises(ValueError, match="--seed only applies to --asimov"):
        data_source(2, load, asimov, observed=True, seed=1)
    with pytest.raises(ValueError, match="exactly one"):
        data_source(2, load, asimov)
    with pytest.raises(ValueError, match="exactly one"):
        data_source(2, load, asimov, observed=True, asimov=(0.1, 1.0))
    with pytest.raises(ValueError, match=r"\|Ue4\| must lie in \[0, 1\]"):
        data_source(2, load, asimov, asimov=(1.5, 1.0))


def _model(names=("BEST",), n_features=None, hashes=None):
    n = ex.combine([ex.load(n) for n in names]).n_bins if n_features is None else n_features
    return SimpleNamespace(experiments=list(names), n_features=n, version="test",
                           info={"experiment_hashes": hashes or {}, "directory": "/m"})


def test_model_experiments_and_data_source():
    best = ex.load("BEST")
    model = _model(hashes={"BEST": best.definition_hash})
    eset = model_experiments(model)
    assert eset.names == ["BEST"] and eset.n_bins == model.n_features
    with pytest.warns(UserWarning, match="differs from the one the model was trained on"):
        model_experiments(_model(hashes={"BEST": "other"}))
    with pytest.raises(ValueError, match="the model expects 99 features"):
        model_experiments(_model(n_features=99))
    with pytest.raises(ValueError, match="cannot load the model's experiments"):
        model_experiments(SimpleNamespace(experiments=["NOPE"], n_features=2, info={}))

    src = model_data_source(model, asimov=(0.3, 2.0))
    np.testing.assert_allclose(src.x, np.asarray(eset.expectation(0.3, 2.0), dtype=float).reshape(-1))
    assert src.experiments.names == ["BEST"]
    src = model_data_source(model, asimov=(0.3, 2.0), seed=5)
    np.testing.assert_array_equal(src.x, realizations(eset, [0.3], [2.0], n_per_point=1, seed=5)[0, 0])
    np.testing.assert_array_equal(src.x, experiment_set_asimov(eset, 0.3, 2.0, seed=5))
    np.testing.assert_array_equal(model_data_source(model, observed=True).x, observed_vector(eset))


def test_fit_summary():
    g = Grid.square(30)
    U, D = np.meshgrid(np.log10(g.ue4), np.log10(g.dm2))
    post = Posterior(g.ue4, g.dm2, np.exp(-0.5 * (((U + 1.2) / 0.3) ** 2 + (D / 0.4) ** 2)))
    model = SimpleNamespace(experiments=["BEST"], version="9.9", info={"directory": "/m"})
    s = fit_summary(post, model, {"input": "observed", "samples": 10})
    ps = post.summary(levels=SUMMARY_LEVELS)
    assert s["input"] == "observed" and s["samples"] == 10 and s["best_point"] == ps["best_point"]
    assert [r["level"] for r in s["regions"]] == list(SUMMARY_LEVELS)
    for r in s["regions"]:
        lv = ps["levels"][f"{r['level']:g}"]
        assert (r["cells"], r["fraction"], r["mass"]) == (lv["n_cells"], lv["area_fraction"], lv["mass"])
    assert set(s["excludes_null"]) == {"0.68", "0.90", "0.95"}
    assert s["model"] == {"directory": "/m", "experiments": ["BEST"], "fcmlc_version": "9.9"}
    assert s["edge_warnings"] == ps["edge_warnings"]
    json.dumps(s)  # JSON-able as it is
    assert [r["level"] for r in fit_summary(post, model, {}, levels=(0.9,))["regions"]] == [0.9]
