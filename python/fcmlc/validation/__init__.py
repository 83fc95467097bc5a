"""Validation of FCMLC against the truth and against the frequentist methods
(paper Sec. II C 1-2, Fig. 2, Fig. 4, Sec. IV).

* :func:`mse_maps` (:mod:`.mse`) - binned mean squared error of the regressor's predictions on
  the test set, the interpolation and random samples separately (Fig. 2).
* :func:`coverage` (:mod:`.coverage_check`) - coverage checks (Sec. II C 2, Fig. 4): truths drawn
  from the prior, one simulated realization each, FCMLC posteriors, Wilks and Feldman-Cousins
  regions; observed coverage at nominal levels with binomial intervals and the whole
  expected-coverage curve -> :class:`CoverageResult` (:mod:`.coverage_result`). How each
  method locates the truth is described in :mod:`fcmlc.validation.coverage_check`; the truths
  themselves are drawn and located by :mod:`.truth`.
* :func:`compare` (:mod:`.comparison`) - one data vector, FCMLC credible regions vs Wilks and FC
  confidence regions on one figure, with intersection-over-union -> :class:`Comparison`,
  measured on the common raster of :mod:`.raster`.

The inputs (model, experiments, chi2 grid, Feldman-Cousins result) are loaded and checked by
:mod:`.inputs`. Variables: y = (log10|Ue4|, log10 dm2), the prior of the paper is uniform in y
over the grid's ranges, and areas (IoU) are measured in y.
"""
from __future__ import annotations

from .comparison import Comparison, compare
from .coverage_check import CHI2_BATCH, FCMLC_BATCH, TRIAL_KEY_OFFSET, coverage
from .coverage_result import METHOD_LABELS, METHODS, CoverageResult, binomial_interval
from .mse import MSEMaps, mse_maps
from .raster import common_raster, regrid_cells, regrid_points
from .truth import chi2_at, truth_credible_levels

__all__ = [
    "MSEMaps",
    "mse_maps",
    "CoverageResult",
    "coverage",
    "Comparison",
    "compare",
    "truth_credible_levels",
    "chi2_at",
    "common_raster",
    "regrid_cells",
    "regrid_points",
    "binomial_interval",
    "FCMLC_BATCH",
    "CHI2_BATCH",
    "TRIAL_KEY_OFFSET",
]
