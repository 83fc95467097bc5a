"""TOML for experiment definitions: the one reader (:func:`loads`) and a minimal writer (:func:`dumps`).

Reading uses the standard library's ``tomllib`` (Python >= 3.11) or, on Python 3.10, the
``tomli`` package it came from (same API; a dependency there, see pyproject.toml). Every TOML
reader of fcmlc goes through :func:`loads` and :data:`TOMLDecodeError` here.

The writer writes the subset the experiment schema uses: tables, arrays of tables, strings, booleans,
integers, floats (including inf and nan), and (nested) arrays of those. Floats are written with
``repr`` so they read back bit-identical.
"""
from __future__ import annotations

import json
import math
import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

#: The error :func:`loads` raises for text that is not valid TOML.
TOMLDecodeError = tomllib.TOMLDecodeError

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k, ensure_ascii=False)


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table(v) -> bool:
    return isinstance(v, dict)


def _is_table_array(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, dict) for x in v)


def _value(v, indent: str = "") -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, (list, tuple)) for x in v):
            inner = indent + "  "
            return "[\n" + "".join(f"{inner}{_value(x, inner)},\n" for x in v) + indent + "]"
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return _scalar(v)


def _inline_ok(d: dict) -> bool:
    """Small tables of scalars (or flat lists of scalars) are written inline."""
    if len(d) > 8:
        return False
    for x in d.values():
        if isinstance(x, dict):
            return False
        if isinstance(x, (list, tuple)) and (len(x) > 8 or any(isinstance(y, (list, tuple, dict)) for y in x)):
            return False
    return True


def _emit(lines: list[str], path: list[str], d: dict, array_item: bool = False) -> None:
    later_tables, later_arrays = [], []
    body = []
    for k, v in d.items():
        if _is_table(v) and (not path or not _inline_ok(v)):
            later_tables.append((k, v))
        elif _is_table_array(v):
            later_arrays.append((k, v))
        else:
            body.append(f"{_key(k)} = {_value(v)}")
    if path:
        name = ".".join(_key(p) for p in path)
        lines.append("")
        lines.append(f"[[{name}]]" if array_item else f"[{name}]")
    lines.extend(body)
    for k, v in later_tables:
        _emit(lines, path + [k], v)
    for k, items in later_arrays:
        for item in items:
            _emit(lines, path + [k], item, array_item=True)


def loads(text: str) -> dict:
    """Parse TOML text into nested dicts (``tomllib.loads``); raises :data:`TOMLDecodeError`."""
    return tomllib.loads(text)


def dumps(d: dict, header: str | None = None) -> str:
    """Serialise a nested dict to TOML text."""
    lines: list[str] = []
    if header:
        lines.extend(f"# {h}" for h in header.splitlines())
    _emit(lines, [], d)
    return "\n".join(lines).lstrip("\n") + "\n"
