"""Training loops for the FCMLC regressor and conditional flow, and their configuration.

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
but changes the optimisation schedule so that regressor + flow train within 20 minutes on
2 CPU cores:

* regressor: batch 256 with lr 2e-3 (square-root scaling of lr 1e-3 for an 8x larger batch
  would be 2.8e-3; 2e-3 is the slightly more conservative choice), a reduce-on-plateau
  schedule (x0.5 after 3 epochs without improvement), early stopping patience 8, at most
  200 epochs;
* flow: the paper's batch 512, lr 5e-4 and dropout, early-stopping patience 8, at most 100 epochs;
* a wall-clock ``time_budget`` of 840 s (14 min) for both networks, leaving ~6 minutes for
  loading the data, the transition matrix (25M flow evaluations, the dominant remaining
  cost) and saving, split 60/40 between regressor and flow (the flow gets
  whatever the regressor leaves unused). Training stops gracefully when its share is spent
  and keeps the weights with the best validation loss. A run stopped by the budget depends on
  the machine's speed; the stop reason is recorded in the model's config.json.

Adam uses PyTorch's fused implementation where the installed torch supports it on the device
(same update rule; at batch 32 on a CPU it removes about half of the per-step overhead).

Data
----
Training data come from a :class:`fcmlc.dataset.SimDataset`. When the training split fits
in memory (``in_memory="auto"``: at most min(4 GiB, RAM / 4, available memory / 2)) it is loaded
once; otherwise every epoch streams it from disk with ``SimDataset.iter_batches`` in chunks
of ``chunk_rows`` samples (shuffled by the dataset and again within each chunk), so memory
stays bounded.

Reproducibility: weight initialisation, shuffling, dropout masks and dequantisation noise
all derive from ``seed``; the same seed, data, device and thread count give the same model
(unless the time budget stops training).
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Iterator

import numpy as np
import torch

from .flow import ConditionalFlow
from .regressor import MCDropoutMLP, Regressor, Standardizer, _as_seed, default_hidden_layers, make_generator

__all__ = ["RegressorConfig", "FlowConfig", "TrainConfig", "Samples", "fit_regressor", "fit_flow",
           "memory_limit_bytes"]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

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

    def architecture(self) -> dict:
        return dict(n_layers=self.n_layers, hidden=self.hidden, n_blocks=self.n_blocks, n_bins=self.n_bins,
                    dropout=self.dropout, tail_bound=self.tail_bound, transform=self.transform)


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
        """Same networks, faster schedule: a paper-scale single-experiment data set trains in
        <= 20 minutes on 2 CPU cores (see the module docstring for the values and why)."""
        cfg = cls(
            regressor=RegressorConfig(lr=2e-3, batch_size=256, max_epochs=200, patience=8, min_delta=1e-4,
                                      lr_plateau_patience=3),
            flow=FlowConfig(max_epochs=100, patience=8, min_delta=1e-4),
            time_budget=840.0,
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
                cfg.regressor = _overlay(cfg.regressor, v, "regressor")
            elif k == "flow":
                cfg.flow = _overlay(cfg.flow, v, "flow")
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
        if self.hyperparameters not in ("paper", "fast"):
            raise ValueError(f"hyperparameters must be 'paper' or 'fast', got {self.hyperparameters!r}")
        if self.in_memory not in ("auto", True, False):
            raise ValueError(f"in_memory must be 'auto', True or False, got {self.in_memory!r}")


def _overlay(obj, d, what):
    if isinstance(d, type(obj)):
        return copy.deepcopy(d)
    known = {f.name for f in fields(obj)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} configuration keys: {sorted(unknown)}")
    new = copy.deepcopy(obj)
    for k, v in d.items():
        setattr(new, k, v)
    return new


def memory_limit_bytes() -> int:
    """Largest training set held in memory by ``in_memory='auto'``:
    min(4 GiB, physical RAM / 4, currently available memory / 2)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    avail = ram
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return int(min(4 << 30, ram // 4, avail // 2))


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

class Samples:
    """A set of dataset samples (by index), in memory or streamed from the dataset.

    ``chunks(shuffle_seed)`` yields (x float32 (r, d), y_log float64 (r, 2)) with
    y_log = (log10|Ue4|, log10 dm2); with a seed the order is shuffled.
    """

    def __init__(self, dataset, indices, columns=None, in_memory: bool = True, chunk_rows: int = 65536,
                 progress: bool = False, desc: str = "loading", features=None):
        self.dataset = dataset
        #: raw bins -> network features (:class:`fcmlc.models.features.FeatureMap`; None: raw bins)
        self.features = features
        self.indices = np.asarray(indices, dtype=np.int64)
        self.columns = None if columns is None else np.asarray(columns, dtype=np.int64)
        self.chunk_rows = int(chunk_rows)
        self.in_memory = bool(in_memory)
        self.x = self.y = None
        if self.in_memory:
            from tqdm.auto import tqdm

            xs, ys = [], []
            with tqdm(total=len(self.indices), desc=desc, unit="sample", disable=not progress, leave=False) as bar:
                for x, y in self._stream(None):
                    xs.append(x)
                    ys.append(y)
                    bar.update(len(x))
            d = self.n_features_from(dataset)
            self.x = np.concatenate(xs) if xs else np.empty((0, d), np.float32)
            self.y = np.concatenate(ys) if ys else np.empty((0, 2))

    def n_features_from(self, dataset) -> int:
        return len(self.columns) if self.columns is not None else int(dataset.n_features)

    def __len__(self) -> int:
        return len(self.indices)

    def _stream(self, shuffle_seed):
        for x, y in self.dataset.iter_batches(self.indices, self.chunk_rows, shuffle_seed=shuffle_seed):
            x = np.asarray(x)
            if self.columns is not None:
                x = x[:, self.columns]
            if self.features is not None:
                x = self.features.transform(x, np.float32)
            yield np.ascontiguousarray(x, dtype=np.float32), _log_targets(y)

    def chunks(self, shuffle_seed=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.in_memory:
            n = len(self.x)
            if shuffle_seed is None:
                for r0 in range(0, n, self.chunk_rows):
                    yield self.x[r0:r0 + self.chunk_rows], self.y[r0:r0 + self.chunk_rows]
            else:
                order = np.random.default_rng(_seed_list(shuffle_seed)).permutation(n)
                for r0 in range(0, n, self.chunk_rows):
                    sel = order[r0:r0 + self.chunk_rows]
                    yield self.x[sel], self.y[sel]
        else:
            ds_seed = None if shuffle_seed is None else _as_seed(shuffle_seed) % (2 ** 31)
            rng = None if shuffle_seed is None else np.random.default_rng(_seed_list(shuffle_seed) + [7])
            for x, y in self._stream(ds_seed):
                if rng is not None:
                    p = rng.permutation(len(x))
                    x, y = x[p], y[p]
                yield x, y

    def moments(self):
        """(n, sum x, sum x^2, sum y, sum y^2) in float64, in one pass."""
        n = 0
        sx = sxx = sy = syy = 0.0
        for x, y in self.chunks(None):
            x64 = x.astype(np.float64)
            n += len(x)
            sx = sx + x64.sum(axis=0)
            sxx = sxx + np.square(x64).sum(axis=0)
            sy = sy + y.sum(axis=0)
            syy = syy + np.square(y).sum(axis=0)
        return n, sx, sxx, sy, syy


def _seed_list(seed) -> list:
    return [int(s) for s in seed] if isinstance(seed, (tuple, list)) else [int(seed)]


def _log_targets(y) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"dataset targets must have shape (n, 2) = (|Ue4|, dm2), got {y.shape}")
    if np.any(y <= 0) or not np.all(np.isfinite(y)):
        raise ValueError("dataset targets (|Ue4|, dm2) must be finite and > 0 to take log10")
    return np.log10(y)


# --------------------------------------------------------------------------------------------
# loops
# --------------------------------------------------------------------------------------------

class _Deadline:
    def __init__(self, seconds):
        self.t0 = time.monotonic()
        self.end = None if seconds is None else self.t0 + float(seconds)

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class _EarlyStopping:
    def __init__(self, patience, min_delta, relative):
        self.patience, self.min_delta, self.relative = int(patience), float(min_delta), relative
        self.best = math.inf
        self.best_epoch = -1
        self.best_state = None
        self.bad = 0

    def update(self, value, epoch, module) -> bool:
        """Record a validation loss; True if it is a new best."""
        thr = self.best - (self.min_delta * abs(self.best) if self.relative else self.min_delta)
        if math.isfinite(value) and (value < thr or self.best_state is None):
            self.best, self.best_epoch, self.bad = value, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return True
        if math.isfinite(value) and value < self.best:  # better, but not by min_delta: keep weights
            self.best, self.best_epoch = value, epoch
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.bad += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.bad >= self.patience


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device (CPU-only build or no GPU)")
    return dev


def _adam(params, lr, weight_decay, dev) -> torch.optim.Adam:
    """Adam, fused where this torch supports it on ``dev`` (CUDA; CPU since torch 2.4)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _to_tensor(a: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)


def fit_regressor(train: Samples, val: Samples, config: RegressorConfig, *, device=None, seed: int = 0,
                  time_budget: float | None = None, progress: bool = True):
    """Train the MC-dropout regressor with MSE on standardised (log10|Ue4|, log10 dm2).

    Returns (Regressor, history dict). Early stopping on the validation MSE (evaluated with
    dropout on and fixed masks, as the network is used); the best weights are restored.
    """
    from tqdm.auto import tqdm

    dev = _resolve_device(device)
    if config.hidden is None:
        raise ValueError("RegressorConfig.hidden is not set (use TrainConfig.default(experiments))")
    n, sx, sxx, sy, syy = train.moments()
    x_scaler = Standardizer.from_moments(n, sx, sxx)
    y_scaler = Standardizer.from_moments(n, sy, syy)
    n_features = x_scaler.dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_as_seed((seed, 11)))
        net = MCDropoutMLP(n_features, config.hidden, config.dropout).to(dev)
    opt = _adam(net.parameters(), config.lr, config.weight_decay, dev)
    sched = None
    if config.lr_plateau_patience is not None:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=config.lr_plateau_factor,
                                                           patience=config.lr_plateau_patience)
    xm = torch.as_tensor(x_scaler.mean, dtype=torch.float32, device=dev)
    xs = torch.as_tensor(x_scaler.scale, dtype=torch.float32, device=dev)
    ym = torch.as_tensor(y_scaler.mean, dtype=torch.float32, device=dev)
    ys = torch.as_tensor(y_scaler.scale, dtype=torch.float32, device=dev)
    gen = make_generator((seed, 12), dev)
    stopper = _EarlyStopping(config.patience, config.min_delta, relative=True)
    deadline = _Deadline(time_budget)
    hist = {"train_loss": [], "val_loss": [], "epoch_seconds": [], "lr": []}
    stop_reason = "max_epochs"
    bs = int(config.batch_size)

    def validate():
        g = make_generator((seed, 13), dev)
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for xb, yb in val.chunks(None):
                X = (_to_tensor(xb, dev) - xm) / xs
                Y = (_to_tensor(yb, dev) - ym) / ys
                tot += float(torch.sum((net(X, generator=g) - Y) ** 2)) / 2.0
                cnt += len(xb)
        return tot / max(cnt, 1)

    epochs = tqdm(range(config.max_epochs), desc="regressor", unit="epoch", disable=not progress)
    for epoch in epochs:
        t_ep = time.monotonic()
        net.train()
        tot, cnt = 0.0, 0
        out_of_time = False
        with tqdm(total=len(train), desc=f"epoch {epoch}", unit="sample", leave=False,
                  disable=not progress) as bar:
            for xb, yb in train.chunks((seed, 14, epoch)):
                X = (_to_tensor(xb, dev) - xm) / xs
                Y = (_to_tensor(yb, dev) - ym) / ys
                # the dropout masks of the whole chunk in one draw per layer (one Bernoulli call
                # per step and layer would cost a quarter of a batch-32 step on a CPU)
                masks = net.draw_masks(len(X), gen)
                for r0 in range(0, len(X), bs):
                    r1 = min(len(X), r0 + bs)
                    pred = net(X[r0:r1], masks=[None if m is None else m[r0:r1] for m in masks])
                    loss = torch.nn.functional.mse_loss(pred, Y[r0:r1])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach()) * (r1 - r0)
                    cnt += r1 - r0
                    if deadline.passed():
                        out_of_time = True
                        break
                bar.update(len(xb))
                if out_of_time:
                    break
        v = validate()
        stopper.update(v, epoch, net)
        if sched is not None:
            sched.step(v)
        hist["train_loss"].append(tot / max(cnt, 1))
        hist["val_loss"].append(v)
        hist["epoch_seconds"].append(time.monotonic() - t_ep)
        hist["lr"].append(opt.param_groups[0]["lr"])
        epochs.set_postfix(train=f"{hist['train_loss'][-1]:.4f}", val=f"{v:.4f}", best=f"{stopper.best:.4f}")
        if out_of_time:
            stop_reason = "time_budget"
            break
        if stopper.exhausted:
            stop_reason = "patience"
            break
    epochs.close()
    if stopper.best_state is not None:
        net.load_state_dict(stopper.best_state)
    history = {
        "epochs": len(hist["val_loss"]), "best_epoch": stopper.best_epoch, "best_val_mse": stopper.best,
        "stop_reason": stop_reason, "seconds": deadline.elapsed(),
        "n_train": len(train), "n_val": len(val), "device": str(dev),
        "loss": "MSE on standardised (log10|Ue4|, log10 dm2), dropout on", **hist,
    }
    return Regressor(net, x_scaler, y_scaler, dev), history


def fit_flow(regressor: Regressor, train: Samples, val: Samples, config: FlowConfig, *,
             dequantize_widths=(0.0, 0.0), device=None, seed: int = 0, time_budget: float | None = None,
             progress: bool = True):
    """Train the conditional flow p(y | y_hat) by maximum likelihood.

    Training pairs are (y, y_hat) with y the true (log10|Ue4|, log10 dm2) of a training
    realization and y_hat ONE MC-dropout prediction of the trained regressor on it, drawn
    afresh every epoch. With ``config.dequantize`` the grid-valued y are jittered uniformly
    within +-width/2 (``dequantize_widths`` = grid spacing in log10 units), so the flow learns
    a continuous density rather than spikes on the training grid. Early stopping on the
    validation negative log-likelihood (fixed y_hat draws and jitter, flow dropout off).
    """
    from tqdm.auto import tqdm

    dev = _resolve_device(device)
    regressor.to(dev)
    y_scaler = regressor.y_scaler
    flow = ConditionalFlow.create(y_scaler, seed=_as_seed((seed, 21)) % (2 ** 62), device=dev,
                                  **config.architecture())
    params = [p for p in flow.flow.parameters() if p.requires_grad]
    opt = _adam(params, config.lr, config.weight_decay, dev)
    ym = torch.as_tensor(y_scaler.mean, dtype=torch.float32, device=dev)
    ys = torch.as_tensor(y_scaler.scale, dtype=torch.float32, device=dev)
    xm = torch.as_tensor(regressor.x_scaler.mean, dtype=torch.float32, device=dev)
    xs = torch.as_tensor(regressor.x_scaler.scale, dtype=torch.float32, device=dev)
    widths = np.asarray(dequantize_widths, dtype=np.float64) if config.dequantize else np.zeros(2)
    net = regressor.net

    def pairs(xb, yb, gen, rng):
        with torch.no_grad():
            yhat = net((_to_tensor(xb, dev) - xm) / xs, generator=gen)
        y = yb + (rng.random(yb.shape) - 0.5) * widths if np.any(widths > 0) else yb
        return (_to_tensor(y, dev) - ym) / ys, yhat

    # fixed validation pairs
    gv = make_generator((seed, 22), dev)
    rv = np.random.default_rng([int(seed), 23])
    vy, vc = [], []
    for xb, yb in val.chunks(None):
        a, b = pairs(xb, yb, gv, rv)
        vy.append(a)
        vc.append(b)
    val_y = torch.cat(vy) if vy else torch.empty((0, 2), device=dev)
    val_c = torch.cat(vc) if vc else torch.empty((0, 2), device=dev)

    def validate():
        flow.flow.eval()
        tot = 0.0
        with torch.no_grad():
            for r0 in range(0, len(val_y), 65536):
                lp = flow.flow.log_prob(val_y[r0:r0 + 65536], context=val_c[r0:r0 + 65536])
                tot += float(torch.sum(lp))
        return -tot / max(len(val_y), 1)

    fork = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        # the flow's own dropout layers (normflows nn.Dropout) draw from the global generator
        torch.manual_seed(_as_seed((seed, 24)))
        stopper = _EarlyStopping(config.patience, config.min_delta, relative=False)
        deadline = _Deadline(time_budget)
        hist = {"train_nll": [], "val_nll": [], "epoch_seconds": [], "skipped_batches": []}
        stop_reason = "max_epochs"
        bs = int(config.batch_size)
        epochs = tqdm(range(config.max_epochs), desc="flow", unit="epoch", disable=not progress)
        for epoch in epochs:
            t_ep = time.monotonic()
            flow.flow.train()
            gen = make_generator((seed, 25, epoch), dev)
            rng = np.random.default_rng([int(seed), 26, epoch])
            tot, cnt, skipped = 0.0, 0, 0
            out_of_time = False
            with tqdm(total=len(train), desc=f"epoch {epoch}", unit="sample", leave=False,
                      disable=not progress) as bar:
                for xb, yb in train.chunks((seed, 27, epoch)):
                    Y, C = pairs(xb, yb, gen, rng)
                    for r0 in range(0, len(Y), bs):
                        loss = -torch.mean(flow.flow.log_prob(Y[r0:r0 + bs], context=C[r0:r0 + bs]))
                        if not torch.isfinite(loss):
                            skipped += 1
                            continue
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if config.grad_clip:
                            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                        opt.step()
                        nb = len(Y[r0:r0 + bs])
                        tot += float(loss.detach()) * nb
                        cnt += nb
                        if deadline.passed():
                            out_of_time = True
                            break
                    bar.update(len(xb))
                    if out_of_time:
                        break
            v = validate()
            stopper.update(v, epoch, flow.flow)
            hist["train_nll"].append(tot / max(cnt, 1))
            hist["val_nll"].append(v)
            hist["epoch_seconds"].append(time.monotonic() - t_ep)
            hist["skipped_batches"].append(skipped)
            epochs.set_postfix(train=f"{hist['train_nll'][-1]:.4f}", val=f"{v:.4f}", best=f"{stopper.best:.4f}")
            if out_of_time:
                stop_reason = "time_budget"
                break
            if stopper.exhausted:
                stop_reason = "patience"
                break
        epochs.close()
    if stopper.best_state is None:
        raise FloatingPointError("the flow's validation loss was never finite: training diverged "
                                 "(try a smaller learning rate or a larger tail_bound)")
    flow.flow.load_state_dict(stopper.best_state)
    flow.flow.eval()
    history = {
        "epochs": len(hist["val_nll"]), "best_epoch": stopper.best_epoch, "best_val_nll": stopper.best,
        "stop_reason": stop_reason, "seconds": deadline.elapsed(), "device": str(dev),
        "loss": "negative log-likelihood of standardised y given standardised y_hat (nats)",
        "dequantize_widths_log10": widths.tolist(), **hist,
    }
    return flow, history
