"""The networks of the ``npe`` and ``nre`` estimators (torch modules, standardised variables).

    EmbeddingNet    x (n_features) -> [Linear -> activation] x len(hidden) -> Linear -> e (size)
    NPENetwork      log q(y | x) = spline flow log-density of y with context e(x)
    RatioNetwork    logit(x, y) = MLP([e(x), y]) -> 1, the estimate of log p(x | y) / p(x)

Every module is built from its ``architecture()`` dict (what config.json records), its weights
initialised from a seed inside a forked RNG (the global torch RNG is left untouched).
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.flow import build_flow
from ..models.regressor import as_seed

__all__ = ["EmbeddingNet", "NPENetwork", "RatioNetwork", "mlp"]

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


def mlp(n_in: int, hidden, n_out: int, activation: str) -> nn.Sequential:
    """[Linear -> activation] per hidden layer, then a linear output layer."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    sizes = [int(n_in)] + [int(h) for h in hidden]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), _ACTIVATIONS[activation]()]
    layers.append(nn.Linear(sizes[-1], int(n_out)))
    return nn.Sequential(*layers)


def _seeded(seed, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(as_seed(seed))
        return build()


class EmbeddingNet(nn.Module):
    """Standardised data-vector features -> an embedding of ``size`` values (no final activation)."""

    def __init__(self, n_features: int, hidden=(128, 128), size: int = 16, activation: str = "silu"):
        super().__init__()
        self.n_features, self.hidden, self.size, self.activation = int(n_features), list(hidden), int(size), activation
        self.net = mlp(self.n_features, self.hidden, self.size, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def architecture(self) -> dict:
        return {"hidden": list(self.hidden), "size": self.size, "activation": self.activation}


class NPENetwork(nn.Module):
    """Embedding of x -> context of a normflows conditional spline flow over standardised y."""

    def __init__(self, n_features: int, embedding: dict, flow: dict, seed=0):
        super().__init__()
        self.n_features = int(n_features)
        self.embedding = _seeded((seed, 41), lambda: EmbeddingNet(n_features, **embedding))
        self.flow_architecture = dict(flow)
        self.flow = build_flow(seed=as_seed((seed, 42)), context_size=self.embedding.size, **flow)

    def log_prob(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log q(y | x) in standardised y (n,) for rows of y (n, 2) and x (n, n_features)."""
        return self.flow.log_prob(y, context=self.embedding(x))

    def log_prob_context(self, y: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """log q(y | x) from the embedding ``context`` = e(x) (n, size) computed beforehand."""
        return self.flow.log_prob(y, context=context)

    def architecture(self) -> dict:
        return {"n_features": self.n_features, "embedding": self.embedding.architecture(),
                "flow": dict(self.flow_architecture)}

    @classmethod
    def from_architecture(cls, arch: dict) -> "NPENetwork":
        return cls(arch["n_features"], arch["embedding"], arch["flow"])


class RatioNetwork(nn.Module):
    """logit(x, y) = head([e(x), y]): the classifier of joint against marginal pairs."""

    def __init__(self, n_features: int, embedding: dict, classifier: dict, seed=0):
        super().__init__()
        self.n_features = int(n_features)
        self.embedding = _seeded((seed, 41), lambda: EmbeddingNet(n_features, **embedding))
        self.classifier_architecture = {"hidden": list(classifier["hidden"]),
                                        "activation": classifier.get("activation", embedding.get("activation"))}
        self.head = _seeded((seed, 43), lambda: mlp(self.embedding.size + 2, self.classifier_architecture["hidden"],
                                                    1, self.classifier_architecture["activation"]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits (n,) for rows of x (n, n_features) and standardised y (n, 2)."""
        return self.logits_context(self.embedding(x), y)

    def logits_context(self, context: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits (n,) from the embedding ``context`` = e(x) (n, size) computed beforehand."""
        return self.head(torch.cat([context, y], dim=-1)).squeeze(-1)

    def architecture(self) -> dict:
        return {"n_features": self.n_features, "embedding": self.embedding.architecture(),
                "classifier": dict(self.classifier_architecture)}

    @classmethod
    def from_architecture(cls, arch: dict) -> "RatioNetwork":
        return cls(arch["n_features"], arch["embedding"], arch["classifier"])
