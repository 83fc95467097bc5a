"""Benchmark of realization generation: each kernel and the whole paper-scale dataset
against a plain NumPy implementation in the same run.

    python benchmarks/bench_simulate.py [--grid 101] [--per-point 50] [--threads N] [--out PATH]

Cases (all six built-in experiments unless noted; paper grid 101 x 101, 50 per point):

* bin-averaged oscillation: the deficit D(dm2) of every experiment at the grid's dm2
  values, ``_core.bin_deficit`` vs ``reference.bin_deficit_vectorized`` (exact in L,
  Gauss-Legendre in E, NumPy/SciPy vectorised);
* correlated Gaussian residuals for STEREO (126 bins): ``_core.simulate_gaussian`` (keyed
  Philox, float32 out) vs NumPy ``Generator(Philox).standard_normal`` + matrix product;
* pull realizations of GALLIUM + BEST: ``_core.simulate_pulls`` vs vectorised NumPy
  rejection sampling;
* end to end: ``fcmlc simulate`` of the whole dataset to HDF5 (a separate process, so
  that its peak RSS is measured) vs the same pipeline written in NumPy + h5py, chunked
  the same way (also a separate process);
* peak memory at twice the grid points (bounded by the chunk size, not the grid);
* reading the dataset back: ``SimDataset.features()`` (every chunk checked: finite, inside the
  experiment model's range, CRC-32 as written) vs the same arrays read with plain h5py.

Writes a Markdown table to benchmarks/results/simulate.md (default).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fcmlc
from fcmlc import _core, reference
from fcmlc import experiments as ex
from fcmlc.dataset import open_dataset
from fcmlc.physics import Grid
from fcmlc.simulation import Sampler, expectation_rows
from _common import cpu_model

ALL = ["STEREO", "PROSPECT", "DANSS", "NEOS", "GALLIUM", "BEST"]


def best_of(f, repeat=3):
    ts = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t0)
    return min(ts), out


# --- the NumPy pipeline ---------------------------------------------------------------------


def numpy_expectations(exp, pts):
    """Expectations with the vectorised NumPy bin averages (deficit once per distinct dm2)."""
    ud, inv = np.unique(pts[:, 1], return_inverse=True)
    s2 = fcmlc.sin2_2theta(pts[:, 0])
    parts = []
    for p in exp.linear_parts:
        D = reference.bin_deficit_vectorized(ud, p.boxes, p.indptr, p.indices, p.weights)
        parts.append(p.null[None, :] - s2[:, None] * D[inv])
    return parts[0] if len(parts) == 1 else parts[0] / parts[1]


def numpy_gaussian(rng, mu, Ft, n_real):
    z = rng.standard_normal((mu.shape[0], n_real, Ft.shape[0]))
    return (mu[:, None, :] + z @ Ft).astype(np.float32)


def numpy_pulls(rng, mu, smp, n_real):
    n_pts, n = mu.shape
    p = smp.J.shape[1]
    total = n_pts * n_real
    pulls = np.empty((total, p))
    filled = 0
    while filled < total:  # rejection sampling of the truncated pulls, vectorised
        w = rng.standard_normal((int(1.3 * (total - filled)) + 16, p))
        pi = w @ smp.Lp.T
        ok = pi[np.all(pi >= smp.lo, axis=1)][: total - filled]
        pulls[filled:filled + len(ok)] = ok
        filled += len(ok)
    f = 1.0 + pulls @ smp.J.T
    s = rng.standard_normal((total, n))
    x = np.repeat(mu, n_real, axis=0) * f + smp.sigma * s
    return x.reshape(n_pts, n_real, n).astype(np.float32)


def numpy_simulate(names, grid, n_per_point, seed, out, chunk_points):
    """The generation pipeline in NumPy + h5py (same layout, chunking, float32 storage)."""
    import h5py

    exps = [ex.load(n) for n in names]
    smps = [Sampler.of(e) for e in exps]
    pts = grid.points()
    rng = np.random.Generator(np.random.Philox(seed))
    with h5py.File(out, "w") as f:
        f.create_dataset("params", data=pts)
        dsets = [f.create_dataset(f"data/{e.name}", (grid.n_points, n_per_point, e.n_bins), dtype="f4")
                 for e in exps]
        for p0 in range(0, grid.n_points, chunk_points):
            sl = slice(p0, min(p0 + chunk_points, grid.n_points))
            for e, smp, d in zip(exps, smps, dsets):
                mu = numpy_expectations(e, pts[sl])
                if smp.kind == "pulls":
                    d[sl] = numpy_pulls(rng, mu, smp, n_per_point)
                else:
                    d[sl] = numpy_gaussian(rng, mu, smp.factor_t, n_per_point)


def child(argv):
    """Run one end-to-end generation in this process and print JSON (time, peak RSS)."""
    kind, names, n, m, per, seed, out, threads = argv
    grid = Grid(shape=(int(n), int(m)))
    names = names.split(",")
    t0 = time.perf_counter()
    if kind == "fcmlc":
        fcmlc.simulate(names, grid, n_per_point=int(per), seed=int(seed), out=out,
                       threads=None if threads == "None" else int(threads), progress=False)
    else:
        from fcmlc.simulation import default_chunk_points

        nb = sum(ex.load(x).n_bins for x in names)
        numpy_simulate(names, grid, int(per), int(seed), out, default_chunk_points(nb, int(per), 4))
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": dt, "peak_rss": rss}))


def run_child(kind, names, shape, per, seed, out, threads):
    cmd = [sys.executable, __file__, "--child", kind, ",".join(names), str(shape[0]), str(shape[1]), str(per),
           str(seed), str(out), str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=int, default=101)
    ap.add_argument("--per-point", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "simulate.md"))
    ap.add_argument("--tmp", default=None, help="directory for the HDF5 files (default: a temporary one)")
    args = ap.parse_args(argv)
    threads = args.threads or _core.max_threads()
    grid = Grid(shape=(args.grid, args.grid))
    rows = []

    def row(case, t_ref, t_ours, note=""):
        ratio = f"{t_ref / t_ours:.1f}x" if t_ref else ""
        rows.append((case, f"{t_ref:.3g} s" if t_ref else "", f"{t_ours:.3g} s", ratio, note))
        print(f"{case:55s} ref {t_ref or 0:8.3f} s  fcmlc {t_ours:8.3f} s  {ratio:>8s}  {note}", flush=True)

    # 1. bin-averaged oscillation --------------------------------------------------------------
    parts = [(e.name, p) for e in map(ex.load, ALL) for p in e.linear_parts]
    t_k, Dk = best_of(lambda: [p.deficit(grid.dm2, threads) for _, p in parts], args.repeat)
    t_r, Dr = best_of(lambda: [reference.bin_deficit_vectorized(grid.dm2, p.boxes, p.indptr, p.indices, p.weights)
                               for _, p in parts], max(1, args.repeat - 1))
    dev = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(Dk, Dr))
    n_box = sum(p.boxes.shape[0] for _, p in parts)
    row(f"oscillation: deficits, 6 experiments, {grid.n_dm2} dm2 x {n_box} boxes", t_r, t_k,
        f"max rel. dev. {dev:.1e}")

    # 2. Gaussian residuals (STEREO) ----------------------------------------------------------
    stereo = ex.load("STEREO")
    smp = Sampler.of(stereo)
    pts = grid.points()
    mu = expectation_rows(stereo, pts[:, 0], pts[:, 1])
    pid = np.arange(grid.n_points, dtype=np.int64)
    t_k, _ = best_of(lambda: smp.sample(mu, 1, pid, args.per_point, 0, True, threads), args.repeat)
    rng = np.random.Generator(np.random.Philox(1))
    chunk = 512

    def np_gauss():
        for p0 in range(0, grid.n_points, chunk):
            numpy_gaussian(rng, mu[p0:p0 + chunk], smp.factor_t, args.per_point)

    t_r, _ = best_of(np_gauss, max(1, args.repeat - 1))
    row(f"Gaussian residuals: STEREO, {grid.n_points} x {args.per_point} x 126", t_r, t_k)

    # 3. pulls (GALLIUM + BEST) ---------------------------------------------------------------
    def ours_pulls():
        for name in ("GALLIUM", "BEST"):
            e = ex.load(name)
            Sampler.of(e).sample(expectation_rows(e, pts[:, 0], pts[:, 1]), 1, pid, args.per_point, 0, True, threads)

    def np_pulls():
        for name in ("GALLIUM", "BEST"):
            e = ex.load(name)
            numpy_pulls(rng, expectation_rows(e, pts[:, 0], pts[:, 1]), Sampler.of(e), args.per_point)

    t_k, _ = best_of(ours_pulls, args.repeat)
    t_r, _ = best_of(np_pulls, max(1, args.repeat - 1))
    row(f"pull realizations: GALLIUM + BEST, {grid.n_points} x {args.per_point}", t_r, t_k)

    # 4. end to end, 5. memory ----------------------------------------------------------------
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="fcmlc-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    size_gb = grid.n_points * args.per_point * sum(ex.load(n).n_bins for n in ALL) * 4 / 1e9
    ends = []
    for i in range(max(1, args.repeat - 1)):
        for kind in ("fcmlc", "numpy"):
            out = tmp / f"{kind}.h5"
            out.unlink(missing_ok=True)
            ends.append((kind, run_child(kind, ALL, grid.shape, args.per_point, 1, out, threads)))
            if kind == "numpy" or i < max(1, args.repeat - 1) - 1:
                out.unlink(missing_ok=True)
    best = {k: min((r for kk, r in ends if kk == k), key=lambda r: r["seconds"]) for k in ("fcmlc", "numpy")}
    row(f"end to end: 6 experiments, {grid.shape[0]}x{grid.shape[1]} x {args.per_point} -> HDF5 "
        f"({size_gb:.2f} GB)", best["numpy"]["seconds"], best["fcmlc"]["seconds"],
        f"peak RSS fcmlc {best['fcmlc']['peak_rss'] / 2**20:.0f} MiB, NumPy {best['numpy']['peak_rss'] / 2**20:.0f} MiB")
    big = (int(round(args.grid * 2 ** 0.5)),) * 2
    out = tmp / "big.h5"
    r = run_child("fcmlc", ALL, big, args.per_point, 1, out, threads)
    out.unlink(missing_ok=True)
    row(f"end to end, 2x the points: {big[0]}x{big[1]} x {args.per_point}", 0, r["seconds"],
        f"peak RSS {r['peak_rss'] / 2**20:.0f} MiB")

    # 6. reading it back (after the memory case: this process holds the arrays) -------------------
    ds_path = tmp / "fcmlc.h5"

    def checked_read():
        with open_dataset(ds_path) as d:
            return d.features()

    def h5py_read():
        import h5py

        with h5py.File(ds_path, "r") as f:
            return np.concatenate([f["data"][n][...].reshape(grid.n_points * args.per_point, -1) for n in ALL],
                                  axis=1)

    t_k, xk = best_of(checked_read, args.repeat)
    t_r, xr = best_of(h5py_read, args.repeat)
    assert np.array_equal(xk, xr)
    del xk, xr
    ds_path.unlink()
    row(f"read back: {size_gb:.2f} GB, every chunk checked (h5py: unchecked)", t_r, t_k,
        "ratio < 1: the cost of the checks")

    load = os.getloadavg()
    text = [
        "# Realization generation benchmark",
        "",
        f"- machine: {os.cpu_count()} cores ({cpu_model()}), {threads} threads used; load average at end "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
        f"- fcmlc {fcmlc.__version__}, numpy {np.__version__}, python {platform.python_version()}",
        f"- command: `python benchmarks/bench_simulate.py --grid {args.grid} --per-point {args.per_point}"
        + (f" --threads {args.threads}" if args.threads else "") + "`",
        "- times: best of the repeats; ratio = NumPy time / fcmlc time in the same run",
        "- the NumPy pipeline draws from numpy's own Philox (same distributions, not the same numbers)",
        "",
        "| case | NumPy | fcmlc | ratio | note |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(r)} |" for r in rows],
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
