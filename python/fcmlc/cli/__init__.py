"""The `fcmlc` command line: `fcmlc <command> --help` for each command.

One module per command group registers its sub-commands (:mod:`.simulate`, :mod:`.frequentist`,
:mod:`.inference`, :mod:`.exact`, :mod:`.validation`, :mod:`.reproduce`); the argument helpers they share are in
:mod:`._args`. The commands compute with the library and only parse and print here.

Every failure of a command ends here (:func:`main`): one line on stderr naming the file and what
to do, and the exit status of :data:`EXIT_CODES`; never a traceback for an expected fault.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys

from .. import __version__
from .._io import FULL_ERRNOS
from .._resumable import catch_signals, interrupt_signal
from ..exceptions import DiskFullError, FormatError, OutputExistsError
from . import estimators, exact, frequentist, inference, reproduce, simulate, validation
from ._args import add_common_generation_args, add_grid_args, grid_from_args, parse_experiments

__all__ = ["build_parser", "main", "entry", "add_common_generation_args", "add_grid_args", "grid_from_args",
           "parse_experiments", "EXIT_CODES"]

#: The command groups, in the order `fcmlc --help` lists their commands.
COMMAND_GROUPS = (simulate, inference, exact, frequentist, validation, estimators, reproduce)

#: Exit status of `fcmlc` by outcome (also in `fcmlc --help` and the README).
EXIT_CODES = {
    "success": 0,
    "bad input": 2,  # a bad argument or input value, inputs that do not match, an output that exists or is
    # of the wrong kind (a directory for a file)
    "file error": 3,  # a file missing, unreadable or unwritable (permissions), truncated, corrupt
    "disk full": 4,  # no space left, a disk quota, or the file-size limit (ulimit -f)
    "out of memory": 5,
    "interrupted": 130,  # Ctrl-C (SIGINT); 143 for SIGTERM (128 + the signal number)
}

_EPILOG = ("exit status: 0 success; 2 bad input (arguments, input values, mismatched inputs, an output that "
           "exists without --overwrite or is of the wrong kind); 3 a file missing, unreadable, unwritable, truncated or corrupt; 4 disk "
           "full or file-size limit (ulimit -f); 5 out of memory; 130 interrupted by Ctrl-C (143: SIGTERM). "
           "simulate and fc stop between chunks when interrupted and resume when rerun; other commands leave "
           "their previous outputs unchanged.")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `fcmlc` with every sub-command."""
    parser = argparse.ArgumentParser(prog="fcmlc", description="Sterile-neutrino global fits: FCMLC (simulation-"
                                     "based inference), Wilks and Feldman-Cousins on the same grid.", epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"fcmlc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _os_error(e: OSError) -> tuple[str, int]:
    """(message, exit status) of an OSError: 4 when the output does not fit, else 3."""
    code = EXIT_CODES["disk full"] if e.errno in FULL_ERRNOS else EXIT_CODES["file error"]
    if e.strerror is None:  # an OSError built from one message (h5py's, or ours)
        text = str(e)
        if "errno = 28" in text or "errno = 27" in text or "errno = 122" in text:
            code = EXIT_CODES["disk full"]
        return _one_line(text), code
    text = e.strerror if e.filename is None or str(e.filename) in e.strerror else f"{e.filename}: {e.strerror}"
    hints = {errno.EACCES: "check the permissions, or choose another location",
             errno.EPERM: "check the permissions, or choose another location",
             errno.EROFS: "the file system is read-only: choose another location",
             errno.ENOSPC: "free some space or choose another location",
             errno.EDQUOT: "free some space (disk quota) or choose another location",
             errno.EFBIG: "raise the file-size limit (ulimit -f) or make the output smaller"}
    hint = hints.get(e.errno)
    return _one_line(text + (f" ({hint})" if hint and hint not in text else "")), code


def _failure(e: BaseException) -> tuple[str, int]:
    """(one-line message, exit status) of an expected failure (an interruption, MemoryError,
    OSError or ValueError; any other exception is a bug and keeps its traceback)."""
    if isinstance(e, KeyboardInterrupt):
        signum = getattr(e, "signum", None) or interrupt_signal() or signal.SIGINT
        text = _one_line(e)
        if text in ("", "interrupted"):
            text = "interrupted (no partial output is left: every output is written whole or not at all)"
        return text, 128 + int(signum)
    if isinstance(e, MemoryError):
        return (f"out of memory: {_one_line(e) or 'an allocation failed'} (use a smaller grid or fewer samples, "
                "or free memory)"), EXIT_CODES["out of memory"]
    if isinstance(e, FormatError):  # a file is unreadable, truncated or corrupt
        return _one_line(e), EXIT_CODES["file error"]
    if isinstance(e, (OutputExistsError, IsADirectoryError, NotADirectoryError)):  # -o names the wrong thing
        return _one_line(e.strerror if isinstance(e, OSError) and e.strerror else e), EXIT_CODES["bad input"]
    if isinstance(e, DiskFullError):
        return _one_line(e), EXIT_CODES["disk full"]
    if isinstance(e, OSError):
        return _os_error(e)
    return _one_line(e), EXIT_CODES["bad input"]  # a ValueError


def main(argv=None) -> int:
    """Run `fcmlc` with ``argv`` (default: the process's arguments); returns the exit status
    (:data:`EXIT_CODES`), printing one line on stderr for any expected failure. Ctrl-C and
    SIGTERM are handled for the whole command (restored after)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = " ".join(["fcmlc"] + [a for a in argv[:1] if not a.startswith("-")])
    with catch_signals():
        try:
            args = build_parser().parse_args(argv)
            command = f"fcmlc {args.command}"
            rc = int(args.func(args) or 0)
            signum = interrupt_signal()
            if signum is not None:  # a signal after the command's last check: its work is complete
                print(f"{command}: interrupted after the command finished (its outputs are complete)",
                      file=sys.stderr)
                return 128 + int(signum)
            return rc
        except (KeyboardInterrupt, MemoryError, OSError, ValueError) as e:
            message, code = _failure(e)
            print(f"{command}: {'error: ' if code < 128 else ''}{message}", file=sys.stderr)
            return code
        except Exception as e:
            cause = _interruption_behind(e)
            if cause is None:
                raise  # a bug: keeps its traceback
            message, code = _failure(cause)
            print(f"{command}: {message}", file=sys.stderr)
            return code


def _interruption_behind(e: BaseException) -> KeyboardInterrupt | None:
    """The interruption that caused `e`, or None: a signal raised while C code runs Python (a C
    extension's module initialisation, e.g. a lazy ``import scipy.stats``) comes back wrapped
    in that code's own exception (``ImportError: initialization failed``)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def entry() -> None:
    """The `fcmlc` program (console script and ``python -m fcmlc``): :func:`main`, then exit with
    its status. After an interruption the process ends at once (its files are closed by then),
    without waiting for a chunk still being computed in a worker thread, and without finalizing
    a library whose import the signal may have cut short."""
    try:
        status = main()
    except KeyboardInterrupt as e:  # a signal in the instant main's own handlers were being removed
        command = " ".join(["fcmlc"] + [a for a in sys.argv[1:2] if not a.startswith("-")])
        print(f"{command}: interrupted", file=sys.stderr)
        status = 128 + int(getattr(e, "signum", None) or signal.SIGINT)
    # the command is over: a signal from now on changes nothing (Python's finalization would
    # otherwise restore the default action, and a late Ctrl-C would kill the finished process)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    if status >= 128:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
