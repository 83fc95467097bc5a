"""Exact posterior and fit diagnostics: time per data vector on the paper grid, against a
vectorised NumPy evaluation of the same likelihood (everything precomputed) in the same run.

    python benchmarks/bench_exact.py [--experiments STEREO,PROSPECT,DANSS,NEOS,GALLIUM,BEST]
                                     [--threads 2] [--repeat 5] [--toys 300]

Writes benchmarks/results/exact.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, timeit  # noqa: E402

from fcmlc import reference  # noqa: E402
from fcmlc.diagnostics import diagnose  # noqa: E402
from fcmlc.exact import ExactModel  # noqa: E402
from fcmlc.physics import Grid  # noqa: E402
from fcmlc.simulation import expectation_rows, realizations  # noqa: E402


class NumpyExact:
    """The same -2 log L with NumPy: the direction likelihood of shape-only experiments (radial
    least squares per point with C^+), chi2 + log det G' for normalisations with a prior, the
    Gaussian for plain ones, the linearised pulls Gaussian for the others. The per-point factors are precomputed (not timed per vector)."""

    def __init__(self, exps, grid):
        pts = grid.points()
        self.parts = []
        for e in exps:
            mu = expectation_rows(e, pts[:, 0], pts[:, 1])
            if e.kind == "pulls":
                V = e.pull_jacobian @ e.pull_covariance @ e.pull_jacobian.T
                C = mu[:, :, None] * V * mu[:, None, :] + np.diag(np.asarray(e.stat_sigma) ** 2)
                L = np.linalg.cholesky(C)
                self.parts.append(("pulls", e.n_bins, mu, L, 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)))
                continue
            Ci = np.linalg.pinv(np.asarray(e.covariance), hermitian=True)
            k = e.n_norm_groups
            if k == 0:
                self.parts.append(("plain", e.n_bins, mu, Ci, None))
                continue
            E = e.normalisation_matrix
            if e.shape_only:  # the likelihood of the group directions (Laplace over the radial scales, Jacobian included)
                self.parts.append(("shape", e.n_bins, (mu, E), Ci, None))
                continue
            U = mu[:, :, None] * E[None]  # (P, n, k)
            G = np.einsum("pnk,nm,pml->pkl", U, Ci, U) + (np.eye(k) / e.norm_prior**2 if e.norm_prior > 0 else 0)
            L = np.linalg.cholesky(G)
            self.parts.append(("norm", e.n_bins, (mu, E, e.norm_prior), (Ci, L),
                               2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1)))

    def minus2_log_likelihood(self, x):
        out = 0.0
        off = 0
        for kind, n, a, b, ld in self.parts:
            xe = x[off:off + n]
            off += n
            if kind == "pulls":
                z = np.linalg.solve(b, (xe - a)[..., None])[..., 0]
                out = out + np.einsum("pi,pi->p", z, z) + ld
            elif kind == "shape":
                mu, E = a
                u = xe / np.sqrt((xe**2) @ E)[np.argmax(E, axis=1)]
                Ud = u[:, None] * E  # (n, k): the data's directions
                H = Ud.T @ b @ Ud
                B = mu @ b @ Ud  # (P, k)
                _, phi, logdet = reference.radial_laplace(H, B, E.sum(0) - 1)  # Newton per point, NumPy
                out = out + np.einsum("pi,ij,pj->p", mu, b, mu) + 2 * phi + logdet
            elif kind == "plain":
                r = xe - a
                out = out + np.einsum("pi,ij,pj->p", r, b, r)
            else:
                (mu, E, sigma), (Ci, L) = a, b
                y = Ci @ xe
                bb = (mu * y) @ E + (1.0 / sigma**2 if sigma > 0 else 0.0)
                z = np.linalg.solve(L, bb[..., None])[..., 0]
                q = xe @ y + (E.shape[1] / sigma**2 if sigma > 0 else 0.0)
                out = out + q - np.einsum("pk,pk->p", z, z) + ld
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", default="STEREO,PROSPECT,DANSS,NEOS,GALLIUM,BEST")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--toys", type=int, default=300)
    a = ap.parse_args()
    grid = Grid.paper()
    t0 = time.perf_counter()
    model = ExactModel(a.experiments, grid, threads=a.threads)
    x = realizations(model.experiments, [0.1], [1.3], 1, seed=1)[0, 0]
    model.posterior(x)  # the first call builds the compiled chi2 kernels: part of the setup
    t_setup = time.perf_counter() - t0
    t_fc = timeit(lambda: model.posterior(x), a.repeat)
    t0 = time.perf_counter()
    ref = NumpyExact(model.experiments, grid)
    t_np_setup = time.perf_counter() - t0
    t_np = timeit(lambda: ref.minus2_log_likelihood(x), a.repeat)
    d = (model.minus2_log_likelihood(x).ravel() - ref.minus2_log_likelihood(x))
    agree = float(np.max(np.abs(d - d.mean())))
    t_diag = timeit(lambda: diagnose(model.experiments, x, model=model, n_toys=a.toys, seed=1), max(1, a.repeat // 2))
    diag = diagnose(model.experiments, x, model=model, n_toys=a.toys, seed=1)
    rows = [
        ("setup (chi2 models, per-point factors, compiled kernels), once per experiment set and grid", f"{t_setup:.2f} s",
         f"{t_np_setup:.2f} s", ""),
        ("exact posterior of one data vector (Posterior object included)", f"{t_fc[0] * 1e3:.1f} ms",
         f"{t_np[0] * 1e3:.1f} ms (likelihood only)", f"{t_np[0] / t_fc[0]:.1f}x"),
        (f"all diagnostics of one fit ({a.toys} toys at the best fit, scans included)", f"{t_diag[0]:.2f} s", "", ""),
    ]
    load = os.getloadavg()
    md = [f"# Exact posterior and diagnostics ({a.experiments}, paper grid 101 x 101)", "",
          f"Machine: {cpu_model()}, {os.cpu_count()} cores, threads={a.threads}, load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; best of {a.repeat}.", "",
          "| what | fcmlc | NumPy (same run) | ratio |", "|---|---|---|---|"]
    md += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    md += ["", f"Agreement of -2 log L (up to a constant) with NumPy: max |difference| {agree:.2e}.", "",
           "Diagnostics of the benchmark vector (a realization at |Ue4| = 0.1, dm2 = 1.3 eV^2):", "", "```",
           str(diag), "```", ""]
    out = Path(__file__).resolve().parent / "results" / "exact.md"
    out.write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
