"""Posterior estimators behind one interface: train from a ``fcmlc simulate`` dataset, load a
model directory, ``model.posterior(x)`` -> :class:`fcmlc.posterior.Posterior`.

    fcmlc     the paper's pipeline (MC-dropout regressor -> KDE -> flow p(y | y_hat) -> Eq. 2);
              :mod:`fcmlc.models`
    ensemble  K independently seeded FCMLC regressors whose MC-dropout predictions are pooled
              before the KDE (a deep ensemble); the flow and Eq. 2 as for ``fcmlc``
    npe       neural posterior estimation: a conditional spline flow p(y | x) trained directly
              on the (normalisation-invariant) features of the data vector
    nre       neural ratio estimation: a classifier (x, y) -> log r(x, y) = log p(x | y) / p(x);
              the posterior on the grid is prior x exp(log r), normalised

Every model directory's config.json names its estimator (``"estimator"``; a directory without
the key is an ``fcmlc`` model, as written before estimators existed). :func:`load` (and
``FCMLC.load``) reads any of them; :func:`train` trains any of them (``fcmlc train --estimator``).
All models offer the same inference interface: ``posterior(x, n_samples=, seed=, threads=)``,
``posterior_density(X, ...)`` (unnormalised densities per unit log10 area on ``y_grid``),
``experiments``, ``n_features``, ``y_grid``, ``info``, ``config``, ``estimator``, ``save``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["ESTIMATORS", "DESCRIPTIONS", "LABELS", "estimator_of", "load", "train"]

#: estimator name -> module holding its ``train`` and ``load`` functions
_MODULES = {
    "fcmlc": "fcmlc.estimators._fcmlc",
    "ensemble": "fcmlc.estimators.ensemble",
    "npe": "fcmlc.estimators.npe",
    "nre": "fcmlc.estimators.nre",
}
ESTIMATORS = tuple(_MODULES)
DESCRIPTIONS = {
    "fcmlc": "the paper's pipeline: MC-dropout regressor -> KDE -> flow p(y|y_hat) -> Eq. 2",
    "ensemble": "deep ensemble of independently seeded FCMLC regressors, predictions pooled before the KDE",
    "npe": "neural posterior estimation: conditional spline flow p(y|x) on the data features",
    "nre": "neural ratio estimation: classifier log r(x, y), posterior = prior x exp(log r)",
}

#: how figures, tables and messages name each estimator
LABELS = {"fcmlc": "FCMLC", "ensemble": "FCMLC ensemble", "npe": "NPE", "nre": "NRE"}


def check_estimator(name) -> str:
    """The estimator's canonical name; ValueError naming the choices otherwise."""
    key = str(name).strip().lower()
    if key not in _MODULES:
        raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    return key


def _module(name):
    return importlib.import_module(_MODULES[check_estimator(name)])


def estimator_of(directory) -> str:
    """The estimator a model directory holds (config.json's ``"estimator"``, ``fcmlc`` when absent).
    Raises :class:`fcmlc.models.ModelDirectoryError` for a missing, unreadable or foreign config.json."""
    from ..models.directory import ModelDirectoryError, read_config

    cfg = read_config(directory, (), verify=False)  # format and version; the files are checked by the loader
    name = cfg.get("estimator", "fcmlc")
    try:
        return check_estimator(name)
    except ValueError:
        raise ModelDirectoryError(f"{Path(directory) / 'config.json'}: unknown estimator {name!r} (this fcmlc knows "
                                  f"{', '.join(ESTIMATORS)})") from None


def load(directory, device=None, verify: bool = True):
    """Load the model directory of any estimator (checksums verified unless ``verify=False``)."""
    return _module(estimator_of(directory)).load(directory, device=device, verify=verify)


def train(dataset, out=None, estimator: str = "fcmlc", experiments=None, config=None, device=None,
          seed: int = 0, progress: bool = True, restart: bool = False, data_dir=None):
    """Train ``estimator`` on a dataset (path or open ``SimDataset``), as :func:`fcmlc.models.train`
    does for the paper's pipeline: same arguments, same determinism (same seed, data and thread
    count: the same weights), checkpoints in ``<out>.partial/`` and an all-or-nothing model
    directory. ``config``: a dict of the estimator's settings (``{"hyperparameters": "fast"}``
    picks its fast preset), or the estimator's config object. ``data_dir``: for ``npe`` and
    ``nre`` with ``fresh_simulations`` (new simulations every epoch,
    :mod:`fcmlc.estimators.fresh`), the folder of the data releases the dataset was simulated with."""
    kwargs = dict(out=out, experiments=experiments, config=config, device=device, seed=seed, progress=progress,
                  restart=restart)
    if data_dir is not None:
        if check_estimator(estimator) not in ("npe", "nre"):
            raise ValueError(f"a data directory is used only by fresh simulations (npe, nre), not by {estimator}")
        kwargs["data_dir"] = data_dir
    return _module(estimator).train(dataset, **kwargs)
