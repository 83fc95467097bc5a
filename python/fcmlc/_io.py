"""File helpers shared across fcmlc: all-or-nothing writes, JSON conversion, NPZ headers.

Every output fcmlc writes in one go goes through :func:`atomic_path`: it is written to a
temporary sibling and renamed into place only when complete, so a failure (disk full, Ctrl-C)
leaves the previous file intact and no temporary litter. Chunked, resumable HDF5 outputs are
handled by :mod:`fcmlc._resumable`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .exceptions import FormatError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling of ``path`` to write; rename it onto ``path`` if the block
    succeeds, remove it if the block fails."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
