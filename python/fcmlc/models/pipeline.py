"""The FCMLC pipeline: trained regressor + conditional flow + transition matrix -> posteriors.

    x --(m MC-dropout predictions)--> y_hat samples --(KDE on the y_hat grid)--> p(y_hat | x)
      --(p(y|x)_c = sum_k T[k, c] p(y_hat_k | x) dA_k)--> p(y | x) on the y grid -> Posterior

(paper Sec. II B, Eq. 2 with p(y | y_hat, x) ~ p(y | y_hat), Fig. 1). All variables are
y = (log10|Ue4|, log10 dm2); densities are per unit area in those variables.

A model directory (:meth:`FCMLC.save`) holds

    regressor.pt    state_dict of the MC-dropout network (tensors only)
    flow.pt         state_dict of the normflows flow (tensors only)
    scalers.npz     input and target standardisation (float64)
    transition.npz  T (float32, (n_yhat_cells, n_y_cells)) and the log10 edges of both grids
    config.json     format version, fcmlc version, hyper-parameters and architectures,
                    experiments (order, bins, definition hashes), dataset (path, seed, grid),
                    training history, sha256 of every other file

and loads without unpickling code: ``torch.load(weights_only=True)``, ``np.load(allow_pickle=False)``, JSON.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from .flow import CellGrid, ConditionalFlow, build_flow, transition_matrix
from .features import FeatureMap
from .regressor import MCDropoutMLP, Regressor, Standardizer
from .training import Samples, TrainConfig, fit_flow, fit_regressor, memory_limit_bytes
from .._io import jsonable as _jsonable
from .._threads import torch_threads as _torch_threads

__all__ = ["FCMLC", "train", "ModelDirectoryError", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "fcmlc-model"
FORMAT_VERSION = 2
MODEL_FILES = ("regressor.pt", "flow.pt", "scalers.npz", "transition.npz")


class ModelDirectoryError(ValueError):
    """A model directory that is missing, corrupted, or inconsistent with its config.json."""


def _version() -> str:
    from .. import __version__

    return __version__


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FCMLC:
    """A trained FCMLC model: ``posterior(x)`` turns a data vector into a :class:`fcmlc.posterior.Posterior`.

    Build one with :func:`train` or :meth:`FCMLC.load`.
    """

    def __init__(self, regressor: Regressor, flow: ConditionalFlow, transition: np.ndarray,
                 yhat_grid: CellGrid, y_grid: CellGrid, experiments, config: dict | None = None,
                 info: dict | None = None, features: FeatureMap | None = None):
        T = np.asarray(transition)
        if T.shape != (yhat_grid.n_cells, y_grid.n_cells):
            raise ValueError(f"transition matrix has shape {T.shape}, expected "
                             f"({yhat_grid.n_cells}, {y_grid.n_cells}) for the y_hat and y grids")
        self.regressor = regressor
        self.flow = flow
        self.transition = T
        #: raw data vector -> network input (group directions x_g / |x_g| for shape-only experiments)
        self.features = FeatureMap(np.full(regressor.n_features, -1)) if features is None else features
        if self.features.n_features != regressor.n_features:
            raise ValueError(f"feature map has {self.features.n_features} bins but the regressor takes "
                             f"{regressor.n_features} features")
        self.yhat_grid = yhat_grid
        self.y_grid = y_grid
        self.experiments = [str(e) for e in experiments]
        self.config = dict(config or {})
        self.info = dict(info or {})
        self.version = self.info.get("fcmlc_version", _version())
        self._T64 = None

    # ------------------------------------------------------------------ basic properties
    @property
    def n_features(self) -> int:
        return self.regressor.n_features

    def __repr__(self):
        return (f"FCMLC(experiments={self.experiments}, n_features={self.n_features}, "
                f"yhat_grid={self.yhat_grid.shape}, y_grid={self.y_grid.shape}, version={self.version!r})")

    def to(self, device) -> "FCMLC":
        self.regressor.to(device)
        self.flow.to(device)
        return self

    def _check_x(self, x):
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"x must be a numeric array of {self._feature_text()}") from None
        single = arr.ndim == 1
        if single:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ValueError(f"x must have shape ({self.n_features},) or (n, {self.n_features}): "
                             f"{self._feature_text()}; got shape {np.shape(x)}")
        if arr.shape[0] == 0:
            raise ValueError("x contains no data vectors")
        bad = ~np.all(np.isfinite(arr), axis=1)
        if np.any(bad):
            raise ValueError(f"x contains NaN or infinite values (data vector(s) {np.flatnonzero(bad)[:10].tolist()})")
        return arr, single

    def _feature_text(self) -> str:
        bins = self.info.get("experiment_bins")
        if bins:
            parts = ", ".join(f"{n} ({bins.get(n, '?')} bins)" for n in self.experiments)
        else:
            parts = ", ".join(self.experiments)
        return f"{self.n_features} features = the bins of {parts} concatenated in this order"

    # ------------------------------------------------------------------ inference
    def sample_yhat(self, x, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
        """MC-dropout samples of y_hat = (log10|Ue4|, log10 dm2): (n, n_samples, 2)."""
        arr, _ = self._check_x(x)
        return self.regressor.predict_samples(self.features.transform(arr), n_samples=n_samples, seed=seed)

    def bandwidths(self, samples, bandwidth="normal_reference", bandwidth_floor: float = 0.5) -> np.ndarray:
        """KDE bandwidths (n, 2) in (log10|Ue4|, log10 dm2) for MC-dropout samples (n, m, 2).

        A rule name ('normal_reference', 'cv_ml': :func:`fcmlc.posterior.kde_bandwidth`) is
        floored at ``bandwidth_floor`` y_hat-cell widths per axis: p(y_hat | x) is evaluated
        at the cell centres and the transition matrix is only known there, so a kernel much
        narrower than a cell would alias (its mass could fall between centres). Half a cell
        keeps the grid sum of a kernel within 1 % of its integral and blurs p(y_hat | x) by
        less than the grid resolution. Explicit numbers (a pair or (n, 2)) are used as given.
        """
        from ..posterior import kde_bandwidth

        if not isinstance(bandwidth, str):
            h = np.asarray(bandwidth, dtype=float)
            return np.broadcast_to(h, (len(samples), 2)).copy() if h.shape == (2,) else h
        h = np.asarray(kde_bandwidth(samples, bandwidth), dtype=float).reshape(len(samples), 2)
        if bandwidth_floor and bandwidth_floor > 0:
            du = np.diff(self.yhat_grid.log_ue4_edges)[0]
            dd = np.diff(self.yhat_grid.log_dm2_edges)[0]
            h = np.maximum(h, float(bandwidth_floor) * np.array([du, dd]))
        return h

    def p_yhat(self, x, n_samples: int = 1000, seed: int = 0, bandwidth="normal_reference",
               threads=None, bandwidth_floor: float = 0.5):
        """KDE of the MC-dropout samples on the y_hat grid: (n, n_dm2, n_ue4) densities."""
        from ..posterior import kde_grid

        samples = self.sample_yhat(x, n_samples, seed)
        h = self.bandwidths(samples, bandwidth, bandwidth_floor)
        p = np.asarray(kde_grid(samples, self.yhat_grid.log_ue4_centres, self.yhat_grid.log_dm2_centres,
                                bandwidth=h, threads=threads))
        return p.reshape(len(samples), self.yhat_grid.n_dm2, self.yhat_grid.n_ue4)

    def _transition64(self):
        if self._T64 is None:
            self._T64 = np.ascontiguousarray(self.transition, dtype=np.float64)
        return self._T64

    def posterior_density(self, x, n_samples: int = 1000, seed: int = 0, bandwidth="normal_reference",
                          threads=None, bandwidth_floor: float = 0.5) -> np.ndarray:
        """Unnormalised p(y | x) on the y grid: (n, n_dm2, n_ue4) (rows are dm2, as in every map here)."""
        from ..posterior import integrate

        arr, _ = self._check_x(x)
        p = self.p_yhat(arr, n_samples, seed, bandwidth, threads, bandwidth_floor).reshape(len(arr), -1)
        mass = p.sum(axis=1) * self.yhat_grid.cell_area
        bad = np.flatnonzero(~(mass > 1e-6))
        if bad.size:
            raise ValueError(
                f"the regressor's predictions for data vector(s) {bad[:10].tolist()} fall outside the y_hat grid "
                f"(|Ue4| in {self.yhat_grid.ue4_range}, dm2 in {self.yhat_grid.dm2_range} eV^2): the data look "
                "unlike anything in the training set (wrong experiment order or units?)")
        # T was validated (finite, >= 0) when it was computed or loaded
        post = np.asarray(integrate(p, self._transition64(), self.yhat_grid.cell_areas(), threads=threads,
                                    check_transition=False))
        return post.reshape(len(arr), self.y_grid.n_dm2, self.y_grid.n_ue4)

    def posterior(self, x, n_samples: int = 1000, seed: int = 0, bandwidth="normal_reference", threads=None,
                  bandwidth_floor: float = 0.5):
        """p(y | x) as a :class:`fcmlc.posterior.Posterior` (x of shape (n_features,)) or a list of them
        (x of shape (n, n_features)); batched internally (one regressor pass, batched KDE and
        integration). ``seed`` fixes the dropout masks: the same seed gives the same posterior.
        ``bandwidth``: KDE rule or explicit widths, ``bandwidth_floor``: see :meth:`bandwidths`."""
        from ..posterior import Posterior

        arr, single = self._check_x(x)
        dens = self.posterior_density(arr, n_samples, seed, bandwidth, threads, bandwidth_floor)
        meta = {"method": "FCMLC", "experiments": self.experiments, "n_samples": int(n_samples), "seed": int(seed),
                "bandwidth": bandwidth if isinstance(bandwidth, str) else np.asarray(bandwidth).tolist(),
                "bandwidth_floor_cells": float(bandwidth_floor or 0.0),
                "fcmlc_version": self.version}
        posts = [Posterior(self.y_grid.ue4_centres, self.y_grid.dm2_centres, d, meta=meta) for d in dens]
        return posts[0] if single else posts

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        """Write the model directory (created if needed; existing model files are replaced)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        T = np.ascontiguousarray(self.transition, dtype=np.float32)

        def atomic(name, writer):
            tmp = d / (name + ".tmp")
            writer(tmp)
            os.replace(tmp, d / name)

        atomic("regressor.pt", lambda p: torch.save(self.regressor.state_dict(), p))
        atomic("flow.pt", lambda p: torch.save(self.flow.state_dict(), p))

        def w_scalers(p):
            with open(p, "wb") as f:
                np.savez(f, **self.regressor.x_scaler.to_arrays("x"), **self.regressor.y_scaler.to_arrays("y"))

        def w_transition(p):
            with open(p, "wb") as f:
                np.savez(f, T=T, yhat_log_ue4_edges=self.yhat_grid.log_ue4_edges,
                         yhat_log_dm2_edges=self.yhat_grid.log_dm2_edges, y_log_ue4_edges=self.y_grid.log_ue4_edges,
                         y_log_dm2_edges=self.y_grid.log_dm2_edges)

        atomic("scalers.npz", w_scalers)
        atomic("transition.npz", w_transition)
        files = {name: {"sha256": _sha256(d / name), "bytes": (d / name).stat().st_size} for name in MODEL_FILES}
        cfg = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "fcmlc_version": self.version,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "experiments": self.experiments,
            "experiment_bins": self.info.get("experiment_bins"),
            "experiment_hashes": self.info.get("experiment_hashes"),
            "n_features": self.n_features,
            "features": self.features.to_dict(),
            "regressor": self.regressor.net.architecture(),
            "flow": dict(self.flow.architecture),
            "grids": {"yhat": self.yhat_grid.to_dict(), "y": self.y_grid.to_dict()},
            "transition": {"dtype": "float32", "shape": list(T.shape),
                           "definition": "T[k, c] = p(y = y-cell centre c | y_hat = y_hat-cell centre k) per unit "
                                         "log10 area, sum_c T[k, c] dA_c = 1"},
            "training_config": self.config,
            "dataset": self.info.get("dataset"),
            "training": self.info.get("training"),
            "files": files,
        }
        atomic("config.json", lambda p: p.write_text(json.dumps(_jsonable(cfg), indent=2)))
        return d

    @classmethod
    def load(cls, directory, device=None, verify: bool = True) -> "FCMLC":
        """Load a model directory written by :meth:`save` (no code is unpickled).

        Checks the format version, the sha256 of every file and the consistency of the
        weights, scalers and transition matrix with config.json; raises
        :class:`ModelDirectoryError` naming the file and the problem otherwise.
        """
        d = Path(directory)
        if not d.is_dir():
            raise ModelDirectoryError(f"{d} is not a directory (expected an FCMLC model directory)")
        cpath = d / "config.json"
        if not cpath.is_file():
            raise ModelDirectoryError(f"{d}: config.json is missing; this is not an FCMLC model directory")
        try:
            cfg = json.loads(cpath.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelDirectoryError(f"{cpath}: not valid JSON ({e})") from None
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT_NAME:
            raise ModelDirectoryError(f"{cpath}: not an FCMLC model config (format {cfg.get('format')!r} "
                                      f"if a dict, expected {FORMAT_NAME!r})" if isinstance(cfg, dict) else
                                      f"{cpath}: not an FCMLC model config")
        fv = cfg.get("format_version")
        if fv != FORMAT_VERSION:
            raise ModelDirectoryError(f"{cpath}: model format version {fv!r} is not supported by fcmlc "
                                      f"{_version()} (which reads version {FORMAT_VERSION}); the model was saved "
                                      f"by fcmlc {cfg.get('fcmlc_version')!r}")
        files = cfg.get("files") or {}
        missing = [name for name in MODEL_FILES if not (d / name).is_file()]
        if missing:
            raise ModelDirectoryError(f"{d}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        for name in MODEL_FILES:
            p = d / name
            if name not in files or "sha256" not in files[name]:
                raise ModelDirectoryError(f"{cpath}: no checksum recorded for {name}")
            if verify:
                got = _sha256(p)
                if got != files[name]["sha256"]:
                    raise ModelDirectoryError(
                        f"{p}: sha256 checksum mismatch (file is corrupted or was modified after saving): "
                        f"expected {files[name]['sha256'][:16]}..., found {got[:16]}...")
        dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            n_features = int(cfg["n_features"])
            rarch = cfg["regressor"]
            farch = cfg["flow"]
            yhat_grid = CellGrid.from_dict(cfg["grids"]["yhat"])
            y_grid = CellGrid.from_dict(cfg["grids"]["y"])
            experiments = list(cfg["experiments"])
            features = FeatureMap.from_dict(cfg["features"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelDirectoryError(f"{cpath}: incomplete or invalid model description ({e!r})") from None

        # scalers
        try:
            with np.load(d / "scalers.npz", allow_pickle=False) as z:
                x_scaler = Standardizer.from_arrays(z, "x")
                y_scaler = Standardizer.from_arrays(z, "y")
        except (KeyError, ValueError, OSError) as e:
            raise ModelDirectoryError(f"{d / 'scalers.npz'}: unreadable or incomplete ({e})") from None
        if x_scaler.dim != n_features:
            raise ModelDirectoryError(f"{d / 'scalers.npz'}: input scaler has {x_scaler.dim} features but "
                                      f"config.json says n_features = {n_features}")
        if features.n_features != n_features:
            raise ModelDirectoryError(f"{cpath}: the feature map covers {features.n_features} bins but "
                                      f"n_features = {n_features}")
        if y_scaler.dim != 2:
            raise ModelDirectoryError(f"{d / 'scalers.npz'}: target scaler has {y_scaler.dim} outputs, expected 2")

        # regressor
        try:
            net = MCDropoutMLP(rarch["n_features"], rarch["hidden"], rarch["dropout"], rarch.get("n_outputs", 2))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelDirectoryError(f"{cpath}: invalid regressor architecture ({e})") from None
        if net.n_features != n_features:
            raise ModelDirectoryError(f"{cpath}: regressor architecture has {net.n_features} inputs but "
                                      f"n_features = {n_features}")
        _load_state(net, d / "regressor.pt", "regressor")
        regressor = Regressor(net, x_scaler, y_scaler, dev)

        # flow
        arch = {k: farch[k] for k in ("n_layers", "hidden", "n_blocks", "n_bins", "dropout", "tail_bound", "transform")
                if k in farch}
        try:
            nf_flow = build_flow(**arch)
        except (TypeError, ValueError) as e:
            raise ModelDirectoryError(f"{cpath}: invalid flow architecture ({e})") from None
        _load_state(nf_flow, d / "flow.pt", "flow")
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
        return cls(regressor, flow, T, yhat_grid, y_grid, experiments, cfg.get("training_config"), info, features)


def _load_state(module: torch.nn.Module, path: Path, what: str):
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


# ---------------------------------------------------------------------------------------
# training entry point
# ---------------------------------------------------------------------------------------

def _feature_columns(ds, experiments):
    """Columns of the dataset's features that belong to ``experiments`` (in that order)."""
    names = list(ds.experiments)
    if experiments is None:
        return names, None
    if isinstance(experiments, str):
        experiments = [s.strip() for s in experiments.split(",") if s.strip()]
    experiments = [getattr(e, "name", e) for e in experiments]
    if list(experiments) == names:
        return names, None
    missing = [e for e in experiments if e not in names]
    if missing:
        raise ValueError(f"experiment(s) {missing} are not in the dataset, which holds {names}")
    if len(set(experiments)) != len(experiments):
        raise ValueError(f"experiment listed twice: {experiments}")
    bins = getattr(ds, "n_bins", None)
    if not isinstance(bins, dict):
        raise ValueError("this dataset does not record per-experiment bin counts, so a subset of its "
                         "experiments cannot be selected")
    offsets, col = {}, 0
    for n in names:
        offsets[n] = (col, col + int(bins[n]))
        col += int(bins[n])
    cols = np.concatenate([np.arange(*offsets[e]) for e in experiments])
    return list(experiments), cols


def _resolve_config(config, experiments) -> TrainConfig:
    if config is None:
        cfg = TrainConfig.default(experiments)
    elif isinstance(config, TrainConfig):
        cfg = TrainConfig.from_dict({}, base=config)
        if cfg.regressor.hidden is None:  # only the layer sizes are filled in; the caller's other choices stand
            from .regressor import default_hidden_layers

            cfg.regressor.hidden = default_hidden_layers(len(experiments))
    elif isinstance(config, dict):
        base = TrainConfig.preset(config.get("hyperparameters", "paper"), experiments)
        cfg = TrainConfig.from_dict(config, base=base)
    else:
        raise ValueError("config must be a TrainConfig, a dict of settings, or None")
    cfg.validate()
    return cfg


def train(dataset, out=None, experiments=None, config=None, device=None, seed: int = 0,
          progress: bool = True) -> FCMLC:
    """Train an FCMLC model: regressor, then conditional flow, then the transition matrix.

    dataset: path of an HDF5 dataset (``fcmlc simulate``) or an open ``SimDataset``.
    out: model directory to save to (optional). experiments: a subset of the dataset's
    experiments to use (default: all, in the dataset's order). config: ``TrainConfig``, a dict
    overlaying the defaults, which are the paper's Tables III/IV (e.g. ``{"time_budget": 600,
    "regressor": {"max_epochs": 50}}``; ``{"hyperparameters": "fast"}`` starts from the
    :meth:`TrainConfig.fast` preset instead), or None (the defaults).
    device: "cpu", "cuda" or None (CUDA when available). Uses the dataset's "train" split;
    a random ``validation_fraction`` of it (seeded) drives early stopping.
    """
    from ..dataset import open_dataset

    if isinstance(dataset, (str, os.PathLike)):
        with open_dataset(dataset) as ds:
            return _train(ds, out, experiments, config, device, seed, progress)
    return _train(dataset, out, experiments, config, device, seed, progress)


def _train(ds, out, experiments, config, device, seed, progress) -> FCMLC:
    from .training import _resolve_device

    if hasattr(ds, "require_complete"):
        ds.require_complete()
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    names, columns = _feature_columns(ds, experiments)
    cfg = _resolve_config(config, names)
    dev = _resolve_device(device)
    t_start = time.monotonic()

    train_idx = np.asarray(ds.split_indices("train"), dtype=np.int64)
    if train_idx.size < 10:
        raise ValueError(f"the dataset's training split has only {train_idx.size} samples")
    perm = np.random.default_rng([seed, 31]).permutation(train_idx.size)
    n_val = max(1, int(round(cfg.validation_fraction * train_idx.size)))
    val_idx = np.sort(train_idx[perm[:n_val]])
    fit_idx = np.sort(train_idx[perm[n_val:]])

    n_feat = len(columns) if columns is not None else int(ds.n_features)
    need = train_idx.size * (n_feat * 4 + 16)
    in_memory = cfg.in_memory if cfg.in_memory != "auto" else need <= memory_limit_bytes()
    chunk = int(cfg.chunk_rows)
    features = FeatureMap.from_normalisation(getattr(ds, "normalisation", None), names)
    train_src = Samples(ds, fit_idx, columns, in_memory, chunk, progress, "loading training set", features)
    val_src = Samples(ds, val_idx, columns, in_memory, chunk, progress, "loading validation set", features)

    grid = ds.grid
    budget = cfg.time_budget
    with _torch_threads(cfg.threads):
        r_budget = None if budget is None else budget * cfg.regressor_time_fraction
        regressor, r_hist = fit_regressor(train_src, val_src, cfg.regressor, device=dev, seed=seed,
                                          time_budget=r_budget, progress=progress)
        f_budget = None if budget is None else max(budget - r_hist["seconds"], 0.05 * budget)
        widths = (float(np.log10(grid.ue4_range[1] / grid.ue4_range[0]) / (grid.n_ue4 - 1)),
                  float(np.log10(grid.dm2_range[1] / grid.dm2_range[0]) / (grid.n_dm2 - 1)))
        flow, f_hist = fit_flow(regressor, train_src, val_src, cfg.flow, dequantize_widths=widths, device=dev,
                                seed=seed, time_budget=f_budget, progress=progress)
        yhat_grid = CellGrid.over(grid, cfg.yhat_shape, margin=cfg.yhat_margin)
        y_grid = CellGrid.over(grid, cfg.y_shape)
        t0 = time.monotonic()
        T = transition_matrix(flow, yhat_grid, y_grid, progress=progress)
        t_T = time.monotonic() - t0

    hashes = getattr(ds, "experiment_hashes", None)
    bins = getattr(ds, "n_bins", None)
    info = {
        "fcmlc_version": _version(),
        "experiment_bins": {n: int(bins[n]) for n in names} if isinstance(bins, dict) else None,
        "experiment_hashes": {n: hashes.get(n) for n in names} if isinstance(hashes, dict) else None,
        "dataset": {
            "path": str(Path(ds.path).resolve()) if getattr(ds, "path", None) is not None else None,
            "seed": getattr(ds, "seed", None), "experiments": list(ds.experiments),
            "grid": ds.grid.to_dict(), "n_per_point": int(ds.n_per_point), "n_samples": int(ds.n_samples),
            "n_train": int(fit_idx.size), "n_validation": int(val_idx.size), "feature_columns":
                None if columns is None else [int(columns[0]), int(columns[-1]) + 1] if
                np.all(np.diff(columns) == 1) else columns.tolist(),
            "in_memory": bool(in_memory),
        },
        "training": {
            "seed": seed, "device": str(dev), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "python": platform.python_version(),
            "regressor": r_hist, "flow": f_hist, "transition_seconds": t_T,
            "total_seconds": time.monotonic() - t_start,
        },
    }
    model = FCMLC(regressor, flow, T, yhat_grid, y_grid, names, cfg.to_dict(), info, features)
    if out is not None:
        model.save(out)
        model.info["directory"] = str(out)
    return model
