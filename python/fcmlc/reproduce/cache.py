"""The step cache of `fcmlc reproduce`: each finished step leaves a record
``<out>/steps/<step>.json`` (its settings, their digest, wall time, outputs and results); a later
run reuses the step when the record's settings are identical and its outputs exist, recomputes
it when the record is missing or unreadable, and refuses (ValueError naming the differences)
when the record holds other settings."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
import time
from pathlib import Path

from .._io import atomic_write_text, jsonable


def digest(obj) -> str:
    """A short SHA-256 of ``obj`` as canonical JSON: what later steps record of a step's settings."""
    return hashlib.sha256(json.dumps(jsonable(obj), sort_keys=True).encode()).hexdigest()[:24]


def banner(msg: str, progress: bool):
    """A step banner on stderr (when ``progress``)."""
    if progress:
        print(f"\n=== {msg}", file=sys.stderr, flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def settings_diff(have: dict, want: dict, prefix="") -> list:
    """'key: recorded ..., now ...' for every (nested) key whose value differs."""
    out = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k, "<missing>"), want.get(k, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += settings_diff(a, b, prefix + k + ".")
        elif a != b:
            sa, sb = json.dumps(a)[:60], json.dumps(b)[:60]
            out.append(f"{prefix}{k}: recorded {sa}, now {sb}")
    return out


def recorded_seconds(out: Path, names) -> float:
    """Total wall time recorded in ``out/steps`` for the steps ``names`` (missing records count 0)."""
    tot = 0.0
    for s in names:
        f = Path(out) / "steps" / f"{s}.json"
        if f.is_file():
            tot += float(json.loads(f.read_text())["seconds"])
    return tot


class StepCache:
    """Bookkeeping of step records in ``<out>/steps``: skip, refuse or run."""

    def __init__(self, out: Path, progress: bool):
        self.dir = out / "steps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.progress = progress
        #: step name -> record of this run's finished (or reused) steps
        self.records = {}

    def path(self, name):
        return self.dir / f"{name}.json"

    def check(self, name: str, settings: dict, outputs) -> dict | None:
        """The finished record when it can be reused; None when the step must run; ValueError
        when a record exists with different settings."""
        p = self.path(name)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            return None  # unreadable record: recompute
        want = jsonable(settings)
        have = rec.get("settings")
        if have != want:
            diffs = settings_diff(have or {}, want)
            raise ValueError(
                f"{self.out}: step '{name}' was computed with different settings ({'; '.join(diffs[:6])}"
                f"{'; ...' if len(diffs) > 6 else ''}). fcmlc reproduce never mixes results of different settings: "
                f"use another output directory (-o), or delete {self.out} to recompute everything")
        if not all((self.out / o).exists() for o in outputs):
            return None
        return rec

    def run(self, name: str, title: str, index: int, total: int, settings: dict, outputs, fn) -> dict:
        """The record of step ``name``: reused (see :meth:`check`) or made by running ``fn()``
        (which returns the step's results) and written atomically. ``title``, ``index`` and
        ``total`` are for the banner."""
        rec = self.check(name, settings, outputs)
        if rec is not None:
            banner(f"[{index}/{total}] {title}: done before ({rec['seconds']:.1f} s), reused", self.progress)
            self.records[name] = rec
            return rec
        banner(f"[{index}/{total}] {title}", self.progress)
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        rec = {"step": name, "settings": jsonable(settings), "digest": digest(settings), "seconds": seconds,
               "finished": _now(), "outputs": list(outputs), "result": jsonable(result)}
        atomic_write_text(self.path(name), json.dumps(rec, indent=2))
        if self.progress:
            print(f"    {name}: {seconds:.1f} s", file=sys.stderr, flush=True)
        self.records[name] = rec
        return rec
