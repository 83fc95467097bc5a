"""The linear algebra that sets up a :class:`~fcmlc.frequentist.chi2.Chi2Model`: whitening
projections of covariances, normalisation-group matrices, packed inverse Cholesky factors and
the FC pruning bounds, plus the NumPy profile chi2 of normalisation groups for a few points."""
from __future__ import annotations

import math

import numpy as np

from ..simulation import covariance_factor


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
    Ft, lower = covariance_factor(C, name)
    n = C.shape[0]
    if lower:
        from scipy.linalg import solve_triangular  # scipy: loaded when used (light `import fcmlc`)

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


def group_matrix(groups, k: int) -> np.ndarray:
    """E (n_bins, k): E[i, g] = 1 when bin i is in normalisation group g (every bin in one)."""
    E = np.zeros((len(groups), k))
    E[np.arange(len(groups)), groups] = 1.0
    return E


def packed_inverse_cholesky(G, name: str = "experiment") -> np.ndarray:
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


def prune_factors(factors: np.ndarray) -> np.ndarray:
    """K_p per grid point for the FC pruning of a centred experiment (chi2.cpp,
    general_lanes_pruned): the computed float32 |Lf_p c|^2 <= K_p |c|^2 for every float32 c, Lf_p
    the float32 copy of the packed L_p^-1 the kernel uses. In exact arithmetic |Lf c|^2 <=
    sigma_max(Lf)^2 |c|^2; float32 rounding (gamma = (kn + 1) 2^-24 per dot product, |t_a| errors
    <= gamma sum_c |Lf_ac| |c_c|) adds at most (1 + gamma)((1 + gamma) sigma_max^2 + (gamma +
    gamma^2) |Lf|_F^2) - sigma_max^2 relative, covered by g = 4 (kn + 2) 2^-24 below, which also
    covers eigvalsh's float64 error (~kn 1e-16 |Lf|_F^2)."""
    L, kn = _unpack_float32(factors)
    smax2 = np.linalg.eigvalsh(np.einsum("pab,pac->pbc", L, L))[:, -1]
    fro2 = np.einsum("pab,pab->p", L, L)
    g = 4.0 * (kn + 2) * 2.0 ** -24
    return (1.0 + g) * np.maximum(smax2, 0.0) + g * fro2


def _unpack_float32(factors: np.ndarray):
    """(n, k, k) float64 lower triangles of the float32 copy of packed factors, and k."""
    f = np.asarray(factors, dtype=np.float32).astype(np.float64)
    kk = f.shape[1]
    kn = int(round((math.sqrt(8 * kk + 1) - 1) / 2))
    L = np.zeros((f.shape[0], kn, kn))
    r, c = np.tril_indices(kn)
    L[:, r, c] = f
    return L, kn


def prune_reference(factors: np.ndarray, s2, n_dm2: int, max_cond: float = 1e6):
    """The reference bound of the FC pruning of a centred experiment (chi2.cpp,
    general_lanes_pruned; ``Chi2Kernel.set_prune_factors(i, K, ref, A, B)``): per dm2 row the
    reference point ref_j (the row's largest s2) whose float32 factor R_j = Lf(ref_j) bounds every
    point p of the row, |Lf_p c|^2 <= alpha_p |R_j c|^2 with alpha_p = sigma_max(Lf_p R_j^-1)^2.

    The K_p bound (:func:`prune_factors`) is loose where G'(p) is nearly singular (at large s2 a
    group's expectation nearly vanishes, and 1 / lambda_min(G') explodes while c^T G'^-1 c does
    not); measured on STEREO's paper grid, alpha_p against the row's s2 = 1 point stays below ~1.2
    along whole rows, so one reference per row makes the bound nearly tight everywhere.

    Returns (ref (n_dm2,) int64, -1 for a row whose R_j is too ill-conditioned to be useful
    (cond > `max_cond`, or singular), A (n_points,), B (n_points,)) with
    A_p = (1 + g)(1 + 1e-6) alpha_p and
    B_p = g (1 + 1e-6) |Lf_p|_F^2, g = 4 (kn + 2) 2^-24 as in :func:`prune_factors`: the computed
    float32 quadratic form is at most (1 + g)|Lf c_t|^2 + g |Lf|_F^2 |c_t|^2 and c_t = c + delta
    (float32 rounding of c(s2), covered by the K_p term). alpha_p is computed in float64 from
    M = Lf_p R_j^-1 and made an upper bound: (sqrt(lambda_max(M^T M) + 1e-10 |M|_F^2) + e)^2 (1 + 1e-8),
    e >= |Lf_p R_j^-1 - M|_2 from the residual |M R_j - Lf_p| (plus its own rounding) times
    |R_j^-1|_2 (an a-posteriori bound: valid however ill-conditioned R_j is)."""
    L, kn = _unpack_float32(factors)
    s2 = np.asarray(s2, dtype=float)
    nu = s2.size
    L = L.reshape(int(n_dm2), nu, kn, kn)
    u_ref = int(np.argmax(s2))
    g = 4.0 * (kn + 2) * 2.0 ** -24
    ref = np.full(int(n_dm2), u_ref if kn > 1 else -1, dtype=np.int64)  # one group: K_p is tight
    A = np.zeros((int(n_dm2), nu))
    fro2 = np.einsum("jupq,jupq->ju", L, L)
    for j in np.flatnonzero(ref >= 0):
        R = L[j, u_ref]
        if not np.linalg.cond(R) <= max_cond:
            ref[j] = -1
            continue
        Rinv = np.linalg.inv(R)
        M = L[j] @ Rinv  # (nu, kn, kn): Lf_p R^-1 as computed
        fro = np.einsum("uab,uab->u", M, M)
        alpha = np.maximum(np.linalg.eigvalsh(np.einsum("uab,uac->ubc", M, M))[:, -1], 0.0) + 1e-10 * fro
        # a-posteriori bound on |M_exact - M|_2 <= |M R - L| |R^-1|: the residual as computed plus
        # its own float64 rounding, (kn + 2) 2^-53 | |M| |R| |, with |R^-1|_2 inflated 1 %
        resid = M @ R - L[j]
        res = np.sqrt(np.einsum("uab,uab->u", resid, resid))
        absmr = np.abs(M) @ np.abs(R)
        err = (res + (kn + 2) * 2.0 ** -53 * np.sqrt(np.einsum("uab,uab->u", absmr, absmr))) \
            * 1.01 * np.linalg.norm(Rinv, 2)
        A[j] = (1.0 + g) * (1.0 + 1e-6) * (1.0 + 1e-8) * (np.sqrt(alpha) + err) ** 2
    B = g * (1.0 + 1e-6) * fro2
    return ref, np.ascontiguousarray(A.reshape(-1)), np.ascontiguousarray(B.reshape(-1))


def group_profile_chi2(X, M, Ci, groups, prior: float) -> np.ndarray:
    """Exact profile chi2 of the rows of X at the expectations M (same shape) over the
    multiplicative normalisations of `groups` (bin -> group), with C^+ = `Ci` and `prior` =
    1 / sigma^2 (0: free groups); NumPy, for a few points."""
    k = int(groups.max()) + 1
    E = group_matrix(groups, k)
    out = np.empty(X.shape[0])
    for i, (x, mu) in enumerate(zip(X, M)):
        y = Ci @ x
        U = mu[:, None] * E
        G = U.T @ Ci @ U + prior * np.eye(k)
        b = U.T @ y + prior
        out[i] = x @ y + k * prior - b @ np.linalg.lstsq(G, b, rcond=None)[0]
    return out
