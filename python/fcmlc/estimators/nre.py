"""``nre``: neural ratio estimation -- a classifier (x, y) -> logit = log r(x, y) whose
posterior on the grid is prior x exp(logit), normalised.

    x --FeatureMap, standardise--> embedding MLP --> e(x)
    [e(x), y standardised] --> classifier MLP --> logit

The embedding and the classifier are trained together with binary cross-entropy on joint pairs
(x_i, y_i) (label 1) against marginal pairs (x_i, y_j), y shuffled within the minibatch (label
0), y dequantised uniformly within its grid cell (Hermans et al. 2020). The optimal classifier's
logit is log p(x | y) / p(x) = log p(y | x) / p(y), with p(y) the training prior: uniform in
(log10|Ue4|, log10 dm2) over the simulation grid (log-spaced; widened by half a spacing by the
dequantisation). That is also the prior of every fcmlc posterior, so on the posterior grid

    p(y_c | x) = prior(y_c) exp(logit(x, y_c)) / sum_c' prior(y_c') exp(logit(x, y_c')) dA,

with the constant prior dropping out. Settings: :class:`NREConfig`.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from .config import NREConfig
from .grid_model import GridModel
from .grid_training import train_grid_model
from .networks import RatioNetwork

__all__ = ["NREModel", "NREConfig", "train", "load"]


class NREModel(GridModel):
    """A trained ``nre`` model: ``posterior(x)`` -> :class:`fcmlc.posterior.Posterior`."""

    estimator = "nre"
    method = "NRE"
    network_name = "classifier"
    network_class = RatioNetwork
    config_class = NREConfig
    loss_description = ("binary cross-entropy of joint pairs (x_i, y_i) against marginal pairs (x_i, y_j), y "
                        "shuffled within the batch (sum of both classes' mean losses, nats)")

    @staticmethod
    def build_network(n_features: int, cfg: NREConfig, seed: int) -> RatioNetwork:
        return RatioNetwork(n_features, cfg.embedding(), cfg.classifier(), seed=seed)

    @classmethod
    def loss_function(cls, cfg: NREConfig):
        return functools.partial(cls.batch_loss, n_negatives=int(cfg.n_negatives))

    @staticmethod
    def batch_loss(net: RatioNetwork, X, Y, generator, n_negatives: int = 1):
        """BCE of the joint pairs (label 1) plus that of ``n_negatives`` sets of marginal pairs (y
        permuted within the batch, label 0), averaged over the sets: the classes weigh equally,
        so the optimal logit stays log r(x, y)."""
        ctx = net.embedding(X)
        joint = net.logits_context(ctx, Y)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        loss = bce(joint, torch.ones_like(joint))
        for _ in range(n_negatives):
            perm = torch.randperm(len(Y), generator=generator, device=Y.device)
            marginal = net.logits_context(ctx, Y[perm])
            loss = loss + bce(marginal, torch.zeros_like(marginal)) / n_negatives
        return loss

    def log_density(self, context, y_std):
        return self.network.logits_context(context, y_std)

    def finish(self, logd: np.ndarray) -> np.ndarray:
        """prior x exp(logit), normalised to unit mass on the grid (the prior is constant there).
        ValueError for a vector with a non-finite logit."""
        bad = np.flatnonzero(~np.all(np.isfinite(logd), axis=1))
        if bad.size:
            raise ValueError(f"the NRE classifier gives non-finite logits for data vector(s) {bad[:10].tolist()}")
        dens = np.exp(logd - logd.max(axis=1, keepdims=True))
        return dens / (dens.sum(axis=1, keepdims=True) * self.y_grid.cell_area)

    def posterior_definition(self) -> str:
        return ("p(y_c | x) = prior(y_c) exp(logit(x, y_c)) / sum_c' prior(y_c') exp(logit(x, y_c')) dA per unit "
                "(log10|Ue4|, log10 dm2) area; prior uniform in log10 over the simulation grid (the training prior)")


def train(dataset, out=None, experiments=None, config=None, device=None, seed=0, progress=True, restart=False,
          data_dir=None):
    """Train an ``nre`` model (:func:`fcmlc.estimators.train`; settings :class:`NREConfig`)."""
    return train_grid_model(NREModel, dataset, out=out, experiments=experiments, config=config, device=device,
                            seed=seed, progress=progress, restart=restart, data_dir=data_dir)


def load(directory, device=None, verify=True) -> NREModel:
    """Load an ``nre`` model directory (checksums verified unless ``verify=False``)."""
    return NREModel.load(directory, device=device, verify=verify)
