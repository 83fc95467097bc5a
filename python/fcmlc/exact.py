"""The exact posterior on the grid, from the simulator's own likelihood.

FCMLC *learns* p(theta | x) from simulations; for the experiments of fcmlc the likelihood
those simulations come from can be written down, so the posterior can also be computed
directly on the grid and used as the reference an estimator is measured against.

Per experiment (see docs/statistical-model.md):

* ``kind == "covariance"`` without normalisation groups: N(x; mu(theta), C), exact.
* shape-only (every normalisation group free, ``norm_prior == 0``: the built-in reactor
  experiments): the model says that only the shape inside each group is information; the
  simulator draws x ~ N(mu(theta), C) (beta = 1) and FCMLC's network sees each group's direction
  u_g = x_g / |x_g|. The exact posterior is that of the directions,
  p(u | theta) = int_{r > 0} N(sum_g r_g u_g; mu, C) prod_g r_g^(n_g - 1) dr, by Laplace's
  method over the radial coordinates with the Jacobian factor included (:class:`_ShapePart`:
  a few percent of the likelihood where a group's expectation vanishes, O((n_g - 1)
  sigma_g^2 / r_g^2) elsewhere, sigma_g / r_g the group's relative statistical error). It is
  calibrated under the simulator (tested). Integrating beta out with a flat prior instead would
  weight each point by det G(theta)^(-1/2) ~ prod_g 1 / |mu_g|, a prior-volume term that favours large mixing and
  undercovers (measured: 0.65 at 68 % with eight groups; 0.55 for STEREO's 21).
* normalisation groups with a prior (``norm_prior = sigma > 0``): x ~ N(diag(mu) E beta, C),
  beta_g ~ N(1, sigma^2) (the simulator draws beta from it), integrated out analytically,

      -2 log L(theta) = chi2(theta) + log det G'(theta) + const,
      G'(theta) = E^T diag(mu) C^+ diag(mu) E + I / sigma^2,

  with chi2 the exact profile chi2 of :mod:`fcmlc.frequentist` (the one the Wilks and
  Feldman-Cousins methods use); exact.
* ``kind == "pulls"`` (gallium, BEST): x = mu (1 + J pi) + sigma z, pi ~ N(0, S). The pulls
  are marginalised in their linearised form *at the point's own expectation*:
  x ~ N(mu, diag(sigma^2) + diag(mu) J S J^T diag(mu)), with its log-determinant. What is
  approximated: the truncation of the pulls at ``pull_lower`` and the second-order terms
  (the simulator draws the truncated, multiplicative pulls). The chi2 of the frequentist
  methods linearises at the null expectation instead; both are approximations of the same
  stated model and agree at small mixing.

The prior is uniform in (log10|Ue4|, log10 dm2) by default (the paper's, and the convention of
:class:`fcmlc.posterior.Posterior` densities), or uniform in (|Ue4|, dm2).
"""
from __future__ import annotations

import numpy as np

from . import _core
from .frequentist import Chi2Model, data_matrix, resolve_experiments, whitening_projection
from .frequentist.linalg import group_matrix
from .physics import Grid, grid_or_paper
from .posterior import Posterior
from .regions import cell_areas
from .simulation import expectation_rows

__all__ = ["PRIORS", "ExactModel", "exact_posterior", "grid_of", "grid_of_centres"]

#: Priors over the grid: density per unit log10|Ue4| per unit log10 dm2, up to a constant.
PRIORS = ("log-uniform", "uniform")


def grid_of(posterior: Posterior) -> Grid:
    """The :class:`~fcmlc.physics.Grid` whose points are the cell centres of ``posterior``
    (a ValueError if they are not log-spaced, i.e. not an fcmlc grid)."""
    return grid_of_centres(posterior.ue4, posterior.dm2)


def grid_of_centres(ue4, dm2) -> Grid:
    """The :class:`~fcmlc.physics.Grid` whose points are the given cell centres (|Ue4| and dm2,
    log-spaced: an FCMLC model's posterior cells, a Posterior's cells); a ValueError otherwise."""
    u, d = np.asarray(ue4, dtype=float), np.asarray(dm2, dtype=float)
    g = Grid(ue4_range=(float(u[0]), float(u[-1])), dm2_range=(float(d[0]), float(d[-1])), shape=(u.size, d.size))
    if not (np.allclose(g.ue4, u, rtol=1e-9) and np.allclose(g.dm2, d, rtol=1e-9)):
        raise ValueError("the cell centres are not a log-spaced fcmlc grid")
    return g


def _log_prior(prior, grid: Grid) -> np.ndarray:
    """log prior density per unit log10|Ue4| per unit log10 dm2, (n_dm2, n_ue4), up to a constant."""
    if isinstance(prior, str):
        if prior == "log-uniform":
            return np.zeros((grid.n_dm2, grid.n_ue4))
        if prior == "uniform":  # uniform in (|Ue4|, dm2): dP = du dd = u d ln(10)^2 dlog10u dlog10d
            return np.log(grid.dm2)[:, None] + np.log(grid.ue4)[None, :]
        raise ValueError(f"prior must be one of {PRIORS} or an array of prior weights, got {prior!r}")
    w = np.asarray(prior, dtype=float)
    if w.size != grid.n_points:
        raise ValueError(f"prior weights must have one value per grid point ({grid.n_points}), got shape {w.shape}")
    w = w.reshape(grid.n_dm2, grid.n_ue4)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError("prior weights must be finite, >= 0 and not all zero")
    with np.errstate(divide="ignore"):
        return np.log(w)


class _PullsPart:
    """A pulls experiment's linearised Gaussian at every grid point: Cholesky factors of
    C(theta) = diag(sigma^2) + diag(mu) J S J^T diag(mu) and their log-determinants."""

    def __init__(self, e, grid: Grid):
        pts = grid.points()
        self.name = e.name
        self.n_bins = int(e.n_bins)
        self.mu = np.ascontiguousarray(expectation_rows(e, pts[:, 0], pts[:, 1]), dtype=float)  # (P, n)
        J = np.asarray(e.pull_jacobian, dtype=float)
        S = np.asarray(e.pull_covariance, dtype=float)
        V = J @ S @ J.T  # (n, n)
        C = self.mu[:, :, None] * V[None] * self.mu[:, None, :]
        C[:, np.arange(self.n_bins), np.arange(self.n_bins)] += np.asarray(e.stat_sigma, dtype=float) ** 2
        self.L = np.linalg.cholesky(C)
        self.log_det = 2.0 * np.log(np.diagonal(self.L, axis1=1, axis2=2)).sum(axis=1)  # (P,)

    def minus2_log_like(self, X, threads=None) -> np.ndarray:
        """(n_data, P): r^T C(theta)^-1 r + log det C(theta), r = x - mu(theta) (NumPy: ``threads``,
        the argument every part takes, is not used)."""
        R = X[:, None, :] - self.mu[None]  # (N, P, n)
        Z = np.linalg.solve(self.L[None], R[..., None])[..., 0]
        return np.einsum("npi,npi->np", Z, Z) + self.log_det[None]


class _ShapePart:
    """A shape-only experiment (every normalisation group free): the likelihood of the data's
    group directions u_g = x_g / |x_g| (what the model says the data carry, and what FCMLC's
    network sees) under the simulator, x ~ N(mu(theta), C):

        p(u | theta) = int_{r > 0} N(sum_g r_g u_g; mu, C) prod_g r_g^(n_g - 1) dr,

    by Laplace's method over the radial coordinates r, *including* the Jacobian factor. With
    A = W U (W the whitening of C, U the n x k matrix of the directions), H = A^T A (data only),
    b = A^T W mu(theta) and m_g = n_g - 1, the integrand is exp(-|W mu|^2 / 2 - phi(r)),

        phi(r) = r^T H r / 2 - b^T r - sum_g m_g log r_g,

    strictly convex on r > 0 (a log-concave integrand), with a unique minimum r_hat > 0 found by
    Newton's method (:func:`fcmlc._core.radial_laplace`), and

        -2 log p(u | theta) = |W mu|^2 + 2 phi(r_hat) + log det(H + diag(m / r_hat^2)) - log det H + const(x).

    Where every group's expectation is far above its noise this is the Gaussian's own mode
    r = H^-1 b with a small shift; where a group's expectation nearly vanishes (an oscillation
    minimum at large mixing) the Gaussian's mode can lie at r_g <= 0 and only the Jacobian factor
    keeps the integral finite: an approximation that dropped it there was wrong by hundreds in
    -2 log L (measured on STEREO at sin^2 2theta near 1). What is left is Laplace's error for the
    r^m factor: of the order of Stirling's, a factor 1 + 1/(12 m_g) per group, where a group's
    expectation is at or below its noise (measured against quadrature for two correlated groups
    with m = 5: at most 0.044 in log p, i.e. 0.09 in -2 log L, tested), and O(m sigma_g^2 / r_g^2)
    where it is far above. Groups of one bin (m = 0, a direction that is only a sign) are refused."""

    def __init__(self, e, grid: Grid):
        pts = grid.points()
        mu = np.ascontiguousarray(expectation_rows(e, pts[:, 0], pts[:, 1]), dtype=float)  # (P, n)
        self.name = str(e.name)
        self.groups = np.asarray(e.norm_groups, dtype=np.int64)
        self.k = int(e.n_norm_groups)
        self.E = group_matrix(self.groups, self.k)
        self.m = self.E.sum(axis=0) - 1.0  # n_g - 1
        if np.any(self.m < 1):
            g = int(np.flatnonzero(self.m < 1)[0])
            raise ValueError(f"{self.name}: free normalisation group {g} has one bin: its shape carries no information "
                             "(merge it into another group or give the normalisations a prior)")
        self.W = whitening_projection(np.asarray(e.covariance, dtype=float), None, f"{self.name} covariance")
        self.Wmu = mu @ self.W.T  # (P, rank)
        self.c = np.einsum("pr,pr->p", self.Wmu, self.Wmu)
        self.row = int(grid.n_ue4)  # Newton started from the neighbouring |Ue4| point's minimiser

    def minus2_log_like(self, X, threads=None) -> np.ndarray:
        out = np.empty((X.shape[0], self.c.size))
        for i, x in enumerate(X):
            norms = np.sqrt((x**2) @ self.E)
            if np.any(norms == 0):
                g = int(np.flatnonzero(norms == 0)[0])
                raise ValueError(f"{self.name}: normalisation group {g} of the data is all zeros (no shape)")
            A = self.W @ ((x / norms[self.groups])[:, None] * self.E)  # (rank, k)
            H = A.T @ A
            b = self.Wmu @ A  # (P, k)
            _, phi, logdet = _core.radial_laplace(H, b, self.m, RADIAL_TOL, row=self.row, threads=threads)
            out[i] = self.c + 2.0 * phi + logdet
        return out


#: Newton's method for the radial modes (:func:`fcmlc._core.radial_laplace`) stops once the
#: bound on the next Newton decrement, (lambda / (1 - lambda))^4 >= lambda_next^2
#: (self-concordance), is below this: lambda^2 bounds 2 (phi - min phi) near the minimum, i.e.
#: the error in -2 log L
RADIAL_TOL = 1e-10


class ExactModel:
    """The exact log-likelihood of a set of experiments on a grid, set up once (the expensive
    part: each experiment's chi2 model with its per-point factors) and evaluated for many data
    vectors cheaply.

    ``ExactModel(experiments, grid=None, prior="log-uniform", threads=None)``; data vectors are
    the experiments' bins concatenated in the given order (as everywhere in fcmlc).
    ``chi2_models`` holds one :class:`~fcmlc.frequentist.Chi2Model` per experiment (their
    chi2 maps also serve :mod:`fcmlc.diagnostics`).
    """

    def __init__(self, experiments, grid: Grid | None = None, prior="log-uniform", threads=None):
        grid = grid_or_paper(grid)
        exps = resolve_experiments(experiments)
        self.grid = grid
        self.experiments = exps
        self.names = tuple(str(e.name) for e in exps)
        self.n_bins_each = tuple(int(e.n_bins) for e in exps)
        self.threads = threads
        self.log_prior = _log_prior(prior, grid)
        self.prior = prior if isinstance(prior, str) else "weights"
        off = np.concatenate([[0], np.cumsum(self.n_bins_each)]).astype(int)
        self.columns = tuple(slice(int(a), int(b)) for a, b in zip(off[:-1], off[1:]))
        self._chi2_models = [None] * len(exps)  # built when first needed (the setup's main cost)
        # -2 log L_e: the linearised pulls Gaussian, the shape-only direction likelihood, or
        # chi2_e + log det G'_e (plain covariance, normalisations with a prior).
        self._direct = tuple(_PullsPart(e, grid) if e.kind == "pulls" else
                             _ShapePart(e, grid) if getattr(e, "shape_only", False) else None for e in exps)
        self._log_det = tuple(None if pp is not None else self.chi2_model(i).normalisation_log_det().ravel()
                              for i, pp in enumerate(self._direct))

    def chi2_model(self, i: int) -> Chi2Model:
        """The :class:`~fcmlc.frequentist.Chi2Model` of experiment ``i`` on this grid (built on first use)."""
        if self._chi2_models[i] is None:
            self._chi2_models[i] = Chi2Model([self.experiments[i]], self.grid)
        return self._chi2_models[i]

    @property
    def chi2_models(self) -> tuple:
        """One :class:`~fcmlc.frequentist.Chi2Model` per experiment (the frequentist methods' chi2)."""
        return tuple(self.chi2_model(i) for i in range(len(self.experiments)))

    @property
    def n_bins(self) -> int:
        return int(sum(self.n_bins_each))

    def data_matrix(self, x):
        """(n_data, n_bins) float64 and whether one vector was given (:func:`fcmlc.frequentist.data_matrix`)."""
        return data_matrix(x, self.names, self.n_bins_each)

    def chi2_maps(self, x) -> np.ndarray:
        """The chi2 of each experiment on the grid (the frequentist methods' profile chi2):
        (n_experiments, n_data, n_points) for data (n_data, n_bins)."""
        X, _ = self.data_matrix(x)
        return np.stack([m.chi2(np.ascontiguousarray(X[:, c]), threads=self.threads).chi2.reshape(X.shape[0], -1)
                         for m, c in zip(self.chi2_models, self.columns)])

    def minus2_log_likelihood(self, x) -> np.ndarray:
        """-2 log L(theta) up to a data-dependent constant, (n_dm2, n_ue4) or (n_data, n_dm2, n_ue4)."""
        X, single = self.data_matrix(x)
        g = self.grid
        out = np.zeros((X.shape[0], g.n_points))
        for i, (c, pp, ld) in enumerate(zip(self.columns, self._direct, self._log_det)):
            if pp is not None:
                out += pp.minus2_log_like(X[:, c], self.threads)
            else:
                scan = self.chi2_model(i).chi2(np.ascontiguousarray(X[:, c]), threads=self.threads)
                out += scan.chi2.reshape(X.shape[0], -1) + ld
        out = out.reshape(X.shape[0], g.n_dm2, g.n_ue4)
        return out[0] if single else out

    def log_posterior(self, x) -> np.ndarray:
        """log p(theta | x) per unit log10|Ue4| log10 dm2, normalised over the grid's cells."""
        lp = -0.5 * self.minus2_log_likelihood(x) + self.log_prior
        m = lp.max(axis=(-2, -1), keepdims=True)
        area = _cell_area(self.grid)
        return lp - m - np.log(np.sum(np.exp(lp - m) * area, axis=(-2, -1), keepdims=True))

    def posterior(self, x, meta=None) -> Posterior | list:
        """The exact :class:`~fcmlc.posterior.Posterior` of one data vector (a list for a batch)."""
        lp = self.log_posterior(x)
        base = {"method": "exact", "experiments": list(self.names), "prior": self.prior}
        base.update(meta or {})
        X, _ = self.data_matrix(x)
        posts = [Posterior.from_grid(self.grid, np.exp(v), meta=base).with_source(self.experiments, xi)
                 for v, xi in zip(lp.reshape(-1, *lp.shape[-2:]), X)]
        return posts[0] if lp.ndim == 2 else posts

    def __repr__(self) -> str:
        return f"ExactModel({list(self.names)}, grid={self.grid.shape}, prior={self.prior!r})"


def _cell_area(grid: Grid) -> np.ndarray:
    return cell_areas(grid.ue4, grid.dm2)


def exact_posterior(experiments, x, grid: Grid | None = None, prior="log-uniform", threads=None) -> Posterior:
    """The exact posterior of data ``x`` on ``grid`` (default: the paper's 101 x 101) under
    ``prior`` ('log-uniform', 'uniform' or per-point weights): see the module docstring for the
    likelihood. For many data vectors build an :class:`ExactModel` once instead."""
    model = experiments if isinstance(experiments, ExactModel) else ExactModel(experiments, grid, prior, threads)
    return model.posterior(x)
