"""Domain errors of fcmlc.

Each subclasses the built-in error callers already catch (ValueError or OSError), so existing
``except ValueError`` clauses keep working; catching ``FcmlcError`` catches all of them.
"""
from __future__ import annotations


class FcmlcError(Exception):
    """Base class of every fcmlc-specific error."""


class FormatError(FcmlcError, ValueError):
    """A file fcmlc wrote (or should have written) is malformed, truncated or of another format/version."""


class IncompatibleError(FcmlcError, ValueError):
    """Two inputs that must describe the same model do not (experiment definitions, grids, seeds)."""


class OutputExistsError(FcmlcError, FileExistsError):
    """An output already exists and would be replaced; pass overwrite=True (``--overwrite``)."""
