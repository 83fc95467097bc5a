"""Training a :class:`fcmlc.estimators.grid_model.GridModel` (``npe``, ``nre``) from a
``fcmlc simulate`` dataset, with the run machinery of the ``fcmlc`` estimator
(:mod:`fcmlc.models.run`): the same seeded train/validation split, feature map, training sets,
checkpoint after every epoch in ``<out>.partial/checkpoint.pt`` (resumed by the same call after
an interruption, ending with the same weights), Ctrl-C -> :class:`fcmlc.exceptions.Interrupted`
with how to resume, and an all-or-nothing model directory.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import torch

from .._checks import check_seed
from .._resumable import catch_signals
from .._torch_env import resolve_device, torch_threads
from ..dataset import open_dataset
from ..exceptions import Interrupted
from ..models.checkpoint import TrainingCheckpoint
from ..models.directory import check_replaceable, publish_model_directory
from ..models.features import FeatureMap
from ..models.flow import CellGrid
from ..models.pipeline import feature_columns
from ..models.regressor import Standardizer
from ..models.run import (RunClock, dataset_record, dequantize_widths, machine_dependence, run_settings,
                          split_train_validation, training_samples)
from .fitting import fit_network
from .fresh import FreshSimulations, fresh_experiments

__all__ = ["train_grid_model"]


def train_grid_model(model_class, dataset, out=None, experiments=None, config=None, device=None, seed: int = 0,
                     progress: bool = True, restart: bool = False, data_dir=None):
    """Train ``model_class`` (``NPEModel``, ``NREModel``) on a dataset (path or open ``SimDataset``);
    the arguments of :func:`fcmlc.estimators.train`. ``config``: None, a dict overlaid on the
    preset it names (``{"hyperparameters": "fast"}``), or a ``model_class.config_class``.
    ``data_dir``: the folder of the data releases the dataset's experiments were defined with,
    for ``fresh_simulations`` (:mod:`fcmlc.estimators.fresh`)."""
    if isinstance(dataset, (str, os.PathLike)):
        with open_dataset(dataset) as ds:
            return _train(model_class, ds, out, experiments, config, device, seed, progress, restart, data_dir)
    return _train(model_class, dataset, out, experiments, config, device, seed, progress, restart, data_dir)


def _train(model_class, ds, out, experiments, config, device, seed, progress, restart, data_dir):
    if hasattr(ds, "require_complete"):
        ds.require_complete()
    seed = check_seed(seed)
    names, columns = feature_columns(ds, experiments)
    cfg = model_class.config_class.resolve(config)
    if data_dir is not None and not cfg.fresh_simulations:
        raise ValueError("a data directory is used only with fresh simulations (fresh_simulations, "
                         "--fresh-simulations): the dataset holds the realizations otherwise")
    fresh_exps = fresh_experiments(ds, names, data_dir) if cfg.fresh_simulations else None
    dev = resolve_device(device)
    t_start = time.monotonic()
    fit_idx, val_idx = split_train_validation(ds, seed, cfg.validation_fraction)
    info = dataset_record(ds, names, columns, fit_idx, val_idx)
    threads = int(cfg.threads) if cfg.threads is not None else torch.get_num_threads()
    stage = f"{model_class.estimator} {model_class.network_name}"
    ckpt, state = None, None
    if out is not None:
        check_replaceable(out, model_class.FILES)
        settings = run_settings(cfg.to_dict(), seed, names, info, dev, threads)
        ckpt = TrainingCheckpoint(out, {**settings, "estimator": model_class.estimator})
        state = ckpt.load(restart)
        if state is not None:
            print(f"resuming the interrupted training run of {ckpt.path} ({ckpt.status})", file=sys.stderr)
    features = FeatureMap.from_normalisation(getattr(ds, "normalisation", None), names)
    y_grid = CellGrid.over(ds.grid, cfg.y_shape)
    clock = RunClock(ckpt, state, t_start)
    try:
        with torch_threads(cfg.threads), catch_signals():
            # with fresh simulations the validation set is simulated too: the dataset's split is not loaded
            train_src, val_src = training_samples(ds, fit_idx, val_idx if fresh_exps is None else val_idx[:0],
                                                  columns, features, cfg.in_memory, cfg.chunk_rows, progress, info)
            if fresh_exps is not None:
                per_truth = round(len(train_src) / ds.grid.n_points)
                fresh = dict(features=features, float32=ds.dtype == "float32", chunk_rows=cfg.chunk_rows,
                             threads=cfg.threads)
                train_src = FreshSimulations(fresh_exps, ds.grid, len(train_src), per_truth, base=train_src, **fresh)
                # one realization per validation truth: its loss averages over as many truths as pairs
                val_src = FreshSimulations(fresh_exps, ds.grid, len(val_idx), 1, fixed_key=(seed, 59), **fresh)
                info["dataset"]["training_data"] = (
                    f"fresh simulations: {len(train_src)} pairs per epoch at {-(-len(train_src) // per_truth)} truths "
                    f"log-uniform over the grid's ranges, {per_truth} realizations each; validation: {len(val_src)} "
                    "pairs drawn once, one at each of as many other truths")
            n, sx, sxx, sy, syy = train_src.moments()
            x_scaler, y_scaler = Standardizer.from_moments(n, sx, sxx), Standardizer.from_moments(n, sy, syy)
            net = model_class.build_network(x_scaler.dim, cfg, seed)
            hist = fit_network(net, model_class.loss_function(cfg), train_src, val_src, cfg, x_scaler, y_scaler,
                               dequantize_widths(ds.grid), device=dev, seed=seed, name=model_class.network_name,
                               loss_description=model_class.loss_description, progress=progress,
                               resume=None if state is None else state["loop"],
                               on_epoch=lambda lp: clock.save(stage=stage, loop=lp))
    except KeyboardInterrupt as e:
        if ckpt is None:
            raise
        # what was kept and how to resume, in the one line the CLI prints (Interrupted: a KeyboardInterrupt)
        raise Interrupted(ckpt.interrupted_message(), getattr(e, "signum", None) or signal.SIGINT) from None

    info["training"] = {**clock.record(seed, dev, threads), "networks": {model_class.network_name: hist},
                        **machine_dependence(cfg.time_budget, {model_class.network_name: hist})}
    model = model_class(net, x_scaler, y_scaler, y_grid, names, cfg.to_dict(), info, features, dev)
    if ckpt is not None:
        publish_model_directory(model, out, ckpt.staging, model_class.FILES)
        ckpt.clear()
        model.info["directory"] = str(out)
    return model
