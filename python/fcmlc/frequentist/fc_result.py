"""Feldman-Cousins results and their HDF5 file: :class:`FCResult` (critical values on the
grid, regions, load/save), the settings stored with every result, the file as a resumable
output (:class:`FCOutput`, for :mod:`fcmlc._resumable`) and :func:`check_compatible`, the one
rule for using an FC result with a chi2 model.

File schema (format ``fcmlc-feldman-cousins``, version 1)::

    /            attrs: format, format_version, fcmlc_version, grid (JSON), n_toys, seed (text),
                        levels (JSON), experiments (JSON), definition_hashes (JSON),
                        model_digest, store_toys, toy_source, quantile, complete
    /critical    (n_levels, n_points) float64, NaN where not computed
    /done        (n_points,) uint8
    /toys        (n_points, n_toys) float32, only with store_toys
    /crc32       (n_points,) uint32: CRC-32 of each point's critical values (and toys), as written

Loading checks every computed point (finite critical values >= 0 matching their CRC-32;
:class:`fcmlc.exceptions.CorruptFileError` naming the point otherwise); a file that cannot be
read as HDF5 (truncated, damaged) is a FormatError naming it.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from .._checks import same_name
from .._io import atomic_path, h5_writer
from .._resumable import ChunkedOutput
from ..exceptions import CorruptFileError, FormatError, IncompatibleError
from ..physics import Grid
from .wilks import wilks_threshold

#: HDF5 format tag of Feldman-Cousins result files.
FC_FORMAT = "fcmlc-feldman-cousins"
FC_FORMAT_VERSION = 1
#: The quantile convention, stored with every FC result.
QUANTILE_CONVENTION = ("critical value at level L from n toys = the ceil(L n)-th smallest Delta-chi2 "
                       "(1-based order statistic, the smallest t with empirical CDF(t) >= L); "
                       "a grid point is in the region when Delta-chi2(data) <= critical value")
#: Attributes stored as JSON text.
_JSON_ATTRS = ("grid", "levels", "experiments", "definition_hashes")


def fc_settings(grid, n_toys, seed, levels, names, hashes, digest, store_toys, version=__version__,
                toy_source="simulate") -> dict:
    """The settings that determine an FC result, as stored in its file's attributes (a file is
    resumed only by a run with the same settings)."""
    return {
        "format": FC_FORMAT,
        "format_version": FC_FORMAT_VERSION,
        "fcmlc_version": version,
        "grid": grid.to_dict(),
        "n_toys": int(n_toys),
        "seed": int(seed),
        "levels": [float(L) for L in levels],
        "experiments": list(names),
        "definition_hashes": list(hashes),
        "model_digest": digest,
        "store_toys": bool(store_toys),
        "toy_source": str(toy_source),
        "quantile": QUANTILE_CONVENTION,
    }


def read_attrs(f) -> dict:
    """The attributes of an FC file as Python values (JSON decoded, seed as int)."""
    a = {}
    for k, v in f.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        if k in _JSON_ATTRS:
            v = json.loads(v)
        elif k == "seed":
            v = int(v)
        elif isinstance(v, np.generic):
            v = v.item()
        a[k] = v
    return a


def _format_problem(f) -> str | None:
    fmt = f.attrs.get("format")
    return None if fmt == FC_FORMAT else f"format attribute {fmt!r}, expected {FC_FORMAT!r}"


class FCOutput(ChunkedOutput):
    """An FC file being computed, as a resumable output: tasks are chunks of at most
    `chunk_points` of the `wanted` grid point indices not yet done; a task's result is
    (critical values (n_levels, n), toys (n, n_toys) float32 or None)."""

    kind = "an fcmlc Feldman-Cousins file"

    def __init__(self, settings: dict, n_points: int, wanted=None, chunk_points: int = 1):
        self.settings = settings
        self.n_points = int(n_points)
        self.wanted = np.arange(self.n_points, dtype=np.int64) if wanted is None else np.asarray(wanted)
        self.chunk_points = int(chunk_points)
        self.elapsed = 0.0  # compute seconds of this run; not stored (a resumed file equals an uninterrupted one)

    def inspect(self, f) -> list[str]:
        problem = _format_problem(f)
        if problem:
            raise FormatError(problem)
        a = read_attrs(f)
        return [f"{k}: file has {a.get(k)!r}, requested {v!r}" for k, v in self.settings.items()
                if k != "quantile" and a.get(k) != v]

    def layout(self, f) -> None:
        s = self.settings
        for k, v in s.items():
            f.attrs[k] = json.dumps(v) if k in _JSON_ATTRS else (str(v) if k == "seed" else v)
        f.attrs["complete"] = False
        nl = len(s["levels"])
        # contiguous, allocated at creation: writing a chunk never changes HDF5 metadata, so a
        # run killed mid-write leaves a readable file whose unfinished chunk is just not done
        f.create_dataset("critical", shape=(nl, self.n_points), dtype="f8", fillvalue=np.nan)
        f["critical"][...] = np.nan
        f.create_dataset("done", shape=(self.n_points,), dtype="u1", fillvalue=0)
        f["done"][...] = 0
        if s["store_toys"]:
            f.create_dataset("toys", shape=(self.n_points, s["n_toys"]), dtype="f4", fillvalue=np.nan)
            f["toys"][...] = np.nan
        f.create_dataset("crc32", shape=(self.n_points,), dtype="u4", fillvalue=0)
        f["crc32"][...] = 0

    def nbytes(self) -> int:
        s = self.settings
        per_point = 8 * len(s["levels"]) + 1 + 4 + (4 * s["n_toys"] if s["store_toys"] else 0)
        return int(self.n_points * per_point + (1 << 20))

    def pending(self, f) -> list:
        done = f["done"][...]
        return point_chunks(self.wanted[done[self.wanted] == 0], self.chunk_points)

    def write(self, f, pid, result, seconds) -> None:
        crit, toys = result
        sl = slice(int(pid[0]), int(pid[-1]) + 1) if pid[-1] - pid[0] + 1 == pid.size else np.asarray(pid)
        f["critical"][:, sl] = crit
        if toys is not None:
            f["toys"][sl] = toys
        if "crc32" in f:  # (a file begun by an fcmlc without the checksums is finished without them)
            f["crc32"][sl] = point_crcs(crit, toys)
        f.flush()
        f["done"][sl] = 1
        f.flush()
        self.elapsed += seconds

    def written(self, f) -> str:
        return f"{int(f['done'][...].sum())}/{self.n_points} grid points"

    def finished(self, f) -> bool:
        return bool(np.all(f["done"][...] == 1))


def point_crcs(crit, toys=None) -> np.ndarray:
    """CRC-32 of each point's critical values (columns of `crit`, float64) and toys (rows of
    `toys`, float32), as stored in an FC file."""
    crit = np.asarray(crit, dtype=np.float64)
    out = np.empty(crit.shape[1], dtype=np.uint32)
    for j in range(crit.shape[1]):
        c = zlib.crc32(np.ascontiguousarray(crit[:, j]))
        out[j] = c if toys is None else zlib.crc32(np.ascontiguousarray(toys[j], dtype=np.float32), c)
    return out


def _check_points(path, crit, done, toys, crc) -> None:
    """CorruptFileError naming the first computed point whose critical values are not finite
    and >= 0, or do not match their CRC-32 (`crc` None: a file written before the checksums)."""
    d = done.astype(bool)
    with np.errstate(invalid="ignore"):
        bad = d & ~np.all(np.isfinite(crit) & (crit >= 0), axis=0)
    redo = "the file is damaged or was changed after it was written: compute it again (fcmlc fc ... --overwrite)"
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        raise CorruptFileError(f"{path}: grid point {p} has critical values {crit[:, p].tolist()} (a computed point "
                               f"must have finite values >= 0); {redo}")
    if crc is not None:
        idx = np.flatnonzero(d)
        ok = point_crcs(crit[:, idx], None if toys is None else toys[idx]) == crc[idx]
        if not ok.all():
            raise CorruptFileError(f"{path}: the results at grid point {int(idx[np.flatnonzero(~ok)[0]])} do not "
                                   f"match the checksum written with them; {redo}")


def point_chunks(points, chunk_points: int) -> list:
    """Grid point indices cut into consecutive chunks of at most `chunk_points`."""
    return [points[i:i + chunk_points] for i in range(0, points.size, chunk_points)]


@dataclass
class FCResult:
    """Feldman-Cousins critical values on the grid.

    ``critical`` has shape (n_levels, n_dm2, n_ue4): at grid point p and level L, the
    Delta-chi2 below which a fraction >= L of the toys generated at p fall (see
    :data:`QUANTILE_CONVENTION`); NaN where not computed (``done`` is False)."""

    critical: np.ndarray
    levels: tuple
    grid: Grid
    n_toys: int
    seed: int
    experiments: tuple
    definition_hashes: tuple
    model_digest: str
    done: np.ndarray
    fcmlc_version: str = __version__
    path: Path | None = None
    toys: np.ndarray | None = None  # (n_points, n_toys) float32 when stored
    meta: dict = field(default_factory=dict)
    #: where the toys come from: "simulate" (the realizations of ``simulate``, backend 'cpu') or
    #: "torch-<device type>" (statistically equivalent draws of the torch backend)
    toy_source: str = "simulate"

    @property
    def complete(self) -> bool:
        return bool(np.all(self.done))

    def _level_index(self, level: float) -> int:
        for i, L in enumerate(self.levels):
            if abs(L - float(level)) < 1e-12:
                return i
        raise ValueError(f"level {level} was not computed; available: {list(self.levels)}")

    def critical_value(self, level: float) -> np.ndarray:
        """(n_dm2, n_ue4) critical-value map at `level`."""
        return self.critical[self._level_index(level)]

    def region(self, delta_chi2, level: float) -> np.ndarray:
        """Feldman-Cousins confidence region: bool mask, True where the data's Delta-chi2 (map
        (n_dm2, n_ue4), relative to the data's grid minimum) <= the critical value. Points not
        computed are outside."""
        d = np.asarray(delta_chi2, dtype=float)
        if d.shape != self.critical.shape[1:]:
            raise ValueError(f"delta_chi2 must have the grid's map shape {self.critical.shape[1:]}, got {d.shape}")
        c = self.critical_value(level)
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(c), False, d <= c)

    def critical_summary(self) -> dict:
        """{level: {"median", "min", "max": of the critical values over the computed grid points,
        "wilks_2dof": the Wilks threshold for comparison}} (what `fcmlc fc` prints); {} when no
        point is computed."""
        if not np.any(self.done):
            return {}
        out = {}
        for L in self.levels:
            v = self.critical_value(L)[self.done]
            out[L] = {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
                      "wilks_2dof": wilks_threshold(L, 2)}
        return out

    def settings(self) -> dict:
        """The settings stored with this result (:func:`fc_settings`)."""
        return fc_settings(self.grid, self.n_toys, self.seed, self.levels, self.experiments, self.definition_hashes,
                           self.model_digest, self.toys is not None, self.fcmlc_version, self.toy_source)

    @classmethod
    def load(cls, path) -> "FCResult":
        """Read an FC file (checked: :func:`_check_points`); FileNotFoundError, FormatError (not
        readable, truncated, not an FC file) or CorruptFileError name the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(2, f"Feldman-Cousins file {path} does not exist", str(path))
        try:
            with h5py.File(path, "r") as f:
                problem = _format_problem(f)
                if problem:
                    raise FormatError(f"{path} is not an fcmlc Feldman-Cousins file ({problem})")
                a = read_attrs(f)
                g = Grid.from_dict(a["grid"])
                crit = f["critical"][...]
                done = f["done"][...]
                toys = f["toys"][...] if "toys" in f else None
                crc = f["crc32"][...] if "crc32" in f else None
        except OSError as e:
            raise FormatError(f"{path} cannot be read as HDF5 (truncated, damaged, or being written by a running "
                              f"`fcmlc fc`): {' '.join(str(e).split())}") from None
        except (KeyError, ValueError, TypeError) as e:
            if isinstance(e, FormatError):
                raise
            raise FormatError(f"{path} is not a complete fcmlc Feldman-Cousins file ({type(e).__name__}: "
                              f"{' '.join(str(e).split())})") from None
        _check_points(path, crit, done, toys, crc)
        return cls(crit.reshape(len(a["levels"]), g.n_dm2, g.n_ue4), tuple(a["levels"]), g, a["n_toys"], a["seed"],
                   tuple(a["experiments"]), tuple(a["definition_hashes"]), a["model_digest"],
                   done.astype(bool).reshape(g.n_dm2, g.n_ue4), a["fcmlc_version"], path, toys,
                   toy_source=a.get("toy_source", "simulate"))

    def save(self, path) -> Path:
        """Write to a new HDF5 file (same schema as :func:`feldman_cousins` writes), replacing
        `path` only once complete."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, h5_writer(tmp, "w", name=path) as w:
            f = w.file
            FCOutput(self.settings(), self.grid.n_points).layout(f)
            crit = self.critical.reshape(len(self.levels), -1)
            f["critical"][...] = crit
            f["done"][...] = self.done.ravel().astype(np.uint8)
            if self.toys is not None:
                f["toys"][...] = self.toys
            f["crc32"][...] = point_crcs(crit, self.toys)
            f.attrs["complete"] = self.complete
        return path


def _names_and_hashes(model):
    """(names, definition hashes; '' where unknown) of a Chi2Model, an ExperimentSet, experiment
    objects or names."""
    if hasattr(model, "names") and hasattr(model, "definition_hashes"):
        return tuple(model.names), tuple(model.definition_hashes)
    if isinstance(model, str):
        model = [s for s in model.split(",") if s.strip()]
    items = list(model.experiments) if hasattr(model, "experiments") else list(model)
    return (tuple(str(e if isinstance(e, str) else e.name).strip() for e in items),
            tuple("" if isinstance(e, str) else str(getattr(e, "definition_hash", "")) for e in items))


def check_compatible(fc: FCResult, model, grid: Grid | None = None) -> None:
    """Refuse (IncompatibleError, a ValueError) using the FC result `fc` with `model` (a
    Chi2Model, an ExperimentSet, experiment objects or names): the experiments must be the
    same, in the same order (names compared case-insensitively), with the same definitions
    (definition hashes, where both are known), on the same grid (`grid`, default the model's
    when it has one; not compared when neither is given)."""
    names, hashes = _names_and_hashes(model)
    grid = getattr(model, "grid", None) if grid is None else grid
    what = f"the Feldman-Cousins result {str(fc.path)!r}" if fc.path is not None else "the Feldman-Cousins result"
    if len(fc.experiments) != len(names) or not all(same_name(a, b) for a, b in zip(fc.experiments, names)):
        raise IncompatibleError(f"{what} is for {list(fc.experiments)} but the model is for {list(names)}")
    bad = [n for n, a, b in zip(names, fc.definition_hashes, hashes) if a and b and a != b]
    if bad:
        raise IncompatibleError(f"{what} was computed with other definitions of {', '.join(bad)}")
    if grid is not None and grid != fc.grid:
        raise IncompatibleError(f"grid differs from {what}'s grid: {fc.grid} there, {grid} here")
