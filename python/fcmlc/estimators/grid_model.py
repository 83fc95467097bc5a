"""What the ``npe`` and ``nre`` models share: one network on (x, y), its posterior evaluated at
the cell centres of a grid, and its model directory.

    x --FeatureMap--> features --standardise--> network --> log q(y_c | x) at every y-cell centre c
      --> density per unit (log10|Ue4|, log10 dm2) area on ``y_grid`` --> fcmlc.posterior.Posterior

A model directory (:meth:`GridModel.save`, :meth:`GridModel.load`) holds

    network.pt    state_dict of the network (tensors only; torch.load(weights_only=True))
    scalers.npz   the standardisation of the features (x) and of y (float64; allow_pickle=False)
    config.json   as every fcmlc model directory (:func:`fcmlc.models.directory.write_config`):
                  format, version, ``"estimator": "npe"`` or ``"nre"``, experiments, feature map,
                  the network's architecture, the y grid, settings, dataset, training history,
                  and the sha256 of both files above

and is read back with the same checks as the ``fcmlc`` estimator's: a corrupted, missing or
mismatched file raises :class:`fcmlc.models.ModelDirectoryError` naming it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._io import save_npz
from .._torch_env import torch_threads
from ..models.directory import ModelDirectoryError, load_state, read_config, read_inputs, save_tensors, write_config
from ..models.features import FeatureMap, check_data_vectors, feature_text
from ..models.flow import CellGrid
from ..models.regressor import Standardizer
from ..posterior import Posterior

__all__ = ["GridModel", "EVAL_ROWS"]

#: (data vector, y cell) pairs per network pass when evaluating posteriors (at least one vector per
#: pass; larger passes were measured slower: 51 ms per vector at 2^17 pairs, 26 ms at 2^14)
EVAL_ROWS = 1 << 14

#: posterior_density options of the ``fcmlc`` estimator that these models accept and ignore
IGNORED_OPTIONS = ("bandwidth", "bandwidth_floor")


class GridModel:
    """A trained network on (x, y) with its scalers, feature map and posterior grid.

    Subclasses set ``estimator`` (the registry name), ``method`` (``Posterior.meta["method"]``),
    ``network_name`` (its name in ``info["training"]["networks"]``), ``network_class`` and
    ``config_class``, and implement :meth:`log_density` (log densities per unit standardised-y
    area at given y points, up to a constant per data vector where the subclass normalises).
    """

    estimator = ""
    method = ""
    network_name = "network"
    network_class = None
    config_class = None
    #: the files of the model directory besides config.json
    FILES = ("network.pt", "scalers.npz")

    def __init__(self, network: torch.nn.Module, x_scaler: Standardizer, y_scaler: Standardizer, y_grid: CellGrid,
                 experiments, config: dict | None = None, info: dict | None = None, features: FeatureMap | None = None,
                 device=None):
        if x_scaler.dim != network.n_features:
            raise ValueError(f"input scaler has {x_scaler.dim} features but the network takes {network.n_features}")
        if y_scaler.dim != 2:
            raise ValueError(f"the target scaler has {y_scaler.dim} outputs, expected 2")
        self.network = network
        self.x_scaler, self.y_scaler = x_scaler, y_scaler
        #: raw data vector -> network input (group directions x_g / |x_g| for shape-only experiments)
        self.features = FeatureMap(np.full(network.n_features, -1)) if features is None else features
        if self.features.n_features != network.n_features:
            raise ValueError(f"feature map has {self.features.n_features} bins but the network takes "
                             f"{network.n_features} features")
        self.y_grid = y_grid
        self.experiments = [str(e) for e in experiments]
        self.config = dict(config or {})
        self.info = dict(info or {})
        self.version = self.info.get("fcmlc_version", __version__)
        self.to(device if device is not None else next(network.parameters()).device)
        self.network.eval()

    @property
    def n_features(self) -> int:
        return self.network.n_features

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device):
        self._device = torch.device(device)
        self.network.to(self._device)
        return self

    def __repr__(self):
        return (f"{type(self).__name__}(experiments={self.experiments}, n_features={self.n_features}, "
                f"y_grid={self.y_grid.shape}, version={self.version!r})")

    def check_x(self, x):
        """(x as float64 (n, n_features), single): the checks of the ``fcmlc`` estimator's models."""
        return check_data_vectors(x, self.n_features, feature_text(self.n_features, self.experiments,
                                                                   self.info.get("experiment_bins")))

    # ------------------------------------------------------------------ inference
    def log_density(self, context: torch.Tensor, y_std: torch.Tensor) -> torch.Tensor:
        """log densities (k,) at rows of standardised y (k, 2) given the embeddings (k, size)."""
        raise NotImplementedError

    def finish(self, logd: np.ndarray) -> np.ndarray:
        """(n, n_cells) log densities per unit standardised-y area -> the densities returned by
        :meth:`posterior_density` (subclasses: normalisation and checks)."""
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, arr: np.ndarray) -> torch.Tensor:
        """The embeddings e(x) (n, size) of checked data vectors (n, n_features)."""
        z = self.x_scaler.transform(self.features.transform(arr))
        return self.network.embedding(torch.as_tensor(z, dtype=torch.float32, device=self.device))

    @torch.no_grad()
    def log_density_grid(self, X, threads=None) -> np.ndarray:
        """log densities (n, n_cells) per unit standardised-y area at the y-cell centres (|Ue4|
        fastest), for data vectors X (checked), as the network gives them (torch, in blocks of
        about :data:`EVAL_ROWS` pairs)."""
        arr, _ = self.check_x(X)
        pts = torch.as_tensor(self.y_scaler.transform(self.y_grid.log_points()), dtype=torch.float32,
                              device=self.device)
        m = len(pts)
        out = np.empty((len(arr), m))
        per = max(1, EVAL_ROWS // m)  # data vectors per network pass
        with torch_threads(threads):
            ctx = self.embed(arr)
            for i0 in range(0, len(arr), per):
                c = ctx[i0:i0 + per]
                k = len(c)
                rows = self.log_density(c[:, None, :].expand(k, m, c.shape[1]).reshape(k * m, -1),
                                        pts[None].expand(k, m, 2).reshape(k * m, 2))
                out[i0:i0 + k] = rows.double().cpu().numpy().reshape(k, m)
        return out

    def posterior_density(self, x, n_samples: int = 1000, seed: int = 0, threads=None, **options) -> np.ndarray:
        """Unnormalised p(y | x) per unit (log10|Ue4|, log10 dm2) area at the y-cell centres:
        (n, n_dm2, n_ue4) (rows are dm2). The network is deterministic: ``n_samples``, ``seed``
        and the ``fcmlc`` estimator's KDE options (``bandwidth``, ``bandwidth_floor``) are
        accepted, so that every estimator is called alike, and ignored. ``threads``: torch
        threads for the evaluation (None: torch's setting)."""
        unknown = set(options) - set(IGNORED_OPTIONS)
        if unknown:
            raise TypeError(f"posterior_density() got unexpected keyword argument(s) {sorted(unknown)}")
        dens = self.finish(self.log_density_grid(x, threads))
        return dens.reshape(len(dens), self.y_grid.n_dm2, self.y_grid.n_ue4)

    def posterior(self, x, n_samples: int = 1000, seed: int = 0, threads=None, **options):
        """p(y | x) as a :class:`fcmlc.posterior.Posterior` (x of shape (n_features,)) or a list of
        them (x of shape (n, n_features)), batched internally. Arguments as for
        :meth:`posterior_density` (``n_samples``, ``seed`` and KDE options are ignored)."""
        arr, single = self.check_x(x)
        dens = self.posterior_density(arr, n_samples, seed, threads, **options)
        meta = {"method": self.method, "estimator": self.estimator, "experiments": self.experiments,
                "fcmlc_version": self.version}
        posts = [Posterior(self.y_grid.ue4_centres, self.y_grid.dm2_centres, d, meta=meta).with_source(self.experiments, xi)
                 for d, xi in zip(dens, arr)]
        return posts[0] if single else posts

    # ------------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        """Write the model directory (created if needed; existing model files are replaced, each
        all or nothing, config.json with the checksums last)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_tensors({k: v.detach().cpu() for k, v in self.network.state_dict().items()}, d / "network.pt")
        save_npz(d / "scalers.npz", **self.x_scaler.to_arrays("x"), **self.y_scaler.to_arrays("y"))
        write_config(self, d, self.FILES, network=self.network.architecture(), grids={"y": self.y_grid.to_dict()},
                     posterior=self.posterior_definition())
        return d

    def posterior_definition(self) -> str:
        """How the posterior on the grid is formed (config.json)."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory, device=None, verify: bool = True):
        """Load a model directory written by :meth:`save` (no code is unpickled): checks the format
        version, the estimator, the sha256 of every file and the consistency of the weights and
        scalers with config.json; :class:`~fcmlc.models.ModelDirectoryError` naming the file and
        the problem otherwise."""
        d = Path(directory)
        cfg = read_config(d, cls.FILES, verify)
        cpath = d / "config.json"
        if cfg.get("estimator") != cls.estimator:
            raise ModelDirectoryError(f"{cpath}: holds a {cfg.get('estimator', 'fcmlc')!r} model, not "
                                      f"{cls.estimator!r}")
        n_features, experiments, features, y_grid, x_scaler, y_scaler = read_inputs(d, cfg)
        try:
            arch = dict(cfg["network"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelDirectoryError(f"{cpath}: incomplete or invalid model description ({e!r})") from None
        try:
            network = cls.network_class.from_architecture(arch)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelDirectoryError(f"{cpath}: invalid network architecture ({e!r})") from None
        if network.n_features != n_features:
            raise ModelDirectoryError(f"{cpath}: the network takes {network.n_features} inputs but "
                                      f"n_features = {n_features}")
        load_state(network, d / "network.pt", "network")
        info = {k: cfg.get(k) for k in ("experiment_bins", "experiment_hashes", "dataset", "training", "fcmlc_version")}
        info["directory"] = str(d)
        dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return cls(network, x_scaler, y_scaler, y_grid, experiments, cfg.get("training_config"), info, features, dev)
