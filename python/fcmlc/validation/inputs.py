"""What the validation takes in, checked: the FCMLC model, its experiments, the chi2 grid and
an optional Feldman-Cousins result.

The model may be an :class:`fcmlc.models.FCMLC`, a model directory, or any stand-in with
``experiments``, ``y_grid`` and ``posterior_density`` (e.g. an exact posterior in the tests).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .. import experiments as ex
from .._checks import same_name
from ..data_vectors import changed_definitions
from ..exceptions import IncompatibleError
from ..frequentist import FCResult, check_compatible, resolve_experiments
from ..physics import Grid
from .raster import EDGE_TOL

__all__ = ["load_model", "load_fc", "model_experiments", "y_ranges", "default_chi2_grid", "check_grid_inside",
           "check_fc_compatible", "chi2_grid"]


def load_model(model):
    """An FCMLC model: loaded (on the CPU) from a model directory, or checked to offer
    ``experiments``, ``y_grid`` and ``posterior_density``."""
    if isinstance(model, (str, os.PathLike)):
        from ..models import FCMLC  # torch: loaded only when a model is

        return FCMLC.load(model, device="cpu")
    for attr in ("experiments", "y_grid", "posterior_density"):
        if not hasattr(model, attr):
            raise ValueError(f"model must be an FCMLC model (or a model directory); {type(model).__name__} has no "
                             f"{attr!r}")
    return model


def load_fc(fc):
    """None, an :class:`fcmlc.frequentist.FCResult`, or one read from the path of an ``fcmlc fc`` file."""
    if fc is None:
        return None
    if isinstance(fc, (str, os.PathLike)):
        p = Path(fc)
        if not p.is_file():
            raise FileNotFoundError(f"Feldman-Cousins file {str(p)!r} not found")
        return FCResult.load(p)
    if not isinstance(fc, FCResult):
        raise ValueError(f"fc must be an FCResult or the path of an `fcmlc fc` HDF5 file, got {type(fc).__name__}")
    return fc


def check_definitions(model, exps, where: str = "") -> None:
    """IncompatibleError when one of ``exps`` is defined otherwise than the experiment the model
    was trained on (its recorded definition hash); ``where``: how they were loaded, for the message."""
    changed = changed_definitions(model, exps)
    if changed:
        raise IncompatibleError(f"the definition of {', '.join(changed)}{where} differs from the one the model was "
                                "trained on: pass the experiments as it was trained on them, loaded with the folder "
                                "of the data releases it was trained with (--data-dir, or experiments="
                                "[fcmlc.experiments.load(name, data_dir=...)])")


def scored_experiments(model, data_dir=None) -> list:
    """The model's experiments loaded with ``data_dir`` (the folder of the official data releases),
    refused (:func:`check_definitions`) when a definition differs from the one the model was
    trained on: trials of another model would check it against the wrong answer."""
    exps = [ex.load(name, data_dir=data_dir) for name in model.experiments]
    where = f" loaded with data_dir {str(data_dir)!r}" if data_dir is not None else " loaded without a data directory"
    check_definitions(model, exps, where)
    return exps


def model_experiments(model, experiments):
    """Experiment objects (an ExperimentSet) in the model's feature order.

    IncompatibleError when an experiment's definition differs from the one the model was trained
    on: trials simulated from another definition would check the model against the wrong answer
    (a model trained on data releases needs the experiments loaded with their ``data_dir``)."""
    exps = resolve_experiments(model.experiments if experiments is None else experiments)
    names = [e.name for e in exps]
    if len(names) != len(model.experiments) or not all(map(same_name, names, model.experiments)):
        raise IncompatibleError(f"experiments {names} differ from the model's {list(model.experiments)} (same names, "
                                "same order needed)")
    check_definitions(model, exps)
    eset = ex.combine(exps)
    n_feat = getattr(model, "n_features", None)
    if n_feat is not None and eset.n_bins != int(n_feat):
        raise IncompatibleError(f"the experiments {names} have {eset.n_bins} bins but the model expects {n_feat} "
                                "features")
    return eset


def y_ranges(model):
    """((|Ue4| min, max), (dm2 min, max)) of the model's posterior grid."""
    yg = model.y_grid
    return tuple(map(float, yg.ue4_range)), tuple(map(float, yg.dm2_range))


def default_chi2_grid(model) -> Grid:
    """The model's training grid (from its dataset record), else n + 1 points per axis over its y grid."""
    d = (getattr(model, "info", None) or {}).get("dataset") or {}
    if d.get("grid"):
        return Grid.from_dict(d["grid"])
    (u0, u1), (d0, d1) = y_ranges(model)
    return Grid((u0, u1), (d0, d1), (model.y_grid.n_ue4 + 1, model.y_grid.n_dm2 + 1))


def check_grid_inside(grid: Grid, urange, drange):
    """The chi2 grid's points must lie inside the posterior grid's cells (so a truth on a grid
    point has a posterior cell, and both methods see the same parameter space)."""
    lu, ld = np.log10(grid.ue4_range), np.log10(grid.dm2_range)
    pu, pd = np.log10(urange), np.log10(drange)
    tol = EDGE_TOL
    if lu[0] < pu[0] - tol or lu[1] > pu[1] + tol or ld[0] < pd[0] - tol or ld[1] > pd[1] + tol:
        raise IncompatibleError(f"the chi2 grid spans |Ue4| {grid.ue4_range}, dm2 {grid.dm2_range} eV^2, outside the "
                                f"model's posterior grid (|Ue4| {urange}, dm2 {drange}): use a grid over the model's "
                                "ranges")


def check_fc_compatible(fc: FCResult, eset, levels=None, grid: Grid | None = None) -> Grid:
    """The one check that a Feldman-Cousins result fits a validation: computed for the same
    experiments (names in order, and definitions where both record a hash), complete, holding
    every level in ``levels`` (None: levels not needed) and on ``grid`` when one is given.
    Returns the FC result's grid (the chi2 grid of the validation)."""
    check_compatible(fc, eset.experiments, grid)  # experiments, definitions, grid: the one rule
    if not fc.complete:
        raise ValueError(f"the Feldman-Cousins result is incomplete ({int(fc.done.sum())}/{fc.done.size} grid "
                         "points): finish it by rerunning the same `fcmlc fc` command")
    if levels is not None:
        missing = [L for L in levels if not any(abs(L - f) < 1e-9 for f in fc.levels)]
        if missing:
            raise ValueError(f"levels {missing} were not computed: they are not in the Feldman-Cousins result (it "
                             f"has {list(fc.levels)}); choose levels among those")
    return fc.grid


def chi2_grid(model, eset, fc=None, grid: Grid | None = None, fc_levels=None) -> Grid:
    """The chi2 grid of a validation: the FC result's (checked by :func:`check_fc_compatible`,
    with ``fc_levels`` the levels it must hold), else ``grid``, else the model's default
    (:func:`default_chi2_grid`); its points must lie inside the model's posterior grid."""
    if fc is not None:
        grid = check_fc_compatible(fc, eset, fc_levels, grid)
    elif grid is None:
        grid = default_chi2_grid(model)
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be an fcmlc Grid, got {type(grid).__name__}")
    check_grid_inside(grid, *y_ranges(model))
    return grid
