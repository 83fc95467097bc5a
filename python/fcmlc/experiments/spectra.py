"""Reactor antineutrino spectra, the inverse-beta-decay cross section and detector response.

Everything here produces *shapes*: the experiment models rescale the event weights to the
published event count (or to a published null prediction), so overall constants (fissions per
second, detector protons, 1e-42 cm^2) drop out.

Sources
-------
* Isotopic antineutrino spectra per fission, exp(sum_k a_k E^k) with E in MeV:
  235U, 239Pu, 241Pu from P. Huber, Phys. Rev. C 84, 024617 (2011), arXiv:1106.0687, Table III;
  238U from Th. A. Mueller et al., Phys. Rev. C 83, 054615 (2011), arXiv:1101.2663, Table VI.
  The fits are published for 2-8 MeV; outside that range the polynomial is used as is (above
  8 MeV it falls steeply, so the extrapolated tail carries few events).
* IBD cross section: P. Vogel and J. F. Beacom, Phys. Rev. D 60, 053003 (1999), zeroth order
  in 1/M: sigma = 0.0952e-42 cm^2 (E_e p_e / MeV^2), E_e = E_nu - (m_n - m_p).
* Prompt (visible) energy of IBD: E_prompt = E_e + m_e = E_nu - 0.782 MeV (positron kinetic
  energy plus the two annihilation photons), neglecting the neutron recoil.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: exp-polynomial coefficients a_0..a_5 of the isotopic spectra (antineutrinos / fission / MeV).
HUBER_MUELLER: dict[str, tuple[float, ...]] = {
    "U235": (4.367, -4.577, 2.100, -5.294e-1, 6.186e-2, -2.777e-3),  # Huber 2011, Table III
    "Pu239": (4.757, -5.392, 2.563, -6.596e-1, 7.820e-2, -3.536e-3),  # Huber 2011, Table III
    "Pu241": (2.990, -2.882, 1.278, -3.343e-1, 3.905e-2, -1.754e-3),  # Huber 2011, Table III
    "U238": (4.833e-1, 1.927e-1, -1.283e-1, -6.762e-3, 2.233e-3, -1.536e-4),  # Mueller 2011, Table VI
}
ISOTOPES: tuple[str, ...] = ("U235", "U238", "Pu239", "Pu241")

#: Electron mass and neutron-proton mass difference, MeV (PDG).
M_E = 0.51099895
DELTA_NP = 1.29333236
#: IBD threshold, MeV: ((m_n + m_e)^2 - m_p^2) / (2 m_p).
IBD_THRESHOLD = 1.806
#: E_nu - E_prompt for IBD at zeroth order in 1/M: Delta - m_e.
PROMPT_OFFSET = DELTA_NP - M_E  # 0.782 MeV


def isotope_spectrum(isotope: str, E) -> np.ndarray:
    """Antineutrinos per fission per MeV of one isotope (Huber / Mueller parametrisation)."""
    if isotope not in HUBER_MUELLER:
        raise ValueError(f"unknown isotope {isotope!r}; known: {', '.join(ISOTOPES)}")
    E = np.asarray(E, dtype=float)
    a = HUBER_MUELLER[isotope]
    return np.exp(np.polynomial.polynomial.polyval(E, a))


def reactor_flux(E, fission_fractions: Mapping[str, float]) -> np.ndarray:
    """Fission-fraction-weighted antineutrino spectrum (per fission per MeV)."""
    E = np.asarray(E, dtype=float)
    out = np.zeros_like(E)
    for iso, f in fission_fractions.items():
        if f:
            out += float(f) * isotope_spectrum(iso, E)
    return out


def ibd_cross_section(E) -> np.ndarray:
    """Vogel-Beacom zeroth-order IBD cross section in units of 1e-42 cm^2 (0 below threshold)."""
    E = np.asarray(E, dtype=float)
    Ee = E - DELTA_NP
    pe = np.sqrt(np.clip(Ee * Ee - M_E * M_E, 0.0, None))
    return np.where(E >= IBD_THRESHOLD, 0.0952 * Ee * pe, 0.0)


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w  # nodes and weights on [0, 1]


def true_bin_nodes(edges: np.ndarray, n_nodes: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes inside each true-energy bin, clipped to the IBD threshold.

    Returns (E, w) of shape (n_true, n_nodes); sum(w * f(E), axis=1) integrates f over the
    part of each bin above threshold.
    """
    lo = np.maximum(edges[:-1], IBD_THRESHOLD)
    hi = np.maximum(edges[1:], lo)
    x, w = _gauss_legendre(n_nodes)
    E = lo[:, None] + (hi - lo)[:, None] * x[None, :]
    return E, (hi - lo)[:, None] * w[None, :]


def true_spectrum(edges: np.ndarray, fission_fractions: Mapping[str, float], n_nodes: int = 8):
    """Events per true-energy bin (flux x IBD cross section integrated over each bin).

    Returns (S, E, w, s): S (n_true,) the bin integrals, and the quadrature nodes E, weights w
    and integrand values s = flux * sigma at the nodes, shape (n_true, n_nodes) each.
    """
    E, w = true_bin_nodes(edges, n_nodes)
    s = reactor_flux(E, fission_fractions) * ibd_cross_section(E)
    return (w * s).sum(axis=1), E, w, s


#: how the two terms of a Gaussian resolution combine (see :func:`resolution_sigma`)
RESOLUTION_COMBINE = ("quadrature", "linear")


def resolution_sigma(E, a: float, b: float, combine: str = "quadrature") -> np.ndarray:
    """Absolute resolution sigma(E) in MeV at prompt energy E (MeV) from the stochastic term a
    and the constant term b:

    * ``"quadrature"``: sigma/E = a/sqrt(E) (+) b, i.e. sigma = sqrt(a^2 E + b^2 E^2);
    * ``"linear"``: sigma = a sqrt(E) + b E (the terms add linearly, as in the DANSS model of
      public global fits: sigma = 0.19 sqrt(E) + 0.0868 E)."""
    E = np.asarray(E, dtype=float)
    if combine == "quadrature":
        return np.sqrt(a * a * E + b * b * E * E)
    if combine == "linear":
        return a * np.sqrt(E) + b * E
    raise ValueError(f"resolution terms combine 'quadrature' or 'linear', got {combine!r}")


def gaussian_response(true_edges: np.ndarray, prompt_edges: np.ndarray, a: float, b: float,
                      prompt_offset: float = PROMPT_OFFSET, spectrum_nodes=None, n_nodes: int = 8,
                      combine: str = "quadrature") -> np.ndarray:
    """Response matrix R[p, t]: fraction of the events of true-energy bin t reconstructed in
    prompt bin p, for a Gaussian resolution around E_prompt = E_nu - prompt_offset with
    sigma/E = a/sqrt(E) (+) b in quadrature (default) or sigma = a sqrt(E) + b E
    (``combine = "linear"``), see :func:`resolution_sigma`.

    Inside a true bin the events are weighted with the spectrum at the quadrature nodes
    (`spectrum_nodes` = (E, w, s) from :func:`true_spectrum`; flat if None). Events falling
    outside the prompt range are lost, so columns may sum to less than one.
    """
    true_edges = np.asarray(true_edges, dtype=float)
    prompt_edges = np.asarray(prompt_edges, dtype=float)
    if spectrum_nodes is None:
        E, w = true_bin_nodes(true_edges, n_nodes)
        s = np.ones_like(E)
    else:
        E, w, s = spectrum_nodes
    Ep = E - prompt_offset
    Epos = np.clip(Ep, 1e-6, None)
    sigma = np.maximum(resolution_sigma(Epos, a, b, combine), 1e-9)
    from scipy.special import ndtr  # scipy (0.4 s to import): loaded when a response is built

    # (n_prompt_edges, n_true, n_nodes)
    cdf = ndtr((prompt_edges[:, None, None] - Ep[None]) / sigma[None])
    frac = np.diff(cdf, axis=0)  # (n_prompt, n_true, n_nodes)
    ws = w * s
    norm = ws.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        R = np.where(norm[None, :] > 0, (frac * ws[None]).sum(axis=2) / np.where(norm > 0, norm, 1.0)[None, :], 0.0)
    return R
