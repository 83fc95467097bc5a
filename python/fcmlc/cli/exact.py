"""`fcmlc exact`: the exact posterior on the grid, with the fit diagnostics."""
from __future__ import annotations

import time

from .._checks import check_threads
from .._io import OutputDir, atomic_write_json
from ..data_vectors import data_source, experiment_set_asimov
from ._args import (POSTERIOR_OUTPUTS, add_data_dir_arg, add_data_source_args, add_diagnostics_args,
                    add_experiments_arg, add_grid_args, add_overwrite_arg, data_source_options, diagnostics_options,
                    grid_from_args, parse_experiments)

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "exact", help="exact posterior on the grid from the simulator's likelihood (the reference for FCMLC)",
        description="Compute the posterior over (|Ue4|, dm2) directly from the experiments' likelihood "
                    "(shape-only experiments by the shape of each normalisation group, normalisations with a prior "
                    "integrated out, pulls linearised; docs/diagnostics.md) for one data vector, "
                    "with the fit diagnostics. Writes posterior.npz, posterior.png, summary.json and "
                    "diagnostics.json to the output directory.")
    add_experiments_arg(p)
    add_data_source_args(p)
    p.add_argument("-o", "--output", required=True, help="result directory")
    add_overwrite_arg(p)
    add_grid_args(p)
    p.add_argument("--prior", choices=("log-uniform", "uniform"), default="log-uniform",
                   help="prior: uniform in log10|Ue4| and log10 dm2 (default, the paper's) or in |Ue4| and dm2")
    p.add_argument("--threads", type=int, default=None, help="threads for the chi2 scans (default: all)")
    add_data_dir_arg(p)
    add_diagnostics_args(p)
    p.set_defaults(func=cmd_exact)


def cmd_exact(args) -> int:
    check_threads(args.threads, "--threads")
    grid = grid_from_args(args)
    out = OutputDir(args.output, POSTERIOR_OUTPUTS, args.overwrite)
    # scipy and the experiment models: loaded by the command only, so `fcmlc --help` stays fast
    from .. import experiments as ex
    from ..diagnostics import diagnose
    from ..exact import ExactModel

    exps = [ex.load(e, data_dir=args.data_dir) if isinstance(e, str) else e for e in parse_experiments(args.experiments)]
    t0 = time.perf_counter()
    model = ExactModel(exps, grid, prior=args.prior, threads=args.threads)
    setup = time.perf_counter() - t0

    src = data_source(model.n_bins, lambda: ex.combine(model.experiments), experiment_set_asimov,
                      **data_source_options(args))
    t0 = time.perf_counter()
    post = model.posterior(src.x, meta=src.meta)
    dt = time.perf_counter() - t0
    summary = dict(src.meta)
    summary.update({"method": "exact", "experiments": list(model.names), "prior": model.prior,
                    "grid": grid.to_dict(), "setup_seconds": setup, "seconds": dt, "posterior": post.summary()})
    diag = None
    if not args.no_diagnostics:
        diag = diagnose(model.experiments, src.x, model=model, threads=args.threads, **diagnostics_options(args))
        summary["diagnostics"] = diag.status
    with out.writing() as stage:  # every file, or none
        post.to_npz(stage / "posterior.npz")
        if diag is not None:
            atomic_write_json(stage / "diagnostics.json", diag.to_dict())
        atomic_write_json(stage / "summary.json", summary)
        post.save_plot(stage / "posterior.png", truth=src.truth, title=f"Exact posterior: {', '.join(model.names)}")
    b = summary["posterior"]["best_point"]
    print(f"exact posterior of {', '.join(model.names)} ({src.description}; {grid.n_ue4} x {grid.n_dm2} grid, "
          f"{args.prior} prior; setup {setup:.1f} s, fit {dt * 1e3:.0f} ms) -> {out.path}")
    print(f"  best point: |Ue4| = {b['ue4']:.4g}, sin^2(2 theta) = {b['sin2_2theta']:.4g}, dm2 = {b['dm2']:.4g} eV^2")
    for lv, r in summary["posterior"]["levels"].items():
        print(f"  {100 * float(lv):g}% credible region: {r['n_cells']} cells ({100 * r['area_fraction']:.1f}% of the "
              f"plane); no oscillation {'excluded' if r['excludes_null'] else 'not excluded'}")
    if diag is not None:
        print(diag)
    return 0
