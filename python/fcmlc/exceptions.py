"""Domain errors of fcmlc.

Each subclasses the built-in error callers already catch (ValueError, OSError, MemoryError or
KeyboardInterrupt), so existing ``except ValueError`` clauses keep working; catching
``FcmlcError`` catches all of them except :class:`Interrupted` (an interruption is not an error
to be handled by ``except Exception``). The command line maps each to its exit status
(:data:`fcmlc.cli.EXIT_CODES`).
"""
from __future__ import annotations


class FcmlcError(Exception):
    """Base class of every fcmlc-specific error."""


class FormatError(FcmlcError, ValueError):
    """A file fcmlc wrote (or should have written) is malformed, truncated or of another format/version."""


class CorruptFileError(FormatError):
    """A file fcmlc wrote no longer holds what was written: a checksum does not match, or a value
    lies outside what the model that produced it allows (bit rot, an edit, a damaged copy)."""


class IncompatibleError(FcmlcError, ValueError):
    """Two inputs that must describe the same model do not (experiment definitions, grids, seeds)."""


class OutputExistsError(FcmlcError, FileExistsError):
    """An output already exists and would be replaced; pass overwrite=True (``--overwrite``)."""


class DiskFullError(FcmlcError, OSError):
    """An output does not fit: no space left on the device, a disk quota, or the process's
    file-size limit (``ulimit -f``). Raised before any work when the size is known in advance."""


class OutOfMemoryError(FcmlcError, MemoryError):
    """A computation would need more memory than is available (said before it starts)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a long job at a safe point; the message says what was
    kept and how to resume. ``signum`` is the signal received."""

    def __init__(self, message: str = "interrupted", signum: int = 2):
        super().__init__(message)
        self.signum = int(signum)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "interrupted"
