"""Experiment model specifications (the TOML schema): the entry point :func:`build`.

A specification is a nested dict (parsed TOML). :func:`build` validates it, fills defaults,
and returns an :class:`~fcmlc.experiments.core.Experiment` whose ``definition()`` is the
canonical specification. Every validation error is a ValueError of the form

    "<source>: field '<path>': <what is wrong>"

so that a user sees which file and which entry to fix. The schema is documented in
docs/experiments.md; two kinds exist:

``kind = "covariance"`` (reactor spectra)
    [experiment] [reactor] [observable] [response] [[detectors]] ([[detectors.segments]])
    [events] [systematics] [covariance] [null_prediction] [observed]
``kind = "pulls"`` (radioactive sources on gallium)
    [experiment] [neutrino_sources.<name>] [target] [[measurements]] [[pulls]]

The shared field readers are in :mod:`fcmlc.experiments.schema`, the two kinds are built by
:mod:`fcmlc.experiments.reactor_spec` and :mod:`fcmlc.experiments.source_spec`.
"""
from __future__ import annotations

from .core import Experiment
from .reactor_spec import OBSERVABLES, SHAPE_ONLY, SYSTEMATICS, build_reactor
from .schema import SCHEMA_VERSION, WEIGHT_RTOL, SpecReader
from .source_spec import build_source

__all__ = ["build", "SCHEMA_VERSION", "OBSERVABLES", "SHAPE_ONLY", "SYSTEMATICS", "WEIGHT_RTOL"]


def build(spec: dict, source: str = "<dict>") -> Experiment:
    """Validate a specification dict and build the experiment."""
    ctx = SpecReader(source)
    if not isinstance(spec, dict):
        raise ctx.err("<top level>", "an experiment specification must be a table")
    exp = ctx.req(spec, "experiment", "")
    if not isinstance(exp, dict):
        raise ctx.err("experiment", "must be a table")
    kind = ctx.string(ctx.req(exp, "kind", "experiment"), "experiment.kind", ("covariance", "pulls"))
    if "schema" in spec:
        sv = ctx.integer(spec["schema"], "schema", 1)
        if sv > SCHEMA_VERSION:
            raise ctx.err("schema", f"version {sv} is newer than this fcmlc understands ({SCHEMA_VERSION})")
    if kind == "covariance":
        return build_reactor(ctx, spec)
    return build_source(ctx, spec)
