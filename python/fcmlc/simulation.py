"""Realization generation: the training data of FCMLC and the pseudo-experiments of FC.

Every realization is a pure function of (seed, experiment stream id, grid point index,
realization index) through the counter-based generator of the C++ core, so a dataset is
bit-identical for any thread count, chunk size, number of Dask workers, and after a resume.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import _core
from . import dataset as ds
from .physics import Grid, sin2_2theta

UINT64_MAX = (1 << 64) - 1


# --- covariance factors ------------------------------------------------------------


def covariance_factor(C, name: str = "covariance", rtol: float = 1e-10):
    """Factor F of a covariance (C = F F^T) for sampling, as (F^T, lower).

    Cholesky (lower triangular) when C is positive definite; otherwise, when C is positive
    semi-definite, the eigen factor U sqrt(Lambda) on the eigenvalues above
    rtol * max eigenvalue. Raises ValueError naming `name` when C is not square, not finite,
    not symmetric (relative asymmetry > 1e-8) or not PSD (an eigenvalue below -rtol * max).
    """
    C = np.asarray(C, dtype=float)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"{name} must be a square matrix, got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        bad = np.argwhere(~np.isfinite(C))[0]
        raise ValueError(f"{name} contains a non-finite value at {tuple(int(i) for i in bad)}")
    scale = np.abs(C).max()
    if scale == 0:
        raise ValueError(f"{name} is identically zero")
    asym = np.abs(C - C.T).max() / scale
    if asym > 1e-8:
        raise ValueError(f"{name} is not symmetric (max |C - C^T| / max |C| = {asym:.3g})")
    C = 0.5 * (C + C.T)
    try:
        L = np.linalg.cholesky(C)
        return np.ascontiguousarray(L.T), True
    except np.linalg.LinAlgError:
        pass
    w, U = np.linalg.eigh(C)
    if w[0] < -rtol * w[-1]:
        raise ValueError(f"{name} is not positive semi-definite: smallest eigenvalue {w[0]:.4g} "
                         f"(largest {w[-1]:.4g})")
    keep = w > rtol * w[-1]
    F = U[:, keep] * np.sqrt(w[keep])
    return np.ascontiguousarray(F.T), False


# --- experiment plumbing --------------------------------------------------------------


def _experiment_set(experiments):
    from . import experiments as ex

    if hasattr(experiments, "experiments") and hasattr(experiments, "names"):
        return experiments
    if isinstance(experiments, str):
        experiments = [s for s in experiments.split(",") if s.strip()]
    elif hasattr(experiments, "n_bins") and hasattr(experiments, "kind"):  # one Experiment
        experiments = [experiments]
    items = [ex.load(e.strip()) if isinstance(e, str) else e for e in experiments]
    if not items:
        raise ValueError("no experiments given")
    names = [e.name for e in items]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment listed twice: {names}")
    return ex.combine(items)


def expectation_rows(exp, ue4, dm2) -> np.ndarray:
    """(n_points, n_bins) expectations; for linear models the deficit is evaluated once per
    distinct dm2 value."""
    ue4 = np.asarray(ue4, dtype=float)
    dm2 = np.asarray(dm2, dtype=float)
    if exp.linear_in_s2:
        ud, inv = np.unique(dm2, return_inverse=True)
        D = exp.deficit(ud)
        return exp.null_expectation[None, :] - sin2_2theta(ue4)[:, None] * D[inv]
    return np.atleast_2d(exp.expectation(ue4, dm2))


@dataclass
class _Sampler:
    """What the C++ samplers need for one experiment (picklable: shipped to Dask workers)."""

    name: str
    kind: str
    stream: int
    n_bins: int
    factor_t: np.ndarray | None = None
    lower: bool = False
    J: np.ndarray | None = None
    Lp: np.ndarray | None = None
    lo: np.ndarray | None = None
    sigma: np.ndarray | None = None
    #: covariance kind: normalisation groups (bin -> group) and their spread; drawn only when
    #: norm_sigma > 0 (x = mu (1 + norm_sigma E w) + F z), else x = mu + F z
    norm_groups: np.ndarray | None = None
    norm_sigma: float = 0.0

    @classmethod
    def of(cls, exp) -> "_Sampler":
        stream = int(exp.stream_id) & UINT64_MAX
        if exp.kind == "pulls":
            S = np.asarray(exp.pull_covariance, dtype=float)
            Ft, lower = covariance_factor(S, f"{exp.name} pull covariance")
            Lp = Ft.T if lower else None
            if Lp is None:
                raise ValueError(f"{exp.name}: the pull covariance must be positive definite")
            return cls(exp.name, "pulls", stream, exp.n_bins, J=np.ascontiguousarray(exp.pull_jacobian, dtype=float),
                       Lp=np.ascontiguousarray(Lp), lo=np.asarray(exp.pull_lower, dtype=float),
                       sigma=np.asarray(exp.stat_sigma, dtype=float))
        # The one statistical model of the experiment (see fcmlc.experiments.Experiment):
        # x = mu (1 + sigma E w) + F z with F F^T = covariance, w ~ N(0, I_k) per normalisation
        # group when the groups have a prior sigma > 0 (free groups are not sampled: x = mu + F z).
        Ft, lower = covariance_factor(exp.covariance, f"{exp.name} covariance")
        sigma = float(getattr(exp, "norm_prior", 0.0) or 0.0)
        k = int(getattr(exp, "n_norm_groups", 0) or 0)
        if sigma > 0 and k > 0:
            groups = np.ascontiguousarray(exp.norm_groups, dtype=np.int64)
            return cls(exp.name, "covariance", stream, exp.n_bins, factor_t=Ft, lower=lower, norm_groups=groups,
                       norm_sigma=sigma)
        return cls(exp.name, "covariance", stream, exp.n_bins, factor_t=Ft, lower=lower)

    def sample(self, mu, seed, point_ids, n_real, real_offset=0, float32=False, threads=None):
        mu = np.ascontiguousarray(mu, dtype=float)
        pid = np.ascontiguousarray(point_ids, dtype=np.int64)
        if self.kind == "pulls":
            return _core.simulate_pulls(mu, self.J, self.Lp, self.lo, self.sigma, seed, self.stream, pid, n_real,
                                        real_offset, float32, threads)
        return _core.simulate_gaussian(mu, self.factor_t, self.lower, seed, self.stream, pid, n_real, real_offset,
                                       float32, threads, self.norm_groups, float(self.norm_sigma))


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    if not 0 <= int(seed) <= UINT64_MAX:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed}")
    return int(seed)


def realizations(experiments, ue4, dm2, n_per_point: int = 1, seed: int = 0, point_ids=None, threads=None,
                 float32: bool = False) -> np.ndarray:
    """Realizations at arbitrary (|Ue4|, dm2) points: (n_points, n_per_point, n_bins) float64,
    experiments concatenated in order. `point_ids` key the random streams (default
    0..n_points-1); with the grid index of a grid point they reproduce `simulate`'s data."""
    eset = _experiment_set(experiments)
    seed = _check_seed(seed)
    ue4 = np.atleast_1d(np.asarray(ue4, dtype=float))
    dm2 = np.atleast_1d(np.asarray(dm2, dtype=float))
    ue4, dm2 = np.broadcast_arrays(ue4, dm2)
    if ue4.ndim != 1:
        raise ValueError("ue4 and dm2 must be scalars or 1-D arrays")
    if int(n_per_point) < 1:
        raise ValueError(f"n_per_point must be >= 1, got {n_per_point}")
    pid = np.arange(ue4.size) if point_ids is None else np.asarray(point_ids, dtype=np.int64)
    if pid.shape != ue4.shape:
        raise ValueError(f"point_ids must have shape {ue4.shape}, got {pid.shape}")
    parts = []
    for exp in eset.experiments:
        mu = expectation_rows(exp, ue4, dm2)
        parts.append(_Sampler.of(exp).sample(mu, seed, pid, int(n_per_point), 0, float32, threads))
    return np.concatenate(parts, axis=2)


# --- the dataset generator ---------------------------------------------------------------


@dataclass
class _Job:
    """Picklable description of one generation run (sent to Dask workers)."""

    experiments: list  # Experiment objects
    samplers: list
    grid: Grid
    n_per_point: int
    seed: int
    float32: bool
    chunk_points: int

    def chunk(self, c: int, threads=None) -> list:
        p0 = c * self.chunk_points
        p1 = min(p0 + self.chunk_points, self.grid.n_points)
        pts = self.grid.points()[p0:p1]
        pid = np.arange(p0, p1, dtype=np.int64)
        out = []
        for exp, smp in zip(self.experiments, self.samplers):
            mu = expectation_rows(exp, pts[:, 0], pts[:, 1])
            out.append(smp.sample(mu, self.seed, pid, self.n_per_point, 0, self.float32, threads))
        return out


def _default_chunk_points(n_bins_total: int, n_per_point: int, itemsize: int) -> int:
    # ~32 MB per chunk: large enough for efficient I/O, small enough for bounded memory
    per_point = max(1, n_bins_total * n_per_point * itemsize)
    return int(max(1, min(4096, (32 << 20) // per_point)))


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so `kill` closes the file cleanly (kill -9 is safe too)."""
    try:
        old = signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def simulate(experiments, grid: Grid | None = None, n_per_point: int = 50, seed: int = 0, out=None, threads=None,
             chunk_points: int | None = None, scheduler=None, progress: bool = True, overwrite: bool = False,
             dtype: str = "float32") -> Path:
    """Generate `n_per_point` realizations of each experiment at every grid point and write
    them to the HDF5 dataset `out` (schema in :mod:`fcmlc.dataset`).

    Resumable: rerunning with the same arguments after an interruption (Ctrl-C, kill, kill -9)
    finishes the file, and the result is identical to an uninterrupted run. A file made with
    different settings is never touched unless ``overwrite=True``. With `scheduler` (a Dask
    scheduler address or a ``distributed.Client``) chunks of grid points are generated on the
    cluster and written here; the output is identical to a local run.
    """
    if out is None:
        raise ValueError("out (the output HDF5 path) is required")
    grid = Grid.paper() if grid is None else grid
    if not isinstance(grid, Grid):
        raise ValueError("grid must be an fcmlc.Grid")
    seed = _check_seed(seed)
    n_per_point = int(n_per_point)
    if n_per_point < 1:
        raise ValueError(f"n_per_point must be >= 1, got {n_per_point}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    eset = _experiment_set(experiments)
    samplers = [_Sampler.of(e) for e in eset.experiments]  # validates covariances before any file is touched
    spec = ds.DatasetSpec(tuple(e.name for e in eset.experiments), tuple(e.definition_hash for e in eset.experiments),
                          tuple(int(e.n_bins) for e in eset.experiments), grid, n_per_point, seed, dtype,
                          ds.normalisation_json(eset.experiments))
    out = Path(out)
    itemsize = np.dtype(dtype).itemsize

    if out.exists() and not overwrite:
        try:
            with h5py.File(out, "r") as f:
                diffs = spec.mismatch(f)
                stored_chunk = int(f.attrs["chunk_points"])
                complete = bool(f.attrs["complete"])
        except (OSError, KeyError) as e:
            raise ValueError(f"{out} exists and is not an fcmlc dataset ({e}); choose another output path "
                             "or pass overwrite=True (--overwrite)") from None
        if diffs:
            raise ValueError(f"{out} exists and was made with different settings ({'; '.join(diffs)}); "
                             "choose another output path or pass overwrite=True (--overwrite)")
        chunk_points = stored_chunk
        if complete:
            return out
    else:
        if chunk_points is None:
            chunk_points = _default_chunk_points(sum(spec.n_bins), n_per_point, itemsize)
        chunk_points = int(chunk_points)
        if chunk_points < 1:
            raise ValueError(f"chunk_points must be >= 1, got {chunk_points}")
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.create(out, spec, chunk_points)

    job = _Job(list(eset.experiments), samplers, grid, n_per_point, seed, dtype == "float32", chunk_points)
    with h5py.File(out, "r+") as f, _sigterm_as_interrupt():
        done = f["progress/done"]
        pending = [int(c) for c in np.flatnonzero(done[...] == 0)]
        dsets = [f["data"][name] for name in spec.experiments]
        bar = _progress(pending, job, progress, out)
        try:
            if scheduler is None:
                _run_local(job, pending, dsets, done, f, threads, bar)
            else:
                _run_dask(job, pending, dsets, done, f, scheduler, threads, bar)
        except KeyboardInterrupt:
            f.flush()
            print(f"\ninterrupted: {int(done[...].sum())}/{done.shape[0]} chunks written to {out}; "
                  "rerun the same command to resume", file=sys.stderr)
            raise
        finally:
            if bar is not None:
                bar.close()
        f.attrs["complete"] = True
    return out


def _progress(pending, job, progress, out):
    if not progress:
        return None
    from tqdm.auto import tqdm

    total = sum(min(job.chunk_points, job.grid.n_points - c * job.chunk_points) for c in pending)
    return tqdm(total=total, unit="pt", desc=f"simulate -> {out.name}", smoothing=0.1)


def _write(c, parts, job, dsets, done, f, bar):
    p0 = c * job.chunk_points
    for d, arr in zip(dsets, parts):
        d[p0:p0 + arr.shape[0]] = arr
    f.flush()
    done[c] = 1
    f.flush()
    if bar is not None:
        bar.update(parts[0].shape[0])


def _run_local(job, pending, dsets, done, f, threads, bar):
    # compute chunk i+1 (C++ kernels release the GIL) while chunk i is written
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut = pool.submit(job.chunk, pending[0], threads) if pending else None
        for i, c in enumerate(pending):
            parts = fut.result()
            fut = pool.submit(job.chunk, pending[i + 1], threads) if i + 1 < len(pending) else None
            _write(c, parts, job, dsets, done, f, bar)


def _run_dask(job, pending, dsets, done, f, scheduler, threads, bar):
    from ._dask import map_bounded

    map_bounded(scheduler, job, pending, _dask_chunk, lambda c: (c, threads),
                lambda c, parts, seconds: _write(c, parts, job, dsets, done, f, bar))


def _dask_chunk(job: _Job, c: int, threads=None):
    return job.chunk(c, threads)
