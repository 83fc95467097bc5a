"""Checkpoints of a training run, so that an interrupted :func:`fcmlc.models.train` resumes.

While the model directory ``OUT`` is being trained, ``OUT.partial/checkpoint.pt`` holds the run
so far, rewritten all or nothing after every epoch: the settings of the run (training
configuration, seed, data set, experiments, device, torch version and thread count), the stage
(``regressor``, ``flow`` or ``transition``), the finished networks (an ensemble's finished
members too), and the state of the loop in progress (:mod:`fcmlc.models.training`: weights, optimizer, learning-rate schedule,
early-stopping record, random generators, history, next epoch). The same ``train`` call (the
same ``fcmlc train`` command) finds it and continues, and ends with the same weights as an
uninterrupted run. A checkpoint of other settings is refused with the differences named;
``restart=True`` (``--restart``) discards it. The finished model is assembled in
``OUT.partial/model`` and moved onto ``OUT`` (:func:`fcmlc.models.directory.publish_model_directory`);
then the checkpoint and ``OUT.partial`` are removed.

The file is read with ``torch.load(weights_only=True)``: tensors and plain containers, no code.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
from pathlib import Path

import torch

from .._io import atomic_path, jsonable
from ..exceptions import FormatError, IncompatibleError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "TrainingCheckpoint", "checkpoint_dir"]

CHECKPOINT_FORMAT = "fcmlc-train-checkpoint"
CHECKPOINT_VERSION = 1
_DISCARD = "pass restart=True (fcmlc train --restart) to discard it and start over"


def checkpoint_dir(out) -> Path:
    """The partial area of the model directory ``out``: the sibling ``<out>.partial``."""
    d = Path(os.path.abspath(out))
    return d.with_name(d.name + ".partial")


def setting_differences(old, new, prefix: str = "") -> list[str]:
    """'key: checkpoint has A, this run B' for every (nested) setting that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(f"{key}: checkpoint has {old.get(k, '(none)')!r}, this run {new.get(k, '(none)')!r}")
            else:
                out += setting_differences(old[k], new[k], key)
        return out
    return [] if old == new else [f"{prefix}: checkpoint has {old!r}, this run {new!r}"]


def describe(state: dict) -> str:
    """How far the checkpointed run got, in words. The FCMLC pipeline's stages are ``regressor``,
    ``flow`` and ``transition``; another estimator's stage names its network (e.g. ``npe flow``)."""
    stage, loop = state.get("stage"), state.get("loop")
    done = 0 if loop is None else int(loop["epoch"])
    epochs = f"{done} epoch{'s' * (done != 1)} done"
    if stage == "regressor" and state.get("ensemble"):
        ens = state["ensemble"]
        k, K = len(ens["done"]), int(ens["members"])
        return f"regressor: {k} of {K} ensemble members done, member {k}: {epochs}"
    if stage == "regressor":
        return f"regressor: {epochs}"
    if stage == "flow":
        return f"regressor done, flow: {epochs}"
    if stage == "transition":
        return "regressor and flow done, transition matrix pending"
    return f"{stage}: {epochs}"


class TrainingCheckpoint:
    """The checkpoint of training the model directory ``out`` with ``settings`` (a JSON-able dict)."""

    def __init__(self, out, settings: dict):
        self.dir = checkpoint_dir(out)
        self.path = self.dir / "checkpoint.pt"
        self.settings = jsonable(settings)
        #: where the last checkpoint written or read stands (None: nothing kept yet)
        self.status: str | None = None

    def load(self, restart: bool = False) -> dict | None:
        """The checkpoint of an interrupted run of these settings, or None when there is none
        (or ``restart``: it is deleted). FormatError for an unreadable file, IncompatibleError
        for one of other settings (both name the file and how to proceed)."""
        if not self.path.exists():
            return None
        if restart:
            self.path.unlink()
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
            raise FormatError(f"{self.path} is not a readable training checkpoint ({type(e).__name__}: {e}); "
                              f"{_DISCARD}") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise FormatError(f"{self.path} is not an fcmlc training checkpoint; {_DISCARD}")
        if state.get("version") != CHECKPOINT_VERSION:
            raise FormatError(f"{self.path}: checkpoint version {state.get('version')!r} cannot be resumed by this "
                              f"fcmlc (version {CHECKPOINT_VERSION}); {_DISCARD}")
        diffs = setting_differences(state.get("settings"), self.settings)
        if diffs:
            raise IncompatibleError(f"{self.path} holds an interrupted training run with other settings "
                                    f"({'; '.join(diffs)}): rerun with that run's settings to resume it, or "
                                    f"{_DISCARD}")
        self.status = describe(state)
        return state

    def save(self, state: dict) -> None:
        """Write ``state`` (stage, networks, loop state) with the settings, all or nothing."""
        self.dir.mkdir(parents=True, exist_ok=True)
        full = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "settings": self.settings,
                "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **state}
        with atomic_path(self.path) as tmp:
            torch.save(full, tmp)
        self.status = describe(full)

    def interrupted_message(self) -> str:
        """What an interruption kept and how to resume, in the one line the CLI prints."""
        if self.status is None:
            return ("interrupted before the first epoch ended: no checkpoint was written (a rerun starts from "
                    "the beginning)")
        return (f"interrupted: checkpoint kept in {self.path} ({self.status}); rerun the same command to resume "
                f"(--restart, or restart=True, starts over)")

    @property
    def staging(self) -> Path:
        """Where the finished model directory is assembled before it is moved into place."""
        return self.dir / "model"

    def clear(self) -> None:
        """Remove the checkpoint and what this run put in the partial area (and the area, if empty)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for d in (self.staging, self.dir / "replaced"):
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()
        self.status = None
