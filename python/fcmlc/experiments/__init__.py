"""Experiment models of electron-(anti)neutrino disappearance: the built-in catalogue, user
models from TOML files, and loaders for official data releases.

>>> from fcmlc import experiments
>>> experiments.available()
['STEREO', 'PROSPECT', 'DANSS', 'NEOS', 'GALLIUM', 'BEST']
>>> stereo = experiments.load("stereo")
>>> mu = stereo.expectation(0.1, 1.3)          # (126,) expected events per bin
>>> both = experiments.combine([stereo, experiments.load("BEST")])

Each model's expectation is N0 - sin^2(2 theta) D(dm2) with D computed exactly (bin-averaged
over baseline and energy) by the C++ kernel; see :mod:`fcmlc.experiments.core` and
docs/experiments.md for the TOML schema and the physics choices behind each built-in model.
"""
from __future__ import annotations

import functools
from importlib import resources
from os import PathLike
from pathlib import Path

from .core import Experiment, ExperimentSet, LinearPart, check_covariance, stream_id_of
from .loaders import load_danss_ratio, load_neos_ratio, load_prospect_release
from .spec import SCHEMA_VERSION, build
from .toml_io import TOMLDecodeError, loads as toml_loads

__all__ = [
    "Experiment", "ExperimentSet", "available", "load", "from_toml", "from_dict", "combine",
    "load_prospect_release", "load_danss_ratio", "load_neos_ratio", "builtin_toml", "SCHEMA_VERSION",
    "stream_id_of", "check_covariance", "LinearPart",
]

_BUILTIN = ("STEREO", "PROSPECT", "DANSS", "NEOS", "GALLIUM", "BEST")

#: Official releases that ``load(name, data_dir=...)`` uses when present: sub-folder, loader.
_RELEASES = {
    "PROSPECT": ("prospect-2020-oscillation", load_prospect_release),
    "DANSS": ("danss-2018", load_danss_ratio),
    "NEOS": ("neos-2017", load_neos_ratio),
}


def available() -> list[str]:
    """Names of the built-in experiment models, in the catalogue order."""
    return list(_BUILTIN)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"experiment name must be a string, got {type(name).__name__}")
    key = name.strip().upper()
    if key not in _BUILTIN:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(_BUILTIN)} "
                         "(or a TOML model file via from_toml)")
    return key


def builtin_toml(name: str) -> str:
    """The packaged TOML model file of a built-in experiment (a template for user models)."""
    key = _canonical(name)
    return resources.files(__name__).joinpath("data", f"{key}.toml").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _builtin(key: str) -> Experiment:
    text = builtin_toml(key)
    exp = _from_text(text, f"built-in model {key}.toml")
    if exp.name != key:
        raise ValueError(f"built-in model {key}.toml: field 'experiment.name': is {exp.name!r}, expected {key!r}")
    return exp


def load(name: str | PathLike, data_dir: str | PathLike | None = None) -> Experiment:
    """Load an experiment by name (case-insensitive).

    Without `data_dir`: the built-in model shipped with the package.

    With `data_dir` (a folder such as ``../shared/data``):
      1. ``<data_dir>/<NAME>.toml`` (or lower-case name) if present: a user model file;
      2. for experiments with an official data release (PROSPECT, DANSS, NEOS): the release
         in ``<data_dir>/<release folder>`` (``prospect-2020-oscillation``, ``danss-2018``,
         ``neos-2017``), or in `data_dir` itself if it is that release; FileNotFoundError if
         neither holds it;
      3. otherwise (STEREO, GALLIUM, BEST) the built-in model.
    A path to a TOML model file (``*.toml``, as the CLI's ``--experiments`` takes) is read with
    :func:`from_toml`. Experiments are immutable, so repeated loads of a built-in share one object.
    """
    if isinstance(name, (str, PathLike)) and str(name).lower().endswith(".toml"):
        if not Path(name).is_file():
            raise FileNotFoundError(f"experiment model file {str(name)!r} not found")
        return from_toml(name)
    key = _canonical(name)
    if data_dir is None:
        return _builtin(key)
    d = Path(data_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"data_dir {str(d)!r} is not a directory")
    for cand in (d / f"{key}.toml", d / f"{key.lower()}.toml"):
        if cand.is_file():
            return from_toml(cand)
    if key in _RELEASES:
        sub, loader = _RELEASES[key]
        if (d / sub).is_dir():
            return loader(d / sub)
        if d.name == sub:
            return loader(d)
        raise FileNotFoundError(f"{key}: no data release found: expected the folder {str(d / sub)!r} "
                                f"(or {key}.toml in {str(d)!r})")
    return _builtin(key)


def _from_text(text: str, source: str) -> Experiment:
    try:
        spec = toml_loads(text)
    except TOMLDecodeError as e:
        raise ValueError(f"{source}: not valid TOML: {e}") from None
    return build(spec, source)


def from_toml(path: str | PathLike) -> Experiment:
    """Build an experiment from a user TOML model file (schema: docs/experiments.md).

    Raises FileNotFoundError if the file does not exist, and ValueError naming the file and
    the offending field for any malformed content."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"experiment model file {str(p)!r} not found")
    return _from_text(p.read_text(encoding="utf-8"), str(p))


def from_dict(spec: dict, source: str = "<dict>") -> Experiment:
    """Build an experiment from a specification dict (same schema as the TOML files);
    ``from_dict(exp.definition())`` rebuilds `exp`."""
    return build(spec, source)


def combine(experiments) -> ExperimentSet:
    """Combine experiments (objects or names) into one data vector, in the given order."""
    items = [load(e) if isinstance(e, str) else e for e in experiments]
    return ExperimentSet(items)
