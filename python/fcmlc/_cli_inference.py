"""`fcmlc train` and `fcmlc fit`: the FCMLC inference commands (registered by :mod:`fcmlc.cli`)."""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ._io import jsonable as _jsonable

LEVELS = (0.68, 0.90, 0.95)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an FCMLC model (regressor, flow, transition matrix) on a simulation dataset",
        description="Train the MC-dropout regressor, then the conditional flow p(y|y_hat), then the transition "
                    "matrix, on the 'train' split of a dataset written by `fcmlc simulate`, and save the model "
                    "directory. Defaults are the paper's Tables III/IV (batch 32, patience 50: hours on a CPU "
                    "at paper scale); --fast keeps the networks but uses a schedule that trains a paper-scale "
                    "single-experiment dataset within about 20 minutes on 2 CPU cores.")
    p.add_argument("dataset", help="HDF5 dataset from `fcmlc simulate`")
    p.add_argument("-o", "--output", required=True, help="model directory to write")
    p.add_argument("--experiments", default=None,
                   help="comma-separated subset of the dataset's experiments to train on (default: all)")
    p.add_argument("--max-epochs", "--epochs", dest="max_epochs", type=int, default=None, metavar="N",
                   help="maximum epochs for the regressor and for the flow (default 10000 / 200+100 with --fast)")
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early-stopping patience in epochs for both networks (default 50 / 8 with --fast)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="wall-clock seconds for regressor + flow training (default: no limit / 840 with --fast; "
                        "0 = no limit)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--fast", action="store_true",
                   help="the 'fast' preset: regressor batch 256, lr 2e-3 with reduce-on-plateau, patience 8, "
                        "14-minute time budget for the two networks (see fcmlc.models.training)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads during training (default: torch's default; at batch 32 on a CPU 1 thread "
                        "is often fastest)")
    p.add_argument("--config", default=None, metavar="JSON",
                   help="JSON file (or inline JSON) of training settings overlaying the defaults")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "fit", help="posterior p(y|x) from a trained FCMLC model for one data vector",
        description="Compute the FCMLC posterior over (|Ue4|, dm2) for one data vector and write "
                    "posterior.npz, posterior.png and summary.json to the output directory.")
    p.add_argument("model", help="model directory written by `fcmlc train`")
    add_data_source_args(p)
    p.add_argument("-o", "--output", required=True, help="result directory")
    p.add_argument("--samples", type=int, default=1000, help="MC-dropout samples m (default 1000)")
    p.add_argument("--mc-seed", type=int, default=0, help="seed of the dropout masks (default 0)")
    p.add_argument("--bandwidth", default="normal_reference", choices=("normal_reference", "cv_ml"),
                   help="KDE bandwidth rule (default normal_reference; cv_ml: statsmodels' ML cross-validation)")
    p.add_argument("--threads", type=int, default=None, help="threads for the KDE and integration (default: all)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    p.add_argument("--data-dir", default=None,
                   help="folder with official data releases, passed to fcmlc.experiments.load for --observed/--asimov")
    p.set_defaults(func=cmd_fit)


# ----------------------------------------------------------------------------------------- train

def _read_config_arg(text):
    if text is None:
        return {}
    p = Path(text)
    raw = p.read_text() if p.is_file() else text
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"--config: not a JSON file or JSON text ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError("--config must hold a JSON object")
    return cfg


def cmd_train(args) -> int:
    from .models import train

    cfg = _read_config_arg(args.config)
    if args.fast:
        if cfg.get("hyperparameters", "fast") != "fast":
            raise ValueError(f"--fast conflicts with \"hyperparameters\": {cfg['hyperparameters']!r} in --config")
        cfg["hyperparameters"] = "fast"
    if args.max_epochs is not None:
        if args.max_epochs < 1:
            raise ValueError("--max-epochs must be >= 1")
        cfg.setdefault("regressor", {})["max_epochs"] = args.max_epochs
        cfg.setdefault("flow", {})["max_epochs"] = args.max_epochs
    if args.patience is not None:
        if args.patience < 1:
            raise ValueError("--patience must be >= 1")
        cfg.setdefault("regressor", {})["patience"] = args.patience
        cfg.setdefault("flow", {})["patience"] = args.patience
    if args.time_budget is not None:
        if args.time_budget < 0:
            raise ValueError("--time-budget must be >= 0 seconds (0: no limit)")
        cfg["time_budget"] = None if args.time_budget == 0 else args.time_budget
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError("--threads must be >= 1")
        cfg["threads"] = args.threads
    experiments = None if args.experiments is None else [s.strip() for s in args.experiments.split(",") if s.strip()]
    t0 = time.perf_counter()
    model = train(args.dataset, out=args.output, experiments=experiments, config=cfg, device=args.device,
                  seed=args.seed, progress=not args.no_progress)
    tr = model.info["training"]
    r, f = tr["regressor"], tr["flow"]
    print(f"{args.output}: FCMLC model for {', '.join(model.experiments)} ({model.n_features} features)")
    print(f"  regressor: {r['epochs']} epochs ({r['stop_reason']}), best validation MSE {r['best_val_mse']:.4g} "
          f"(standardised units), {r['seconds']:.0f} s")
    print(f"  flow:      {f['epochs']} epochs ({f['stop_reason']}), best validation NLL {f['best_val_nll']:.4g}, "
          f"{f['seconds']:.0f} s")
    print(f"  transition matrix {model.transition.shape[0]} x {model.transition.shape[1]}: "
          f"{tr['transition_seconds']:.0f} s; total {time.perf_counter() - t0:.0f} s")
    return 0


# ----------------------------------------------------------------------------------------- fit

def read_vector(path, n_features: int) -> np.ndarray:
    """A data vector from a text file, .npy or .npz (a single array, or one named x/data/features)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--data: file {str(p)!r} not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                pick = [k for k in ("x", "data", "features") if k in keys]
                if pick:
                    a = z[pick[0]]
                elif len(keys) == 1:
                    a = z[keys[0]]
                else:
                    raise ValueError(f"{p} holds several arrays {keys}; name the data vector 'x'")
        else:
            a = np.loadtxt(p, dtype=float, ndmin=1, delimiter=None if suffix != ".csv" else ",")
    except (OSError, ValueError) as e:
        raise ValueError(f"--data: cannot read {p}: {e}") from None
    a = np.asarray(a, dtype=float)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1 or a.size != n_features:
        raise ValueError(f"--data: {p} holds an array of shape {a.shape}; the model needs one vector of "
                         f"{n_features} values")
    return a


def model_experiments(model, data_dir=None):
    """The model's experiments as an ExperimentSet, checking their definitions against training."""
    from . import experiments as ex

    try:
        exps = [ex.load(name, data_dir=data_dir) for name in model.experiments]
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"cannot load the model's experiments {model.experiments} ({e}); pass --data instead") \
            from None
    saved = model.info.get("experiment_hashes") or {}
    changed = [e.name for e in exps if saved.get(e.name) and saved[e.name] != e.definition_hash]
    if changed:
        warnings.warn(f"the definition of {', '.join(changed)} differs from the one the model was trained on "
                      "(different version or data release): the result may not be meaningful", stacklevel=2)
    eset = ex.combine(exps)
    if eset.n_bins != model.n_features:
        raise ValueError(f"the experiments {model.experiments} have {eset.n_bins} bins but the model expects "
                         f"{model.n_features} features")
    return eset


def summarise(post, model, meta: dict) -> dict:
    """JSON-able summary: best point, region sizes at 68/90/95 %, exclusion of the no-oscillation edge."""
    ps = post.summary(levels=LEVELS)
    out = dict(meta)
    out["best_point"] = ps["best_point"]
    out["regions"] = [{"level": lv, "cells": ps["levels"][f"{lv:g}"]["n_cells"],
                       "fraction": ps["levels"][f"{lv:g}"]["area_fraction"],
                       "mass": ps["levels"][f"{lv:g}"]["mass"],
                       "excludes_null": ps["levels"][f"{lv:g}"]["excludes_null"]} for lv in LEVELS]
    out["excludes_null"] = {f"{lv:.2f}": bool(ps["levels"][f"{lv:g}"]["excludes_null"]) for lv in LEVELS}
    out["edge_warnings"] = ps["edge_warnings"]
    out["posterior_summary"] = ps
    out["model"] = {"directory": model.info.get("directory"), "experiments": model.experiments,
                    "fcmlc_version": model.version}
    return out


def add_data_source_args(p):
    """The data-vector options shared by `fit`, `compare` and `wilks`: --data | --observed | --asimov, and --seed."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help="data vector: text file, .npy or .npz (one array)")
    src.add_argument("--observed", action="store_true", help="the experiments' published data")
    src.add_argument("--asimov", nargs=2, type=float, metavar=("UE4", "DM2"),
                     help="the expectation at (|Ue4|, dm2 [eV^2]); with --seed, one random realization there")
    p.add_argument("--seed", type=int, default=None,
                   help="with --asimov: draw one realization with this seed instead of the exact expectation")


@dataclass
class DataSource:
    """The data vector chosen by :func:`add_data_source_args`' options."""

    x: np.ndarray
    experiments: object | None  # what load_experiments() returned (None for --data: a file needs none)
    meta: dict  # recorded with the result
    description: str  # for people
    truth: tuple | None  # (ue4, dm2) for --asimov


def data_source(args, n_features: int, load_experiments, asimov) -> DataSource:
    """Resolve --data / --observed / --asimov [--seed] into a data vector of ``n_features`` bins.

    ``load_experiments()`` gives the experiments the vector is for (anything with ``.experiments``
    and ``.names``: an ExperimentSet, a Chi2Model); it is called only when needed.
    ``asimov(experiments, ue4, dm2, seed)`` gives the expectation (seed None) or one realization.
    """
    if args.seed is not None and args.asimov is None:
        raise ValueError("--seed only applies to --asimov (it draws one realization at that point)")
    if args.data is not None:
        x = read_vector(args.data, n_features)
        return DataSource(x, None, {"input": "data", "file": str(Path(args.data).resolve())},
                          f"data {args.data}", None)
    if args.observed:
        exps = load_experiments()
        missing = [e.name for e in exps.experiments if getattr(e, "observed", None) is None]
        if missing:
            raise ValueError(f"no published data for {', '.join(missing)} (of {', '.join(exps.names)}); "
                             "use --data or --asimov")
        x = np.concatenate([np.asarray(e.observed, dtype=float) for e in exps.experiments])
        return DataSource(x, exps, {"input": "observed"}, "observed data", None)
    from .physics import _check_params

    ue4, dm2 = args.asimov
    _check_params(ue4, dm2)
    exps = load_experiments()
    x = asimov(exps, ue4, dm2, args.seed)
    if args.seed is None:
        return DataSource(x, exps, {"input": "asimov", "ue4": ue4, "dm2": dm2},
                          f"Asimov data at |Ue4| = {ue4:g}, dm2 = {dm2:g} eV^2", (ue4, dm2))
    return DataSource(x, exps, {"input": "realization", "ue4": ue4, "dm2": dm2, "seed": args.seed},
                      f"realization (seed {args.seed}) at |Ue4| = {ue4:g}, dm2 = {dm2:g} eV^2", (ue4, dm2))


def model_data_source(args, model) -> DataSource:
    """:func:`data_source` for a trained FCMLC model (its experiments from ``--data-dir``)."""

    def asimov(eset, ue4, dm2, seed):
        if seed is None:
            return np.asarray(eset.expectation(ue4, dm2), dtype=float).reshape(-1)
        from .simulation import realizations

        return realizations(eset, [ue4], [dm2], n_per_point=1, seed=seed)[0, 0]

    return data_source(args, model.n_features, lambda: model_experiments(model, args.data_dir), asimov)


def cmd_fit(args) -> int:
    from .models import FCMLC

    model = FCMLC.load(args.model, device=args.device)
    src = model_data_source(args, model)
    x, meta, truth = src.x, src.meta, src.truth

    t0 = time.perf_counter()
    post = model.posterior(x, n_samples=args.samples, seed=args.mc_seed, bandwidth=args.bandwidth,
                           threads=args.threads)
    dt = time.perf_counter() - t0
    meta.update({"samples": args.samples, "mc_seed": args.mc_seed, "bandwidth": args.bandwidth,
                 "seconds": dt})

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    post.to_npz(out / "posterior.npz")
    summary = summarise(post, model, meta)
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
    _plot(post, out / "posterior.png", truth, model)
    _print_summary(summary, out)
    return 0


def _plot(post, path, truth, model):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.subplots()
    post.plot(ax=ax, truth=truth)
    ax.set_title(f"FCMLC posterior: {', '.join(model.experiments)}")
    fig.savefig(path, dpi=120)


def _print_summary(s, out):
    b = s["best_point"]
    print(f"FCMLC fit ({s['input']}, {s['samples']} samples, {s['seconds'] * 1e3:.0f} ms) -> {out}")
    print(f"  best point: |Ue4| = {b['ue4']:.4g}, sin^2(2 theta) = {b['sin2_2theta']:.4g}, dm2 = {b['dm2']:.4g} eV^2")
    for r in s["regions"]:
        lv = f"{r['level']:.2f}"
        ex = "excluded" if s["excludes_null"][lv] else "not excluded"
        print(f"  {100 * r['level']:.0f}% credible region: {r['cells']} cells ({100 * r['fraction']:.1f}% of the "
              f"plane); no-oscillation edge {ex}")
    if s.get("edge_warnings"):
        print(f"  warning: {'; '.join(s['edge_warnings'])}: the posterior may continue beyond the grid")
