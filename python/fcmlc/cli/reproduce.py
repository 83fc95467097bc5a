"""`fcmlc reproduce`: the paper's tasks end to end with a Markdown report."""
from __future__ import annotations

import time

from .._checks import check_seed, check_threads
from .._io import OutputDir
from ..reproduce import SCALES, TASKS
from ._args import add_dm2_range_arg


def register(subparsers) -> None:
    scales = "; ".join(f"'{s.name}': {s.description}" for s in SCALES.values())
    p = subparsers.add_parser(
        "reproduce", help="run simulate -> train -> FC -> validation for the paper's tasks and write a report",
        description="Run the FCMLC paper's pipeline for one task (STEREO only, BEST only, or the global fit of "
                    "STEREO, PROSPECT, DANSS, NEOS, GALLIUM and BEST) or all three: simulate realizations, train "
                    "the FCMLC model, compute Feldman-Cousins critical values, binned MSE maps (Fig. 2), example "
                    "fits (Fig. 3), coverage (Fig. 4), fits on observed data (Fig. 5), and write REPORT.md with "
                    "the figures and a Table II of wall times. Finished steps in the output directory are reused "
                    "when their recorded settings match; a step recorded with different settings is refused "
                    f"(use another -o). Scales: {scales}.")
    p.add_argument("--task", required=True, choices=tuple(TASKS) + ("all",),
                   help="stereo, best, global, or all (one sub-directory per task)")
    p.add_argument("--scale", default="small", choices=tuple(SCALES),
                   help="small (default; one task in ~5 min on 2 cores), paper (the paper's sizes and training "
                        "schedule: hours), paper-fast (the paper's sizes with the fast training preset: --task all "
                        "in about 30 min on 2 cores, almost half of it the global fit's Feldman-Cousins map), tiny "
                        "(for tests only)")
    p.add_argument("-o", "--output", required=True, help="report directory (created; finished steps reused)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the public data releases (prospect-2020-oscillation/, danss-2018/, "
                        "neos-2017/); default <repo>/../shared/data when it exists")
    add_dm2_range_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no step banners or progress bars")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from ..reproduce import reproduce  # the whole pipeline (scipy, torch): loaded by the command only

    check_threads(args.threads, "--threads")
    check_seed(args.seed, "--seed")
    OutputDir(args.output, ())  # a directory (or none yet) that can be written: checked before any step runs
    t0 = time.perf_counter()
    path = reproduce(args.task, args.scale, args.output, threads=args.threads, seed=args.seed,
                     data_dir=args.data_dir, progress=not args.no_progress, dm2_range=args.dm2_range)
    print(f"{path} written ({time.perf_counter() - t0:.1f} s)")
    return 0
