"""Benchmark of the numeric part of an FCMLC fit: KDE, Eq. 2 integration, regions.

    PYTHONPATH=python python benchmarks/bench_posterior.py [--repeat-scale 1.0] [--out PATH]

* KDE of m = 1000 predictions on the paper's 50 x 50 y_hat grid: fcmlc (C++) vs
  statsmodels KDEMultivariate(...).pdf on the same samples, bandwidth and grid points
  (target: >= 30x).
* Eq. 2 integration with a random 2500 x 10000 transition matrix (50 x 50 y_hat grid
  -> 100 x 100 y grid): one fit and a batch of 100, fcmlc vs NumPy (p * dA) @ T.
* One whole fit: KDE + integration + Posterior + HPD regions at 68/90/95% + raster
  limits at 90/95%, against a budget of 0.1 s.

Times are the best of several runs (the machine may be shared; medians are shown
too). Prints a Markdown table and writes it to benchmarks/results/posterior.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from fcmlc import _core
from fcmlc.physics import Grid
from fcmlc.posterior import cell_areas, integrate, kde_bandwidth, kde_grid, posterior_from_samples
from _common import cpu_model, timeit


def fmt_ms(t):
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat-scale", type=float, default=1.0, help="multiply the number of repeats")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "posterior.md"))
    args = ap.parse_args(argv)
    R = args.repeat_scale

    rng = np.random.default_rng(2024)
    yhat = Grid.square(50)  # y_hat grid of the paper
    ygrid = Grid.square(100)  # y grid of the paper
    la, lb = np.log10(yhat.ue4), np.log10(yhat.dm2)
    m = 1000
    samples = np.column_stack([rng.normal(-1.3, 0.15, m), rng.normal(0.1, 0.25, m)])
    h = kde_bandwidth(samples)
    nproc = os.cpu_count()
    rows = []

    # ---- KDE vs statsmodels ----
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    A, B = np.meshgrid(la, lb)
    pts = np.column_stack([A.ravel(), B.ravel()])

    def sm():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return KDEMultivariate(samples, var_type="cc", bw=h).pdf(pts)

    t_sm = timeit(sm, 3 * R)
    t_k1 = timeit(lambda: kde_grid(samples, la, lb, bandwidth=h, threads=1), 200 * R)
    t_kn = timeit(lambda: kde_grid(samples, la, lb, bandwidth=h, threads=None), 200 * R)
    dev = np.max(np.abs(kde_grid(samples, la, lb, bandwidth=h) / sm().reshape(50, 50) - 1))
    rows.append(("KDE, m=1000, 50x50: statsmodels pdf", t_sm, None, ""))
    rows.append(("KDE, m=1000, 50x50: fcmlc, 1 thread", t_k1, t_sm[0] / t_k1[0], f"max rel. dev. {dev:.1e}"))
    rows.append((f"KDE, m=1000, 50x50: fcmlc, {nproc} threads", t_kn, t_sm[0] / t_kn[0], ""))
    xs = np.stack([samples + rng.normal(0, 0.05, 2) for _ in range(100)])
    t_kb = timeit(lambda: kde_grid(xs, la, lb, threads=None), 5 * R)
    rows.append((f"KDE, batch of 100 sets, {nproc} threads (per set)", (t_kb[0] / 100, t_kb[1] / 100), t_sm[0] / (t_kb[0] / 100), "incl. bandwidths"))

    # ---- integration ----
    T = rng.random((yhat.n_points, ygrid.n_points))  # 2500 x 10000, 200 MB
    dA = cell_areas(yhat.ue4, yhat.dm2)
    p1 = kde_grid(samples, la, lb)
    pb = kde_grid(xs, la, lb)
    w1 = (p1 * dA).reshape(1, -1)
    wb = (pb * dA).reshape(100, -1)
    t_np1 = timeit(lambda: (p1 * dA).reshape(1, -1) @ T, 10 * R)
    t_i1 = timeit(lambda: integrate(p1, T, dA, check_transition=False), 10 * R)
    t_i1c = timeit(lambda: integrate(p1, T, dA), 5 * R)
    dev1 = np.max(np.abs(integrate(p1, T, dA) / (w1 @ T)[0] - 1))
    rows.append(("Integration, 1 fit, 2500x10000: NumPy (p*dA) @ T", t_np1, None, "BLAS"))
    rows.append((f"Integration, 1 fit: fcmlc, {nproc} threads", t_i1, t_np1[0] / t_i1[0], f"max rel. dev. {dev1:.1e}"))
    rows.append((f"Integration, 1 fit: fcmlc + scan of T, {nproc} threads", t_i1c, t_np1[0] / t_i1c[0], "check_transition=True"))
    t_npb = timeit(lambda: (pb * dA).reshape(100, -1) @ T, 3 * R)
    t_ib = timeit(lambda: integrate(pb, T, dA, check_transition=False), 3 * R)
    devb = np.max(np.abs(integrate(pb, T, dA) / (wb @ T) - 1))
    rows.append(("Integration, batch of 100: NumPy (p*dA) @ T", t_npb, None, "BLAS"))
    rows.append((f"Integration, batch of 100: fcmlc, {nproc} threads", t_ib, t_npb[0] / t_ib[0], f"max rel. dev. {devb:.1e}"))

    # ---- one whole fit ----
    def fit(check):
        post = posterior_from_samples(samples, yhat.ue4, yhat.dm2, T, ygrid.ue4, ygrid.dm2, check_transition=check)
        masks = [post.credible_region(lv) for lv in (0.68, 0.9, 0.95)]
        lims = [post.upper_limits(lv) for lv in (0.9, 0.95)]
        return post, masks, lims

    t_fit = timeit(lambda: fit(False), 10 * R)
    t_fitc = timeit(lambda: fit(True), 5 * R)
    post = fit(False)[0]
    t_reg = timeit(lambda: ([post.credible_region(lv) for lv in (0.68, 0.9, 0.95)],
                            [post.upper_limits(lv) for lv in (0.9, 0.95)]), 20 * R)
    rows.append(("  of which: HPD 68/90/95 + raster 90/95 on 100x100", t_reg, None, ""))
    rows.append(("Whole fit (KDE + Eq. 2 + regions + raster)", t_fit, 0.1 / t_fit[0], "vs 0.1 s budget; T validated at load"))
    rows.append(("Whole fit, scanning T as well", t_fitc, 0.1 / t_fitc[0], "vs 0.1 s budget"))

    # ---- report ----
    try:
        load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    cmd = "PYTHONPATH=python python " + " ".join([os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:]))
    lines = [
        "# Posterior benchmark (KDE, Eq. 2 integration, regions)",
        "",
        f"- machine: `nproc` = {nproc}, {cpu_model()}; load average at end {load} (shared machine: best-of-N shown)",
        f"- fcmlc._core arithmetic path: {_core.gemm_isa()}; numpy {np.__version__}",
        f"- command: `{cmd}`",
        "",
        "| case | best | median | ratio | note |",
        "|---|---|---|---|---|",
    ]
    for name, (best, med), ratio, note in rows:
        r = "" if ratio is None else (f"{ratio:.3g}x" if "budget" not in note else f"{ratio:.3g}x under budget" if ratio >= 1 else f"{1 / ratio:.3g}x over budget")
        lines.append(f"| {name} | {fmt_ms(best)} | {fmt_ms(med)} | {r} | {note} |")
    lines += [
        "",
        "Ratios: speed-up over the baseline of the block (statsmodels or NumPy/BLAS), best vs best;",
        "for the whole fit, budget / time. fcmlc results are bit-identical for any thread count;",
        "deviations are relative to the baseline's result.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
