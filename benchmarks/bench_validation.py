"""Benchmark of fcmlc.validation: a 2000-trial coverage check of a trained STEREO model
(FCMLC, Wilks and Feldman-Cousins), one compare() and the MSE maps, timed per component.

    PYTHONPATH=python python benchmarks/bench_validation.py [--threads 2] [--trials 2000]
        [--grid 31] [--per-point 20] [--train-budget 120] [--fc-toys 500] [--workdir DIR]
        [--out benchmarks/results/validation.md]

Reduced scale (stated in the output): STEREO simulated on a G x G grid (default 31 x 31,
20 realizations per point) instead of the paper's 101 x 101 x 50, and trained with a small
flow and a wall-clock budget; the posterior grids are the paper's (50 x 50 y_hat cells,
100 x 100 y cells), so the cost of each FCMLC fit is the paper's. Target: 2000 trials in at
most 2 minutes on 2 cores. The dataset, model and FC file are kept in --workdir and reused.
Prints a Markdown report and writes it to --out.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _common import cpu_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--samples", type=int, default=1000, help="MC-dropout samples per fit")
    ap.add_argument("--grid", type=int, default=31)
    ap.add_argument("--per-point", type=int, default=20)
    ap.add_argument("--train-budget", type=float, default=120.0, help="training wall-clock budget [s]")
    ap.add_argument("--fc-toys", type=int, default=500)
    ap.add_argument("--workdir", default="/tmp/fcmlc-bench-validation")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "validation.md"))
    args = ap.parse_args(argv)

    import torch

    from fcmlc import __version__
    from fcmlc.frequentist import feldman_cousins
    from fcmlc.models import FCMLC, train
    from fcmlc.physics import Grid
    from fcmlc.simulation import realizations, simulate
    from fcmlc.validation import compare, coverage, mse_maps

    torch.set_num_threads(args.threads)
    wd = Path(args.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    grid = Grid(shape=(args.grid, args.grid))
    tag = f"stereo_g{args.grid}_n{args.per_point}"
    prep = {}

    ds = wd / f"{tag}.h5"
    t = time.perf_counter()
    simulate(["STEREO"], grid, n_per_point=args.per_point, seed=1, out=ds, threads=args.threads, progress=False)
    prep["simulate dataset"] = time.perf_counter() - t

    mdir = wd / f"{tag}_model_b{int(args.train_budget)}"
    t = time.perf_counter()
    if (mdir / "config.json").is_file():
        model = FCMLC.load(mdir, device="cpu")
        prep["train model"] = float("nan")
    else:
        cfg = {"time_budget": args.train_budget, "threads": args.threads,
               "flow": {"n_layers": 2, "hidden": 32, "n_blocks": 1}}
        model = train(ds, out=mdir, config=cfg, device="cpu", seed=0, progress=False)
        model = FCMLC.load(mdir, device="cpu")
        prep["train model"] = time.perf_counter() - t
    tr = model.info.get("training") or {}

    fc_path = wd / f"fc_{tag}_{args.fc_toys}.h5"
    t = time.perf_counter()
    fc = feldman_cousins(["STEREO"], grid, n_toys=args.fc_toys, seed=7, levels=(0.68, 0.9, 0.95), out=fc_path,
                         threads=args.threads, progress=False)
    prep["Feldman-Cousins (grid, toys)"] = time.perf_counter() - t

    t = time.perf_counter()
    res = coverage(model, trials=args.trials, seed=0, fc=fc, n_samples=args.samples, threads=args.threads)
    total = time.perf_counter() - t
    res_grid = coverage(model, trials=args.trials, seed=0, fc=fc, n_samples=args.samples, threads=args.threads,
                        truths="grid")
    res.save(wd / "coverage.npz")

    eset_x = realizations(["STEREO"], [0.2], [1.5], 1, seed=3)[0, 0]
    t = time.perf_counter()
    cmp_ = compare(model, eset_x, fc=fc, levels=(0.9, 0.95), threads=args.threads, truth=(0.2, 1.5),
                   out=wd / "compare")
    t_cmp = time.perf_counter() - t

    t = time.perf_counter()
    mse = mse_maps(model, ds, bins=(20, 20), n_samples=100, threads=args.threads)
    t_mse = time.perf_counter() - t
    mse.plot().savefig(wd / "mse.png", dpi=100)

    sec = res.meta["seconds"]
    lines = [
        "# fcmlc.validation benchmark",
        "",
        f"Command: `PYTHONPATH=python python benchmarks/bench_validation.py --threads {args.threads} --trials "
        f"{args.trials} --grid {args.grid} --per-point {args.per_point} --train-budget {args.train_budget:g} "
        f"--fc-toys {args.fc_toys}`",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} logical CPUs visible, {args.threads} threads used; "
        f"Python {platform.python_version()}, torch {torch.__version__}, fcmlc {__version__}.",
        f"Load average at the end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())} (above the core count: "
        "other jobs shared the CPUs and the timings are pessimistic).",
        "",
        "## Setup (reduced scale)",
        "",
        f"* STEREO simulated on a {args.grid} x {args.grid} grid over the paper's ranges, {args.per_point} "
        f"realizations per point ({grid.n_points * args.per_point} samples; paper: 101 x 101 x 50).",
        f"* Model: default regressor (Table III sizes), flow reduced to 2 layers x 32 hidden units, trained with a "
        f"{args.train_budget:g} s budget (regressor {tr.get('regressor', {}).get('epochs', '?')} epochs, flow "
        f"{tr.get('flow', {}).get('epochs', '?')} epochs); posterior grids as in the paper: "
        f"{model.yhat_grid.n_ue4} x {model.yhat_grid.n_dm2} y_hat cells, {model.y_grid.n_ue4} x {model.y_grid.n_dm2} "
        "y cells, so each FCMLC fit costs what it costs at paper scale.",
        f"* Feldman-Cousins on the same {args.grid} x {args.grid} grid with {args.fc_toys} toys per point.",
        "",
        "| preparation (not part of the check) | seconds |",
        "|---|---:|",
        *[f"| {k} | {'reused' if not np.isfinite(v) else f'{v:.1f}'} |" for k, v in prep.items()],
        "",
        f"## Coverage check: {args.trials} trials, {args.samples} MC-dropout samples per fit, {args.threads} threads",
        "",
        "| component | seconds | per trial |",
        "|---|---:|---:|",
        *[f"| {k} | {v:.2f} | {1e3 * v / args.trials:.2f} ms |" for k, v in sec.items()],
        f"| **total `coverage()`** | **{total:.2f}** | {1e3 * total / args.trials:.2f} ms |",
        "",
        f"Target: 2000 trials in <= 120 s on 2 cores: {'met' if total * 2000 / args.trials <= 120 else 'NOT met'} "
        f"({total * 2000 / args.trials:.0f} s scaled to 2000 trials).",
        "",
        "Observed coverage (1-sigma Clopper-Pearson bands). The model is trained at reduced scale for a few "
        "minutes, so its FCMLC coverage is not the paper's; the numbers show the check runs, not the model's quality.",
        "",
        "| truths | method | " + " | ".join(f"{100 * L:g}%" for L in res.levels) + " |",
        "|---|---|" + "---:|" * len(res.levels),
    ]
    for r in (res, res_grid):
        fr, iv = r.fraction, r.interval
        for m in r.methods:
            lines.append(f"| {r.truths} | {m} | " + " | ".join(
                f"{fr[m][i]:.3f} [{iv[m][0, i]:.3f}, {iv[m][1, i]:.3f}]" for i in range(len(r.levels))) + " |")
    lines += [
        "",
        "## compare() and MSE maps",
        "",
        "| step | seconds |",
        "|---|---:|",
        f"| compare(): one FCMLC fit + chi2 scan + regions + IoU + JSON/PNG | {t_cmp:.2f} |",
        f"| mse_maps(): {sum(mse.meta['samples_used'].values())} test samples x 100 MC-dropout samples, 20 x 20 bins "
        f"| {t_mse:.2f} |",
        "",
        "IoU of the compare() example (realization at |Ue4| = 0.2, dm2 = 1.5 eV^2): " + "; ".join(
            f"{100 * L:g}%: " + ", ".join(f"{k} {v:.2f}" for k, v in cmp_.iou[L].items()) for L in cmp_.levels) + ".",
        f"Overall test MSE (log10 units): interpolation {mse.overall['interpolation']:.4f}, random "
        f"{mse.overall['random']:.4f}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
