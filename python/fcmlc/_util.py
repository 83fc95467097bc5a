"""Small helpers shared by several modules (JSON conversion, NPZ headers, torch thread scoping)."""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np


def npz_header(f, path, fmt: str, max_version: int) -> dict:
    """The JSON ``header`` array of an fcmlc NPZ file, checked: format ``fmt`` and a version this
    fcmlc can read (<= ``max_version``); a ValueError naming the file otherwise."""
    h = json.loads(str(f["header"]))
    if h.get("format") != fmt:
        raise ValueError(f"{path}: format {h.get('format')!r} is not {fmt!r}")
    if int(h.get("version", 0)) > max_version:
        raise ValueError(f"{path}: written by a newer fcmlc (format version {h['version']})")
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


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with torch.set_num_threads(n) (None: leave it), restoring it after."""
    if n is None:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
