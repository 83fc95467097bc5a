"""One data vector: FCMLC credible regions against the exact posterior's, Wilks and Feldman-Cousins regions
on one figure, with intersection-over-union (areas in log10|Ue4| x log10 dm2) ->
:class:`Comparison`."""
from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .. import plotting as P
from .._checks import check_levels, check_positive_int, check_seed
from .._io import atomic_write_json, save_figure
from .._torch_env import torch_threads
from ..exact import ExactModel, grid_of_centres
from ..frequentist import Chi2Model, chi2_scan, wilks_regions
from ..physics import Grid, sin2_2theta
from ..posterior import Posterior
from ..regions import iou as region_iou
from .inputs import chi2_grid, load_fc, load_model, model_experiments, y_ranges
from .raster import common_raster, regrid_cells, regrid_points

__all__ = ["Comparison", "compare"]


@dataclass
class Comparison:
    """FCMLC, Wilks and FC regions for one data vector (:func:`compare`).

    ``posterior``: the FCMLC :class:`fcmlc.posterior.Posterior`; ``scan``: the chi2 scan on
    ``grid``; ``regions[method][level]``: bool masks on each method's own grid (FCMLC: posterior
    cells (n_dm2, n_ue4); Wilks/FC: chi2-grid points); ``iou[level]['fcmlc-wilks' | 'fcmlc-fc' |
    'wilks-fc']``: intersection over union on the common raster (areas in log10|Ue4| x log10
    dm2, :func:`fcmlc.validation.common_raster`); ``area_fraction[method][level]``: the region's
    share of the plane on that raster.
    """

    posterior: object
    scan: object
    grid: Grid
    levels: tuple
    regions: dict
    iou: dict
    area_fraction: dict
    truth: tuple | None = None
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        bu, bd = self.posterior.best_point()
        sb = self.scan.best_point
        return {
            "levels": list(self.levels),
            "iou": {f"{L:g}": dict(v) for L, v in self.iou.items()},
            "area_fraction": {m: {f"{L:g}": float(a) for L, a in d.items()} for m, d in self.area_fraction.items()},
            "best_point": {"fcmlc": {"ue4": bu, "dm2": bd, "sin2_2theta": float(sin2_2theta(bu))},
                           "chi2": {"ue4": float(sb[0]), "dm2": float(sb[1]), "sin2_2theta": float(sin2_2theta(sb[0])),
                                    "chi2_min": float(self.scan.min)}},
            "truth": None if self.truth is None else {"ue4": float(self.truth[0]), "dm2": float(self.truth[1])},
            **self.meta,
        }

    def plot(self, ax=None, x: str = "sin2", title=None, legend: bool = True):
        """FCMLC credible regions filled; exact (purple), Wilks (dashed red) and FC (dash-dot
        green) boundaries, each level of a method in its colour and line style, the lowest level
        thin on top and each higher one a wider, paler line beneath (every level visible where
        they coincide: :func:`fcmlc.plotting.level_line_styles`); the FCMLC best point (+), the
        chi2 best fit (red X) and the truth (star); the view framed around what is drawn
        (:func:`fcmlc.plotting.frame_drawn`); IoU in the title. ``legend=False``: no legend (a
        figure with several panels draws one for all). Returns the Axes."""
        from matplotlib.figure import Figure

        if ax is None:
            ax = Figure(figsize=(6.4, 5.6), layout="constrained").subplots()
        g = self.grid
        overlays = []
        pu, pd = self.posterior.ue4, self.posterior.dm2
        for method, lab, key, z in (("exact", "exact", "exact", 3.4), ("wilks", "Wilks", "wilks", 3.2),
                                    ("fc", "Feldman-Cousins", "feldman_cousins", 3.0)):
            if method not in self.regions:
                continue
            st = P.METHOD_STYLES[key]
            per_level = P.level_line_styles(self.levels, st["color"], (st["linestyle"],), zorder=z)
            for L in self.levels:
                where = (pu, pd) if method == "exact" else (g.ue4, g.dm2)
                overlays.append((f"{lab} {P.level_label(L)}", (self.regions[method][L], *where), per_level[float(L)]))
        self.posterior.plot(ax=ax, levels=self.levels, x=x, truth=self.truth, overlays=overlays, best_point=True)
        bu, bd = self.scan.best_point  # the chi2 best fit of the same data, on the chi2 grid
        ax.plot(P.to_xaxis(bu, x), bd, label="χ² best fit", zorder=6, **P.METHOD_STYLES["chi2_best"])
        P.frame_drawn(ax, self.posterior.extent, x=x)  # again, with the chi2 best fit
        if legend:
            ax.legend(loc="best", fontsize="small", framealpha=0.85)
        elif ax.get_legend() is not None:
            ax.get_legend().remove()
        lines = []
        for L in self.levels:  # IoU of every pair, wrapped to the width of the panel
            text = f"IoU {P.level_label(L)}: " + ", ".join(f"{k} {v:.2f}" for k, v in self.iou[L].items())
            lines += textwrap.wrap(text, 78)
        ax.set_title(title or "\n".join(lines), fontsize="small")
        return ax

    def save(self, directory) -> dict:
        """Write comparison.json (summary), comparison.png (figure) and posterior.npz to ``directory``."""
        from matplotlib.figure import Figure

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_json(d / "comparison.json", self.summary())
        fig = Figure(figsize=(6.4, 5.6), layout="constrained")
        self.plot(ax=fig.subplots())
        save_figure(fig, d / "comparison.png", dpi=120)
        self.posterior.to_npz(d / "posterior.npz")
        return {"json": d / "comparison.json", "png": d / "comparison.png", "posterior": d / "posterior.npz"}


def _check_data_vector(x, eset) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size != eset.n_bins:
        raise ValueError(f"x must be one data vector of {eset.n_bins} values ({', '.join(eset.names)} concatenated), "
                         f"got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or infinite values")
    return x


def _overlaps(regions, yg, grid: Grid, levels, max_pixels):
    """IoU of every pair of methods and each method's area fraction, per level, on the common
    raster; and the raster's (ue4 edges, dm2 edges, exact)."""
    ru, rd, exact = common_raster(yg.log_ue4_edges, yg.log_dm2_edges, grid, max_pixels)
    on_raster = {m: {L: regrid_cells(mask, yg.log_ue4_edges, yg.log_dm2_edges, ru, rd)
                     for L, mask in regions[m].items()} for m in ("fcmlc", "exact") if m in regions}
    for m in ("wilks", "fc"):
        if m in regions:
            on_raster[m] = {L: regrid_points(mask, grid, ru, rd) for L, mask in regions[m].items()}
    iou, area = {}, {}
    for L in levels:
        iou[L] = {}
        names = list(on_raster)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                iou[L][f"{a}-{b}"] = region_iou(on_raster[a][L], on_raster[b][L])
    for m, d in on_raster.items():
        area[m] = {L: float(r.mean()) for L, r in d.items()}
    return iou, area, (ru, rd, exact)


def compare(model, x, fc=None, experiments=None, levels=(0.90, 0.95), n_samples: int = 1000, seed: int = 0,
            grid: Grid | None = None, threads=None, truth=None, out=None, max_pixels: int = 2000,
            exact: bool = True) -> Comparison:
    """FCMLC credible regions, Wilks and Feldman-Cousins confidence regions for one data vector.

    x: the data vector (the model's experiments' bins concatenated in the model's order).
    fc: FCResult or path (optional; its grid is then the chi2 grid and must cover ``levels``);
    grid: chi2 grid without ``fc`` (default: the model's training grid). Its points must lie
    inside the model's posterior grid; the comparison covers the posterior grid's extent.

    IoU: the FCMLC regions live on the posterior's cells, the frequentist ones on chi2-grid
    points. Both are mapped onto a common log-uniform raster over the parameter ranges
    (:func:`fcmlc.validation.common_raster`; FCMLC pixel = the cell containing it, frequentist
    pixel = nearest grid point), and IoU = area(A and B) / area(A or B) with areas in
    (log10|Ue4|, log10 dm2): exact for the regions as drawn when the raster is exact (default
    grids: 200 x 200 pixels).
    exact: also the exact posterior on the FCMLC posterior's cells (:mod:`fcmlc.exact`): its HPD
    regions join the IoU table, and ``meta['fcmlc_vs_exact']`` holds the total-variation distance
    of the FCMLC posterior from it.
    out: directory to write comparison.json, comparison.png and posterior.npz to.
    """
    model = load_model(model)
    levels = check_levels(levels)
    seed = check_seed(seed)
    n_samples = check_positive_int(n_samples, "n_samples")
    fc = load_fc(fc)
    eset = model_experiments(model, experiments)
    x = _check_data_vector(x, eset)
    urange, drange = y_ranges(model)
    grid = chi2_grid(model, eset, fc, grid, fc_levels=levels)

    t0 = time.perf_counter()
    with torch_threads(threads):
        dens = model.posterior_density(x[None, :], n_samples=n_samples, seed=seed, threads=threads)[0]
    yg = model.y_grid
    post = Posterior(10.0 ** np.asarray(yg.log_ue4_centres), 10.0 ** np.asarray(yg.log_dm2_centres), dens,
                     meta={"method": "FCMLC", "experiments": list(eset.names), "n_samples": n_samples, "seed": seed})
    t1 = time.perf_counter()
    scan = chi2_scan(Chi2Model(eset.experiments, grid), x, threads=threads)
    t2 = time.perf_counter()
    regions = {"fcmlc": {L: post.credible_region(L) for L in levels}}
    exact_post = None
    if exact:
        exact_post = ExactModel(eset.experiments, grid_of_centres(post.ue4, post.dm2), threads=threads).posterior(x)
        regions["exact"] = {L: exact_post.credible_region(L) for L in levels}
    t3 = time.perf_counter()
    regions["wilks"] = wilks_regions(scan.delta_chi2, levels)
    regions["wilks"] = {L: regions["wilks"][float(L)] for L in levels}
    if fc is not None:
        regions["fc"] = {L: fc.region(scan.delta_chi2, L) for L in levels}
    iou, area, (ru, rd, exact) = _overlaps(regions, yg, grid, levels, max_pixels)
    meta = {"experiments": list(eset.names), "n_samples": n_samples, "seed": seed, "chi2_grid": grid.to_dict(),
            "posterior_grid": {"ue4_range": list(urange), "dm2_range": list(drange),
                               "shape": [int(yg.n_ue4), int(yg.n_dm2)]},
            "raster": {"shape": [ru.size - 1, rd.size - 1], "exact": bool(exact),
                       "definition": "IoU of areas in log10|Ue4| x log10 dm2 over the parameter ranges; FCMLC "
                                     "pixel = containing posterior cell, Wilks/FC pixel = nearest chi2-grid point"},
            "fc": None if fc is None else {"path": None if fc.path is None else str(fc.path), "n_toys": int(fc.n_toys)},
            "seconds": {"fcmlc": t1 - t0, "chi2_scan": t2 - t1, "exact": t3 - t2}, "fcmlc_version": __version__}
    if exact_post is not None:
        meta["fcmlc_vs_exact"] = {"total_variation": float(0.5 * np.abs(post.mass - exact_post.mass).sum()),
                                  "chi2_best_credible_level": float(post.credible_level_of(*scan.best_point))}
    res = Comparison(post, scan, grid, levels, regions, iou, area, None if truth is None else tuple(map(float, truth)),
                     meta)
    if out is not None:
        res.save(out)
    return res
