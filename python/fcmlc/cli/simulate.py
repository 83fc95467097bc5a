"""`fcmlc simulate` and `fcmlc experiments`: realizations on the grid, and the built-in models."""
from __future__ import annotations

import time

from .._resumable import deferred_interrupts
from ..dataset import open_dataset
from ..simulation import simulate
from ._args import add_common_generation_args, grid_from_args, parse_experiments


def register(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="generate realizations of experiments on the parameter grid (HDF5)")
    add_common_generation_args(p)
    p.add_argument("--per-point", type=int, default=50, help="realizations per grid point (default 50)")
    p.add_argument("-o", "--output", required=True,
                   help="output HDF5 file (resumed if it exists: rerun the same command after Ctrl-C, kill or a "
                        "full disk)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file made with other settings")
    p.add_argument("--float64", action="store_true", help="store float64 (default float32)")
    p.set_defaults(func=cmd_simulate)

    p = subparsers.add_parser("experiments", help="list the built-in experiment models")
    p.set_defaults(func=cmd_experiments)


def cmd_simulate(args) -> int:
    grid = grid_from_args(args)
    t0 = time.perf_counter()
    with deferred_interrupts():  # Ctrl-C stops between chunks (the file is resumed by the same command)
        path = simulate(parse_experiments(args.experiments), grid, n_per_point=args.per_point, seed=args.seed,
                        out=args.output, threads=args.threads, chunk_points=args.chunk_points,
                        scheduler=args.scheduler, progress=not args.no_progress, overwrite=args.overwrite,
                        dtype="float64" if args.float64 else "float32")
        with open_dataset(path) as d:
            text = (f"{path}: {d.n_samples} realizations ({d.n_points} points x {d.n_per_point}) of "
                    f"{', '.join(d.experiments)} ({d.n_features} bins) in {time.perf_counter() - t0:.1f} s")
    print(text)
    return 0


def cmd_experiments(args) -> int:
    from .. import experiments as ex  # scipy: loaded by the command only, so `fcmlc --help` stays fast

    for name in ex.available():
        e = ex.load(name)
        flag = " (approximate model)" if e.approximate else ""
        obs = "observed data" if e.observed is not None else "no observed data"
        print(f"{name:10s} {e.n_bins:4d} bins, {e.kind}, {obs}{flag}: {e.description}")
    return 0
