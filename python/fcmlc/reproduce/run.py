"""`reproduce()`: check the request, then run the steps of each task through the step cache and
return the REPORT.md written (for ``task='all'``, the index linking the three tasks' reports)."""
from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from ..physics import Grid
from .cache import StepCache, banner, recorded_seconds
from .data import default_data_dir
from .report import write_index
from .scales import SCALES, TASK_TITLES, TASKS, Scale, check_task_args
from .steps import PIPELINE, STEP_NAMES, TaskRun


def reproduce(task: str, scale: str = "small", out="report", threads=None, seed: int = 0, data_dir=None,
              progress: bool = True, dm2_range=None) -> Path:
    """Run the pipeline of ``task`` ('stereo', 'best', 'global' or 'all') at ``scale`` ('small',
    'paper', 'paper-fast' or the test-only 'tiny') into the directory ``out`` and write ``out/REPORT.md`` with
    its figures. Returns the path of REPORT.md.

    Finished steps in ``out`` are reused when their recorded settings match; a step recorded
    with other settings is refused (ValueError). ``data_dir``: folder with the public releases
    (default :func:`default_data_dir`; a given folder must exist). ``threads``: CPU threads of
    the kernels and torch (default: all). ``progress``: step banners and progress bars on stderr.
    ``dm2_range``: (lo, hi) in eV^2 of the grid (default the paper's 0.01-10), e.g. (0.01, 100) for
    a global fit whose best point sits at the paper grid's upper edge.
    """
    check_task_args(task, scale, seed, threads)
    sc = SCALES[scale]
    if dm2_range is not None:
        lo, hi = (float(v) for v in dm2_range)
        Grid(dm2_range=(lo, hi), shape=(2, 2))  # validates the range with Grid's message
        sc = replace(sc, dm2_range=(lo, hi))
    seed = int(seed)
    threads = None if threads is None else int(threads)
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise ValueError(f"--data-dir {str(data_dir)!r} is not a directory")
    else:
        data_dir = default_data_dir()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    if task == "all":
        reports = {}
        for t in TASKS:
            banner(f"task {t} ({TASK_TITLES[t]}) -> {out / t}", progress)
            report = run_task(t, sc, out / t, threads, seed, data_dir, progress)
            reports[t] = (report, recorded_seconds(out / t, STEP_NAMES))
        return write_index(out, reports, sc, seed)
    return run_task(task, sc, out, threads, seed, data_dir, progress)


def run_task(task: str, sc: Scale, out: Path, threads, seed: int, data_dir, progress: bool) -> Path:
    """The steps of one task in ``out`` (each reused, refused or run by the step cache); returns
    the path of its REPORT.md."""
    run = TaskRun(task, sc, out, threads, seed, data_dir, progress)
    cache = StepCache(out, progress)
    for i, step in enumerate(PIPELINE, 1):
        recs = cache.records
        cache.run(step.name, step.title, i, len(PIPELINE), step.settings(run, recs), step.outputs,
                  partial(step.compute, run, recs))
    return out / "REPORT.md"
