"""`fcmlc coverage` and `fcmlc compare`: the validation commands."""
from __future__ import annotations

import time

from .._checks import check_positive_int
from .._io import OutputDir, atomic_write_json, save_figure
from ..data_vectors import model_data_source, model_experiments
from ._args import (MIN_BYTES_PER_POINT, add_data_dir_arg, add_data_source_args, add_mc_dropout_args,
                    add_model_arg, add_overwrite_arg, data_source_options, grid_arg)

#: The files `fcmlc coverage` and `fcmlc compare` write to their output directories.
COVERAGE_OUTPUTS = ("coverage.npz", "coverage.json", "coverage.png")
COMPARE_OUTPUTS = ("comparison.json", "comparison.png", "posterior.npz")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "coverage", help="coverage check of FCMLC credible regions (and Wilks / Feldman-Cousins regions)",
        description="Draw truths uniformly in log10|Ue4|, log10 dm2, simulate one realization each, fit it with "
                    "FCMLC and scan chi2, and record how often each method's region at each level contains the "
                    "truth (paper Sec. II C 2, Fig. 4). Writes coverage.npz (every trial), coverage.json "
                    "(summary) and coverage.png to the output directory.")
    add_model_arg(p)
    p.add_argument("--trials", type=int, default=2000, help="number of trials (default 2000, as in the paper)")
    p.add_argument("-o", "--output", required=True, help="result directory")
    add_overwrite_arg(p)
    p.add_argument("--fc", default=None, metavar="FILE",
                   help="Feldman-Cousins result (`fcmlc fc` HDF5) for the model's experiments: adds FC coverage")
    p.add_argument("--seed", type=int, default=0, help="seed of truths, realizations and dropout masks (default 0)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--levels", type=float, nargs="+", default=[0.68, 0.90, 0.95], metavar="L",
                   help="nominal levels (default 0.68 0.90 0.95)")
    p.add_argument("--truths", choices=("continuous", "grid"), default="continuous",
                   help="'continuous': log-uniform over the ranges (the paper); 'grid': uniform over the chi2 grid "
                        "points, which makes the Feldman-Cousins check exact (default continuous)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of fcmlc,wilks,fc (default: fcmlc,wilks and fc with --fc)")
    p.add_argument("--samples", type=int, default=1000, help="MC-dropout samples per fit (default 1000)")
    p.add_argument("--grid", type=grid_arg, default=None, metavar="N|NxM",
                   help="chi2 grid without --fc (default: the model's training grid)")
    p.add_argument("--band", type=float, default=0.6827,
                   help="confidence of the binomial (Clopper-Pearson) bands (default 0.6827, 1 sigma)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the official data releases the model was trained with (its trials are "
                        "simulated from the same experiment definitions; a model trained on other definitions "
                        "is refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_coverage)

    p = subparsers.add_parser(
        "compare", help="FCMLC, Wilks and Feldman-Cousins regions for one data vector, with IoU",
        description="Fit one data vector with FCMLC and scan chi2 on the grid; draw the FCMLC credible regions "
                    "with the Wilks and Feldman-Cousins confidence regions and report their intersection over "
                    "union. Writes comparison.json, comparison.png and posterior.npz to the output directory.")
    add_model_arg(p)
    p.add_argument("--fc", default=None, metavar="FILE", help="Feldman-Cousins result (`fcmlc fc` HDF5)")
    add_data_source_args(p)
    p.add_argument("-o", "--output", required=True, help="result directory")
    add_overwrite_arg(p)
    p.add_argument("--levels", type=float, nargs="+", default=[0.90, 0.95], metavar="L",
                   help="levels (default 0.90 0.95)")
    add_mc_dropout_args(p)
    p.add_argument("--grid", type=grid_arg, default=None, metavar="N|NxM",
                   help="chi2 grid without --fc (default: the model's training grid)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    add_data_dir_arg(p)
    p.set_defaults(func=cmd_compare)


# ------------------------------------------------------------------------------------ coverage

def cmd_coverage(args) -> int:
    check_positive_int(args.trials, "--trials")
    out = OutputDir(args.output, COVERAGE_OUTPUTS, args.overwrite)  # checked before the trials, not after
    if args.grid is not None:
        args.grid.require_memory(MIN_BYTES_PER_POINT, "the grid's tables alone")
    # matplotlib, torch and scipy (through the validation stage): loaded by the command only, so
    # `fcmlc --help` stays fast (and after the checks, so a bad output fails at once)
    from matplotlib.figure import Figure

    from ..frequentist import FCResult
    from ..models import FCMLC
    from ..validation import coverage
    from ..validation.inputs import scored_experiments

    fc = None if args.fc is None else FCResult.load(args.fc)  # a damaged file is refused before the trials
    model = FCMLC.load(args.model, device="cpu")
    exps = scored_experiments(model, args.data_dir)  # refused when not the definitions it was trained on
    t0 = time.perf_counter()
    res = coverage(model, trials=args.trials, levels=args.levels, seed=args.seed, methods=args.methods, fc=fc,
                   n_samples=args.samples, threads=args.threads, truths=args.truths, grid=args.grid,
                   experiments=exps, band=args.band, progress=not args.no_progress)
    dt = time.perf_counter() - t0
    summary = res.summary()
    summary["seconds_total"] = dt
    with out.writing() as stage:  # all three files, or none
        res.save(stage / "coverage.npz")
        atomic_write_json(stage / "coverage.json", summary)
        fig = Figure(figsize=(5.6, 5.2), layout="constrained")
        res.plot(ax=fig.subplots())
        save_figure(fig, stage / "coverage.png", dpi=120)
    print(f"coverage: {res.n_trials} trials ({res.truths} truths) of {', '.join(model.experiments)} in {dt:.1f} s "
          f"-> {out.path}")
    fr, iv = res.fraction, res.interval
    print(f"  {'method':16s}" + "".join(f"{100 * L:>22.4g}%" for L in res.levels))
    for m in res.methods:
        cells = "".join(f"{fr[m][i]:>11.3f} [{iv[m][0, i]:.3f},{iv[m][1, i]:.3f}]" for i in range(len(res.levels)))
        print(f"  {m:16s}{cells}")
    print(f"  (observed coverage [{100 * res.band:.4g}% Clopper-Pearson band])")
    nf = int(res.failed.sum()) if res.failed is not None else 0
    if nf:
        print(f"  {nf} FCMLC fit(s) failed (predictions outside the y_hat grid): counted as not covering the truth")
    return 0


# ------------------------------------------------------------------------------------ compare

def cmd_compare(args) -> int:
    out = OutputDir(args.output, COMPARE_OUTPUTS, args.overwrite)
    if args.grid is not None:
        args.grid.require_memory(MIN_BYTES_PER_POINT, "the grid's tables alone")
    # torch and scipy (through the validation stage): loaded by the command only, so `fcmlc --help`
    # stays fast (and after the checks, so a bad output fails at once)
    from ..models import FCMLC
    from ..validation import compare

    model = FCMLC.load(args.model, device="cpu")
    src = model_data_source(model, data_dir=args.data_dir, **data_source_options(args))
    x, truth, source = src.x, src.truth, src.description
    eset = src.experiments if src.experiments is not None else model_experiments(model, args.data_dir)
    res = compare(model, x, fc=args.fc, experiments=eset.experiments, levels=args.levels, n_samples=args.samples,
                  seed=args.mc_seed, grid=args.grid, threads=args.threads, truth=truth)
    res.meta["input"] = source
    with out.writing() as stage:  # all three files, or none
        paths = res.save(stage)
    print(f"compare ({source}) for {', '.join(model.experiments)} -> {out.path}")
    for L in res.levels:
        area = ", ".join(f"{m} {100 * res.area_fraction[m][L]:.1f}%" for m in res.area_fraction)
        ious = ", ".join(f"IoU({k}) = {v:.3f}" for k, v in res.iou[L].items())
        print(f"  {100 * L:.4g}%: {ious}; area of the plane: {area}")
    print(f"  wrote {', '.join(p.name for p in paths.values())}")
    return 0
