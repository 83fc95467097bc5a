"""fcmlc compiled kernels (C++/OpenMP)"""

# Type stubs of the pybind11 extension fcmlc._core (sources: cpp/src/*.cpp, one register_*
# per kernel family). tests/test_core_stubs.py checks them against the built module: the same
# public names, parameters (names, order, defaults, types), return types and docstrings.
# The overloads only narrow the return type on a literal float32 / return_best; the last
# overload of each is the full signature.
#
# Array arguments take anything NumPy converts (a copy is made only when the input is not
# already a C-contiguous array of the dtype named); arrays returned are new C-contiguous arrays.

from typing import Annotated, Any, Literal, SupportsFloat, SupportsIndex, SupportsInt, TypeAlias, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

_F64: TypeAlias = Annotated[ArrayLike, np.float64]
_I64: TypeAlias = Annotated[ArrayLike, np.int64]
_Int: TypeAlias = SupportsInt | SupportsIndex
_Float: TypeAlias = SupportsFloat | SupportsIndex

HAVE_OPENMP: bool
OSC_K: float
PURPOSE_RESIDUAL: int
PURPOSE_PULL: int
PURPOSE_STAT: int
PURPOSE_FC_TOY: int
PURPOSE_NORM: int

def max_threads() -> int:
    """Number of threads used for threads=None."""

# ---- random numbers (rng.cpp) --------------------------------------------------------------

def philox_blocks(seed: _Int, stream: _Int, c1: _Int, c2: _Int, c3: _Int, n_blocks: _Int) -> NDArray[np.uint64]:
    """Raw Philox4x64-10 output for counters (b, c1, c2, c3), b < n_blocks."""

def standard_normals(seed: _Int, stream: _Int, c1: _Int, c2: _Int, c3: _Int, n: _Int) -> NDArray[np.float64]:
    """n standard normals of one keyed stream (ziggurat on Philox output)."""

# ---- oscillation (oscillation.cpp) ---------------------------------------------------------

def sine_integral(x: _Float) -> float:
    """Si(x), the sine integral."""

def box_mean_sin2_grid(dm2: _F64, boxes: _F64, threads: _Int | None = None) -> NDArray[np.float64]:
    """Mean of sin^2(K dm2 L/E) over each uniform (L, E) box, for each dm2: shape (n_dm2, n_boxes)."""

def box_mean_sin2_elementwise(
    dm2: _F64, L_lo: _F64, L_hi: _F64, E_lo: _F64, E_hi: _F64, threads: _Int | None = None
) -> NDArray[np.float64]:
    """Element-wise mean of sin^2(K dm2 L/E) over boxes; all inputs 1-D of equal length."""

def bin_deficit(
    dm2: _F64, boxes: _F64, indptr: _I64, indices: _I64, weights: _F64, threads: _Int | None = None
) -> NDArray[np.float64]:
    """Oscillation deficit per bin D[j, r] = sum_c W[r, c] mean_sin2(dm2[j], box c), W given in CSR form."""

# ---- realizations (sampling.cpp); float32=True returns float32 arrays -----------------------

@overload
def simulate_gaussian(mu: _F64, factor_t: _F64, lower: bool, seed: _Int, stream: _Int, point_ids: _I64, n_real: _Int,
                      real_offset: _Int = 0, float32: Literal[False] = False, threads: _Int | None = None,
                      norm_groups: _I64 | None = None, norm_sigma: _Float = 0.0) -> NDArray[np.float64]:
    """Correlated Gaussian realizations x = mu (1 + norm_sigma E w) + F z for each row of mu (n_points,
    n_bins) and n_real realizations; factor_t = F^T (k, n_bins); w ~ N(0, I) per normalisation group
    (norm_groups: group index of each bin), drawn from the PURPOSE_NORM stream only when norm_sigma > 0
    (else x = mu + F z). Returns (n_points, n_real, n_bins)."""
@overload
def simulate_gaussian(mu: _F64, factor_t: _F64, lower: bool, seed: _Int, stream: _Int, point_ids: _I64, n_real: _Int,
                      real_offset: _Int, float32: Literal[True], threads: _Int | None = None,
                      norm_groups: _I64 | None = None, norm_sigma: _Float = 0.0) -> NDArray[np.float32]: ...
@overload
def simulate_gaussian(mu: _F64, factor_t: _F64, lower: bool, seed: _Int, stream: _Int, point_ids: _I64, n_real: _Int,
                      real_offset: _Int = 0, *, float32: Literal[True], threads: _Int | None = None,
                      norm_groups: _I64 | None = None, norm_sigma: _Float = 0.0) -> NDArray[np.float32]: ...
@overload
def simulate_gaussian(mu: _F64, factor_t: _F64, lower: bool, seed: _Int, stream: _Int, point_ids: _I64, n_real: _Int,
                      real_offset: _Int = 0, float32: bool = False, threads: _Int | None = None,
                      norm_groups: _I64 | None = None,
                      norm_sigma: _Float = 0.0) -> NDArray[np.float64] | NDArray[np.float32]: ...
@overload
def simulate_pulls(mu: _F64, pull_jacobian: _F64, pull_factor: _F64, pull_lower: _F64, stat_sigma: _F64, seed: _Int,
                   stream: _Int, point_ids: _I64, n_real: _Int, real_offset: _Int = 0, float32: Literal[False] = False,
                   threads: _Int | None = None) -> NDArray[np.float64]:
    """Pull-parameter realizations x = mu (1 + J pi) + sigma s with truncated correlated Gaussian pulls.
    Returns (n_points, n_real, n_bins)."""
@overload
def simulate_pulls(mu: _F64, pull_jacobian: _F64, pull_factor: _F64, pull_lower: _F64, stat_sigma: _F64, seed: _Int,
                   stream: _Int, point_ids: _I64, n_real: _Int, real_offset: _Int, float32: Literal[True],
                   threads: _Int | None = None) -> NDArray[np.float32]: ...
@overload
def simulate_pulls(mu: _F64, pull_jacobian: _F64, pull_factor: _F64, pull_lower: _F64, stat_sigma: _F64, seed: _Int,
                   stream: _Int, point_ids: _I64, n_real: _Int, real_offset: _Int = 0, *, float32: Literal[True],
                   threads: _Int | None = None) -> NDArray[np.float32]: ...
@overload
def simulate_pulls(mu: _F64, pull_jacobian: _F64, pull_factor: _F64, pull_lower: _F64, stat_sigma: _F64, seed: _Int,
                   stream: _Int, point_ids: _I64, n_real: _Int, real_offset: _Int = 0, float32: bool = False,
                   threads: _Int | None = None) -> NDArray[np.float64] | NDArray[np.float32]: ...

# ---- posterior on grids (kde.cpp, integrate.cpp) -------------------------------------------

def kde_grid_2d(
    samples: _F64, a_centres: _F64, b_centres: _F64, bandwidth: _F64, threads: _Int | None = None
) -> NDArray[np.float64]:
    """Gaussian product-kernel density of each sample set on the grid: samples (batch, m, 2), a_centres
    (n_a,), b_centres (n_b,), bandwidth (batch, 2) -> (batch, n_b, n_a)."""

def gemm_isa() -> Literal["avx2-fma", "portable"]:
    """Arithmetic path of the deterministic matrix product in this process: 'avx2-fma' or 'portable'."""

def matmul_deterministic(A: _F64, B: _F64, threads: _Int | None = None) -> NDArray[np.float64]:
    """A @ B with every element accumulated in increasing k (bit-identical for any thread count)."""

def integrate_grid(
    p_yhat: _F64, transition: _F64, cell_area: _F64, threads: _Int | None = None, check_transition: bool = True
) -> NDArray[np.float64]:
    """Eq. 2 on grids: out[b, c] = sum_k transition[k, c] * p_yhat[b, k] * cell_area[k]. p_yhat (batch,
    n_k), transition (n_k, n_c), cell_area (n_k,) -> (batch, n_c)."""

# ---- the exact posterior's shape-only likelihood (exact.cpp) -------------------------------

def radial_laplace(H: _F64, b: _F64, m: _F64, tol: _Float = 1e-10, max_iter: _Int = 200, row: _Int = 1,
                   threads: _Int | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """For each row b_p of b (P, k): the minimiser r > 0 of phi(r) = r^T H r / 2 - b_p^T r - m^T log r (H
    positive definite, every m_g >= 1), phi there and log det(H + diag(m / r^2)) - log det H, by safeguarded
    Newton -> (r (P, k), phi (P,), logdet (P,)). Points are taken in rows of `row` consecutive points, each
    started from its predecessor's minimiser (the first from H^-1 b). The radial Laplace integral of
    fcmlc.exact's shape-only experiments; NumPy reference fcmlc.reference.radial_laplace."""

# ---- chi2 scans and Feldman-Cousins toys (chi2.cpp) ----------------------------------------

class Chi2Kernel:
    """Precomputed chi2 structure of a set of experiments on a (sin^2 2theta, dm2) grid: the
    whitening-projections A_e, null expectations, linear deficits d_e(dm2) or general offsets, and the
    toy generators. Built by fcmlc.frequentist.Chi2Model."""

    def __init__(self, s2: _F64, n_dm2: _Int) -> None: ...
    def add_linear(self, name: str, A: _F64, N0: _F64, D: _F64) -> int:
        """Linear experiment: expectation N0 - s2 D(dm2_j); A (k, n_bins), D (n_dm2, n_bins). Returns its
        index."""

    def add_general(self, name: str, A: _F64, N0: _F64, mu_grid: _F64) -> int:
        """General experiment: expectation mu_grid (n_points, n_bins) at every grid point. Returns its
        index."""

    def add_norm(
        self,
        name: str,
        Aw: _F64,
        N0: _F64,
        Ci: _F64,
        norm_groups: _I64,
        prior: _Float,
        factors: _F64,
        linear: bool,
        table: _F64,
    ) -> int:
        """Experiment with multiplicative normalisation groups, profiled exactly: chi2 = q - |L_p^-1
        b'(p)|^2 (see fcmlc.frequentist). Aw (kw, n_bins): projection at the null expectation (whiten
        only); Ci = C^+; prior = 1/sigma^2 (0: free); factors (n_points, kn(kn+1)/2): packed inverse
        Cholesky factors of G'(p); table: D (n_dm2, n_bins) when linear, else mu_grid (n_points,
        n_bins). Returns its index."""

    def set_gaussian_generator(self, index: _Int, stream: _Int, factor_t: _F64, norm_sigma: _Float = 0.0) -> None:
        """Toys x = mu (1 + norm_sigma E w) + F z as simulate_gaussian (factor_t = F^T, shape (k,
        n_bins))."""

    def set_pull_generator(
        self, index: _Int, stream: _Int, pull_jacobian: _F64, pull_factor: _F64, pull_lower: _F64, stat_sigma: _F64
    ) -> None:
        """Toys as simulate_pulls."""

    def set_prune_factors(self, index: _Int, K: _F64, ref: _I64 | None = None, A: _F64 | None = None,
                          B: _F64 | None = None) -> None:
        """K_p (n_points): the computed float32 |L_p^-1 c|^2 <= K_p |c|^2 for every p (rounding
        included). Optionally a tighter bound from a reference point per dm2 row: ref (n_dm2,
        index into the row or -1), A_p, B_p (n_points) with |L_p^-1 c|^2 <= A_p |R_j c|^2 + B_p
        |c|^2 + K_p (rounding of c), R_j the float32 factor at the reference
        (fcmlc.frequentist.linalg.prune_reference)."""

    def whiten(self, x: _F64) -> NDArray[np.float64]:
        """r = A_e (x_e - N0_e) of each experiment, concatenated: (n_data, sum k_e)."""

    def reset_prune_stats(self) -> None: ...
    @property
    def centred(self) -> bool:
        """Use the centred float32 form of linear experiments with normalisation groups in the FC toys
        and scans (default True; False: the float64 profile q - |L_p^-1 b'(p)|^2 everywhere)."""

    @centred.setter
    def centred(self, value: bool, /) -> None: ...
    @property
    def prune(self) -> bool:
        """FC toys: skip grid points whose lower bound exceeds the running minimum (default True; results
        bit-identical to False). Needs set_prune_factors for every centred experiment."""

    @prune.setter
    def prune(self, value: bool, /) -> None: ...
    @property
    def prune_stats(self) -> tuple[int, int]:
        """(grid points computed, grid points scanned) of the pruned FC toys since the last reset."""

    @property
    def n_ue4(self) -> int: ...
    @property
    def n_dm2(self) -> int: ...
    @property
    def n_points(self) -> int: ...
    @property
    def n_bins(self) -> int: ...
    @property
    def n_experiments(self) -> int: ...
    @property
    def dims(self) -> list[int]: ...
    @property
    def linear(self) -> list[bool]: ...
    @property
    def linear_only(self) -> bool: ...
    @property
    def generators(self) -> list[Literal["gaussian", "pulls", "none"]]: ...
    @property
    def n_norm_groups(self) -> list[int]: ...

def chi2_scan(
    kernel: Chi2Kernel, x: _F64, threads: _Int | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """chi2 of each data vector (rows of x, experiments concatenated) at every grid point. Returns (chi2
    (n_data, n_points), min (n_data,), argmin (n_data,)); ties go to the smaller point index."""

# mu: a list with one array-like (n, n_bins_e) per experiment (any list: each item is converted).
@overload
def fc_toys(kernel: Chi2Kernel, point_ids: _I64, mu: list[Any], n_toys: _Int, seed: _Int, toy_offset: _Int = 0,
            return_best: Literal[False] = False, threads: _Int | None = None) -> NDArray[np.float64]:
    """Feldman-Cousins toys: for each true grid point p (point_ids, with expectations mu[e] (n, n_bins_e)
    per experiment) and toys t = toy_offset .. toy_offset + n_toys - 1 (realization t of point p, as in
    simulate), Delta-chi2 = chi2(p) - min over the grid. Returns delta (n, n_toys) [, best point index
    (n, n_toys)]."""
@overload
def fc_toys(kernel: Chi2Kernel, point_ids: _I64, mu: list[Any], n_toys: _Int, seed: _Int, toy_offset: _Int,
            return_best: Literal[True],
            threads: _Int | None = None) -> tuple[NDArray[np.float64], NDArray[np.int64]]: ...
@overload
def fc_toys(kernel: Chi2Kernel, point_ids: _I64, mu: list[Any], n_toys: _Int, seed: _Int, toy_offset: _Int = 0, *,
            return_best: Literal[True],
            threads: _Int | None = None) -> tuple[NDArray[np.float64], NDArray[np.int64]]: ...
@overload
def fc_toys(kernel: Chi2Kernel, point_ids: _I64, mu: list[Any], n_toys: _Int, seed: _Int, toy_offset: _Int = 0,
            return_best: bool = False,
            threads: _Int | None = None) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.int64]]: ...
def fc_whitened_toys(
    kernel: Chi2Kernel,
    point_ids: _I64,
    mu: list[Any],
    n_toys: _Int,
    seed: _Int,
    toy_offset: _Int = 0,
    threads: _Int | None = None,
) -> NDArray[np.float64]:
    """The whitened toys r (n, n_toys, sum k_e) that fc_toys scans (for tests)."""

# ---- transition matrix of a 2-D conditional spline flow (transition.cpp) --------------------
# layers: dicts in the order normflows' log_prob applies the flow's layers, as made by
# fcmlc.models.transition.flow_layers ('linear': perm, upper, lower, bias, logdet; 'spline': cond,
# n_bins, tail_bound, min_bin_width, min_bin_height, min_derivative and the network's arrays).

def flow_grid_log_prob(
    y: _F64, context: _F64, layers: list[Any], loc: _F64, log_scale: _F64, threads: _Int | None = None
) -> NDArray[np.float64]:
    """log q(y_c | context_k) of a 2-D conditional spline flow for every pair: y (n_c, 2), context (n_k, 2),
    layers in log_prob order (dicts, see fcmlc.models.transition) -> (n_k, n_c) float64."""

def flow_transition(
    y: _F64, context: _F64, layers: list[Any], loc: _F64, log_scale: _F64, cell_area: _Float,
    threads: _Int | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Row-normalised transition matrix of a 2-D conditional spline flow: (T (n_k, n_c) float32 with
    sum_c T[k, c] cell_area = 1, row_ok (n_k,) bool: False where row k has no finite density)."""
