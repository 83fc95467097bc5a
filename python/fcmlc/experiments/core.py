"""Experiment models: bin expectations as a function of (|Ue4|, dm2_41), and their uncertainties.

Every model is built from one or two *linear parts*. A linear part is a set of uniform
(L, E) boxes and a sparse non-negative weight matrix W (bins x boxes); its expectation is

    N_r(theta) = sum_c W[r, c] <P_ee>_c = N0_r - sin^2(2 theta) D_r(dm2),
    N0_r = sum_c W[r, c],   D_r(dm2) = sum_c W[r, c] <sin^2(1.267 dm2 L / E)>_c,

with the box averages computed exactly by the C++ kernel ``fcmlc._core.bin_deficit``. Spectra
and source rates are one linear part; a ratio of two spectra (DANSS bottom/top) is the ratio of
two linear parts and is therefore not linear in sin^2(2 theta).
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence

import numpy as np

from .. import _core
from ..physics import Grid, check_params, sin2_2theta
from .toml_io import dumps as toml_dumps

KINDS = ("covariance", "pulls")


def stream_id_of(name: str) -> int:
    """Stable uint64 RNG stream key of an experiment: the first 8 bytes of sha256(name),
    read little-endian."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def _readonly(a, dtype=float) -> np.ndarray:
    a = np.array(a, dtype=dtype, copy=True)
    a.flags.writeable = False
    return a


def check_covariance(C: np.ndarray, what: str, n: int | None = None, rtol: float = 1e-9) -> np.ndarray:
    """Validate a covariance matrix: square (n x n), finite, symmetric, positive semi-definite.

    Raises ValueError naming `what`. Returns the exactly symmetrised matrix."""
    C = np.asarray(C, dtype=float)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"{what}: must be a square matrix, got shape {C.shape}")
    if n is not None and C.shape[0] != n:
        raise ValueError(f"{what}: must be {n} x {n} (one row per bin), got {C.shape[0]} x {C.shape[1]}")
    if not np.all(np.isfinite(C)):
        bad = np.argwhere(~np.isfinite(C))[0]
        raise ValueError(f"{what}: contains a non-finite value (NaN or inf) at [{bad[0]}, {bad[1]}]")
    scale = float(np.max(np.abs(C))) if C.size else 0.0
    asym = float(np.max(np.abs(C - C.T))) if C.size else 0.0
    if asym > rtol * max(scale, 1e-300):
        raise ValueError(f"{what}: not symmetric (max |C - C^T| = {asym:.3g}, max |C| = {scale:.3g})")
    C = 0.5 * (C + C.T)
    if C.size:
        if np.any(np.diag(C) < 0):
            i = int(np.argmin(np.diag(C)))
            raise ValueError(f"{what}: negative variance {C[i, i]:.3g} on the diagonal at bin {i}")
        wmin = float(np.linalg.eigvalsh(C)[0])
        if wmin < -1e-10 * max(scale, 1e-300) * C.shape[0]:
            raise ValueError(f"{what}: not positive semi-definite (smallest eigenvalue {wmin:.3g}, "
                             f"largest |entry| {scale:.3g})")
    return C


def _dm2_array(dm2) -> np.ndarray:
    d = np.atleast_1d(np.asarray(dm2, dtype=float))
    if d.ndim != 1:
        raise ValueError(f"dm2 must be a scalar or a 1-D array, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("dm2 must be finite")
    if np.any(d < 0):
        raise ValueError("dm2 must be >= 0 eV^2")
    return d


class LinearPart:
    """Boxes + sparse weights (CSR) of one linear expectation N0 - s2 * D(dm2).

    ``boxes`` (n_boxes, 4): L_lo, L_hi (m), E_lo, E_hi (MeV); ``indptr``, ``indices``,
    ``weights``: the CSR matrix W (n_bins x n_boxes); ``null`` = N0 = row sums of W. Immutable."""

    __slots__ = ("boxes", "indptr", "indices", "weights", "null", "n_bins", "_done")

    def __setattr__(self, key, value):
        if getattr(self, "_done", False):
            raise AttributeError("LinearPart is immutable")
        object.__setattr__(self, key, value)

    def __init__(self, boxes, indptr, indices, weights):
        self.boxes = _readonly(np.asarray(boxes, dtype=float).reshape(-1, 4))
        self.indptr = _readonly(indptr, np.int64)
        self.indices = _readonly(indices, np.int64)
        self.weights = _readonly(weights)
        n = self.indptr.size - 1
        if n < 1:
            raise ValueError("a linear part needs at least one bin")
        if self.indptr[0] != 0 or self.indptr[-1] != self.indices.size or np.any(np.diff(self.indptr) < 0):
            raise ValueError("invalid CSR index pointer")
        if self.indices.size != self.weights.size:
            raise ValueError("CSR indices and weights differ in length")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= self.boxes.shape[0]):
            raise ValueError("CSR column index outside the box list")
        if not np.all(np.isfinite(self.weights)) or np.any(self.weights < 0):
            raise ValueError("weights must be finite and >= 0")
        b = self.boxes
        if not np.all(np.isfinite(b)) or np.any(b[:, 0] < 0) or np.any(b[:, 1] < b[:, 0]) or np.any(b[:, 2] <= 0) \
                or np.any(b[:, 3] < b[:, 2]):
            raise ValueError("boxes need 0 <= L_lo <= L_hi and 0 < E_lo <= E_hi")
        self.n_bins = n
        rows = np.repeat(np.arange(n), np.diff(self.indptr))
        self.null = _readonly(np.bincount(rows, weights=self.weights, minlength=n))
        self._done = True

    @classmethod
    def from_dense(cls, boxes, W, rtol: float = 0.0, row_sums=None) -> "LinearPart":
        """From a dense (n_bins, n_boxes) weight matrix; entries <= rtol * row max are dropped.

        With `row_sums`, each row's kept weights are then scaled to sum to it exactly (so that
        N0 equals a prescribed null prediction to rounding)."""
        W = np.asarray(W, dtype=float)
        thr = rtol * W.max(axis=1, keepdims=True) if W.size else 0.0
        mask = (W > thr) & (W > 0)
        indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
        rows, cols = np.nonzero(mask)
        vals = W[rows, cols]
        if row_sums is not None:
            kept = np.bincount(rows, weights=vals, minlength=W.shape[0])
            vals = vals * (np.asarray(row_sums, dtype=float) / kept)[rows]
        return cls(boxes, indptr, cols, vals)

    def deficit(self, dm2: np.ndarray, threads=None) -> np.ndarray:
        return _core.bin_deficit(np.ascontiguousarray(dm2, dtype=float), self.boxes, self.indptr, self.indices,
                                 self.weights, threads)

    def dense(self) -> np.ndarray:
        """W as a dense (n_bins, n_boxes) array (for checks and plain-NumPy references)."""
        W = np.zeros((self.n_bins, self.boxes.shape[0]))
        rows = np.repeat(np.arange(self.n_bins), np.diff(self.indptr))
        np.add.at(W, (rows, self.indices), self.weights)
        return W


class Experiment:
    """One experiment: expectation model, covariance (or pulls), observed data and metadata.

    Instances are immutable: attributes cannot be reassigned and the arrays are read-only.
    Build them with :func:`fcmlc.experiments.load`, :func:`~fcmlc.experiments.from_toml` or a
    release loader rather than by hand.

    Expectation
        mu_r(|Ue4|, dm2) = N0_r - sin^2(2 theta) D_r(dm2) for linear models (``linear_in_s2``);
        for a ratio of spectra (DANSS) mu = (N0_a - s2 D_a) / (N0_b - s2 D_b).
    Uncertainties, ``kind == "covariance"`` (one statistical model, used by every method)
        x ~ N(diag(mu) E beta, C): the bins of normalisation group g (``norm_groups``; E is the
        n_bins x n_norm_groups 0/1 assignment matrix ``normalisation_matrix``) are scaled by a
        *multiplicative* normalisation beta_g of the oscillated prediction, C (``covariance``) is
        fixed. With ``norm_prior == 0`` (shape-only fits, as the paper and the collaborations do)
        each beta_g is free; with ``norm_prior = sigma > 0`` it has the Gaussian prior
        beta_g ~ N(1, sigma^2). The chi2 profiles beta exactly,
        chi2 = min_beta (x - diag(mu) E beta)^T C^-1 (...) [+ |beta - 1|^2 / sigma^2];
        realizations (training data and Feldman-Cousins toys) are drawn at beta = 1, or with
        beta drawn from its prior when sigma > 0. Bins with group -1 have no free normalisation.
    Uncertainties, ``kind == "pulls"``
        x = mu * (1 + J pi) + stat_sigma * z, pi ~ N(0, S) truncated at ``pull_lower``,
        z ~ N(0, 1); ``covariance`` = diag(stat_sigma^2) + (N0 J) S (N0 J)^T is the linearised
        equivalent.
    """

    _frozen = False

    def __init__(self, *, name: str, description: str, kind: str, bin_labels: Sequence[str],
                 parts: Sequence[LinearPart], covariance, norm_groups=None, norm_prior: float = 0.0,
                 observed=None, approximate: bool = False, sources: Sequence[str] = (), definition: dict,
                 pull_names: Sequence[str] | None = None, pull_jacobian=None, pull_covariance=None,
                 pull_lower=None, stat_sigma=None):
        if not isinstance(name, str) or not name.strip():
            raise ValueError("experiment name must be a non-empty string")
        if kind not in KINDS:
            raise ValueError(f"experiment kind must be one of {KINDS}, got {kind!r}")
        parts = tuple(parts)
        if len(parts) not in (1, 2):
            raise ValueError("an experiment has one linear part (spectrum, rates) or two (ratio)")
        n = parts[0].n_bins
        if any(p.n_bins != n for p in parts):
            raise ValueError("numerator and denominator of a ratio must have the same bins")
        if len(parts) == 2 and np.any(parts[1].null <= 0):
            raise ValueError("ratio denominator has a bin with no events")
        labels = [str(s) for s in bin_labels]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} bin labels for {n} bins")
        null = parts[0].null / parts[1].null if len(parts) == 2 else parts[0].null
        C = check_covariance(covariance, f"{name}: covariance", n)
        groups = np.full(n, -1, dtype=np.int64) if norm_groups is None else np.asarray(norm_groups)
        if groups.shape != (n,) or not np.issubdtype(groups.dtype, np.integer):
            raise ValueError(f"{name}: norm_groups must be {n} integers (group index, or -1 for a bin without "
                             f"a free normalisation), got shape {groups.shape} of {groups.dtype}")
        groups = groups.astype(np.int64)
        n_norm = int(groups.max()) + 1 if groups.size else 0
        if np.any(groups < -1) or (n_norm and set(np.unique(groups[groups >= 0]).tolist()) != set(range(n_norm))):
            raise ValueError(f"{name}: norm_groups must number the groups 0..k-1 without gaps (and -1 for none)")
        if n_norm and np.any(groups < 0):
            raise ValueError(f"{name}: either every bin belongs to a normalisation group or none does "
                             f"(bin {int(np.argmax(groups < 0))} has none)")
        norm_prior = float(norm_prior)
        if not (np.isfinite(norm_prior) and norm_prior >= 0):
            raise ValueError(f"{name}: norm_prior must be >= 0 (0: free normalisation), got {norm_prior}")
        if observed is not None:
            observed = np.asarray(observed, dtype=float)
            if observed.shape != (n,):
                raise ValueError(f"{name}: observed data must have {n} entries, got shape {observed.shape}")
            if not np.all(np.isfinite(observed)):
                raise ValueError(f"{name}: observed data contain NaN or inf")
        if kind == "pulls":
            if pull_jacobian is None or pull_covariance is None or stat_sigma is None:
                raise ValueError(f"{name}: a pulls experiment needs pull_jacobian, pull_covariance and stat_sigma")
            J = np.asarray(pull_jacobian, dtype=float)
            if J.ndim != 2 or J.shape[0] != n or not np.all(np.isfinite(J)):
                raise ValueError(f"{name}: pull_jacobian must be a finite ({n}, n_pulls) array, got {J.shape}")
            k = J.shape[1]
            S = check_covariance(pull_covariance, f"{name}: pull covariance", k)
            names = [str(s) for s in (pull_names or [f"pull {i}" for i in range(k)])]
            lo = np.full(k, -np.inf) if pull_lower is None else np.asarray(pull_lower, dtype=float)
            if len(names) != k or lo.shape != (k,) or np.any(np.isnan(lo)) or np.any(lo > 0):
                raise ValueError(f"{name}: need {k} pull names and {k} lower bounds <= 0 (-inf for none)")
            sig = np.asarray(stat_sigma, dtype=float)
            if sig.shape != (n,) or not np.all(np.isfinite(sig)) or np.any(sig <= 0):
                raise ValueError(f"{name}: stat_sigma must be {n} finite positive numbers")
        else:
            if any(x is not None for x in (pull_jacobian, pull_covariance, pull_lower, stat_sigma, pull_names)):
                raise ValueError(f"{name}: pull parameters are only meaningful for kind 'pulls'")
            J = S = lo = sig = names = None

        self.name = name
        self.description = str(description)
        self.kind = kind
        self.approximate = bool(approximate)
        self.sources = [str(s) for s in sources]
        self.bin_labels = labels
        self.n_bins = int(n)
        self.stream_id = stream_id_of(name)
        self.linear_in_s2 = len(parts) == 1
        self._parts = parts
        self.null_expectation = _readonly(null)
        self.covariance = _readonly(C)
        self.norm_groups = _readonly(groups, np.int64)
        self.n_norm_groups = n_norm
        self.norm_prior = norm_prior
        self.observed = None if observed is None else _readonly(observed)
        self.pull_names = names
        self.pull_jacobian = None if J is None else _readonly(J)
        self.pull_covariance = None if S is None else _readonly(S)
        self.pull_lower = None if lo is None else _readonly(lo)
        self.stat_sigma = None if sig is None else _readonly(sig)
        self._definition = copy.deepcopy(definition)
        self._hash = None
        self._frozen = True

    # -- immutability -----------------------------------------------------------------
    def __setattr__(self, key, value):
        if self._frozen and key != "_hash":
            raise AttributeError(f"Experiment is immutable (tried to set {key!r})")
        object.__setattr__(self, key, value)

    def __delattr__(self, key):
        raise AttributeError("Experiment is immutable")

    def __repr__(self) -> str:
        return (f"Experiment({self.name!r}, kind={self.kind!r}, n_bins={self.n_bins}, "
                f"linear_in_s2={self.linear_in_s2}, approximate={self.approximate})")

    # -- model --------------------------------------------------------------------------
    @property
    def linear_parts(self) -> tuple[LinearPart, ...]:
        """The boxes and sparse weights behind the expectation: one part, or (numerator,
        denominator) for a ratio. For plain-NumPy references and benchmarks of the kernel."""
        return self._parts

    @property
    def n_boxes(self) -> int:
        """Number of (L, E) boxes the expectation averages over (all parts)."""
        return sum(p.boxes.shape[0] for p in self._parts)

    @property
    def normalisation_matrix(self) -> np.ndarray:
        """E (n_bins, n_norm_groups): E[i, g] = 1 when bin i belongs to normalisation group g."""
        E = np.zeros((self.n_bins, self.n_norm_groups))
        has = self.norm_groups >= 0
        E[np.flatnonzero(has), self.norm_groups[has]] = 1.0
        return E

    @property
    def shape_only(self) -> bool:
        """True when every normalisation group is free (no prior): only the shape inside each group
        carries information, and per-group rescalings of the data are nuisance directions."""
        return self.n_norm_groups > 0 and self.norm_prior == 0.0

    def nuisance_directions(self, mu=None) -> np.ndarray:
        """diag(mu) E (n_bins, n_norm_groups): the directions in which the normalisations move the
        prediction mu (default: the null expectation). They depend on mu because a normalisation
        scales the *oscillated* prediction."""
        mu = self.null_expectation if mu is None else np.asarray(mu, dtype=float)
        if mu.shape != (self.n_bins,):
            raise ValueError(f"{self.name}: mu must have {self.n_bins} entries, got shape {mu.shape}")
        return mu[:, None] * self.normalisation_matrix

    def deficit(self, dm2, threads: int | None = None) -> np.ndarray:
        """D(dm2), shape (len(dm2), n_bins): expectation = N0 - sin^2(2 theta) * D.

        Only defined for models linear in sin^2(2 theta); a ratio of spectra raises
        NotImplementedError (use :meth:`expectation`)."""
        if not self.linear_in_s2:
            raise NotImplementedError(
                f"{self.name}: the data vector is a ratio of two spectra, which is not linear in "
                "sin^2(2 theta); there is no single deficit D(dm2). Use expectation(ue4, dm2).")
        return self._parts[0].deficit(_dm2_array(dm2), threads)

    def _expect_s2(self, s2: np.ndarray, dm2: np.ndarray, threads=None) -> np.ndarray:
        """mu for flat arrays s2 (n,), dm2 (n,) -> (n, n_bins), deficit once per unique dm2."""
        ud, inv = np.unique(dm2, return_inverse=True)
        out = []
        for p in self._parts:
            D = p.deficit(ud, threads)
            out.append(p.null[None, :] - s2[:, None] * D[inv])
        if len(out) == 1:
            return out[0]
        return out[0] / out[1]

    def expectation(self, ue4, dm2, threads: int | None = None) -> np.ndarray:
        """Bin expectations at (|Ue4|, dm2).

        Scalars give shape (n_bins,); arrays broadcast against each other and give
        broadcast_shape + (n_bins,), e.g. (n_points, n_bins) for 1-D arrays. Raises ValueError
        unless |Ue4| is in [0, 1], dm2 >= 0 and both are finite. dm2 outside the paper's grid is
        allowed (the model is exact at any dm2)."""
        u, d = np.broadcast_arrays(*check_params(ue4, dm2))
        shape = u.shape
        mu = self._expect_s2(sin2_2theta(u.ravel()), d.ravel(), threads)
        return mu.reshape(shape + (self.n_bins,))

    def expectation_grid(self, grid: Grid, threads: int | None = None) -> np.ndarray:
        """Expectations at every point of `grid`, shape (grid.n_points, n_bins), in the grid's
        point order (|Ue4| fastest). The deficit is computed once per dm2 value."""
        s2 = sin2_2theta(grid.ue4)  # (n_ue4,)
        parts = []
        for p in self._parts:
            D = p.deficit(grid.dm2, threads)  # (n_dm2, n_bins)
            parts.append(p.null[None, None, :] - s2[None, :, None] * D[:, None, :])
        mu = parts[0] if len(parts) == 1 else parts[0] / parts[1]
        return mu.reshape(grid.n_points, self.n_bins)

    # -- definition ---------------------------------------------------------------------
    def definition(self) -> dict:
        """JSON-able canonical definition (the validated model specification, arrays as
        lists). ``from_dict(definition())`` rebuilds an identical experiment."""
        return copy.deepcopy(self._definition)

    @property
    def definition_hash(self) -> str:
        """sha256 hex digest of json.dumps(definition(), sort_keys=True)."""
        if self._hash is None:
            self._hash = hashlib.sha256(json.dumps(self._definition, sort_keys=True).encode("utf-8")).hexdigest()
        return self._hash

    def to_toml(self) -> str:
        """The definition as a TOML document that :func:`fcmlc.experiments.from_toml` reads back
        into an identical experiment (same definition_hash)."""
        return toml_dumps(self._definition, header=f"fcmlc experiment model: {self.name}")


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    rows = sum(b.shape[0] for b in blocks)
    cols = sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols))
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r += b.shape[0]
        c += b.shape[1]
    return out


class ExperimentSet:
    """Several experiments fitted together; data vectors are concatenated in the given order."""

    def __init__(self, experiments: Sequence[Experiment]):
        exps = list(experiments)
        if not exps:
            raise ValueError("combine() needs at least one experiment")
        for e in exps:
            if not isinstance(e, Experiment):
                raise ValueError(f"combine() takes Experiment objects, got {type(e).__name__}")
        names = [e.name for e in exps]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"experiment listed more than once: {', '.join(dup)}")
        self.experiments = exps
        self.names = names
        self.slices: dict[str, slice] = {}
        start = 0
        for e in exps:
            self.slices[e.name] = slice(start, start + e.n_bins)
            start += e.n_bins
        self.n_bins = start

    def __repr__(self) -> str:
        return f"ExperimentSet({self.names}, n_bins={self.n_bins})"

    def __len__(self) -> int:
        return len(self.experiments)

    def __iter__(self):
        return iter(self.experiments)

    def __getitem__(self, name: str) -> Experiment:
        return self.experiments[self.names.index(name)]

    def expectation(self, ue4, dm2, threads: int | None = None) -> np.ndarray:
        """Concatenated expectations, shape broadcast_shape + (n_bins,)."""
        return np.concatenate([e.expectation(ue4, dm2, threads) for e in self.experiments], axis=-1)

    def expectation_grid(self, grid: Grid, threads: int | None = None) -> np.ndarray:
        return np.concatenate([e.expectation_grid(grid, threads) for e in self.experiments], axis=-1)

    def split(self, x) -> dict[str, np.ndarray]:
        """Split a concatenated vector (or array with bins on the last axis) by experiment."""
        x = np.asarray(x)
        if x.shape[-1] != self.n_bins:
            raise ValueError(f"expected {self.n_bins} entries on the last axis, got {x.shape[-1]}")
        return {n: x[..., s] for n, s in self.slices.items()}

    @property
    def null_expectation(self) -> np.ndarray:
        return np.concatenate([e.null_expectation for e in self.experiments])

    @property
    def observed(self) -> np.ndarray | None:
        """Concatenated observed data, or None if any experiment has none."""
        if any(e.observed is None for e in self.experiments):
            return None
        return np.concatenate([e.observed for e in self.experiments])

    @property
    def covariance(self) -> np.ndarray:
        """Block-diagonal covariance of the concatenated data vector (experiments are
        statistically independent)."""
        return _block_diag([e.covariance for e in self.experiments])

    @property
    def norm_groups(self) -> np.ndarray:
        """Normalisation group of every bin of the concatenated vector, numbered across the
        experiments (each experiment's groups are its own), -1 for none."""
        out, off = [], 0
        for e in self.experiments:
            g = np.array(e.norm_groups, dtype=np.int64)
            g[g >= 0] += off
            off += e.n_norm_groups
            out.append(g)
        return np.concatenate(out)

    @property
    def definition_hash(self) -> str:
        """sha256 of the ordered list of (name, definition_hash)."""
        items = [[e.name, e.definition_hash] for e in self.experiments]
        return hashlib.sha256(json.dumps(items).encode("utf-8")).hexdigest()
