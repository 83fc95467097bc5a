"""Plain NumPy versions of every compiled kernel.

These are the oracle for the tests and the baseline for the benchmarks: written for
clarity, vectorised with NumPy where natural, and independent of the C++ code paths
(different algorithms where possible, e.g. brute-force quadrature for the bin averages).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.special
from scipy.linalg import solve_triangular

# --- random numbers --------------------------------------------------------------

_M0 = 0xD2E7470EE14C6C93
_M1 = 0xCA5A826395121157
_W0 = 0x9E3779B97F4A7C15
_W1 = 0xBB67AE8584CAA73B
_MASK = (1 << 64) - 1


def philox4x64(counter, key):
    """Philox4x64-10 of one 4-word counter under a 2-word key (pure Python integers)."""
    x = [int(c) & _MASK for c in counter]
    k0, k1 = int(key[0]) & _MASK, int(key[1]) & _MASK
    for _ in range(10):
        p0 = _M0 * x[0]
        p1 = _M1 * x[2]
        hi0, lo0 = p0 >> 64, p0 & _MASK
        hi1, lo1 = p1 >> 64, p1 & _MASK
        x = [hi1 ^ x[1] ^ k0, lo1, hi0 ^ x[3] ^ k1, lo0]
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return np.array(x, dtype=np.uint64)


def philox_blocks(seed, stream, c1, c2, c3, n_blocks):
    """Raw blocks for counters (b, c1, c2, c3), b = 0..n_blocks-1 (matches _core.philox_blocks)."""
    return np.array([philox4x64((b, c1, c2, c3), (seed, stream)) for b in range(n_blocks)], dtype=np.uint64)


def _ziggurat_tables():
    """Marsaglia-Tsang ziggurat tables, 256 layers, 52-bit uniforms (same recurrence as rng.hpp)."""
    R, V, m = 3.6541528853610088, 4.92867323399e-3, 2.0**52
    k, w, f = [0] * 256, [0.0] * 256, [0.0] * 256
    dn = tn = R
    q = V / math.exp(-0.5 * dn * dn)
    k[0], k[1] = int((dn / q) * m), 0
    w[0], w[255] = q / m, dn / m
    f[0], f[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(V / dn + math.exp(-0.5 * dn * dn)))
        k[i + 1] = int((dn / tn) * m)
        tn = dn
        f[i] = math.exp(-0.5 * dn * dn)
        w[i] = dn / m
    return R, k, w, f


_ZIG = _ziggurat_tables()


def _u01(word):
    return ((int(word) >> 11) + 0.5) * 2.0**-53


def standard_normals(seed, stream, c1, c2, c3, n):
    """Ziggurat normals of one keyed stream (matches _core.standard_normals): value i
    starts from word i of the counters (b, c1, c2, c3); a rejected draw continues with the
    words of the counters (i * 2^20 + j, c1, c2, c3 | 2^63), j = 0, 1, ..."""
    R, k, w, f = _ZIG
    words = philox_blocks(seed, stream, c1, c2, c3, (n + 3) // 4).ravel()
    out = np.empty(n)
    for i in range(n):
        r = int(words[i])
        extra = (philox4x64((i * 2**20 + j, c1, c2, (int(c3) | 2**63) & _MASK), (seed, stream))[lane]
                 for j in range(1 << 20) for lane in range(4))
        while True:
            idx = r & 0xFF
            rs = r >> 8
            negative = rs & 1
            rabs = (rs >> 1) & 0x000FFFFFFFFFFFFF
            x = rabs * w[idx]
            if negative:
                x = -x
            if rabs < k[idx]:
                break
            if idx == 0:
                while True:
                    xx = -math.log(_u01(next(extra))) / R
                    yy = -math.log(_u01(next(extra)))
                    if yy + yy > xx * xx:
                        break
                x = -(R + xx) if negative else R + xx
                break
            if f[idx] + _u01(next(extra)) * (f[idx - 1] - f[idx]) < math.exp(-0.5 * x * x):
                break
            r = int(next(extra))
        out[i] = x
    return out


# --- oscillation -------------------------------------------------------------------

OSC_K = 1e-12 / (4 * 197.3269804e-15)


def box_mean_sin2(dm2, L_lo, L_hi, E_lo, E_hi, nodes_per_radian=4, min_nodes=24):
    """Mean of sin^2(K dm2 L/E) over a uniform box by brute-force tensor Gauss-Legendre
    quadrature, with the node count in each direction set by the phase span (scalar inputs)."""
    a = 2 * OSC_K * dm2

    def rule(lo, hi, span):
        if hi == lo:
            return np.array([lo]), np.array([1.0])
        n = int(max(min_nodes, nodes_per_radian * span))
        x, w = scipy.special.roots_legendre(n)  # O(n) asymptotic nodes for large n
        return lo + (hi - lo) * (x + 1) / 2, w / 2

    L, wL = rule(L_lo, L_hi, a * (L_hi - L_lo) / E_lo)
    E, wE = rule(E_lo, E_hi, a * max(L_hi, 1e-300) * (1 / E_lo - 1 / E_hi) + 8 * np.log(E_hi / E_lo))
    s = np.sin(OSC_K * dm2 * L[:, None] / E[None, :]) ** 2
    return float(wL @ s @ wE)


def bin_deficit(dm2, boxes, W):
    """D[j, r] = sum_c W[r, c] mean_sin2(dm2[j], box c), W dense (n_bins, n_boxes)."""
    m = np.array([[box_mean_sin2(d, *b) for b in boxes] for d in np.atleast_1d(dm2)])
    return m @ np.asarray(W).T


def box_mean_sin2_vectorized(dm2, boxes, nodes_per_radian=1.0, min_nodes=16):
    """Mean of sin^2(K dm2 L/E) over many boxes at once, the way one would write it in NumPy:
    exact in L (sin^2 integrates in closed form), Gauss-Legendre in E with the node count set
    by each box's phase span in E (boxes bucketed by node count, powers of two).
    dm2 (n_dm2,), boxes (n_boxes, 4) = L_lo, L_hi, E_lo, E_hi -> (n_dm2, n_boxes).
    The baseline of the oscillation benchmark (independent of the kernel's closed forms)."""
    dm2 = np.atleast_1d(np.asarray(dm2, dtype=float))
    b = np.asarray(boxes, dtype=float)
    L1, L2, E1, E2 = b.T
    out = np.empty((dm2.size, b.shape[0]))
    rules = {}
    for j, d in enumerate(dm2):
        k = OSC_K * d
        if k == 0.0:
            out[j] = 0.0
            continue
        span = 2 * k * L2 * (1 / E1 - 1 / E2)
        need = np.maximum(min_nodes, np.ceil(nodes_per_radian * span) + min_nodes)
        n_b = (2 ** np.ceil(np.log2(need))).astype(int)
        for n in np.unique(n_b):
            sel = np.flatnonzero(n_b == n)
            if n not in rules:
                x, w = scipy.special.roots_legendre(n)
                rules[n] = ((x + 1) / 2, w / 2)
            x, w = rules[n]
            E = E1[sel, None] + (E2[sel] - E1[sel])[:, None] * x[None, :]
            l1, l2 = L1[sel, None], L2[sel, None]
            dL = l2 - l1
            wide = dL > 0
            safe = np.where(wide, dL, 1.0)
            mean_L = np.where(wide, 0.5 - E / (4 * k * safe) * (np.sin(2 * k * l2 / E) - np.sin(2 * k * l1 / E)),
                              np.sin(k * l1 / E) ** 2)
            out[j, sel] = mean_L @ w
    return out


def bin_deficit_vectorized(dm2, boxes, indptr, indices, weights):
    """D = W m^T with m from :func:`box_mean_sin2_vectorized` and W the CSR weights (SciPy)."""
    import scipy.sparse

    W = scipy.sparse.csr_matrix((weights, indices, indptr), shape=(len(indptr) - 1, len(boxes)))
    return (W @ box_mean_sin2_vectorized(dm2, boxes).T).T


# --- realizations ------------------------------------------------------------------


#: purpose word of the normalisation-group draws (PURPOSE_NORM in cpp/include/fcmlc/rng.hpp)
PURPOSE_NORM = 5


def simulate_gaussian(mu, factor_t, seed, stream, point_ids, n_real, real_offset=0, norm_groups=None,
                      norm_sigma=0.0):
    """x = mu (1 + sigma E w) + F z with the keyed normals (matches _core.simulate_gaussian,
    float64): z from purpose 1 (residual), w ~ N(0, I_k) per normalisation group from purpose
    PURPOSE_NORM, drawn only when norm_sigma > 0 (else x = mu + F z)."""
    mu = np.atleast_2d(mu)
    k = factor_t.shape[0]
    out = np.empty((mu.shape[0], n_real, mu.shape[1]))
    groups = None if norm_groups is None else np.asarray(norm_groups, dtype=np.int64)
    for i, p in enumerate(point_ids):
        for r in range(n_real):
            z = standard_normals(seed, stream, real_offset + r, p, 1, k)
            if norm_sigma > 0:
                w = standard_normals(seed, stream, real_offset + r, p, PURPOSE_NORM, int(groups.max()) + 1)
                out[i, r] = mu[i] * (1.0 + norm_sigma * w[groups]) + z @ factor_t
            else:
                out[i, r] = mu[i] + z @ factor_t
    return out


def simulate_pulls(mu, J, Lp, lo, sigma, seed, stream, point_ids, n_real, real_offset=0):
    """Pull realizations with rejection-truncated correlated pulls (matches _core.simulate_pulls)."""
    mu = np.atleast_2d(mu)
    p = J.shape[1]
    out = np.empty((mu.shape[0], n_real, mu.shape[1]))
    for i, pt in enumerate(point_ids):
        for r in range(n_real):
            attempt = 0
            while True:
                w = standard_normals(seed, stream, real_offset + r, pt, 2 | (attempt << 32), p)
                pi = Lp @ w
                if np.all(pi >= lo):
                    break
                attempt += 1
            s = standard_normals(seed, stream, real_offset + r, pt, 3, mu.shape[1])
            out[i, r] = mu[i] * (1 + J @ pi) + sigma * s
    return out


# --- KDE and integration -----------------------------------------------------------


def normal_reference_bandwidth(samples):
    """statsmodels' KDEMultivariate 'normal_reference' rule: 1.06 * std * m**(-1/(4+d)),
    std with ddof=0 (np.std), d = 2. samples (m, 2) -> (2,), or (batch, m, 2) -> (batch, 2)."""
    x = np.asarray(samples, dtype=float)
    m = x.shape[-2]
    return 1.06 * np.std(x, axis=-2) * m ** (-1.0 / (4 + x.shape[-1]))


def kde_grid(samples, a_centres, b_centres, bandwidth):
    """Gaussian product-kernel density evaluated by brute force, every (grid point, sample)
    pair at once (no separability): f(a_i, b_l) = mean_j phi((x_j - a_i)/h_a) phi((y_j - b_l)/h_b)
    / (h_a h_b). samples (m, 2) or (batch, m, 2); bandwidth (2,) or (batch, 2);
    returns (n_b, n_a) or (batch, n_b, n_a)."""
    x = np.asarray(samples, dtype=float)
    single = x.ndim == 2
    x = x[None] if single else x
    h = np.broadcast_to(np.asarray(bandwidth, dtype=float), (x.shape[0], 2))
    a = np.asarray(a_centres, dtype=float)
    b = np.asarray(b_centres, dtype=float)
    out = np.empty((x.shape[0], b.size, a.size))
    for i in range(x.shape[0]):
        ua = (a[None, :, None] - x[i, None, None, :, 0]) / h[i, 0]  # (1, n_a, m)
        ub = (b[:, None, None] - x[i, None, None, :, 1]) / h[i, 1]  # (n_b, 1, m)
        k = np.exp(-0.5 * (ua**2 + ub**2)) / (2.0 * np.pi * h[i, 0] * h[i, 1])
        out[i] = k.mean(axis=-1)
    return out[0] if single else out


def integrate(p_yhat, transition, cell_area):
    """Eq. 2 on grids: p(y|x)[c] = sum_k T[k, c] p(y_hat_k|x) dA_k, i.e. (p * dA) @ T."""
    p = np.asarray(p_yhat, dtype=float)
    return (p * np.asarray(cell_area, dtype=float)) @ np.asarray(transition, dtype=float)


# --- chi2 and Feldman-Cousins ---
# Independent of the compiled route: no whitening, no precomputed factors, no linear-in-s2 trick.
# The chi2 uses the (pseudo-)inverse covariance directly and profiles the normalisations by
# solving the normal equations of the model x ~ N(diag(mu) E beta, C); FC critical values sort
# the toys completely.


def chi2_profiled(x, mu, C, norm_groups=None, norm_prior=0.0, rcond=1e-10, Ci=None):
    """min_beta (x - diag(mu) E beta)^T C^+ (x - diag(mu) E beta) [+ |beta - 1|^2 / sigma^2]
    for one data vector and one expectation: the exact profile over the multiplicative
    normalisations beta_g of the groups `norm_groups` (group index per bin; None or all -1: no
    normalisation, chi2 = (x - mu)^T C^+ (x - mu)); `norm_prior` = sigma (0: free groups).
    `Ci`: C^+ when already computed."""
    if Ci is None:
        Ci = np.linalg.pinv(np.asarray(C, dtype=float), rcond=rcond, hermitian=True)
    x = np.asarray(x, dtype=float)
    mu = np.asarray(mu, dtype=float)
    g = None if norm_groups is None else np.asarray(norm_groups, dtype=np.int64)
    if g is None or np.all(g < 0):
        y = x - mu
        return float(y @ Ci @ y)
    k = int(g.max()) + 1
    E = np.zeros((x.size, k))
    E[np.flatnonzero(g >= 0), g[g >= 0]] = 1.0
    U = mu[:, None] * E
    G = U.T @ Ci @ U
    b = U.T @ Ci @ x
    if norm_prior > 0:
        G = G + np.eye(k) / norm_prior**2
        b = b + 1.0 / norm_prior**2
    beta = np.linalg.lstsq(G, b, rcond=None)[0]
    y = x - U @ beta
    out = float(y @ Ci @ y)
    if norm_prior > 0:
        out += float(np.sum((beta - 1.0) ** 2)) / norm_prior**2
    return out


def chi2_map(x, expectations, C, norm_groups=None, norm_prior=0.0, rcond=1e-10):
    """chi2_profiled of x against every row of `expectations` (n_points, n_bins), point by point."""
    Ci = np.linalg.pinv(np.asarray(C, dtype=float), rcond=rcond, hermitian=True)
    return np.array([chi2_profiled(x, mu, C, norm_groups, norm_prior, rcond, Ci)
                     for mu in np.asarray(expectations, dtype=float)])


def chi2_scan_dense(r, offsets):
    """The straightforward NumPy scan in whitened space: chi2(p) = |r - m_p|^2 for whitened data
    r (k,) or (n_data, k) and dense offsets m (n_points, k), via |r|^2 - 2 r.m + |m|^2
    (one BLAS matrix product). The dtype of the inputs is kept (float32 for the FC baseline)."""
    r = np.atleast_2d(r)
    m2 = np.einsum("pk,pk->p", offsets, offsets)
    return np.einsum("nk,nk->n", r, r)[:, None] - 2 * (r @ offsets.T) + m2[None, :]


def fc_delta_float32(X, N0, A, offsets, p_true):
    """The NumPy float32 matrix-product FC baseline for one true point: toys X (n_toys, n_bins)
    are centred on N0 and whitened in float64, then scanned in float32 against all offsets
    (n_points, k); returns Delta-chi2 = chi2(p_true) - min (n_toys,) as float64."""
    R = ((np.asarray(X, dtype=float) - N0) @ A.T).astype(np.float32)
    chi2 = chi2_scan_dense(R, np.asarray(offsets, dtype=np.float32))
    return (chi2[:, p_true] - chi2.min(axis=1)).astype(float)


def fc_critical_values(delta, levels):
    """ceil(L n)-th smallest of each row of delta (n_points, n_toys), by a full sort."""
    s = np.sort(np.asarray(delta, dtype=float), axis=-1)
    n = s.shape[-1]
    out = []
    for L in levels:
        k = int(np.ceil(round(L * n, 9)))
        out.append(s[..., min(max(k, 1), n) - 1])
    return np.stack(out)


# --- the exact posterior's shape-only likelihood ------------------------------------

def _radial_phi(r, H, b, m):
    """phi(r) = r^T H r / 2 - b^T r - m^T log r for the rows of r and b."""
    return 0.5 * np.einsum("pk,pk->p", r @ H, r) - np.einsum("pk,pk->p", b, r) - np.log(r) @ m


def radial_laplace(H, b, m, tol=1e-10, max_iter=200):
    """For every row of b (P, k): the minimiser r > 0 of phi(r) = r^T H r / 2 - b^T r - m^T log r
    (H positive definite (k, k), m >= 1), phi there, and log det(H + diag(m / r^2)) - log det H
    (matches _core.radial_laplace, which runs the same iteration point by point).

    Damped Newton (steps scaled by 1 / (1 + lambda) while the decrement lambda > 1/4, full steps
    after): phi is self-concordant (a quadratic plus -m_g log r_g with m_g >= 1), for which this
    stays inside r > 0 and converges from any start (Nesterov & Nemirovskii); started at the
    Gaussian's own mode H^-1 b, floored at each group's barrier scale sqrt(m_g / H_gg), most
    rows need 2-3 steps."""
    H = np.asarray(H, dtype=float)
    b = np.asarray(b, dtype=float)
    P, k = b.shape
    diag = np.arange(k)
    L = np.linalg.cholesky(H)
    r = solve_triangular(L.T, solve_triangular(L, b.T, lower=True), lower=False).T  # (P, k) unconstrained mode
    r = np.maximum(r, np.sqrt(m / H[diag, diag])[None, :])
    todo = np.arange(P)
    for _ in range(max_iter):
        rt = r[todo]
        g = rt @ H - b[todo] - m / rt  # gradient
        K = np.repeat(H[None], todo.size, axis=0)  # Hessian H + diag(m / r^2)
        K[:, diag, diag] += m / rt**2
        step = np.linalg.solve(K, g[..., None])[..., 0]
        lam = np.sqrt(np.maximum(np.einsum("pk,pk->p", g, step), 0.0))
        # the full step where it stays inside r > 0 and lowers phi at least as much as the
        # damped step is guaranteed to (lambda - log(1 + lambda)); the damped step elsewhere
        full = rt - step
        ok = np.all(full > 0, axis=1)
        ok[ok] = (_radial_phi(full[ok], H, b[todo[ok]], m) - _radial_phi(rt[ok], H, b[todo[ok]], m)
                  <= -(lam[ok] - np.log1p(lam[ok])))
        damped = ~ok & (lam > 0.25)
        r[todo] = np.where(damped[:, None], rt - step / (1.0 + lam[:, None]), full)
        todo = todo[damped | ((lam / (1.0 - np.minimum(lam, 0.5))) ** 4 > tol)]
        if todo.size == 0:
            break
    else:
        raise RuntimeError(f"Newton's method for the radial modes did not converge at {todo.size} grid points")
    phi = _radial_phi(r, H, b, m)
    Li = solve_triangular(L, np.eye(k), lower=True)  # L^-1; det(H + D) / det H = det(I + L^-1 D L^-T)
    M = (Li[None] * (m / r**2)[:, None, :]) @ Li.T
    M[:, diag, diag] += 1.0
    logdet = 2.0 * np.log(np.diagonal(np.linalg.cholesky(M), axis1=1, axis2=2)).sum(axis=1)
    return r, phi, logdet
