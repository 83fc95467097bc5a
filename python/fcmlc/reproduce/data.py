"""The experiments of a task and the "observed" data vector each enters the Fig. 5 fit with:
a published ratio or a public release where one exists, else one seeded MOCK realization of the
no-oscillation model (see :mod:`fcmlc.reproduce`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import experiments as ex
from ..simulation import realizations
from .scales import TASKS

#: random-stream key (point id) of the mock data vectors: no grid point, coverage trial or example uses it
MOCK_STREAM_KEY = 2 ** 42

#: Experiments whose observed data come from a public release in ``data_dir``.
RELEASE_EXPERIMENTS = ("PROSPECT", "DANSS", "NEOS")


def default_data_dir() -> Path | None:
    """``<repo>/../shared/data`` (repo = the source checkout holding this package) or
    ``./../shared/data`` when either folder exists; else None."""
    here = Path(__file__).resolve()  # <repo>/python/fcmlc/reproduce/data.py
    cands = []
    if len(here.parents) >= 4:
        cands.append(here.parents[3].parent / "shared" / "data")
    cands.append(Path.cwd().parent / "shared" / "data")
    for c in cands:
        if c.is_dir():
            return c
    return None


def task_experiments(task: str, data_dir=None, seed: int = 0) -> tuple[list, list]:
    """Experiment objects of a task and, for each, its "observed" data vector and provenance.

    Returns (experiments, data) where data[i] = {"name", "x" (ndarray), "kind": "real" | "mock",
    "source": text, "model": text}. See the module docstring for which data are real; a mock
    block is one realization of the experiment's no-oscillation model under ``seed``.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)} (or 'all')")
    exps, data = [], []
    for name in TASKS[task]:
        note = None
        if data_dir is not None:
            try:
                e = ex.load(name, data_dir=data_dir)
            except FileNotFoundError as err:
                e = ex.load(name)
                note = f"no release found in {data_dir} ({err})"
        else:
            e = ex.load(name)
            if name in RELEASE_EXPERIMENTS:
                note = "no data directory given or found"
        from_release = data_dir is not None and note is None and name in RELEASE_EXPERIMENTS
        model = (f"official release in {data_dir}" if from_release else
                 "built-in model" + (" (approximate)" if getattr(e, "approximate", False) else ""))
        if e.observed is not None:
            x = np.asarray(e.observed, dtype=float).reshape(-1)
            src = (f"public data release ({data_dir})" if from_release else
                   "published ratios built into the model (docs/experiments.md)")
            data.append({"name": e.name, "x": x, "kind": "real", "source": src, "model": model})
        else:
            x = realizations(e, 0.0, 1.0, n_per_point=1, seed=int(seed), point_ids=[MOCK_STREAM_KEY])[0, 0]
            why = ("no public data release exists" if name == "STEREO" else
                   f"release not available: {note}" if note else "no observed data in the model")
            data.append({"name": e.name, "x": x, "kind": "mock",
                         "source": f"MOCK: one realization of the no-oscillation model, seed {int(seed)} ({why})",
                         "model": model})
        exps.append(e)
    return exps, data


def download_hint(data: list) -> str | None:
    """Where to get the public releases of the experiments in ``data`` that entered with mock
    data; None when none did."""
    missing = [d["name"] for d in data if d["kind"] == "mock" and d["name"] in RELEASE_EXPERIMENTS]
    if not missing:
        return None
    return (f"{', '.join(missing)} entered with mock data (a no-oscillation realization) because their public data releases were not "
            "found. To use real data, put the releases in one folder and pass it as --data-dir: "
            "'prospect-2020-oscillation/' (PROSPECT, PRD 103, 032001 (2021), arXiv:2006.11210, supplementary "
            "material), 'danss-2018/' (DANSS bottom/top ratio and inverse covariance, arXiv:1804.04046 as "
            "extracted in arXiv:2005.01756), 'neos-2017/' (NEOS/Daya Bay ratio, arXiv:1610.05134, digitised in "
            "arXiv:2201.05108).")
