"""The `fcmlc` command line: `fcmlc <command> --help` for each command."""
from __future__ import annotations

import argparse
import sys
import time

from . import __version__


def _grid_arg(text: str):
    from .physics import Grid

    parts = text.lower().split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--grid takes N or NxM (|Ue4| x dm2 points), got {text!r}") from None
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or min(shape) < 2:
        raise argparse.ArgumentTypeError(f"--grid needs at least 2 points per axis, got {text!r}")
    return Grid(shape=shape)


def _dm2_range_arg(text: str):
    try:
        lo, hi = (float(t) for t in text.replace(",", ":").split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dm2-range takes LO:HI in eV^2 (e.g. 0.01:100), got {text!r}") from None
    if not (0 < lo < hi < float("inf")):
        raise argparse.ArgumentTypeError(f"--dm2-range needs 0 < LO < HI, got {text!r}")
    return (lo, hi)


def add_grid_args(p: argparse.ArgumentParser) -> None:
    """--grid and --dm2-range: the log grid of a command (read back with :func:`grid_from_args`)."""
    p.add_argument("--grid", type=_grid_arg, default=None, metavar="N|NxM",
                   help="log grid, N x N or NxM (|Ue4| x dm2) points (default 101, the paper's)")
    p.add_argument("--dm2-range", type=_dm2_range_arg, default=None, metavar="LO:HI",
                   help="dm2 range of the grid in eV^2 (default 0.01:10, the paper's; a global fit whose best "
                        "point sits at 10 eV^2 may need e.g. 0.01:100)")


def grid_from_args(args):
    """The Grid of --grid / --dm2-range (the paper's 101 x 101 over its ranges by default)."""
    from .physics import Grid

    g = getattr(args, "grid", None) or Grid.paper()
    rng = getattr(args, "dm2_range", None)
    return g if rng is None else Grid(g.ue4_range, tuple(rng), g.shape)


def add_common_generation_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `simulate` and `fc`."""
    p.add_argument("--experiments", required=True,
                   help="comma-separated experiment names (see `fcmlc experiments`) or TOML model files")
    add_grid_args(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--chunk-points", type=int, default=None, help="grid points per written chunk")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:port) to run chunks on a cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_experiments(text: str):
    """Names and/or paths to TOML model files -> list of experiment names/objects."""
    from pathlib import Path

    from . import experiments as ex

    items = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if tok.endswith(".toml") or Path(tok).is_file():
            items.append(ex.from_toml(tok))
        else:
            items.append(tok)
    if not items:
        raise ValueError("--experiments is empty")
    return items


def _cmd_simulate(args) -> int:
    from .simulation import simulate

    grid = grid_from_args(args)
    t0 = time.perf_counter()
    path = simulate(parse_experiments(args.experiments), grid, n_per_point=args.per_point, seed=args.seed,
                    out=args.output, threads=args.threads, chunk_points=args.chunk_points, scheduler=args.scheduler,
                    progress=not args.no_progress, overwrite=args.overwrite,
                    dtype="float64" if args.float64 else "float32")
    from .dataset import open_dataset

    with open_dataset(path) as d:
        print(f"{path}: {d.n_samples} realizations ({d.n_points} points x {d.n_per_point}) of "
              f"{', '.join(d.experiments)} ({d.n_features} bins) in {time.perf_counter() - t0:.1f} s")
    return 0


def _cmd_experiments(args) -> int:
    from . import experiments as ex

    for name in ex.available():
        e = ex.load(name)
        flag = " (approximate model)" if e.approximate else ""
        obs = "observed data" if e.observed is not None else "no observed data"
        print(f"{name:10s} {e.n_bins:4d} bins, {e.kind}, {obs}{flag}: {e.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fcmlc", description="Sterile-neutrino global fits: FCMLC (simulation-"
                                     "based inference), Wilks and Feldman-Cousins on the same grid.")
    parser.add_argument("--version", action="version", version=f"fcmlc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("simulate", help="generate realizations of experiments on the parameter grid (HDF5)")
    add_common_generation_args(p)
    p.add_argument("--per-point", type=int, default=50, help="realizations per grid point (default 50)")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file (resumed if it exists)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file made with other settings")
    p.add_argument("--float64", action="store_true", help="store float64 (default float32)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("experiments", help="list the built-in experiment models")
    p.set_defaults(func=_cmd_experiments)

    from . import _cli_frequentist, _cli_inference, _cli_reproduce, _cli_validation

    _cli_inference.register(sub)
    _cli_frequentist.register(sub)
    _cli_validation.register(sub)
    _cli_reproduce.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as e:
        print(f"fcmlc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
