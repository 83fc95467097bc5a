"""Scoped torch thread counts (torch imported only when a count is given)."""
from __future__ import annotations

import contextlib


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
