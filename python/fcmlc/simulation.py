"""Realization generation: the training data of FCMLC and the pseudo-experiments of FC.

Every realization is a pure function of (seed, experiment stream id, grid point index,
realization index) through the counter-based generator of the C++ core, so a dataset is
bit-identical for any thread count, chunk size, number of Dask workers, and after a resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _core
from . import dataset as ds
from . import experiments as ex
from ._checks import UINT64_MAX, check_positive_int, check_seed, check_threads
from ._io import check_not_dir
from ._resumable import check_interrupt, deferred_interrupts, open_output, run_output
from .physics import Grid, grid_or_paper, sin2_2theta


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


def _load_experiment(name: str):
    if name.endswith(".toml") or Path(name).is_file():
        return ex.from_toml(name)
    return ex.load(name)


def resolve_experiments(experiments) -> list:
    """A list of experiment objects from names ("STEREO,BEST" or ["STEREO", ...]) or TOML model
    files, Experiment objects, an ExperimentSet, or a single experiment; ValueError when empty
    or when an experiment is listed more than once."""
    if isinstance(experiments, str):
        items = [s.strip() for s in experiments.split(",") if s.strip()]
    elif hasattr(experiments, "null_expectation") and hasattr(experiments, "kind"):
        items = [experiments]
    elif hasattr(experiments, "experiments"):
        items = list(experiments.experiments)
    else:
        items = list(experiments)
    out = [_load_experiment(e) if isinstance(e, str) else e for e in items]
    if not out:
        raise ValueError("no experiments given")
    names = [str(e.name) for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"experiment listed more than once: {', '.join(dup)}")
    return out


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
class Sampler:
    """The realization generator of one experiment: what the C++ samplers need (picklable:
    shipped to Dask workers). ``Sampler.of(experiment).sample(mu, seed, point_ids, n)`` draws the
    realizations ``simulate`` writes."""

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
    def of(cls, exp) -> "Sampler":
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

    def spread(self, mu) -> np.ndarray:
        """Standard deviation of each bin of a realization at expectations `mu` (n, n_bins):
        sqrt(C_ii + (norm_sigma mu_i)^2) for a covariance model, sqrt(mu_i^2 (J S J^T)_ii +
        sigma_i^2) for pulls (S the pull covariance; its truncation only narrows the spread)."""
        mu = np.atleast_2d(np.asarray(mu, dtype=float))
        if self.kind == "pulls":
            JL = self.J @ self.Lp
            return np.sqrt(mu ** 2 * np.sum(JL ** 2, axis=1) + np.asarray(self.sigma, dtype=float) ** 2)
        var = np.broadcast_to(np.sum(np.square(self.factor_t), axis=0), mu.shape)
        if self.norm_groups is not None and self.norm_sigma > 0:
            var = var + np.where(np.asarray(self.norm_groups) >= 0, (self.norm_sigma * mu) ** 2, 0.0)
        return np.sqrt(var)

    def bounds(self, mu, n_sigma: float = ds.RANGE_SIGMAS) -> np.ndarray:
        """(2, n_bins): the lowest and highest value a realization at any of the expectations
        `mu` (n, n_bins) can take but with probability ~0 (mu -/+ n_sigma standard deviations)."""
        mu = np.atleast_2d(np.asarray(mu, dtype=float))
        sd = self.spread(mu)
        return np.stack([np.min(mu - n_sigma * sd, axis=0), np.max(mu + n_sigma * sd, axis=0)])

    def sample(self, mu, seed, point_ids, n_real, real_offset=0, float32=False, threads=None):
        mu = np.ascontiguousarray(mu, dtype=float)
        pid = np.ascontiguousarray(point_ids, dtype=np.int64)
        if self.kind == "pulls":
            return _core.simulate_pulls(mu, self.J, self.Lp, self.lo, self.sigma, seed, self.stream, pid, n_real,
                                        real_offset, float32, threads)
        return _core.simulate_gaussian(mu, self.factor_t, self.lower, seed, self.stream, pid, n_real, real_offset,
                                       float32, threads, self.norm_groups, float(self.norm_sigma))


def realizations(experiments, ue4, dm2, n_per_point: int = 1, seed: int = 0, point_ids=None, threads=None,
                 float32: bool = False) -> np.ndarray:
    """Realizations at arbitrary (|Ue4|, dm2) points: (n_points, n_per_point, n_bins) float64,
    experiments concatenated in order. `point_ids` key the random streams (default
    0..n_points-1); with the grid index of a grid point they reproduce `simulate`'s data."""
    eset = ex.combine(resolve_experiments(experiments))
    seed = check_seed(seed)
    n_per_point = check_positive_int(n_per_point, "n_per_point")
    threads = check_threads(threads)
    ue4 = np.atleast_1d(np.asarray(ue4, dtype=float))
    dm2 = np.atleast_1d(np.asarray(dm2, dtype=float))
    ue4, dm2 = np.broadcast_arrays(ue4, dm2)
    if ue4.ndim != 1:
        raise ValueError("ue4 and dm2 must be scalars or 1-D arrays")
    pid = np.arange(ue4.size) if point_ids is None else np.asarray(point_ids, dtype=np.int64)
    if pid.shape != ue4.shape:
        raise ValueError(f"point_ids must have shape {ue4.shape}, got {pid.shape}")
    parts = []
    for exp in eset.experiments:
        mu = expectation_rows(exp, ue4, dm2)
        parts.append(Sampler.of(exp).sample(mu, seed, pid, n_per_point, 0, float32, threads))
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

    def chunk(self, c: int, threads=None) -> tuple:
        """(realizations of each experiment at the chunk's grid points, their bounds
        (:meth:`Sampler.bounds`)): what :class:`fcmlc.dataset.DatasetOutput` writes."""
        p0 = c * self.chunk_points
        p1 = min(p0 + self.chunk_points, self.grid.n_points)
        pid = np.arange(p0, p1, dtype=np.int64)
        iu, idm = self.grid.unravel(pid)
        ue4, dm2 = self.grid.ue4[iu], self.grid.dm2[idm]
        out, bounds = [], []
        for exp, smp in zip(self.experiments, self.samplers):
            mu = expectation_rows(exp, ue4, dm2)
            out.append(smp.sample(mu, self.seed, pid, self.n_per_point, 0, self.float32, threads))
            bounds.append(smp.bounds(mu))
        return out, bounds


def default_chunk_points(n_bins_total: int, n_per_point: int, itemsize: int) -> int:
    """Grid points per chunk of ``simulate``: ~32 MB of realizations, large enough for efficient
    I/O, small enough for bounded memory."""
    per_point = max(1, n_bins_total * n_per_point * itemsize)
    return int(max(1, min(4096, (32 << 20) // per_point)))


def simulate(experiments, grid: Grid | None = None, n_per_point: int = 50, seed: int = 0, out=None, threads=None,
             chunk_points: int | None = None, scheduler=None, progress: bool = True, overwrite: bool = False,
             dtype: str = "float32") -> Path:
    """Generate `n_per_point` realizations of each experiment at every grid point and write
    them to the HDF5 dataset `out` (schema in :mod:`fcmlc.dataset`).

    Resumable: rerunning with the same arguments after an interruption (Ctrl-C, kill, kill -9)
    finishes the file, and the result is identical to an uninterrupted run; Ctrl-C and SIGTERM
    stop it between chunks with :class:`fcmlc.exceptions.Interrupted` saying what is kept. A
    file made with different settings is never touched unless ``overwrite=True``. The location
    is checked before any work (not a directory, writable, room for the whole file: else
    DiskFullError), and the file's blocks are reserved when it is created, so a full disk stops
    it at the start, not half-way. With `scheduler` (a Dask
    scheduler address or a ``distributed.Client``) chunks of grid points are generated on the
    cluster and written here; the output is identical to a local run.
    """
    if out is None:
        raise ValueError("out (the output HDF5 path) is required")
    grid = grid_or_paper(grid)
    seed = check_seed(seed)
    n_per_point = check_positive_int(n_per_point, "n_per_point")
    threads = check_threads(threads)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if chunk_points is not None:
        chunk_points = check_positive_int(chunk_points, "chunk_points")
    out = check_not_dir(out)
    # the split table (and its shuffle) and the grid's point tables are held in memory at creation
    grid.require_memory(48 + 17 * n_per_point, "laying out the dataset")
    with deferred_interrupts():  # Ctrl-C / SIGTERM stop at the checks below, never inside HDF5
        eset = ex.combine(resolve_experiments(experiments))
        samplers = [Sampler.of(e) for e in eset.experiments]  # validates covariances before any file is touched
        spec = ds.DatasetSpec(tuple(e.name for e in eset.experiments),
                              tuple(e.definition_hash for e in eset.experiments),
                              tuple(int(e.n_bins) for e in eset.experiments), grid, n_per_point, seed, dtype,
                              ds.normalisation_json(eset.experiments))
        if chunk_points is None:
            chunk_points = default_chunk_points(sum(spec.n_bins), n_per_point, np.dtype(dtype).itemsize)
        output = ds.DatasetOutput(spec, chunk_points)
        check_interrupt(f"interrupted before {out} was written")
        open_output(out, output, overwrite)  # an existing file keeps its own chunk size
        job = _Job(list(eset.experiments), samplers, grid, n_per_point, seed, dtype == "float32",
                   output.chunk_points)
        run_output(out, output, lambda c: job.chunk(c, threads), scheduler=scheduler, remote=_chunk_on_worker,
                   shared=job, remote_args=lambda c: (c, threads),
                   desc=f"simulate -> {out.name}" if progress else None, size=output.points_in)
    return out


def _chunk_on_worker(job: _Job, c: int, threads=None):
    return job.chunk(c, threads)
