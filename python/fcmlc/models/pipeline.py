"""Training an FCMLC model: dataset -> regressor -> conditional flow -> transition matrix -> FCMLC.

:func:`train` is the entry point (``fcmlc train``). The trained model is
:class:`fcmlc.models.model.FCMLC`, its directory format :mod:`fcmlc.models.directory`; both are
re-exported here.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._checks import check_seed
from .._torch_env import torch_threads
from ..dataset import open_dataset
from .config import TrainConfig
from .directory import FORMAT_NAME, FORMAT_VERSION, MODEL_FILES, ModelDirectoryError
from .features import FeatureMap
from .flow import CellGrid, transition_matrix
from .model import FCMLC
from .regressor import default_hidden_layers
from .samples import Samples, memory_limit_bytes
from .training import fit_flow, fit_regressor, resolve_device

__all__ = ["FCMLC", "train", "ModelDirectoryError", "FORMAT_NAME", "FORMAT_VERSION", "MODEL_FILES",
           "feature_columns"]


def feature_columns(ds, experiments):
    """(names, columns): the experiments to train on (all of the dataset's when ``experiments`` is
    None; a list or a comma-separated string otherwise) and the columns of the dataset's features
    that belong to them, in that order (None: all columns, in the dataset's order)."""
    names = list(ds.experiments)
    if experiments is None:
        return names, None
    if isinstance(experiments, str):
        experiments = [s.strip() for s in experiments.split(",") if s.strip()]
    experiments = [getattr(e, "name", e) for e in experiments]
    if list(experiments) == names:
        return names, None
    missing = [e for e in experiments if e not in names]
    if missing:
        raise ValueError(f"experiment(s) {missing} are not in the dataset, which holds {names}")
    if len(set(experiments)) != len(experiments):
        raise ValueError(f"experiment listed twice: {experiments}")
    bins = getattr(ds, "n_bins", None)
    if not isinstance(bins, dict):
        raise ValueError("this dataset does not record per-experiment bin counts, so a subset of its "
                         "experiments cannot be selected")
    offsets, col = {}, 0
    for n in names:
        offsets[n] = (col, col + int(bins[n]))
        col += int(bins[n])
    cols = np.concatenate([np.arange(*offsets[e]) for e in experiments])
    return list(experiments), cols


def _resolve_config(config, experiments) -> TrainConfig:
    if config is None:
        cfg = TrainConfig.default(experiments)
    elif isinstance(config, TrainConfig):
        cfg = TrainConfig.from_dict({}, base=config)
        if cfg.regressor.hidden is None:  # only the layer sizes are filled in; the caller's other choices stand
            cfg.regressor.hidden = default_hidden_layers(len(experiments))
    elif isinstance(config, dict):
        base = TrainConfig.preset(config.get("hyperparameters", "paper"), experiments)
        cfg = TrainConfig.from_dict(config, base=base)
    else:
        raise ValueError("config must be a TrainConfig, a dict of settings, or None")
    cfg.validate()
    return cfg


def train(dataset, out=None, experiments=None, config=None, device=None, seed: int = 0,
          progress: bool = True) -> FCMLC:
    """Train an FCMLC model: regressor, then conditional flow, then the transition matrix.

    dataset: path of an HDF5 dataset (``fcmlc simulate``) or an open ``SimDataset``.
    out: model directory to save to (optional). experiments: a subset of the dataset's
    experiments to use (default: all, in the dataset's order). config: ``TrainConfig``, a dict
    overlaying the defaults, which are the paper's Tables III/IV (e.g. ``{"time_budget": 600,
    "regressor": {"max_epochs": 50}}``; ``{"hyperparameters": "fast"}`` starts from the
    :meth:`TrainConfig.fast` preset instead), or None (the defaults).
    device: "cpu", "cuda" or None (CUDA when available). Uses the dataset's "train" split;
    a random ``validation_fraction`` of it (seeded) drives early stopping.
    """
    if isinstance(dataset, (str, os.PathLike)):
        with open_dataset(dataset) as ds:
            return _train(ds, out, experiments, config, device, seed, progress)
    return _train(dataset, out, experiments, config, device, seed, progress)


def _train(ds, out, experiments, config, device, seed, progress) -> FCMLC:
    if hasattr(ds, "require_complete"):
        ds.require_complete()
    seed = check_seed(seed)
    names, columns = feature_columns(ds, experiments)
    cfg = _resolve_config(config, names)
    dev = resolve_device(device)
    t_start = time.monotonic()

    train_idx = np.asarray(ds.split_indices("train"), dtype=np.int64)
    if train_idx.size < 10:
        raise ValueError(f"the dataset's training split has only {train_idx.size} samples")
    perm = np.random.default_rng([seed, 31]).permutation(train_idx.size)
    n_val = max(1, int(round(cfg.validation_fraction * train_idx.size)))
    val_idx = np.sort(train_idx[perm[:n_val]])
    fit_idx = np.sort(train_idx[perm[n_val:]])

    n_feat = len(columns) if columns is not None else int(ds.n_features)
    need = train_idx.size * (n_feat * 4 + 16)
    in_memory = cfg.in_memory if cfg.in_memory != "auto" else need <= memory_limit_bytes()
    chunk = int(cfg.chunk_rows)
    features = FeatureMap.from_normalisation(getattr(ds, "normalisation", None), names)
    train_src = Samples(ds, fit_idx, columns, in_memory, chunk, progress, "loading training set", features)
    val_src = Samples(ds, val_idx, columns, in_memory, chunk, progress, "loading validation set", features)

    grid = ds.grid
    budget = cfg.time_budget
    with torch_threads(cfg.threads):
        r_budget = None if budget is None else budget * cfg.regressor_time_fraction
        regressor, r_hist = fit_regressor(train_src, val_src, cfg.regressor, device=dev, seed=seed,
                                          time_budget=r_budget, progress=progress)
        f_budget = None if budget is None else max(budget - r_hist["seconds"], 0.05 * budget)
        widths = (float(np.log10(grid.ue4_range[1] / grid.ue4_range[0]) / (grid.n_ue4 - 1)),
                  float(np.log10(grid.dm2_range[1] / grid.dm2_range[0]) / (grid.n_dm2 - 1)))
        flow, f_hist = fit_flow(regressor, train_src, val_src, cfg.flow, dequantize_widths=widths, device=dev,
                                seed=seed, time_budget=f_budget, progress=progress)
        yhat_grid = CellGrid.over(grid, cfg.yhat_shape, margin=cfg.yhat_margin)
        y_grid = CellGrid.over(grid, cfg.y_shape)
        t0 = time.monotonic()
        T = transition_matrix(flow, yhat_grid, y_grid, progress=progress)
        t_T = time.monotonic() - t0

    hashes = getattr(ds, "experiment_hashes", None)
    bins = getattr(ds, "n_bins", None)
    info = {
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
            "in_memory": bool(in_memory),
        },
        "training": {
            "seed": seed, "device": str(dev), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "python": platform.python_version(),
            "regressor": r_hist, "flow": f_hist, "transition_seconds": t_T,
            "total_seconds": time.monotonic() - t_start,
        },
    }
    model = FCMLC(regressor, flow, T, yhat_grid, y_grid, names, cfg.to_dict(), info, features)
    if out is not None:
        model.save(out)
        model.info["directory"] = str(out)
    return model

