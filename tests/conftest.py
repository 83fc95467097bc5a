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
