"""Learning components of FCMLC: the MC-dropout regressor, the conditional flow p(y | y_hat),
the training loops, and the :class:`FCMLC` pipeline (train, save/load, posterior).

Modules, in data-flow order: ``features`` (data vector -> network input), ``regressor``,
``flow`` (with the grids and the transition matrix), ``config`` (hyper-parameters and presets),
``samples`` (training data), ``training`` (the loops), ``checkpoint`` (resuming them),
``model`` (:class:`FCMLC`), ``ensemble`` (:class:`EnsembleFCMLC`, the deep-ensemble estimator),
``directory`` (its saved form), ``pipeline`` (:func:`train`).

    >>> import fcmlc.models as fm
    >>> model = fm.train("sim.h5", out="model/")          # regressor, flow, transition matrix
    >>> model = fm.FCMLC.load("model/")
    >>> post = model.posterior(x, n_samples=1000, seed=0)  # fcmlc.posterior.Posterior
"""
from __future__ import annotations

from .config import EnsembleConfig, FlowConfig, RegressorConfig, TrainConfig
from .directory import FORMAT_VERSION, ModelDirectoryError
from .ensemble import EnsembleFCMLC
from .flow import CellGrid, ConditionalFlow, build_flow, transition_matrix
from .model import FCMLC
from .pipeline import train
from .regressor import EnsembleMLP, MCDropoutMLP, Regressor, Standardizer, default_hidden_layers
from .samples import Samples
from .training import fit_flow, fit_regressor

__all__ = [
    "FCMLC", "EnsembleFCMLC", "train", "ModelDirectoryError", "FORMAT_VERSION",
    "TrainConfig", "RegressorConfig", "FlowConfig", "EnsembleConfig",
    "MCDropoutMLP", "EnsembleMLP", "Regressor", "Standardizer", "default_hidden_layers",
    "ConditionalFlow", "CellGrid", "build_flow", "transition_matrix",
    "Samples", "fit_regressor", "fit_flow",
]
