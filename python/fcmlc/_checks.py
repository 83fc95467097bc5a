"""The one rule for each argument check used across fcmlc (seeds, levels, counts, threads).

Every module that takes a seed, a list of levels or a positive count calls these, so the same
bad value gets the same message wherever it is given.
"""
from __future__ import annotations

import numpy as np

#: Seeds and Philox stream keys are unsigned 64-bit integers.
UINT64_MAX = (1 << 64) - 1


def _is_int(v) -> bool:
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, np.integer))


def check_seed(seed, name: str = "seed") -> int:
    """An integer in [0, 2^64): the seed of a Philox stream."""
    if not _is_int(seed) or not 0 <= int(seed) <= UINT64_MAX:
        raise ValueError(f"{name} must be an integer in [0, 2^64), got {seed!r}")
    return int(seed)


def check_positive_int(v, name: str) -> int:
    """An integer >= 1 (numpy integers accepted, booleans and floats refused)."""
    if not _is_int(v) or int(v) < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def check_threads(threads, name: str = "threads"):
    """None (the library default) or a positive integer."""
    return None if threads is None else check_positive_int(threads, name)


def check_level(level, name: str = "level") -> float:
    """One credibility/confidence level in (0, 1]; 1 means the whole grid."""
    try:
        v = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {level!r}") from None
    if not 0.0 < v <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1] (e.g. 0.9 for 90%), got {level!r}")
    return v


def check_levels(levels, name: str = "levels") -> tuple:
    """Levels in (0, 1), no duplicates, returned sorted ascending (the order every output uses)."""
    try:
        lv = tuple(float(v) for v in np.atleast_1d(levels))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers in (0, 1), got {levels!r}") from None
    if not lv:
        raise ValueError(f"{name} must not be empty")
    for v in lv:
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} must lie in (0, 1) (e.g. 0.9 for 90%), got {v!r}")
    if len(set(lv)) != len(lv):
        raise ValueError(f"{name} contain duplicates: {list(lv)}")
    return tuple(sorted(lv))


def same_name(a: str, b: str) -> bool:
    """Experiment and task names compare case-insensitively everywhere."""
    return str(a).casefold() == str(b).casefold()
