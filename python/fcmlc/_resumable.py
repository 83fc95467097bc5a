"""The one resumable, settings-checked HDF5 job: an output written chunk by chunk, resumable
after Ctrl-C, ``kill`` or ``kill -9``, identical to an uninterrupted run.

Used by :func:`fcmlc.simulation.simulate` (realizations: :class:`fcmlc.dataset.DatasetOutput`)
and :func:`fcmlc.frequentist.feldman_cousins` (critical values:
:class:`fcmlc.frequentist.fc_result.FCOutput`). Each output is a :class:`ChunkedOutput`; its
life is

1. :func:`open_output`: a new file is laid out completely (settings in its attributes, every
   dataset allocated at creation, so writing a chunk never changes HDF5 metadata) under a
   temporary name and renamed into place; an existing one is checked first: a file that is not
   HDF5, of another kind, or made with other settings is refused and left untouched unless
   ``overwrite``;
2. :func:`run_output`: the pending chunks are computed (:func:`run_chunks`: locally, the next
   chunk computed while the previous one is written, or on a Dask cluster with a bounded number
   of tasks in flight) and each is written and flushed *before* it is marked done, so a run
   killed mid-write leaves a readable file whose unfinished chunk is simply redone; SIGTERM
   becomes KeyboardInterrupt, and an interrupted run says how far it got and how to resume.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py

from ._io import atomic_path
from .exceptions import FormatError, IncompatibleError

_CHOOSE = "choose another output path or pass overwrite=True (--overwrite)"


class ChunkedOutput:
    """What a resumable HDF5 output declares; subclasses implement every method.

    ``kind`` names the output in messages ("{path} exists and is not {kind}").
    """

    kind = "an fcmlc file"

    def inspect(self, f: h5py.File) -> list[str]:
        """The settings in which the existing file `f` differs from this run ("key: file has
        ..., requested ..."); raise FormatError (or KeyError) when `f` is not of this kind. It may
        adopt layout parameters stored in the file (e.g. the chunk size)."""
        raise NotImplementedError

    def layout(self, f: h5py.File) -> None:
        """Write the attributes and allocate the datasets of a new, empty file `f`."""
        raise NotImplementedError

    def pending(self, f: h5py.File) -> list:
        """The tasks (chunks) not yet marked done, in writing order."""
        raise NotImplementedError

    def write(self, f: h5py.File, task, result, seconds: float) -> None:
        """Store one task's result; flush the data before marking the task done."""
        raise NotImplementedError

    def written(self, f: h5py.File) -> str:
        """How much is done, for the interruption message (e.g. "3/14 chunks")."""
        raise NotImplementedError

    def finished(self, f: h5py.File) -> bool:
        """The value of the file's ``complete`` attribute once the pending tasks are written."""
        raise NotImplementedError


def open_output(path, output: ChunkedOutput, overwrite: bool = False) -> bool:
    """Make `path` ready for `output`: check an existing file (True: it exists and was made with
    the same settings) or lay out a new one (False). Refused, never touched: a file that is not
    HDF5 or not ``output.kind`` (FormatError), or made with other settings (IncompatibleError;
    both are ValueErrors) unless ``overwrite``, which replaces it."""
    path = Path(path)
    if path.exists() and not overwrite:
        try:
            with h5py.File(path, "r") as f:
                diffs = output.inspect(f)
        except OSError as e:
            raise FormatError(f"{path} exists and is not {output.kind}: it cannot be read as HDF5 ({e}); "
                              f"{_CHOOSE}") from None
        except (KeyError, FormatError) as e:
            raise FormatError(f"{path} exists and is not {output.kind} ({e}); {_CHOOSE}") from None
        if diffs:
            raise IncompatibleError(f"{path} exists and was made with different settings ({'; '.join(diffs)}); "
                                    f"refusing to resume or overwrite it: {_CHOOSE}")
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        output.layout(f)
    return False


def run_output(path, output: ChunkedOutput, compute, scheduler=None, remote=None, shared=None, remote_args=None,
               desc: str | None = None, size=None, rate=None) -> None:
    """Compute and write the pending tasks of `path` (made by :func:`open_output`), then set its
    ``complete`` attribute to ``output.finished``. A file with nothing pending whose attribute
    is already right is not opened for writing. Arguments after `output` as in
    :func:`run_chunks`."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        tasks = output.pending(f)
        if not tasks and bool(f.attrs["complete"]) == output.finished(f):
            return
    with h5py.File(path, "r+") as f, sigterm_as_interrupt():
        try:
            run_chunks(tasks, compute, lambda task, result, seconds: output.write(f, task, result, seconds),
                       scheduler, remote, shared, remote_args, desc, size, rate)
        except KeyboardInterrupt:
            f.flush()
            print(f"\ninterrupted: {output.written(f)} written to {path}; rerun the same command to resume",
                  file=sys.stderr)
            raise
        f.attrs["complete"] = output.finished(f)


def run_chunks(tasks, compute, write, scheduler=None, remote=None, shared=None, remote_args=None,
               desc: str | None = None, size=None, rate=None) -> None:
    """``write(task, compute(task), seconds)`` for every task, the writes all here.

    Locally the tasks run in order, the next one computed in a worker thread while this one is
    written (the compiled kernels release the GIL); `seconds` is the compute time. With a Dask
    `scheduler` (address or ``distributed.Client``) ``remote(shared, *remote_args(task))`` runs
    on the cluster instead (:func:`map_bounded`); results are written as they complete, so a
    writer must place them by task. `desc`: title of a progress bar (None: no bar) counting
    ``size(task)`` units per task (default 1); ``rate(task, seconds)`` -> its postfix text.
    """
    tasks = list(tasks)
    bar = None
    if desc is not None and tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(size(t) if size else 1 for t in tasks), unit="pt", desc=desc, smoothing=0.1)

    def done(task, result, seconds):
        write(task, result, seconds)
        if bar is not None:
            bar.update(size(task) if size else 1)
            if rate is not None:
                bar.set_postfix_str(rate(task, seconds))

    def timed(task):
        t0 = time.perf_counter()
        return compute(task), time.perf_counter() - t0

    try:
        if scheduler is not None:
            map_bounded(scheduler, shared, tasks, remote, remote_args, done)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(timed, tasks[0]) if tasks else None
            for i, task in enumerate(tasks):
                result, seconds = fut.result()
                fut = pool.submit(timed, tasks[i + 1]) if i + 1 < len(tasks) else None
                done(task, result, seconds)
    finally:
        if bar is not None:
            bar.close()


def map_bounded(scheduler, shared, tasks, fn, args_of, on_result, per_worker: int = 2) -> None:
    """Run ``fn(shared, *args_of(task))`` on a Dask cluster for every task, in order of submission.

    ``scheduler``: an address or a ``distributed.Client`` (a client made here is closed here).
    ``shared`` is scattered once to every worker. At most ``per_worker`` tasks per worker are in
    flight, so the results waiting on the client stay bounded; ``on_result(task, result,
    seconds)`` runs on the client as each task finishes (completion order).
    """
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("Dask scale-out needs the 'dist' extra: pip install 'fcmlc[dist]'") from None
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        shared_future = client.scatter(shared, broadcast=True)
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        queue = list(tasks)
        running = as_completed()
        inflight = {}

        def submit_next():
            task = queue.pop(0)
            fut = client.submit(fn, shared_future, *args_of(task), pure=False)
            inflight[fut.key] = (task, time.perf_counter())
            running.add(fut)

        for _ in range(min(per_worker * n_workers, len(queue))):
            submit_next()
        for fut in running:
            task, t0 = inflight.pop(fut.key)
            on_result(task, fut.result(), time.perf_counter() - t0)
            del fut
            if queue:
                submit_next()
    finally:
        if client is not scheduler:
            client.close()


@contextlib.contextmanager
def sigterm_as_interrupt():
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
