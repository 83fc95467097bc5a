"""``npe``: neural posterior estimation -- a conditional spline flow q(y | x) trained directly on
the data vector, evaluated on the posterior grid.

    x --FeatureMap, standardise--> embedding MLP --> context e(x)
    y = (log10|Ue4|, log10 dm2), standardised --> rational-quadratic spline flow with context e(x)

The embedding and the flow (:func:`fcmlc.models.flow.build_flow` with ``context_size`` =
the embedding's size) are trained together by maximum likelihood on the pairs (x, y) of the
dataset's training split, y dequantised uniformly within its grid cell: the flow learns the
posterior under the training prior, uniform in (log10|Ue4|, log10 dm2) over the simulation
grid widened by half a grid spacing. The posterior of a data vector is the flow's density at
the cell centres of ``y_grid`` (per unit log10 area); no prior correction is needed, since the
training prior is the prior of every fcmlc posterior. Settings: :class:`NPEConfig`.
"""
from __future__ import annotations

import numpy as np
import torch

from .._torch_env import torch_threads
from ..models.transition import context_grid_log_prob, flow_layers
from .config import NPEConfig
from .grid_model import GridModel
from .grid_training import train_grid_model
from .networks import NPENetwork

__all__ = ["NPEModel", "NPEConfig", "train", "load", "MIN_GRID_MASS"]

#: smallest probability the flow may give the posterior grid before a data vector is refused
MIN_GRID_MASS = 1e-6


class NPEModel(GridModel):
    """A trained ``npe`` model: ``posterior(x)`` -> :class:`fcmlc.posterior.Posterior`."""

    estimator = "npe"
    method = "NPE"
    network_name = "flow"
    network_class = NPENetwork
    config_class = NPEConfig
    loss_description = ("negative log-likelihood of standardised y (dequantised) given the embedding of the "
                        "standardised features (nats)")

    @staticmethod
    def build_network(n_features: int, cfg: NPEConfig, seed: int) -> NPENetwork:
        return NPENetwork(n_features, cfg.embedding(), cfg.flow(), seed=seed)

    @classmethod
    def loss_function(cls, cfg: NPEConfig):
        return cls.batch_loss

    @staticmethod
    def batch_loss(net: NPENetwork, X, Y, generator):
        return -torch.mean(net.log_prob(Y, X))

    def log_density(self, context, y_std):
        return self.network.log_prob_context(y_std, context)

    def kernel_layers(self):
        """The flow's parameters for the compiled kernel (:func:`fcmlc.models.transition.flow_layers`,
        extracted once), or None for a flow the kernel does not implement."""
        if not hasattr(self, "_layers"):
            try:
                self._layers = flow_layers(self.network.flow, n_context=self.network.embedding.size)
            except ValueError:
                self._layers = None
        return self._layers

    def log_density_grid(self, X, threads=None) -> np.ndarray:
        """log q(y_c | x) per unit standardised-y area at the y-cell centres, (n, n_cells): the
        embedding by torch, the flow by the compiled kernel of the transition matrix, exact in
        float64 (:func:`fcmlc.models.transition.context_grid_log_prob`; a few ms per data vector
        instead of ~0.5 s through normflows for 100 x 100 cells). Flows the kernel does not
        implement are evaluated by normflows (:meth:`GridModel.log_density_grid`)."""
        layers = self.kernel_layers()
        if layers is None:
            return super().log_density_grid(X, threads)
        arr, _ = self.check_x(X)
        with torch_threads(threads):
            ctx = self.embed(arr).double().cpu().numpy()
        return context_grid_log_prob(*layers, ctx, self.y_scaler.transform(self.y_grid.log_points()), threads)

    def finish(self, logd: np.ndarray) -> np.ndarray:
        """The flow's density per unit log10 area (its density in standardised y times the
        Jacobian of the standardisation). ValueError when a vector's density is not finite or puts
        less than :data:`MIN_GRID_MASS` on the grid (data unlike any the flow was trained on)."""
        with np.errstate(over="ignore"):
            dens = np.exp(logd + self.y_scaler.log_jacobian())
        mass = dens.sum(axis=1) * self.y_grid.cell_area
        bad = np.flatnonzero(~(np.isfinite(mass) & (mass > MIN_GRID_MASS)))
        if bad.size:
            raise ValueError(
                f"the NPE flow puts no probability (or a non-finite density) on the posterior grid for data vector(s) "
                f"{bad[:10].tolist()} (|Ue4| in {self.y_grid.ue4_range}, dm2 in {self.y_grid.dm2_range} eV^2): the data "
                "look unlike anything in the training set (wrong experiment order or units?)")
        return dens

    def posterior_definition(self) -> str:
        return ("p(y | x) at the y-cell centres = q(y | x), the flow's density per unit (log10|Ue4|, log10 dm2) "
                "area; the training prior (uniform in log10 over the simulation grid) is the posterior's prior")


def train(dataset, out=None, experiments=None, config=None, device=None, seed=0, progress=True, restart=False,
          data_dir=None):
    """Train an ``npe`` model (:func:`fcmlc.estimators.train`; settings :class:`NPEConfig`)."""
    return train_grid_model(NPEModel, dataset, out=out, experiments=experiments, config=config, device=device,
                            seed=seed, progress=progress, restart=restart, data_dir=data_dir)


def load(directory, device=None, verify=True) -> NPEModel:
    """Load an ``npe`` model directory (checksums verified unless ``verify=False``)."""
    return NPEModel.load(directory, device=device, verify=verify)
