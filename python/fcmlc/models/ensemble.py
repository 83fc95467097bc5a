"""The ``ensemble`` estimator: the FCMLC pipeline with a deep ensemble of MC-dropout regressors.

A deep ensemble (Lakshminarayanan et al. 2017) of K regressors replaces FCMLC's one regressor:

* every member is trained by :func:`fcmlc.models.training.fit_regressor` with the same settings
  (``regressor``: the ``paper`` defaults or the ``fast`` preset apply to each member), the same
  training data and validation split, from its own seed: member 0 from the run's seed (so a
  one-member ensemble is the ``fcmlc`` model, bit for bit), member k > 0 from a seed derived
  from (seed, k) (:func:`member_seed`). The input and target scalers, fitted on the same data,
  are the same for all members;
* their MC-dropout predictions are pooled (:class:`fcmlc.models.regressor.EnsembleMLP`):
  ``posterior(x, n_samples)`` draws n_samples // K samples from each member (the remainder
  spread one each over the last members) and the KDE runs on all of them;
* the conditional flow p(y | y_hat) is trained by the unchanged
  :func:`fcmlc.models.training.fit_flow` on y_hat drawn from the pooled predictive
  distribution: for every training row a member chosen at random (from the seeded generator of
  the epoch) with that member's dropout;
* the transition matrix, Eq. 2 and the :class:`fcmlc.posterior.Posterior` are FCMLC's.

Training: :func:`fcmlc.models.train` with ``TrainConfig.ensemble`` set (``{"ensemble":
{"members": 3}}``; :func:`fcmlc.estimators.train` with ``estimator="ensemble"``, ``fcmlc train
--estimator ensemble``). Checkpoints: after every epoch of every member, holding the finished
members, so an interrupted run resumes inside the member it was training and ends with the
same weights as an uninterrupted one. The model is an :class:`EnsembleFCMLC`; its directory is
an FCMLC model directory whose regressor.pt holds every member's weights (keys
``members.<k>.…``) and whose config.json says ``"estimator": "ensemble"`` and records
``"members": K`` in the regressor's architecture.
"""
from __future__ import annotations

import numpy as np

from .config import RegressorConfig, TrainConfig
from .model import FCMLC
from .regressor import EnsembleMLP, Regressor, as_seed, pack_regressor, unpack_regressor
from .samples import Samples
from .training import fit_regressor, resolve_device

__all__ = ["EnsembleFCMLC", "fit_ensemble", "ensemble_history", "member_seed", "ensemble_config"]

#: the tag that separates member seeds from the pipeline's other derived seeds
MEMBER_SEED_TAG = 41


def member_seed(seed: int, k: int) -> int:
    """The training seed of member ``k``: the run's seed for member 0, one derived from
    (seed, k) for the others."""
    return int(seed) if int(k) == 0 else as_seed((int(seed), MEMBER_SEED_TAG, int(k)))


def ensemble_config(config):
    """The settings of an ``ensemble`` training run: ``config`` (None, a dict of settings or a
    ``TrainConfig``) with the default :class:`EnsembleConfig` where it sets none."""
    if config is None:
        return {"ensemble": {}}
    if isinstance(config, TrainConfig):
        if config.ensemble is not None:
            return config
        return TrainConfig.from_dict({"ensemble": {}}, base=config)
    if isinstance(config, dict):
        return {**config, "ensemble": config.get("ensemble") or {}}
    raise ValueError("config must be a TrainConfig, a dict of settings, or None")


def fit_ensemble(train: Samples, val: Samples, config: RegressorConfig, members: int, *, device=None, seed: int = 0,
                 time_budget: float | None = None, progress: bool = True, resume: dict | None = None,
                 on_epoch=None):
    """Train ``members`` regressors (:func:`fit_regressor` each, seeds :func:`member_seed`) and
    pool them: returns (Regressor over an :class:`EnsembleMLP`, history (:func:`ensemble_history`)).

    ``time_budget``: seconds for all members, an equal share each. ``resume`` / ``on_epoch``: the
    state ``{"members": K, "done": [packed finished members], "histories": [their histories],
    "loop": the current member's loop state or None}``, passed to ``on_epoch`` after every epoch
    training continues past and after every member but the last; resuming from it ends with the
    same weights as an uninterrupted run.
    """
    dev = resolve_device(device)
    if resume is not None and int(resume["members"]) != int(members):
        raise ValueError(f"the state to resume trained {resume['members']} members, this run {members}")
    done = list(resume["done"]) if resume is not None else []
    hists = list(resume["histories"]) if resume is not None else []
    loop = resume.get("loop") if resume is not None else None
    share = None if time_budget is None else time_budget / members

    def state(lp):
        return {"members": int(members), "done": done, "histories": hists, "loop": lp}

    for k in range(len(done), members):
        s = member_seed(seed, k)
        regressor, hist = fit_regressor(
            train, val, config, device=dev, seed=s, time_budget=share, progress=progress, resume=loop,
            on_epoch=None if on_epoch is None else lambda lp: on_epoch(state(lp)))
        loop = None
        done.append(pack_regressor(regressor))
        hists.append({"member": k, "seed": s, **hist})
        if on_epoch is not None and k + 1 < members:
            on_epoch(state(None))
    # the same path whether the members were trained now or read from a checkpoint
    parts = [unpack_regressor(d, dev) for d in done]
    for k, r in enumerate(parts[1:], 1):
        for name in ("x_scaler", "y_scaler"):
            a, b = getattr(parts[0], name), getattr(r, name)
            if not (np.array_equal(a.mean, b.mean) and np.array_equal(a.scale, b.scale)):
                raise RuntimeError(f"ensemble member {k}'s {name} differs from member 0's although both were "
                                   f"fitted on the same training set")
    net = EnsembleMLP([r.net for r in parts])
    return Regressor(net, parts[0].x_scaler, parts[0].y_scaler, dev), ensemble_history(hists)


def ensemble_history(histories: list) -> dict:
    """The regressor's training record for config.json: the members' histories under
    ``members``, and for ``fcmlc train``'s summary their epochs and seconds summed, their best
    validation MSE averaged and the stop reason (``time_budget`` when it stopped any member)."""
    reasons = [h["stop_reason"] for h in histories]
    if "time_budget" in reasons:
        stop = "time_budget"
    elif len(set(reasons)) == 1:
        stop = reasons[0]
    else:
        stop = ", ".join(f"{r} x{reasons.count(r)}" for r in dict.fromkeys(reasons))
    first = histories[0]
    return {"epochs": int(sum(h["epochs"] for h in histories)),
            "best_val_mse": float(np.mean([h["best_val_mse"] for h in histories])),
            "stop_reason": stop, "seconds": float(sum(h["seconds"] for h in histories)),
            "n_train": first["n_train"], "n_val": first["n_val"], "device": first["device"],
            "loss": f"{first['loss']}; per member (members), epochs and seconds summed over the members, "
                    f"best_val_mse their mean",
            "members": histories}


class EnsembleFCMLC(FCMLC):
    """An FCMLC model whose regressor is a deep ensemble (:class:`EnsembleMLP`): the
    ``ensemble`` estimator. Same interface as :class:`FCMLC`; its posteriors' meta names the
    estimator and the number of members."""

    #: the registry name of this estimator (:mod:`fcmlc.estimators`)
    estimator = "ensemble"

    def __init__(self, regressor: Regressor, *args, **kwargs):
        if not isinstance(regressor.net, EnsembleMLP):
            raise ValueError(f"an ensemble model needs a regressor over an EnsembleMLP, got a "
                             f"{type(regressor.net).__name__}")
        super().__init__(regressor, *args, **kwargs)

    @property
    def n_members(self) -> int:
        return self.regressor.net.n_members

    def __repr__(self):
        return (f"EnsembleFCMLC(members={self.n_members}, experiments={self.experiments}, "
                f"n_features={self.n_features}, yhat_grid={self.yhat_grid.shape}, y_grid={self.y_grid.shape}, "
                f"version={self.version!r})")

    def posterior(self, x, *args, **kwargs):
        """As :meth:`FCMLC.posterior`; meta also holds ``estimator`` and ``members``."""
        out = super().posterior(x, *args, **kwargs)
        for p in out if isinstance(out, list) else [out]:
            p.meta.update(estimator=self.estimator, members=self.n_members)
        return out
