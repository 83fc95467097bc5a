"""Eq. 2 on grids, p(y | x)[c] = sum_k T[k, c] p(y_hat_k | x) dA_k (C++, batched), and the
numeric part of one FCMLC fit in one call (KDE, Eq. 2, :class:`~fcmlc.posterior.Posterior`)."""
from __future__ import annotations

import numpy as np

from .. import _core
from ..regions import cell_areas
from .core import Posterior
from .kde import kde_grid

__all__ = ["integrate", "cell_areas", "posterior_from_samples"]


def integrate(p_yhat, transition, cell_area, threads=None, check_transition=True) -> np.ndarray:
    """Eq. 2 on grids: p(y | x)[c] = sum_k T[k, c] p(y_hat_k | x) dA_k.

    p_yhat: density on the y_hat grid, shape (..., *cell_area.shape): the trailing
        dimensions match ``cell_area`` ((n_k,) or (n_b, n_a)), leading ones are a batch.
    transition: T, shape (n_k, n_c); row k is p(y | y_hat = centre of cell k) on the
        y grid (flattened, |Ue4| fastest), n_k = cell_area.size.
    cell_area: dA_k of the y_hat cells in the working variables (see :func:`cell_areas`).
    check_transition: scan T for negative / non-finite entries first (one pass over T;
        pass False when T was validated once, e.g. when it was loaded with a model).
        Non-finite entries are still reported when they reach the result.

    Returns (..., n_c). Every output element is summed over k in increasing order,
    so results are bit-identical for any thread count and batch composition.
    """
    dA = np.asarray(cell_area, dtype=float)
    p = np.asarray(p_yhat, dtype=float)
    if dA.ndim == 0 or p.shape[p.ndim - dA.ndim :] != dA.shape:
        raise ValueError(
            f"p_yhat must end with the shape of cell_area {dA.shape} (one value per y_hat cell); got shape {p.shape}"
        )
    batch = p.shape[: p.ndim - dA.ndim]
    p2 = np.ascontiguousarray(p.reshape(-1, dA.size))
    T = np.asarray(transition, dtype=float)
    out = _core.integrate_grid(p2, T, np.ascontiguousarray(dA.ravel()), threads, bool(check_transition))
    return out.reshape(*batch, T.shape[1])


def posterior_from_samples(samples, yhat_ue4, yhat_dm2, transition, ue4, dm2, bandwidth="normal_reference",
                           threads=None, check_transition=True, meta=None):
    """The numeric part of one FCMLC fit (or of a batch of fits).

    samples: (m, 2) or (batch, m, 2) network predictions y_hat in the working variables
        (log10|Ue4|, log10 dm2).
    yhat_ue4 (n_a,), yhat_dm2 (n_b,): the y_hat grid as |Ue4| and dm2 centres (the KDE
        is evaluated at their log10).
    transition: (n_b * n_a, n_u * n_d), row k = p(y | y_hat cell k) per unit
        log10|Ue4| log10 dm2 on the y grid ``ue4`` x ``dm2`` (|Ue4| fastest).
    Returns a :class:`Posterior`, or a list of them for a batch.
    """
    la, lb = np.log10(np.asarray(yhat_ue4, dtype=float)), np.log10(np.asarray(yhat_dm2, dtype=float))
    p = kde_grid(samples, la, lb, bandwidth=bandwidth, threads=threads)
    dA = cell_areas(yhat_ue4, yhat_dm2)
    post = integrate(p, transition, dA, threads=threads, check_transition=check_transition)
    n_u, n_d = np.asarray(ue4).size, np.asarray(dm2).size
    if post.shape[-1] != n_u * n_d:
        raise ValueError(f"transition has {post.shape[-1]} y cells, the y grid has {n_d} x {n_u} = {n_u * n_d}")
    if post.ndim == 1:
        return Posterior(ue4, dm2, post.reshape(n_d, n_u), meta=meta)
    return [Posterior(ue4, dm2, q.reshape(n_d, n_u), meta=meta) for q in post]
