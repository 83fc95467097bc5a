"""Training loops for the FCMLC regressor and conditional flow (early stopping, time budget).

Settings: :mod:`fcmlc.models.config` (the paper's Tables III and IV and the ``fast`` preset);
data: :class:`fcmlc.models.samples.Samples`.

Adam uses PyTorch's fused implementation where the installed torch supports it on the device
(same update rule; at batch 32 on a CPU it removes about half of the per-step overhead).

Reproducibility: weight initialisation, shuffling, dropout masks and dequantisation noise
all derive from ``seed`` (seeded ``torch.Generator`` and NumPy generators; the flow's own dropout
layers draw from torch's global generator, forked and seeded for the loop); on a CPU the
operations used are deterministic, so the same seed, data and thread count give bit-identical
weights however busy the machine is. Only an explicit ``time_budget`` makes the result depend
on the machine's speed and load. (On CUDA, the scatter-add in the backward pass of the spline
flows uses atomics: runs may differ in the last bits unless
``torch.use_deterministic_algorithms(True)`` is set.)

Resuming: both loops take ``resume`` (a loop state) and ``on_epoch`` (called with the loop state
after every epoch that training continues past). The state holds everything the rest of the
run depends on -- weights, optimizer, learning-rate schedule, early-stopping record, the random
generators' states, the history and the next epoch -- so that a loop resumed from it ends with
the same weights as an uninterrupted one (:mod:`fcmlc.models.checkpoint` writes it to disk).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from .config import FlowConfig, RegressorConfig, TrainConfig
from .flow import ConditionalFlow
from .regressor import MCDropoutMLP, Regressor, Standardizer, as_seed, make_generator
from .._progress import progress_bar
from .._torch_env import resolve_device
from .samples import Samples, memory_limit_bytes

__all__ = ["RegressorConfig", "FlowConfig", "TrainConfig", "Samples", "fit_regressor", "fit_flow",
           "memory_limit_bytes", "resolve_device", "Deadline", "EarlyStopping", "adam", "to_tensor"]


class Deadline:
    """A wall-clock budget of a training loop (None: none); ``elapsed`` counts resumed sessions too."""

    def __init__(self, seconds, spent: float = 0.0):
        """``seconds`` from now, less ``spent`` (seconds used before a resume)."""
        self.t0 = time.monotonic() - float(spent)
        self.end = None if seconds is None else self.t0 + float(seconds)

    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class EarlyStopping:
    """Early stopping on a validation loss: the best value, its epoch and weights, and the epochs
    since (``min_delta``: the improvement that counts, ``relative`` to the best or absolute)."""

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

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state, "bad": self.bad}

    def load(self, state: dict):
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.best_state, self.bad = state["best_state"], int(state["bad"])

    @property
    def exhausted(self) -> bool:
        return self.bad >= self.patience

    def stop_reason(self, out_of_time: bool) -> str | None:
        """Why training stops after this epoch ('time_budget', 'patience'), or None to go on."""
        if out_of_time:
            return "time_budget"
        return "patience" if self.exhausted else None


def adam(params, lr, weight_decay, dev) -> torch.optim.Adam:
    """Adam, fused where this torch supports it on ``dev`` (CUDA; CPU since torch 2.4)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def forked_devices(dev: torch.device) -> list:
    """The CUDA devices whose generators ``torch.random.fork_rng`` must fork for a loop on ``dev``."""
    return [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []


def loop_state(epoch: int, module_key: str, module, opt, sched, stopper, hist, deadline, *, gen=None, fork=()) -> dict:
    """What a training loop passes to ``on_epoch`` after ``epoch`` (restored by
    :func:`restore_loop`): the weights under ``module_key``, optimizer, scheduler (None when the
    loop has none), early-stopping state, history, seconds so far, and the random state the loop
    draws from: ``gen`` (an explicit generator) or torch's global generators (``fork``: the CUDA
    devices forked, as for ``torch.random.fork_rng``)."""
    state = {"epoch": epoch + 1, module_key: module.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": None if sched is None else sched.state_dict(), "stopper": stopper.state()}
    if gen is not None:
        state["generator"] = gen.get_state()
    else:
        state["rng"] = torch.get_rng_state()
        state["cuda_rng"] = torch.cuda.get_rng_state(fork[0]) if fork else None
    state.update(history=hist, seconds=deadline.elapsed())
    return state


def restore_loop(resume: dict, module_key: str, module, opt, sched, stopper, *, gen=None, fork=()):
    """Restore a :func:`loop_state` into the loop's objects; returns (history, first epoch)."""
    module.load_state_dict(resume[module_key])
    opt.load_state_dict(resume["optimizer"])
    if sched is not None:
        sched.load_state_dict(resume["scheduler"])
    stopper.load(resume["stopper"])
    if gen is not None:
        gen.set_state(resume["generator"])
    else:
        torch.set_rng_state(resume["rng"])
        if fork:
            torch.cuda.set_rng_state(resume["cuda_rng"], fork[0])
    return {k: list(v) for k, v in resume["history"].items()}, int(resume["epoch"])


def optimizer_step(opt, loss: torch.Tensor, params, grad_clip) -> bool:
    """One optimizer step on ``loss`` (gradients clipped to norm ``grad_clip`` when set); False,
    and no step, when the loss is not finite (the caller counts the batch as skipped)."""
    if not torch.isfinite(loss):
        return False
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return True


def cosine_lr(opt, base_lr: float, epoch: int, done: int, n_train: int, max_epochs: int):
    """Set ``opt``'s learning rate to the cosine schedule's value after ``done`` of ``n_train``
    pairs of ``epoch``: base_lr (1 + cos(pi t)) / 2, t = (epoch + done / n_train) / max_epochs
    (a function of the position only, so a resumed loop continues it exactly)."""
    t = (epoch + done / max(n_train, 1)) / max_epochs
    for g in opt.param_groups:
        g["lr"] = base_lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def to_tensor(a: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
    """A NumPy array as a (contiguous) tensor of ``dtype`` on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)


def fit_regressor(train: Samples, val: Samples, config: RegressorConfig, *, device=None, seed: int = 0,
                  time_budget: float | None = None, progress: bool = True, resume: dict | None = None,
                  on_epoch=None):
    """Train the MC-dropout regressor with MSE on standardised (log10|Ue4|, log10 dm2).

    Returns (Regressor, history dict). Early stopping on the validation MSE (evaluated with
    dropout on and fixed masks, as the network is used); the best weights are restored.
    ``resume``/``on_epoch``: see the module docstring.
    """
    dev = resolve_device(device)
    if config.hidden is None:
        raise ValueError("RegressorConfig.hidden is not set (use TrainConfig.default(experiments))")
    n, sx, sxx, sy, syy = train.moments()
    x_scaler = Standardizer.from_moments(n, sx, sxx)
    y_scaler = Standardizer.from_moments(n, sy, syy)
    n_features = x_scaler.dim
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(as_seed((seed, 11)))
        net = MCDropoutMLP(n_features, config.hidden, config.dropout).to(dev)
    opt = adam(net.parameters(), config.lr, config.weight_decay, dev)
    sched = None
    if config.lr_plateau_patience is not None:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=config.lr_plateau_factor,
                                                           patience=config.lr_plateau_patience)
    xm = torch.as_tensor(x_scaler.mean, dtype=torch.float32, device=dev)
    xs = torch.as_tensor(x_scaler.scale, dtype=torch.float32, device=dev)
    ym = torch.as_tensor(y_scaler.mean, dtype=torch.float32, device=dev)
    ys = torch.as_tensor(y_scaler.scale, dtype=torch.float32, device=dev)
    gen = make_generator((seed, 12), dev)
    stopper = EarlyStopping(config.patience, config.min_delta, relative=True)
    hist = {"train_loss": [], "val_loss": [], "epoch_seconds": [], "lr": []}
    first = 0
    if resume is not None:
        hist, first = restore_loop(resume, "net", net, opt, sched, stopper, gen=gen)
    deadline = Deadline(time_budget, resume["seconds"] if resume is not None else 0.0)
    stop_reason = "max_epochs"
    bs = int(config.batch_size)

    def validate():
        g = make_generator((seed, 13), dev)
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for xb, yb in val.chunks(None):
                X = (to_tensor(xb, dev) - xm) / xs
                Y = (to_tensor(yb, dev) - ym) / ys
                tot += float(torch.sum((net(X, generator=g) - Y) ** 2)) / 2.0
                cnt += len(xb)
        return tot / max(cnt, 1)

    epochs = progress_bar(range(first, config.max_epochs), desc="regressor", unit="epoch", enabled=progress,
                          initial=first, total=config.max_epochs)
    for epoch in epochs:
        t_ep = time.monotonic()
        net.train()
        tot, cnt = 0.0, 0
        out_of_time = False
        with progress_bar(total=len(train), desc=f"epoch {epoch}", unit="sample", nested=True,
                          enabled=progress) as bar:
            for xb, yb in train.chunks((seed, 14, epoch)):
                X = (to_tensor(xb, dev) - xm) / xs
                Y = (to_tensor(yb, dev) - ym) / ys
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
        if (reason := stopper.stop_reason(out_of_time)) is not None:
            stop_reason = reason
            break
        if on_epoch is not None and epoch + 1 < config.max_epochs:
            on_epoch(loop_state(epoch, "net", net, opt, sched, stopper, hist, deadline, gen=gen))
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
             progress: bool = True, resume: dict | None = None, on_epoch=None):
    """Train the conditional flow p(y | y_hat) by maximum likelihood.

    Training pairs are (y, y_hat) with y the true (log10|Ue4|, log10 dm2) of a training
    realization and y_hat ONE MC-dropout prediction of the trained regressor on it, drawn
    afresh every epoch. With ``config.dequantize`` the grid-valued y are jittered uniformly
    within +-width/2 (``dequantize_widths`` = grid spacing in log10 units), so the flow learns
    a continuous density rather than spikes on the training grid. Early stopping on the
    validation negative log-likelihood (fixed y_hat draws and jitter, flow dropout off).
    ``resume``/``on_epoch``: see the module docstring.
    """
    dev = resolve_device(device)
    regressor.to(dev)
    y_scaler = regressor.y_scaler
    flow = ConditionalFlow.create(y_scaler, seed=as_seed((seed, 21)) % (2 ** 62), device=dev,
                                  **config.architecture())
    params = [p for p in flow.flow.parameters() if p.requires_grad]
    opt = adam(params, config.lr, config.weight_decay, dev)
    ym = torch.as_tensor(y_scaler.mean, dtype=torch.float32, device=dev)
    ys = torch.as_tensor(y_scaler.scale, dtype=torch.float32, device=dev)
    xm = torch.as_tensor(regressor.x_scaler.mean, dtype=torch.float32, device=dev)
    xs = torch.as_tensor(regressor.x_scaler.scale, dtype=torch.float32, device=dev)
    widths = np.asarray(dequantize_widths, dtype=np.float64) if config.dequantize else np.zeros(2)
    net = regressor.net

    def pairs(xb, yb, gen, rng):
        with torch.no_grad():
            yhat = net((to_tensor(xb, dev) - xm) / xs, generator=gen)
        y = yb + (rng.random(yb.shape) - 0.5) * widths if np.any(widths > 0) else yb
        return (to_tensor(y, dev) - ym) / ys, yhat

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

    fork = forked_devices(dev)
    with torch.random.fork_rng(devices=fork):
        # the flow's own dropout layers (normflows nn.Dropout) draw from the global generator
        torch.manual_seed(as_seed((seed, 24)))
        stopper = EarlyStopping(config.patience, config.min_delta, relative=False)
        hist = {"train_nll": [], "val_nll": [], "epoch_seconds": [], "skipped_batches": [], "lr": []}
        first = 0
        if resume is not None:
            hist, first = restore_loop(resume, "flow", flow.flow, opt, None, stopper, fork=fork)
        deadline = Deadline(time_budget, resume["seconds"] if resume is not None else 0.0)
        stop_reason = "max_epochs"
        bs = int(config.batch_size)
        n_train = max(len(train), 1)

        def set_lr(epoch, done):
            if config.lr_schedule == "cosine":
                cosine_lr(opt, config.lr, epoch, done, n_train, config.max_epochs)

        epochs = progress_bar(range(first, config.max_epochs), desc="flow", unit="epoch", enabled=progress,
                              initial=first, total=config.max_epochs)
        for epoch in epochs:
            t_ep = time.monotonic()
            flow.flow.train()
            gen = make_generator((seed, 25, epoch), dev)
            rng = np.random.default_rng([int(seed), 26, epoch])
            tot, cnt, skipped = 0.0, 0, 0
            out_of_time = False
            done = 0
            with progress_bar(total=len(train), desc=f"epoch {epoch}", unit="sample", nested=True,
                              enabled=progress) as bar:
                for xb, yb in train.chunks((seed, 27, epoch)):
                    Y, C = pairs(xb, yb, gen, rng)
                    for r0 in range(0, len(Y), bs):
                        set_lr(epoch, done)
                        done += len(Y[r0:r0 + bs])
                        loss = -torch.mean(flow.flow.log_prob(Y[r0:r0 + bs], context=C[r0:r0 + bs]))
                        if not optimizer_step(opt, loss, params, config.grad_clip):
                            skipped += 1
                            continue
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
            hist["lr"].append(opt.param_groups[0]["lr"])
            epochs.set_postfix(train=f"{hist['train_nll'][-1]:.4f}", val=f"{v:.4f}", best=f"{stopper.best:.4f}")
            if (reason := stopper.stop_reason(out_of_time)) is not None:
                stop_reason = reason
                break
            if on_epoch is not None and epoch + 1 < config.max_epochs:
                on_epoch(loop_state(epoch, "flow", flow.flow, opt, None, stopper, hist, deadline, fork=fork))
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
