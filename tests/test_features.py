"""The network's inputs carry exactly the information of the statistical model: for a shape-only
experiment (free normalisation per group) the FCMLC features and posterior are invariant under a
per-group rescaling of the data vector, as the model says they must be."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_dataset
from fcmlc import experiments as ex
from fcmlc.dataset import normalisation_json
from fcmlc.models import train
from fcmlc.models.features import FeatureMap
from fcmlc.physics import Grid


def test_group_directions_are_invariant_and_exact():
    fm = FeatureMap([0, 1, 0, 1, -1, 2, 2])
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 2, size=(5, 7))  # negative bins and sums happen in background-subtracted data
    f = fm.transform(x)
    # unit vectors per group, pass-through column unchanged
    np.testing.assert_allclose(np.square(f[:, [0, 2]]).sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(np.square(f[:, [5, 6]]).sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_array_equal(f[:, 4], x[:, 4])
    # rescaling a group leaves every feature unchanged (to rounding: one division each)
    c = np.array([3.0, 0.25, 3.0, 0.25, 1.0, 7.5, 7.5])
    np.testing.assert_allclose(fm.transform(x * c), f, rtol=1e-14, atol=0)
    # a single vector gives the batch's row
    np.testing.assert_array_equal(fm.transform(x[2]), f[2])


def test_zero_group_is_named():
    fm = FeatureMap([0, 0, 1, 1], ["A group 0", "A group 1"])
    # a negative group sum is fine (direction defined) ...
    fm.transform(np.array([1.0, 2.0, -3.0, 1.0]))
    # ... an all-zero group is not
    with pytest.raises(ValueError, match=r"data vector 1: every bin of A group 1 is zero"):
        fm.transform(np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 0.0, 0.0]]))


def test_feature_map_follows_the_experiments_model():
    stereo, best = ex.load("STEREO"), ex.load("BEST")
    fm = FeatureMap.from_experiments([stereo, best])
    assert fm.n_features == stereo.n_bins + best.n_bins
    assert fm.n_groups == stereo.n_norm_groups == 21  # one free normalisation per energy bin
    assert np.all(fm.groups[stereo.n_bins:] == -1)  # BEST rates pass through
    # the same from the JSON a dataset records
    fm2 = FeatureMap.from_normalisation(json.loads(normalisation_json([stereo, best])), ["STEREO", "BEST"])
    np.testing.assert_array_equal(fm.groups, fm2.groups)
    # a stated prior on the normalisation makes the rate information: raw bins
    d = stereo.definition()
    d["observable"]["norm_prior"] = 0.05
    with_prior = ex.from_dict(d)
    assert FeatureMap.from_experiments([with_prior]).identity
    # a dataset written before the model was recorded is refused with the reason
    with pytest.raises(ValueError, match="simulate it again"):
        FeatureMap.from_normalisation(None, ["STEREO"])


def _shape_only_dataset(path, grid, n_per_point, seed):
    """Two groups of three bins; the shape inside each group depends on y, the group totals are
    random (free normalisations), so only the shape inside each group carries information."""
    n = 6
    norm = json.dumps({"SHAPE": {"norm_groups": [0, 0, 0, 1, 1, 1], "norm_prior": 0.0}})
    y = np.log10(grid.points())
    rng = np.random.default_rng(seed)
    shape = np.stack([2 + y[:, 0], 2 - 0.5 * y[:, 0], 2 + 0.3 * y[:, 1], 2 + y[:, 1], 2 - 0.4 * y[:, 1],
                      2 + 0.2 * y[:, 0]], axis=1)
    x = shape[:, None, :] * (1 + 0.02 * rng.standard_normal((grid.n_points, n_per_point, n)))
    scale = rng.uniform(0.5, 2.0, size=(grid.n_points, n_per_point, 2))
    x = x * np.repeat(scale, 3, axis=2)
    return write_dataset(path, grid, {"SHAPE": x}, seed, hashes=("shape-toy",), normalisation=norm)


def test_fcmlc_posterior_invariant_under_group_rescaling(tmp_path):
    ds = _shape_only_dataset(tmp_path / "s.h5", Grid(shape=(9, 9)), 12, seed=4)
    cfg = {"regressor": {"hidden": [16, 8], "max_epochs": 2, "batch_size": 128},
           "flow": {"n_layers": 1, "hidden": 8, "n_blocks": 1, "max_epochs": 2},
           "yhat_shape": [8, 9], "y_shape": [10, 11], "time_budget": None}
    model = train(ds, out=tmp_path / "m", config=cfg, device="cpu", seed=1, progress=False)
    assert model.features.n_groups == 2
    x = np.array([2.1, 1.9, 2.0, 2.2, 1.8, 2.05])
    c = np.array([1.7, 1.7, 1.7, 0.6, 0.6, 0.6])
    p1 = model.posterior(x, n_samples=200, seed=3).density
    p2 = model.posterior(x * c, n_samples=200, seed=3).density
    # the features agree to a few float64 ulps; after the float32 network input the densities agree
    # to float32 rounding (a flipped last bit of an input moves an output by ~1e-7 relative)
    np.testing.assert_allclose(p2, p1, rtol=1e-4, atol=1e-6 * p1.max())
    # and the model saved with its feature map reloads to the same posterior
    from fcmlc.models import FCMLC

    loaded = FCMLC.load(tmp_path / "m", device="cpu")
    assert loaded.features.to_dict() == model.features.to_dict()
    np.testing.assert_allclose(loaded.posterior(x * c, n_samples=200, seed=3).density, p2, rtol=1e-6,
                               atol=1e-9 * p2.max())
