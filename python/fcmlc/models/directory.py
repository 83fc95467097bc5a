"""The FCMLC model directory, written by :meth:`FCMLC.save` and read by :meth:`FCMLC.load`.

A model directory holds

    regressor.pt    state_dict of the MC-dropout network (tensors only; an ensemble's holds every
                    member's weights, keys members.<k>.*, and config.json's regressor
                    architecture records "members": K)
    flow.pt         state_dict of the normflows flow (tensors only)
    scalers.npz     input and target standardisation (float64)
    transition.npz  T (float32, (n_yhat_cells, n_y_cells)) and the log10 edges of both grids
    config.json     format version, fcmlc version, hyper-parameters and architectures,
                    experiments (order, bins, definition hashes), dataset (path, seed, grid),
                    training history, sha256 of every other file

and loads without unpickling code: ``torch.load(weights_only=True)``, ``np.load(allow_pickle=False)``, JSON.

:func:`write_model_directory` replaces the files one by one (each all or nothing; config.json,
which holds the checksums of the others, last). :func:`publish_model_directory`, used by
training, writes the whole directory elsewhere first and moves it into place, so the
directory holds either the previous model or the new one.

The parts that do not depend on the estimator (:func:`write_config`, :func:`read_config`,
:func:`load_state`, :func:`check_replaceable`, :func:`publish_model_directory`) also serve the
directories of the other estimators (:mod:`fcmlc.estimators`), whose config.json has the same
format, version, ``estimator`` key and checksums.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._io import atomic_path, atomic_write_text, jsonable, save_npz
from ..exceptions import OutputExistsError
from .features import FeatureMap
from .flow import CellGrid, ConditionalFlow, build_flow
from .regressor import Regressor, Standardizer, build_regressor_net

__all__ = ["ModelDirectoryError", "save_tensors", "FORMAT_NAME", "FORMAT_VERSION", "MODEL_FILES",
           "write_model_directory",
           "read_model_directory", "check_replaceable", "publish_model_directory", "write_config", "read_config",
           "load_state", "sha256_file", "read_scalers", "read_inputs"]

FORMAT_NAME = "fcmlc-model"
FORMAT_VERSION = 2
MODEL_FILES = ("regressor.pt", "flow.pt", "scalers.npz", "transition.npz")


class ModelDirectoryError(ValueError):
    """A model directory that is missing, corrupted, or inconsistent with its config.json."""


def sha256_file(path: Path) -> str:
    """The sha256 of a file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_tensors(state: dict, path) -> None:
    """``torch.save`` of a state_dict, all or nothing, through a file object: torch names the
    archive inside the file after a path's basename (here a temporary name with the process id),
    but ``archive`` for a file object, so the same weights give the same bytes (and sha256) in
    every run."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)


def write_model_directory(model, directory) -> Path:
    """Write the directory of ``model`` (an :class:`~fcmlc.models.FCMLC`): created if needed,
    existing model files are replaced, each file all or nothing."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    T = np.ascontiguousarray(model.transition, dtype=np.float32)
    save_tensors(model.regressor.state_dict(), d / "regressor.pt")
    save_tensors(model.flow.state_dict(), d / "flow.pt")
    save_npz(d / "scalers.npz", **model.regressor.x_scaler.to_arrays("x"), **model.regressor.y_scaler.to_arrays("y"))
    save_npz(d / "transition.npz", T=T, yhat_log_ue4_edges=model.yhat_grid.log_ue4_edges,
             yhat_log_dm2_edges=model.yhat_grid.log_dm2_edges, y_log_ue4_edges=model.y_grid.log_ue4_edges,
             y_log_dm2_edges=model.y_grid.log_dm2_edges)
    write_config(model, d, MODEL_FILES, regressor=model.regressor.net.architecture(),
                 flow=dict(model.flow.architecture),
                 grids={"yhat": model.yhat_grid.to_dict(), "y": model.y_grid.to_dict()},
                 transition={"dtype": "float32", "shape": list(T.shape),
                             "definition": "T[k, c] = p(y = y-cell centre c | y_hat = y_hat-cell centre k) per unit "
                                           "log10 area, sum_c T[k, c] dA_c = 1"})
    return d


def write_config(model, directory, files, **description) -> None:
    """Write config.json (all or nothing) of the model directory ``directory`` whose other files,
    ``files``, are written: format and version, the estimator (``model.estimator``), the
    experiments (order, bins, definition hashes), the feature map, the estimator's own
    ``description`` entries (architectures, grids), the training configuration, dataset and
    history (``model.config``, ``model.info``), and the sha256 and size of every file."""
    d = Path(directory)
    checks = {name: {"sha256": sha256_file(d / name), "bytes": (d / name).stat().st_size} for name in files}
    cfg = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": getattr(model, "estimator", "fcmlc"),
        "fcmlc_version": model.version,
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "experiments": model.experiments,
        "experiment_bins": model.info.get("experiment_bins"),
        "experiment_hashes": model.info.get("experiment_hashes"),
        "n_features": model.n_features,
        "features": model.features.to_dict(),
        **description,
        "training_config": model.config,
        "dataset": model.info.get("dataset"),
        "training": model.info.get("training"),
        "files": checks,
    }
    atomic_write_text(d / "config.json", json.dumps(jsonable(cfg), indent=2))


def check_replaceable(directory, files=MODEL_FILES) -> None:
    """OutputExistsError unless ``directory`` is absent, empty, or holds only a model's files
    (which :func:`publish_model_directory` replaces): config.json, the files it records (a model
    of any estimator), and ``files`` (the files of the model to be written; by default the
    ``fcmlc`` estimator's). Other files are never deleted."""
    d = Path(directory)
    if not d.exists():
        return
    if not d.is_dir():
        raise OutputExistsError(f"{d} exists and is not a directory; choose another output directory")
    own = set(files) | set(MODEL_FILES) | {"config.json"} | _recorded_files(d)
    other = sorted(p.name for p in d.iterdir() if p.name not in own and not p.name.endswith(".tmp"))
    if other:
        raise OutputExistsError(f"{d} exists and holds files that are not a model's ({', '.join(other[:5])}"
                                f"{', ...' if len(other) > 5 else ''}); choose another output directory")


def _recorded_files(d: Path) -> set:
    """The files that the config.json of a model directory ``d`` records (none if it has no readable one)."""
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return set()
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT_NAME or not isinstance(cfg.get("files"), dict):
        return set()
    return {str(name) for name in cfg["files"]}


def publish_model_directory(model, directory, staging, files=MODEL_FILES) -> Path:
    """Write the model directory of ``model`` (``model.save``) all or nothing: assembled in
    ``staging`` (a fresh directory on the same file system), then renamed onto ``directory``; a
    previous model there is first moved aside (to ``replaced`` next to ``staging``), then removed.
    ``directory`` must pass :func:`check_replaceable` (``files``: the files ``model.save`` writes)."""
    d, staging = Path(directory), Path(staging)
    check_replaceable(d, files)
    shutil.rmtree(staging, ignore_errors=True)
    model.save(staging)
    old = staging.with_name("replaced")
    shutil.rmtree(old, ignore_errors=True)
    if d.exists():
        os.replace(d, old)
    d.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, d)
    shutil.rmtree(old, ignore_errors=True)
    return d


def read_config(directory, files, verify: bool = True) -> dict:
    """config.json of the model directory ``directory``, checked: a JSON object of this format and
    format version, every one of ``files`` present with its recorded sha256 (compared with the
    file's unless ``verify`` is False). Raises :class:`ModelDirectoryError` naming the file and
    the problem otherwise."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelDirectoryError(f"{d} is not a directory (expected a model directory)")
    cpath = d / "config.json"
    if not cpath.is_file():
        raise ModelDirectoryError(f"{d}: config.json is missing; this is not a model directory")
    try:
        cfg = json.loads(cpath.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelDirectoryError(f"{cpath}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT_NAME:
        raise ModelDirectoryError(f"{cpath}: not an fcmlc model config (format {cfg.get('format')!r} "
                                  f"if a dict, expected {FORMAT_NAME!r})" if isinstance(cfg, dict) else
                                  f"{cpath}: not an fcmlc model config")
    fv = cfg.get("format_version")
    if fv != FORMAT_VERSION:
        raise ModelDirectoryError(f"{cpath}: model format version {fv!r} is not supported by fcmlc "
                                  f"{__version__} (which reads version {FORMAT_VERSION}); the model was saved "
                                  f"by fcmlc {cfg.get('fcmlc_version')!r}")
    recorded = cfg.get("files") or {}
    missing = [name for name in files if not (d / name).is_file()]
    if missing:
        raise ModelDirectoryError(f"{d}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    for name in files:
        p = d / name
        if not isinstance(recorded.get(name), dict) or "sha256" not in recorded[name]:
            raise ModelDirectoryError(f"{cpath}: no checksum recorded for {name}")
        if verify:
            got = sha256_file(p)
            if got != recorded[name]["sha256"]:
                raise ModelDirectoryError(
                    f"{p}: sha256 checksum mismatch (file is corrupted or was modified after saving): "
                    f"expected {recorded[name]['sha256'][:16]}..., found {got[:16]}...")
    return cfg


def read_scalers(directory, n_features: int):
    """(x_scaler, y_scaler) of a model directory's scalers.npz, checked against ``n_features``
    inputs and the 2 targets; :class:`ModelDirectoryError` naming the file otherwise."""
    path = Path(directory) / "scalers.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            x_scaler = Standardizer.from_arrays(z, "x")
            y_scaler = Standardizer.from_arrays(z, "y")
    except (KeyError, ValueError, OSError) as e:
        raise ModelDirectoryError(f"{path}: unreadable or incomplete ({e})") from None
    if x_scaler.dim != n_features:
        raise ModelDirectoryError(f"{path}: input scaler has {x_scaler.dim} features but "
                                  f"config.json says n_features = {n_features}")
    if y_scaler.dim != 2:
        raise ModelDirectoryError(f"{path}: target scaler has {y_scaler.dim} outputs, expected 2")
    return x_scaler, y_scaler


def read_inputs(directory, cfg: dict):
    """What the config.json of every estimator's model directory records about its inputs and
    posterior grid, checked: (n_features, experiments, FeatureMap, y CellGrid, x_scaler,
    y_scaler); :class:`ModelDirectoryError` naming the file and the problem otherwise."""
    cpath = Path(directory) / "config.json"
    try:
        n_features = int(cfg["n_features"])
        y_grid = CellGrid.from_dict(cfg["grids"]["y"])
        experiments = list(cfg["experiments"])
        features = FeatureMap.from_dict(cfg["features"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirectoryError(f"{cpath}: incomplete or invalid model description ({e!r})") from None
    x_scaler, y_scaler = read_scalers(directory, n_features)
    if features.n_features != n_features:
        raise ModelDirectoryError(f"{cpath}: the feature map covers {features.n_features} bins but "
                                  f"n_features = {n_features}")
    return n_features, experiments, features, y_grid, x_scaler, y_scaler


def read_model_directory(directory, device=None, verify: bool = True) -> dict:
    """Read a model directory written by :func:`write_model_directory` (no code is unpickled):
    the arguments of the :class:`~fcmlc.models.FCMLC` constructor, by name.

    Checks the format version, the sha256 of every file and the consistency of the
    weights, scalers and transition matrix with config.json; raises
    :class:`ModelDirectoryError` naming the file and the problem otherwise.
    """
    d = Path(directory)
    cfg = read_config(d, MODEL_FILES, verify)
    cpath = d / "config.json"
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_features, experiments, features, y_grid, x_scaler, y_scaler = read_inputs(d, cfg)
    try:
        rarch = cfg["regressor"]
        farch = cfg["flow"]
        yhat_grid = CellGrid.from_dict(cfg["grids"]["yhat"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelDirectoryError(f"{cpath}: incomplete or invalid model description ({e!r})") from None

    # regressor
    try:
        net = build_regressor_net(rarch)  # an ensemble when the architecture records "members"
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ModelDirectoryError(f"{cpath}: invalid regressor architecture ({e})") from None
    if net.n_features != n_features:
        raise ModelDirectoryError(f"{cpath}: regressor architecture has {net.n_features} inputs but "
                                  f"n_features = {n_features}")
    load_state(net, d / "regressor.pt", "regressor")
    regressor = Regressor(net, x_scaler, y_scaler, dev)

    # flow
    arch = {k: farch[k] for k in ("n_layers", "hidden", "n_blocks", "n_bins", "dropout", "tail_bound", "transform")
            if k in farch}
    try:
        nf_flow = build_flow(**arch)
    except (TypeError, ValueError) as e:
        raise ModelDirectoryError(f"{cpath}: invalid flow architecture ({e})") from None
    load_state(nf_flow, d / "flow.pt", "flow")
    nf_flow.eval()
    flow = ConditionalFlow(nf_flow, y_scaler, arch, device=dev)

    # transition matrix
    try:
        with np.load(d / "transition.npz", allow_pickle=False) as z:
            T = z["T"]
            edges = {k: z[k] for k in ("yhat_log_ue4_edges", "yhat_log_dm2_edges", "y_log_ue4_edges",
                                       "y_log_dm2_edges")}
    except (KeyError, ValueError, OSError) as e:
        raise ModelDirectoryError(f"{d / 'transition.npz'}: unreadable or incomplete ({e})") from None
    if T.shape != (yhat_grid.n_cells, y_grid.n_cells):
        raise ModelDirectoryError(f"{d / 'transition.npz'}: T has shape {T.shape} but config.json's grids need "
                                  f"({yhat_grid.n_cells}, {y_grid.n_cells})")
    for key, want in (("yhat_log_ue4_edges", yhat_grid.log_ue4_edges), ("yhat_log_dm2_edges", yhat_grid.log_dm2_edges),
                      ("y_log_ue4_edges", y_grid.log_ue4_edges), ("y_log_dm2_edges", y_grid.log_dm2_edges)):
        if edges[key].shape != want.shape or not np.allclose(edges[key], want, rtol=0, atol=1e-9):
            raise ModelDirectoryError(f"{d / 'transition.npz'}: {key} do not match the grids in config.json")
    if not np.all(np.isfinite(T)) or np.any(T < 0):
        raise ModelDirectoryError(f"{d / 'transition.npz'}: T contains negative or non-finite values")

    info = {k: cfg.get(k) for k in ("experiment_bins", "experiment_hashes", "dataset", "training", "fcmlc_version")}
    info["directory"] = str(d)
    return dict(regressor=regressor, flow=flow, transition=T, yhat_grid=yhat_grid, y_grid=y_grid,
                experiments=experiments, config=cfg.get("training_config"), info=info, features=features)


def load_state(module: torch.nn.Module, path: Path, what: str):
    """Load the weights-only torch file ``path`` into ``module`` (strict): ModelDirectoryError naming
    the file when it is unreadable or does not match the module's architecture (``what``: its name)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise ModelDirectoryError(f"{path}: cannot be read as a weights-only torch file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ModelDirectoryError(f"{path}: does not hold a state_dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = str(e).replace("\n", " ")
        raise ModelDirectoryError(f"{path}: the {what} weights do not match the architecture in config.json ({msg})") from None

