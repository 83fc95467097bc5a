"""What `fcmlc reproduce` computes: the paper's tasks, the sizes of each ``--scale``, the levels,
truths and random-stream keys of the figures, and the checks of a task/scale request.

Light: only :mod:`fcmlc.physics` and :mod:`fcmlc._checks` (the CLI reads :data:`TASKS` and
:data:`SCALES` to build its options). The scales are described in :mod:`fcmlc.reproduce`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .._checks import UINT64_MAX, check_seed, check_threads
from ..physics import DM2_RANGE, Grid

#: The paper's three fitting tasks (Sec. II C) -> experiments, in data-vector order.
TASKS = {
    "stereo": ("STEREO",),
    "best": ("BEST",),
    "global": ("STEREO", "PROSPECT", "DANSS", "NEOS", "GALLIUM", "BEST"),
}
TASK_TITLES = {"stereo": "STEREO only", "best": "BEST only", "global": "global fit (all six experiments)"}

#: Levels of the Feldman-Cousins critical values and of the coverage check; regions drawn in figures.
FC_LEVELS = (0.68, 0.90, 0.95)
FIT_LEVELS = (0.90, 0.95)
#: Raster-scan level of the Asimov sensitivity curve drawn on Figs. 2 and 3.
SENSITIVITY_LEVEL = 0.90
#: Random-stream keys of the Fig. 3 example realizations (coverage trials use 2**40 + i).
EXAMPLE_KEY_OFFSET = 1 << 41

#: Signal-like truths of Fig. 3 per task, (sin^2 2theta, dm2 [eV^2]) -- inputs, chosen inside
#: each task's sensitivity (the report prints the Asimov Delta-chi2 of no oscillation there):
#: STEREO near its best sensitivity (1-3 eV^2); BEST/global at the gallium-anomaly scale of the
#: literature (BEST prefers sin^2 2theta ~ 0.4 above ~1 eV^2; docs/experiments.md).
SIGNAL_TRUTHS = {"stereo": (0.25, 1.5), "best": (0.4, 3.0), "global": (0.3, 2.0)}
#: Null-like truth of Fig. 3: the smallest |Ue4| of the parameter space, at this dm2 [eV^2].
NULL_DM2 = 1.0

#: torch threads while training. The networks are small (2-377 inputs, <= 150 units) and the
#: batches short (32-512): intra-op parallelism costs more than it gains, and with more threads
#: than free cores it collapses (measured on a shared 2-core machine: 3 ms per regressor step
#: with 1 thread, ~200 ms with 2). Inference steps use ``threads``.
TRAIN_TORCH_THREADS = 1


@dataclass(frozen=True)
class Scale:
    """Sizes of one ``--scale``: grid, realizations, training overlay (``fcmlc.models.train``
    config dict), FC toys, coverage trials, MC-dropout samples per fit and for the MSE maps."""

    name: str
    description: str
    grid_shape: tuple
    n_per_point: int
    train: dict
    fc_toys: int
    coverage_trials: int
    mc_samples: int
    mse_samples: int
    #: dm2 range of the grid in eV^2 (the paper's 0.01-10 unless ``reproduce(dm2_range=...)``)
    dm2_range: tuple = DM2_RANGE

    def grid(self) -> Grid:
        return Grid(dm2_range=tuple(self.dm2_range), shape=self.grid_shape)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid_shape"] = list(self.grid_shape)
        d["dm2_range"] = [float(v) for v in self.dm2_range]
        return d


SCALES = {
    "paper": Scale("paper", "the paper's settings (Sec. II A, Tables III/IV, Sec. II C): 101 x 101 grid x 50 "
                   "realizations, paper hyper-parameters without time limit, 1000 FC toys, 2000 coverage trials",
                   (101, 101), 50, {"hyperparameters": "paper"}, 1000, 2000, 1000, 100),
    "paper-fast": Scale("paper-fast", "the paper's data and evaluation sizes (101 x 101 grid x 50 realizations, KDE grid "
                        "50 x 50, posterior grid 100 x 100, 1000 MC-dropout samples, 1000 FC toys, 2000 coverage "
                        "trials) with the 'fast' training preset (same networks; regressor batch 256, early-"
                        "stopping patience 8, at most 200 epochs; flow batch 2048 with a cosine learning rate over "
                        "8 epochs)",
                        (101, 101), 50, {"hyperparameters": "fast"}, 1000, 2000, 1000, 100),
    "small": Scale("small", "one task in <= ~5 min on 2 CPU cores: 25 x 25 grid x 100 realizations, 'fast' preset "
                   "capped at 100 regressor epochs, flow batch 512 at a constant lr 5e-4 for 15 epochs (a 62k-"
                   "sample set gives too few steps at batch 2048), KDE grid 20 x 20, posterior grid 24 x 24, "
                   "200 FC toys, 300 coverage trials, 300 MC-dropout samples per fit (20 for the MSE maps)",
                   (25, 25), 100, {"hyperparameters": "fast",
                                   "regressor": {"max_epochs": 100},
                                   "flow": {"max_epochs": 15, "batch_size": 512, "lr": 5e-4, "lr_schedule": "constant"},
                                   "yhat_shape": [20, 20], "y_shape": [24, 24]}, 200, 300, 300, 20),
    "tiny": Scale("tiny", "for tests only (not meaningful physics): 13 x 13 grid x 20 realizations, at most 8 / 4 "
                  "epochs, KDE grid 12 x 12, posterior grid 14 x 14, 50 FC toys, 100 coverage trials",
                  (13, 13), 20, {"hyperparameters": "fast",
                                 "regressor": {"max_epochs": 8, "patience": 4},
                                 "flow": {"max_epochs": 4, "patience": 3, "batch_size": 512, "lr": 5e-4,
                                          "lr_schedule": "constant"},
                                 "yhat_shape": [12, 12], "y_shape": [14, 14]}, 50, 100, 100, 20),
}


def check_task_args(task, scale, seed, threads):
    """ValueError unless ``task`` is a task of :data:`TASKS` or 'all', ``scale`` a key of
    :data:`SCALES`, ``seed`` a seed below 2^64 - 1 (Feldman-Cousins toys use ``seed + 1``) and
    ``threads`` None or a positive integer."""
    if task not in TASKS and task != "all":
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)} or 'all'")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: expected one of {', '.join(SCALES)}")
    if check_seed(seed) == UINT64_MAX:
        raise ValueError(f"seed must be an integer in [0, 2^64 - 1) (Feldman-Cousins toys use seed + 1), got {seed!r}")
    check_threads(threads)
