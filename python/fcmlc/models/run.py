"""The parts of a training run that every estimator shares (:func:`fcmlc.models.train` and the
estimators of :mod:`fcmlc.estimators`): the seeded train/validation split of the dataset's
"train" split, the record of the data in config.json, the training sets, the settings a
checkpoint is checked against, the clock and resume record of a run, and whether a run's result
depends on the machine (only when a wall-clock ``time_budget`` was set).
"""
from __future__ import annotations

import datetime as _dt
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .samples import Samples, memory_limit_bytes

__all__ = ["split_train_validation", "dataset_record", "training_samples", "run_settings", "machine_dependence",
           "RunClock", "now", "dequantize_widths"]


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def split_train_validation(ds, seed: int, validation_fraction: float):
    """(fit indices, validation indices), both sorted: a seeded random ``validation_fraction`` of
    the dataset's "train" split (at least one sample) for early stopping, the rest for fitting.
    ValueError when the split has fewer than 10 samples."""
    train_idx = np.asarray(ds.split_indices("train"), dtype=np.int64)
    if train_idx.size < 10:
        raise ValueError(f"the dataset's training split has only {train_idx.size} samples")
    perm = np.random.default_rng([seed, 31]).permutation(train_idx.size)
    n_val = max(1, int(round(validation_fraction * train_idx.size)))
    return np.sort(train_idx[perm[n_val:]]), np.sort(train_idx[perm[:n_val]])


def dequantize_widths(grid) -> tuple:
    """The spacing of a (log-spaced) simulation grid in (log10|Ue4|, log10 dm2): the width within
    which grid-valued training targets are jittered uniformly (dequantisation)."""
    return (float(np.log10(grid.ue4_range[1] / grid.ue4_range[0]) / (grid.n_ue4 - 1)),
            float(np.log10(grid.dm2_range[1] / grid.dm2_range[0]) / (grid.n_dm2 - 1)))


def dataset_record(ds, names, columns, fit_idx, val_idx) -> dict:
    """The model's record of its data (config.json): fcmlc version, experiments' bins and
    definition hashes, and the dataset (path, seed, experiments, grid, sizes, feature columns)."""
    hashes = getattr(ds, "experiment_hashes", None)
    bins = getattr(ds, "n_bins", None)
    return {
        "fcmlc_version": __version__,
        "experiment_bins": {n: int(bins[n]) for n in names} if isinstance(bins, dict) else None,
        "experiment_hashes": {n: hashes.get(n) for n in names} if isinstance(hashes, dict) else None,
        "dataset": {
            "path": str(Path(ds.path).resolve()) if getattr(ds, "path", None) is not None else None,
            "seed": getattr(ds, "seed", None), "experiments": list(ds.experiments),
            "grid": ds.grid.to_dict(), "n_per_point": int(ds.n_per_point), "n_samples": int(ds.n_samples),
            "n_train": int(fit_idx.size), "n_validation": int(val_idx.size), "feature_columns":
                None if columns is None else [int(columns[0]), int(columns[-1]) + 1] if
                np.all(np.diff(columns) == 1) else columns.tolist(),
        },
    }


def training_samples(ds, fit_idx, val_idx, columns, features, in_memory, chunk_rows, progress, info):
    """(training Samples, validation Samples) of the dataset's features (``features``: the
    FeatureMap), held in memory or streamed (``in_memory``: True, False or "auto", which holds
    them when they fit in :func:`fcmlc.models.samples.memory_limit_bytes`; either way the same
    batches, so the same model). Records the choice in ``info["dataset"]["in_memory"]``."""
    n_feat = len(columns) if columns is not None else int(ds.n_features)
    need = (fit_idx.size + val_idx.size) * (n_feat * 4 + 16)
    held = in_memory if in_memory != "auto" else need <= memory_limit_bytes()
    info["dataset"]["in_memory"] = bool(held)
    chunk = int(chunk_rows)
    return (Samples(ds, fit_idx, columns, held, chunk, progress, "loading training set", features),
            Samples(ds, val_idx, columns, held, chunk, progress, "loading validation set", features))


def run_settings(config: dict, seed, names, info, dev, threads) -> dict:
    """What determines the trained weights, for the checkpoint's settings check: the training
    configuration (``config``, a dict; not ``in_memory``: streamed or not, the batches are the
    same; the thread count separately), seed, experiments, device type, thread count, torch and
    fcmlc versions, and the data (not the dataset's path)."""
    config = {k: v for k, v in config.items() if k not in ("in_memory", "threads")}
    return {"config": config, "seed": seed, "experiments": names, "device": dev.type, "torch_threads": threads,
            "torch": str(torch.__version__), "fcmlc_version": __version__,
            "experiment_bins": info["experiment_bins"], "experiment_hashes": info["experiment_hashes"],
            "dataset": {k: v for k, v in info["dataset"].items() if k != "path"}}


def machine_dependence(time_budget, histories: dict) -> dict:
    """``machine_dependent`` (a wall-clock budget was set) and ``machine_dependent_reason`` for
    the training record of config.json; ``histories``: network name -> its training history."""
    if time_budget is None:
        return {"machine_dependent": False, "machine_dependent_reason": None}
    stopped = [n for n, h in histories.items() if h.get("stop_reason") == "time_budget"]
    what = (f"it stopped the {' and the '.join(stopped)}" if stopped else
            "it did not stop training this time, but could on a slower or busier machine")
    return {"machine_dependent": True,
            "machine_dependent_reason": f"a wall-clock time budget of {time_budget:g} s was set: {what}; the same "
                                        f"seed and data can give other weights on another machine or under other "
                                        f"load"}


class RunClock:
    """The clock and resume record of a training run, from scratch (``state`` None) or resumed from
    a checkpoint's state: seconds over all sessions, the list of resumes, and checkpoint writes
    that carry both (``ckpt`` None: no checkpoints)."""

    def __init__(self, ckpt, state, t_start):
        self.ckpt = ckpt
        self.t_start = t_start
        self.before = float((state or {}).get("seconds", 0.0))  # seconds of the interrupted sessions
        self.resumed = list((state or {}).get("resumed", []))
        if state is not None:
            self.resumed.append({"from": ckpt.status, "at": now()})

    def seconds(self) -> float:
        return self.before + time.monotonic() - self.t_start

    def save(self, **state):
        if self.ckpt is not None:
            self.ckpt.save({**state, "seconds": self.seconds(), "resumed": self.resumed})

    def record(self, seed, dev, threads) -> dict:
        """The machine-independent part of ``info["training"]``: seed, device, versions, threads,
        total seconds and resumes."""
        return {"seed": seed, "device": str(dev), "torch": torch.__version__, "torch_threads": threads,
                "machine": platform.machine(), "python": platform.python_version(),
                "total_seconds": self.seconds(), "resumed": self.resumed}
