"""Training an FCMLC model: dataset -> regressor -> conditional flow -> transition matrix -> FCMLC.

:func:`train` is the entry point (``fcmlc train``). The trained model is
:class:`fcmlc.models.model.FCMLC`, its directory format :mod:`fcmlc.models.directory`; both are
re-exported here.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import torch

from .._checks import check_seed
from .._resumable import catch_signals
from .._torch_env import torch_threads
from ..dataset import open_dataset
from ..exceptions import Interrupted
from .checkpoint import TrainingCheckpoint
from .config import TrainConfig
from .directory import (FORMAT_NAME, FORMAT_VERSION, MODEL_FILES, ModelDirectoryError, check_replaceable,
                        publish_model_directory)
from .ensemble import EnsembleFCMLC, fit_ensemble
from .features import FeatureMap
from .flow import CellGrid, ConditionalFlow, transition_matrix
from .model import FCMLC
from .regressor import default_hidden_layers, pack_regressor, unpack_regressor
from .run import (RunClock, dataset_record, dequantize_widths, machine_dependence, run_settings,
                  split_train_validation, training_samples)
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
          progress: bool = True, restart: bool = False) -> FCMLC:
    """Train an FCMLC model: regressor, then conditional flow, then the transition matrix.

    dataset: path of an HDF5 dataset (``fcmlc simulate``) or an open ``SimDataset``.
    out: model directory to save to (optional; created, or replaced if it holds a model; a
    directory holding other files is refused). experiments: a subset of the dataset's
    experiments to use (default: all, in the dataset's order). config: ``TrainConfig``, a dict
    overlaying the defaults, which are the paper's Tables III/IV (e.g. ``{"time_budget": 600,
    "regressor": {"max_epochs": 50}}``; ``{"hyperparameters": "fast"}`` starts from the
    :meth:`TrainConfig.fast` preset instead), or None (the defaults). A config with ``ensemble``
    settings (``{"ensemble": {"members": 3}}``) trains the ``ensemble`` estimator
    (:mod:`fcmlc.models.ensemble`: K regressors, each with the ``regressor`` settings) and
    returns an :class:`~fcmlc.models.ensemble.EnsembleFCMLC`.
    device: "cpu", "cuda" or None (CUDA when available). Uses the dataset's "train" split;
    a random ``validation_fraction`` of it (seeded) drives early stopping.

    The same seed, data, device and thread count give bit-identical weights (on a CPU), unless a
    ``time_budget`` is set: then the result depends on the machine's speed and load, and the
    model's ``info["training"]["machine_dependent"]`` (config.json) says so.

    With ``out``, the run is checkpointed after every epoch in ``<out>.partial/checkpoint.pt``
    (:mod:`fcmlc.models.checkpoint`; an ensemble's inside every member, keeping the finished
    ones): calling ``train`` again with the same arguments after an
    interruption (Ctrl-C, ``kill``, a crash) resumes from there and ends with the same model as an
    uninterrupted run. A checkpoint of other settings is refused (IncompatibleError naming the
    differences) unless ``restart``, which discards it. The model directory is written all or
    nothing, then the checkpoint is removed.
    """
    if isinstance(dataset, (str, os.PathLike)):
        with open_dataset(dataset) as ds:
            return _train(ds, out, experiments, config, device, seed, progress, restart)
    return _train(dataset, out, experiments, config, device, seed, progress, restart)


def _train(ds, out, experiments, config, device, seed, progress, restart) -> FCMLC:
    if hasattr(ds, "require_complete"):
        ds.require_complete()
    seed = check_seed(seed)
    names, columns = feature_columns(ds, experiments)
    cfg = _resolve_config(config, names)
    dev = resolve_device(device)
    t_start = time.monotonic()

    fit_idx, val_idx = split_train_validation(ds, seed, cfg.validation_fraction)
    info = dataset_record(ds, names, columns, fit_idx, val_idx)
    threads = int(cfg.threads) if cfg.threads is not None else torch.get_num_threads()
    ckpt, state = None, None
    if out is not None:
        check_replaceable(out)
        ckpt = TrainingCheckpoint(out, run_settings(cfg.to_dict(), seed, names, info, dev, threads))
        state = ckpt.load(restart)
        if state is not None:
            print(f"resuming the interrupted training run of {ckpt.path} ({ckpt.status})", file=sys.stderr)

    features = FeatureMap.from_normalisation(getattr(ds, "normalisation", None), names)
    yhat_grid = CellGrid.over(ds.grid, cfg.yhat_shape, margin=cfg.yhat_margin)
    y_grid = CellGrid.over(ds.grid, cfg.y_shape)

    run = _Run(cfg, dev, seed, progress, ckpt, state, t_start)
    try:
        with torch_threads(cfg.threads), catch_signals():
            train_src, val_src = training_samples(ds, fit_idx, val_idx, columns, features, cfg.in_memory,
                                                  cfg.chunk_rows, progress, info)
            regressor, r_hist, flow, f_hist = run.networks(train_src, val_src, ds.grid)
            t0 = time.monotonic()
            T = transition_matrix(flow, yhat_grid, y_grid, progress=progress)
            t_T = time.monotonic() - t0
    except KeyboardInterrupt as e:
        if ckpt is None:
            raise
        # what was kept and how to resume, in the one line the CLI prints (Interrupted: a KeyboardInterrupt)
        raise Interrupted(ckpt.interrupted_message(), getattr(e, "signum", None) or signal.SIGINT) from None

    info["training"] = {
        **run.record(seed, dev, threads), "regressor": r_hist, "flow": f_hist, "transition_seconds": t_T,
        **machine_dependence(cfg.time_budget, {"regressor": r_hist, "flow": f_hist}),
    }
    model_type = FCMLC if cfg.ensemble is None else EnsembleFCMLC
    model = model_type(regressor, flow, T, yhat_grid, y_grid, names, cfg.to_dict(), info, features)
    if ckpt is not None:
        publish_model_directory(model, out, ckpt.staging)
        ckpt.clear()
        model.info["directory"] = str(out)
    return model


class _Run(RunClock):
    """The two networks of one training run, from scratch or from a checkpoint's state, with a
    checkpoint after every epoch and after each network."""

    def __init__(self, cfg, dev, seed, progress, ckpt, state, t_start):
        super().__init__(ckpt, state, t_start)
        self.cfg, self.dev, self.seed, self.progress = cfg, dev, seed, progress
        self.state = state or {"stage": "regressor", "loop": None}

    def networks(self, train_src, val_src, grid):
        cfg, dev, seed, st = self.cfg, self.dev, self.seed, self.state
        budget = cfg.time_budget
        loop = st.get("loop")
        if st["stage"] == "regressor":
            r_budget = None if budget is None else budget * cfg.regressor_time_fraction
            if cfg.ensemble is None:
                regressor, r_hist = fit_regressor(
                    train_src, val_src, cfg.regressor, device=dev, seed=seed, progress=self.progress,
                    time_budget=r_budget, resume=loop, on_epoch=lambda lp: self.save(stage="regressor", loop=lp))
            else:  # the members' loop state under "loop" (as a single regressor's), the finished ones aside
                regressor, r_hist = fit_ensemble(
                    train_src, val_src, cfg.regressor, cfg.ensemble.members, device=dev, seed=seed,
                    progress=self.progress, time_budget=r_budget,
                    resume=None if "ensemble" not in st else {**st["ensemble"], "loop": loop},
                    on_epoch=lambda es: self.save(stage="regressor", loop=es["loop"],
                                                  ensemble={k: v for k, v in es.items() if k != "loop"}))
            loop = None
            reg = pack_regressor(regressor)
            self.save(stage="flow", regressor=reg, regressor_history=r_hist, loop=None)
        else:
            reg, r_hist = st["regressor"], st["regressor_history"]
            regressor = unpack_regressor(reg, dev)
        if st["stage"] in ("regressor", "flow"):
            widths = dequantize_widths(grid)
            flow, f_hist = fit_flow(
                regressor, train_src, val_src, cfg.flow, dequantize_widths=widths, device=dev, seed=seed,
                time_budget=None if budget is None else max(budget - r_hist["seconds"], 0.05 * budget),
                progress=self.progress, resume=loop,
                on_epoch=lambda lp: self.save(stage="flow", regressor=reg, regressor_history=r_hist, loop=lp))
            self.save(stage="transition", regressor=reg, regressor_history=r_hist, flow=flow.state_dict(),
                      flow_history=f_hist, loop=None)
        else:
            flow = ConditionalFlow.create(regressor.y_scaler, device=dev, **cfg.flow.architecture())
            flow.flow.load_state_dict(st["flow"])
            flow.flow.eval()
            f_hist = st["flow_history"]
        return regressor, r_hist, flow, f_hist
