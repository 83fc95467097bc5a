"""The data vector a fit or a chi2 scan is run on.

One of three sources (the ``--data`` / ``--observed`` / ``--asimov`` options of `fcmlc fit`,
`fcmlc compare` and `fcmlc wilks`): a vector read from a file (:func:`read_vector`), the
experiments' published data (:func:`observed_vector`), or the expectation at a point of the
parameter plane (with a seed: one random realization there). :func:`data_source` resolves the
choice into a :class:`DataSource`; :func:`model_data_source` does so for a trained FCMLC model,
whose experiments :func:`model_experiments` loads and checks against the ones it was trained on.

The messages name the command-line options because the commands pass them on unchanged.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .physics import check_params
from .simulation import realizations

__all__ = ["DataSource", "data_source", "experiment_set_asimov", "model_data_source", "model_experiments",
           "observed_vector", "read_vector"]


def read_vector(path, n_features: int) -> np.ndarray:
    """A data vector from a text file, .npy or .npz (a single array, or one named x/data/features)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--data: file {str(p)!r} not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                pick = [k for k in ("x", "data", "features") if k in keys]
                if pick:
                    a = z[pick[0]]
                elif len(keys) == 1:
                    a = z[keys[0]]
                else:
                    raise ValueError(f"{p} holds several arrays {keys}; name the data vector 'x'")
        else:
            a = np.loadtxt(p, dtype=float, ndmin=1, delimiter=None if suffix != ".csv" else ",")
    except (OSError, ValueError) as e:
        raise ValueError(f"--data: cannot read {p}: {e}") from None
    a = np.asarray(a, dtype=float)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1 or a.size != n_features:
        raise ValueError(f"--data: {p} holds an array of shape {a.shape}; the model needs one vector of "
                         f"{n_features} values")
    return a


def observed_vector(exps) -> np.ndarray:
    """The published data of ``exps`` (anything with ``.experiments`` and ``.names``: an
    ExperimentSet, a Chi2Model) concatenated in order; ValueError naming any without data."""
    missing = [e.name for e in exps.experiments if getattr(e, "observed", None) is None]
    if missing:
        raise ValueError(f"no published data for {', '.join(missing)} (of {', '.join(exps.names)}); "
                         "use --data or --asimov")
    return np.concatenate([np.asarray(e.observed, dtype=float) for e in exps.experiments])


@dataclass
class DataSource:
    """A data vector and where it came from (what :func:`data_source` returns)."""

    x: np.ndarray
    experiments: object | None  # what load_experiments() returned (None for a file: it needs none)
    meta: dict  # recorded with the result
    description: str  # for people
    truth: tuple | None  # (ue4, dm2) of an Asimov vector or realization


def data_source(n_features: int, load_experiments, asimov_vector, *, data=None, observed: bool = False,
                asimov=None, seed=None) -> DataSource:
    """The data vector of ``n_features`` bins chosen by exactly one of ``data`` (a file for
    :func:`read_vector`), ``observed`` (the published data) or ``asimov`` ((ue4, dm2): the
    expectation there, or with ``seed`` one realization).

    ``load_experiments()`` gives the experiments the vector is for (anything with ``.experiments``
    and ``.names``: an ExperimentSet, a Chi2Model); it is called only when needed.
    ``asimov_vector(experiments, ue4, dm2, seed)`` gives the expectation (seed None) or one realization.
    """
    if sum((data is not None, bool(observed), asimov is not None)) != 1:
        raise ValueError("give exactly one of --data, --observed and --asimov")
    if seed is not None and asimov is None:
        raise ValueError("--seed only applies to --asimov (it draws one realization at that point)")
    if data is not None:
        x = read_vector(data, n_features)
        return DataSource(x, None, {"input": "data", "file": str(Path(data).resolve())}, f"data {data}", None)
    if observed:
        exps = load_experiments()
        return DataSource(observed_vector(exps), exps, {"input": "observed"}, "observed data", None)
    ue4, dm2 = asimov
    check_params(ue4, dm2)
    exps = load_experiments()
    x = asimov_vector(exps, ue4, dm2, seed)
    if seed is None:
        return DataSource(x, exps, {"input": "asimov", "ue4": ue4, "dm2": dm2},
                          f"Asimov data at |Ue4| = {ue4:g}, dm2 = {dm2:g} eV^2", (ue4, dm2))
    return DataSource(x, exps, {"input": "realization", "ue4": ue4, "dm2": dm2, "seed": seed},
                      f"realization (seed {seed}) at |Ue4| = {ue4:g}, dm2 = {dm2:g} eV^2", (ue4, dm2))


def changed_definitions(model, exps) -> list:
    """Names of the experiments in ``exps`` defined otherwise than the model's training recorded
    (its ``experiment_hashes``; experiments without a record are not compared)."""
    saved = (getattr(model, "info", None) or {}).get("experiment_hashes") or {}
    return [e.name for e in exps if saved.get(e.name) and saved[e.name] != e.definition_hash]


def model_experiments(model, data_dir=None):
    """The trained FCMLC ``model``'s experiments as an ExperimentSet (loaded with ``data_dir``),
    warning when a definition differs from the one the model was trained on."""
    from . import experiments as ex  # scipy: loaded only when needed, so `import fcmlc` stays light

    try:
        exps = [ex.load(name, data_dir=data_dir) for name in model.experiments]
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"cannot load the model's experiments {model.experiments} ({e}); pass --data instead") \
            from None
    changed = changed_definitions(model, exps)
    if changed:
        warnings.warn(f"the definition of {', '.join(changed)} differs from the one the model was trained on "
                      "(different version or data release): the result may not be meaningful", stacklevel=2)
    eset = ex.combine(exps)
    if eset.n_bins != model.n_features:
        raise ValueError(f"the experiments {model.experiments} have {eset.n_bins} bins but the model expects "
                         f"{model.n_features} features")
    return eset


def experiment_set_asimov(eset, ue4: float, dm2: float, seed=None) -> np.ndarray:
    """The expectation of an ExperimentSet at (ue4, dm2) as one vector, or with ``seed`` one
    realization there (the one `fcmlc simulate` draws with that seed)."""
    if seed is None:
        return np.asarray(eset.expectation(ue4, dm2), dtype=float).reshape(-1)
    return realizations(eset, [ue4], [dm2], n_per_point=1, seed=seed)[0, 0]


def model_data_source(model, *, data=None, observed: bool = False, asimov=None, seed=None,
                      data_dir=None) -> DataSource:
    """:func:`data_source` for a trained FCMLC model (its experiments loaded with ``data_dir``)."""
    return data_source(model.n_features, lambda: model_experiments(model, data_dir), experiment_set_asimov,
                       data=data, observed=observed, asimov=asimov, seed=seed)
