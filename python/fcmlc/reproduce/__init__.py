"""`fcmlc reproduce`: the paper's three tasks end to end, with a Markdown report.

    simulate -> train -> Feldman-Cousins -> MSE maps (Fig. 2) -> example fits (Fig. 3)
      -> coverage (Fig. 4) -> fits on observed data (Fig. 5) -> REPORT.md (+ Table II timings)

for one of the paper's tasks (Sec. II C): ``stereo`` (STEREO only), ``best`` (BEST only) or
``global`` (STEREO, PROSPECT, DANSS, NEOS, GALLIUM, BEST), or ``all`` three in turn (one
sub-directory each and a top-level REPORT.md linking them).

Scales (:data:`SCALES`; every number is in the report and in ``steps/*.json``)
------------------------------------------------------------------------------
``paper``  the paper's settings: 101 x 101 grid x 50 realizations per point, training with the
           paper's hyper-parameters (Tables III/IV, no time limit), KDE grid 50 x 50, posterior
           grid 100 x 100, 1000 MC-dropout samples per fit, 1000 Feldman-Cousins toys per grid
           point, 2000 coverage trials. Hours to days on a CPU (the paper's training schedule,
           batch 32 with patience 50, dominates).
``paper-fast`` the same data, grids, samples, toys and trials as ``paper``, but training with
           the ``fast`` preset (:meth:`fcmlc.models.TrainConfig.fast`: same architectures, larger
           regressor batch, patience 8, flow batch 2048 with a cosine schedule over 8 epochs). The paper-scale
           run that fits in an afternoon on 2 CPU cores (``--task all`` 65-85 minutes, see
           ``benchmarks/RESULTS.md``).
``small``  one task in at most ~5 minutes on 2 CPU cores: 25 x 25 grid x 100 realizations
           (50 per point leave the flow too few examples for closed signal contours), the
           ``fast`` training preset with at most 100 regressor / 15 flow epochs, KDE grid
           20 x 20, posterior grid 24 x 24,
           300 MC-dropout samples per fit (20 for the MSE maps), 200 FC toys per grid point on
           the same 25 x 25 grid, 300 coverage trials.
``tiny``   for tests only (seconds, not meaningful physics): 13 x 13 grid x 20 realizations,
           at most 8 / 4 epochs, KDE grid 12 x 12, posterior grid 14 x 14, 100 MC
           samples (20 for the MSE maps), 50 FC toys, 100 coverage trials.

Training stops on epochs and patience at every scale, so the same seed gives the same model
however fast or busy the machine. A training overlay with a ``time_budget`` would make the model (and what follows)
depend on the machine's speed and load; the report then says so, with the stop reason of each
network. An interrupted training step resumes from its checkpoint (``work/model.partial``, see
:func:`fcmlc.models.train`) and ends with the same model.

Re-use and refusal
------------------
Each step writes its outputs atomically (temporary name, then rename) and then a record
``steps/<step>.json`` holding the step's *settings* (everything that determines its result:
task, experiments and their definition hashes, scale parameters, seeds, fcmlc version and the
digests of the steps it builds on), the wall time it took, and its numerical results. On a
later run a step is skipped when its record exists, its settings are identical and its
outputs exist. A record with *different* settings is refused with a ValueError naming the
differences (use another output directory, or delete that directory to recompute): results of
different settings are never mixed silently. A step whose record is missing (interrupted run)
is recomputed; the simulation and Feldman-Cousins files resume where they stopped.
``threads`` is not a setting: results do not depend on it (training always runs on
``TRAIN_TORCH_THREADS`` torch threads).

Observed data (Fig. 5): BEST and GALLIUM use the published ratios built into their models;
PROSPECT, DANSS and NEOS use their public releases from ``data_dir`` (default
``<repo>/../shared/data`` when that folder exists), and then the models built from those
releases are also the ones simulated and trained on; without a release they enter with the
built-in model and mock data. STEREO has no public data release: its "observed" block is always
mock data. Mock data are one seeded realization of the no-oscillation model (random-stream key
``2**42``, the run's seed), labelled MOCK in every output: a noiseless Asimov vector would be
far "too clean" (chi2 = 0 where realizations give about the number of bins) and unlike any
training sample.

Seeds: realizations, training and MC-dropout masks use ``seed``; Feldman-Cousins toys use
``seed + 1`` (so they are not the training realizations); the example realizations of Fig. 3
use random-stream keys ``2**41 + i``, which no grid point or coverage trial uses.

Layout, in data-flow order: :mod:`.scales` (tasks, scales, levels, argument checks),
:mod:`.data` (a task's experiments and observed data), :mod:`.fits` (sensitivity, one
FCMLC/Wilks/FC comparison), :mod:`.figures` (Figs. 2-5), :mod:`.report` (REPORT.md),
:mod:`.cache` (step records: reuse, refusal), :mod:`.steps` (each step's settings and
computation), :mod:`.run` (:func:`reproduce`).
"""
from __future__ import annotations

import importlib

from .._checks import UINT64_MAX
from .scales import (EXAMPLE_KEY_OFFSET, FC_LEVELS, FIT_LEVELS, NULL_DM2, SCALES, SENSITIVITY_LEVEL, SIGNAL_TRUTHS,
                     TASK_TITLES, TASKS, TRAIN_TORCH_THREADS, Scale)

__all__ = ["TASKS", "SCALES", "Scale", "reproduce", "default_data_dir", "task_experiments", "PAPER_TABLE_II"]

#: Names loaded with their module on first use: the pipeline imports scipy, h5py and the whole
#: of fcmlc, while the CLI imports this package at start-up only for TASKS and SCALES.
_LAZY = {"reproduce": "run", "default_data_dir": "data", "task_experiments": "data", "MOCK_STREAM_KEY": "data",
         "PAPER_TABLE_II": "report", "STEP_NAMES": "steps", "STEP_TITLES": "steps"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
