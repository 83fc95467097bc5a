"""torch settings shared by training, inference and the torch FC backend: the device to run on
and scoped thread counts (torch imported only when used)."""
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


def resolve_device(device=None):
    """The torch device to run on: ``device``, or CUDA when available and the CPU otherwise; a
    ValueError when CUDA is asked for but torch sees none."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but torch sees no CUDA device (CPU-only build or no GPU)")
    return dev
