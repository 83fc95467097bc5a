"""Argument helpers shared by the `fcmlc` commands: the grid, the dm2 range, experiment lists,
confidence levels and the data-vector options. They parse text; the checks are the library's."""
from __future__ import annotations

import argparse
from pathlib import Path

from .._checks import check_levels
from ..physics import Grid


#: The files of one fit (`fcmlc fit`, `fcmlc exact`), written all together or not at all
#: (diagnostics.json unless --no-diagnostics).
POSTERIOR_OUTPUTS = ("posterior.npz", "posterior.png", "summary.json", "diagnostics.json")

def grid_arg(text: str) -> Grid:
    """argparse type of --grid: 'N' or 'NxM' (|Ue4| x dm2 points) -> a Grid of that shape."""
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


def dm2_range_arg(text: str) -> tuple:
    """argparse type of --dm2-range: 'LO:HI' (or 'LO,HI') in eV^2 -> (lo, hi) with 0 < lo < hi."""
    try:
        lo, hi = (float(t) for t in text.replace(",", ":").split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dm2-range takes LO:HI in eV^2 (e.g. 0.01:100), got {text!r}") from None
    if not (0 < lo < hi < float("inf")):
        raise argparse.ArgumentTypeError(f"--dm2-range needs 0 < LO < HI, got {text!r}")
    return (lo, hi)


def add_dm2_range_arg(p: argparse.ArgumentParser) -> None:
    """--dm2-range: the dm2 range of the grid in eV^2."""
    p.add_argument("--dm2-range", type=dm2_range_arg, default=None, metavar="LO:HI",
                   help="dm2 range of the grid in eV^2 (default 0.01:10, the paper's; a global fit whose best "
                        "point sits at 10 eV^2 may need e.g. 0.01:100)")


def add_grid_args(p: argparse.ArgumentParser) -> None:
    """--grid and --dm2-range: the log grid of a command (read back with :func:`grid_from_args`)."""
    p.add_argument("--grid", type=grid_arg, default=None, metavar="N|NxM",
                   help="log grid, N x N or NxM (|Ue4| x dm2) points (default 101, the paper's)")
    add_dm2_range_arg(p)


#: Bytes per grid point every grid command needs at least (the point tables and a few maps):
#: a grid beyond the memory is refused before any work (OutOfMemoryError, exit status 5).
MIN_BYTES_PER_POINT = 64


def grid_from_args(args) -> Grid:
    """The Grid of --grid / --dm2-range (the paper's 101 x 101 over its ranges by default),
    refused when its tables alone would not fit in memory."""
    g = getattr(args, "grid", None) or Grid.paper()
    rng = getattr(args, "dm2_range", None)
    g = g if rng is None else Grid(g.ue4_range, tuple(rng), g.shape)
    g.require_memory(MIN_BYTES_PER_POINT, "the grid's tables alone")
    return g


def add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    """--overwrite of a command writing a result directory."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of an earlier run in the output directory (else refused)")


def add_experiments_arg(p: argparse.ArgumentParser) -> None:
    """--experiments (required): read back with :func:`parse_experiments`."""
    p.add_argument("--experiments", required=True,
                   help="comma-separated experiment names (see `fcmlc experiments`) or TOML model files")


def add_common_generation_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `simulate` and `fc`."""
    add_experiments_arg(p)
    add_grid_args(p)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--chunk-points", type=int, default=None, help="grid points per written chunk")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:port) to run chunks on a cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_experiments(text: str) -> list:
    """Names and/or paths to TOML model files -> list of experiment names/objects."""
    from .. import experiments as ex  # scipy: loaded by the commands only, so `fcmlc --help` stays fast

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


def parse_levels(text: str) -> tuple:
    """'0.68,0.9,0.95' -> (0.68, 0.9, 0.95), checked (and sorted) by :func:`fcmlc._checks.check_levels`."""
    out = []
    for tok in (t.strip() for t in str(text).split(",")):
        if not tok:
            continue
        try:
            out.append(float(tok))
        except ValueError:
            raise ValueError(f"--levels: {tok!r} is not a number") from None
    return check_levels(out, "--levels")


def add_data_source_args(p: argparse.ArgumentParser) -> None:
    """The data-vector options shared by `fit`, `compare` and `wilks`: --data | --observed | --asimov,
    and --seed (read back with :func:`data_source_options`)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help="data vector: text file, .npy or .npz (one array)")
    src.add_argument("--observed", action="store_true", help="the experiments' published data")
    src.add_argument("--asimov", nargs=2, type=float, metavar=("UE4", "DM2"),
                     help="the expectation at (|Ue4|, dm2 [eV^2]); with --seed, one random realization there")
    p.add_argument("--seed", type=int, default=None,
                   help="with --asimov: draw one realization with this seed instead of the exact expectation")


def add_model_arg(p: argparse.ArgumentParser) -> None:
    """The positional model directory of `fit`, `coverage` and `compare`."""
    p.add_argument("model", help="model directory written by `fcmlc train`")


def add_mc_dropout_args(p: argparse.ArgumentParser) -> None:
    """--samples and --mc-seed: the MC-dropout samples of one FCMLC fit (`fit`, `compare`)."""
    p.add_argument("--samples", type=int, default=1000, help="MC-dropout samples m (default 1000)")
    p.add_argument("--mc-seed", type=int, default=0, help="seed of the dropout masks (default 0)")


def add_data_dir_arg(p: argparse.ArgumentParser) -> None:
    """--data-dir: where the experiments of --observed / --asimov find official data releases."""
    p.add_argument("--data-dir", default=None,
                   help="folder with official data releases, passed to fcmlc.experiments.load for --observed/--asimov")


def data_source_options(args) -> dict:
    """The keyword arguments of :func:`fcmlc.data_vectors.data_source` from :func:`add_data_source_args`' options."""
    return {"data": args.data, "observed": args.observed,
            "asimov": None if args.asimov is None else tuple(args.asimov), "seed": args.seed}


def add_diagnostics_args(p: argparse.ArgumentParser) -> None:
    """The options of the fit diagnostics (`fit`, `exact`): --no-diagnostics, --diagnostic-toys,
    --diagnostic-seed, --groups (read back with :func:`diagnostics_options`)."""
    g = p.add_argument_group("diagnostics (docs/diagnostics.md)")
    g.add_argument("--no-diagnostics", action="store_true",
                   help="skip the diagnostics (goodness of fit, distance from the simulations, compatibility, "
                        "agreement with the exact posterior, grid edges)")
    g.add_argument("--diagnostic-toys", type=int, default=300, metavar="N",
                   help="realizations at the chi2 best fit for the diagnostics' p-values (default 300)")
    g.add_argument("--diagnostic-seed", type=int, default=0, metavar="S", help="their seed (default 0)")
    g.add_argument("--groups", default="default", metavar="'A,B;C,D'",
                   help="experiment groups for the compatibility test (default: reactors vs gallium+BEST when "
                        "both are fitted)")


def diagnostics_options(args) -> dict:
    """The keyword arguments of :func:`fcmlc.diagnostics.diagnose` from :func:`add_diagnostics_args`."""
    return {"n_toys": args.diagnostic_toys, "seed": args.diagnostic_seed, "groups": args.groups}
