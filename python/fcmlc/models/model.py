"""The trained FCMLC model: regressor + conditional flow + transition matrix -> posteriors.

    x --(m MC-dropout predictions)--> y_hat samples --(KDE on the y_hat grid)--> p(y_hat | x)
      --(p(y|x)_c = sum_k T[k, c] p(y_hat_k | x) dA_k)--> p(y | x) on the y grid -> Posterior

(paper Sec. II B, Eq. 2 with p(y | y_hat, x) ~ p(y | y_hat), Fig. 1). All variables are
y = (log10|Ue4|, log10 dm2); densities are per unit area in those variables.

The model directory (:meth:`FCMLC.save`, :meth:`FCMLC.load`) is described in
:mod:`fcmlc.models.directory`; :func:`fcmlc.models.train` builds a model from a dataset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..estimators import estimator_of
from ..estimators import load as load_estimator
from ..posterior import Posterior, integrate, kde_bandwidth, kde_grid
from .directory import read_model_directory, write_model_directory
from .features import FeatureMap, check_data_vectors, feature_text
from .flow import CellGrid, ConditionalFlow
from .regressor import Regressor

__all__ = ["FCMLC"]


class FCMLC:
    """A trained FCMLC model: ``posterior(x)`` turns a data vector into a :class:`fcmlc.posterior.Posterior`.

    Build one with :func:`train` or :meth:`FCMLC.load`.
    """

    #: the registry name of this estimator (:mod:`fcmlc.estimators`)
    estimator = "fcmlc"

    def __init__(self, regressor: Regressor, flow: ConditionalFlow, transition: np.ndarray,
                 yhat_grid: CellGrid, y_grid: CellGrid, experiments, config: dict | None = None,
                 info: dict | None = None, features: FeatureMap | None = None):
        T = np.asarray(transition)
        if T.shape != (yhat_grid.n_cells, y_grid.n_cells):
            raise ValueError(f"transition matrix has shape {T.shape}, expected "
                             f"({yhat_grid.n_cells}, {y_grid.n_cells}) for the y_hat and y grids")
        self.regressor = regressor
        self.flow = flow
        self.transition = T
        #: raw data vector -> network input (group directions x_g / |x_g| for shape-only experiments)
        self.features = FeatureMap(np.full(regressor.n_features, -1)) if features is None else features
        if self.features.n_features != regressor.n_features:
            raise ValueError(f"feature map has {self.features.n_features} bins but the regressor takes "
                             f"{regressor.n_features} features")
        self.yhat_grid = yhat_grid
        self.y_grid = y_grid
        self.experiments = [str(e) for e in experiments]
        self.config = dict(config or {})
        self.info = dict(info or {})
        self.version = self.info.get("fcmlc_version", __version__)
        self._T64 = None

    # ------------------------------------------------------------------ basic properties
    @property
    def n_features(self) -> int:
        return self.regressor.n_features

    def __repr__(self):
        return (f"FCMLC(experiments={self.experiments}, n_features={self.n_features}, "
                f"yhat_grid={self.yhat_grid.shape}, y_grid={self.y_grid.shape}, version={self.version!r})")

    def to(self, device) -> "FCMLC":
        self.regressor.to(device)
        self.flow.to(device)
        return self

    def _check_x(self, x):
        return check_data_vectors(x, self.n_features, feature_text(self.n_features, self.experiments,
                                                                   self.info.get("experiment_bins")))

    # ------------------------------------------------------------------ inference
    def sample_yhat(self, x, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
        """MC-dropout samples of y_hat = (log10|Ue4|, log10 dm2): (n, n_samples, 2)."""
        arr, _ = self._check_x(x)
        return self.regressor.predict_samples(self.features.transform(arr), n_samples=n_samples, seed=seed)

    def bandwidths(self, samples, bandwidth="normal_reference", bandwidth_floor: float = 0.5) -> np.ndarray:
        """KDE bandwidths (n, 2) in (log10|Ue4|, log10 dm2) for MC-dropout samples (n, m, 2).

        A rule name ('normal_reference', 'cv_ml': :func:`fcmlc.posterior.kde_bandwidth`) is
        floored at ``bandwidth_floor`` y_hat-cell widths per axis: p(y_hat | x) is evaluated
        at the cell centres and the transition matrix is only known there, so a kernel much
        narrower than a cell would alias (its mass could fall between centres). Half a cell
        keeps the grid sum of a kernel within 1 % of its integral and blurs p(y_hat | x) by
        less than the grid resolution. Explicit numbers (a pair or (n, 2)) are used as given.
        """
        if not isinstance(bandwidth, str):
            h = np.asarray(bandwidth, dtype=float)
            return np.broadcast_to(h, (len(samples), 2)).copy() if h.shape == (2,) else h
        h = np.asarray(kde_bandwidth(samples, bandwidth), dtype=float).reshape(len(samples), 2)
        if bandwidth_floor and bandwidth_floor > 0:
            du = np.diff(self.yhat_grid.log_ue4_edges)[0]
            dd = np.diff(self.yhat_grid.log_dm2_edges)[0]
            h = np.maximum(h, float(bandwidth_floor) * np.array([du, dd]))
        return h

    def p_yhat(self, x, n_samples: int = 1000, seed: int = 0, bandwidth="normal_reference",
               threads=None, bandwidth_floor: float = 0.5):
        """KDE of the MC-dropout samples on the y_hat grid: (n, n_dm2, n_ue4) densities."""
        samples = self.sample_yhat(x, n_samples, seed)
        h = self.bandwidths(samples, bandwidth, bandwidth_floor)
        p = np.asarray(kde_grid(samples, self.yhat_grid.log_ue4_centres, self.yhat_grid.log_dm2_centres,
                                bandwidth=h, threads=threads))
        return p.reshape(len(samples), self.yhat_grid.n_dm2, self.yhat_grid.n_ue4)

    def transition64(self) -> np.ndarray:
        """The transition matrix as contiguous float64 (converted once, then cached): the form Eq. 2
        integrates with."""
        if self._T64 is None:
            self._T64 = np.ascontiguousarray(self.transition, dtype=np.float64)
        return self._T64

    def posterior_density(self, x, n_samples: int = 1000, seed: int = 0, bandwidth="normal_reference",
                          threads=None, bandwidth_floor: float = 0.5) -> np.ndarray:
        """Unnormalised p(y | x) on the y grid: (n, n_dm2, n_ue4) (rows are dm2, as in every map here)."""
        arr, _ = self._check_x(x)
        p = self.p_yhat(arr, n_samples, seed, bandwidth, threads, bandwidth_floor).reshape(len(arr), -1)
        mass = p.sum(axis=1) * self.yhat_grid.cell_area
        bad = np.flatnonzero(~(mass > 1e-6))
        if bad.size:
            raise ValueError(
                f"the regressor's predictions for data vector(s) {bad[:10].tolist()} fall outside the y_hat grid "
                f"(|Ue4| in {self.yhat_grid.ue4_range}, dm2 in {self.yhat_grid.dm2_range} eV^2): the data look "
                "unlike anything in the training set (wrong experiment order or units?)")
        # T was validated (finite, >= 0) when it was computed or loaded
        post = np.asarray(integrate(p, self.transition64(), self.yhat_grid.cell_areas(), threads=threads,
                                    check_transition=False))
        return post.reshape(len(arr), self.y_grid.n_dm2, self.y_grid.n_ue4)

    def posterior(self, x, n_samples: int = 1000, seed: int = 0, bandwidth="normal_reference", threads=None,
                  bandwidth_floor: float = 0.5):
        """p(y | x) as a :class:`fcmlc.posterior.Posterior` (x of shape (n_features,)) or a list of them
        (x of shape (n, n_features)); batched internally (one regressor pass, batched KDE and
        integration). ``seed`` fixes the dropout masks: the same seed gives the same posterior.
        ``bandwidth``: KDE rule or explicit widths, ``bandwidth_floor``: see :meth:`bandwidths`."""
        arr, single = self._check_x(x)
        dens = self.posterior_density(arr, n_samples, seed, bandwidth, threads, bandwidth_floor)
        meta = {"method": "FCMLC", "experiments": self.experiments, "n_samples": int(n_samples), "seed": int(seed),
                "bandwidth": bandwidth if isinstance(bandwidth, str) else np.asarray(bandwidth).tolist(),
                "bandwidth_floor_cells": float(bandwidth_floor or 0.0),
                "fcmlc_version": self.version}
        posts = [Posterior(self.y_grid.ue4_centres, self.y_grid.dm2_centres, d, meta=meta).with_source(self.experiments, xi)
                 for d, xi in zip(dens, arr)]
        return posts[0] if single else posts

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        """Write the model directory (created if needed; existing model files are replaced).
        Its files: :mod:`fcmlc.models.directory`."""
        return write_model_directory(self, directory)

    @classmethod
    def load(cls, directory, device=None, verify: bool = True) -> "FCMLC":
        """Load a model directory written by :meth:`save` (no code is unpickled).

        Checks the format version, the sha256 of every file and the consistency of the
        weights, scalers and transition matrix with config.json; raises
        :class:`~fcmlc.models.ModelDirectoryError` naming the file and the problem otherwise.

        A directory of another estimator (``fcmlc train --estimator``) is loaded as that
        estimator's model (:func:`fcmlc.estimators.load`), which has the same ``posterior``.
        """
        if estimator_of(directory) != "fcmlc":
            return load_estimator(directory, device=device, verify=verify)
        return cls(**read_model_directory(directory, device, verify))
