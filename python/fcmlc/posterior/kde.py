"""p(y_hat | x): Gaussian product-kernel density of the m stochastic network predictions,
evaluated on the y_hat grid (C++, batched), and its bandwidth rules."""
from __future__ import annotations

import warnings

import numpy as np

from .. import _core

__all__ = ["kde_bandwidth", "kde_grid"]


def _as_sample_sets(samples) -> tuple[np.ndarray, bool]:
    x = np.asarray(samples, dtype=float)
    if x.ndim not in (2, 3) or x.shape[-1] != 2:
        raise ValueError(
            "samples must have shape (m, 2) or (batch, m, 2) with columns (log10|Ue4|, log10 dm2); "
            f"got shape {x.shape}"
        )
    single = x.ndim == 2
    return np.ascontiguousarray(x[None] if single else x), single


def _statsmodels_kde(data, bw):
    from statsmodels.nonparametric.kernel_density import KDEMultivariate

    with warnings.catch_warnings():
        # statsmodels >= 0.15 warns about its default random generator, unused here.
        warnings.simplefilter("ignore", FutureWarning)
        return KDEMultivariate(data, var_type="cc", bw=bw)


def kde_bandwidth(samples, method="normal_reference") -> np.ndarray:
    """Per-dimension bandwidths (h_a, h_b) of each sample set.

    ``method``:

    * ``'normal_reference'`` - statsmodels' KDEMultivariate rule of thumb,
      1.06 * std * m**(-1/(4 + d)) with d = 2 and std the population standard
      deviation (ddof=0, as ``np.std``), computed here;
    * ``'cv_ml'`` - leave-one-out maximum-likelihood cross-validation, delegated to
      ``statsmodels KDEMultivariate(..., bw='cv_ml').bw`` (slow: O(m^2) per step).

    samples (m, 2) -> (2,); (batch, m, 2) -> (batch, 2).
    """
    x, single = _as_sample_sets(samples)
    m = x.shape[1]
    if method == "normal_reference":
        h = 1.06 * np.std(x, axis=1) * m ** (-1.0 / (4 + 2))
    elif method == "cv_ml":
        if m < 3:
            raise ValueError(f"bandwidth='cv_ml' needs at least 3 samples per set (statsmodels), got m = {m}")
        if not np.all(np.isfinite(x)):
            raise ValueError("samples contain non-finite values")
        h = np.array([_statsmodels_kde(xi, "cv_ml").bw for xi in x], dtype=float)
    else:
        raise ValueError(f"bandwidth method must be 'normal_reference' or 'cv_ml', got {method!r}")
    return h[0] if single else h


def kde_grid(samples, a_centres, b_centres, bandwidth="normal_reference", threads=None) -> np.ndarray:
    """Gaussian product-kernel density of the samples on the grid ``a_centres`` x ``b_centres``.

    f(a, b) = 1/(m h_a h_b) sum_j phi((a - x_j)/h_a) phi((b - y_j)/h_b), phi the
    standard normal density: statsmodels' ``KDEMultivariate(samples, 'cc', bw).pdf``
    evaluated at the grid points, computed in C++ through the separable form (n_a m +
    n_b m exponentials and one matrix product per set).

    samples: (m, 2) or (batch, m, 2), columns (axis a, axis b) = (log10|Ue4|, log10 dm2)
        for the y_hat grid of fcmlc.
    a_centres (n_a,), b_centres (n_b,): grid centres in the same variables.
    bandwidth: 'normal_reference' (default), 'cv_ml' (see :func:`kde_bandwidth`),
        a pair (h_a, h_b) for every set, or an array (batch, 2).
    threads: None = all cores. Results are bit-identical for any thread count.

    Returns (n_b, n_a), or (batch, n_b, n_a): rows follow axis b.
    """
    x, single = _as_sample_sets(samples)
    if isinstance(bandwidth, str):
        h = kde_bandwidth(x, bandwidth)
    else:
        h = np.asarray(bandwidth, dtype=float)
        if h.shape == (2,):
            h = np.broadcast_to(h, (x.shape[0], 2))
        elif h.shape != (x.shape[0], 2):
            raise ValueError(
                f"bandwidth must be 'normal_reference', 'cv_ml', a pair (h_a, h_b) or an array of shape "
                f"(batch, 2) = {(x.shape[0], 2)}; got shape {h.shape}"
            )
    a = np.asarray(a_centres, dtype=float)
    b = np.asarray(b_centres, dtype=float)
    out = _core.kde_grid_2d(x, a, b, np.ascontiguousarray(h), threads)
    return out[0] if single else out
