"""Full-grid Feldman-Cousins: the toys of a true grid point (:func:`fc_toys`), critical values
by order statistics (:func:`critical_values`) and the resumable run over the grid
(:func:`feldman_cousins`, in memory or to an HDF5 file: :mod:`fcmlc.frequentist.fc_result`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import _core
from .._checks import check_levels, check_positive_int, check_seed, check_threads
from .._resumable import check_interrupt, deferred_interrupts, open_output, run_chunks, run_output
from ..physics import Grid
from ._torch import fc_toys_torch, resolve_device
from .chi2 import Chi2Model
from .fc_result import FCOutput, FCResult, fc_settings, point_chunks

#: Default Feldman-Cousins levels.
FC_LEVELS = (0.68, 0.90, 0.95)
_BACKENDS = ("cpu", "torch")


def order_statistic_index(level: float, n: int) -> int:
    """0-based index of the ceil(level * n)-th smallest of n values (clipped to [0, n-1]);
    1e-9 guards against 0.9 * 1000 = 900.0000000000001."""
    k = int(math.ceil(float(level) * n - 1e-9))
    return min(max(k, 1), n) - 1


def critical_values(delta, levels) -> np.ndarray:
    """Critical values (n_levels, n_points) from toys `delta` (n_points, n_toys) by the
    order-statistic convention of :data:`QUANTILE_CONVENTION`, one row per level in the given
    order."""
    delta = np.asarray(delta, dtype=float)
    n = delta.shape[-1]
    ks = [order_statistic_index(L, n) for L in levels]
    part = np.partition(delta, sorted(set(ks)), axis=-1)
    return np.stack([part[..., k] for k in ks])


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be 'cpu' or 'torch', got {backend!r}")


def _toys(model, pid, mu, n_toys, seed, toy_offset, return_best, threads, backend, device):
    if backend == "cpu":
        return _core.fc_toys(model.kernel, pid, mu, n_toys, seed, toy_offset, return_best, threads)
    return fc_toys_torch(model, pid, mu, n_toys, seed, toy_offset, return_best, device)


def fc_toys(model: Chi2Model, point_ids, n_toys: int, seed: int, toy_offset: int = 0, threads: int | None = None,
            return_best: bool = False, backend: str = "cpu", device=None):
    """Delta-chi2 = chi2(p) - min over the grid of toys t = toy_offset .. toy_offset + n_toys - 1
    at true grid points p (`point_ids`): array (n_points, n_toys) [, best-fit point index].
    With backend 'cpu', toy t at point p is realization t of point p in ``simulate`` with the
    same seed; backend 'torch' draws statistically equivalent toys (:mod:`fcmlc.frequentist._torch`)."""
    _check_backend(backend)
    seed, threads = check_seed(seed), check_threads(threads)
    model.prepare_toys()
    pid = np.ascontiguousarray(np.atleast_1d(point_ids), dtype=np.int64)
    mu = model.toy_expectations(pid)
    return _toys(model, pid, mu, int(n_toys), seed, int(toy_offset), return_best, threads, backend, device)


def fc_chunk(model: Chi2Model, point_ids, mu, n_toys, seed, levels, threads, store_toys, backend="cpu", device=None):
    """One chunk of an FC run (on a Dask worker too: `mu` = ``model.toy_expectations(point_ids)``
    travels with the task): (critical values (n_levels, n), toys (n, n_toys) float32 or None)."""
    pid = np.ascontiguousarray(point_ids, dtype=np.int64)
    delta = _toys(model, pid, mu, int(n_toys), seed, 0, False, threads, backend, device)
    crit = critical_values(delta, levels)
    return crit, (delta.astype(np.float32) if store_toys else None)


def default_chunk_points(n_toys: int) -> int:
    """Grid points per chunk of an FC run: ~2e5 toys, about a second of work for a STEREO-size
    experiment on 2 cores."""
    return int(max(1, min(4096, 200_000 // max(1, n_toys))))


def feldman_cousins(experiments, grid: Grid | None = None, n_toys: int = 1000, seed: int = 0,
                    levels: Sequence[float] = FC_LEVELS, out=None, threads: int | None = None,
                    chunk_points: int | None = None, scheduler=None, progress: bool = True, points=None,
                    store_toys: bool = False, overwrite: bool = False, backend: str = "cpu",
                    device=None) -> FCResult:
    """Feldman-Cousins critical values at every grid point (or at `points`, grid indices).

    At each true grid point p, `n_toys` pseudo-experiments are drawn with the samplers and
    keying of ``simulate`` (toy t = realization t of point p under `seed`), each is scanned over
    the whole grid, and the critical value at level L is the ceil(L n_toys)-th smallest
    Delta-chi2 = chi2(p) - min_grid chi2 (:data:`QUANTILE_CONVENTION`). `levels` are stored in
    ascending order (no duplicates).

    `experiments`: names, Experiment objects, an ExperimentSet, or a :class:`Chi2Model`.
    `out`: HDF5 path; written chunk by chunk (`chunk_points` grid points) with a done-mask, so
    rerunning the same call after an interruption resumes and gives a file identical to an
    uninterrupted run (:mod:`fcmlc._resumable`). An existing file made with other settings
    (seed, grid, experiments, toys, levels, fcmlc version) is refused unless ``overwrite=True``;
    a finished one is loaded, not recomputed. Results are identical for any `threads`,
    `chunk_points`, and with a Dask `scheduler` (address or ``distributed.Client``).
    `backend='torch'` runs the toys with PyTorch on `device` (default CUDA when available):
    statistically equivalent toys, not the realizations of ``simulate`` (see
    :mod:`fcmlc.frequentist._torch`); the file records the toy source and a run with another
    backend is refused like any other settings change."""
    model = experiments if isinstance(experiments, Chi2Model) else Chi2Model(experiments, grid)
    if grid is not None and grid != model.grid:
        raise ValueError("grid differs from the Chi2Model's grid")
    grid = model.grid
    n_toys = check_positive_int(n_toys, "n_toys")
    seed, threads = check_seed(seed), check_threads(threads)
    levels = check_levels(levels)
    _check_backend(backend)
    toy_source = "simulate"
    if backend == "torch":
        device = str(resolve_device(device))
        toy_source = f"torch-{device.split(':')[0]}"
    if points is None:
        wanted = np.arange(grid.n_points, dtype=np.int64)
    else:
        wanted = np.unique(np.asarray(points, dtype=np.int64).ravel())
        if wanted.size == 0 or wanted[0] < 0 or wanted[-1] >= grid.n_points:
            raise ValueError(f"points must be grid point indices in [0, {grid.n_points})")
    chunk_points = default_chunk_points(n_toys) if chunk_points is None else check_positive_int(chunk_points,
                                                                                               "chunk_points")
    model.prepare_toys()
    s = fc_settings(grid, n_toys, seed, levels, model.names, model.definition_hashes, model.model_digest,
                    store_toys, toy_source=toy_source)
    args = (n_toys, seed, levels, threads, store_toys, backend, device)
    run = dict(scheduler=scheduler, remote=fc_chunk, shared=model,
               remote_args=lambda pid: (pid, model.toy_expectations(pid), *args),
               size=len, rate=lambda pid, seconds: f"{pid.size * n_toys / max(seconds, 1e-9):.3g} toys/s")

    def compute(pid):  # the module's fc_chunk, looked up at call time
        return fc_chunk(model, pid, model.toy_expectations(pid), *args)

    with deferred_interrupts():  # Ctrl-C / SIGTERM stop between chunks, never inside HDF5
        if out is None:
            return _in_memory(model, grid, levels, n_toys, seed, store_toys, toy_source, wanted, chunk_points,
                              compute, progress, run)
        out = Path(out)
        output = FCOutput(s, grid.n_points, wanted, chunk_points)
        check_interrupt(f"interrupted before {out} was written")
        open_output(out, output, overwrite)
        run_output(out, output, compute, desc=f"FC -> {out.name}" if progress else None, **run)
        res = FCResult.load(out)
    res.meta["elapsed_s"] = output.elapsed
    return res


def _in_memory(model, grid, levels, n_toys, seed, store_toys, toy_source, wanted, chunk_points, compute, progress,
               run) -> FCResult:
    crit = np.full((len(levels), grid.n_points), np.nan)
    done = np.zeros(grid.n_points, dtype=np.uint8)
    toys = np.full((grid.n_points, n_toys), np.nan, dtype=np.float32) if store_toys else None
    elapsed = [0.0]

    def write(pid, result, seconds):
        crit[:, pid] = result[0]
        if toys is not None:
            toys[pid] = result[1]
        done[pid] = 1
        elapsed[0] += seconds

    run_chunks(point_chunks(wanted, chunk_points), compute, write, desc="FC" if progress else None, **run)
    return FCResult(crit.reshape(len(levels), grid.n_dm2, grid.n_ue4), levels, grid, n_toys, seed, model.names,
                    model.definition_hashes, model.model_digest, done.astype(bool).reshape(grid.n_dm2, grid.n_ue4),
                    toys=toys, meta={"elapsed_s": elapsed[0]}, toy_source=toy_source)
