"""The ``ensemble`` estimator: FCMLC with a deep ensemble of K independently seeded MC-dropout
regressors whose predictions are pooled before the KDE (:mod:`fcmlc.models.ensemble`), in the
registry's terms. ``config``: as for ``fcmlc`` plus ``{"ensemble": {"members": K}}`` (default
:class:`fcmlc.models.config.EnsembleConfig`); the ``regressor`` settings apply to each member."""
from __future__ import annotations

__all__ = ["train", "load"]


def train(dataset, out=None, experiments=None, config=None, device=None, seed=0, progress=True, restart=False):
    # torch: imported by the call only, so that the registry stays light
    from ..models.ensemble import ensemble_config
    from ..models.pipeline import train as _train

    return _train(dataset, out=out, experiments=experiments, config=ensemble_config(config), device=device,
                  seed=seed, progress=progress, restart=restart)


def load(directory, device=None, verify=True):
    from ..models.directory import ModelDirectoryError, read_model_directory
    from ..models.ensemble import EnsembleFCMLC

    parts = read_model_directory(directory, device, verify)
    try:
        return EnsembleFCMLC(**parts)
    except ValueError as e:
        raise ModelDirectoryError(f"{directory}: config.json names the ensemble estimator, but {e}") from None
