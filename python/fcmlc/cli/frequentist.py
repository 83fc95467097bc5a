"""`fcmlc fc` and `fcmlc wilks`: the frequentist commands."""
from __future__ import annotations

import time

import numpy as np

from .. import frequentist as fq
from .._checks import check_positive_int, check_threads
from .._io import OutputDir, atomic_path, atomic_write_json, check_not_dir, check_writable, save_figure
from .._resumable import deferred_interrupts
from ..data_vectors import data_source
from ..plotting import (LEVEL_LINESTYLES, RASTER_CAPTION, draw_lines, draw_mask, frame_drawn, level_label,
                        level_line_styles, setup_oscillation_axes, to_xaxis)
from ._args import (add_common_generation_args, add_data_source_args, add_experiments_arg, add_grid_args,
                    add_overwrite_arg, data_source_options, grid_from_args, parse_experiments, parse_levels)

#: Levels of the Wilks regions written by `fcmlc wilks` (1 sigma in 2-D, 90, 95, 99 %).
WILKS_CLI_LEVELS = (0.6827, 0.90, 0.95, 0.99)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fc", help="Feldman-Cousins critical values at every grid point (HDF5, resumable)",
        description="Generate --toys pseudo-experiments at every grid point (toy t at point p is realization t of "
                    "point p in `fcmlc simulate` with the same seed), scan each over the grid and store the "
                    "critical Delta-chi2 at each level. The file is written chunk by chunk: rerun the same command "
                    "after an interruption to resume; the result is identical for any --threads, --chunk-points or "
                    "Dask scheduler.")
    add_common_generation_args(p)
    p.add_argument("--toys", type=int, default=1000, help="pseudo-experiments per grid point (default 1000)")
    p.add_argument("--levels", default="0.68,0.9,0.95",
                   help="comma-separated confidence levels in (0, 1) (default 0.68,0.9,0.95)")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file (resumed if it exists)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file made with other settings")
    p.set_defaults(func=cmd_fc)

    p = subparsers.add_parser(
        "wilks", help="chi2 scan of one data vector: Delta-chi2 map, Wilks regions and the 90%% raster limit",
        description="Scan the chi2 of one data vector over the grid (free normalisations and pulls profiled), and "
                    "write delta_chi2.npz (maps, Wilks regions at 68.27/90/95/99 % for 2 dof, 90 % raster "
                    "limit per dm2), wilks.png and summary.json to the output directory.")
    add_experiments_arg(p)
    add_grid_args(p)
    add_data_source_args(p)
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--fc", default=None, metavar="FILE",
                   help="also draw the Feldman-Cousins regions from a file written by `fcmlc fc` (same grid)")
    p.add_argument("-o", "--output", required=True, help="result directory")
    add_overwrite_arg(p)
    p.set_defaults(func=cmd_wilks)


# ------------------------------------------------------------------------------------------- fc

def cmd_fc(args) -> int:
    check_positive_int(args.toys, "--toys")
    check_threads(args.threads, "--threads")
    levels = parse_levels(args.levels)
    grid = grid_from_args(args)
    out = check_not_dir(args.output)
    if not out.exists():  # an existing file is checked by feldman_cousins (resumed, or refused)
        check_writable(out)
    with deferred_interrupts():  # Ctrl-C stops between chunks (the file is resumed by the same command)
        model = fq.Chi2Model(parse_experiments(args.experiments), grid)
        t0 = time.perf_counter()
        res = fq.feldman_cousins(model, n_toys=args.toys, seed=args.seed, levels=levels, out=out,
                                 threads=args.threads, chunk_points=args.chunk_points, scheduler=args.scheduler,
                                 progress=not args.no_progress, overwrite=args.overwrite)
    dt = time.perf_counter() - t0
    n_done = int(res.done.sum())
    print(f"{args.output}: Feldman-Cousins critical values of {', '.join(res.experiments)} on a "
          f"{grid.n_ue4} x {grid.n_dm2} grid, {res.n_toys} toys/point, seed {res.seed}: "
          f"{n_done}/{grid.n_points} points, {dt:.1f} s this run")
    for L, c in res.critical_summary().items():
        print(f"  {100 * L:g}%: critical Delta-chi2 median {c['median']:.3f} (range {c['min']:.3f}-{c['max']:.3f});"
              f" Wilks 2 dof {c['wilks_2dof']:.3f}")
    return 0


# ---------------------------------------------------------------------------------------- wilks

#: The files `fcmlc wilks` writes to its output directory.
WILKS_OUTPUTS = ("delta_chi2.npz", "summary.json", "wilks.png")


def cmd_wilks(args) -> int:
    check_threads(args.threads, "--threads")
    grid = grid_from_args(args)
    out = OutputDir(args.output, WILKS_OUTPUTS, args.overwrite)
    fc = None
    if args.fc is not None:
        fc = fq.FCResult.load(args.fc)
    model = fq.Chi2Model(parse_experiments(args.experiments), grid)
    if fc is not None:
        fq.check_compatible(fc, model)
    src = data_source(model.n_bins, lambda: model,
                      lambda m, ue4, dm2, seed: fq.asimov_data(m, ue4, dm2, seed=seed), **data_source_options(args))
    x, meta, truth = src.x, src.meta, src.truth
    t0 = time.perf_counter()
    scan = fq.chi2_scan(model, x, threads=args.threads)
    dt = time.perf_counter() - t0
    summary = fq.summary(model, scan, x, meta, WILKS_CLI_LEVELS, dt, fc)
    delta = scan.delta_chi2
    regions = scan.wilks(WILKS_CLI_LEVELS)
    raster = scan.raster(0.90)
    arrays = {"chi2": scan.chi2, "delta_chi2": delta, "ue4": grid.ue4, "dm2": grid.dm2,
              "sin2_2theta": grid.sin2_2theta, "x": x, "chi2_min": np.float64(scan.min),
              "best_index": np.int64(scan.best_index), "levels": np.asarray(WILKS_CLI_LEVELS),
              "raster_90_ue4": raster}
    for L, m in regions.items():
        arrays[f"wilks_{L:g}"] = m
    if fc is not None:
        for L in fc.levels:
            arrays[f"fc_{L:g}"] = fc.region(delta, L)
    with out.writing() as stage:  # all three files, or none
        with atomic_path(stage / "delta_chi2.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        atomic_write_json(stage / "summary.json", summary)
        _plot(stage / "wilks.png", grid, regions, raster, scan.best_point, truth, model.names, fc, delta)

    ub, db = scan.best_point
    print(f"Wilks scan of {', '.join(model.names)} ({meta['input']}, {grid.n_ue4} x {grid.n_dm2} grid, "
          f"{dt * 1e3:.1f} ms) -> {out.path}")
    print(f"  best fit: |Ue4| = {ub:.4g}, sin^2(2 theta) = {scan.best_sin2_2theta:.4g}, dm2 = {db:.4g} eV^2")
    p = summary["gof_p_value"]
    print(f"  chi2_min / ndof = {scan.min:.2f} / {scan.ndof}" + (f" (p = {p:.3g})" if p is not None else ""))
    thr95 = fq.wilks_threshold(0.95, 2)
    print(f"  no oscillation: Delta-chi2 = {summary['delta_chi2_null']:.2f}; "
          f"{'excluded' if summary['null_excluded_95_wilks_2dof'] else 'not excluded'} at 95% (Wilks, 2 dof: "
          f"{thr95:.2f})")
    for L, m in regions.items():
        print(f"  {100 * L:g}% region (Delta-chi2 <= {fq.wilks_threshold(L, 2):.2f}): {int(m.sum())} of "
              f"{grid.n_points} grid points")
    if summary["edge_warnings"]:
        print(f"  warning: {'; '.join(summary['edge_warnings'])}: the minimum or the regions may continue beyond "
              "the grid (widen it, e.g. --dm2-range)")
    return 0


def _plot(path, grid, regions, raster, best, truth, names, fc, delta):
    """wilks.png: the Wilks regions (blue, one line style and width per level), the FC regions
    (red), the 90 % raster-scan limit (black, with a caption saying it is a per-dm2 1-D limit),
    the best fit and the truth, framed around what is drawn, legend beside the panel."""
    import textwrap

    from matplotlib.figure import Figure  # matplotlib: loaded for the figure only

    fig = Figure(figsize=(8.4, 5.6), layout="constrained")
    ax = fig.subplots()
    setup_oscillation_axes(ax, title=f"Wilks regions (2 dof): {', '.join(names)}")
    for L, st in level_line_styles(regions, "tab:blue", LEVEL_LINESTYLES).items():
        draw_mask(ax, regions[L], grid.ue4, grid.dm2, label=f"Wilks {level_label(L)}", **st)
    if fc is not None:
        for L, st in level_line_styles(fc.levels, "tab:red", LEVEL_LINESTYLES, zorder=2.6).items():
            draw_mask(ax, fc.region(delta, L), grid.ue4, grid.dm2, label=f"FC {level_label(L)}", **st)
    ok = np.isfinite(raster)
    if np.any(ok):
        draw_lines(ax, [np.column_stack([raster[ok], grid.dm2[ok]])], color="k", linewidth=1.2, zorder=4,
                   label="90% raster-scan limit\n(1-D, per Δm²: see below)")
    ax.plot(to_xaxis(best[0]), best[1], "*", color="tab:orange", markersize=11, markeredgecolor="k", zorder=5,
            label="best fit")
    if truth is not None and truth[0] > 0 and truth[1] > 0:
        ax.plot(to_xaxis(truth[0]), truth[1], "x", color="k", markersize=8, zorder=5, label="truth")
    frame_drawn(ax, (*grid.ue4_range, *grid.dm2_range))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=8, frameon=False)
    fig.supxlabel("\n".join(textwrap.wrap(RASTER_CAPTION, 110)), fontsize=8)  # the caption, under the panel
    save_figure(fig, path, dpi=120)
