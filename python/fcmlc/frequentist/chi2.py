"""The chi2 of a set of experiments on the grid: :class:`Chi2Model` (whitening, deficits or
grid expectations, normalisation-group factors, the compiled kernel) and :func:`chi2_scan`
(one data vector or a batch, float64 throughout). How the chi2 is computed is described in
:mod:`fcmlc.frequentist`."""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass

import numpy as np

from .. import _core
from .._checks import UINT64_MAX, check_seed, check_threads
from ..physics import Grid, grid_or_paper, sin2_2theta
from ..simulation import Sampler, expectation_rows, resolve_experiments
from .linalg import (group_matrix, group_profile_chi2, packed_inverse_cholesky, prune_factors, prune_reference,
                     whitening_projection)
from .wilks import WILKS_LEVELS, raster_limits, wilks_regions


def _digest_arrays(h, *arrays):
    """Feed the shapes and float64 bytes of `arrays` (None marked) into the hash `h`."""
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(np.asarray(a, dtype=float))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())


# --- the chi2 model ---------------------------------------------------------------------


@dataclass
class ExperimentPart:
    """Everything the compiled kernel (and the torch backend) needs for one experiment of a
    :class:`Chi2Model` (picklable)."""

    name: str
    kind: str
    linear: bool
    n_bins: int
    A: np.ndarray
    N0: np.ndarray
    D: np.ndarray | None = None  # linear: (n_dm2, n_bins)
    mu_grid: np.ndarray | None = None  # general: (n_points, n_bins)
    sampler: Sampler | None = None  # the toy generator of ``simulate``
    # multiplicative normalisation groups (k_norm > 0): exact profile, see :mod:`fcmlc.frequentist`
    norm: bool = False
    n_effective: int = 0
    Ci: np.ndarray | None = None  # C^+
    groups: np.ndarray | None = None
    prior: float = 0.0  # 1 / sigma^2 (0: free)
    factors: np.ndarray | None = None  # (n_points, k(k+1)/2) packed inverse Cholesky factors of G'(p)


def _warn_rank(name: str, rank: int, n: int, k: int) -> None:
    """A RuntimeWarning when a covariance is singular: the chi2 then has rank(C) - k degrees of
    freedom (the directions of zero variance carry no information and are dropped), not n - k."""
    if rank < n:
        warnings.warn(f"{name}: the covariance has rank {rank} < {n} bins; the chi2 uses the {rank} directions with "
                      f"non-zero variance: {rank - k} effective degrees of freedom"
                      + (f" after the {k} normalisations" if k else ""), RuntimeWarning, stacklevel=4)
        if rank - k < 1:
            raise ValueError(f"{name}: the covariance has rank {rank} and the experiment {k} free normalisations: "
                             "no degree of freedom is left to test anything")


def data_matrix(x, names, n_bins_each) -> tuple:
    """Data for the experiments ``names`` (with ``n_bins_each`` bins) as a (n_data, n_bins) float64
    array and whether one vector was given. `x` is a concatenated vector (n_bins,) or a batch
    (n_data, n_bins), a list of per-experiment arrays, or a dict name -> array; a ValueError names
    the wrong shape or the first non-finite value (experiment and bin)."""
    names, n_bins_each = list(names), [int(n) for n in n_bins_each]
    n_bins = sum(n_bins_each)
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        extra = [k for k in x if k not in names]
        if missing or extra:
            raise ValueError(f"data dict must have exactly the keys {names}"
                             + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
        x = [x[n] for n in names]
    if isinstance(x, (list, tuple)) and len(x) == len(names) and all(np.ndim(a) >= 1 for a in x) and len(names) > 1:
        parts = [np.asarray(a, dtype=float) for a in x]
        for a, n, name in zip(parts, n_bins_each, names):
            if a.shape[-1] != n:
                raise ValueError(f"data for {name} must have {n} bins, got shape {a.shape}")
        if all(a.ndim == 1 for a in parts):  # one data vector
            x = np.concatenate(parts)
        else:
            x = np.concatenate([np.atleast_2d(a) for a in parts], axis=-1)
    x = np.asarray(x, dtype=float)
    single = x.ndim == 1
    x = np.atleast_2d(x)
    if x.ndim != 2 or x.shape[1] != n_bins:
        raise ValueError(f"data must have {n_bins} bins ({' + '.join(map(str, n_bins_each))} for "
                         f"{', '.join(names)}) on its last axis, got shape {np.shape(x)}")
    if not np.all(np.isfinite(x)):
        row, col = np.argwhere(~np.isfinite(x))[0]
        i = int(np.searchsorted(np.cumsum(n_bins_each), col, side="right"))
        b = int(col) - sum(n_bins_each[:i])
        raise ValueError(f"data contain a non-finite value ({x[row, col]}) in {names[i]} bin {b}"
                         + (f" of data vector {row}" if not single else ""))
    return np.ascontiguousarray(x), single


class Chi2Model:
    """The chi2 of a set of experiments on a grid, precomputed for fast scans and FC toys.

    ``Chi2Model(experiments, grid)``: `experiments` are names ("STEREO,BEST"), Experiment
    objects, or an ExperimentSet; `grid` defaults to the paper's 101 x 101 grid. Data vectors
    are the experiments' bins concatenated in the given order.
    """

    def __init__(self, experiments, grid: Grid | None = None):
        grid = grid_or_paper(grid)
        exps = resolve_experiments(experiments)
        self.grid = grid
        self.experiments = exps
        self.names = tuple(str(e.name) for e in exps)
        self.definition_hashes = tuple(str(getattr(e, "definition_hash", "")) for e in exps)
        self.n_bins_each = tuple(int(e.n_bins) for e in exps)
        self.n_bins = int(sum(self.n_bins_each))
        self._parts: list[ExperimentPart] = []
        h = hashlib.sha256(json.dumps({"grid": grid.to_dict(), "names": list(self.names)}).encode())
        for e in exps:
            self._parts.append(self._part(e, h))
        self.model_digest = h.hexdigest()[:32]
        self._kernel = None
        self._generators = False

    def _part(self, e, h) -> ExperimentPart:
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
        _warn_rank(name, A.shape[0], n, 0)
        _digest_arrays(h, N0, e.covariance)
        h.update(f"{name}|{kind}|{linear}|{int(e.stream_id) & UINT64_MAX}".encode())
        if linear:
            D = np.ascontiguousarray(e.deficit(self.grid.dm2), dtype=float)
            if D.shape != (self.grid.n_dm2, n):
                raise ValueError(f"{name}: deficit(dm2) must have shape ({self.grid.n_dm2}, {n}), got {D.shape}")
            _digest_arrays(h, D)
            return ExperimentPart(name, kind, True, n, A, N0, D=D)
        mu = np.ascontiguousarray(expectation_rows(e, *self.grid.points().T), dtype=float)
        if mu.shape != (self.grid.n_points, n):
            raise ValueError(f"{name}: expectations on the grid must have shape ({self.grid.n_points}, {n}), "
                             f"got {mu.shape}")
        _digest_arrays(h, mu)
        return ExperimentPart(name, kind, False, n, A, N0, mu_grid=mu)

    def _norm_part(self, e, h, name, n, N0, kind, linear, k) -> ExperimentPart:
        """An experiment with k multiplicative normalisation groups: C^+ and, per grid point, the
        packed inverse Cholesky factor of G'(p) = E^T diag(mu_p) C^+ diag(mu_p) E + I / sigma^2."""
        C = np.asarray(e.covariance, dtype=float)
        if C.shape != (n, n):
            raise ValueError(f"{name}: covariance is {C.shape} but the experiment has {n} bins")
        W = whitening_projection(C, None, f"{name} covariance")  # W^T W = C^+
        _warn_rank(name, W.shape[0], n, k)
        groups = np.ascontiguousarray(e.norm_groups, dtype=np.int64)
        if groups.shape != (n,) or np.any(groups < 0) or groups.max() != k - 1:
            raise ValueError(f"{name}: norm_groups must assign every bin to a group 0..{k - 1}")
        E = group_matrix(groups, k)
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
            part = ExperimentPart(name, kind, True, n, Aw, N0, D=D)
        else:
            mu_grid = np.ascontiguousarray(expectation_rows(e, *g.points().T), dtype=float)
            if mu_grid.shape != (g.n_points, n):
                raise ValueError(f"{name}: expectations on the grid must have shape ({g.n_points}, {n}), "
                                 f"got {mu_grid.shape}")
            _digest_arrays(h, mu_grid)
            G = np.empty((g.n_points, k, k))
            for p0 in range(0, g.n_points, 1024):
                U = np.einsum("rn,pn,nk->prk", W, mu_grid[p0:p0 + 1024], E, optimize=True)
                G[p0:p0 + 1024] = np.einsum("prk,prl->pkl", U, U)
            part = ExperimentPart(name, kind, False, n, Aw, N0, mu_grid=mu_grid)
        if prior > 0:
            G += prior * np.eye(k)
        part.norm = True
        part.n_effective = int(W.shape[0]) - k
        part.Ci = Ci
        part.groups = groups
        part.prior = prior
        part.factors = packed_inverse_cholesky(G, name)
        return part

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
                        ref, A, B = prune_reference(p.factors, self.grid.sin2_2theta, self.grid.n_dm2)
                        k.set_prune_factors(i, prune_factors(p.factors), ref, A, B)
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
        for p, e in zip(self._parts, self.experiments):
            p.sampler = Sampler.of(e)
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
                out.append(np.ascontiguousarray(expectation_rows(e, pts[:, 0], pts[:, 1]), dtype=float))
        return out

    @property
    def parts(self) -> tuple:
        """The :class:`ExperimentPart` of each experiment, in data order (read by the torch
        backend of the FC toys)."""
        return tuple(self._parts)

    # -- data ------------------------------------------------------------------------------
    @property
    def n_effective_bins(self) -> int:
        """sum_e (rank(C_e) - k_e): the dimension left after whitening and profiling the k_e
        normalisations of each experiment."""
        return int(sum(p.n_effective if p.norm else p.A.shape[0] for p in self._parts))

    def data_matrix(self, x) -> np.ndarray:
        """Data as a (n_data, n_bins) float64 array (:func:`data_matrix`)."""
        return data_matrix(x, self.names, self.n_bins_each)

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
                out += group_profile_chi2(xs, ms, p.Ci, p.groups, p.prior)
            else:
                out += np.sum(((xs - ms) @ p.A.T) ** 2, axis=1)
            off += p.n_bins
        return out[0] if single else out

    def normalisation_log_det(self) -> np.ndarray:
        """sum_e log det G'_e(p) on the grid, (n_dm2, n_ue4): G'_e(p) = E^T diag(mu_p) C^+ diag(mu_p) E
        [+ I / sigma^2] of each experiment with normalisation groups (0 for the others). It is
        the volume term of the normalisations integrated out instead of profiled:
        -2 log of the marginal likelihood = chi2 + this + const (:mod:`fcmlc.exact`)."""
        out = np.zeros(self.grid.n_points)
        for p in self._parts:
            if p.norm:
                k = int(p.groups.max()) + 1
                diag = np.array([i * (i + 1) // 2 + i for i in range(k)])  # row-packed lower triangle
                out -= 2.0 * np.log(p.factors[:, diag]).sum(axis=1)  # factors hold L^-1, L L^T = G'
        return out.reshape(self.grid.n_dm2, self.grid.n_ue4)

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
    chi2, mn, am = _core.chi2_scan(model.kernel, X, check_threads(threads))
    g = model.grid
    chi2 = chi2.reshape(X.shape[0], g.n_dm2, g.n_ue4)
    if single:
        return Chi2Scan(chi2[0], float(mn[0]), int(am[0]), g, model.n_effective_bins)
    return Chi2Scan(chi2, mn, am, g, model.n_effective_bins)



# --- pseudo-data ------------------------------------------------------------------------------


def asimov_data(model: Chi2Model, ue4: float, dm2: float, seed: int | None = None) -> np.ndarray:
    """The expectation at (|Ue4|, dm2) (Asimov data set), concatenated over the model's
    experiments; with `seed`, one random realization there instead (the samplers of
    ``simulate``, keyed as realization 0 of point id 0)."""
    if model.experiments is None:
        raise ValueError("this Chi2Model was unpickled without its experiments")
    if seed is None:
        return np.concatenate([np.asarray(expectation_rows(e, np.array([ue4]), np.array([dm2])), dtype=float)[0]
                               for e in model.experiments])
    parts = []
    for e in model.experiments:
        mu = np.asarray(expectation_rows(e, np.array([ue4]), np.array([dm2])), dtype=float)
        parts.append(Sampler.of(e).sample(mu, check_seed(seed), np.array([0]), 1)[0, 0])
    return np.concatenate(parts)
