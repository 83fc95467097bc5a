"""Flow-training schedules of the ``fast`` preset: wall time and accuracy (issue 12).

    python benchmarks/bench_flow_presets.py TASKDIR [--candidates NAME ...] [--trials 1000]

TASKDIR holds a paper-scale dataset ``sim.h5`` and a model trained on it with the former fast
preset (``model/``; e.g. a ``benchmarks/paper_fast_task.py`` output directory). The model's
regressor is kept fixed; for each candidate flow schedule the flow is retrained on the same
training/validation split the pipeline uses (seed 0), the transition matrix recomputed, and the
resulting model scored by a coverage check with the exact posterior on 1000 trials (seed 7):
coverage at 68/90/95 %, mean total-variation distance and KL(exact || model). ``existing``
scores the model as it is. Each candidate runs in its own process (one torch thread), appends
one JSON line to TASKDIR/flow_presets.jsonl, and the table of all lines so far is written to
``benchmarks/results/training_presets.md`` (the times depend on the machine's load, which is
recorded; the accuracies do not).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import cpu_model

#: name -> (batch, lr, max epochs, schedule); "existing" scores the trained model unchanged
CANDIDATES = {
    "existing": None,
    "512/5e-4/20/constant": (512, 5e-4, 20, "constant"),
    "2048/2e-3/8/cosine": (2048, 2e-3, 8, "cosine"),
    "2048/1e-3/8/cosine": (2048, 1e-3, 8, "cosine"),
    "1024/1e-3/10/cosine": (1024, 1e-3, 10, "cosine"),
}


def run_one(task: Path, name: str, trials: int) -> dict:
    import numpy as np
    import torch

    from fcmlc.dataset import open_dataset
    from fcmlc.models import FCMLC
    from fcmlc.models.config import FlowConfig
    from fcmlc.models.flow import transition_matrix
    from fcmlc.models.samples import Samples
    from fcmlc.models.training import fit_flow
    from fcmlc.validation import coverage

    torch.set_num_threads(1)
    base = FCMLC.load(task / "model", device="cpu")
    res = {"task": "+".join(base.experiments), "candidate": name, "load_before": os.getloadavg()[0]}
    spec = CANDIDATES[name]
    if spec is None:
        f = base.info["training"]["flow"]
        res.update(flow_seconds=f["seconds"], epochs=f["epochs"], best_val_nll=f["best_val_nll"],
                   note="as trained (its own run and load)")
        model = base
    else:
        bs, lr, ep, sched = spec
        with open_dataset(task / "sim.h5") as ds:  # the pipeline's split for seed 0
            idx = np.asarray(ds.split_indices("train"), dtype=np.int64)
            perm = np.random.default_rng([0, 31]).permutation(idx.size)
            n_val = max(1, int(round(0.1 * idx.size)))
            val_idx, fit_idx = np.sort(idx[perm[:n_val]]), np.sort(idx[perm[n_val:]])
            tr = Samples(ds, fit_idx, None, True, 65536, False, "", base.features)
            va = Samples(ds, val_idx, None, True, 65536, False, "", base.features)
            g = ds.grid
            widths = (float(np.log10(g.ue4_range[1] / g.ue4_range[0]) / (g.n_ue4 - 1)),
                      float(np.log10(g.dm2_range[1] / g.dm2_range[0]) / (g.n_dm2 - 1)))
        cfg = FlowConfig(batch_size=bs, lr=lr, max_epochs=ep, patience=8, min_delta=1e-4, lr_schedule=sched)
        t = time.perf_counter()
        flow, hist = fit_flow(base.regressor, tr, va, cfg, dequantize_widths=widths, seed=0, progress=False)
        res.update(flow_seconds=time.perf_counter() - t, epochs=hist["epochs"], best_val_nll=hist["best_val_nll"])
        T = transition_matrix(flow, base.yhat_grid, base.y_grid, progress=False)
        model = FCMLC(base.regressor, flow, T, base.yhat_grid, base.y_grid, base.experiments, base.config,
                      base.info, base.features)
    c = coverage(model, trials=trials, seed=7, methods=("fcmlc", "exact"), threads=1)
    d = c.meta["fcmlc_vs_exact"]
    res.update(coverage=c.fraction["fcmlc"].tolist(), exact_coverage=c.fraction["exact"].tolist(),
               tv_mean=d["total_variation"]["mean"], tv_p90=d["total_variation"]["p90"], kl_mean=d["kl"]["mean"],
               trials=trials, load_after=os.getloadavg()[0])
    return res


def _load(r) -> str:
    if r.get("load_before") is None:
        return "not recorded"
    return f"{r['load_before']:.1f} / {r['load_after']:.1f}"


def write_table(rows, path: Path):
    lines = ["# Flow schedules of the fast preset (issue 12)", "",
             "Command: `python benchmarks/bench_flow_presets.py TASKDIR` per task (written by that script).", "",
             f"Machine: {cpu_model()}, one torch thread per candidate; the load average (1 min) before and after "
             "each candidate is shown: other jobs shared the 2 cores, so the times are comparable only roughly "
             "(the accuracies do not depend on load: same seed, same weights).", "",
             "Regressor fixed (the task's model), flow retrained on the pipeline's split, transition matrix "
             "recomputed; coverage check with the exact posterior (seed 7). `existing`: the task's model as "
             "trained with the former fast preset (flow batch 512, lr 5e-4 constant, 20 epochs), its flow time "
             "from its own training record. Load 'not recorded': rows run (same computation) before the script "
             "recorded it, with a load average of 2.5-5 on the 2 cores.", "",
             "| task | flow batch / lr / max epochs / schedule | epochs | flow training | best val. NLL | coverage "
             "68 / 90 / 95 % | exact posterior's coverage | TV from exact, mean (p90) | KL mean | load |",
             "|---|---|---:|---:|---:|---|---|---|---:|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['candidate']} | {r['epochs']} | {r['flow_seconds']:.0f} s | "
                     f"{r['best_val_nll']:.4f} | {' / '.join(f'{v:.3f}' for v in r['coverage'])} | "
                     f"{' / '.join(f'{v:.3f}' for v in r['exact_coverage'])} | {r['tv_mean']:.3f} ({r['tv_p90']:.3f})"
                     f" | {r['kl_mean']:.3f} | {_load(r)} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", type=Path)
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one candidate, print JSON
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(args.task, args.one, args.trials)))
        return 0
    log = args.task / "flow_presets.jsonl"
    for name in args.candidates:
        out = subprocess.run([sys.executable, __file__, str(args.task), "--one", name, "--trials", str(args.trials)],
                             check=True, capture_output=True, text=True).stdout
        with open(log, "a") as f:
            f.write(out.strip().splitlines()[-1] + "\n")
    rows = []
    for p in sorted(Path(args.task).parent.glob("*/flow_presets.jsonl")):
        rows += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    write_table(rows, Path(__file__).parent / "results" / "training_presets.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
