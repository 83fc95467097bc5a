"""The one resumable, settings-checked HDF5 job: an output written chunk by chunk, resumable
after Ctrl-C, ``kill`` or ``kill -9``, identical to an uninterrupted run.

Used by :func:`fcmlc.simulation.simulate` (realizations: :class:`fcmlc.dataset.DatasetOutput`)
and :func:`fcmlc.frequentist.feldman_cousins` (critical values:
:class:`fcmlc.frequentist.fc_result.FCOutput`). Each output is a :class:`ChunkedOutput`; its
life is

1. :func:`open_output`: the output location is checked (writable, room for the whole file:
   ``ChunkedOutput.nbytes``); a new file is laid out completely (settings in its attributes,
   every dataset allocated and its blocks reserved at creation, so writing a chunk never changes
   HDF5 metadata nor needs more space) under a temporary name and renamed into place; an
   existing one is checked first: a file that is not HDF5, of another kind, or made with other
   settings is refused and left untouched unless ``overwrite``;
2. :func:`run_output`: the pending chunks are computed (:func:`run_chunks`: locally, the next
   chunk computed while the previous one is written, or on a Dask cluster with a bounded number
   of tasks in flight) and each is written and flushed *before* it is marked done, so a run
   killed mid-write leaves a readable file whose unfinished chunk is simply redone.

Interruption: Ctrl-C (SIGINT) and SIGTERM only set a flag while chunks run
(:func:`deferred_interrupts`); the loop checks it between chunks (and every 50 ms while it
waits for one), stops, and raises :class:`fcmlc.exceptions.Interrupted` saying how far it got
and how to resume. No exception is ever raised asynchronously inside HDF5 or a worker thread,
so an interruption is never lost. Every HDF5 write goes through :func:`fcmlc._io.h5_writer`: a
failed write (disk full, file-size limit) raises DiskFullError / OSError before the chunk is
marked done.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import h5py

from ._io import atomic_path, check_not_dir, check_output_file, h5_writer
from ._progress import progress_bar
from .exceptions import DiskFullError, FormatError, IncompatibleError, Interrupted

_CHOOSE = "choose another output path or pass overwrite=True (--overwrite)"
#: Seconds between checks of the interruption flag while a chunk is computed.
POLL_S = 0.05


# --- interruption ------------------------------------------------------------------------------


class _SignalState:
    def __init__(self):
        self.pending = None  # the signal received, if any
        self.deferring = 0  # depth of deferred_interrupts blocks
        self.installed = False


_SIG = _SignalState()
_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))


def _on_signal(signum, frame):
    first = _SIG.pending is None
    if first:
        _SIG.pending = signum
    if _SIG.deferring and first:
        return  # checked between chunks (a second signal stops at once)
    raise Interrupted("interrupted", signum)


@contextlib.contextmanager
def catch_signals():
    """Handle SIGINT and SIGTERM during the block (in the main thread; elsewhere, or nested,
    nothing changes): outside :func:`deferred_interrupts` a signal raises Interrupted at once
    (as Ctrl-C's KeyboardInterrupt would; SIGTERM too, so the block's cleanup runs), inside it
    only sets the flag :func:`check_interrupt` reads. The previous handlers are restored after."""
    if _SIG.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in _SIGNALS}
    _SIG.pending = None
    _SIG.installed = True
    try:
        for s in _SIGNALS:
            signal.signal(s, _on_signal)
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _SIG.installed = False


@contextlib.contextmanager
def deferred_interrupts():
    """During the block a first SIGINT / SIGTERM only sets a flag (checked by
    :func:`check_interrupt` at safe points); installs the handlers when no
    :func:`catch_signals` block is active."""
    with catch_signals():
        _SIG.deferring += 1
        try:
            yield
        finally:
            _SIG.deferring -= 1


def interrupt_signal() -> int | None:
    """The signal received in the current :func:`catch_signals` block, or None."""
    return _SIG.pending if _SIG.installed else None


def check_interrupt(message: str = "interrupted") -> None:
    """Raise Interrupted(`message`) when a signal was received (a safe point of a long job)."""
    signum = interrupt_signal()
    if signum is not None:
        raise Interrupted(message, signum)


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

    def nbytes(self) -> int | None:
        """The size of the finished file in bytes (an upper estimate), checked against the free
        space and the file-size limit before any work; None: not known."""
        return None


def open_output(path, output: ChunkedOutput, overwrite: bool = False) -> bool:
    """Make `path` ready for `output`: check an existing file (True: it exists and was made with
    the same settings) or lay out a new one (False). Refused, never touched: a file that is not
    HDF5 or not ``output.kind`` (FormatError), or made with other settings (IncompatibleError;
    both are ValueErrors) unless ``overwrite``, which replaces it (only once the new file is laid
    out). Refused before anything is written: a directory at `path`, an unwritable location, or
    too little space for ``output.nbytes()`` (DiskFullError)."""
    path = check_not_dir(path)
    resume = path.exists() and not overwrite
    if resume:
        try:
            with h5py.File(path, "r") as f:
                diffs = output.inspect(f)
                finished = not diffs and not output.pending(f) and bool(f.attrs["complete"]) == output.finished(f)
        except OSError as e:
            raise FormatError(f"{path} exists and is not {output.kind}: it cannot be read as HDF5 "
                              f"({' '.join(str(e).split())}); {_CHOOSE}") from None
        except (KeyError, FormatError) as e:
            raise FormatError(f"{path} exists and is not {output.kind} ({e}); {_CHOOSE}") from None
        if diffs:
            raise IncompatibleError(f"{path} exists and was made with different settings ({'; '.join(diffs)}); "
                                    f"refusing to resume or overwrite it: {_CHOOSE}")
        if finished:
            return True  # nothing to write: not even write access is needed
    check_output_file(path, output.nbytes(), replace=not resume)
    if resume:
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5_writer(tmp, "w", reserve=True, name=path) as w:
        output.layout(w.file)
    return False


class _CheckedFile:
    """The h5py.File of a running output as :meth:`ChunkedOutput.write` sees it: ``flush``
    raises a write that failed, so a chunk is never marked done after a failed write."""

    def __init__(self, writer):
        self._w = writer

    def __getattr__(self, name):
        return getattr(self._w.file, name)

    def __getitem__(self, key):
        return self._w.file[key]

    def __contains__(self, key):
        return key in self._w.file

    def flush(self):
        self._w.flush()


def run_output(path, output: ChunkedOutput, compute, scheduler=None, remote=None, shared=None, remote_args=None,
               desc: str | None = None, size=None, rate=None) -> None:
    """Compute and write the pending tasks of `path` (made by :func:`open_output`), then set its
    ``complete`` attribute to ``output.finished``. A file with nothing pending whose attribute
    is already right is not opened for writing. Arguments after `output` as in
    :func:`run_chunks`. Ctrl-C / SIGTERM stop it between chunks (Interrupted); a write that
    fails raises DiskFullError / OSError; both say how much is kept and how to resume."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        tasks = output.pending(f)
        if not tasks and bool(f.attrs["complete"]) == output.finished(f):
            return
    resume = "rerun the same command to resume"
    with deferred_interrupts():
        check_interrupt(f"interrupted before any chunk was computed; {path} is kept: {resume}")
        with h5_writer(path, "r+") as w:
            f = _CheckedFile(w)
            try:
                w.guard.reserve()  # the blocks of a sparse file, before any work
                w.guard.check()
                run_chunks(tasks, compute, lambda task, result, seconds: output.write(f, task, result, seconds),
                           scheduler, remote, shared, remote_args, desc, size, rate)
            except KeyboardInterrupt as e:
                with contextlib.suppress(OSError):
                    w.flush()
                raise Interrupted(f"interrupted: {output.written(w.file)} written to {path}; {resume}",
                                  getattr(e, "signum", 2)) from None
            except OSError as e:
                kept = f"{output.written(w.file)} kept in {path}; {resume}"
                if isinstance(e, DiskFullError):
                    raise DiskFullError(f"{e}; {kept}") from None
                raise OSError(e.errno, f"{e.strerror or e}; {kept}", e.filename) from None
            w.file.attrs["complete"] = output.finished(w.file)
            w.flush()
        check_interrupt(f"interrupted after the last chunk: {path} is complete")


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
        bar = progress_bar(total=sum(size(t) if size else 1 for t in tasks), unit="pt", desc=desc, smoothing=0.1)

    def done(task, result, seconds):
        write(task, result, seconds)
        if bar is not None:
            bar.update(size(task) if size else 1)
            if rate is not None:
                bar.set_postfix_str(rate(task, seconds))

    def timed(task):
        t0 = time.perf_counter()
        return compute(task), time.perf_counter() - t0

    def checked(task, result, seconds):
        done(task, result, seconds)
        check_interrupt()

    try:
        check_interrupt()
        if scheduler is not None:
            map_bounded(scheduler, shared, tasks, remote, remote_args, checked)
            return
        pool = ThreadPoolExecutor(max_workers=1)
        ok = False
        try:
            fut = pool.submit(timed, tasks[0]) if tasks else None
            for i, task in enumerate(tasks):
                result, seconds = _wait(fut)
                fut = pool.submit(timed, tasks[i + 1]) if i + 1 < len(tasks) else None
                checked(task, result, seconds)
            ok = True
        finally:
            # on an interruption or error the chunk being computed is abandoned, not awaited
            pool.shutdown(wait=ok, cancel_futures=True)
    finally:
        if bar is not None:
            bar.close()


def _wait(fut):
    """The result of `fut`, checking for an interruption every :data:`POLL_S` seconds."""
    while True:
        try:
            return fut.result(timeout=POLL_S)
        except FutureTimeout:  # (the built-in TimeoutError from Python 3.11 on)
            check_interrupt()


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
    inflight = {}
    try:
        shared_future = client.scatter(shared, broadcast=True)
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        queue = list(tasks)
        running = as_completed()

        def submit_next():
            task = queue.pop(0)
            fut = client.submit(fn, shared_future, *args_of(task), pure=False)
            inflight[fut.key] = (task, time.perf_counter(), fut)
            running.add(fut)

        for _ in range(min(per_worker * n_workers, len(queue))):
            submit_next()
        for fut in running:
            task, t0, _ = inflight.pop(fut.key)
            on_result(task, fut.result(), time.perf_counter() - t0)
            del fut
            if queue:
                submit_next()
    except BaseException:  # interrupted or failed: the tasks still in flight are cancelled
        with contextlib.suppress(Exception):
            client.cancel([f for _, _, f in inflight.values()])
        raise
    finally:
        if client is not scheduler:
            client.close()
