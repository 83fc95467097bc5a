"""The pipeline of one task, step by step: each step is a pair of top-level functions, its
*settings* (everything that determines its result, plus the digests of the steps it builds on)
and its *computation* (which writes the step's outputs and returns its numbers), listed in
:data:`PIPELINE` in run order. :class:`TaskRun` holds what the steps read.

    simulate -> train -> feldman_cousins -> mse (Fig. 2) -> examples (Fig. 3)
      -> coverage (Fig. 4) -> observed (Fig. 5) -> report
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from .. import experiments as ex
from .._checks import UINT64_MAX
from .._io import atomic_path, atomic_write_text
from ..dataset import open_dataset
from ..diagnostics import diagnose
from ..frequentist import Chi2Model, FCResult, chi2_scan, feldman_cousins
from ..physics import ue4_from_sin2_2theta
from ..simulation import realizations, simulate
from ..validation import coverage, mse_maps
from .data import download_hint, task_experiments
from .figures import fig2_mse, fig3_examples, fig4_coverage, fig5_observed
from .fits import compare_fit, sensitivity, wilks_2dof
from .report import report_markdown
from .scales import (EXAMPLE_KEY_OFFSET, FC_LEVELS, FIT_LEVELS, NULL_DM2, SIGNAL_TRUTHS, TRAIN_TORCH_THREADS,
                     Scale)


@dataclass
class TaskRun:
    """One task's run: the request, its experiments and observed data, and the objects several
    steps share (trained model, Feldman-Cousins result, sensitivity curve), loaded on first use."""

    task: str
    scale: Scale
    out: Path
    threads: int | None
    seed: int
    data_dir: Path | None
    progress: bool
    shared: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(exist_ok=True)
        self.experiments, self.data = task_experiments(self.task, self.data_dir, self.seed)
        self.eset = ex.combine(self.experiments)
        self.hint = download_hint(self.data)
        if self.hint and self.progress:
            print(f"note: {self.hint}", file=sys.stderr, flush=True)
        self.grid = self.scale.grid()

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def fc_seed(self) -> int:
        """Seed of the Feldman-Cousins toys: not the training realizations' stream."""
        return (self.seed + 1) & UINT64_MAX

    @property
    def base(self) -> dict:
        """The settings every step shares."""
        exp_info = [{"name": e.name, "definition_hash": e.definition_hash, "n_bins": int(e.n_bins)}
                    for e in self.experiments]
        return {"task": self.task, "scale": self.scale.to_dict(), "experiments": exp_info, "fcmlc_version": __version__}

    @property
    def provenance(self) -> list:
        """The observed data's provenance (``data`` without the vectors)."""
        return [{k: v for k, v in d.items() if k != "x"} for d in self.data]

    @property
    def observed_vector(self):
        return np.concatenate([d["x"] for d in self.data])

    @property
    def example_truths(self) -> dict:
        """The Fig. 3 truths, name -> (|Ue4|, dm2)."""
        s2_sig, dm2_sig = SIGNAL_TRUTHS[self.task]
        return {"null-like": (float(self.grid.ue4_range[0]), float(NULL_DM2)),
                "signal-like": (float(ue4_from_sin2_2theta(s2_sig)), float(dm2_sig))}

    def model(self):
        if "model" not in self.shared:
            from ..models import FCMLC  # torch: loaded only when a step needs the model

            self.shared["model"] = FCMLC.load(self.work / "model", device="cpu")
        return self.shared["model"]

    def fc(self) -> FCResult:
        if "fc" not in self.shared:
            self.shared["fc"] = FCResult.load(self.work / "fc.h5")
        return self.shared["fc"]

    def sensitivity(self):
        if "sens" not in self.shared:
            self.shared["sens"] = sensitivity(self.eset, self.grid)
        return self.shared["sens"]


def _after(recs: dict, *names) -> dict:
    return {k: recs[k]["digest"] for k in names}


# ------------------------------------------------------------------------------------------------
# 1. simulate


def simulate_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "grid": run.grid.to_dict(), "n_per_point": run.scale.n_per_point, "seed": run.seed}


def simulate_step(run: TaskRun, recs) -> dict:
    p = simulate(run.experiments, run.grid, n_per_point=run.scale.n_per_point, seed=run.seed,
                 out=run.work / "sim.h5", threads=run.threads, progress=run.progress)
    with open_dataset(p) as d:
        return {"n_samples": int(d.n_samples), "n_points": int(d.n_points), "n_features": int(d.n_features),
                "n_train": int(d.split_indices("train").size),
                "n_test_interpolation": int(d.split_indices("test_interpolation").size),
                "n_test_random": int(d.split_indices("test_random").size)}


# ------------------------------------------------------------------------------------------------
# 2. train


def train_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "config": run.scale.train, "seed": run.seed, "after": _after(recs, "simulate")}


def train_step(run: TaskRun, recs) -> dict:
    from ..models import train  # torch

    cfg = json.loads(json.dumps(run.scale.train))
    cfg["threads"] = TRAIN_TORCH_THREADS
    # train writes the model directory all or nothing and checkpoints every epoch in model.partial/,
    # so an interrupted step resumes there; a model.partial holding a config.json is a model
    # directory partly written by an older fcmlc (before checkpoints), useless now
    if (run.work / "model.partial" / "config.json").exists():
        shutil.rmtree(run.work / "model.partial")
    model = train(run.work / "sim.h5", out=run.work / "model", config=cfg, seed=run.seed, progress=run.progress)
    tr = model.info["training"]
    r, f = tr["regressor"], tr["flow"]
    return {"regressor": {k: r.get(k) for k in ("epochs", "best_epoch", "best_val_mse", "stop_reason", "seconds",
                                                 "n_train", "n_val")},
            "flow": {k: f.get(k) for k in ("epochs", "best_epoch", "best_val_nll", "stop_reason", "seconds")},
            "transition_seconds": tr["transition_seconds"], "total_seconds": tr["total_seconds"],
            "machine_dependent": bool(tr.get("machine_dependent")),
            "machine_dependent_reason": tr.get("machine_dependent_reason"), "resumed": len(tr.get("resumed", [])),
            "device": tr["device"], "torch_threads": tr["torch_threads"],
            "hidden": list(model.regressor.net.architecture().get("hidden", [])),
            "yhat_shape": [int(model.yhat_grid.n_ue4), int(model.yhat_grid.n_dm2)],
            "y_shape": [int(model.y_grid.n_ue4), int(model.y_grid.n_dm2)]}


# ------------------------------------------------------------------------------------------------
# 3. Feldman-Cousins


def fc_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "grid": run.grid.to_dict(), "n_toys": run.scale.fc_toys, "seed": run.fc_seed,
            "levels": list(FC_LEVELS)}


def fc_step(run: TaskRun, recs) -> dict:
    path = run.work / "fc.h5"
    res = feldman_cousins(run.experiments, run.grid, n_toys=run.scale.fc_toys, seed=run.fc_seed, levels=FC_LEVELS,
                          out=path, threads=run.threads, progress=run.progress)
    if not res.complete:
        raise RuntimeError(f"{path}: Feldman-Cousins result incomplete after the run")
    return {"n_points": int(run.grid.n_points),
            "critical_median": {f"{L:g}": float(np.median(res.critical_value(L))) for L in FC_LEVELS},
            "wilks_2dof": {f"{L:g}": float(wilks_2dof(L)) for L in FC_LEVELS}}


# ------------------------------------------------------------------------------------------------
# 4. MSE maps (Fig. 2)


def mse_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "mc_samples": run.scale.mse_samples, "bins": "one per grid point", "seed": run.seed,
            "after": _after(recs, "train")}


def mse_step(run: TaskRun, recs) -> dict:
    mm = mse_maps(run.model(), run.work / "sim.h5", bins=None, n_samples=run.scale.mse_samples, seed=run.seed,
                  threads=run.threads)
    with atomic_path(run.work / "mse.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, ue4_edges=mm.ue4_edges, dm2_edges=mm.dm2_edges,
                            **{f"{s}_{k}": v for s, m in mm.maps.items() for k, v in m.items()})
    fig2_mse(mm, run.sensitivity(), run.task, run.out / "fig2_mse.png")
    s = mm.summary()
    return {"overall_mse": s["overall_mse"], "n_test_samples": s["n_test_samples"], "variables": s["variables"],
            "bins": s["bins"], "sensitive_dm2_rows": int(np.isfinite(run.sensitivity()[0]).sum())}


# ------------------------------------------------------------------------------------------------
# 5. example fits (Fig. 3)


def examples_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "truths": run.example_truths, "mc_samples": run.scale.mc_samples, "seed": run.seed,
            "levels": list(FIT_LEVELS), "key_offset": EXAMPLE_KEY_OFFSET,
            "after": _after(recs, "train", "feldman_cousins")}


def examples_step(run: TaskRun, recs) -> dict:
    truths = run.example_truths
    names = list(truths)
    tu = np.array([truths[k][0] for k in names])
    td = np.array([truths[k][1] for k in names])
    X = realizations(run.eset, tu, td, n_per_point=1, seed=run.seed,
                     point_ids=EXAMPLE_KEY_OFFSET + np.arange(len(names)), threads=run.threads)[:, 0, :]
    asimov_null = chi2_scan(Chi2Model(run.eset.experiments, run.grid),
                            run.eset.expectation(tu, td).reshape(len(names), -1), threads=run.threads)
    null_cols = asimov_null.chi2[:, :, 0].min(axis=1)  # smallest-|Ue4| column: no oscillation
    res, comps = {}, {}
    for i, k in enumerate(names):
        comp, info = compare_fit(run.model(), X[i], run.fc(), run.experiments, run.scale, run.seed, run.threads,
                                 truths[k])
        info["asimov_delta_chi2_null"] = float(null_cols[i] - asimov_null.min[i])
        res[k], comps[k] = info, comp
        comp.posterior.to_npz(run.work / f"example_{k}.npz")
    fig3_examples(comps, truths, run.sensitivity(), run.task, run.out / "fig3_examples.png")
    return res


# ------------------------------------------------------------------------------------------------
# 6. coverage (Fig. 4)


def coverage_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "trials": run.scale.coverage_trials, "mc_samples": run.scale.mc_samples, "seed": run.seed,
            "levels": list(FC_LEVELS), "truths": "continuous", "after": _after(recs, "train", "feldman_cousins")}


def coverage_step(run: TaskRun, recs) -> dict:
    cv = coverage(run.model(), trials=run.scale.coverage_trials, levels=FC_LEVELS, seed=run.seed, fc=run.fc(),
                  n_samples=run.scale.mc_samples, threads=run.threads, truths="continuous",
                  experiments=run.experiments, progress=run.progress)
    # CoverageResult.save appends '.npz' to other names, so the temporary name ends in .npz
    tmp = run.work / "coverage.tmp.npz"
    cv.save(tmp)
    os.replace(tmp, run.work / "coverage.npz")
    fig4_coverage(cv, run.task, run.out / "fig4_coverage.png")
    s = cv.summary()
    return {"n_trials": s["n_trials"], "methods": s["methods"], "coverage": s["coverage"],
            "band_confidence": s["band_confidence"], "n_failed_fcmlc_fits": s["n_failed_fcmlc_fits"],
            "seconds": s["meta"].get("seconds"), "truth_location": s["meta"].get("truth_location"),
            "fcmlc_vs_exact": s["meta"].get("fcmlc_vs_exact")}


# ------------------------------------------------------------------------------------------------
# 7. fit on observed data (Fig. 5)


def observed_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "data": run.provenance,
            "x_sha256": hashlib.sha256(run.observed_vector.tobytes()).hexdigest()[:24],
            "mc_samples": run.scale.mc_samples, "seed": run.seed, "levels": list(FIT_LEVELS),
            "after": _after(recs, "train", "feldman_cousins")}


def observed_step(run: TaskRun, recs) -> dict:
    comp, info = compare_fit(run.model(), run.observed_vector, run.fc(), run.experiments, run.scale, run.seed,
                             run.threads, None)
    comp.posterior.to_npz(run.work / "observed.npz")
    info["real"] = [d["name"] for d in run.data if d["kind"] == "real"]
    info["mock"] = [d["name"] for d in run.data if d["kind"] == "mock"]
    info["diagnostics"] = diagnose(run.experiments, run.observed_vector, posterior=comp.posterior,
                                   threads=run.threads, seed=run.seed).to_dict()
    fig5_observed(comp, info["real"], info["mock"], run.task, run.out / "fig5_observed.png")
    return info


# ------------------------------------------------------------------------------------------------
# 8. report


def report_settings(run: TaskRun, recs) -> dict:
    return {**run.base, "after": _after(recs, *STEP_NAMES[:-1]), "data": run.provenance, "hint": run.hint}


def report_step(run: TaskRun, recs) -> dict:
    text = report_markdown(run.task, run.scale, run.seed, run.data, run.hint,
                           {k: recs[k] for k in STEP_NAMES[:-1]}, run.data_dir)
    atomic_write_text(run.out / "REPORT.md", text)
    return {"chars": len(text)}


# ------------------------------------------------------------------------------------------------
# the pipeline


@dataclass(frozen=True)
class Step:
    """One step: its name, banner title, outputs (relative to the task's directory; the step is
    reused only while they exist) and its two functions of (TaskRun, records so far)."""

    name: str
    title: str
    outputs: tuple
    settings: Callable
    compute: Callable


PIPELINE = (
    Step("simulate", "simulate realizations", ("work/sim.h5",), simulate_settings, simulate_step),
    Step("train", "train FCMLC (regressor, flow, transition matrix)", ("work/model/config.json",),
         train_settings, train_step),
    Step("feldman_cousins", "Feldman-Cousins critical values", ("work/fc.h5",), fc_settings, fc_step),
    Step("mse", "MSE maps (Fig. 2)", ("fig2_mse.png", "work/mse.npz"), mse_settings, mse_step),
    Step("examples", "example fits (Fig. 3)", ("fig3_examples.png",), examples_settings, examples_step),
    Step("coverage", "coverage check (Fig. 4)", ("fig4_coverage.png", "work/coverage.npz"), coverage_settings,
         coverage_step),
    Step("observed", "fits on observed data (Fig. 5)", ("fig5_observed.png",), observed_settings, observed_step),
    Step("report", "report", ("REPORT.md",), report_settings, report_step),
)
STEP_NAMES = tuple(s.name for s in PIPELINE)
STEP_TITLES = {s.name: s.title for s in PIPELINE}
