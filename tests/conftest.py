"""Shared fixtures and helpers.

* The public data releases (../shared/data next to the repository): tests that need a release
  skip, saying which folder was missing, when it is absent.
* Toy datasets in the real on-disk format (:func:`write_dataset`, :func:`write_linear_gaussian`)
  for the learning tests.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from fcmlc import experiments as ex
from fcmlc.dataset import DatasetSpec, create, write_chunk

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROSPECT_DIR = DATA / "prospect-2020-oscillation"
DANSS_DIR = DATA / "danss-2018"
NEOS_DIR = DATA / "neos-2017"


def need(path: Path) -> Path:
    """`path` if it is a directory; otherwise skip the test, naming what is missing."""
    if not path.is_dir():
        pytest.skip(f"public data not available: {path} (expected ../shared/data next to the repository)")
    return path


@pytest.fixture(scope="module")
def prospect():
    return ex.load_prospect_release(need(PROSPECT_DIR))


@pytest.fixture(scope="module")
def danss():
    return ex.load_danss_ratio(need(DANSS_DIR))


@pytest.fixture(scope="module")
def neos():
    return ex.load_neos_ratio(need(NEOS_DIR))


# ---------------------------------------------------------------------------------------------
# toy datasets


def write_dataset(path, grid, data: dict, seed: int, hashes=None, normalisation: str | None = None) -> Path:
    """A complete dataset file in the real on-disk format (fcmlc.dataset.create, paper split)
    holding ``data`` ({experiment: array (grid.n_points, n_per_point, n_bins)}) as its realizations.
    ``hashes``: the experiments' definition hashes (default: "<name>-toy")."""
    names = tuple(data)
    arrays = [np.asarray(data[n]) for n in names]
    n_per_point = arrays[0].shape[1]
    hashes = tuple(hashes) if hashes is not None else tuple(f"{n}-toy" for n in names)
    spec = DatasetSpec(names, hashes, tuple(a.shape[2] for a in arrays), grid, n_per_point, seed, "float32",
                       normalisation)
    create(Path(path), spec, chunk_points=grid.n_points)
    with h5py.File(path, "r+") as f:
        write_chunk(f, spec, grid.n_points, 0, arrays)  # with its checksum; no model bounds (toy data)
        f.attrs["complete"] = True
    return Path(path)


def write_linear_gaussian(path, A, sigma, grid, n_per_point, seed, name="TOY") -> Path:
    """A dataset whose realizations are x = A y + N(0, sigma^2 I), y = (log10|Ue4|, log10 dm2) of
    the grid point (:func:`write_dataset`)."""
    A = np.asarray(A, dtype=float)
    y = np.log10(grid.points())
    rng = np.random.default_rng(seed)
    x = (y @ A.T)[:, None, :] + sigma * rng.standard_normal((grid.n_points, n_per_point, A.shape[0]))
    return write_dataset(path, grid, {name: x}, seed, hashes=(f"linear-gaussian-{seed}",))


def write_untrained_best_model(out) -> tuple:
    """A real FCMLC model directory for BEST with an untrained (seeded) network and a Gaussian
    transition matrix, over a 9 x 9 grid: the pipeline, I/O and commands run end to end in seconds.
    Returns (directory, grid)."""
    import torch

    from fcmlc.models import FCMLC, CellGrid, ConditionalFlow, MCDropoutMLP, Regressor, Standardizer
    from fcmlc.physics import Grid

    e = ex.load("BEST")
    grid = Grid(shape=(9, 9))
    torch.manual_seed(0)
    net = MCDropoutMLP(2, (8,), 0.1)
    xs = Standardizer(e.null_expectation, np.sqrt(np.diag(e.covariance)))
    centre = [np.mean(np.log10(grid.ue4_range)), np.mean(np.log10(grid.dm2_range))]
    ys = Standardizer(centre, [0.4, 0.4])
    reg = Regressor(net, xs, ys, "cpu")
    flow = ConditionalFlow.create(ys, seed=0, n_layers=1, hidden=8, n_blocks=1)
    yhat, yg = CellGrid.over(grid, (8, 8)), CellGrid.over(grid, (8, 8))
    d2 = ((yhat.log_points()[:, None, :] - yg.log_points()[None, :, :]) ** 2).sum(-1)
    T = np.exp(-0.5 * d2 / 0.5 ** 2)
    T /= T.sum(axis=1, keepdims=True) * yg.cell_area
    info = {"experiment_bins": {"BEST": 2}, "experiment_hashes": {"BEST": e.definition_hash},
            "dataset": {"grid": grid.to_dict()}}
    FCMLC(reg, flow, T, yhat, yg, ["BEST"], {}, info).save(out)
    return Path(out), grid
