"""How close to the exact posterior can an estimator trained on a simulation grid get?

A dataset of ``fcmlc simulate`` holds realizations at grid points only; the ``npe``/``nre``
estimators dequantise y uniformly within each point's box (+-half a spacing), so the best they
can learn is the *grid oracle*: the exact likelihood at each simulation point, spread uniformly
over its box,

    q*(y | x) = L(x | y_i) prior(y_i) / sum_j L(x | y_j) prior(y_j) / |box_i|   for y in box_i.

The scoreboard compares estimators with the exact posterior at the centres of the posterior
cells (a continuous truth), which the oracle does not reach where the likelihood changes within a
grid spacing. This script measures, on the scoreboard's own trials (same seed), the distance of
the oracle from the exact posterior (the floor set by the simulation grid) and of each model from
both, split by how sharp the exact posterior is:

    python benchmarks/estimator_floor.py MODEL [MODEL ...] [--trials 300] [--seed 7]
                                         [--data-dir DIR] [--threads 2]

Writes benchmarks/results/estimator_floor.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402

from fcmlc import estimators  # noqa: E402
from fcmlc.exact import ExactModel, grid_of_centres  # noqa: E402
from fcmlc.physics import Grid  # noqa: E402
from fcmlc.validation.coverage_check import _select_trials  # noqa: E402  (the scoreboard's trials)
from fcmlc.validation.inputs import model_experiments  # noqa: E402
from fcmlc.validation.scoreboard import scored_experiments, task_name  # noqa: E402

#: exact 90 % regions of fewer cells than this count as "sharp" (a strong signal)
SHARP_CELLS = 50


def overlaps(cell_edges, points):
    """(n_cells, n_points): the fraction of each point's box (+-half a spacing, log10) inside each cell."""
    h = points[1] - points[0]
    lo, hi = points - h / 2, points + h / 2
    ov = np.minimum(cell_edges[1:, None], hi[None]) - np.maximum(cell_edges[:-1, None], lo[None])
    return np.maximum(ov, 0.0) / h


def masses(p):
    p = p.reshape(len(p), -1)
    return p / p.sum(axis=1, keepdims=True)


def tv(a, b):
    return 0.5 * np.abs(a - b).sum(axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    t0 = time.perf_counter()
    models = [estimators.load(m) for m in a.models]
    m0 = models[0]
    exps = scored_experiments(m0, a.data_dir)
    eset = model_experiments(m0, exps)
    yg = m0.y_grid
    sim = Grid.from_dict(m0.info["dataset"]["grid"])
    tr = _select_trials(eset, "continuous", a.trials, a.seed, sim, a.threads)
    exact = masses(np.exp(ExactModel(exps, grid_of_centres(yg.ue4_centres, yg.dm2_centres),
                                     threads=a.threads).log_posterior(tr.x)))
    at_points = np.exp(ExactModel(exps, sim, threads=a.threads).log_posterior(tr.x))  # (n, n_dm2, n_ue4) points
    ou = overlaps(np.asarray(yg.log_ue4_edges), np.log10(sim.ue4))
    od = overlaps(np.asarray(yg.log_dm2_edges), np.log10(sim.dm2))
    oracle = masses(np.einsum("cj,njk,dk->ncd", od, at_points / at_points.sum(axis=(1, 2), keepdims=True), ou))
    ranked = np.sort(exact, axis=1)[:, ::-1]
    n90 = (np.cumsum(ranked, axis=1) < 0.9).sum(axis=1) + 1
    sharp = n90 < SHARP_CELLS
    rows = [("grid oracle (exact likelihood at the simulation points, uniform in each box)", tv(oracle, exact), None)]
    for path, m in zip(a.models, models):
        if list(m.experiments) != list(m0.experiments):
            raise SystemExit(f"{path}: experiments {m.experiments} differ from {m0.experiments}")
        q = masses(m.posterior_density(tr.x, threads=a.threads))
        rows.append((f"{getattr(m, 'estimator', 'fcmlc')} ({Path(path).name})", tv(q, exact), tv(q, oracle)))
    load = os.getloadavg()
    md = [f"# How close can an estimator trained on the simulation grid get? ({task_name(m0.experiments)})", "",
          f"`python benchmarks/estimator_floor.py {' '.join(a.models)} --trials {a.trials} --seed {a.seed}"
          + (f" --data-dir {a.data_dir}" if a.data_dir else "") + "`", "",
          f"Machine: {cpu_model()}, {os.cpu_count()} cores, load average {load[0]:.1f}; "
          f"{time.perf_counter() - t0:.0f} s. Trials: the scoreboard's (truths log-uniform, seed {a.seed}), "
          f"{a.trials} of them; simulation grid {sim.shape}, posterior cells {yg.shape}. The grid oracle is "
          "the best an estimator trained on dequantised grid points can learn; its distance from the exact "
          "posterior is the floor the simulation grid sets.", "",
          f"| posterior | TV from exact: mean (median, p90) | mean on {int(sharp.sum())} sharp trials "
          f"(exact 90 % region < {SHARP_CELLS} cells) | mean on the other {int((~sharp).sum())} | "
          "TV from the grid oracle: mean |", "|---|---|---|---|---|"]
    for name, d, do in rows:
        md.append(f"| {name} | {d.mean():.3f} ({np.median(d):.3f}, {np.quantile(d, 0.9):.3f}) | "
                  f"{d[sharp].mean() if sharp.any() else float('nan'):.3f} | {d[~sharp].mean():.3f} | "
                  + (f"{do.mean():.3f} |" if do is not None else "0 |"))
    text = "\n".join(md) + "\n"
    out = Path(__file__).resolve().parent / "results" / "estimator_floor.md"
    with open(out, "a") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
