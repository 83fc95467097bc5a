"""File helpers shared across fcmlc: all-or-nothing writes, output checks, HDF5 writes that
never see an I/O error, JSON conversion, NPZ headers.

Every output fcmlc writes in one go goes through :func:`atomic_path`: it is written to a
temporary sibling and renamed into place only when complete, so a failure (disk full, Ctrl-C)
leaves the previous file intact and no temporary litter. A command with several outputs in one
directory writes them through :class:`OutputDir` (all replaced together, or none). Chunked,
resumable HDF5 outputs are handled by :mod:`fcmlc._resumable`; every HDF5 file fcmlc writes is
opened with :func:`h5_writer`, so a failed write (disk full, file-size limit) is reported as a
Python error instead of leaving HDF5 in a broken state (which crashed the interpreter).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np

from .exceptions import DiskFullError, FormatError, OutputExistsError

try:
    import fcntl
    import resource
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = resource = None

#: errno values that mean "the output does not fit" (exit status 4 on the command line).
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_TMP = ".tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``{name}.{pid}.tmp`` siblings of `path` left by processes that no longer run
    (a run killed with kill -9 cannot clean up after itself)."""
    with contextlib.suppress(OSError):
        for q in path.parent.glob(f"{glob.escape(path.name)}.*{_TMP}"):
            pid = q.name[len(path.name) + 1:-len(_TMP)]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                if q.is_dir():
                    shutil.rmtree(q, ignore_errors=True)
                else:
                    q.unlink()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling of ``path`` to write; rename it onto ``path`` if the block
    succeeds, remove it if the block fails (temporaries of killed runs are removed too)."""
    path = Path(path)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{_TMP}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"  # pragma: no cover


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_space(path, need: int, replace: bool = False) -> None:
    """Refuse (DiskFullError) before any work when a file of `need` bytes at `path` cannot be
    written: above the process's file-size limit (``ulimit -f``), or more than the free space of
    its file system (less what an existing file at `path` already occupies, unless `replace`:
    then the old file stays until the new one is complete)."""
    path = Path(path)
    need = int(need)
    if resource is not None:
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY and need > soft:
            raise DiskFullError(f"{path} needs {human_bytes(need)} but the file-size limit (ulimit -f) is "
                                f"{human_bytes(soft)}: raise the limit or make the output smaller")
    have = 0
    if not replace:
        with contextlib.suppress(OSError):
            have = path.stat().st_blocks * 512
    where = _existing_ancestor(path.parent)
    try:
        st = os.statvfs(where)
    except OSError:  # pragma: no cover - e.g. a platform without statvfs
        return
    free = st.f_bavail * st.f_frsize
    if need - have > free:
        raise DiskFullError(f"{path} needs {human_bytes(need)}{f' ({human_bytes(need - have)} more)' if have else ''} "
                            f"but only {human_bytes(free)} is free on {where}: free some space or choose another "
                            "location")


def _probe_writable(directory: Path, what: str) -> None:
    """Create and remove a file in `directory` (the nearest existing ancestor of an output):
    PermissionError / OSError naming the output when that is not possible."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".fcmlc-probe-", dir=directory)
    except OSError as e:
        raise type(e)(e.errno, f"{what} cannot be written: {e.strerror} in {directory}", str(directory)) from None
    os.close(fd)
    os.unlink(probe)


def check_not_dir(path) -> Path:
    """An output file's path: not a directory, below a directory (IsADirectoryError /
    NotADirectoryError naming it otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"output {path} is a directory: name a file (e.g. {path / 'out.h5'})",
                                str(path))
    anc = _existing_ancestor(path.parent)
    if not anc.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"output {path}: {anc} is a file, not a directory", str(anc))
    return path


def check_writable(path, replace: bool = False) -> None:
    """PermissionError / OSError naming `path` when it cannot be written: an existing file is
    opened for writing (unless `replace`: then, as for a new file, a file is created and removed
    in its directory, the nearest existing one)."""
    path = Path(path)
    if path.exists() and not replace:
        try:
            os.close(os.open(path, os.O_RDWR))
        except OSError as e:
            raise type(e)(e.errno, f"output {path} cannot be written: {e.strerror}", str(path)) from None
        return
    _probe_writable(_existing_ancestor(path.parent), f"output {path}")


def check_output_file(path, need: int | None = None, replace: bool = False) -> Path:
    """Check an output file before any work: :func:`check_not_dir`, :func:`check_writable` and,
    when its size `need` is known, :func:`check_space` (all of it when `replace`: the old file
    stays until the new one is complete)."""
    path = check_not_dir(path)
    check_writable(path, replace)
    if need is not None:
        check_space(path, need, replace)
    return path


class OutputDir:
    """The output directory of a command that writes several files (`names`), checked when made
    (before any work): not a file, writable, and none of `names` present unless `overwrite`.

    ``with out.writing() as d:`` yields a staging directory to write every file into; when the
    block succeeds they replace the directory's files together (a listed name not written this
    time is removed, so no stale file of an earlier run stays), when it fails the directory is
    left as it was and the staging directory is removed."""

    def __init__(self, path, names, overwrite: bool = False):
        self.path = Path(path)
        self.names = tuple(names)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"output {self.path} exists and is not a directory: name a "
                                     "directory (created if missing)", str(self.path))
        anc = _existing_ancestor(self.path)
        if not anc.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"output {self.path}: {anc} is a file, not a directory",
                                     str(anc))
        present = [n for n in self.names if (self.path / n).exists()]
        if present and not overwrite:
            raise OutputExistsError(f"{self.path} already holds {', '.join(present)}: choose another output "
                                    "directory or pass --overwrite to replace them")
        _probe_writable(anc, f"output directory {self.path}")

    def file(self, name: str) -> Path:
        return self.path / name

    @contextlib.contextmanager
    def writing(self):
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(self.path / ".fcmlc-staging")
        stage = self.path / f".fcmlc-staging.{os.getpid()}{_TMP}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        try:
            yield stage
            for n in self.names:
                if (stage / n).exists():
                    os.replace(stage / n, self.path / n)
                elif (self.path / n).exists():
                    (self.path / n).unlink()
            stage.rmdir()
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()  # only when empty
            raise


# --- HDF5 writes through a file object that never reports an error to HDF5 ----------------------


class GuardedFile(io.RawIOBase):
    """A file for h5py's ``fileobj`` driver that records the first failed write (disk full,
    file-size limit, I/O error) instead of returning it to HDF5 (whose error paths could leave
    the library in a state that crashed on close) and drops later writes; :meth:`check` raises it.
    The file is locked exclusively (like HDF5's own lock), so two writers, or a reader and a
    writer, never share it."""

    def __init__(self, path, create: bool, name=None):
        self.path = Path(path)
        self.name = Path(name) if name is not None else self.path  # in messages (the final name of a temporary)
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if create else 0) | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(self.path, flags, 0o666)
        self.pos = 0
        self.error: OSError | None = None
        if fcntl is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self.fd)
                raise OSError(errno.EAGAIN, f"{self.name} is in use by another process (it is being written or "
                              "read): wait for it to finish", str(self.path)) from None

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else os.fstat(self.fd).st_size + pos
        return self.pos

    def tell(self):
        return self.pos

    def readinto(self, b):
        data = os.pread(self.fd, len(b), self.pos)
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def write(self, b):
        mv = memoryview(b).cast("B")
        n = len(mv)
        if self.error is None:
            try:
                done = 0
                while done < n:
                    done += os.pwrite(self.fd, mv[done:], self.pos + done)
            except OSError as e:
                self.error = e
        self.pos += n
        return n

    def truncate(self, size=None):
        size = self.pos if size is None else int(size)
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as e:
                self.error = e
        return size

    def flush(self):
        pass

    def reserve(self) -> None:
        """Allocate the file's blocks up to its size (sparse regions HDF5 allocated but has not
        written), so later writes cannot run out of space; a failure is recorded."""
        if self.error is None and hasattr(os, "posix_fallocate"):
            try:
                size = os.fstat(self.fd).st_size
                if size:
                    os.posix_fallocate(self.fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    self.error = e

    def sync(self) -> None:
        """Flush the written data to the device (an error is recorded)."""
        if self.error is None:
            try:
                os.fsync(self.fd)
            except OSError as e:
                self.error = e

    def check(self) -> None:
        """Raise the recorded error (DiskFullError when the output does not fit), naming the file."""
        e = self.error
        if e is None:
            return
        what = os.strerror(e.errno) if e.errno else str(e)
        if e.errno in FULL_ERRNOS:
            hint = ("raise the file-size limit (ulimit -f)" if e.errno == errno.EFBIG
                    else "free some space or choose another location")
            raise DiskFullError(f"writing {self.name} failed: {what}: {hint}")
        raise OSError(e.errno, f"writing {self.name} failed: {what}", str(self.name))

    def close(self):
        if not self.closed:
            os.close(self.fd)
        super().close()


class H5Writer:
    """An HDF5 file open for writing through a :class:`GuardedFile` (see :func:`h5_writer`):
    ``file`` is the h5py.File; :meth:`flush` flushes it and raises a failed write."""

    def __init__(self, path, mode: str, name=None):
        if mode not in ("w", "r+"):
            raise ValueError(f"mode must be 'w' or 'r+', got {mode!r}")
        self.guard = GuardedFile(path, create=mode == "w", name=name)
        try:
            self.file = h5py.File(self.guard, mode)
        except BaseException:
            self.guard.close()
            raise

    def flush(self) -> None:
        self.file.flush()
        self.guard.check()

    def close(self, check: bool = True) -> None:
        try:
            if self.file.id.valid:
                self.file.close()
        finally:
            self.guard.close()
        if check:
            self.guard.check()


@contextlib.contextmanager
def h5_writer(path, mode: str = "w", reserve: bool = False, name=None):
    """``with h5_writer(path, "w") as w:`` write ``w.file`` (an h5py.File); on leaving, the file
    is closed and a write that failed anywhere inside raises (DiskFullError or OSError naming the
    file, or `name`: the output a temporary `path` becomes). ``reserve``: allocate every block of
    the file before closing (so that later writes of a resumable output cannot run out of space)."""
    w = H5Writer(path, mode, name)
    try:
        yield w
        if reserve:
            w.file.flush()
            w.guard.reserve()
    except BaseException:
        w.close(check=False)
        raise
    w.close()


def atomic_write_text(path, text: str):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def atomic_write_json(path, obj, indent: int = 2):
    atomic_write_text(path, json.dumps(jsonable(obj), indent=indent) + "\n")


def save_figure(fig, path, dpi: int = 120):
    """``fig.savefig`` all or nothing (format from the suffix, PNG by default)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")


def save_npz(path, **arrays):
    """``np.savez`` all or nothing (the name is kept exactly: no '.npz' appended)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def npz_header(f, path, fmt: str, max_version: int) -> dict:
    """The JSON ``header`` array of an fcmlc NPZ file, checked: format ``fmt`` and a version this
    fcmlc can read (<= ``max_version``); a FormatError naming the file otherwise."""
    try:
        h = json.loads(str(f["header"]))
    except (KeyError, ValueError) as e:
        raise FormatError(f"{path}: not an fcmlc {fmt} file (no readable header: {e})") from None
    if not isinstance(h, dict) or h.get("format") != fmt:
        raise FormatError(f"{path}: format {h.get('format') if isinstance(h, dict) else h!r} is not {fmt!r}")
    if int(h.get("version", 0)) > max_version:
        raise FormatError(f"{path}: written by a newer fcmlc (format version {h['version']})")
    return h


def jsonable(o):
    """NumPy scalars/arrays, tuples and paths -> plain JSON types; non-finite floats -> None."""
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, Path):
        return str(o)
    return o
