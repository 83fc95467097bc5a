"""Posterior estimators side by side, scored against the exact posterior (``fcmlc benchmark-estimators``).

For every trained model (any estimator of :mod:`fcmlc.estimators`: fcmlc, ensemble, npe, nre)
:func:`score` runs one coverage check (:func:`fcmlc.validation.coverage`, methods 'fcmlc' -- the
model given -- and 'exact') and records

* the coverage of its HPD regions at each level with the Monte-Carlo (Clopper-Pearson) band,
  and the exact posterior's own coverage on the same trials (the reference: a model can be
  no better calibrated than the exact posterior evaluated on the same cells);
* its distance from the exact posterior on the same trials (a fixed set of test vectors for a
  given seed): total variation of the cell masses (mean, median, 90th percentile), KL(exact ||
  model) in nats, and the IoU of the HPD regions at each level;
* the training time recorded in its directory and the time per fit (median over
  ``fit_vectors`` single-vector ``posterior`` calls, after one warm-up call).

:func:`scoreboard` scores a list of models; :class:`Scoreboard` writes the Markdown table
(``scoreboard.md``), the JSON record and a figure (``scoreboard.png``: coverage deviation from
nominal with bands, and the TV distance, per task and estimator). All models of one task are
scored on the same trials (same ``seed``), so their numbers are directly comparable; their exact
posteriors are computed once (:class:`SharedExact`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .._checks import check_levels, check_positive_int, check_seed, check_threads
from .._io import atomic_write_text, jsonable, save_figure
from ..exact import ExactModel, grid_of_centres
from ..simulation import realizations
from .coverage_check import coverage
from .inputs import load_model, scored_experiments
from .truth import draw_truths

__all__ = ["score", "scoreboard", "SharedExact", "scored_experiments", "Scoreboard", "task_name", "SCOREBOARD_FILES"]

#: the files :meth:`Scoreboard.save` writes
SCOREBOARD_FILES = ("scoreboard.md", "scoreboard.json", "scoreboard.png")

#: random stream of the fit-timing vectors (distinct from the coverage trials' streams)
TIMING_STREAM = 4711


def task_name(experiments) -> str:
    """The scoreboard's task label: the experiment name, or ``global (A+B+...)`` for several."""
    names = [str(e) for e in experiments]
    return names[0] if len(names) == 1 else "global (" + "+".join(names) + ")"


def _fit_seconds(model, eset, fit_vectors: int, seed: int, n_samples: int, threads) -> list:
    yg = model.y_grid
    u, d, _ = draw_truths("continuous", fit_vectors + 1, seed + TIMING_STREAM, yg.ue4_range, yg.dm2_range, None)
    X = realizations(eset, u, d, n_per_point=1, seed=seed + TIMING_STREAM, threads=threads)[:, 0, :]
    out = []
    for i, x in enumerate(X):
        t = time.perf_counter()
        model.posterior(x, n_samples=n_samples, seed=i, threads=threads)
        out.append(time.perf_counter() - t)
    return out[1:]  # the first call pays one-off costs (caches, lazy imports)


class SharedExact(ExactModel):
    """An :class:`fcmlc.exact.ExactModel` that keeps the log posteriors it computed, keyed by the
    data vectors' bytes: the models of one task are scored on the same trials, so their exact
    posteriors are computed once (:func:`scoreboard`; 2000 trials x 10^4 cells hold 160 MB)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._memo = {}

    def log_posterior(self, x):
        X = np.ascontiguousarray(x, dtype=float)
        key = (X.shape, hashlib.sha256(X.tobytes()).hexdigest())
        if key not in self._memo:
            self._memo[key] = super().log_posterior(X)
        return self._memo[key]


def _shared_exact(model, exps, threads, shared: dict):
    """The task's :class:`SharedExact` from ``shared`` (created on first use), keyed by the
    experiments' definitions and the model's posterior cells."""
    yg = model.y_grid
    cells = grid_of_centres(yg.ue4_centres, yg.dm2_centres)
    key = (tuple(e.definition_hash for e in exps), cells)
    if key not in shared:
        shared[key] = SharedExact(exps, cells, threads=threads)
    return shared[key]


def _row_label(model) -> str:
    """The estimator's name; ``npe (fresh)`` for a model trained on fresh simulations (two npe
    rows of one task stay apart)."""
    name = getattr(model, "estimator", "fcmlc")
    fresh = "training_data" in ((getattr(model, "info", None) or {}).get("dataset") or {})
    return f"{name} (fresh)" if fresh else name


def score(model, trials: int = 2000, seed: int = 7, levels=(0.68, 0.90, 0.95), n_samples: int = 1000,
          threads=None, fit_vectors: int = 20, progress: bool = False, data_dir=None, shared_exact=None) -> dict:
    """One scoreboard row for ``model`` (a model directory or a loaded model of any estimator);
    ``data_dir``: where the data releases of its experiments are (:func:`scored_experiments`);
    ``shared_exact``: a dict in which the exact models are kept for the next call (same task,
    same trials: computed once), or None."""
    model = load_model(model)
    exps = scored_experiments(model, data_dir)
    trials = check_positive_int(trials, "trials")
    fit_vectors = check_positive_int(fit_vectors, "fit_vectors")
    seed = check_seed(seed)
    levels = check_levels(levels)
    threads = check_threads(threads)
    t = time.perf_counter()
    exact = None if shared_exact is None else _shared_exact(model, exps, threads, shared_exact)
    res = coverage(model, trials=trials, levels=levels, seed=seed, methods=("fcmlc", "exact"), n_samples=n_samples,
                   threads=threads, experiments=exps, progress=progress, exact=exact)
    check_seconds = time.perf_counter() - t
    fits = _fit_seconds(model, exps, fit_vectors, seed, n_samples, threads)
    fr, iv = res.fraction, res.interval
    dist = res.meta.get("fcmlc_vs_exact", {})
    training = (getattr(model, "info", None) or {}).get("training") or {}
    return {
        "task": task_name(model.experiments),
        "estimator": _row_label(model),
        "directory": (getattr(model, "info", None) or {}).get("directory"),
        "levels": list(levels),
        "coverage": [float(v) for v in fr["fcmlc"]],
        "coverage_band": [[float(a), float(b)] for a, b in iv["fcmlc"].T],
        "exact_coverage": [float(v) for v in fr["exact"]],
        "exact_coverage_band": [[float(a), float(b)] for a, b in iv["exact"].T],
        "failed_fits": int(res.failed.sum()) if res.failed is not None else 0,
        "total_variation": dist.get("total_variation"),
        "kl": dist.get("kl"),
        "iou": dist.get("iou_mean"),
        "train_seconds": training.get("total_seconds"),
        "machine_dependent": bool(training.get("machine_dependent", False)),
        "fit_seconds_median": float(np.median(fits)),
        "fit_seconds_max": float(np.max(fits)),
        "n_trials": trials, "seed": seed, "n_samples": n_samples, "threads": threads,
        "check_seconds": check_seconds,
    }


def scoreboard(models, trials: int = 2000, seed: int = 7, levels=(0.68, 0.90, 0.95), n_samples: int = 1000,
               threads=None, fit_vectors: int = 20, progress: bool = False, data_dir=None) -> "Scoreboard":
    """Score every model in ``models`` (directories or loaded models) on the same trials
    (``data_dir``: the folder of the data releases the models were trained with)."""
    models = list(models)
    if not models:
        raise ValueError("no models to score")
    rows, shared = [], {}
    for m in models:
        if progress:
            print(f"scoring {m}", flush=True)
        rows.append(score(m, trials, seed, levels, n_samples, threads, fit_vectors, progress, data_dir, shared))
    meta = {"trials": trials, "seed": seed, "levels": list(check_levels(levels)), "n_samples": n_samples,
            "data_dir": None if data_dir is None else str(data_dir),
            "threads": threads, "fit_vectors": fit_vectors, "fcmlc_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return Scoreboard(rows, meta)


def _fmt_s(s) -> str:
    if s is None:
        return "n/a"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


@dataclass
class Scoreboard:
    """Rows of :func:`score` (one per model) and the settings they were computed with."""

    rows: list
    meta: dict = field(default_factory=dict)

    def best(self) -> dict:
        """Per task, the estimator with the smallest mean total-variation distance from the exact posterior."""
        out = {}
        for r in self.rows:
            tv = (r.get("total_variation") or {}).get("mean")
            if tv is None:
                continue
            if r["task"] not in out or tv < out[r["task"]][1]:
                out[r["task"]] = (r["estimator"], tv)
        return {k: v[0] for k, v in out.items()}

    def to_markdown(self) -> str:
        levels = self.meta.get("levels") or (self.rows[0]["levels"] if self.rows else [])
        lv = " / ".join(f"{100 * L:g}" for L in levels)
        head = (f"| task | estimator | coverage at {lv} % (1-sigma band) | exact posterior's coverage | "
                f"TV from exact: mean (median, p90) | KL(exact‖model) mean, nats | IoU with exact HPD at {lv} % | "
                f"training | fit (median) |")
        lines = [head, "|" + "---|" * 9]
        for r in self.rows:
            cov = " / ".join(f"{c:.3f} [{b[0]:.3f}, {b[1]:.3f}]" for c, b in zip(r["coverage"], r["coverage_band"]))
            ex = " / ".join(f"{c:.3f}" for c in r["exact_coverage"])
            tv, kl, iou = r.get("total_variation") or {}, r.get("kl") or {}, r.get("iou") or {}
            tvs = f"**{tv['mean']:.3f}** ({tv['median']:.3f}, {tv['p90']:.3f})" if tv else "n/a"
            kls = f"{kl['mean']:.3f}" if kl else "n/a"
            ious = " / ".join(f"{v:.2f}" for v in iou.values()) if iou else "n/a"
            train = _fmt_s(r.get("train_seconds")) + (" (time budget)" if r.get("machine_dependent") else "")
            lines.append(f"| {r['task']} | {r['estimator']} | {cov} | {ex} | {tvs} | {kls} | {ious} | {train} | "
                         f"{1000 * r['fit_seconds_median']:.0f} ms |")
        m = self.meta
        lines += ["", f"{m.get('trials')} coverage trials per model (truths log-uniform over each model's grid, one "
                      f"simulated data vector each, seed {m.get('seed')}; the same trials for every model of a task), "
                      f"{m.get('n_samples')} MC-dropout samples per FCMLC/ensemble fit; fit time: median of "
                      f"{m.get('fit_vectors')} single-vector `posterior` calls on {m.get('threads') or 'all'} threads."]
        best = self.best()
        if best:
            lines += ["", "Closest to the exact posterior (mean TV): " +
                      "; ".join(f"{t}: **{e}**" for t, e in best.items()) + "."]
        return "\n".join(lines) + "\n"

    def plot(self, path=None):
        """Coverage minus nominal (with bands; grey: the exact posterior) and mean TV per task and estimator."""
        from matplotlib.figure import Figure

        tasks = list(dict.fromkeys(r["task"] for r in self.rows))
        ests = list(dict.fromkeys(r["estimator"] for r in self.rows))
        levels = self.meta.get("levels") or self.rows[0]["levels"]
        fig = Figure(figsize=(4.2 * (len(tasks) + 1), 3.9), layout="constrained")
        axes = fig.subplots(1, len(tasks) + 1, squeeze=False)
        axes = axes[0]
        colours = {e: f"C{i}" for i, e in enumerate(ests)}
        width = 0.8 / (len(ests) + 1)
        for ax, task in zip(axes, tasks):
            rows = [r for r in self.rows if r["task"] == task]
            for j, r in enumerate(rows):
                xs = np.arange(len(levels)) + (j - len(rows) / 2) * width
                c = np.array(r["coverage"]) - levels
                band = np.array(r["coverage_band"]).T - np.asarray(levels)
                ax.errorbar(xs, c, yerr=[c - band[0], band[1] - c], fmt="o", color=colours[r["estimator"]],
                            label=r["estimator"], capsize=3)
            ex = np.array(rows[0]["exact_coverage"]) - levels
            ax.plot(np.arange(len(levels)) + (len(rows) / 2) * width, ex, "s", color="0.5", label="exact posterior")
            ax.axhline(0.0, color="k", lw=0.8)
            ax.axhspan(-0.02, 0.02, color="0.9", zorder=0, label="±2 % target")
            ax.set_xticks(np.arange(len(levels)), [f"{100 * L:g} %" for L in levels])
            ax.set_xlabel("credible level")
            ax.set_ylabel("coverage − nominal")
            ax.set_title(task, fontsize=9)
        ax = axes[-1]
        labelled = set()
        for i, task in enumerate(tasks):
            rows = [r for r in self.rows if r["task"] == task]
            for j, r in enumerate(rows):
                tv = (r.get("total_variation") or {}).get("mean")
                if tv is not None:
                    ax.bar(i + (j - len(rows) / 2 + 0.5) * width, tv, width, color=colours[r["estimator"]],
                           label=None if r["estimator"] in labelled else r["estimator"])
                    labelled.add(r["estimator"])
        ax.axhline(0.1, color="k", ls="--", lw=0.8, label="target 0.1")
        ax.set_xticks(np.arange(len(tasks)), [t if len(t) < 14 else "global" for t in tasks])
        ax.set_ylabel("mean total-variation distance from exact")
        ax.set_title("distance from the exact posterior", fontsize=9)
        # one legend for all panels, below them (inside an axis it hid markers)
        entries = {}
        for a in axes:
            for h, lab in zip(*a.get_legend_handles_labels()):
                entries.setdefault(lab, h)
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=min(len(entries), 8),
                   fontsize=8)
        fig.suptitle(f"Estimators vs the exact posterior ({self.meta.get('trials')} trials per model, "
                     f"bands: 1σ binomial)", fontsize=10)
        if path is not None:
            save_figure(fig, path, dpi=120)
        return fig

    def to_dict(self) -> dict:
        return jsonable({"format": "fcmlc-scoreboard", "rows": self.rows, "meta": self.meta})

    def save(self, directory) -> Path:
        """Write :data:`SCOREBOARD_FILES` into ``directory`` (each file all or nothing)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "scoreboard.json", json.dumps(self.to_dict(), indent=2))
        atomic_write_text(d / "scoreboard.md", self.to_markdown())
        self.plot(d / "scoreboard.png")
        return d

    @classmethod
    def load(cls, path) -> "Scoreboard":
        p = Path(path)
        if p.is_dir():
            p = p / "scoreboard.json"
        d = json.loads(p.read_text())
        if d.get("format") != "fcmlc-scoreboard":
            raise ValueError(f"{p}: not a scoreboard file")
        return cls(d["rows"], d.get("meta", {}))
