"""Frequentist inference on the parameter grid: exact chi2 scans, Wilks' regions, raster-scan
limits and full-grid Feldman-Cousins (FC) critical values.

The chi2 of experiment e for data x at grid point p is the exact profile of its Gaussian
model x ~ N(diag(mu_e(p)) E_e beta, C_e) over the multiplicative normalisations beta_g of its
normalisation groups (``norm_groups``, E_e the 0/1 assignment ``normalisation_matrix``):

    chi2_e(x; p) = min_beta (x - diag(mu) E beta)^T C_e^+ (x - diag(mu) E beta) [+ |beta - 1|^2 / sigma^2],

C_e the experiment's covariance (``covariance``; Moore-Penrose pseudo-inverse on the non-null
subspace when only positive semi-definite), sigma its ``norm_prior`` (0: free groups, no prior
term) and mu_e(p) the *oscillated* expectation (a normalisation scales the prediction, not a
fixed null spectrum). A global fit sums chi2_e over experiments on the common grid; the number
of effective bins is sum_e rank(C_e) - k_e.

How it is computed. With y = C^+ x, q = x.y [+ k/sigma^2], b'(p) = E^T (mu_p * y) [+ 1/sigma^2]
and G'(p) = E^T diag(mu_p) C^+ diag(mu_p) E [+ I/sigma^2] (k x k),

    chi2_e(x; p) = q - b'(p)^T G'(p)^-1 b'(p) = q - |L_p^-1 b'(p)|^2,

with L_p^-1 (the inverse Cholesky factor of G'(p), packed lower triangular) precomputed per
grid point in float64 (q and the subtracted term are both ~1e6 for STEREO while chi2 ~ 1e2).
For an experiment linear in s2 = sin^2(2 theta) (mu = N0 - s2 D(dm2)), b'(u, j) = b0' - s2_u b1(j)
with b0' = E^T (N0 * y) [+ 1/sigma^2] and b1(j) = E^T (D_j * y): a data vector costs one
C^+ x, n_dm2 sums over the bins, and k(k+1)/2 multiply-adds per grid point. Non-linear
experiments (DANSS's ratio of spectra) form b'(p) from the stored mu_p per grid point.

FC toys of linear experiments use the equivalent *centred* form (exact up to rounding). With
G'(u, j) = G0 - s H_j + s^2 G11_j (s = s2_u; G0 = G'(s2 = 0), H_j = G01_j + G01_j^T),
beta0 = G0^-1 b0' and chi2_null = q - b0'.beta0 (float64, once per toy),

    chi2(u, j) = chi2_null + s (2 beta0.b1(j) - beta0^T H_j beta0) + s^2 beta0^T G11_j beta0
                 - s^2 |L_p^-1 (c0(j) - s c1(j))|^2,   c0 = H_j beta0 - b1(j), c1 = G11_j beta0,

(from b' - G' beta0 = s c(s)). The row terms cost O(k^2) per dm2 row in float64; the per-point
quadratic form is multiplied by s^2 and bounded by the full-mixing Delta-chi2 (not ~q), so it
runs in float32 (L_p^-1 stored in float32, eight toys per vector): |Delta-chi2 - float64| was
at most 7e-5 (STEREO, PROSPECT) and 1.2e-3 (global fit) on the measured toys, FC critical
values moved by <= 1e-4 relative. The chi2 at the true point stays the float64 profile, so
Delta-chi2 >= 0. ``model.kernel.centred = False`` selects the float64 profile everywhere;
:func:`chi2_scan` always uses it. Results stay bit-identical for any thread count, chunking
and across x86-64 machines (no FMA: the AVX2 and baseline clones round identically).

Pruning (``model.kernel.prune``, default on; results bit-identical to off): the FC toys of a
model with centred experiments skip grid points that provably cannot be the minimum. The
computed float32 |L_p^-1 c|^2 is at most K_p |c|^2 (K_p ~ sigma_max(L_p^-1)^2 of the float32
factor, inflated for float32 rounding: :func:`_prune_factors`), and |c(s)|^2 is O(1) per point
from three row sums, so every point gets a lower bound (the other parts evaluated exactly); a
block of four points of a row is computed only when some point's bound, less a float64
rounding margin, is <= the running minimum of some of the eight lanes (start: the true point
and each lane's point of smallest bound). Skipped points lie strictly above the minimum, so
the minimum and its index (tie rule) are those of the full scan.

Experiments without normalisation groups (k = 0: pull-type, or no normalisation) use the
whitening W_e (W C W^T = I): chi2_e = |W_e (x - mu)|^2, centred on the null expectation
r_e = W_e (x - N0_e); for a linear experiment, with d_e(j) = W_e D_e(dm2_j),

    chi2_e(u, j) = |r_e|^2 + 2 s2_u (r_e . d_e(j)) + s2_u^2 |d_e(j)|^2,

so a data vector costs n_dm2 dot products; when every experiment is of this kind the chi2 is a
convex quadratic in s2 per dm2 row and the FC toys find the grid minimum next to the
unconstrained minimiser (binary search). Non-linear ones keep offsets m_e(p) = W_e (mu_e(p) - N0_e).

Pull-type experiments (gallium): their chi2 uses ``covariance``, the linearised pulls; for a
nuisance that enters linearly with a Gaussian prior, profiling it exactly gives the same chi2
as using the marginal covariance (C + J S J^T), so this *is* the exact profile chi2 of the
linearised model. Their FC toys, however, come from the non-Gaussian sampler of ``simulate``
(truncated pulls entering multiplicatively): that is where FC and Wilks differ.

FC toys are exactly the realizations of :func:`fcmlc.simulation.simulate`: toy t at grid point
p under seed s is realization t of point p (same counter-based generator, stream and keying):
x = mu_p (1 + sigma E w) + F z with F F^T = C, z the generator's normals and w ~ N(0, I_k) drawn
only when sigma > 0. For experiments with normalisation groups the kernel forms x itself (four
toys per vector lane, another summation order than simulate's: rounding only) and scans it
like a data vector over the whole grid; for the others it forms the whitened toy r = c_p + M z
with c_p = W (mu_p - N0) and M = W F, and for linear ones r . d(j) = d(j) . c_p + (d M)(j) . z
directly.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from . import __version__, _core
from .physics import Grid, sin2_2theta

#: Default Wilks levels: 1 sigma (2-D), 90%, 95%, 99%.
WILKS_LEVELS = (0.6827, 0.90, 0.95, 0.99)
#: Default Feldman-Cousins levels.
FC_LEVELS = (0.68, 0.90, 0.95)
#: HDF5 format tag of Feldman-Cousins result files.
FC_FORMAT = "fcmlc-feldman-cousins"
FC_FORMAT_VERSION = 1
#: The quantile convention, stored with every FC result.
QUANTILE_CONVENTION = ("critical value at level L from n toys = the ceil(L n)-th smallest Delta-chi2 "
                       "(1-based order statistic, the smallest t with empirical CDF(t) >= L); "
                       "a grid point is in the region when Delta-chi2(data) <= critical value")

UINT64_MAX = (1 << 64) - 1


# --- experiments ------------------------------------------------------------------------


def _prune_factors(factors: np.ndarray) -> np.ndarray:
    """K_p per grid point for the FC pruning of a centred experiment (chi2.cpp,
    general_lanes_pruned): the computed float32 |Lf_p c|^2 <= K_p |c|^2 for every float32 c, Lf_p
    the float32 copy of the packed L_p^-1 the kernel uses. In exact arithmetic |Lf c|^2 <=
    sigma_max(Lf)^2 |c|^2; float32 rounding (gamma = (kn + 1) 2^-24 per dot product, |t_a| errors
    <= gamma sum_c |Lf_ac| |c_c|) adds at most (1 + gamma)((1 + gamma) sigma_max^2 + (gamma +
    gamma^2) |Lf|_F^2) - sigma_max^2 relative, covered by g = 4 (kn + 2) 2^-24 below, which also
    covers eigvalsh's float64 error (~kn 1e-16 |Lf|_F^2)."""
    f = np.asarray(factors, dtype=np.float32).astype(np.float64)
    kk = f.shape[1]
    kn = int(round((math.sqrt(8 * kk + 1) - 1) / 2))
    L = np.zeros((f.shape[0], kn, kn))
    r, c = np.tril_indices(kn)
    L[:, r, c] = f
    smax2 = np.linalg.eigvalsh(np.einsum("pab,pac->pbc", L, L))[:, -1]
    fro2 = np.einsum("pk,pk->p", f, f)
    g = 4.0 * (kn + 2) * 2.0 ** -24
    return (1.0 + g) * np.maximum(smax2, 0.0) + g * fro2


def _load_experiment(name: str):
    from . import experiments as ex

    if name.endswith(".toml") or Path(name).is_file():
        return ex.from_toml(name)
    return ex.load(name)


def resolve_experiments(experiments) -> list:
    """A list of experiment objects from names ("STEREO,BEST" or ["STEREO", ...]), Experiment
    objects, an ExperimentSet, or a single experiment."""
    if isinstance(experiments, str):
        items = [s.strip() for s in experiments.split(",") if s.strip()]
    elif hasattr(experiments, "null_expectation") and hasattr(experiments, "kind"):
        items = [experiments]
    elif hasattr(experiments, "experiments"):
        items = list(experiments.experiments)
    else:
        items = list(experiments)
    out = [_load_experiment(e) if isinstance(e, str) else e for e in items]
    if not out:
        raise ValueError("no experiments given")
    names = [str(e.name) for e in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"experiment listed more than once: {', '.join(dup)}")
    return out


def _covariance_factor(C, name):
    from .simulation import covariance_factor

    return covariance_factor(C, name)


def whitening_projection(C, V=None, name: str = "covariance", rtol: float = 1e-10) -> np.ndarray:
    """The whitening-projection A (k, n) of a chi2 covariance C (n, n) and nuisance directions
    V (n, q): |A y|^2 = min_a (y - V a)^T C^+ (y - V a) for every y.

    W (W C W^T = I) is the inverse Cholesky factor of C, or diag(lambda^-1/2) U^T on the
    eigenvalues above rtol * max when C is only positive semi-definite (the factorisation and
    the checks are those of :func:`fcmlc.simulation.covariance_factor`: ValueError naming
    `name` for a non-square, non-finite, asymmetric or non-PSD matrix). The nuisances are
    projected out in whitened space: A = B^T W with B an orthonormal basis of the complement of
    span(W V) (rank from the SVD, singular values below 1e-10 * max treated as zero).
    """
    C = np.asarray(C, dtype=float)
    Ft, lower = _covariance_factor(C, name)
    n = C.shape[0]
    if lower:
        from scipy.linalg import solve_triangular

        W = solve_triangular(Ft.T, np.eye(n), lower=True)
    else:
        lam = np.einsum("ij,ij->i", Ft, Ft)  # rows of F^T are sqrt(lambda_a) u_a
        W = Ft / lam[:, None]
    if V is not None:
        V = np.asarray(V, dtype=float)
        if V.ndim != 2 or V.shape[0] != n:
            raise ValueError(f"{name}: nuisance directions must have shape ({n}, n_nuisances), got {V.shape}")
        if not np.all(np.isfinite(V)):
            raise ValueError(f"{name}: nuisance directions contain NaN or inf")
        if V.shape[1] > 0:
            B = W @ V
            U, s, _ = np.linalg.svd(B, full_matrices=True)
            rank = int(np.sum(s > 1e-10 * s[0])) if s.size and s[0] > 0 else 0
            W = U[:, rank:].T @ W
    return np.ascontiguousarray(W)


def _packed_inverse_cholesky(G, name: str = "experiment") -> np.ndarray:
    """(n, k(k+1)/2): row-packed lower triangles of L^-1 with L L^T = G for each of the n
    matrices G (n, k, k). A point whose G is not numerically positive definite (a group with no
    expected events) gets a ridge of 1e-12 * trace(G) / k first."""
    n, k, _ = G.shape
    try:
        L = np.linalg.cholesky(G)
    except np.linalg.LinAlgError:
        L = np.empty_like(G)
        for i in range(n):
            try:
                L[i] = np.linalg.cholesky(G[i])
            except np.linalg.LinAlgError:
                ridge = 1e-12 * max(float(np.trace(G[i])) / k, 1e-300)
                try:
                    L[i] = np.linalg.cholesky(G[i] + ridge * np.eye(k))
                except np.linalg.LinAlgError:
                    raise ValueError(f"{name}: the normalisation matrix G at grid point {i} is not positive "
                                     "semi-definite") from None
    eye = np.broadcast_to(np.eye(k), G.shape)
    Linv = np.linalg.solve(L, eye)
    r, c = np.tril_indices(k)
    return np.ascontiguousarray(Linv[:, r, c])


def _group_matrix(groups, k: int) -> np.ndarray:
    """E (n_bins, k): E[i, g] = 1 when bin i is in normalisation group g (every bin in one)."""
    E = np.zeros((len(groups), k))
    E[np.arange(len(groups)), groups] = 1.0
    return E


def _norm_chi2(X, M, p) -> np.ndarray:
    """Exact profile chi2 of rows of X at expectations M for a normalisation-group part p."""
    k = int(p.groups.max()) + 1
    E = _group_matrix(p.groups, k)
    out = np.empty(X.shape[0])
    for i, (x, mu) in enumerate(zip(X, M)):
        y = p.Ci @ x
        U = mu[:, None] * E
        G = U.T @ p.Ci @ U + p.prior * np.eye(k)
        b = U.T @ y + p.prior
        out[i] = x @ y + k * p.prior - b @ np.linalg.lstsq(G, b, rcond=None)[0]
    return out


def _digest_arrays(h, *arrays):
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(np.asarray(a, dtype=float))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())


# --- the chi2 model ---------------------------------------------------------------------


@dataclass
class _Part:
    """Everything the compiled kernel needs for one experiment (picklable)."""

    name: str
    kind: str
    linear: bool
    n_bins: int
    A: np.ndarray
    N0: np.ndarray
    D: np.ndarray | None = None  # linear: (n_dm2, n_bins)
    mu_grid: np.ndarray | None = None  # general: (n_points, n_bins)
    sampler: object | None = None  # fcmlc.simulation._Sampler (toys)
    # multiplicative normalisation groups (k_norm > 0): exact profile, see the module docstring
    norm: bool = False
    n_effective: int = 0
    Ci: np.ndarray | None = None  # C^+
    groups: np.ndarray | None = None
    prior: float = 0.0  # 1 / sigma^2 (0: free)
    factors: np.ndarray | None = None  # (n_points, k(k+1)/2) packed inverse Cholesky factors of G'(p)


class Chi2Model:
    """The chi2 of a set of experiments on a grid, precomputed for fast scans and FC toys.

    ``Chi2Model(experiments, grid)``: `experiments` are names ("STEREO,BEST"), Experiment
    objects, or an ExperimentSet; `grid` defaults to the paper's 101 x 101 grid. Data vectors
    are the experiments' bins concatenated in the given order.
    """

    def __init__(self, experiments, grid: Grid | None = None):
        grid = Grid.paper() if grid is None else grid
        if not isinstance(grid, Grid):
            raise ValueError(f"grid must be an fcmlc.Grid, got {type(grid).__name__}")
        exps = resolve_experiments(experiments)
        self.grid = grid
        self.experiments = exps
        self.names = tuple(str(e.name) for e in exps)
        self.definition_hashes = tuple(str(getattr(e, "definition_hash", "")) for e in exps)
        self.n_bins_each = tuple(int(e.n_bins) for e in exps)
        self.n_bins = int(sum(self.n_bins_each))
        self._parts: list[_Part] = []
        h = hashlib.sha256(json.dumps({"grid": grid.to_dict(), "names": list(self.names)}).encode())
        for e in exps:
            self._parts.append(self._part(e, h))
        self.model_digest = h.hexdigest()[:32]
        self._kernel = None
        self._generators = False

    def _part(self, e, h) -> _Part:
        name = str(e.name)
        n = int(e.n_bins)
        N0 = np.asarray(e.null_expectation, dtype=float)
        if N0.shape != (n,) or not np.all(np.isfinite(N0)):
            raise ValueError(f"{name}: null_expectation must be {n} finite numbers, got shape {N0.shape}")
        kind = str(getattr(e, "kind", "covariance"))
        k_norm = int(getattr(e, "n_norm_groups", 0) or 0) if kind == "covariance" else 0
        linear = bool(getattr(e, "linear_in_s2", False))
        if k_norm > 0:
            return self._norm_part(e, h, name, n, N0, kind, linear, k_norm)
        A = whitening_projection(e.covariance, None, f"{name} covariance")
        if A.shape[1] != n:
            raise ValueError(f"{name}: covariance is {A.shape[1]} x {A.shape[1]} but the experiment has {n} bins")
        _digest_arrays(h, N0, e.covariance)
        h.update(f"{name}|{kind}|{linear}|{int(e.stream_id) & UINT64_MAX}".encode())
        if linear:
            D = np.ascontiguousarray(e.deficit(self.grid.dm2), dtype=float)
            if D.shape != (self.grid.n_dm2, n):
                raise ValueError(f"{name}: deficit(dm2) must have shape ({self.grid.n_dm2}, {n}), got {D.shape}")
            _digest_arrays(h, D)
            return _Part(name, kind, True, n, A, N0, D=D)
        mu = np.ascontiguousarray(self._expectation_rows(e, *self.grid.points().T), dtype=float)
        if mu.shape != (self.grid.n_points, n):
            raise ValueError(f"{name}: expectations on the grid must have shape ({self.grid.n_points}, {n}), "
                             f"got {mu.shape}")
        _digest_arrays(h, mu)
        return _Part(name, kind, False, n, A, N0, mu_grid=mu)

    def _norm_part(self, e, h, name, n, N0, kind, linear, k) -> _Part:
        """An experiment with k multiplicative normalisation groups: C^+ and, per grid point, the
        packed inverse Cholesky factor of G'(p) = E^T diag(mu_p) C^+ diag(mu_p) E + I / sigma^2."""
        C = np.asarray(e.covariance, dtype=float)
        if C.shape != (n, n):
            raise ValueError(f"{name}: covariance is {C.shape} but the experiment has {n} bins")
        W = whitening_projection(C, None, f"{name} covariance")  # W^T W = C^+
        groups = np.ascontiguousarray(e.norm_groups, dtype=np.int64)
        if groups.shape != (n,) or np.any(groups < 0) or groups.max() != k - 1:
            raise ValueError(f"{name}: norm_groups must assign every bin to a group 0..{k - 1}")
        E = _group_matrix(groups, k)
        sigma = float(getattr(e, "norm_prior", 0.0) or 0.0)
        prior = 1.0 / sigma**2 if sigma > 0 else 0.0
        Ci = np.ascontiguousarray(W.T @ W)
        Aw = whitening_projection(C, N0[:, None] * E, f"{name} covariance")  # whiten(): the null's projection
        _digest_arrays(h, N0, C, groups.astype(float), np.array([sigma]))
        h.update(f"{name}|{kind}|{linear}|norm{k}|{int(e.stream_id) & UINT64_MAX}".encode())
        g = self.grid
        nu = g.n_ue4
        if linear:
            D = np.ascontiguousarray(e.deficit(g.dm2), dtype=float)
            if D.shape != (g.n_dm2, n):
                raise ValueError(f"{name}: deficit(dm2) must have shape ({g.n_dm2}, {n}), got {D.shape}")
            _digest_arrays(h, D)
            s2 = np.asarray(g.sin2_2theta, dtype=float)
            G = np.empty((g.n_points, k, k))
            for j in range(g.n_dm2):
                mu = N0[None, :] - s2[:, None] * D[j][None, :]  # (nu, n)
                U = np.einsum("rn,un,nk->urk", W, mu, E, optimize=True)
                G[j * nu:(j + 1) * nu] = np.einsum("urk,url->ukl", U, U)
            part = _Part(name, kind, True, n, Aw, N0, D=D)
        else:
            mu_grid = np.ascontiguousarray(self._expectation_rows(e, *g.points().T), dtype=float)
            if mu_grid.shape != (g.n_points, n):
                raise ValueError(f"{name}: expectations on the grid must have shape ({g.n_points}, {n}), "
                                 f"got {mu_grid.shape}")
            _digest_arrays(h, mu_grid)
            G = np.empty((g.n_points, k, k))
            for p0 in range(0, g.n_points, 1024):
                U = np.einsum("rn,pn,nk->prk", W, mu_grid[p0:p0 + 1024], E, optimize=True)
                G[p0:p0 + 1024] = np.einsum("prk,prl->pkl", U, U)
            part = _Part(name, kind, False, n, Aw, N0, mu_grid=mu_grid)
        if prior > 0:
            G += prior * np.eye(k)
        part.norm = True
        part.n_effective = int(W.shape[0]) - k
        part.Ci = Ci
        part.groups = groups
        part.prior = prior
        part.factors = _packed_inverse_cholesky(G, name)
        return part

    @staticmethod
    def _expectation_rows(e, ue4, dm2):
        from .simulation import expectation_rows

        return expectation_rows(e, ue4, dm2)

    # -- pickling (Dask): ship the arrays, rebuild the compiled kernel on the worker --------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_kernel"] = None
        state.pop("_torch_cache", None)  # device tensors of the torch backend: rebuilt where used
        state["experiments"] = None  # not needed on workers: expectations travel with the tasks
        return state

    @property
    def kernel(self):
        """The compiled :class:`fcmlc._core.Chi2Kernel` (built on first use)."""
        if self._kernel is None:
            k = _core.Chi2Kernel(self.grid.sin2_2theta, self.grid.n_dm2)
            for p in self._parts:
                if p.norm:
                    i = k.add_norm(p.name, p.A, p.N0, p.Ci, p.groups, p.prior, p.factors, p.linear,
                                   p.D if p.linear else p.mu_grid)
                    if p.linear:
                        k.set_prune_factors(i, _prune_factors(p.factors))
                elif p.linear:
                    k.add_linear(p.name, p.A, p.N0, p.D)
                else:
                    k.add_general(p.name, p.A, p.N0, p.mu_grid)
            self._kernel = k
            self._generators = False
        if not self._generators and all(p.sampler is not None for p in self._parts):
            self._attach_generators(self._kernel)
        return self._kernel

    def _attach_generators(self, k):
        for i, p in enumerate(self._parts):
            s = p.sampler
            if s.kind == "pulls":
                k.set_pull_generator(i, s.stream, s.J, s.Lp, s.lo, s.sigma)
            else:
                k.set_gaussian_generator(i, s.stream, s.factor_t, float(s.norm_sigma))
        self._generators = True

    def prepare_toys(self):
        """Set up the toy generators (the samplers of ``simulate``); needs the experiments."""
        if all(p.sampler is not None for p in self._parts):
            return self
        if self.experiments is None:
            raise ValueError("this Chi2Model was unpickled without its experiments; prepare toys before shipping")
        from .simulation import _Sampler

        for p, e in zip(self._parts, self.experiments):
            p.sampler = _Sampler.of(e)
        self.kernel  # noqa: B018 - attaches the generators
        return self

    def toy_expectations(self, point_ids) -> list[np.ndarray]:
        """Per experiment, the expectations (n, n_bins) at grid points `point_ids`, computed
        exactly as ``simulate`` computes them (the means of the toys)."""
        pid = np.asarray(point_ids, dtype=np.int64)
        out = []
        for p, e in zip(self._parts, self.experiments or [None] * len(self._parts)):
            if p.mu_grid is not None:
                out.append(np.ascontiguousarray(p.mu_grid[pid]))
            else:
                if e is None:
                    raise ValueError("this Chi2Model was unpickled without its experiments")
                pts = self.grid.points()[pid]
                out.append(np.ascontiguousarray(self._expectation_rows(e, pts[:, 0], pts[:, 1]), dtype=float))
        return out

    # -- data ------------------------------------------------------------------------------
    @property
    def n_effective_bins(self) -> int:
        """sum_e (rank(C_e) - k_e): the dimension left after whitening and profiling the k_e
        normalisations of each experiment."""
        return int(sum(p.n_effective if p.norm else p.A.shape[0] for p in self._parts))

    def data_matrix(self, x) -> np.ndarray:
        """Data as a (n_data, n_bins) float64 array. `x` is a concatenated vector (n_bins,) or a
        batch (n_data, n_bins), a list of per-experiment arrays, or a dict name -> array."""
        if isinstance(x, dict):
            missing = [n for n in self.names if n not in x]
            extra = [k for k in x if k not in self.names]
            if missing or extra:
                raise ValueError(f"data dict must have exactly the keys {list(self.names)}"
                                 + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
            x = [x[n] for n in self.names]
        if isinstance(x, (list, tuple)) and len(x) == len(self.names) and all(np.ndim(a) >= 1 for a in x) \
                and len(self.names) > 1:
            parts = [np.asarray(a, dtype=float) for a in x]
            for a, n, name in zip(parts, self.n_bins_each, self.names):
                if a.shape[-1] != n:
                    raise ValueError(f"data for {name} must have {n} bins, got shape {a.shape}")
            if all(a.ndim == 1 for a in parts):  # one data vector
                x = np.concatenate(parts)
            else:
                x = np.concatenate([np.atleast_2d(a) for a in parts], axis=-1)
        x = np.asarray(x, dtype=float)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.ndim != 2 or x.shape[1] != self.n_bins:
            raise ValueError(f"data must have {self.n_bins} bins ({' + '.join(map(str, self.n_bins_each))} for "
                             f"{', '.join(self.names)}) on its last axis, got shape {np.shape(x)}")
        if not np.all(np.isfinite(x)):
            row, col = np.argwhere(~np.isfinite(x))[0]
            name, b = self._locate(int(col))
            raise ValueError(f"data contain a non-finite value ({x[row, col]}) in {name} bin {b}"
                             + (f" of data vector {row}" if not single else ""))
        return np.ascontiguousarray(x), single

    def _locate(self, col):
        for name, n in zip(self.names, self.n_bins_each):
            if col < n:
                return name, col
            col -= n
        return "?", col

    def whiten(self, x) -> np.ndarray:
        """r = A_e (x_e - N0_e) of every experiment, concatenated: (n_data, n_effective_bins).

        A_e whitens C_e and, for an experiment with normalisation groups, projects out the
        normalisations *at the null expectation* (directions diag(N0) E): |r|^2 is the chi2 of
        the no-oscillation hypothesis exactly, but the chi2 at another expectation mu is not
        |A (x - mu)|^2 (the normalisations scale mu): use :meth:`chi2_at` for that."""
        X, single = self.data_matrix(x)
        r = self.kernel.whiten(X)
        return r[0] if single else r

    def chi2_at(self, x, expectations) -> np.ndarray:
        """The exact profiled chi2 of data `x` (one vector or (n_data, n_bins)) at given
        expectations (n_bins,) or (n_data, n_bins), experiments concatenated (NumPy; for a few
        off-grid points, e.g. a true parameter point)."""
        X, single = self.data_matrix(x)
        M = np.atleast_2d(np.asarray(expectations, dtype=float))
        M = np.broadcast_to(M, X.shape)
        out = np.zeros(X.shape[0])
        off = 0
        for p in self._parts:
            xs, ms = X[:, off:off + p.n_bins], M[:, off:off + p.n_bins]
            if p.norm:
                out += _norm_chi2(xs, ms, p)
            else:
                out += np.sum(((xs - ms) @ p.A.T) ** 2, axis=1)
            off += p.n_bins
        return out[0] if single else out

    def chi2(self, x, threads=None) -> "Chi2Scan":
        return chi2_scan(self, x, threads=threads)

    def __repr__(self) -> str:
        return f"Chi2Model({list(self.names)}, grid={self.grid.shape}, effective bins={self.n_effective_bins})"


# --- chi2 scan --------------------------------------------------------------------------


@dataclass
class Chi2Scan:
    """chi2 of data on the grid. Maps have shape (n_dm2, n_ue4) (rows = dm2), or
    (n_data, n_dm2, n_ue4) for a batch."""

    chi2: np.ndarray
    min: np.ndarray | float
    best_index: np.ndarray | int
    grid: Grid
    n_effective_bins: int

    @property
    def delta_chi2(self) -> np.ndarray:
        """chi2 - min over the grid."""
        return self.chi2 - np.asarray(self.min)[..., None, None]

    @property
    def best_point(self):
        """(|Ue4|, dm2) of the grid minimum: a tuple, or an (n_data, 2) array for a batch."""
        pts = self.grid.points()[np.asarray(self.best_index)]
        return (float(pts[0]), float(pts[1])) if np.ndim(self.best_index) == 0 else pts

    @property
    def best_sin2_2theta(self):
        u = np.asarray(self.best_point)[..., 0]
        return float(sin2_2theta(u)) if np.ndim(u) == 0 else sin2_2theta(u)

    @property
    def ndof(self) -> int:
        """Effective bins minus the two oscillation parameters (for a goodness-of-fit p-value)."""
        return self.n_effective_bins - 2

    def wilks(self, levels=WILKS_LEVELS, dof: int = 2) -> dict:
        return wilks_regions(self.delta_chi2, levels, dof)

    def raster(self, level: float = 0.90) -> np.ndarray:
        return raster_limits(self.delta_chi2, level, self.grid)


def chi2_scan(model_or_experiments, x, grid: Grid | None = None, threads: int | None = None) -> Chi2Scan:
    """chi2 of the data `x` at every grid point (C++ kernel; float64 throughout).

    `model_or_experiments` is a :class:`Chi2Model` or anything :class:`Chi2Model` accepts
    (then `grid`, default the paper's, is used). `x` is one concatenated data vector, a batch
    (n_data, n_bins), a list of per-experiment vectors, or a dict name -> vector.
    """
    model = model_or_experiments if isinstance(model_or_experiments, Chi2Model) else Chi2Model(model_or_experiments,
                                                                                             grid)
    if grid is not None and isinstance(model_or_experiments, Chi2Model) and grid != model.grid:
        raise ValueError("grid differs from the Chi2Model's grid")
    X, single = model.data_matrix(x)
    chi2, mn, am = _core.chi2_scan(model.kernel, X, threads)
    g = model.grid
    chi2 = chi2.reshape(X.shape[0], g.n_dm2, g.n_ue4)
    if single:
        return Chi2Scan(chi2[0], float(mn[0]), int(am[0]), g, model.n_effective_bins)
    return Chi2Scan(chi2, mn, am, g, model.n_effective_bins)


# --- Wilks and raster scans ---------------------------------------------------------------


def wilks_threshold(level: float, dof: int = 2) -> float:
    """Delta-chi2 threshold of Wilks' theorem: the `level` quantile of chi2 with `dof` degrees
    of freedom (2.30, 4.61, 5.99, 9.21 for 68.27/90/95/99% with 2 dof)."""
    from scipy.stats import chi2

    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    return float(chi2.ppf(level, dof))


def wilks_regions(delta_chi2, levels=WILKS_LEVELS, dof: int = 2) -> dict:
    """Wilks' confidence regions: {level: bool mask (Delta-chi2 <= chi2_dof quantile)}."""
    d = np.asarray(delta_chi2, dtype=float)
    if np.any(np.isnan(d)):
        raise ValueError("delta_chi2 contains NaN")
    return {float(L): d <= wilks_threshold(L, dof) for L in np.atleast_1d(levels)}


def raster_limits(delta_chi2, level: float = 0.90, grid: Grid | None = None) -> np.ndarray:
    """One-parameter raster scan: for each dm2 row, Delta-chi2 relative to the row minimum
    against the 1-dof threshold (2.71 at 90%); returns the upper limit on |Ue4| per dm2,
    shape (n_dm2,), interpolated linearly in log|Ue4| between the last grid point below and the
    first above the threshold (above the row's best fit). NaN where the row never crosses the
    threshold (no limit inside the grid). `grid` defaults to the paper's ranges with the map's
    shape."""
    d = np.asarray(delta_chi2, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"delta_chi2 must be a (n_dm2, n_ue4) map, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("delta_chi2 contains NaN or inf")
    grid = Grid(shape=(d.shape[1], d.shape[0])) if grid is None else grid
    if (grid.n_dm2, grid.n_ue4) != d.shape:
        raise ValueError(f"map shape {d.shape} does not match the grid (n_dm2, n_ue4) = {(grid.n_dm2, grid.n_ue4)}")
    thr = wilks_threshold(level, 1)
    logu = np.log(grid.ue4)
    out = np.full(d.shape[0], np.nan)
    for j, row in enumerate(d):
        row = row - row.min()
        u0 = int(np.argmin(row))
        above = np.flatnonzero(row[u0:] > thr)
        if above.size == 0:
            continue
        u = u0 + int(above[0])
        f = (thr - row[u - 1]) / (row[u] - row[u - 1])
        out[j] = math.exp(logu[u - 1] + f * (logu[u] - logu[u - 1]))
    return out


# --- Feldman-Cousins ----------------------------------------------------------------------


def order_statistic_index(level: float, n: int) -> int:
    """0-based index of the ceil(level * n)-th smallest of n values (clipped to [0, n-1]);
    1e-9 guards against 0.9 * 1000 = 900.0000000000001."""
    k = int(math.ceil(float(level) * n - 1e-9))
    return min(max(k, 1), n) - 1


def critical_values(delta, levels) -> np.ndarray:
    """Critical values (n_levels, n_points) from toys `delta` (n_points, n_toys) by the
    order-statistic convention of :data:`QUANTILE_CONVENTION`."""
    delta = np.asarray(delta, dtype=float)
    n = delta.shape[-1]
    ks = [order_statistic_index(L, n) for L in levels]
    part = np.partition(delta, sorted(set(ks)), axis=-1)
    return np.stack([part[..., k] for k in ks])


def _check_levels(levels) -> tuple:
    lv = tuple(float(L) for L in np.atleast_1d(levels))
    if not lv:
        raise ValueError("levels must not be empty")
    for L in lv:
        if not 0 < L < 1:
            raise ValueError(f"confidence levels must lie in (0, 1), got {L}")
    return lv


def _check_seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    if not 0 <= int(seed) <= UINT64_MAX:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed}")
    return int(seed)


def fc_toys(model: Chi2Model, point_ids, n_toys: int, seed: int, toy_offset: int = 0, threads: int | None = None,
            return_best: bool = False, backend: str = "cpu", device=None):
    """Delta-chi2 = chi2(p) - min over the grid of toys t = toy_offset .. toy_offset + n_toys - 1
    at true grid points p (`point_ids`): array (n_points, n_toys) [, best-fit point index].
    With backend 'cpu', toy t at point p is realization t of point p in ``simulate`` with the
    same seed; backend 'torch' draws statistically equivalent toys (:mod:`fcmlc._fc_torch`)."""
    model.prepare_toys()
    pid = np.ascontiguousarray(np.atleast_1d(point_ids), dtype=np.int64)
    mu = model.toy_expectations(pid)
    if backend == "cpu":
        return _core.fc_toys(model.kernel, pid, mu, int(n_toys), _check_seed(seed), int(toy_offset), return_best,
                             threads)
    if backend == "torch":
        from ._fc_torch import fc_toys_torch

        return fc_toys_torch(model, pid, mu, int(n_toys), _check_seed(seed), int(toy_offset), return_best, device)
    raise ValueError(f"backend must be 'cpu' or 'torch', got {backend!r}")


@dataclass
class FCResult:
    """Feldman-Cousins critical values on the grid.

    ``critical`` has shape (n_levels, n_dm2, n_ue4): at grid point p and level L, the
    Delta-chi2 below which a fraction >= L of the toys generated at p fall (see
    :data:`QUANTILE_CONVENTION`); NaN where not computed (``done`` is False)."""

    critical: np.ndarray
    levels: tuple
    grid: Grid
    n_toys: int
    seed: int
    experiments: tuple
    definition_hashes: tuple
    model_digest: str
    done: np.ndarray
    fcmlc_version: str = __version__
    path: Path | None = None
    toys: np.ndarray | None = None  # (n_points, n_toys) float32 when stored
    meta: dict = field(default_factory=dict)
    #: where the toys come from: "simulate" (the realizations of ``simulate``, backend 'cpu') or
    #: "torch-<device type>" (statistically equivalent draws of the torch backend)
    toy_source: str = "simulate"

    @property
    def complete(self) -> bool:
        return bool(np.all(self.done))

    def _level_index(self, level: float) -> int:
        for i, L in enumerate(self.levels):
            if abs(L - float(level)) < 1e-12:
                return i
        raise ValueError(f"level {level} was not computed; available: {list(self.levels)}")

    def critical_value(self, level: float) -> np.ndarray:
        """(n_dm2, n_ue4) critical-value map at `level`."""
        return self.critical[self._level_index(level)]

    def region(self, delta_chi2, level: float) -> np.ndarray:
        """Feldman-Cousins confidence region: bool mask, True where the data's Delta-chi2 (map
        (n_dm2, n_ue4), relative to the data's grid minimum) <= the critical value. Points not
        computed are outside."""
        d = np.asarray(delta_chi2, dtype=float)
        if d.shape != self.critical.shape[1:]:
            raise ValueError(f"delta_chi2 must have the grid's map shape {self.critical.shape[1:]}, got {d.shape}")
        c = self.critical_value(level)
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(c), False, d <= c)

    def settings(self) -> dict:
        return _fc_settings(self.grid, self.n_toys, self.seed, self.levels, self.experiments, self.definition_hashes,
                            self.model_digest, self.toys is not None, self.fcmlc_version, self.toy_source)

    @classmethod
    def load(cls, path) -> "FCResult":
        path = Path(path)
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FC_FORMAT:
                raise ValueError(f"{path} is not an fcmlc Feldman-Cousins file")
            a = _read_attrs(f)
            g = Grid.from_dict(a["grid"])
            crit = f["critical"][...].reshape(len(a["levels"]), g.n_dm2, g.n_ue4)
            done = f["done"][...].astype(bool).reshape(g.n_dm2, g.n_ue4)
            toys = f["toys"][...] if "toys" in f else None
        return cls(crit, tuple(a["levels"]), g, a["n_toys"], a["seed"], tuple(a["experiments"]),
                   tuple(a["definition_hashes"]), a["model_digest"], done, a["fcmlc_version"], path, toys,
                   toy_source=a.get("toy_source", "simulate"))

    def save(self, path) -> Path:
        """Write to a new HDF5 file (same schema as :func:`feldman_cousins` writes)."""
        path = Path(path)
        s = self.settings()
        _create_fc_file(path, s, self.grid.n_points, self.toys is not None, chunk=min(self.grid.n_points, 4096))
        with h5py.File(path, "r+") as f:
            f["critical"][...] = self.critical.reshape(len(self.levels), -1)
            f["done"][...] = self.done.ravel().astype(np.uint8)
            if self.toys is not None:
                f["toys"][...] = self.toys
            f.attrs["complete"] = self.complete
        return path


def _fc_settings(grid, n_toys, seed, levels, names, hashes, digest, store_toys, version=__version__,
                 toy_source="simulate") -> dict:
    return {
        "format": FC_FORMAT,
        "format_version": FC_FORMAT_VERSION,
        "fcmlc_version": version,
        "grid": grid.to_dict(),
        "n_toys": int(n_toys),
        "seed": int(seed),
        "levels": [float(L) for L in levels],
        "experiments": list(names),
        "definition_hashes": list(hashes),
        "model_digest": digest,
        "store_toys": bool(store_toys),
        "toy_source": str(toy_source),
        "quantile": QUANTILE_CONVENTION,
    }


_JSON_ATTRS = ("grid", "levels", "experiments", "definition_hashes")


def _read_attrs(f) -> dict:
    a = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if k in _JSON_ATTRS:
            v = json.loads(v)
        elif k == "seed":
            v = int(v)
        elif isinstance(v, np.generic):
            v = v.item()
        a[k] = v
    return a


def _create_fc_file(path: Path, s: dict, n_points: int, store_toys: bool, chunk: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".creating")
    with h5py.File(tmp, "w") as f:
        for k, v in s.items():
            f.attrs[k] = json.dumps(v) if k in _JSON_ATTRS else (str(v) if k == "seed" else v)
        f.attrs["complete"] = False
        nl = len(s["levels"])
        # contiguous, allocated at creation: writing a chunk never changes HDF5 metadata, so a
        # run killed mid-write leaves a readable file whose unfinished chunk is just not done
        f.create_dataset("critical", shape=(nl, n_points), dtype="f8", fillvalue=np.nan)
        f["critical"][...] = np.nan
        f.create_dataset("done", shape=(n_points,), dtype="u1", fillvalue=0)
        f["done"][...] = 0
        if store_toys:
            f.create_dataset("toys", shape=(n_points, s["n_toys"]), dtype="f4", fillvalue=np.nan)
            f["toys"][...] = np.nan
    tmp.replace(path)


def _settings_mismatch(f, s: dict) -> list[str]:
    a = _read_attrs(f)
    diffs = []
    for k, v in s.items():
        if k == "quantile":
            continue
        have = a.get(k)
        if have != v:
            diffs.append(f"{k}: file has {have!r}, requested {v!r}")
    return diffs


def _fc_chunk(model: Chi2Model, point_ids, mu, n_toys, seed, levels, threads, store_toys, backend="cpu", device=None):
    """One chunk of grid points: critical values (n_levels, n) [and toys as float32]."""
    pid = np.ascontiguousarray(point_ids, dtype=np.int64)
    if backend == "cpu":
        delta = _core.fc_toys(model.kernel, pid, mu, int(n_toys), seed, 0, False, threads)
    else:
        from ._fc_torch import fc_toys_torch

        delta = fc_toys_torch(model, pid, mu, int(n_toys), seed, 0, False, device)
    crit = critical_values(delta, levels)
    return crit, (delta.astype(np.float32) if store_toys else None)


def _default_chunk_points(n_toys: int) -> int:
    # ~2e5 toys per chunk: about a second of work for a STEREO-size experiment on 2 cores
    return int(max(1, min(4096, 200_000 // max(1, n_toys))))


def feldman_cousins(experiments, grid: Grid | None = None, n_toys: int = 1000, seed: int = 0,
                    levels: Sequence[float] = FC_LEVELS, out=None, threads: int | None = None,
                    chunk_points: int | None = None, scheduler=None, progress: bool = True, points=None,
                    store_toys: bool = False, overwrite: bool = False, backend: str = "cpu",
                    device=None) -> FCResult:
    """Feldman-Cousins critical values at every grid point (or at `points`, grid indices).

    At each true grid point p, `n_toys` pseudo-experiments are drawn with the samplers and
    keying of ``simulate`` (toy t = realization t of point p under `seed`), each is scanned over
    the whole grid, and the critical value at level L is the ceil(L n_toys)-th smallest
    Delta-chi2 = chi2(p) - min_grid chi2 (:data:`QUANTILE_CONVENTION`).

    `experiments`: names, Experiment objects, an ExperimentSet, or a :class:`Chi2Model`.
    `out`: HDF5 path; written chunk by chunk (`chunk_points` grid points) with a done-mask, so
    rerunning the same call after an interruption resumes and gives a file identical to an
    uninterrupted run. An existing file made with other settings (seed, grid, experiments,
    toys, levels, fcmlc version) is refused unless ``overwrite=True``; a finished one is
    loaded, not recomputed. Results are identical for any `threads`, `chunk_points`, and with a
    Dask `scheduler` (address or ``distributed.Client``). `backend='torch'` runs the toys with
    PyTorch on `device` (default CUDA when available): statistically equivalent toys, not the
    realizations of ``simulate`` (see :mod:`fcmlc._fc_torch`); the file records the toy source
    and a run with another backend is refused like any other settings change."""
    model = experiments if isinstance(experiments, Chi2Model) else Chi2Model(experiments, grid)
    if grid is not None and grid != model.grid:
        raise ValueError("grid differs from the Chi2Model's grid")
    grid = model.grid
    n_toys = int(n_toys)
    if n_toys < 1:
        raise ValueError(f"n_toys must be >= 1, got {n_toys}")
    seed = _check_seed(seed)
    levels = _check_levels(levels)
    if backend not in ("cpu", "torch"):
        raise ValueError(f"backend must be 'cpu' or 'torch', got {backend!r}")
    toy_source = "simulate"
    if backend == "torch":
        from ._fc_torch import resolve_device

        device = str(resolve_device(device))
        toy_source = f"torch-{device.split(':')[0]}"
    if points is None:
        wanted = np.arange(grid.n_points, dtype=np.int64)
    else:
        wanted = np.unique(np.asarray(points, dtype=np.int64).ravel())
        if wanted.size == 0 or wanted[0] < 0 or wanted[-1] >= grid.n_points:
            raise ValueError(f"points must be grid point indices in [0, {grid.n_points})")
    chunk_points = _default_chunk_points(n_toys) if chunk_points is None else int(chunk_points)
    if chunk_points < 1:
        raise ValueError(f"chunk_points must be >= 1, got {chunk_points}")
    model.prepare_toys()
    s = _fc_settings(grid, n_toys, seed, levels, model.names, model.definition_hashes, model.model_digest,
                     store_toys, toy_source=toy_source)

    if out is None:
        crit = np.full((len(levels), grid.n_points), np.nan)
        done = np.zeros(grid.n_points, dtype=np.uint8)
        toys = np.full((grid.n_points, n_toys), np.nan, dtype=np.float32) if store_toys else None
        sink = _MemorySink(crit, done, toys)
        _run_fc(model, wanted, n_toys, seed, levels, threads, chunk_points, scheduler, progress, store_toys, sink,
                backend, device, "FC")
        return FCResult(crit.reshape(len(levels), grid.n_dm2, grid.n_ue4), levels, grid, n_toys, seed, model.names,
                        model.definition_hashes, model.model_digest, done.astype(bool).reshape(grid.n_dm2, grid.n_ue4),
                        toys=toys, meta={"elapsed_s": sink.elapsed}, toy_source=toy_source)

    out = Path(out)
    if out.exists() and not overwrite:
        try:
            with h5py.File(out, "r") as f:
                if f.attrs.get("format") != FC_FORMAT:
                    raise ValueError(f"{out} exists and is not an fcmlc Feldman-Cousins file; choose another output "
                                     "path or pass overwrite=True (--overwrite)")
                diffs = _settings_mismatch(f, s)
        except OSError as e:
            raise ValueError(f"{out} exists and cannot be read as HDF5 ({e}); choose another output path or pass "
                             "overwrite=True (--overwrite)") from None
        if diffs:
            raise ValueError(f"{out} exists and was made with different settings ({'; '.join(diffs)}); refusing to "
                             "resume or overwrite it: choose another output path or pass overwrite=True (--overwrite)")
    else:
        if out.exists():
            out.unlink()
        _create_fc_file(out, s, grid.n_points, store_toys, chunk_points)

    from .simulation import _sigterm_as_interrupt

    with h5py.File(out, "r+") as f, _sigterm_as_interrupt():
        sink = _FileSink(f)
        try:
            _run_fc(model, wanted, n_toys, seed, levels, threads, chunk_points, scheduler, progress, store_toys, sink,
                    backend, device, f"FC -> {out.name}")
        except KeyboardInterrupt:
            f.flush()
            print(f"\ninterrupted: {int(f['done'][...].sum())}/{grid.n_points} grid points written to {out}; "
                  "rerun the same command to resume", file=sys.stderr)
            raise
        f.attrs["complete"] = bool(np.all(f["done"][...] == 1))
    res = FCResult.load(out)
    res.meta["elapsed_s"] = sink.elapsed
    return res


class _MemorySink:
    def __init__(self, crit, done, toys):
        self.crit, self.done, self.toys = crit, done, toys
        self.elapsed = 0.0

    def pending(self, wanted):
        return wanted[self.done[wanted] == 0]

    def write(self, pid, crit, toys, dt):
        self.crit[:, pid] = crit
        if toys is not None:
            self.toys[pid] = toys
        self.done[pid] = 1
        self.elapsed += dt


class _FileSink:
    def __init__(self, f):
        self.f = f
        self.elapsed = 0.0  # not stored: a resumed file must be identical to an uninterrupted one

    def pending(self, wanted):
        done = self.f["done"][...]
        return wanted[done[wanted] == 0]

    def write(self, pid, crit, toys, dt):
        f = self.f
        sl = slice(int(pid[0]), int(pid[-1]) + 1) if pid[-1] - pid[0] + 1 == pid.size else np.asarray(pid)
        f["critical"][:, sl] = crit
        if toys is not None:
            f["toys"][sl] = toys
        f.flush()
        f["done"][sl] = 1
        f.flush()
        self.elapsed += dt


def _run_fc(model, wanted, n_toys, seed, levels, threads, chunk_points, scheduler, progress, store_toys, sink,
            backend, device, desc):
    pending = sink.pending(wanted)
    chunks = [pending[i:i + chunk_points] for i in range(0, pending.size, chunk_points)]
    bar = None
    if progress and chunks:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(pending.size), unit="pt", desc=desc, smoothing=0.1)
    try:
        if scheduler is None:
            for pid in chunks:
                t0 = time.perf_counter()
                crit, toys = _fc_chunk(model, pid, model.toy_expectations(pid), n_toys, seed, levels, threads,
                                       store_toys, backend, device)
                sink.write(pid, crit, toys, time.perf_counter() - t0)
                if bar is not None:
                    bar.update(pid.size)
                    bar.set_postfix_str(f"{pid.size * n_toys / max(time.perf_counter() - t0, 1e-9):.3g} toys/s")
        else:
            _run_fc_dask(model, chunks, n_toys, seed, levels, threads, store_toys, sink, scheduler, bar, backend,
                         device)
    finally:
        if bar is not None:
            bar.close()


def _run_fc_dask(model, chunks, n_toys, seed, levels, threads, store_toys, sink, scheduler, bar, backend, device):
    from ._dask import map_bounded

    def on_result(pid, result, seconds):
        crit, toys = result
        sink.write(pid, crit, toys, seconds)
        if bar is not None:
            bar.update(pid.size)

    map_bounded(scheduler, model, chunks, _fc_chunk,
                lambda pid: (pid, model.toy_expectations(pid), n_toys, seed, levels, threads, store_toys, backend,
                             device),
                on_result)


# --- pseudo-data ------------------------------------------------------------------------------


def asimov_data(model: Chi2Model, ue4: float, dm2: float, seed: int | None = None) -> np.ndarray:
    """The expectation at (|Ue4|, dm2) (Asimov data set), concatenated over the model's
    experiments; with `seed`, one random realization there instead (the samplers of
    ``simulate``, keyed as realization 0 of point id 0)."""
    if model.experiments is None:
        raise ValueError("this Chi2Model was unpickled without its experiments")
    if seed is None:
        return np.concatenate([np.asarray(model._expectation_rows(e, np.array([ue4]), np.array([dm2])), dtype=float)[0]
                               for e in model.experiments])
    from .simulation import _Sampler

    parts = []
    for e in model.experiments:
        mu = np.asarray(model._expectation_rows(e, np.array([ue4]), np.array([dm2])), dtype=float)
        parts.append(_Sampler.of(e).sample(mu, _check_seed(seed), np.array([0]), 1)[0, 0])
    return np.concatenate(parts)
