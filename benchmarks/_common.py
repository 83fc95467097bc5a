"""Helpers shared by the benchmark scripts (run them as `python benchmarks/bench_*.py`)."""
from __future__ import annotations

import platform
import statistics
import time


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timeit(f, repeat):
    """(best, median) wall seconds of ``repeat`` calls of f()."""
    ts = []
    for _ in range(max(1, int(repeat))):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(statistics.median(ts))
