"""Benchmark of FCMLC training and inference; writes benchmarks/results/training.md.

    python benchmarks/bench_training.py [--quick] [--threads N] [--epochs N] [--out FILE]

(a) One fit with a trained-size model: m = 1000 MC-dropout predictions, KDE on the 50x50
    y_hat grid, integration with the 2500 x 10000 transition matrix, credible regions at
    68/90/95 % -- per step. The networks have the default (Table III/IV) architectures; their
    weights come from (b) (or are freshly initialised with --quick), and the transition matrix
    is a random row-normalised one: the cost of every step does not depend on the values.
(b) Training on a paper-scale single-experiment dataset: STEREO on the 101 x 101 grid with 50
    realizations per point (510,050 realizations), generated with fcmlc.simulation.simulate.
    Measured: seconds per epoch of the regressor and of the flow at the defaults (Tables III/IV:
    regressor batch 32, flow batch 512) and of the regressor with the 'fast' preset (batch
    256), each over ``--epochs`` full epochs; the transition matrix on a subset of its rows
    (the cost per row is constant) extrapolated to all 2500 rows. The number of epochs to early
    stopping is not measured here (it needs hours at the defaults on 2 CPU cores); the
    projection of a full run is given as a function of it and reported as a projection.
--quick: a 41 x 41 x 20 dataset, 1 epoch, fewer transition rows (a smoke run, minutes).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return {"cpu": cpu, "cores_visible": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "load_avg_start": tuple(round(v, 2) for v in load)}


def timed(fn, *a, repeat=1, **kw):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        best = min(best, time.perf_counter() - t0)
    return out, best


def bench_fit(model, x, repeat=5, threads=2):
    """(a): per-step times of one posterior, best of ``repeat``."""
    from fcmlc.posterior import Posterior, integrate, kde_grid

    steps = {}
    samples, steps["MC-dropout predictions (m=1000)"] = timed(model.sample_yhat, x, 1000, 0, repeat=repeat)
    h, steps["bandwidth (normal_reference)"] = timed(model.bandwidths, samples, repeat=repeat)
    g = model.yhat_grid
    p, steps["KDE on 50x50 y_hat grid"] = timed(kde_grid, samples, g.log_ue4_centres, g.log_dm2_centres, h,
                                                threads, repeat=repeat)
    T = model.transition64()
    post, steps["integration (2500 x 10000)"] = timed(
        integrate, p.reshape(1, -1), T, g.cell_areas(), threads, False, repeat=repeat)
    yg = model.y_grid
    P, steps["Posterior object"] = timed(Posterior, yg.ue4_centres, yg.dm2_centres,
                                         np.asarray(post).reshape(yg.n_dm2, yg.n_ue4), repeat=repeat)
    _, steps["regions 68/90/95 % (summary)"] = timed(P.summary, (0.68, 0.9, 0.95), repeat=repeat)
    _, total = timed(lambda: model.posterior(x, n_samples=1000, seed=0, threads=threads).summary(),
                     repeat=repeat)
    return steps, total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small dataset, 1 epoch (smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (default 1, see the results)")
    ap.add_argument("--epochs", type=int, default=None, help="full epochs timed per network (default 2, quick 1)")
    ap.add_argument("--t-rows", type=int, default=None, help="transition-matrix rows timed (default 100, quick 20)")
    ap.add_argument("--workdir", default=None, help="where to write the dataset (default: a temp dir)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "training.md"))
    args = ap.parse_args(argv)

    import torch

    import fcmlc
    from fcmlc.dataset import open_dataset
    from fcmlc.models import FCMLC, CellGrid, TrainConfig, fit_flow, fit_regressor, transition_matrix
    from fcmlc.models.training import Samples
    from fcmlc.physics import Grid
    from fcmlc.simulation import simulate

    epochs = args.epochs or (1 if args.quick else 2)
    t_rows = args.t_rows or (20 if args.quick else 100)
    shape, per = ((41, 41), 20) if args.quick else ((101, 101), 50)
    info = machine_info()
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(dir=args.workdir)
    path = Path(tmp.name) / "stereo.h5"
    lines = []

    t0 = time.perf_counter()
    simulate(["STEREO"], Grid(shape=shape), n_per_point=per, seed=1, out=path, threads=2, progress=False)
    t_sim = time.perf_counter() - t0

    with open_dataset(path) as ds:
        cfg = TrainConfig.default(["STEREO"])
        fast = TrainConfig.fast(["STEREO"])
        tr = np.asarray(ds.split_indices("train"))
        perm = np.random.default_rng([0, 31]).permutation(tr.size)
        nv = int(round(0.1 * tr.size))
        t0 = time.perf_counter()
        train_s = Samples(ds, np.sort(tr[perm[nv:]]), None, True)
        val_s = Samples(ds, np.sort(tr[perm[:nv]]), None, True)
        t_load = time.perf_counter() - t0
        n_total, n_fit, n_val = int(ds.n_samples), len(train_s), len(val_s)

        def run_reg(c):
            c.max_epochs, c.patience = epochs, 10 ** 6
            reg, hist = fit_regressor(train_s, val_s, c, device="cpu", seed=0, progress=False)
            return reg, hist

        reg, h_reg = run_reg(cfg.regressor)
        _, h_fast = run_reg(fast.regressor)
        fc = cfg.flow
        fc.max_epochs, fc.patience = epochs, 10 ** 6
        grid = ds.grid
        widths = (float(np.log10(grid.ue4_range[1] / grid.ue4_range[0]) / (grid.n_ue4 - 1)),
                  float(np.log10(grid.dm2_range[1] / grid.dm2_range[0]) / (grid.n_dm2 - 1)))
        flow, h_flow = fit_flow(reg, train_s, val_s, fc, dequantize_widths=widths, device="cpu", seed=0,
                                progress=False)
        ff = fast.flow  # the fast preset's flow: batch 2048, lr 2e-3, cosine over its max_epochs
        n_flow_fast = ff.max_epochs
        ff.max_epochs, ff.patience = epochs, 10 ** 6
        _, h_flow_fast = fit_flow(reg, train_s, val_s, ff, dequantize_widths=widths, device="cpu", seed=0,
                                  progress=False)
        yhat_grid = CellGrid.over(grid, cfg.yhat_shape)
        y_grid = CellGrid.over(grid, cfg.y_shape)
        sub = CellGrid(yhat_grid.ue4_range, yhat_grid.dm2_range, (t_rows, 1))  # t_rows y_hat cells
        t0 = time.perf_counter()
        transition_matrix(flow, sub, y_grid, progress=False)
        t_rows_s = time.perf_counter() - t0
        t_T = t_rows_s * yhat_grid.n_cells / t_rows
        x = np.asarray(ds.features(np.array([0])))[0]

    # (a) fit with the trained networks and a random row-normalised transition matrix
    rng = np.random.default_rng(0)
    T = rng.random((yhat_grid.n_cells, y_grid.n_cells)).astype(np.float32)
    T /= T.sum(axis=1, keepdims=True) * y_grid.cell_area
    model = FCMLC(reg, flow, T, yhat_grid, y_grid, ["STEREO"], cfg.to_dict(), {})
    steps, total = bench_fit(model, x, repeat=5, threads=2)

    ep_reg = float(np.mean(h_reg["epoch_seconds"]))
    ep_fast = float(np.mean(h_fast["epoch_seconds"]))
    ep_flow = float(np.mean(h_flow["epoch_seconds"]))
    ep_flow_fast = float(np.mean(h_flow_fast["epoch_seconds"]))
    load_end = tuple(round(v, 2) for v in os.getloadavg())
    t_min = 51 * (ep_reg + ep_flow) + t_T + t_load

    cmd = "python benchmarks/bench_training.py" + (" --quick" if args.quick else "") + \
          (f" --threads {args.threads}" if args.threads != 1 else "") + (f" --epochs {args.epochs}" if args.epochs else "")
    lines += [
        "# FCMLC training and fit benchmark", "",
        f"Command: `{cmd}` (fcmlc {fcmlc.__version__}); written by `benchmarks/bench_training.py`.", "",
        f"Load average {info['load_avg_start']} at the start, {load_end} at the end (a load above the core "
        "count means other jobs shared the CPUs and the timings are pessimistic). No GPU was used.", "",
        "## Machine", "",
        f"- CPU: {info['cpu']}; {info['affinity']} cores available to the process ({info['cores_visible']} visible)",
        f"- Python {info['python']}, torch {info['torch']}, numpy {info['numpy']}",
        f"- torch threads for training: {args.threads}; KDE/integration threads: 2", "",
        "## (a) One fit with a trained model", "",
        "Networks: default architectures (regressor (100, 100, 50, 25, 10) on 126 STEREO bins, flow 4 "
        f"spline layers) after {epochs} training epoch(s) from (b); transition matrix 2500 x 10000 (random "
        "values, same cost). Best of 5 runs. Target: <= 0.1 s on 2 cores.", "",
        "| step | seconds |", "|---|---:|",
        *[f"| {k} | {v:.4f} |" for k, v in steps.items()],
        f"| **total `model.posterior(x).summary()`** | **{total:.4f}** |", "",
        "## (b) Training on a paper-scale single-experiment dataset", "",
        f"Dataset: STEREO, grid {shape[0]} x {shape[1]} x {per} per point = {n_total:,} realizations, generated "
        f"in {t_sim:.1f} s (`fcmlc.simulation.simulate`, 2 threads); training split {n_fit + n_val:,} = "
        f"{n_fit:,} fit + {n_val:,} validation (10 %); loaded into memory in {t_load:.1f} s.", "",
        f"Per-epoch times (mean of {epochs} full epoch(s), training pass plus validation):", "",
        "| network | settings | steps / epoch | s / epoch | epochs / hour |", "|---|---|---:|---:|---:|",
        f"| regressor | defaults (Table III): batch 32, lr 1e-3 | {int(np.ceil(n_fit / 32)):,} | {ep_reg:.1f} | "
        f"{3600 / ep_reg:.0f} |",
        f"| regressor | fast preset: batch 256, lr 2e-3 | {int(np.ceil(n_fit / 256)):,} | {ep_fast:.1f} | "
        f"{3600 / ep_fast:.0f} |",
        f"| flow | defaults (Table IV): batch 512, lr 5e-4, dropout 0.15 | {int(np.ceil(n_fit / 512)):,} | "
        f"{ep_flow:.1f} | {3600 / ep_flow:.0f} |",
        f"| flow | fast preset: batch 2048, lr 2e-3, cosine decay | {int(np.ceil(n_fit / 2048)):,} | "
        f"{ep_flow_fast:.1f} | {3600 / ep_flow_fast:.0f} |", "",
        f"Transition matrix (50x50 y_hat x 100x100 y = 25M flow evaluations): {t_rows} rows in {t_rows_s:.1f} s "
        f"-> **{t_T:.0f} s** for all 2500 rows (extrapolated; the cost per row is constant).", "",
        f"Validation loss after {epochs} epoch(s): regressor MSE {h_reg['best_val_mse']:.4f} (defaults), "
        f"{h_fast['best_val_mse']:.4f} (fast) in standardised units; flow NLL {h_flow['best_val_nll']:.4f}.", "",
        "### Projection of a full training run (a projection, not a measurement)", "",
        "The number of epochs to early stopping was not measured. With patience 50 (Table III; assumed for "
        "the flow) a run needs at least 51 epochs per network; E_r and E_f denote the epochs actually run:", "",
        f"- defaults: t = E_r x {ep_reg:.1f} s + E_f x {ep_flow:.1f} s + {t_T:.0f} s (transition) + "
        f"{t_load:.0f} s (loading). Minimum (E_r = E_f = 51): "
        f"**{(51 * (ep_reg + ep_flow) + t_T + t_load) / 60:.0f} min**; with E = 100 each: "
        f"**{(100 * (ep_reg + ep_flow) + t_T + t_load) / 60:.0f} min**. " + (
            "Even the minimum exceeds the 20-minute target on this machine." if t_min > 1200 else
            "The minimum fits the 20-minute target; whether a run does depends on E_r and E_f."),
        f"- fast preset (`fcmlc train --fast`, no wall-clock budget): the regressor stops on patience 8 "
        f"(E_r epochs, at most 200), the flow runs its {n_flow_fast} cosine epochs: t = E_r x {ep_fast:.1f} s + "
        f"{n_flow_fast} x {ep_flow_fast:.1f} s + {t_T:.0f} s + {t_load:.0f} s; with E_r = 20 (the paper-fast "
        "STEREO and BEST regressors stopped after 16 and 20) "
        f"**{(20 * ep_fast + n_flow_fast * ep_flow_fast + t_T + t_load) / 60:.1f} "
        "min**. Whole fast-preset trainings are measured end to end in "
        "[training_presets.md](training_presets.md) and in the Table II of `fcmlc reproduce`.", "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
