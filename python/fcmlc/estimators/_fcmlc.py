"""The ``fcmlc`` estimator: the paper's pipeline (:mod:`fcmlc.models`), in the registry's terms."""
from __future__ import annotations

__all__ = ["train", "load"]


def train(dataset, out=None, experiments=None, config=None, device=None, seed=0, progress=True, restart=False):
    from ..models.pipeline import train as _train

    ens = config.get("ensemble") if isinstance(config, dict) else getattr(config, "ensemble", None)
    if ens is not None:
        raise ValueError("the config holds ensemble settings, which the fcmlc estimator does not use: "
                         "train with estimator 'ensemble' (fcmlc train --estimator ensemble)")
    return _train(dataset, out=out, experiments=experiments, config=config, device=device, seed=seed,
                  progress=progress, restart=restart)


def load(directory, device=None, verify=True):
    from ..models.directory import read_model_directory
    from ..models.model import FCMLC

    return FCMLC(**read_model_directory(directory, device, verify))
