"""The dropout-at-inference regressor of the FCMLC method (paper Sec. I B 1, Fig. 6, Table III).

A fully connected network maps a data vector x (the concatenated bins of the experiments)
to y_hat = (log10 |Ue4|, log10 dm2). Dropout is applied before every hidden layer and is
*kept on at inference* (Gal and Ghahramani's MC dropout): every call picks a random
sub-network, so m calls give m samples of y_hat whose spread measures the network's
uncertainty. The masks are drawn here explicitly from a ``torch.Generator`` (not with
``nn.Dropout``), so that

* dropout stays stochastic whatever ``module.train()`` / ``module.eval()`` says, and
* the same seed gives bit-identical samples (on the same device and thread count).

Inputs and targets are standardised with :class:`Standardizer` objects fitted on the
training data and saved with the model (``scalers.npz``).

:class:`EnsembleMLP` is a deep ensemble (Lakshminarayanan et al. 2017) of such networks with
the same interface: one call gives one prediction per row from a randomly chosen member (with
that member's dropout), and :meth:`Regressor.predict_samples` pools its MC-dropout samples
evenly over the members (the ``ensemble`` estimator, :mod:`fcmlc.models.ensemble`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .._checks import check_positive_int, check_seed

__all__ = [
    "Standardizer",
    "MCDropoutMLP",
    "EnsembleMLP",
    "Regressor",
    "build_regressor_net",
    "pack_regressor",
    "unpack_regressor",
    "default_hidden_layers",
    "make_generator",
    "as_seed",
]

#: Table III: one experiment.
HIDDEN_SINGLE = (100, 100, 50, 25, 10)
#: Table III: the global fit (several experiments).
HIDDEN_GLOBAL = (150, 100, 50, 25, 25)


#: Rows of (data vector, MC sample) per network pass in :meth:`Regressor.predict_samples`.
MC_BLOCK_ROWS = 8192
#: MC samples per block of dropout masks in :meth:`Regressor.predict_samples`.
MC_SAMPLE_BLOCK = 1024


def default_hidden_layers(n_experiments: int) -> tuple[int, ...]:
    """Layer sizes of Table III: (100, 100, 50, 25, 10) for one experiment, (150, 100, 50, 25, 25) for several."""
    return HIDDEN_SINGLE if int(n_experiments) <= 1 else HIDDEN_GLOBAL


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed`` (a non-negative integer)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(as_seed(seed))
    return g


def as_seed(seed) -> int:
    """Fold an int or a tuple of ints into a 63-bit torch seed (deterministic)."""
    if isinstance(seed, (tuple, list)):
        ss = np.random.SeedSequence([int(s) for s in seed])
    else:
        ss = np.random.SeedSequence(check_seed(seed))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


@dataclass
class Standardizer:
    """Affine standardisation z = (v - mean) / scale, fitted on training data (float64)."""

    mean: np.ndarray
    scale: np.ndarray

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.scale.shape:
            raise ValueError(f"Standardizer: mean has shape {self.mean.shape} but scale {self.scale.shape}")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.scale)) and np.all(self.scale > 0)):
            raise ValueError("Standardizer: mean must be finite and scale finite and > 0")

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    @classmethod
    def from_moments(cls, n: int, s1: np.ndarray, s2: np.ndarray, min_scale: float = 1e-12) -> "Standardizer":
        """From the count, sum and sum of squares of the data (accumulated in float64).

        Constant columns (zero variance, e.g. an empty bin) get scale 1 so that they map to 0.
        """
        if n < 2:
            raise ValueError("Standardizer needs at least two samples")
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        scale = np.sqrt(var)
        tiny = scale <= min_scale * np.maximum(1.0, np.abs(mean))
        scale[tiny] = 1.0
        return cls(mean, scale)

    @classmethod
    def fit(cls, data: np.ndarray) -> "Standardizer":
        data = np.asarray(data, dtype=np.float64)
        return cls.from_moments(data.shape[0], data.sum(axis=0), np.square(data).sum(axis=0))

    def transform(self, v):
        """Standardise (NumPy arrays in float64; torch tensors keep their dtype and device)."""
        if isinstance(v, torch.Tensor):
            m = torch.as_tensor(self.mean, dtype=v.dtype, device=v.device)
            s = torch.as_tensor(self.scale, dtype=v.dtype, device=v.device)
            return (v - m) / s
        return (np.asarray(v, dtype=np.float64) - self.mean) / self.scale

    def inverse(self, z):
        if isinstance(z, torch.Tensor):
            m = torch.as_tensor(self.mean, dtype=z.dtype, device=z.device)
            s = torch.as_tensor(self.scale, dtype=z.dtype, device=z.device)
            return z * s + m
        return np.asarray(z, dtype=np.float64) * self.scale + self.mean

    def log_jacobian(self) -> float:
        """log |d z / d v| = -sum(log scale): converts a density in z into a density in v."""
        return float(-np.sum(np.log(self.scale)))

    def to_arrays(self, prefix: str) -> dict:
        return {f"{prefix}_mean": self.mean, f"{prefix}_scale": self.scale}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "Standardizer":
        return cls(arrays[f"{prefix}_mean"], arrays[f"{prefix}_scale"])


def mc_dropout(h: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout that is ALWAYS applied (training and inference alike).

    Units are kept with probability 1 - p and rescaled by 1 / (1 - p); the Bernoulli masks
    come from ``generator`` (or torch's global generator when None).
    """
    if p <= 0.0:
        return h
    keep = 1.0 - p
    mask = torch.empty_like(h).bernoulli_(keep, generator=generator)
    return h * mask * (1.0 / keep)


class MCDropoutMLP(nn.Module):
    """x (standardised) -> y (standardised): [dropout -> Linear -> ReLU] per hidden layer, then Linear.

    Dropout precedes *each hidden layer*, as in the paper (Fig. 6 and the PHYSTAT talk:
    "dropout before each hidden layer, and leave dropout on at inference time"); the first
    dropout therefore acts on the inputs. Activations are ReLU (the paper does not name
    another). The output layer is linear.
    """

    def __init__(self, n_features: int, hidden: Sequence[int] = HIDDEN_SINGLE, dropout: float = 0.02,
                 n_outputs: int = 2):
        super().__init__()
        n_features = check_positive_int(n_features, "n_features")
        hidden = tuple(int(h) for h in hidden)
        if len(hidden) == 0 or min(hidden) < 1:
            raise ValueError(f"hidden layer sizes must be positive integers, got {hidden}")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout rate must lie in [0, 1), got {dropout}")
        self.n_features = int(n_features)
        self.hidden_sizes = hidden
        self.dropout = float(dropout)
        self.n_outputs = int(n_outputs)
        sizes = (self.n_features,) + hidden
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], self.n_outputs)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """One MC-dropout pass: every row of x gets its own masks, drawn from ``generator`` or
        given as ``masks`` (one tensor per hidden layer input, already scaled to 0 or 1 / (1 - p),
        broadcasting against it: (n_rows, width) row slices of :meth:`draw_masks` in training,
        (n_samples, width) against (k, n_samples, width) inputs in :meth:`forward_masked`)."""
        if masks is not None:
            if len(masks) != len(self.hidden):
                raise ValueError(f"expected {len(self.hidden)} dropout masks, got {len(masks)}")
            h = x
            for layer, m in zip(self.hidden, masks):
                h = torch.relu(layer(h if m is None else h * m))
            return self.out(h)
        h = x
        for layer in self.hidden:
            h = torch.relu(layer(mc_dropout(h, self.dropout, generator)))
        return self.out(h)

    def draw_masks(self, n_samples: int, generator: torch.Generator | None = None) -> list:
        """Dropout masks for ``n_samples`` sub-networks: one (n_samples, width) tensor per hidden
        layer input (kept units 1 / (1 - p), dropped 0), or Nones when dropout is 0."""
        if self.dropout <= 0.0:
            return [None] * len(self.hidden)
        keep = 1.0 - self.dropout
        dev = self.out.weight.device
        masks = []
        for layer in self.hidden:
            m = torch.empty((int(n_samples), layer.in_features), device=dev).bernoulli_(keep, generator=generator)
            masks.append(m * (1.0 / keep))
        return masks

    def forward_masked(self, x: torch.Tensor, masks: list) -> torch.Tensor:
        """Every row of x (k, n_features) through every sub-network of ``masks`` (from
        :meth:`draw_masks`): returns (k, n_samples, n_outputs)."""
        n_samples = 1 if masks[0] is None else masks[0].shape[0]
        return self.forward(x[:, None, :].expand(x.shape[0], n_samples, x.shape[1]), masks=masks)

    def architecture(self) -> dict:
        return {"n_features": self.n_features, "hidden": list(self.hidden_sizes), "dropout": self.dropout,
                "n_outputs": self.n_outputs, "activation": "relu", "dropout_placement": "before each hidden layer"}


class EnsembleMLP(nn.Module):
    """K MC-dropout networks of one architecture (a deep ensemble), used like one :class:`MCDropoutMLP`.

    * ``net(x, generator)``: one prediction per row of x from a member chosen at random (uniformly,
      from ``generator``), with that member's dropout masks (from the same generator, member by
      member in order): a draw from the pooled predictive distribution, as the flow's training
      pairs and the validation MSE need. With one member it is that member's call, bit for bit.
    * :meth:`draw_masks` / :meth:`forward_masked`: n sub-networks split evenly over the members
      (member k takes samples [k n // K, (k + 1) n // K), its masks drawn after member k - 1's),
      so :meth:`Regressor.predict_samples` pools n_samples evenly over the members.

    Its ``state_dict`` holds every member's weights (keys ``members.<k>.<layer>``).
    """

    def __init__(self, members: Sequence[MCDropoutMLP]):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        arch = members[0].architecture()
        for k, m in enumerate(members):
            if not isinstance(m, MCDropoutMLP):
                raise ValueError(f"ensemble member {k} is a {type(m).__name__}, not an MCDropoutMLP")
            if m.architecture() != arch:
                raise ValueError(f"ensemble member {k} has architecture {m.architecture()}, member 0 {arch}: "
                                 f"all members must have the same")
        self.members = nn.ModuleList(members)
        self.n_features, self.n_outputs = members[0].n_features, members[0].n_outputs
        self.hidden_sizes, self.dropout = members[0].hidden_sizes, members[0].dropout

    @property
    def n_members(self) -> int:
        return len(self.members)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One prediction per row of x (..., n_features) from a randomly chosen member (see the class)."""
        if self.n_members == 1:
            return self.members[0](x, generator=generator)
        flat = x.reshape(-1, x.shape[-1])
        choice = torch.randint(self.n_members, (flat.shape[0],), generator=generator, device=flat.device)
        out = flat.new_empty((flat.shape[0], self.n_outputs))
        for k, member in enumerate(self.members):
            rows = torch.nonzero(choice == k).squeeze(1)
            if rows.numel():
                out[rows] = member(flat[rows], generator=generator)
        return out.reshape(*x.shape[:-1], self.n_outputs)

    def split(self, n_samples: int) -> list[int]:
        """How many of ``n_samples`` samples each member gives (an even split, the first members one fewer)."""
        K = self.n_members
        return [(k + 1) * int(n_samples) // K - k * int(n_samples) // K for k in range(K)]

    def draw_masks(self, n_samples: int, generator: torch.Generator | None = None) -> list:
        """[(n_k, member k's masks for n_k sub-networks)] for the even split of ``n_samples``."""
        return [(n, m.draw_masks(n, generator)) for n, m in zip(self.split(n_samples), self.members)]

    def forward_masked(self, x: torch.Tensor, masks: list) -> torch.Tensor:
        """Every row of x (k, n_features) through every sub-network of ``masks`` (from
        :meth:`draw_masks`), member by member: (k, n_samples, n_outputs)."""
        parts = []
        for member, (n, mk) in zip(self.members, masks):
            if n == 0:
                continue
            p = member.forward_masked(x, mk)
            parts.append(p if p.shape[1] == n else p.expand(-1, n, -1))  # dropout 0: one sample stands for n
        return torch.cat(parts, dim=1)

    def architecture(self) -> dict:
        return {**self.members[0].architecture(), "members": self.n_members}


def build_regressor_net(arch: dict) -> nn.Module:
    """An untrained network of the architecture ``arch`` (``MCDropoutMLP.architecture()``, or
    ``EnsembleMLP.architecture()`` with its ``members`` count), to load weights into. The random
    initialisation draws from a forked generator: torch's global one is left as it was."""
    def member():
        return MCDropoutMLP(arch["n_features"], arch["hidden"], arch["dropout"], arch.get("n_outputs", 2))

    with torch.random.fork_rng(devices=[]):
        if arch.get("members") is None:
            return member()
        return EnsembleMLP([member() for _ in range(check_positive_int(arch["members"], "members"))])


class Regressor:
    """A trained MC-dropout network (or :class:`EnsembleMLP`) with its input and target scalers.

    ``predict_samples(x, n_samples, seed)`` returns samples of y_hat = (log10|Ue4|, log10 dm2).
    """

    def __init__(self, net: MCDropoutMLP | EnsembleMLP, x_scaler: Standardizer, y_scaler: Standardizer,
                 device: torch.device | str | None = None):
        if x_scaler.dim != net.n_features:
            raise ValueError(f"input scaler has {x_scaler.dim} features but the network expects {net.n_features}")
        if y_scaler.dim != net.n_outputs:
            raise ValueError(f"target scaler has {y_scaler.dim} outputs but the network has {net.n_outputs}")
        self.net = net
        self.x_scaler = x_scaler
        self.y_scaler = y_scaler
        self.to(device if device is not None else next(net.parameters()).device)

    @property
    def n_features(self) -> int:
        return self.net.n_features

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device) -> "Regressor":
        self._device = torch.device(device)
        self.net.to(self._device)
        return self

    def _check_x(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x must have shape (n, {self.n_features}) or ({self.n_features},), got {np.shape(x)}")
        x = x.astype(np.float64, copy=False)
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or infinite values")
        return x

    @torch.no_grad()
    def predict_samples(self, x, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
        """m = ``n_samples`` MC-dropout predictions per data vector.

        x: (n, n_features) or (n_features,). Returns float64 (n, n_samples, 2) in
        (log10|Ue4|, log10 dm2).

        The dropout masks depend only on (seed, sample index), not on the data vector or its
        position in the batch: sample j of every vector uses the same sub-network. Hence a
        vector gives the same samples alone or inside a batch (up to the float32 rounding of
        differently shaped matrix products), and the same (x, n_samples, seed) always gives
        identical samples. Samples are drawn in blocks of ``MC_SAMPLE_BLOCK``; block b takes
        its masks from a generator seeded with (seed, b). Each network pass handles about
        ``MC_BLOCK_ROWS`` (vector, sample) rows. An :class:`EnsembleMLP` splits every block
        evenly over its members (member order within the block).
        """
        x = self._check_x(x)
        n_samples = check_positive_int(n_samples, "n_samples")
        n = x.shape[0]
        z = torch.as_tensor(self.x_scaler.transform(x), dtype=torch.float32, device=self.device)
        out = np.empty((n, n_samples, 2), dtype=np.float64)
        was_training = self.net.training
        self.net.eval()
        try:
            for b, s0 in enumerate(range(0, n_samples, MC_SAMPLE_BLOCK)):
                s1 = min(n_samples, s0 + MC_SAMPLE_BLOCK)
                masks = self.net.draw_masks(s1 - s0, make_generator((seed, b), self.device))
                per = max(1, MC_BLOCK_ROWS // (s1 - s0))  # vectors per network pass
                for i0 in range(0, n, per):
                    i1 = min(n, i0 + per)
                    pred = self.net.forward_masked(z[i0:i1], masks)  # (i1 - i0, s1 - s0, 2)
                    out[i0:i1, s0:s1] = self.y_scaler.inverse(pred.double().cpu().numpy())
        finally:
            self.net.train(was_training)
        return out

    @torch.no_grad()
    def predict_mean(self, x, n_samples: int = 100, seed: int = 0) -> np.ndarray:
        """Mean of ``n_samples`` MC-dropout predictions: (n, 2) in log10 units."""
        return self.predict_samples(x, n_samples, seed).mean(axis=1)

    def state_dict(self) -> dict:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}


def pack_regressor(regressor: Regressor) -> dict:
    """A trained regressor as tensors and plain values (a training checkpoint's entry)."""
    return {"net": regressor.state_dict(), "architecture": regressor.net.architecture(),
            **{k: torch.from_numpy(v.copy()) for k, v in {**regressor.x_scaler.to_arrays("x"),
                                                         **regressor.y_scaler.to_arrays("y")}.items()}}


def unpack_regressor(d: dict, device) -> Regressor:
    """The regressor :func:`pack_regressor` packed, on ``device``."""
    net = build_regressor_net(d["architecture"])
    net.load_state_dict(d["net"])
    arrays = {k: d[k].numpy() for k in ("x_mean", "x_scale", "y_mean", "y_scale")}
    return Regressor(net, Standardizer.from_arrays(arrays, "x"), Standardizer.from_arrays(arrays, "y"), device)


def param_count(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def lr_for_batch(base_lr: float, base_batch: int, batch: int) -> float:
    """Square-root learning-rate scaling for Adam when the batch grows (base_lr * sqrt(batch / base_batch))."""
    return float(base_lr) * math.sqrt(float(batch) / float(base_batch))
