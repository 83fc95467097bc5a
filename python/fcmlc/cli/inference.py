"""`fcmlc train` and `fcmlc fit`: the FCMLC inference commands."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .._checks import check_positive_int, check_threads
from .._io import OutputDir, atomic_write_json, check_writable
from ..data_vectors import model_data_source, model_experiments
from ..estimators import DESCRIPTIONS, ESTIMATORS, LABELS
from ..fit_summary import fit_summary
from ._args import (POSTERIOR_OUTPUTS, add_data_dir_arg, add_data_source_args, add_diagnostics_args,
                    add_mc_dropout_args, add_model_arg, data_source_options, diagnostics_options)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train an FCMLC model (regressor, flow, transition matrix) on a simulation dataset",
        description="Train the MC-dropout regressor, then the conditional flow p(y|y_hat), then the transition "
                    "matrix, on the 'train' split of a dataset written by `fcmlc simulate`, and save the model "
                    "directory. Defaults are the paper's Tables III/IV (batch 32, patience 50: hours on a CPU "
                    "at paper scale); --fast keeps the networks but uses a schedule that trains a paper-scale "
                    "single-experiment dataset in minutes on 2 CPU cores (benchmarks/RESULTS.md). Training stops on epochs "
                    "and patience, so the same seed, data, device and --threads give the same weights however "
                    "fast or busy the machine, unless --time-budget is given. A checkpoint is kept after every "
                    "epoch in OUTPUT.partial/: after an interruption, the same command resumes and ends with the "
                    "same model as an uninterrupted run.")
    p.add_argument("dataset", help="HDF5 dataset from `fcmlc simulate`")
    p.add_argument("-o", "--output", required=True, help="model directory to write")
    p.add_argument("--experiments", default=None,
                   help="comma-separated subset of the dataset's experiments to train on (default: all)")
    p.add_argument("--estimator", default="fcmlc", type=str.lower, choices=ESTIMATORS,
                   help="posterior estimator (default fcmlc, the paper's pipeline): "
                        + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    p.add_argument("--max-epochs", "--epochs", dest="max_epochs", type=int, default=None, metavar="N",
                   help="maximum epochs for the regressor and for the flow (default 10000 / 200 and 8 with --fast; "
                        "npe, nre: of their network, see docs/estimators.md)")
    p.add_argument("--patience", type=int, default=None, metavar="N",
                   help="early-stopping patience in epochs for both networks (default 50 / 8 with --fast; npe, nre: "
                        "of their network)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="stop training the two networks after S seconds of wall-clock time (default: no limit; "
                        "0 = no limit). The model then depends on the machine's speed and load, and its "
                        "config.json says so")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--fast", action="store_true",
                   help="the 'fast' preset: regressor batch 256, lr 2e-3 with reduce-on-plateau, patience 8, at "
                        "most 200 epochs; flow batch 2048, lr 2e-3 with a cosine decay over 8 epochs (see "
                        "fcmlc.models.config). With --estimator: that estimator's fast preset (ensemble: per member; "
                        "npe and nre: fcmlc.estimators.config)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads during training (default: torch's default; at batch 32 on a CPU 1 thread "
                        "is often fastest)")
    p.add_argument("--config", default=None, metavar="JSON",
                   help="JSON file (or inline JSON) of training settings overlaying the defaults")
    p.add_argument("--fresh-simulations", action="store_true",
                   help="npe, nre: train on new simulations every epoch (as many as the dataset's training split, "
                        "at truths drawn log-uniformly over its ranges) instead of its fixed realizations; the "
                        "dataset still gives the experiments, the validation split and the scaling "
                        "(docs/estimators.md)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="with --fresh-simulations: the folder of the data releases the dataset was simulated with "
                        "(its experiment definitions are checked)")
    p.add_argument("--restart", action="store_true",
                   help="discard the checkpoint of an interrupted run in OUTPUT.partial/ and start over (needed "
                        "when the settings differ from that run's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "fit", help="posterior p(y|x) from a trained FCMLC model for one data vector",
        description="Compute the FCMLC posterior over (|Ue4|, dm2) for one data vector and write "
                    "posterior.npz, posterior.png, summary.json and diagnostics.json (goodness of fit, distance "
                    "from the simulations, compatibility, agreement with the exact posterior, grid edges: "
                    "docs/diagnostics.md) to the output directory.")
    add_model_arg(p)
    add_data_source_args(p)
    p.add_argument("-o", "--output", required=True, help="result directory")
    add_mc_dropout_args(p)
    p.add_argument("--bandwidth", default="normal_reference", choices=("normal_reference", "cv_ml"),
                   help="KDE bandwidth rule (default normal_reference; cv_ml: statsmodels' ML cross-validation)")
    p.add_argument("--threads", type=int, default=None, help="threads for the KDE and integration (default: all)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    add_data_dir_arg(p)
    add_diagnostics_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier fit in the output directory")
    p.set_defaults(func=cmd_fit)


# ----------------------------------------------------------------------------------------- train

def _read_config_arg(text) -> dict:
    """--config: a JSON file or inline JSON text holding an object ({} without --config)."""
    if text is None:
        return {}
    try:
        is_file = Path(text).is_file()
    except OSError:  # inline JSON longer than a file name may be (ENAMETOOLONG)
        is_file = False
    raw = Path(text).read_text() if is_file else text
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"--config: not a JSON file or JSON text ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError("--config must hold a JSON object")
    return cfg


def cmd_train(args) -> int:
    check_writable(Path(args.output), replace=True)  # where the model directory goes: before any training
    from ..estimators import train  # torch: loaded by the command only, so `fcmlc --help` stays fast

    cfg = _read_config_arg(args.config)
    if args.fast:
        if cfg.get("hyperparameters", "fast") != "fast":
            raise ValueError(f"--fast conflicts with \"hyperparameters\": {cfg['hyperparameters']!r} in --config")
        cfg["hyperparameters"] = "fast"
    # npe and nre train one network, whose settings are top-level keys; fcmlc (and ensemble) two sections
    sections = (None,) if args.estimator in ("npe", "nre") else ("regressor", "flow")
    for key, value, flag in (("max_epochs", args.max_epochs, "--max-epochs"), ("patience", args.patience, "--patience")):
        if value is not None:
            check_positive_int(value, flag)
            for section in sections:
                (cfg if section is None else cfg.setdefault(section, {}))[key] = value
    if args.time_budget is not None:
        if args.time_budget < 0:
            raise ValueError("--time-budget must be >= 0 seconds (0: no limit)")
        cfg["time_budget"] = None if args.time_budget == 0 else args.time_budget
    if args.threads is not None:
        check_threads(args.threads, "--threads")
        cfg["threads"] = args.threads
    if args.fresh_simulations:
        if args.estimator not in ("npe", "nre"):
            raise ValueError(f"--fresh-simulations is for --estimator npe or nre, not {args.estimator}")
        cfg["fresh_simulations"] = True
    elif args.data_dir is not None:
        raise ValueError("--data-dir is used only with --fresh-simulations (the dataset holds the realizations)")
    experiments = None if args.experiments is None else [s.strip() for s in args.experiments.split(",") if s.strip()]
    t0 = time.perf_counter()
    model = train(args.dataset, out=args.output, estimator=args.estimator, experiments=experiments, config=cfg,
                  device=args.device, seed=args.seed, progress=not args.no_progress, restart=args.restart,
                  data_dir=args.data_dir)
    tr = model.info["training"]
    print(f"{args.output}: {LABELS[model.estimator]} model for {', '.join(model.experiments)} ({model.n_features} features)")
    if "training_data" in model.info.get("dataset", {}):
        print(f"  trained on {model.info['dataset']['training_data']}")
    for name, h in tr.get("networks", {}).items() if "networks" in tr else (("regressor", tr["regressor"]),
                                                                            ("flow", tr["flow"])):
        loss = next((f"{k} {h[k]:.4g}" for k in ("best_val_mse", "best_val_nll", "best_val_loss") if k in h), "")
        print(f"  {name + ':':<10} {h['epochs']} epochs ({h['stop_reason']}), best validation {loss.replace('best_val_', '')}"
              f", {h['seconds']:.0f} s")
    if "transition_seconds" in tr:
        print(f"  transition matrix: {tr['transition_seconds']:.0f} s")
    print(f"  total {time.perf_counter() - t0:.0f} s")
    if tr.get("resumed"):
        print(f"  resumed from a checkpoint ({tr['resumed'][-1]['from']})")
    if tr.get("machine_dependent"):
        print(f"  MACHINE-DEPENDENT: {tr['machine_dependent_reason']}")
    return 0


# ----------------------------------------------------------------------------------------- fit

def cmd_fit(args) -> int:
    from ..models import FCMLC  # torch: loaded by the command only, so `fcmlc --help` stays fast

    model = FCMLC.load(args.model, device=args.device)
    src = model_data_source(model, data_dir=args.data_dir, **data_source_options(args))
    x, meta, truth = src.x, src.meta, src.truth

    out = OutputDir(args.output, POSTERIOR_OUTPUTS, args.overwrite)  # checked before the fit and its diagnostics
    t0 = time.perf_counter()
    post = model.posterior(x, n_samples=args.samples, seed=args.mc_seed, bandwidth=args.bandwidth,
                           threads=args.threads)
    dt = time.perf_counter() - t0
    meta.update({"samples": args.samples, "mc_seed": args.mc_seed, "bandwidth": args.bandwidth,
                 "seconds": dt})

    summary = fit_summary(post, model, meta)
    diag = None
    if not args.no_diagnostics:
        try:
            eset = src.experiments if src.experiments is not None else model_experiments(model, args.data_dir)
        except ValueError as e:  # e.g. a model of user experiments that fcmlc cannot load by name
            eset = None
            summary["diagnostics"] = f"skipped: {e}"
            print(f"diagnostics skipped: {e}")
        if eset is not None:
            diag = post.diagnostics(eset.experiments, x, threads=args.threads, **diagnostics_options(args))
            summary["diagnostics"] = diag.status
    with out.writing() as stage:  # every file, or none
        post.to_npz(stage / "posterior.npz")
        if diag is not None:
            atomic_write_json(stage / "diagnostics.json", diag.to_dict())
        atomic_write_json(stage / "summary.json", summary)
        post.save_plot(stage / "posterior.png", truth=truth, title=f"{post.meta.get('method', 'FCMLC')} posterior: {', '.join(model.experiments)}")
    _print_summary(summary, out.path)
    if diag is not None:
        print(diag)
    return 0


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
