"""The training loop of the ``npe`` and ``nre`` networks: minibatches of (x, y) pairs, a loss given
by the estimator, early stopping on the validation loss, resumable epoch by epoch.

x are the dataset's features (:class:`fcmlc.models.samples.Samples`), standardised with
``x_scaler``; y = (log10|Ue4|, log10 dm2), jittered uniformly within +-width/2 of its grid
value (``widths``: the grid spacing; dequantisation; not for a training set of fresh
simulations, :mod:`fcmlc.estimators.fresh`, whose truths are continuous) and standardised with
``y_scaler``.

Reproducibility, as in :mod:`fcmlc.models.training` (whose ``EarlyStopping``, ``Deadline``,
``adam`` and ``to_tensor`` this loop uses): the order of the samples, the jitter and the
estimator's own random draws (NRE's shuffled marginal pairs) come from generators seeded with
(seed, epoch); dropout layers, if any, draw from torch's global generator, forked and seeded for
the loop and saved with each checkpoint. On a CPU the same seed, data and thread count give
bit-identical weights, and a loop resumed from the state passed to ``on_epoch`` ends with the
same weights as an uninterrupted one. Only an explicit ``time_budget`` makes the result
depend on the machine.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .._progress import progress_bar
from ..models.regressor import as_seed, make_generator
from ..models.training import (Deadline, EarlyStopping, adam, cosine_lr, forked_devices, loop_state,
                               optimizer_step, restore_loop, to_tensor)

__all__ = ["fit_network", "VALIDATION_BLOCK"]

#: pairs per validation pass (the NRE's marginal pairs are shuffled within such a block)
VALIDATION_BLOCK = 4096


def fit_network(net: torch.nn.Module, batch_loss, train, val, cfg, x_scaler, y_scaler, widths, *, device, seed: int,
                name: str, loss_description: str, progress: bool = True, resume: dict | None = None,
                on_epoch=None):
    """Train ``net`` with ``batch_loss(net, X, Y, generator)`` -> mean loss of a batch (X, Y:
    standardised float32 tensors; the generator for the estimator's own random draws). ``cfg``:
    the estimator's settings (:class:`fcmlc.estimators.config.GridEstimatorConfig`). Early
    stopping on the validation loss (fixed jitter and draws, dropout off); the best weights are
    restored and ``net`` is left in eval mode. Returns the history (``epochs``, ``best_epoch``,
    ``best_val_loss``, ``stop_reason``, ``seconds``, per-epoch ``train_loss``, ``val_loss``,
    ``lr``, ``epoch_seconds``, ``skipped_batches``). ``resume``: a state passed to ``on_epoch``
    by an earlier run (called after every epoch that training continues past)."""
    dev = torch.device(device)
    net.to(dev)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = adam(params, cfg.lr, cfg.weight_decay, dev)
    sched = None
    cosine = cfg.lr_schedule == "cosine"
    if not cosine and cfg.lr_plateau_patience is not None:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_plateau_factor,
                                                           patience=cfg.lr_plateau_patience)
    xm, xs = (torch.as_tensor(a, dtype=torch.float32, device=dev) for a in (x_scaler.mean, x_scaler.scale))
    ym, ys = (torch.as_tensor(a, dtype=torch.float32, device=dev) for a in (y_scaler.mean, y_scaler.scale))
    widths = np.asarray(widths, dtype=np.float64) if cfg.dequantize else np.zeros(2)

    # fresh simulations (fcmlc.estimators.fresh) have continuous truths: only grid values are jittered
    train_widths, val_widths = (np.zeros(2) if getattr(s, "continuous_y", False) else widths for s in (train, val))

    def tensors(xb, yb, rng, w):
        y = yb + (rng.random(yb.shape) - 0.5) * w if np.any(w > 0) else yb
        return (to_tensor(xb, dev) - xm) / xs, (to_tensor(y, dev) - ym) / ys

    rv = np.random.default_rng([int(seed), 53])
    vx, vy = zip(*(tensors(xb, yb, rv, val_widths) for xb, yb in val.chunks(None))) if len(val) else ((), ())
    val_x = torch.cat(vx) if vx else torch.empty((0, x_scaler.dim), device=dev)
    val_y = torch.cat(vy) if vy else torch.empty((0, 2), device=dev)

    def validate():
        net.eval()
        g = make_generator((seed, 54), dev)
        tot = 0.0
        with torch.no_grad():
            for r0 in range(0, len(val_y), VALIDATION_BLOCK):
                xb, yb = val_x[r0:r0 + VALIDATION_BLOCK], val_y[r0:r0 + VALIDATION_BLOCK]
                if len(xb) >= 2:
                    tot += float(batch_loss(net, xb, yb, g)) * len(xb)
        return tot / max(len(val_y), 1)

    fork = forked_devices(dev)
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(as_seed((seed, 55)))  # dropout layers draw from the global generator
        stopper = EarlyStopping(cfg.patience, cfg.min_delta, relative=False)
        hist = {"train_loss": [], "val_loss": [], "lr": [], "epoch_seconds": [], "skipped_batches": []}
        first = 0
        if resume is not None:
            hist, first = restore_loop(resume, "net", net, opt, sched, stopper, fork=fork)
        deadline = Deadline(cfg.time_budget, resume["seconds"] if resume is not None else 0.0)
        stop_reason = "max_epochs"
        bs = int(cfg.batch_size)
        epochs = progress_bar(range(first, cfg.max_epochs), desc=name, unit="epoch", enabled=progress,
                              initial=first, total=cfg.max_epochs)
        for epoch in epochs:
            t_ep = time.monotonic()
            net.train()
            rng = np.random.default_rng([int(seed), 56, epoch])
            gen = make_generator((seed, 57, epoch), dev)
            tot, cnt, skipped, out_of_time, done = 0.0, 0, 0, False, 0
            for xb, yb in train.chunks((seed, 58, epoch)):
                X, Y = tensors(xb, yb, rng, train_widths)
                for r0 in range(0, len(X), bs):
                    if cosine:
                        cosine_lr(opt, cfg.lr, epoch, done, len(train), cfg.max_epochs)
                        done += len(X[r0:r0 + bs])
                    if len(X) - r0 < 2:  # a batch of one has no marginal pairs (NRE): left out
                        continue
                    loss = batch_loss(net, X[r0:r0 + bs], Y[r0:r0 + bs], gen)
                    if not optimizer_step(opt, loss, params, cfg.grad_clip):
                        skipped += 1
                        continue
                    nb = min(bs, len(X) - r0)
                    tot += float(loss.detach()) * nb
                    cnt += nb
                    if deadline.passed():
                        out_of_time = True
                        break
                if out_of_time:
                    break
            v = validate()
            stopper.update(v, epoch, net)
            if sched is not None:
                sched.step(v)
            hist["train_loss"].append(tot / max(cnt, 1))
            hist["val_loss"].append(v)
            hist["lr"].append(opt.param_groups[0]["lr"])
            hist["epoch_seconds"].append(time.monotonic() - t_ep)
            hist["skipped_batches"].append(skipped)
            epochs.set_postfix(train=f"{hist['train_loss'][-1]:.4f}", val=f"{v:.4f}", best=f"{stopper.best:.4f}")
            if (reason := stopper.stop_reason(out_of_time)) is not None:
                stop_reason = reason
                break
            if on_epoch is not None and epoch + 1 < cfg.max_epochs:
                on_epoch(loop_state(epoch, "net", net, opt, sched, stopper, hist, deadline, fork=fork))
        epochs.close()
    if stopper.best_state is None:
        raise FloatingPointError(f"the {name}'s validation loss was never finite: training diverged (try a smaller "
                                 "learning rate)")
    net.load_state_dict(stopper.best_state)
    net.eval()
    return {"epochs": len(hist["val_loss"]), "best_epoch": stopper.best_epoch, "best_val_loss": stopper.best,
            "stop_reason": stop_reason, "seconds": deadline.elapsed(), "n_train": len(train), "n_val": len(val),
            "device": str(dev), "loss": loss_description, "dequantize_widths_log10": train_widths.tolist(), **hist}
