"""Independent re-implementations of the collaborations' (and public fits') chi2 methods,
for tests/test_published.py. They share only the *inputs* with fcmlc (release files, the
Huber-Mueller flux x IBD cross section of fcmlc.experiments.spectra, the baselines of the
model files); the oscillation averaging, the detector response and the fit method are
recomputed here in plain NumPy.

* :func:`chi2_fcmlc` -- fcmlc's chi2 through the public API, fcmlc.frequentist.chi2_scan
  (the C++ kernel); :func:`chi2_numpy` -- the same model x ~ N(diag(mu) E beta, C), beta free,
  profiled in closed form (chi2 = x^T C^-1 x - b^T G^-1 b) in NumPy, an independent check.
* :func:`chi2_prospect_relative` -- PROSPECT's relative method (PRD 103, 032001):
  Delta_{l,e} = M_{l,e} - M_e P_{l,e}/P_e, chi2 = Delta^T V^-1 Delta, V the released matrix.
* :func:`ratio_quadrature` -- a reactor spectrum (or a ratio of two) by brute-force quadrature
  over true energy and baseline with a Gaussian prompt response; with :func:`chi2_free_scale`
  it reproduces NEOS (ratio to an unoscillated reference, free total normalisation) and the
  DANSS bottom/top ratio of public global fits (sigma = 0.19 sqrt(E) + 0.0868 E, free
  normalisation).
"""
from __future__ import annotations

import numpy as np
from scipy.special import ndtr

from fcmlc.experiments.spectra import ibd_cross_section, reactor_flux

K = 1.2669326794198488  # eV^-2 MeV / m


def s2_of(ue4):
    u2 = np.asarray(ue4, dtype=float) ** 2
    return 4 * u2 * (1 - u2)


def chi2_fcmlc(exp, x, grid):
    """fcmlc's chi2 (public API: fcmlc.frequentist.chi2_scan), shape (n_dm2, n_ue4)."""
    from fcmlc.frequentist import chi2_scan

    return chi2_scan([exp], np.asarray(x, dtype=float), grid).chi2


def chi2_fcmlc_null(exp, x):
    """fcmlc's chi2 at no oscillation (|Ue4| = 1e-9: sin^2 2theta = 4e-18), via chi2_scan."""
    from fcmlc.physics import Grid

    return float(chi2_fcmlc(exp, x, Grid(ue4_range=(1e-9, 2e-9), dm2_range=(1.0, 2.0), shape=(2, 2)))[0, 0])


def chi2_numpy(exp, x, grid, chunk=1024):
    """fcmlc's model: min over free multiplicative normalisations beta_g, shape (n_dm2, n_ue4).
    Pulls experiments (no groups): (x - mu)^T C^-1 (x - mu) with the linearised covariance."""
    mu_all = exp.expectation_grid(grid)
    Ci = np.linalg.inv(exp.covariance)
    Ci = 0.5 * (Ci + Ci.T)
    x = np.asarray(x, dtype=float)
    y = Ci @ x
    E = exp.normalisation_matrix
    out = np.empty(mu_all.shape[0])
    for s in range(0, mu_all.shape[0], chunk):
        mu = mu_all[s:s + chunk]
        if E.shape[1] == 0:
            r = x[None] - mu
            out[s:s + chunk] = np.einsum("pi,ij,pj->p", r, Ci, r)
            continue
        ME = mu[:, :, None] * E[None]
        b = np.einsum("pik,i->pk", ME, y)
        G = np.swapaxes(ME, 1, 2) @ (Ci @ ME)
        out[s:s + chunk] = x @ y - np.einsum("pk,pk->p", b, np.linalg.solve(G, b[..., None])[..., 0])
    return out.reshape(grid.n_dm2, grid.n_ue4)


def chi2_numpy_null(exp, x):
    """The NumPy profile at no oscillation (mu = N0)."""
    Ci = np.linalg.inv(exp.covariance)
    x = np.asarray(x, dtype=float)
    y = Ci @ x
    E = exp.normalisation_matrix
    if E.shape[1] == 0:
        r = x - exp.null_expectation
        return float(r @ Ci @ r)
    V = exp.null_expectation[:, None] * E
    b = V.T @ y
    return float(x @ y - b @ np.linalg.solve(V.T @ Ci @ V, b))


def chi2_prospect_relative(M, P, V, n_base=10, n_e=16):
    """PROSPECT relative chi2. M (n_base*n_e,) data, P (..., n_base*n_e) predictions
    (baseline-major), V the released covariance, used as is."""
    Vi = np.linalg.inv(V)
    Mm = M.reshape(n_base, n_e)
    Pp = P.reshape(P.shape[:-1] + (n_base, n_e))
    Me = Mm.sum(axis=0)
    Pe = Pp.sum(axis=-2)
    D = (Mm - Me * Pp / Pe[..., None, :]).reshape(P.shape)
    return np.einsum("...i,ij,...j->...", D, Vi, D)


def chi2_free_scale(x, r, Cinv):
    """min_k (x - k r)^T Cinv (x - k r) for predictions r (..., n)."""
    rx = r @ (Cinv @ x)
    rr = np.einsum("...i,ij,...j->...", r, Cinv, r)
    return x @ Cinv @ x - rx ** 2 / rr


def spectrum_quadrature(prompt_edges, slice_, dm2, s2, fission_fractions, a, b, combine, offset,
                        e_max=12.0, dE=0.002, n_L=400):
    """Expected prompt spectrum (arbitrary units) for one uniform baseline slice [L_lo, L_hi]
    (rate ~ <1/L^2>: a constant per slice, dropped here) by midpoint quadrature: true energy in
    dE steps from the IBD threshold, baseline in n_L steps; Gaussian response
    sigma = a sqrt(E) + b E (linear) or sqrt(a^2 E + b^2 E^2) (quadrature) around E - offset.
    Returns (len(dm2), len(s2), n_prompt)."""
    E = np.arange(1.806 + dE / 2, e_max, dE)
    w = reactor_flux(E, fission_fractions) * ibd_cross_section(E) * dE
    L = slice_[0] + (slice_[1] - slice_[0]) * (np.arange(n_L) + 0.5) / n_L
    Ep = np.clip(E - offset, 1e-6, None)
    sig = a * np.sqrt(Ep) + b * Ep if combine == "linear" else np.sqrt(a * a * Ep + b * b * Ep * Ep)
    R = np.diff(ndtr((np.asarray(prompt_edges)[:, None] - (E - offset)[None]) / sig[None]), axis=0)  # (n_p, n_E)
    out = []
    for d in np.atleast_1d(dm2):
        sin2 = np.mean(np.sin(K * d * L[:, None] / E[None]) ** 2, axis=0)  # <sin^2> over the slice
        N0 = R @ w
        D = R @ (w * sin2)
        out.append(N0[None] - np.asarray(s2)[:, None] * D[None])
    return np.array(out)
