"""Frequentist inference on the parameter grid: exact chi2 scans, Wilks' regions, raster-scan
limits and full-grid Feldman-Cousins (FC) critical values.

Modules: :mod:`~fcmlc.frequentist.chi2` (the chi2 model and scans), :mod:`~fcmlc.frequentist.linalg`
(its set-up: whitening, group matrices, inverse Cholesky factors), :mod:`~fcmlc.frequentist.wilks`
(Wilks' regions, raster limits, goodness of fit, the test of no oscillation),
:mod:`~fcmlc.frequentist.fc` (FC toys, critical values, the resumable run),
:mod:`~fcmlc.frequentist.fc_result` (FC results, their HDF5 file, compatibility with a model) and
:mod:`~fcmlc.frequentist._torch` (the PyTorch backend of the toys). Everything public is
importable from ``fcmlc.frequentist`` itself.

The chi2 of experiment e for data x at grid point p is the exact profile of its Gaussian
model x ~ N(diag(mu_e(p)) E_e beta, C_e) over the multiplicative normalisations beta_g of its
normalisation groups (``norm_groups``, E_e the 0/1 assignment ``normalisation_matrix``):

    chi2_e(x; p) = min_beta (x - diag(mu) E beta)^T C_e^+ (x - diag(mu) E beta) [+ |beta - 1|^2 / sigma^2],

C_e the experiment's covariance (``covariance``; Moore-Penrose pseudo-inverse on the non-null
subspace when only positive semi-definite), sigma its ``norm_prior`` (0: free groups, no prior
term) and mu_e(p) the *oscillated* expectation (a normalisation scales the prediction, not a
fixed null spectrum). A global fit sums chi2_e over experiments on the common grid; the number
of effective bins is sum_e rank(C_e) - k_e.

How it is computed. With y = C^+ x, q = x.y [+ k/sigma^2], b'(p) = E^T (mu_p * y) [+ 1/sigma^2]
and G'(p) = E^T diag(mu_p) C^+ diag(mu_p) E [+ I/sigma^2] (k x k),

    chi2_e(x; p) = q - b'(p)^T G'(p)^-1 b'(p) = q - |L_p^-1 b'(p)|^2,

with L_p^-1 (the inverse Cholesky factor of G'(p), packed lower triangular) precomputed per
grid point in float64 (q and the subtracted term are both ~1e6 for STEREO while chi2 ~ 1e2).
For an experiment linear in s2 = sin^2(2 theta) (mu = N0 - s2 D(dm2)), b'(u, j) = b0' - s2_u b1(j)
with b0' = E^T (N0 * y) [+ 1/sigma^2] and b1(j) = E^T (D_j * y): a data vector costs one
C^+ x, n_dm2 sums over the bins, and k(k+1)/2 multiply-adds per grid point. Non-linear
experiments (DANSS's ratio of spectra) form b'(p) from the stored mu_p per grid point.

FC toys of linear experiments use the equivalent *centred* form (exact up to rounding). With
G'(u, j) = G0 - s H_j + s^2 G11_j (s = s2_u; G0 = G'(s2 = 0), H_j = G01_j + G01_j^T),
beta0 = G0^-1 b0' and chi2_null = q - b0'.beta0 (float64, once per toy),

    chi2(u, j) = chi2_null + s (2 beta0.b1(j) - beta0^T H_j beta0) + s^2 beta0^T G11_j beta0
                 - s^2 |L_p^-1 (c0(j) - s c1(j))|^2,   c0 = H_j beta0 - b1(j), c1 = G11_j beta0,

(from b' - G' beta0 = s c(s)). The row terms cost O(k^2) per dm2 row in float64; the per-point
quadratic form is multiplied by s^2 and bounded by the full-mixing Delta-chi2 (not ~q), so it
runs in float32 (L_p^-1 stored in float32, eight toys per vector): |Delta-chi2 - float64| was
at most 7e-5 (STEREO, PROSPECT) and 1.2e-3 (global fit) on the measured toys, FC critical
values moved by <= 1e-4 relative. The chi2 at the true point stays the float64 profile, so
Delta-chi2 >= 0. ``model.kernel.centred = False`` selects the float64 profile everywhere;
:func:`chi2_scan` always uses it. Results stay bit-identical for any thread count, chunking
and across x86-64 machines (no FMA: the AVX2 and baseline clones round identically).

Pruning (``model.kernel.prune``, default on; results bit-identical to off): the FC toys of a
model with centred experiments skip grid points that provably cannot be the minimum. The
computed float32 |L_p^-1 c|^2 is at most K_p |c|^2 (K_p ~ sigma_max(L_p^-1)^2 of the float32
factor, inflated for float32 rounding: :func:`~fcmlc.frequentist.linalg.prune_factors`), and |c(s)|^2 is O(1) per point
from three row sums, so every point gets a lower bound (the other parts evaluated exactly). K_p
explodes where G'(p) is nearly singular (at large s2 a group's expectation nearly vanishes),
so a second bound compares each point with one reference point per dm2 row (the row's largest
s2): |Lf_p c|^2 <= alpha_p |R_j c|^2 with R_j the float32 factor there and alpha_p =
sigma_max(Lf_p R_j^-1)^2 (:func:`~fcmlc.frequentist.linalg.prune_reference`; measured <= ~1.2
along STEREO's rows); |R_j c(s)|^2 is again three row sums (two triangular products per row and
toy), and each point takes the smaller bound. A block of four points of a row is computed only
when some point's bound, less a float64 rounding margin, is <= the running minimum of some of
the eight lanes (start: the true point and each lane's point of smallest bound; then the
sixteen most promising blocks, the rest in grid order). Skipped points lie strictly above the
minimum, so the minimum and its index (tie rule) are those of the full scan.

Experiments without normalisation groups (k = 0: pull-type, or no normalisation) use the
whitening W_e (W C W^T = I): chi2_e = |W_e (x - mu)|^2, centred on the null expectation
r_e = W_e (x - N0_e); for a linear experiment, with d_e(j) = W_e D_e(dm2_j),

    chi2_e(u, j) = |r_e|^2 + 2 s2_u (r_e . d_e(j)) + s2_u^2 |d_e(j)|^2,

so a data vector costs n_dm2 dot products; when every experiment is of this kind the chi2 is a
convex quadratic in s2 per dm2 row and the FC toys find the grid minimum next to the
unconstrained minimiser (binary search). Non-linear ones keep offsets m_e(p) = W_e (mu_e(p) - N0_e).

Pull-type experiments (gallium): their chi2 uses ``covariance``, the linearised pulls; for a
nuisance that enters linearly with a Gaussian prior, profiling it exactly gives the same chi2
as using the marginal covariance (C + J S J^T), so this *is* the exact profile chi2 of the
linearised model. Their FC toys, however, come from the non-Gaussian sampler of ``simulate``
(truncated pulls entering multiplicatively): that is where FC and Wilks differ.

FC toys are exactly the realizations of :func:`fcmlc.simulation.simulate`: toy t at grid point
p under seed s is realization t of point p (same counter-based generator, stream and keying):
x = mu_p (1 + sigma E w) + F z with F F^T = C, z the generator's normals and w ~ N(0, I_k) drawn
only when sigma > 0. For experiments with normalisation groups the kernel forms x itself (four
toys per vector lane, another summation order than simulate's: rounding only) and scans it
like a data vector over the whole grid; for the others it forms the whitened toy r = c_p + M z
with c_p = W (mu_p - N0) and M = W F, and for linear ones r . d(j) = d(j) . c_p + (d M)(j) . z
directly.
"""
from __future__ import annotations

from .._checks import UINT64_MAX
from ..simulation import resolve_experiments
from .chi2 import Chi2Model, Chi2Scan, asimov_data, chi2_scan, data_matrix
from .fc import FC_LEVELS, critical_values, fc_toys, feldman_cousins, order_statistic_index
from .fc_result import FC_FORMAT, FC_FORMAT_VERSION, QUANTILE_CONVENTION, FCResult, check_compatible
from .linalg import whitening_projection
from .wilks import (WILKS_LEVELS, NoOscillationTest, goodness_of_fit, no_oscillation_test, raster_limits, summary,
                    wilks_regions, wilks_threshold)

__all__ = [
    "WILKS_LEVELS", "FC_LEVELS", "FC_FORMAT", "FC_FORMAT_VERSION", "QUANTILE_CONVENTION", "UINT64_MAX",
    "resolve_experiments", "whitening_projection", "Chi2Model", "Chi2Scan", "chi2_scan", "asimov_data", "data_matrix",
    "wilks_threshold", "wilks_regions", "raster_limits", "goodness_of_fit", "NoOscillationTest",
    "no_oscillation_test", "summary", "order_statistic_index", "critical_values", "fc_toys", "feldman_cousins",
    "FCResult", "check_compatible",
]
