"""Settings of the ``npe`` and ``nre`` estimators (:mod:`fcmlc.estimators.npe`,
:mod:`fcmlc.estimators.nre`) and their presets.

Both train one network on pairs (x, y): x the features of a data vector (the
normalisation-invariant :class:`fcmlc.models.features.FeatureMap`, standardised), y =
(log10|Ue4|, log10 dm2) standardised and dequantised uniformly within its grid cell. x enters
through an embedding MLP (``embedding_hidden`` layers, ``embedding_size`` outputs), trained
jointly with the network that follows it: a conditional spline flow (NPE) or a classifier head
(NRE). Training stops on epochs and early-stopping patience only (no wall-clock limit unless a
``time_budget`` is set), so the same seed, data and thread count give the same weights.

Presets (``{"hyperparameters": "default"}`` or ``"fast"``; any setting can be overlaid on them
from a dict, :meth:`GridEstimatorConfig.from_dict`). The values were chosen by training on
small BEST and STEREO datasets (``fcmlc simulate --grid 25 --per-point 100``: 45,040 training
pairs) and scoring coverage and the distance from the exact posterior
(:func:`fcmlc.validation.coverage`); docs/estimators.md gives the settings and the numbers.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

from ..models.config import overlay

__all__ = ["GridEstimatorConfig", "NPEConfig", "NREConfig", "ACTIVATIONS"]

#: activation functions of the embedding and classifier MLPs
ACTIVATIONS = ("relu", "silu", "tanh")


@dataclass
class GridEstimatorConfig:
    """Settings shared by ``npe`` and ``nre``: the embedding, the optimisation and the run."""

    embedding_hidden: tuple = (128, 128)  # hidden layers of the embedding MLP of x
    embedding_size: int = 16  # its outputs: the flow's context (npe) or the classifier's x input (nre)
    activation: str = "silu"
    lr: float = 1e-3
    batch_size: int = 512
    weight_decay: float = 0.0
    max_epochs: int = 300
    patience: int = 20  # epochs without a validation improvement of min_delta before stopping
    min_delta: float = 1e-4  # absolute improvement of the validation loss (nats) that counts
    lr_plateau_patience: int | None = 5  # reduce-on-plateau schedule (None: constant learning rate)
    lr_plateau_factor: float = 0.5
    #: "plateau" (reduce on plateau, ``lr_plateau_*``; or a constant rate when
    #: ``lr_plateau_patience`` is None) or "cosine": lr (1 + cos(pi t)) / 2, t the fraction of
    #: ``max_epochs`` done, updated every batch (as the FCMLC flow's fast preset)
    lr_schedule: str = "plateau"
    grad_clip: float | None = 5.0
    dequantize: bool = True  # jitter the grid-valued y uniformly within its grid cell
    #: train on new simulations every epoch, at continuous truths (fcmlc.estimators.fresh), instead
    #: of the dataset's fixed realizations (which still give the validation split and the scaling)
    fresh_simulations: bool = False
    validation_fraction: float = 0.1
    y_shape: tuple = (100, 100)  # (n_ue4, n_dm2) cells of the posterior grid
    time_budget: float | None = None  # seconds; None: stop on epochs and patience only
    in_memory: str | bool = "auto"
    chunk_rows: int = 65536
    threads: int | None = None  # torch intra-op threads during training; None: leave as is
    hyperparameters: str = "default"  # the preset the settings started from: "default" or "fast"

    @classmethod
    def default(cls):
        return cls(hyperparameters="default")

    @classmethod
    def fast(cls):
        """The same networks; batch 1024 with lr 2e-3, patience 8, a learning rate halved after 3
        epochs without improvement, at most 60 epochs (npe: a cosine schedule, NPEConfig.fast)."""
        return cls(max_epochs=60, patience=8, lr_plateau_patience=3, lr=2e-3, batch_size=1024,
                   hyperparameters="fast")

    @classmethod
    def preset(cls, name):
        key = str(name).lower()
        if key == "default":
            return cls.default()
        if key == "fast":
            return cls.fast()
        raise ValueError(f"unknown hyper-parameter preset {name!r}: expected 'default' or 'fast'")

    @classmethod
    def resolve(cls, config):
        """The settings of a training run: None (the default preset), an instance (used as given),
        or a dict overlaid on the preset it names (``"hyperparameters"``, default "default")."""
        if config is None:
            cfg = cls.default()
        elif isinstance(config, cls):
            cfg = copy.deepcopy(config)
        elif isinstance(config, dict):
            cfg = cls.from_dict(config, base=cls.preset(config.get("hyperparameters", "default")))
        else:
            raise ValueError(f"config must be a {cls.__name__}, a dict of settings, or None")
        cfg.validate()
        return cfg

    @classmethod
    def from_dict(cls, d: dict, base=None):
        """Overlay a (possibly partial) dict on ``base`` (default: :meth:`default`); unknown keys
        are refused, naming them."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__} settings must be a dict, got {type(d).__name__}")
        cfg = overlay(base if base is not None else cls.default(), d, cls.__name__)
        for name in cls.tuple_fields():
            try:
                setattr(cfg, name, tuple(int(v) for v in getattr(cfg, name)))
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a list of integers, got {getattr(cfg, name)!r}") from None
        return cfg

    @classmethod
    def tuple_fields(cls) -> tuple:
        return ("embedding_hidden", "y_shape")

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in self.tuple_fields():
            d[name] = list(d[name])
        return d

    def validate(self):
        """ValueError naming the first setting out of range."""
        if len(self.y_shape) != 2 or min(self.y_shape) < 2:
            raise ValueError(f"y_shape must be two integers >= 2, got {self.y_shape}")
        if any(h < 1 for h in self.embedding_hidden) or self.embedding_size < 1:
            raise ValueError(f"embedding layer sizes must be positive, got {self.embedding_hidden} -> "
                             f"{self.embedding_size}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.batch_size < 2 or self.max_epochs < 1 or self.patience < 1 or not self.lr > 0:
            raise ValueError(f"invalid optimisation settings: batch_size {self.batch_size} (>= 2), max_epochs "
                             f"{self.max_epochs}, patience {self.patience} (>= 1), lr {self.lr} (> 0)")
        if self.weight_decay < 0 or self.min_delta < 0:
            raise ValueError("weight_decay and min_delta must be >= 0")
        if self.lr_plateau_patience is not None and (self.lr_plateau_patience < 0
                                                     or not 0 < self.lr_plateau_factor < 1):
            raise ValueError("lr_plateau_patience must be >= 0 (or None) and lr_plateau_factor in (0, 1)")
        if self.lr_schedule not in ("plateau", "cosine"):
            raise ValueError(f"lr_schedule must be 'plateau' or 'cosine', got {self.lr_schedule!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds or None, got {self.time_budget}")
        if self.fresh_simulations not in (True, False):
            raise ValueError(f"fresh_simulations must be true or false, got {self.fresh_simulations!r}")
        if self.in_memory not in ("auto", True, False):
            raise ValueError(f"in_memory must be 'auto', True or False, got {self.in_memory!r}")
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.threads is not None and int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.hyperparameters not in ("default", "fast"):
            raise ValueError(f"hyperparameters must be 'default' or 'fast', got {self.hyperparameters!r}")

    def embedding(self) -> dict:
        return {"hidden": list(self.embedding_hidden), "size": int(self.embedding_size),
                "activation": self.activation}


@dataclass
class NPEConfig(GridEstimatorConfig):
    """``npe``: the embedding, then a conditional rational-quadratic spline flow p(y | x)
    (:func:`fcmlc.models.flow.build_flow` with the embedding as its context)."""

    n_layers: int = 5
    hidden: int = 64
    n_blocks: int = 2
    n_bins: int = 8
    tail_bound: float = 4.0
    transform: str = "autoregressive"
    flow_dropout: float = 0.0

    @classmethod
    def fast(cls):
        """Batch 2048, lr 2e-3 with a cosine decay to 0 over 24 epochs (patience 24: the schedule
        runs to its end): measured at paper-fast scale (docs/estimators.md) as accurate as the
        shared fast schedule's 40 plateau-scheduled epochs (BEST) or more (STEREO), in half the time."""
        cfg = super().fast()
        cfg.batch_size, cfg.lr, cfg.lr_schedule = 2048, 2e-3, "cosine"
        cfg.max_epochs = cfg.patience = 24
        return cfg

    def flow(self) -> dict:
        return dict(n_layers=self.n_layers, hidden=self.hidden, n_blocks=self.n_blocks, n_bins=self.n_bins,
                    dropout=self.flow_dropout, tail_bound=self.tail_bound, transform=self.transform)

    def validate(self):
        super().validate()
        if self.n_layers < 1 or self.hidden < 1 or self.n_blocks < 1 or self.n_bins < 2:
            raise ValueError(f"invalid flow architecture: n_layers {self.n_layers}, hidden {self.hidden}, "
                             f"n_blocks {self.n_blocks} (>= 1), n_bins {self.n_bins} (>= 2)")
        if not 0.0 <= self.flow_dropout < 1.0 or not self.tail_bound > 0:
            raise ValueError("flow_dropout must lie in [0, 1) and tail_bound be > 0")
        if self.transform not in ("autoregressive", "coupling"):
            raise ValueError(f"transform must be 'autoregressive' or 'coupling', got {self.transform!r}")


@dataclass
class NREConfig(GridEstimatorConfig):
    """``nre``: the embedding of x and y, concatenated, through a classifier MLP to one logit."""

    classifier_hidden: tuple = (128, 128, 128)
    n_negatives: int = 1  # sets of marginal pairs (y shuffled within the batch) per set of joint pairs

    @classmethod
    def tuple_fields(cls) -> tuple:
        return super().tuple_fields() + ("classifier_hidden",)

    def classifier(self) -> dict:
        return {"hidden": list(self.classifier_hidden), "activation": self.activation}

    def validate(self):
        super().validate()
        if not self.classifier_hidden or any(h < 1 for h in self.classifier_hidden):
            raise ValueError(f"classifier_hidden must be positive layer sizes, got {self.classifier_hidden}")
        if int(self.n_negatives) < 1:
            raise ValueError(f"n_negatives must be >= 1, got {self.n_negatives}")

