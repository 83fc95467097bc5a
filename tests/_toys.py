"""Small, fully specified experiments for tests: real :class:`fcmlc.experiments.Experiment`
objects (every code path accepts them) whose likelihood is exactly Gaussian."""
from __future__ import annotations

import numpy as np

from fcmlc.experiments.core import Experiment, LinearPart


def gaussian_toy(name="TOY", n_bins=8, baseline=10.0, events=4000.0, rho=0.3, normalisation=True,
                 norm_prior=0.0, rel_syst=0.0, group_size=None):
    """A one-baseline spectrum experiment: n_bins energy bins (2-8 MeV) at ``baseline`` metres,
    ``events`` per bin, Poisson-like variances with correlation rho^|i-j| (plus a relative
    systematic ``rel_syst`` fully correlated), one multiplicative normalisation group over all bins
    (or one per ``group_size`` consecutive bins, as STEREO's per-energy groups; free for
    norm_prior = 0, N(1, norm_prior^2) otherwise) or none."""
    e = np.linspace(2.0, 8.0, n_bins + 1)
    boxes = np.column_stack([np.full(n_bins, baseline - 0.5), np.full(n_bins, baseline + 0.5), e[:-1], e[1:]])
    part = LinearPart.from_dense(boxes, np.diag(np.full(n_bins, events)))
    s = np.sqrt(part.null)
    i = np.arange(n_bins)
    C = np.outer(s, s) * rho ** np.abs(i[:, None] - i[None, :]) + rel_syst**2 * np.outer(part.null, part.null)
    groups = (np.arange(n_bins) // (group_size or n_bins)).astype(np.int64) if normalisation else None
    return Experiment(name=name, description="test toy", kind="covariance",
                      bin_labels=[f"E{k}" for k in range(n_bins)], parts=[part], covariance=C,
                      norm_groups=groups, norm_prior=norm_prior, definition={"toy": name, "n": n_bins,
                                                                            "prior": norm_prior})


def linear_gaussian_masses(y_grid, x, A, sigma) -> np.ndarray:
    """Exact posterior cell masses of the linear-Gaussian toy (x = A y + N(0, sigma^2 I), y =
    (log10|Ue4|, log10 dm2) with a flat prior) on ``y_grid`` (a :class:`fcmlc.models.CellGrid`):
    shape (n_dm2, n_ue4), summing to 1."""
    pts = y_grid.log_points()  # (n_cells, 2), |Ue4| fastest
    r = np.asarray(x)[None, :] - pts @ np.asarray(A).T
    logp = -0.5 * np.sum(r * r, axis=1) / sigma ** 2
    p = np.exp(logp - logp.max())  # equal cell areas: mass proportional to density
    return (p / p.sum()).reshape(y_grid.n_dm2, y_grid.n_ue4)


def overlap(p, q) -> float:
    """The overlap coefficient sum_c min(p_c, q_c) of two cell-mass maps (1 - the total-variation distance)."""
    return float(np.minimum(p, q).sum())
