"""Configuration of FCMLC training: the regressor and flow settings and their presets.

Hyper-parameters
----------------
The *defaults* (:meth:`TrainConfig.default`, ``hyperparameters="paper"``) are the paper's
Tables III and IV: regressor layers (100, 100, 50, 25, 10) for one experiment and
(150, 100, 50, 25, 25) for several, dropout 0.02 before each hidden layer, Adam lr 1e-3,
batch 32, MSE, early stopping with patience 50 epochs on a 10 % validation split, constant
learning rate; flow dropout 0.15, Adam lr 5e-4, batch 512 (dropout 0.10 and weight decay
1e-5 for BEST alone). The paper gives no patience for the flow: 50 epochs, like the
regressor, is assumed. There is no time limit by default.

With batch 32 one epoch of a paper-scale single-experiment data set (367k training samples)
is ~11,500 optimizer steps; on 2 CPU cores that is tens of seconds per epoch, and patience 50
means at least 50 epochs after the last improvement, i.e. hours (see
``benchmarks/results/training.md``). The preset :meth:`TrainConfig.fast`
(``hyperparameters="fast"``, CLI ``--fast``) keeps the architectures, dropout rates and loss
but changes the optimisation schedule. It stops on epochs and patience only, never on the
clock, so the same seed, data, device and thread count give bit-identical weights however busy
the machine is:

* regressor: batch 256 with lr 2e-3 (square-root scaling of lr 1e-3 for an 8x larger batch
  would be 2.8e-3; 2e-3 is the slightly more conservative choice), a reduce-on-plateau
  schedule (x0.5 after 3 epochs without improvement), early stopping patience 8, at most
  200 epochs (a safeguard: patience stops it after 12-26 epochs at paper scale);
* flow: batch 2048, lr 2e-3 with a cosine decay to 0 over 8 epochs (the paper's batch 512 and
  lr 5e-4 at a constant rate needed 20 epochs). A batch of 2048 pairs costs about 1.6x less
  per pair than 512 on a CPU, and the schedule converges in 8 epochs: about a fifth of the
  former 20-epoch flow time.

Chosen by measurement (``benchmarks/bench_flow_presets.py`` ->
``benchmarks/results/training_presets.md``): with the regressor fixed, on the paper-scale BEST
data flows trained with batch/lr/epochs/schedule 512/5e-4/20/constant (the former preset),
2048/2e-3/8/cosine, 2048/1e-3/8/cosine and 1024/1e-3/10/cosine reach the same accuracy (mean
total-variation distance from the exact posterior 0.078, 0.072, 0.075, 0.069; coverage at
68/90/95 % within 2.2 % of nominal over 1000 trials) in 410, 181, 160 and 251 s of flow
training; on STEREO 512/5e-4/20 and 2048/2e-3/8/cosine give TV 0.184 and 0.186, coverage
0.674/0.869/0.935 and 0.684/0.889/0.942, in 615 and 165 s. The transition matrix takes seconds
(:mod:`fcmlc.models.transition`).

A wall-clock ``time_budget`` (CLI ``--time-budget S``) is available for either preset: the
regressor gets ``regressor_time_fraction`` (60 %) of it and the flow whatever the regressor
leaves; training stops gracefully when its share is spent and keeps the weights with the
best validation loss. Such a model depends on the machine's speed and load: its config.json
says so (``training.machine_dependent``), and so do ``fcmlc train`` and the reproduce report.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields

from .._checks import check_positive_int
from .regressor import default_hidden_layers

__all__ = ["RegressorConfig", "FlowConfig", "EnsembleConfig", "TrainConfig", "overlay"]


@dataclass
class RegressorConfig:
    """MC-dropout regressor (Table III). ``hidden=None`` picks the Table III sizes from the
    number of experiments."""

    hidden: tuple | None = None
    dropout: float = 0.02
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0
    max_epochs: int = 10000
    patience: int = 50
    min_delta: float = 0.0  # relative improvement of the validation loss that counts
    lr_plateau_patience: int | None = None  # None: constant learning rate (the paper)
    lr_plateau_factor: float = 0.5


@dataclass
class FlowConfig:
    """Conditional rational-quadratic spline flow (Table IV).

    Architecture: ``n_layers`` spline layers (masked autoregressive by default, see
    :mod:`fcmlc.models.flow`), each with a residual conditioner of ``n_blocks`` blocks of
    ``hidden`` units and ``n_bins`` spline bins on [-tail_bound, tail_bound] (standardised
    units; the y box spans about +-1.8 there), followed by a learned LU-linear mixing. Four
    layers of 64 units model the smooth, bounded 2-D densities p(y | y_hat) well (nominal
    coverage in the paper-scale runs of ``benchmarks/RESULTS.md``); one epoch of 367k pairs
    takes about 30 s on one CPU core (~50 us per training pair, compute-bound, not overhead).
    """

    n_layers: int = 4
    hidden: int = 64
    n_blocks: int = 2
    n_bins: int = 8
    tail_bound: float = 4.0
    transform: str = "autoregressive"
    dropout: float = 0.15
    lr: float = 5e-4
    batch_size: int = 512
    weight_decay: float = 0.0
    max_epochs: int = 10000
    patience: int = 50  # not given in the paper: assumed equal to the regressor's
    min_delta: float = 0.0  # absolute improvement of the validation NLL (nats) that counts
    grad_clip: float | None = 5.0
    dequantize: bool = True  # jitter the grid-valued y uniformly within its grid cell
    #: "constant" (the paper) or "cosine": lr x (1 + cos(pi t)) / 2 with t the fraction of
    #: ``max_epochs`` done, updated every step (decays to 0 at the last epoch)
    lr_schedule: str = "constant"

    def architecture(self) -> dict:
        return dict(n_layers=self.n_layers, hidden=self.hidden, n_blocks=self.n_blocks, n_bins=self.n_bins,
                    dropout=self.dropout, tail_bound=self.tail_bound, transform=self.transform)


@dataclass
class EnsembleConfig:
    """The ``ensemble`` estimator (:mod:`fcmlc.models.ensemble`): ``members`` regressors, each
    trained with the ``regressor`` settings from its own seed. Default 3: on BEST and STEREO
    (25 x 25 x 100, fast preset, two seeds) five members were no closer to the exact posterior
    than three, at 5/3 of the regressors' training time (docs/estimators.md)."""

    members: int = 3


@dataclass
class TrainConfig:
    regressor: RegressorConfig = field(default_factory=RegressorConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    validation_fraction: float = 0.1
    yhat_shape: tuple = (50, 50)  # (n_ue4, n_dm2) cells of the KDE grid (paper: 50 x 50)
    y_shape: tuple = (100, 100)  # (n_ue4, n_dm2) cells of the posterior grid (paper: 100 x 100)
    yhat_margin: float = 0.0  # widen the y_hat grid by this fraction of the range on each side
    time_budget: float | None = None  # seconds for regressor + flow; None: no limit
    regressor_time_fraction: float = 0.6
    in_memory: str | bool = "auto"
    chunk_rows: int = 65536
    threads: int | None = None  # torch intra-op threads during training; None: leave as is
    hyperparameters: str = "paper"  # preset the settings started from: "paper" or "fast" (config.json)
    ensemble: EnsembleConfig | None = None  # None: one regressor (fcmlc); set: a deep ensemble

    @classmethod
    def default(cls, experiments=None) -> "TrainConfig":
        """The defaults: the paper's Tables III and IV (same as :meth:`paper`)."""
        return cls.paper(experiments)

    @classmethod
    def paper(cls, experiments=None) -> "TrainConfig":
        """Tables III and IV as published: batch 32, lr 1e-3, patience 50, no LR schedule and
        no time budget for the regressor; flow lr 5e-4, batch 512 (its patience is not given in
        the paper: 50 epochs, like the regressor, is assumed)."""
        cfg = cls(hyperparameters="paper")
        cfg._apply_experiment_rules(experiments)
        return cfg

    @classmethod
    def fast(cls, experiments=None) -> "TrainConfig":
        """Same networks, faster schedule stopped by epochs and patience (no time budget); see
        the module docstring for the values, the measurements behind them and why."""
        cfg = cls(
            regressor=RegressorConfig(lr=2e-3, batch_size=256, max_epochs=200, patience=8, min_delta=1e-4,
                                      lr_plateau_patience=3),
            flow=FlowConfig(batch_size=2048, lr=2e-3, lr_schedule="cosine", max_epochs=8, patience=8, min_delta=1e-4),
            time_budget=None,  # epochs and patience only: the weights do not depend on the machine
            hyperparameters="fast",
        )
        cfg._apply_experiment_rules(experiments)
        return cfg

    @classmethod
    def preset(cls, name: str, experiments=None) -> "TrainConfig":
        """:meth:`paper` (also called "default") or :meth:`fast` by name."""
        name = str(name).lower()
        if name in ("paper", "default"):
            return cls.paper(experiments)
        if name == "fast":
            return cls.fast(experiments)
        raise ValueError(f"unknown hyper-parameter preset {name!r}: expected 'paper' (the default) or 'fast'")

    def _apply_experiment_rules(self, experiments):
        if experiments is None:
            return
        names = [str(e).lower() for e in experiments]
        if self.regressor.hidden is None:
            self.regressor.hidden = default_hidden_layers(len(names))
        if names == ["best"]:  # Table IV, BEST row
            self.flow.dropout = 0.10
            self.flow.weight_decay = 1e-5

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["regressor"]["hidden"] is not None:
            d["regressor"]["hidden"] = list(d["regressor"]["hidden"])
        d["yhat_shape"] = list(self.yhat_shape)
        d["y_shape"] = list(self.y_shape)
        if d["ensemble"] is None:  # an fcmlc model's settings read as before ensembles existed
            del d["ensemble"]
        return d

    @classmethod
    def from_dict(cls, d: dict, base: "TrainConfig | None" = None) -> "TrainConfig":
        """Overlay a (possibly partial) dict on ``base`` (default: :meth:`default`)."""
        cfg = copy.deepcopy(base) if base is not None else cls()
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training configuration keys: {sorted(unknown)}")
        for k, v in d.items():
            if k == "regressor":
                cfg.regressor = overlay(cfg.regressor, v, "regressor")
            elif k == "flow":
                cfg.flow = overlay(cfg.flow, v, "flow")
            elif k == "ensemble":
                cfg.ensemble = None if v is None else overlay(cfg.ensemble or EnsembleConfig(), v, "ensemble")
            else:
                setattr(cfg, k, tuple(v) if k in ("yhat_shape", "y_shape") else v)
        if cfg.regressor.hidden is not None:
            cfg.regressor.hidden = tuple(int(h) for h in cfg.regressor.hidden)
        return cfg

    def validate(self):
        if not (0.0 < self.validation_fraction < 1.0):
            raise ValueError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds or None, got {self.time_budget}")
        if not (0.0 < self.regressor_time_fraction < 1.0):
            raise ValueError("regressor_time_fraction must lie in (0, 1)")
        for name in ("yhat_shape", "y_shape"):
            s = getattr(self, name)
            if len(s) != 2 or min(int(v) for v in s) < 2:
                raise ValueError(f"{name} must be two integers >= 2, got {s}")
        for part in (self.regressor, self.flow):
            if part.batch_size < 1 or part.max_epochs < 1 or part.patience < 1 or not part.lr > 0:
                raise ValueError(f"invalid optimisation settings: {part}")
        if self.flow.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"flow lr_schedule must be 'constant' or 'cosine', got {self.flow.lr_schedule!r}")
        if self.hyperparameters not in ("paper", "fast"):
            raise ValueError(f"hyperparameters must be 'paper' or 'fast', got {self.hyperparameters!r}")
        if self.ensemble is not None:
            check_positive_int(self.ensemble.members, "ensemble.members")
        if self.in_memory not in ("auto", True, False):
            raise ValueError(f"in_memory must be 'auto', True or False, got {self.in_memory!r}")


def overlay(obj, d, what):
    """A copy of the dataclass ``obj`` with the settings of the dict ``d`` (or ``d`` itself, a copy,
    when it is already such an object); ValueError naming unknown keys (``what``: for the message)."""
    if isinstance(d, type(obj)):
        return copy.deepcopy(d)
    if not isinstance(d, dict):
        raise ValueError(f"the {what} settings must be a dict (a JSON object), got {d!r}")
    known = {f.name for f in fields(obj)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} configuration keys: {sorted(unknown)}")
    new = copy.deepcopy(obj)
    for k, v in d.items():
        setattr(new, k, v)
    return new

