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
    /progress/crc32        (n_chunks, n_experiments) uint32: CRC-32 of each experiment's realizations
                           in the chunk, as written
    /progress/bounds/<NAME> (n_chunks, 2, n_bins_NAME) float64: the range the experiment model allows
                           in the chunk (min and max over its grid points of the expectation -/+
                           :data:`RANGE_SIGMAS` standard deviations); NaN: not known

All datasets are contiguous and allocated when the file is created, so writing a
chunk never changes HDF5 metadata: a run killed in the middle of a write leaves a
readable file whose unfinished chunk is simply not marked done, and is redone on resume.

Reading checks what it reads, once per chunk and experiment: every value finite and inside the
chunk's bounds, and the CRC-32 of the chunk as written (:class:`fcmlc.exceptions.CorruptFileError`
naming the file, the sample and the bin otherwise). Files written before the checksums and
bounds existed are read with the finiteness check only.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from ._io import atomic_path, h5_writer
from ._resumable import ChunkedOutput
from .exceptions import CorruptFileError, FormatError
from .physics import Grid

FORMAT = 1
SPLIT_NAMES = {"train": (0,), "test_interpolation": (1,), "test_random": (2,), "test": (1, 2)}
#: RNG stream used for the train/test split (distinct from every experiment stream).
SPLIT_STREAM = 0x5EED5EED5EED5EED
#: Half-width, in standard deviations of the experiment model, of the range a stored realization
#: must lie in (a Gaussian value beyond 10 sigma has probability 1.5e-23: never seen in practice).
RANGE_SIGMAS = 10.0
_REDO = "the file is damaged or was changed after it was written: simulate it again (fcmlc simulate ... --overwrite)"


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
    with atomic_path(path) as tmp, h5_writer(tmp, "w", name=path) as w:
        layout(w.file, spec, chunk_points)


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
        _allocate(f, f"progress/bounds/{name}", (n_chunks, 2, nb), np.dtype(np.float64))
    _allocate(f, "progress/crc32", (n_chunks, len(spec.experiments)), np.dtype(np.uint32))
    _allocate(f, "progress/done", (n_chunks,), np.dtype(np.uint8), fill=True)


def nbytes(spec: DatasetSpec, chunk_points: int) -> int:
    """The size of a dataset file (an upper estimate: its arrays plus 1 MiB for HDF5 metadata)."""
    n, m = spec.grid.n_points, spec.n_per_point
    n_chunks = -(-n // chunk_points)
    nb = sum(spec.n_bins)
    return int(n * m * nb * np.dtype(spec.dtype).itemsize + n * m + n * 16 + 8 * sum(spec.grid.shape)
               + n_chunks * (1 + 4 * len(spec.n_bins) + 16 * nb) + (1 << 20))


def write_chunk(f, spec: DatasetSpec, chunk_points: int, c: int, parts, bounds=None) -> None:
    """Store chunk `c` of a dataset: each experiment's realizations `parts` (arrays (n, n_per_point,
    n_bins)), their CRC-32 and `bounds` (per experiment (2, n_bins) lo/hi the model allows, or
    None: not known), flushed, then mark the chunk done and flush again."""
    p0 = c * chunk_points
    dtype = np.dtype(spec.dtype)
    data, prog = f["data"], f["progress"]
    checked = "crc32" in prog  # (a file begun by an fcmlc without the checks is finished without them)
    crc = np.zeros(len(spec.experiments), dtype=np.uint32)
    for i, (name, arr) in enumerate(zip(spec.experiments, parts)):
        arr = np.ascontiguousarray(arr, dtype=dtype)
        data[name][p0:p0 + arr.shape[0]] = arr
        crc[i] = zlib.crc32(arr)
        if checked:
            b = np.full((2, arr.shape[2]), np.nan) if bounds is None else np.asarray(bounds[i], dtype=np.float64)
            prog["bounds"][name][c] = b
    if checked:
        prog["crc32"][c] = crc
    f.flush()
    f["progress/done"][c] = 1
    f.flush()


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

    def write(self, f, c, result, seconds) -> None:
        """`result`: (parts, bounds) of :func:`write_chunk`."""
        parts, bounds = result
        write_chunk(f, self.spec, self.chunk_points, c, parts, bounds)

    def nbytes(self) -> int:
        return nbytes(self.spec, self.chunk_points)

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
    """Read access to a simulation dataset. A sample index is s = point * n_per_point + realization.

    Every realization read is checked, once per chunk and experiment (see the module
    docstring): a damaged file raises CorruptFileError naming the sample and the bin."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(2, f"dataset {self.path} does not exist", str(self.path))
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise FormatError(f"{self.path} is not a readable HDF5 file (truncated, damaged, not HDF5, or in use "
                              f"by a running `fcmlc simulate`): {' '.join(str(e).split())}") from None
        try:
            self._read_header()
        except (KeyError, ValueError, TypeError, OSError) as e:
            self.close()
            if isinstance(e, FormatError):
                raise
            raise FormatError(f"{self.path} is not a readable fcmlc dataset ({type(e).__name__}: "
                              f"{' '.join(str(e).split())})") from None

    def _read_header(self):
        a = self._f.attrs
        if a.get("fcmlc_format") != FORMAT:
            raise FormatError(f"{self.path} is not an fcmlc dataset (format {a.get('fcmlc_format')!r}, expected "
                              f"{FORMAT})")
        self.experiments: list[str] = json.loads(a["experiments"])
        self.experiment_hashes: dict = json.loads(a["experiment_hashes"])
        #: {name: {"norm_groups": [...], "norm_prior": sigma}}, or None for a file written before
        #: the normalisation model was recorded
        self.normalisation: dict | None = json.loads(a["normalisation"]) if "normalisation" in a else None
        self.grid = Grid.from_dict(json.loads(a["grid"]))
        self.n_per_point = int(a["n_per_point"])
        self.dtype = str(a.get("dtype", "float32"))  # of the stored realizations
        self.seed = int(a["seed"])
        self.complete = bool(a["complete"])
        self.n_points = self.grid.n_points
        self.n_samples = self.n_points * self.n_per_point
        self._data = [self._f["data"][name] for name in self.experiments]
        self.n_bins = {name: d.shape[2] for name, d in zip(self.experiments, self._data)}
        self.n_features = int(sum(self.n_bins.values()))
        self._params = self._f["params"][...]
        self.chunk_points = int(a["chunk_points"])
        prog = self._f["progress"]
        self._done = prog["done"][...].astype(bool)
        self._crc = prog["crc32"][...] if "crc32" in prog else None
        self._bounds = ([prog["bounds"][n] for n in self.experiments] if "bounds" in prog else None)
        self._checked = np.zeros((self._done.size, len(self.experiments)), dtype=bool)

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
            step = max(1, block_points // self.chunk_points) * self.chunk_points  # whole chunks per read
            for i, d in enumerate(self._data):
                nb = d.shape[2]
                for p0 in range(0, self.n_points, step):
                    p1 = min(p0 + step, self.n_points)
                    out[p0 * self.n_per_point:p1 * self.n_per_point, col:col + nb] = self._read(i, p0, p1).reshape(-1, nb)
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
        for i, d in enumerate(self._data):
            nb = d.shape[2]
            for b0 in starts:
                lo, hi = np.searchsorted(pts, [b0, b0 + block_points])
                if lo == hi:
                    continue
                p_lo, p_hi = pts[lo], pts[hi - 1] + 1
                block = self._read(i, p_lo, p_hi)
                out[order[lo:hi], col:col + nb] = block[pts[lo:hi] - p_lo, reals[lo:hi]]
            col += nb
        return out

    def _read(self, i: int, p0: int, p1: int) -> np.ndarray:
        """Realizations of experiment i at grid points p0..p1-1; the chunks they lie in are
        read whole and checked the first time (:meth:`_check_chunk`)."""
        cp = self.chunk_points
        c0, c1 = p0 // cp, (p1 - 1) // cp + 1
        try:
            if self._checked[c0:c1, i].all():
                return self._data[i][p0:p1]
            q0, q1 = c0 * cp, min(c1 * cp, self.n_points)
            block = self._data[i][q0:q1]
        except OSError as e:
            raise FormatError(f"{self.path}: reading {self.experiments[i]} failed (the file is truncated or "
                              f"damaged): {' '.join(str(e).split())}") from None
        for c in range(c0, c1):
            if not self._checked[c, i]:
                self._check_chunk(i, c, block[c * cp - q0:min((c + 1) * cp, self.n_points) - q0])
        return block[p0 - q0:p1 - q0]

    def _check_chunk(self, i: int, c: int, arr: np.ndarray) -> None:
        """Check chunk c of experiment i (`arr`, as read): finite, inside its bounds, CRC-32 as
        written. A chunk not yet written (an incomplete file) is not checked."""
        if not self._done[c]:
            return
        name = self.experiments[i]
        crc_ok = self._crc is None or int(self._crc[c, i]) == zlib.crc32(np.ascontiguousarray(arr))
        lo = hi = None
        if self._bounds is not None:
            lo, hi = self._bounds[i][c]
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                lo = hi = None  # not known
        # fast path: per-bin min and max (NaN propagates into both) against the bounds
        flat = arr.reshape(-1, arr.shape[-1])
        mn, mx = flat.min(axis=0), flat.max(axis=0)
        fine = np.all(np.isfinite(mn)) and np.all(np.isfinite(mx))
        if fine and lo is not None:
            fine = bool(np.all(mn >= lo) and np.all(mx <= hi))
        if fine and crc_ok:
            self._checked[c, i] = True
            return
        bad = ~np.isfinite(arr)
        if not bad.any() and lo is not None:
            bad = (arr < lo) | (arr > hi)
        else:
            lo = None  # the first bad value is not finite
        if bad.any():
            k, r, b = (int(v) for v in np.argwhere(bad)[0])
            p = c * self.chunk_points + k
            why = ("not a finite number" if lo is None else
                   f"outside the range the experiment model allows there ({lo[b]:.4g} to {hi[b]:.4g}: the expectation "
                   f"-/+ {RANGE_SIGMAS:g} standard deviations)")
            check = "" if self._crc is None else (" (and the chunk fails its checksum)" if not crc_ok
                                                 else " (though the chunk passes its checksum)")
            raise CorruptFileError(f"{self.path}: sample {p * self.n_per_point + r} (grid point {p}, realization "
                                   f"{r}), {name} bin {b} = {float(arr[k, r, b]):.6g} is {why}{check}; {_REDO}")
        if not crc_ok:
            p0 = c * self.chunk_points
            raise CorruptFileError(f"{self.path}: the realizations of {name} at grid points {p0}-{p0 + len(arr) - 1}"
                                   f" (chunk {c}) do not match the checksum written with them; {_REDO}")
        self._checked[c, i] = True

    def verify(self) -> None:
        """Read and check every written realization (CorruptFileError at the first bad one)."""
        step = max(1, 4096 // self.chunk_points) * self.chunk_points
        for i in range(len(self.experiments)):
            for p0 in range(0, self.n_points, step):
                self._read(i, p0, min(p0 + step, self.n_points))

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
