"""Paper-fast measurement of one task, step by step, with the training stopped by epochs.

    python benchmarks/paper_fast_task.py TASK [--out DIR] [--flow-epochs N] [--fc] [--data-dir DIR]

TASK is stereo, best or global (the experiments of ``fcmlc reproduce``). Steps: simulate the
paper's 101 x 101 x 50 realizations (seed 0) -> train with the ``fast`` preset, but stopped by
epochs (regressor patience 8, flow 8 epochs or ``--flow-epochs``; no wall-clock budget, so the weights do
not depend on the machine's load) -> optionally the full-grid Feldman-Cousins map (1000 toys,
seed 1) -> coverage of FCMLC, Wilks (and FC) over 2000 trials with log-uniform truths -> the fit
of the task's observed vector (real data; MOCK no-oscillation realizations where no release
exists): chi2 best fit, FCMLC best point, FCMLC credible level of the chi2 best fit, IoU of the
regions, grid-edge warnings. Each finished step is reused when its output exists in --out.
Writes summary.json, observed.png and coverage.png to --out and prints the summary.

This is what ``fcmlc reproduce --scale paper-fast`` runs, without the MSE maps, example fits
and report, and with the option to leave out Feldman-Cousins (about an hour for the global fit
on 2 cores under the multiplicative-normalisation chi2). The figures in the README and the
numbers in benchmarks/RESULTS.md's notes were made with it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=("stereo", "best", "global"))
    ap.add_argument("--out", default=None, help="output directory (default report-paper-fast/TASK)")
    ap.add_argument("--flow-epochs", type=int, default=None, help="flow epochs (default: the fast preset's 8)")
    ap.add_argument("--fc", action="store_true", help="also the full-grid Feldman-Cousins map (1000 toys)")
    ap.add_argument("--data-dir", default=None, help="public data releases (default: ../shared/data if present)")
    args = ap.parse_args(argv)

    import fcmlc
    from matplotlib.figure import Figure

    from fcmlc import frequentist as fq
    from fcmlc.models import train
    from fcmlc.physics import sin2_2theta
    from fcmlc.reproduce import default_data_dir, task_experiments
    from fcmlc.simulation import simulate
    from fcmlc.validation import compare, coverage

    out = Path(args.out or f"report-paper-fast/{args.task}")
    out.mkdir(parents=True, exist_ok=True)
    data_dir = args.data_dir or default_data_dir()
    exps, data = task_experiments(args.task, data_dir, seed=0)
    grid = fcmlc.Grid.paper()
    T = {}

    t = time.perf_counter()
    simulate(exps, grid, n_per_point=50, seed=0, out=out / "sim.h5", progress=False)
    T["simulate"] = time.perf_counter() - t

    t = time.perf_counter()
    mdir = out / "model"
    if (mdir / "config.json").exists():
        model = fcmlc.FCMLC.load(mdir, device="cpu")
    else:
        cfg = {"hyperparameters": "fast", "time_budget": None}
        if args.flow_epochs is not None:
            cfg["flow"] = {"max_epochs": args.flow_epochs}
        model = train(out / "sim.h5", out=mdir, experiments=exps, config=cfg, device="cpu", seed=0, progress=False)
    T["train"] = time.perf_counter() - t

    fc = None
    if args.fc:
        t = time.perf_counter()
        fc = fq.feldman_cousins(exps, grid, n_toys=1000, seed=1, out=out / "fc.h5", progress=False)
        T["feldman_cousins"] = time.perf_counter() - t

    t = time.perf_counter()
    cv = coverage(model, trials=2000, levels=(0.68, 0.90, 0.95), seed=0, fc=fc, n_samples=1000,
                  truths="continuous", experiments=exps)
    cv.save(out / "coverage.npz")
    T["coverage"] = time.perf_counter() - t

    t = time.perf_counter()
    x = np.concatenate([d["x"] for d in data])
    comp = compare(model, x, fc=fc, experiments=exps, levels=(0.68, 0.90, 0.95), n_samples=1000, seed=0)
    post = comp.posterior
    bu, bd = comp.scan.best_point
    fb = post.best_point()
    T["observed"] = time.perf_counter() - t
    res = {
        "task": args.task, "data": [[d["name"], d["kind"]] for d in data], "seconds": T,
        "training": {k: model.info["training"][k] for k in ("regressor", "flow", "transition_seconds")},
        "coverage": {m: {k: v["observed"] for k, v in d.items()} for m, d in cv.summary()["coverage"].items()},
        "chi2_best": {"sin2_2theta": float(sin2_2theta(bu)), "dm2": float(bd), "chi2_min": float(comp.scan.min)},
        "fcmlc_best": {"sin2_2theta": float(sin2_2theta(fb[0])), "dm2": fb[1]},
        "chi2_best_credible_level": float(post.credible_level_of(bu, bd)),
        "iou": comp.summary()["iou"],
        "edge_warnings": post.edge_warnings(),
    }
    (out / "summary.json").write_text(json.dumps(res, indent=2, default=float))

    real = [d["name"] for d in data if d["kind"] == "real"]
    mock = [d["name"] for d in data if d["kind"] == "mock"]
    fig = Figure(figsize=(6.8, 6.0), layout="constrained")
    ax = fig.subplots()
    comp.plot(ax=ax, title=f"{args.task}: real data {', '.join(real) or 'none'}"
                           + (f"; MOCK (no-oscillation realization) {', '.join(mock)}" if mock else ""))
    ax.title.set_fontsize("small")
    fig.savefig(out / "observed.png", dpi=100)
    fig = Figure(figsize=(6.2, 5.8), layout="constrained")
    cv.plot(ax=fig.subplots(), title=f"{args.task}, paper-fast sizes: coverage over {cv.n_trials} trials")
    fig.savefig(out / "coverage.png", dpi=100)
    print(json.dumps({k: res[k] for k in ("seconds", "coverage", "chi2_best", "fcmlc_best",
                                          "chi2_best_credible_level", "iou", "edge_warnings")}, indent=1,
                     default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
