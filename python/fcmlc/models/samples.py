"""Training data for the FCMLC networks: dataset samples held in memory or streamed.

Training data come from a :class:`fcmlc.dataset.SimDataset`. When the training split fits
in memory (``in_memory="auto"``: at most min(4 GiB, RAM / 4, available memory / 2)) it is loaded
once; otherwise every epoch streams it from disk with ``SimDataset.iter_batches`` in chunks
of ``chunk_rows`` samples (shuffled by the dataset and again within each chunk), so memory
stays bounded. Both ways give the same chunks in the same order for the same seed.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from .._progress import progress_bar
from .regressor import as_seed

__all__ = ["Samples", "memory_limit_bytes"]


def memory_limit_bytes() -> int:
    """Largest training set held in memory by ``in_memory='auto'``:
    min(4 GiB, physical RAM / 4, currently available memory / 2)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    avail = ram
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return int(min(4 << 30, ram // 4, avail // 2))



class Samples:
    """A set of dataset samples (by index), in memory or streamed from the dataset.

    ``chunks(shuffle_seed)`` yields (x float32 (r, d), y_log float64 (r, 2)) with
    y_log = (log10|Ue4|, log10 dm2); with a seed the order is shuffled.
    """

    def __init__(self, dataset, indices, columns=None, in_memory: bool = True, chunk_rows: int = 65536,
                 progress: bool = False, desc: str = "loading", features=None):
        self.dataset = dataset
        #: raw bins -> network features (:class:`fcmlc.models.features.FeatureMap`; None: raw bins)
        self.features = features
        self.indices = np.asarray(indices, dtype=np.int64)
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        self.chunk_rows = int(chunk_rows)
        self.in_memory = bool(in_memory)
        self.x = self.y = None
        if self.in_memory:
            xs, ys = [], []
            with progress_bar(total=len(self.indices), desc=desc, unit="sample", enabled=progress) as bar:
                for x, y in self._stream(None):
                    xs.append(x)
                    ys.append(y)
                    bar.update(len(x))
            d = self.n_features_from(dataset)
            self.x = np.concatenate(xs) if xs else np.empty((0, d), np.float32)
            self.y = np.concatenate(ys) if ys else np.empty((0, 2))

    def n_features_from(self, dataset) -> int:
        return len(self.columns) if self.columns is not None else int(dataset.n_features)

    def __len__(self) -> int:
        return len(self.indices)

    #: samples read from the dataset at a time when streaming, rounded down to a multiple of
    #: ``chunk_rows`` so that every chunk but the last is full, as in memory
    window_rows = 1 << 18

    def _window(self) -> int:
        return self.chunk_rows * max(1, self.window_rows // self.chunk_rows)

    def _stream(self, shuffle_seed):
        for x, y in self.dataset.iter_batches(self.indices, self.chunk_rows, shuffle_seed=shuffle_seed,
                                              window=self._window()):
            x = np.asarray(x)
            if self.columns is not None:
                x = x[:, self.columns]
            if self.features is not None:
                x = self.features.transform(x, np.float32)
            yield np.ascontiguousarray(x, dtype=np.float32), _log_targets(y)

    def chunks(self, shuffle_seed=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of ``chunk_rows`` samples; with ``shuffle_seed`` in a seeded random order: the
        samples permuted as a whole (the dataset's ``iter_batches`` order), then within each chunk.
        Held in memory or streamed, the same seed gives the same chunks, so whether the training
        set fitted in the available memory does not change a trained model."""
        ds_seed = None if shuffle_seed is None else as_seed(shuffle_seed) % (2 ** 31)
        rng = None if shuffle_seed is None else np.random.default_rng(_seed_list(shuffle_seed) + [7])
        if self.in_memory:
            n = len(self.x)
            # the permutation iter_batches applies to the indices (x holds them in their order)
            order = np.arange(n) if ds_seed is None else np.random.default_rng(ds_seed).permutation(n)
            for r0 in range(0, n, self.chunk_rows):
                sel = order[r0:r0 + self.chunk_rows]
                if rng is None:
                    yield self.x[r0:r0 + self.chunk_rows], self.y[r0:r0 + self.chunk_rows]
                else:
                    sel = sel[rng.permutation(len(sel))]
                    yield self.x[sel], self.y[sel]
        else:
            for x, y in self._stream(ds_seed):
                if rng is not None:
                    p = rng.permutation(len(x))
                    x, y = x[p], y[p]
                yield x, y

    def moments(self):
        """(n, sum x, sum x^2, sum y, sum y^2) in float64, in one pass."""
        n = 0
        sx = sxx = sy = syy = 0.0
        for x, y in self.chunks(None):
            x64 = x.astype(np.float64)
            n += len(x)
            sx = sx + x64.sum(axis=0)
            sxx = sxx + np.square(x64).sum(axis=0)
            sy = sy + y.sum(axis=0)
            syy = syy + np.square(y).sum(axis=0)
        return n, sx, sxx, sy, syy


def _seed_list(seed) -> list:
    return [int(s) for s in seed] if isinstance(seed, (tuple, list)) else [int(seed)]


def _log_targets(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"dataset targets must have shape (n, 2) = (|Ue4|, dm2), got {y.shape}")
    if np.any(y <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("dataset targets (|Ue4|, dm2) must be finite and > 0 to take log10")
    return np.log10(y)

