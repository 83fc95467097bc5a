"""The on-disk simulation dataset (HDF5): schema, creation, resume bookkeeping
(:class:`DatasetOutput`, for :mod:`fcmlc._resumable`), reading.

Schema (format 1)::

    /                      attrs: fcmlc_format=1, fcmlc_version, seed, n_per_point, dtype,
                                  grid (JSON), experiments (JSON list, concatenation order),
                                  experiment_hashes (JSON), chunk_points, complete (bool)
    /grid/ue4 (n_ue4,)     /grid/dm2 (n_dm2,)          float64 axes
    /params (n_points, 2)  (|Ue4|, dm2) of every grid point, |Ue4| fastest
    /data/<NAME>           (n_points, n_per_point, n_bins_NAME) realizations
    /split                 (n_points, n_per_point) int8: 0 train, 1 test (interpolation), 2 test (random)
    /progress/done         (n_chunks,) uint8: chunk of `chunk_points` grid points written

All datasets are contiguous and allocated when the file is created, so writing a
chunk never changes HDF5 metadata: a run killed in the middle of a write leaves a
readable file whose unfinished chunk is simply not marked done, and is redone on resume.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from ._io import atomic_path
from ._resumable import ChunkedOutput
from .physics import Grid

FORMAT = 1
SPLIT_NAMES = {"train": (0,), "test_interpolation": (1,), "test_random": (2,), "test": (1, 2)}
#: RNG stream used for the train/test split (distinct from every experiment stream).
SPLIT_STREAM = 0x5EED5EED5EED5EED


def paper_split(n_points: int, n_per_point: int, seed: int, holdout_fraction: float = 0.10,
                random_fraction: float = 1.0 / 9.0) -> np.ndarray:
    """The paper's split (Sec. II A): 10% of grid points held out entirely (the
    "interpolation sample"), then 1/9 of the remaining realizations at random (the
    "random sample"); the rest is training data. Seeded; returns int8 (n_points, n_per_point)."""
    rng = np.random.Generator(np.random.Philox(key=[seed, SPLIT_STREAM]))
    split = np.zeros((n_points, n_per_point), dtype=np.int8)
    n_hold = int(round(holdout_fraction * n_points))
    held = rng.choice(n_points, size=n_hold, replace=False)
    split[held] = 1
    rest = np.flatnonzero(split.ravel() == 0)
    n_rand = int(round(random_fraction * rest.size))
    split.ravel()[rng.choice(rest, size=n_rand, replace=False)] = 2
    return split


def normalisation_of(experiment) -> dict:
    """{"norm_groups": [...], "norm_prior": sigma} of one experiment (JSON-able)."""
    return {"norm_groups": [int(g) for g in np.asarray(experiment.norm_groups)],
            "norm_prior": float(experiment.norm_prior)}


def normalisation_json(experiments) -> str:
    """The normalisation model of each experiment as stored in a dataset file."""
    return json.dumps({str(e.name): normalisation_of(e) for e in experiments}, sort_keys=True)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines the content of a dataset file."""

    experiments: tuple
    experiment_hashes: tuple
    n_bins: tuple
    grid: Grid
    n_per_point: int
    seed: int
    dtype: str = "float32"
    #: JSON {name: {"norm_groups": [...], "norm_prior": sigma}}: each experiment's normalisation
    #: model, from which a trained network builds its normalisation-invariant features; None:
    #: experiments without free normalisations (raw bins are the features)
    normalisation: str | None = None

    def attrs(self) -> dict:
        return {
            "fcmlc_format": FORMAT,
            "seed": str(self.seed),
            "n_per_point": self.n_per_point,
            "dtype": self.dtype,
            "grid": json.dumps(self.grid.to_dict()),
            "experiments": json.dumps(list(self.experiments)),
            "experiment_hashes": json.dumps(dict(zip(self.experiments, self.experiment_hashes))),
            "normalisation": self.normalisation if self.normalisation is not None else json.dumps(
                {n: {"norm_groups": [-1] * int(b), "norm_prior": 0.0} for n, b in zip(self.experiments, self.n_bins)},
                sort_keys=True),
        }

    def mismatch(self, f: h5py.File) -> list[str]:
        """Names of the settings in which an existing file differs from this spec."""
        want = self.attrs()
        diffs = []
        for key, value in want.items():
            have = f.attrs.get(key)
            if isinstance(have, bytes):
                have = have.decode()
            if have is None or str(have) != str(value):
                diffs.append(f"{key}: file has {have!r}, requested {value!r}")
        return diffs


def create(path: Path, spec: DatasetSpec, chunk_points: int) -> None:
    """Create a new dataset file with every dataset allocated (written to a temporary
    name, then renamed, so a crash never leaves a half-created file at `path`)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        layout(f, spec, chunk_points)


def layout(f: h5py.File, spec: DatasetSpec, chunk_points: int) -> None:
    """Write the attributes, grid, parameters and split of a new dataset into the empty file `f`
    and allocate its data and done-mask (chunks of `chunk_points` grid points)."""
    grid = spec.grid
    n_chunks = -(-grid.n_points // chunk_points)
    dtype = np.dtype(spec.dtype)
    for k, v in spec.attrs().items():
        f.attrs[k] = v
    f.attrs["fcmlc_version"] = __version__
    f.attrs["chunk_points"] = chunk_points
    f.attrs["complete"] = False
    f.create_dataset("grid/ue4", data=grid.ue4)
    f.create_dataset("grid/dm2", data=grid.dm2)
    f.create_dataset("params", data=grid.points())
    f.create_dataset("split", data=paper_split(grid.n_points, spec.n_per_point, spec.seed))
    for name, nb in zip(spec.experiments, spec.n_bins):
        _allocate(f, f"data/{name}", (grid.n_points, spec.n_per_point, nb), dtype)
    _allocate(f, "progress/done", (n_chunks,), np.dtype(np.uint8), fill=True)


class DatasetOutput(ChunkedOutput):
    """A dataset being generated, as a resumable output (:mod:`fcmlc._resumable`): task c is
    the chunk of grid points c * chunk_points ... (c + 1) * chunk_points - 1; its result is the
    realizations of each experiment there."""

    kind = "an fcmlc dataset"

    def __init__(self, spec: DatasetSpec, chunk_points: int):
        self.spec = spec
        self.chunk_points = int(chunk_points)

    def inspect(self, f) -> list[str]:
        """Differing settings; an existing file is resumed with its own chunk size."""
        diffs = self.spec.mismatch(f)
        self.chunk_points = int(f.attrs["chunk_points"])
        f.attrs["complete"]  # noqa: B018 - a KeyError here: not a dataset
        return diffs

    def layout(self, f) -> None:
        layout(f, self.spec, self.chunk_points)

    def pending(self, f) -> list:
        return [int(c) for c in np.flatnonzero(f["progress/done"][...] == 0)]

    def points_in(self, c: int) -> int:
        """Grid points in chunk c."""
        return min(self.chunk_points, self.spec.grid.n_points - c * self.chunk_points)

    def write(self, f, c, parts, seconds) -> None:
        p0 = c * self.chunk_points
        for name, arr in zip(self.spec.experiments, parts):
            f["data"][name][p0:p0 + arr.shape[0]] = arr
        f.flush()
        f["progress/done"][c] = 1
        f.flush()

    def written(self, f) -> str:
        done = f["progress/done"][...]
        return f"{int(done.sum())}/{done.shape[0]} chunks"

    def finished(self, f) -> bool:
        return True


def _allocate(f: h5py.File, name: str, shape, dtype, fill=False) -> None:
    """Contiguous dataset with early allocation (no metadata changes on later writes)."""
    grp_name, _, ds_name = name.rpartition("/")
    grp = f.require_group(grp_name) if grp_name else f
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC if fill else h5py.h5d.FILL_TIME_NEVER)
    space = h5py.h5s.create_simple(tuple(int(s) for s in shape))
    h5py.h5d.create(grp.id, ds_name.encode(), h5py.h5t.py_create(dtype), space, dcpl=dcpl)


class SimDataset:
    """Read access to a simulation dataset. A sample index is s = point * n_per_point + realization."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"dataset {self.path} does not exist")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"{self.path} is not a readable HDF5 file: {e}") from None
        a = self._f.attrs
        if a.get("fcmlc_format") != FORMAT:
            raise ValueError(f"{self.path} is not an fcmlc dataset (format {a.get('fcmlc_format')!r}, expected {FORMAT})")
        self.experiments: list[str] = json.loads(a["experiments"])
        self.experiment_hashes: dict = json.loads(a["experiment_hashes"])
        #: {name: {"norm_groups": [...], "norm_prior": sigma}}, or None for a file written before
        #: the normalisation model was recorded
        self.normalisation: dict | None = json.loads(a["normalisation"]) if "normalisation" in a else None
        self.grid = Grid.from_dict(json.loads(a["grid"]))
        self.n_per_point = int(a["n_per_point"])
        self.seed = int(a["seed"])
        self.complete = bool(a["complete"])
        self.n_points = self.grid.n_points
        self.n_samples = self.n_points * self.n_per_point
        self._data = [self._f["data"][name] for name in self.experiments]
        self.n_bins = {name: d.shape[2] for name, d in zip(self.experiments, self._data)}
        self.n_features = int(sum(self.n_bins.values()))
        self._params = self._f["params"][...]

    # context manager -------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._f:
            self._f.close()
            self._f = None

    def __repr__(self):
        state = "complete" if self.complete else "INCOMPLETE"
        return (f"SimDataset({str(self.path)!r}, experiments={self.experiments}, grid={self.grid.shape}, "
                f"n_per_point={self.n_per_point}, seed={self.seed}, {state})")

    def require_complete(self):
        if not self.complete:
            raise ValueError(f"{self.path} is incomplete (generation was interrupted): rerun the same "
                             "`fcmlc simulate` command to finish it")

    # access ------------------------------------------------------------------------
    @property
    def split(self) -> np.ndarray:
        return self._f["split"][...]

    def split_indices(self, name: str) -> np.ndarray:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; choose from {sorted(SPLIT_NAMES)}")
        return np.flatnonzero(np.isin(self.split.ravel(), SPLIT_NAMES[name])).astype(np.int64)

    def targets(self, indices=None) -> np.ndarray:
        """(n, 2) float64 (|Ue4|, dm2) of each sample."""
        pts = np.arange(self.n_samples) // self.n_per_point if indices is None else np.asarray(indices) // self.n_per_point
        return self._params[pts]

    def features(self, indices=None, block_points: int = 4096) -> np.ndarray:
        """(n, n_features) float32: the experiments' realizations concatenated in order."""
        if indices is None:
            out = np.empty((self.n_samples, self.n_features), dtype=np.float32)
            col = 0
            for d in self._data:
                nb = d.shape[2]
                for p0 in range(0, self.n_points, block_points):
                    p1 = min(p0 + block_points, self.n_points)
                    out[p0 * self.n_per_point:p1 * self.n_per_point, col:col + nb] = d[p0:p1].reshape(-1, nb)
                col += nb
            return out
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= self.n_samples)):
            raise ValueError(f"sample indices must be a 1-D array in [0, {self.n_samples})")
        out = np.empty((idx.size, self.n_features), dtype=np.float32)
        if idx.size == 0:
            return out
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        pts = sidx // self.n_per_point
        reals = sidx % self.n_per_point
        # read contiguous blocks of points that contain requested samples
        starts = np.arange(pts[0], pts[-1] + 1, block_points)
        col = 0
        for d in self._data:
            nb = d.shape[2]
            for b0 in starts:
                lo, hi = np.searchsorted(pts, [b0, b0 + block_points])
                if lo == hi:
                    continue
                p_lo, p_hi = pts[lo], pts[hi - 1] + 1
                block = d[p_lo:p_hi]
                out[order[lo:hi], col:col + nb] = block[pts[lo:hi] - p_lo, reals[lo:hi]]
            col += nb
        return out

    def iter_batches(self, indices, batch_size: int, shuffle_seed=None, window: int = 1 << 18):
        """Yield (x float32, y float64) batches over `indices` in bounded memory: indices are
        permuted (if shuffle_seed is given) and read `window` samples at a time."""
        idx = np.asarray(indices, dtype=np.int64)
        if shuffle_seed is not None:
            idx = np.random.default_rng(shuffle_seed).permutation(idx)
        window = max(window, batch_size)
        for w0 in range(0, idx.size, window):
            wi = idx[w0:w0 + window]
            x = self.features(wi)
            y = self.targets(wi)
            for b0 in range(0, wi.size, batch_size):
                yield x[b0:b0 + batch_size], y[b0:b0 + batch_size]


def open_dataset(path) -> SimDataset:
    """Open a simulation dataset written by :func:`fcmlc.simulation.simulate`."""
    return SimDataset(path)
