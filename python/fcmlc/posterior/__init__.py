"""The numeric part of an FCMLC fit (paper Sec. II B): KDE, Eq. 2 integration, the Posterior.

Working variables are (log10|Ue4|, log10 dm2): the prior of the paper is uniform in
the logarithm of each parameter, so densities here are per unit log10|Ue4| per unit
log10 dm2, and grid cells are uniform in log space.

* :func:`kde_grid` - p(y_hat | x): a Gaussian product-kernel density of the m
  stochastic network predictions, evaluated on the y_hat grid (C++, batched).
* :func:`integrate` - Eq. 2 on grids, p(y | x)[c] = sum_k T[k, c] p(y_hat_k | x) dA_k,
  with the transition matrix T[k, :] = p(y | y_hat cell k) on the y grid (C++, batched).
* :class:`Posterior` - p(y | x) on the y grid: highest-density credible regions
  (Eq. 3), raster-scan upper limits (Eq. 4), best point, contours, plots, NPZ I/O.
* :func:`posterior_from_samples` - the three steps above in one call.

Grid ordering: a map has shape (n_dm2, n_ue4) (rows are dm2, as in the paper's
figures, where dm2 is the vertical axis); flattened, |Ue4| runs fastest (the
ordering of :class:`fcmlc.physics.Grid`). The y_hat grid uses the same ordering,
so the KDE output (n_b, n_a) flattens to the row index k of T.

Modules: :mod:`~fcmlc.posterior.kde`, :mod:`~fcmlc.posterior.integrate` (Eq. 2 and the three
steps in one call), :mod:`~fcmlc.posterior.core` (:class:`Posterior`), with its NPZ file format in
:mod:`~fcmlc.posterior.npz` and its plots in :mod:`~fcmlc.posterior.plot`.
"""
from __future__ import annotations

from .core import Posterior
from .integrate import cell_areas, integrate, posterior_from_samples
from .kde import kde_bandwidth, kde_grid

__all__ = [
    "kde_bandwidth",
    "kde_grid",
    "integrate",
    "cell_areas",
    "Posterior",
    "posterior_from_samples",
]
