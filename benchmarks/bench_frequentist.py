"""Benchmark of the frequentist kernels: chi2 scan and full-grid Feldman-Cousins.

    PYTHONPATH=python python benchmarks/bench_frequentist.py [--quick] [--threads 2] [--out PATH]

* chi2 scan of one STEREO data vector (a realization) against all 10,201 points of
  ``Grid.paper()``, free normalisations profiled (target <= 0.5 ms), vs a plain NumPy scan with
  everything precomputed (the profiled precision matrix P and the expectations on the grid):
  chi2 = rowsum((x - mu) P * (x - mu)).
* Feldman-Cousins map for STEREO on the 101 x 101 grid with 1000 toys per point (target <= 5 min
  on 2 cores). The full map is run (`--quick`: a representative subset of grid points, spread
  over the grid, and the full time extrapolated - marked as such in the table). Compared per toy
  with a NumPy float32 matrix-product FC scan on a few points: toys x = mu + F z, whitened
  r = A (x - N0), chi2 = |r|^2 - 2 r.m_p + |m_p|^2 for all grid points by one float32 GEMM.

Times are the best (and median) of several runs; the machine may be shared. Prints a Markdown
table and writes it to benchmarks/results/frequentist.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fcmlc import __version__
from fcmlc import frequentist as fq
from fcmlc.physics import Grid
from fcmlc.simulation import covariance_factor, expectation_rows, realizations
from _common import cpu_model, timeit


def numpy_scan_setup(e, grid):
    """Everything precomputed for the NumPy profile scan of the multiplicative model:
    expectations mu (P, n), C^-1, E, and G(p)^-1 (P, k, k)."""
    mu = np.asarray(e.expectation_grid(grid), dtype=float)
    Ci = np.linalg.inv(np.asarray(e.covariance, dtype=float))
    E = e.normalisation_matrix
    U = mu[:, :, None] * E[None]  # (P, n, k)
    G = np.einsum("pnk,nm,pml->pkl", U, Ci, U, optimize=True)
    return mu, (Ci, E, np.linalg.inv(G))


def numpy_scan(x, mu, P):
    """chi2(p) = x^T C^-1 x - b_p^T G_p^-1 b_p, b_p = E^T (mu_p * C^-1 x)."""
    Ci, E, Ginv = P
    y = Ci @ x
    b = (mu * y[None, :]) @ E
    chi2 = x @ y - np.einsum("pk,pkl,pl->p", b, Ginv, b)
    return chi2, chi2.min()


def numpy_fc_float32(model, e, pids, n_toys, seed):
    """NumPy float32 FC for STEREO at points `pids`: Delta-chi2 (len(pids), n_toys)."""
    part = model.parts[0]
    A = part.A.astype(np.float32)
    N0 = part.N0.astype(np.float32)
    M = ((np.asarray(e.expectation_grid(model.grid)) - part.N0) @ part.A.T).astype(np.float32)  # (P, k)
    M2 = np.einsum("pk,pk->p", M, M)
    Ft, _ = covariance_factor(e.covariance)
    F = Ft.T.astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((len(pids), n_toys), dtype=np.float32)
    pts = model.grid.points()
    for i, p in enumerate(pids):
        mu = np.asarray(e.expectation(pts[p, 0], pts[p, 1]), dtype=np.float32)
        X = mu[None, :] + rng.standard_normal((n_toys, F.shape[1]), dtype=np.float32) @ F.T
        R = (X - N0) @ A.T
        chi2 = np.einsum("tk,tk->t", R, R)[:, None] - 2.0 * (R @ M.T) + M2[None, :]
        out[i] = chi2[:, p] - chi2.min(axis=1)
    return out


GLOBAL = ["STEREO", "PROSPECT", "DANSS", "NEOS", "GALLIUM", "BEST"]


def global_whitened(model):
    """The global fit in whitened coordinates: chi2(p) = |R(x) - M(p)|^2 with
    R(x) = concat_e A_e (x_e - N0_e) and M(p) = concat_e A_e (mu_e(p) - N0_e) (shape-only
    nuisances and pulls are inside A_e). Returns M (n_points, k_total) and R(.), the NumPy
    version of ``Chi2Model.whiten`` (the baseline must not call the compiled kernel)."""

    def whiten(X):
        X = np.atleast_2d(X)
        out, o = [], 0
        for part in model.parts:
            out.append((X[:, o:o + part.n_bins] - part.N0) @ part.A.T)
            o += part.n_bins
        return np.concatenate(out, axis=1)

    pts = model.grid.points()
    mu = np.concatenate([np.asarray(expectation_rows(e, pts[:, 0], pts[:, 1]), dtype=float)
                         for e in model.experiments], axis=1)
    return whiten(mu), whiten


def numpy_fc_global_float32(model, M, whiten, pids, n_toys, seed):
    """NumPy float32 FC for the global fit at points `pids`, toys from fcmlc's own generator
    (the cost measured is the scan: whitening, float32 matrix product, minimum)."""
    M32 = M.astype(np.float32)
    M2 = np.einsum("pk,pk->p", M32, M32)
    pts = model.grid.points()
    out = np.empty((len(pids), n_toys), dtype=np.float32)
    for i, p in enumerate(pids):
        X = realizations(model.experiments, [pts[p, 0]], [pts[p, 1]], n_per_point=n_toys, seed=seed,
                         point_ids=[p])[0]
        R = whiten(X).astype(np.float32)
        chi2 = np.einsum("tk,tk->t", R, R)[:, None] - 2.0 * (R @ M32.T) + M2[None, :]
        out[i] = chi2[:, p] - chi2.min(axis=1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="FC on a subset of grid points, extrapolated")
    ap.add_argument("--threads", type=int, default=2, help="threads for the FC run (default 2)")
    ap.add_argument("--no-prune", action="store_true",
                    help="FC toys without the grid-point pruning (kernel.prune = False; same results)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "frequentist.md"))
    args = ap.parse_args(argv)

    from fcmlc import experiments as ex

    grid = Grid.paper()
    e = ex.load("STEREO")
    t0 = time.perf_counter()
    model = fq.Chi2Model([e], grid).prepare_toys()
    t_setup = time.perf_counter() - t0
    x = realizations([e], [0.1], [1.3], n_per_point=1, seed=1)[0, 0]

    # --- chi2 scan of one data vector -----------------------------------------------------
    fq.chi2_scan(model, x)
    t_scan, t_scan_med = timeit(lambda: fq.chi2_scan(model, x), 300)
    mu_g, P = numpy_scan_setup(e, grid)
    ref, ref_min = numpy_scan(x, mu_g, P)
    got = fq.chi2_scan(model, x)
    max_dev = float(np.max(np.abs(got.chi2.ravel() - ref)))
    t_np, t_np_med = timeit(lambda: numpy_scan(x, mu_g, P), 10)

    # --- Feldman-Cousins ----------------------------------------------------------------------
    n_toys = 1000
    if args.quick:
        pids = np.unique(np.linspace(0, grid.n_points - 1, 306).astype(np.int64))
    else:
        pids = np.arange(grid.n_points)
    model.kernel.prune = not args.no_prune
    model.kernel.reset_prune_stats()
    t0 = time.perf_counter()
    res = fq.feldman_cousins(model, n_toys=n_toys, seed=0, threads=args.threads, points=pids, progress=False)
    t_fc_run = time.perf_counter() - t0
    ev, sc = model.kernel.prune_stats
    t_fc_full = t_fc_run * grid.n_points / pids.size
    per_toy = t_fc_run / (pids.size * n_toys)
    # NumPy float32 matrix-product FC on a few points (same machine, same run)
    np_pids = pids[:: max(1, pids.size // 5)][:5]
    numpy_fc_float32(model, e, np_pids[:1], 100, 0)
    t_npfc, _ = timeit(lambda: numpy_fc_float32(model, e, np_pids, n_toys, 0), 2)
    np_per_toy = t_npfc / (np_pids.size * n_toys)
    # statistical cross-check of the two on those points (critical value at 90 %)
    c_np = fq.critical_values(numpy_fc_float32(model, e, np_pids, n_toys, 1), [0.9])[0]
    c_k = res.critical_value(0.9).ravel()[np_pids]

    # --- Feldman-Cousins of the global fit (DANSS's ratio is not linear in s2: full-grid scans) ---
    gmodel = fq.Chi2Model(GLOBAL, grid).prepare_toys()
    gM, gwhiten = global_whitened(gmodel)
    xg = realizations(gmodel.experiments, [0.1], [1.3], n_per_point=1, seed=1)[0, 0]
    g_dev = float(np.max(np.abs(((gwhiten(xg) - gM) ** 2).sum(axis=1) - fq.chi2_scan(gmodel, xg).chi2.ravel())))
    g_pids = pids[::10] if args.quick else pids[::20]
    gmodel.kernel.prune = not args.no_prune
    gmodel.kernel.reset_prune_stats()
    t0 = time.perf_counter()
    gres = fq.feldman_cousins(gmodel, n_toys=n_toys, seed=0, threads=args.threads, points=g_pids, progress=False)
    t_gfc_run = time.perf_counter() - t0
    gev, gsc = gmodel.kernel.prune_stats
    g_per_toy = t_gfc_run / (g_pids.size * n_toys)
    g_np_pids = g_pids[:: max(1, g_pids.size // 3)][:3]
    t_gnp, _ = timeit(lambda: numpy_fc_global_float32(gmodel, gM, gwhiten, g_np_pids, n_toys, 0), 1)
    g_np_per_toy = t_gnp / (g_np_pids.size * n_toys)
    gc_np = fq.critical_values(numpy_fc_global_float32(gmodel, gM, gwhiten, g_np_pids, n_toys, 1), [0.9])[0]
    gc_k = gres.critical_value(0.9).ravel()[g_np_pids]

    threads_env = os.environ.get("OMP_NUM_THREADS", "unset")
    cmd = "PYTHONPATH=python python benchmarks/bench_frequentist.py" + (" --quick" if args.quick else "") + \
        (f" --threads {args.threads}" if args.threads != 2 else "") + (" --no-prune" if args.no_prune else "")
    fc_label = ("full 101 x 101 map, measured" if not args.quick else
                f"{pids.size} of 10,201 points measured, full map EXTRAPOLATED")
    lines = [
        "# Frequentist kernels: chi2 scan and Feldman-Cousins",
        "",
        f"Machine: {os.cpu_count()} cores (`os.cpu_count()`), {cpu_model()}; Python {platform.python_version()}, "
        f"NumPy {np.__version__}, fcmlc {__version__}; OMP_NUM_THREADS={threads_env}. The machine may be shared "
        "with other jobs: times are the best of repeated runs (median in brackets).",
        "",
        f"Command: `{cmd}`",
        "",
        "| what | fcmlc | NumPy | ratio | target |",
        "|---|---|---|---|---|",
        f"| chi2 scan, 1 STEREO vector x 10,201 points (1 thread) | {t_scan * 1e3:.3f} ms "
        f"({t_scan_med * 1e3:.3f}) | {t_np * 1e3:.2f} ms ({t_np_med * 1e3:.2f}) float64, P and mu precomputed | "
        f"{t_np / t_scan:.0f}x | <= 0.5 ms |",
        f"| FC STEREO, 101 x 101 grid, 1000 toys/point, {args.threads} threads ({fc_label}) | "
        f"{t_fc_full:.1f} s ({per_toy * 1e6:.2f} us/toy) | {np_per_toy * 1e6:.1f} us/toy float32 GEMM scan "
        f"({np_pids.size} points x 1000 toys; full map would take ~{np_per_toy * 1e7 * 1.0201:.0f} s) | "
        f"{np_per_toy / per_toy:.2g}x | <= 300 s |",
        f"| FC global fit (six experiments, {gM.shape[1]} whitened dims), 101 x 101 grid, 1000 toys/point, "
        f"{args.threads} threads ({g_pids.size} of 10,201 points measured, full map EXTRAPOLATED) | "
        f"{g_per_toy * grid.n_points * n_toys / 60:.1f} min ({g_per_toy * 1e6:.1f} us/toy) | "
        f"{g_np_per_toy * 1e6:.0f} us/toy float32 GEMM scan ({g_np_pids.size} points x 1000 toys) | "
        f"{g_np_per_toy / g_per_toy:.2g}x | |",
        "",
        f"* chi2 scan: max |fcmlc - NumPy| = {max_dev:.2e} (chi2 ~ {ref_min:.1f}); model setup (whitening, deficits "
        f"on the grid, generators) {t_setup:.2f} s, once.",
        f"* FC wall time of this run: {t_fc_run:.1f} s for {pids.size} points x {n_toys} toys.",
        f"* FC grid-point pruning {'off' if args.no_prune else 'on'}: grid points computed per eight toys "
        f"{ev / sc if sc else 1.0:.3f} (STEREO), {gev / gsc if gsc else 1.0:.3f} (global fit) of those scanned.",
        f"* 90% critical values on the NumPy-compared points, fcmlc: {np.round(c_k, 2).tolist()}; NumPy float32 "
        f"(independent toys): {np.round(c_np, 2).tolist()} (same distribution; MC spread ~ +-0.3).",
        f"* global fit: whitened NumPy chi2 vs the kernel's scan, max deviation {g_dev:.1e}; 90% critical values on "
        f"the NumPy-compared points, fcmlc {np.round(gc_k, 2).tolist()}, NumPy float32 (other toys) "
        f"{np.round(gc_np, 2).tolist()}; wall time {t_gfc_run:.1f} s for {g_pids.size} points x {n_toys} toys.",
        f"* FC map over the measured points: median 90% critical value "
        f"{np.nanmedian(res.critical_value(0.9)):.2f} (Wilks 2 dof 4.61).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
