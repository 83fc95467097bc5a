"""Small helpers shared by several modules (JSON conversion, torch thread scoping)."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np


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
