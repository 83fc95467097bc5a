"""False-alarm rate of each diagnostic on well-specified data: realizations drawn from the model at
a grid point (so the grid's discretisation plays no part), each diagnosed with its own toys.

    python benchmarks/diagnostics_false_alarm.py [--experiments STEREO,BEST] [--n 200] [--toys 300]
        [--point 0.1 1.5]

Writes benchmarks/results/diagnostics_false_alarm.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binom

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model  # noqa: E402

from fcmlc.diagnostics import THRESHOLDS, diagnose  # noqa: E402
from fcmlc.exact import ExactModel  # noqa: E402
from fcmlc.physics import Grid  # noqa: E402
from fcmlc.simulation import realizations  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", default="STEREO,BEST")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--toys", type=int, default=300)
    ap.add_argument("--point", nargs=2, type=float, default=(0.1, 1.5), metavar=("UE4", "DM2"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    grid = Grid.paper()
    model = ExactModel(a.experiments, grid, threads=a.threads)
    p = grid.nearest(*a.point)
    u, d = grid.points()[p]
    X = realizations(model.experiments, [u], [d], a.n, seed=12345, point_ids=[p])[0]
    counts, t0 = {}, time.perf_counter()
    for i, x in enumerate(X):
        for c in diagnose(model.experiments, x, model=model, n_toys=a.toys, seed=10_000 + i, threads=a.threads).checks:
            counts.setdefault(c.name, 0)
            counts[c.name] += c.status == "warn"
    dt = time.perf_counter() - t0
    level = {"goodness_of_fit": THRESHOLDS["gof"], "compatibility": THRESHOLDS["compatibility"]}
    load = os.getloadavg()
    md = [f"# False alarms of the diagnostics ({a.experiments}, paper grid, truth at grid point "
          f"|Ue4| = {u:.4g}, dm2 = {d:.4g} eV^2)", "",
          f"{a.n} realizations, {a.toys} toys each; {dt:.0f} s ({dt / a.n:.2f} s per fit); {cpu_model()}, "
          f"load {load[0]:.1f}.", "",
          "| check | warnings | rate | stated level | P(count >= observed) under Binomial(n, level) |",
          "|---|---|---|---|---|"]
    for name, k in counts.items():
        lv = level.get(name.split(":")[0], THRESHOLDS["distance"] if name.startswith("distance") else None)
        if name.startswith("compatibility"):
            lv = THRESHOLDS["compatibility"]
        tail = "" if lv is None else f"{binom.sf(k - 1, a.n, lv):.3g}"
        md.append(f"| {name} | {k} | {k / a.n:.3f} | {'' if lv is None else lv} | {tail} |")
    md += ["", "`edges` is not a statistical test (it warns when a best point lies on the grid's edge).", ""]
    out = Path(__file__).resolve().parent / "results" / "diagnostics_false_alarm.md"
    out.write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
