"""fcmlc: sterile-neutrino global fits by simulation-based inference.

Light at import: torch and the learning code load only when `train` / `FCMLC` are used.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import _core
from .physics import Grid, averaged_survival_probability, sin2_2theta, survival_probability, ue4_from_sin2_2theta

if not _core.HAVE_OPENMP:  # pragma: no cover - depends on the build
    import warnings

    warnings.warn("fcmlc._core was built without OpenMP: kernels run on one thread", RuntimeWarning, stacklevel=2)

__all__ = [
    "Grid", "survival_probability", "averaged_survival_probability", "sin2_2theta", "ue4_from_sin2_2theta",
    "simulate", "experiments", "train", "FCMLC", "frequentist", "validation", "__version__",
]


def simulate(*args, **kwargs):
    """Generate a realization dataset; see :func:`fcmlc.simulation.simulate`."""
    from .simulation import simulate as _simulate

    return _simulate(*args, **kwargs)


def __getattr__(name):
    if name in ("train", "FCMLC"):
        from .models import pipeline

        return getattr(pipeline, name)
    if name in ("experiments", "frequentist", "validation", "dataset", "posterior", "regions", "plotting"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fcmlc' has no attribute {name!r}")
