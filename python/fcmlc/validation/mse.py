"""Fig. 2: binned mean squared error of the regressor's predictions on the test set, the
interpolation and random samples separately (paper Sec. II C 1)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import plotting as P
from .._checks import check_positive_int, check_seed
from .._torch_env import torch_threads
from ..dataset import SimDataset, open_dataset
from ..regions import cell_edges
from .inputs import load_model
from .raster import bin_edges, bin_index

__all__ = ["MSEMaps", "mse_maps"]

#: (split in the dataset, name in MSEMaps.maps)
_SPLITS = (("test_interpolation", "interpolation"), ("test_random", "random"))


@dataclass
class MSEMaps:
    """Binned MSE of the regressor's predictions (Fig. 2).

    ``maps[split]`` holds ``mse`` (n_dm2_bins, n_ue4_bins): the mean over the samples of a bin of
    the squared error averaged over the two outputs (the network's training loss), ``mse_ue4``
    and ``mse_dm2`` per output, and ``count`` (samples per bin; empty bins are NaN).
    ``overall[split]`` is the unbinned MSE. Errors are in ``variables``: 'log10' (y =
    log10|Ue4|, log10 dm2) or 'standardised' (y scaled by the model's target scaler, the units
    of the training loss). Bin edges are in |Ue4| and dm2 [eV^2] (log-uniform bins).
    """

    ue4_edges: np.ndarray
    dm2_edges: np.ndarray
    variables: str
    maps: dict
    overall: dict
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"variables": self.variables, "bins": [len(self.ue4_edges) - 1, len(self.dm2_edges) - 1],
                "overall_mse": {k: float(v) for k, v in self.overall.items()},
                "n_test_samples": {k: int(m["count"].sum()) for k, m in self.maps.items()}, **self.meta}

    def plot(self, fig=None, x: str = "sin2", cmap: str = "Reds", vmin=None, vmax=None):
        """Two panels (interpolation, random sample) of the binned MSE on log-log axes with the
        field's conventions (sin^2 2theta or |Ue4| horizontally, dm2 vertically); white = small
        error, as in Fig. 2; grey = no test sample in the bin. Returns the Figure."""
        import matplotlib
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure

        if fig is None:
            fig = Figure(figsize=(11.0, 4.6), layout="constrained")
        names = [s for s in ("interpolation", "random") if s in self.maps] or list(self.maps)
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        vals = np.concatenate([self.maps[s]["mse"][np.isfinite(self.maps[s]["mse"])] for s in names])
        vals = vals[vals > 0]
        lo = vmin if vmin is not None else (float(vals.min()) if vals.size else 1e-6)
        hi = vmax if vmax is not None else (float(vals.max()) if vals.size else 1.0)
        norm = LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001))
        cm = matplotlib.colormaps[cmap].with_extremes(bad="0.8")
        ue = np.minimum(self.ue4_edges, 1.0 / np.sqrt(2.0))  # sin^2 2theta is monotone up to |Ue4| = 1/sqrt(2)
        xe = P.to_xaxis(ue, x)
        mesh = None
        for ax, s in zip(axes, names):
            m = np.ma.masked_invalid(np.where(self.maps[s]["mse"] > 0, self.maps[s]["mse"], np.nan))
            mesh = ax.pcolormesh(xe, self.dm2_edges, m, norm=norm, cmap=cm, shading="flat")
            P.setup_oscillation_axes(ax, x=x, ue4_range=(ue[0], ue[-1]),
                                     dm2_range=(self.dm2_edges[0], self.dm2_edges[-1]),
                                     title=f"{s} sample: MSE {self.overall[s]:.3g} ({self.variables})")
        if mesh is not None:
            fig.colorbar(mesh, ax=list(axes), label=f"MSE ({self.variables} units)")
        return fig


def _mse_bins(grid, bins):
    """(n_ue4_bins, n_dm2_bins, ue4 edges, dm2 edges), edges in log10: log-uniform bins over the
    grid's ranges, or one bin per grid point when ``bins`` is None."""
    if bins is None:
        return grid.n_ue4, grid.n_dm2, cell_edges(grid.ue4), cell_edges(grid.dm2)
    try:
        nb_u, nb_d = (int(b) for b in bins)
    except (TypeError, ValueError):
        raise ValueError(f"bins must be (n_ue4_bins, n_dm2_bins) or None, got {bins!r}") from None
    if nb_u < 1 or nb_d < 1:
        raise ValueError(f"bins must be positive, got {bins!r}")
    return nb_u, nb_d, bin_edges(*grid.ue4_range, nb_u), bin_edges(*grid.dm2_range, nb_d)


def _predict(model, ds, idx, cols, n_samples, seed, batch, pred):
    """MC-dropout mean predictions (log10 |Ue4|, log10 dm2) of the samples ``idx``, written to
    ``pred`` (n, 2); the dropout masks of batch b are seeded with (seed, b)."""
    for b, s0 in enumerate(range(0, idx.size, batch)):
        xb = ds.features(idx[s0:s0 + batch]).astype(np.float64)
        if cols is not None:
            xb = xb[:, cols]
        sb = int(np.random.SeedSequence([seed, b]).generate_state(1)[0])
        pred[s0:s0 + batch] = model.regressor.predict_mean(model.features.transform(xb), n_samples, seed=sb)
    return pred


def _binned(se, ty, eu, ed, nb_u, nb_d) -> dict:
    """Per-bin means of the squared errors ``se`` (n, 2) of samples at log10 targets ``ty``."""
    iu, idm = bin_index(ty[:, 0], eu), bin_index(ty[:, 1], ed)
    flat = idm * nb_u + iu
    cnt = np.bincount(flat, minlength=nb_u * nb_d).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        su = np.bincount(flat, weights=se[:, 0], minlength=nb_u * nb_d) / cnt
        sd = np.bincount(flat, weights=se[:, 1], minlength=nb_u * nb_d) / cnt
    shape = (nb_d, nb_u)
    return {"mse": (0.5 * (su + sd)).reshape(shape), "mse_ue4": su.reshape(shape), "mse_dm2": sd.reshape(shape),
            "count": cnt.reshape(shape).astype(np.int64)}


def mse_maps(model, dataset, bins=(20, 20), n_samples: int = 100, seed: int = 0, variables: str = "log10",
             max_per_split=None, batch: int = 2048, threads=None) -> MSEMaps:
    """Binned MSE maps of the regressor on the test set (paper Sec. II C 1, Fig. 2).

    The prediction for a data vector is the mean of ``n_samples`` MC-dropout predictions
    (``model.regressor.predict_mean``, seeded per batch with (seed, batch index)). Errors are
    taken in ``variables``: 'log10' (log10|Ue4|, log10 dm2) or 'standardised' (the model's
    target scaler: the units of the training loss). The interpolation sample (held-out grid
    points) and the random sample (held-out realizations) are mapped separately.

    bins: (n_ue4_bins, n_dm2_bins), log-uniform over the dataset grid's ranges, or None for one
    bin per grid point (the paper's "binned in each unique Ue4, dm2"). max_per_split: use a
    seeded random subset of at most this many samples per split (None: all).
    dataset: a path or an open :class:`fcmlc.dataset.SimDataset` (its experiments must contain
    the model's, in the model's order).
    """
    from ..models.pipeline import feature_columns  # torch: loaded only when a model is

    if variables not in ("log10", "standardised"):
        raise ValueError(f"variables must be 'log10' or 'standardised', got {variables!r}")
    n_samples = check_positive_int(n_samples, "n_samples")
    seed = check_seed(seed)
    batch = check_positive_int(batch, "batch")
    model = load_model(model)
    if not hasattr(model, "regressor"):
        raise ValueError("mse_maps needs an FCMLC model with a regressor")
    own = not isinstance(dataset, SimDataset)
    ds = open_dataset(dataset) if own else dataset
    try:
        ds.require_complete()
        _, cols = feature_columns(ds, list(model.experiments))
        nb_u, nb_d, eu, ed = _mse_bins(ds.grid, bins)
        rng = np.random.default_rng([seed, 0x3E5])
        maps, overall, counts = {}, {}, {}
        t0 = time.perf_counter()
        with torch_threads(threads):
            for split, name in _SPLITS:
                idx = ds.split_indices(split)
                if max_per_split is not None and idx.size > int(max_per_split):
                    idx = np.sort(rng.choice(idx, size=int(max_per_split), replace=False))
                if idx.size == 0:
                    raise ValueError(f"the dataset's {split} split is empty")
                y = np.log10(ds.targets(idx))
                pred = _predict(model, ds, idx, cols, n_samples, seed, batch, np.empty_like(y))
                if variables == "standardised":
                    y = model.regressor.y_scaler.transform(y)
                    pred = model.regressor.y_scaler.transform(pred)
                se = (pred - y) ** 2  # (n, 2)
                maps[name] = _binned(se, np.log10(ds.targets(idx)), eu, ed, nb_u, nb_d)
                overall[name] = float(se.mean())
                counts[name] = int(idx.size)
        meta = {"mc_samples": n_samples, "seed": seed, "experiments": list(model.experiments),
                "dataset": str(getattr(ds, "path", "")), "samples_used": counts,
                "seconds": time.perf_counter() - t0}
        return MSEMaps(10.0 ** eu, 10.0 ** ed, variables, maps, overall, meta)
    finally:
        if own:
            ds.close()
