"""The shared parts of the experiment specification schema (docs/experiments.md).

:class:`SpecReader` reads the typed fields of a specification dict (parsed TOML); every error
it raises is a ValueError of the form

    "<source>: field '<path>': <what is wrong>"

so that a user sees which file and which entry to fix. :func:`begin` checks the top level and reads
the [experiment] table that both kinds share (:func:`experiment_meta`), :func:`canonical` makes the canonical JSON form that
``Experiment.definition()`` returns.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
#: weights below this fraction of a bin's largest weight are dropped from the sparse matrix
WEIGHT_RTOL = 1e-12


class SpecReader:
    """Where a specification came from (for error messages), and typed readers of its fields."""

    def __init__(self, source: str):
        self.source = str(source)

    def err(self, field: str, msg: str) -> ValueError:
        """The ValueError "<source>: field '<field>': <msg>" (to raise)."""
        return ValueError(f"{self.source}: field '{field}': {msg}")

    def table(self, d: Any, field: str, allowed: tuple[str, ...]) -> dict:
        """``d`` itself, checked to be a table with no keys outside ``allowed``."""
        if not isinstance(d, dict):
            raise self.err(field or "<top level>", f"must be a table, got {type(d).__name__}")
        unknown = [k for k in d if k not in allowed]
        if unknown:
            raise self.err(f"{field + '.' if field else ''}{unknown[0]}",
                           f"unknown field (allowed here: {', '.join(allowed)})")
        return d

    def req(self, d: dict, key: str, field: str):
        """``d[key]``; an error naming ``field.key`` when it is missing."""
        if key not in d:
            raise self.err(f"{field}.{key}" if field else key, "missing required field")
        return d[key]

    def string(self, v: Any, field: str, choices: tuple[str, ...] | None = None, nonempty: bool = True) -> str:
        """A string (non-empty unless ``nonempty=False``; one of ``choices`` when given)."""
        if not isinstance(v, str):
            raise self.err(field, f"must be a string, got {type(v).__name__}")
        if nonempty and not v.strip():
            raise self.err(field, "must not be empty")
        if choices is not None and v not in choices:
            raise self.err(field, f"must be one of {', '.join(repr(c) for c in choices)}; got {v!r}")
        return v

    def boolean(self, v: Any, field: str) -> bool:
        """true or false."""
        if not isinstance(v, bool):
            raise self.err(field, f"must be true or false, got {v!r}")
        return v

    def number(self, v: Any, field: str, lo: float | None = None, lo_open: bool = False,
               hi: float | None = None, allow_inf: bool = False) -> float:
        """A number (not a boolean, not NaN; finite unless ``allow_inf``) within the bounds given."""
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(field, f"must be a number, got {type(v).__name__} {v!r}")
        x = float(v)
        if math.isnan(x):
            raise self.err(field, "is NaN (must be a finite number)")
        if math.isinf(x) and not allow_inf:
            raise self.err(field, "must be finite")
        if lo is not None and (x < lo or (lo_open and x == lo)):
            raise self.err(field, f"must be {'>' if lo_open else '>='} {lo:g}, got {x:g}")
        if hi is not None and x > hi:
            raise self.err(field, f"must be <= {hi:g}, got {x:g}")
        return x

    def integer(self, v: Any, field: str, lo: int) -> int:
        """An integer >= ``lo`` (not a boolean)."""
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(field, f"must be an integer, got {v!r}")
        if v < lo:
            raise self.err(field, f"must be >= {lo}, got {v}")
        return int(v)

    def array(self, v: Any, field: str, shape: tuple[int | None, ...], lo: float | None = None,
              lo_open: bool = False) -> np.ndarray:
        """A (nested) list of numbers with the given shape (None = any length >= 1)."""
        if not isinstance(v, (list, tuple)):
            raise self.err(field, f"must be an array, got {type(v).__name__}")
        try:
            a = np.array(v, dtype=float)
        except (TypeError, ValueError):
            raise self.err(field, "must be an array of numbers"
                           + (" with rows of equal length" if len(shape) > 1 else "")) from None
        if any(isinstance(x, bool) for x in np.array(v, dtype=object).ravel()):
            raise self.err(field, "must contain numbers, not booleans")
        if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)) or a.size == 0:
            want = " x ".join("n" if s is None else str(s) for s in shape)
            raise self.err(field, f"wrong shape: expected {want}, got {' x '.join(map(str, a.shape)) or 'empty'}")
        if np.any(np.isnan(a)):
            idx = tuple(int(i) for i in np.argwhere(np.isnan(a))[0])
            raise self.err(field, f"contains NaN at index {list(idx)}")
        if not np.all(np.isfinite(a)):
            idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise self.err(field, f"contains an infinite value at index {list(idx)}")
        if lo is not None:
            bad = (a < lo) | (a == lo) if lo_open else (a < lo)
            if np.any(bad):
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise self.err(field, f"entries must be {'>' if lo_open else '>='} {lo:g}; "
                                      f"index {list(idx)} is {a[idx]:g}")
        return a

    def strings(self, v: Any, field: str) -> list[str]:
        """An array of strings."""
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise self.err(field, "must be an array of strings")
        return list(v)

    def edges(self, v: Any, field: str) -> tuple[Any, np.ndarray]:
        """Bin edges: an explicit increasing list, or {min, max, step}. Returns (canonical, edges)."""
        if isinstance(v, dict):
            self.table(v, field, ("min", "max", "step"))
            lo = self.number(self.req(v, "min", field), f"{field}.min", lo=0.0, lo_open=True)
            hi = self.number(self.req(v, "max", field), f"{field}.max")
            step = self.number(self.req(v, "step", field), f"{field}.step", lo=0.0, lo_open=True)
            if hi <= lo:
                raise self.err(field, f"max ({hi:g}) must exceed min ({lo:g})")
            n = (hi - lo) / step
            k = int(round(n))
            if k < 1 or abs(n - k) > 1e-6:
                raise self.err(field, f"(max - min) / step = {n:g} is not a whole number of bins")
            e = np.round(lo + step * np.arange(k + 1), 12)
            e[-1] = hi
            return {"min": lo, "max": hi, "step": step}, e
        e = self.array(v, field, (None,), lo=0.0, lo_open=True)
        if e.size < 2:
            raise self.err(field, "needs at least two edges")
        if np.any(np.diff(e) <= 0):
            i = int(np.argmax(np.diff(e) <= 0))
            raise self.err(field, f"edges must increase strictly (edge {i + 1} = {e[i + 1]:g} after {e[i]:g})")
        return [float(x) for x in e], e


def begin(ctx: SpecReader, spec: dict, top: tuple[str, ...]) -> tuple[dict, dict]:
    """Start building a specification: check its top-level tables against ``top`` and read
    [experiment]. Returns (the canonical specification so far, the experiment metadata)."""
    ctx.table(spec, "", top)
    meta = experiment_meta(ctx, spec["experiment"])
    return {"schema": SCHEMA_VERSION, "experiment": meta}, meta


def experiment_meta(ctx: SpecReader, d: Any) -> dict:
    """The [experiment] table (name, description, kind, ...), canonical."""
    ctx.table(d, "experiment", ("name", "description", "kind", "approximate", "sources", "notes"))
    return {
        "name": ctx.string(ctx.req(d, "name", "experiment"), "experiment.name"),
        "description": ctx.string(d.get("description", ""), "experiment.description", nonempty=False),
        "kind": d["kind"],
        "approximate": ctx.boolean(d.get("approximate", False), "experiment.approximate"),
        "sources": ctx.strings(d.get("sources", []), "experiment.sources"),
        "notes": ctx.strings(d.get("notes", []), "experiment.notes"),
    }


def canonical(d: Any) -> Any:
    """Canonical JSON-able copy: floats stay floats, -inf/inf/nan are rejected by json.dumps
    only if present (the schema never stores them)."""
    return json.loads(json.dumps(d, allow_nan=False))
