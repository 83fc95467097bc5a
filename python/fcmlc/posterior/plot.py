"""Plots of a :class:`~fcmlc.posterior.Posterior` in the field's conventions (:mod:`fcmlc.plotting`).

:class:`PosteriorPlots` holds the plotting methods; ``Posterior`` inherits them. matplotlib is
imported only when a plot is made.
"""
from __future__ import annotations

import numpy as np

from .. import plotting as P
from .._io import save_figure
from ..regions import extend_to_cell_edges, threshold_contours

__all__ = ["PosteriorPlots"]


class PosteriorPlots:
    """The plotting methods of :class:`~fcmlc.posterior.Posterior` (uses its ``density``, ``ue4``,
    ``dm2``, ``shape``, ``extent``, ``hpd_threshold``, ``contours`` and ``best_point``)."""

    def plot(self, ax=None, levels=(0.68, 0.9, 0.95), x="sin2", truth=None, overlays=None, title=None, best_point=False):
        """Credible regions in the field's conventions; returns the Axes.

        Log-log axes, horizontal sin^2(2 theta_ee) (x='sin2') or |Ue4| (x='ue4'),
        vertical dm2 [eV^2]; the HPD regions at ``levels`` filled (darker = lower level)
        with their boundaries drawn and named in the legend. The view frames what is drawn
        (:func:`fcmlc.plotting.frame_drawn`: a margin around the regions and markers, the
        grid's edge drawn where the view goes beyond it).

        truth: (|Ue4|, dm2) marked with a star. best_point: mark the densest cell.
        overlays: other regions drawn as lines, a list of tuples
            ``(label, region)`` or ``(label, region, style_dict)`` where region is
            - a boolean mask (n_d, n_u) on this posterior's grid (e.g. a Wilks or
              Feldman-Cousins region from the same chi2 grid),
            - a tuple ``(mask, ue4_centres, dm2_centres)`` for a mask on another grid,
            - another :class:`Posterior` (its HPD regions at ``levels``; line width and shade per
              level, :func:`fcmlc.plotting.level_line_styles`),
            - a list of (N, 2) arrays of (|Ue4|, dm2) vertices (e.g. :meth:`contours`
              or a published curve).
        """
        if ax is None:
            _, ax = P.pyplot().subplots(figsize=(6.0, 5.0), constrained_layout=True)
        levels = sorted(float(v) for v in levels)
        name = "exact" if self.meta.get("method") == "exact" else "FCMLC"  # whose regions the legend names
        colours = P.level_colours(levels)
        dmax = float(self.density.max())
        # regions are unions of cells: drawn on the field extended to the outer cell edges, so a
        # region holding an edge cell reaches the edge of the plane (sin^2 2theta = 1 included)
        fext, uext, dext = extend_to_cell_edges(self.density, self.ue4, self.dm2)
        for lv in levels[::-1]:  # innermost (lowest level) last, on top
            h = self.hpd_threshold(lv)
            P.fill_between_thresholds(
                ax, fext, uext, dext, h, 2.0 * dmax + 1.0, x=x, facecolor=colours[lv], alpha=0.9,
                label=f"{name} {P.level_label(lv)} CR", zorder=1,
            )
            P.draw_lines(ax, threshold_contours(fext, uext, dext, h), x=x,
                         color=P.METHOD_STYLES["fcmlc"]["color"], linewidth=1.0, zorder=2)
        for i, item in enumerate(overlays or ()):
            self._draw_overlay(ax, item, i, levels, x)
        if truth is not None:
            tu, td = truth
            ax.plot(P.to_xaxis(tu, x), td, label="truth", zorder=5, **P.METHOD_STYLES["truth"])
        if best_point:
            bu, bd = self.best_point()
            ax.plot(P.to_xaxis(bu, x), bd, label="best point", zorder=5, **P.METHOD_STYLES["best_fit"])
        P.setup_oscillation_axes(ax, x=x, title=title)
        P.frame_drawn(ax, self.extent, x=x)  # around what is drawn (a truth outside the cells included)
        ax.legend(loc="best", fontsize="small", framealpha=0.85)
        return ax

    def save_plot(self, path, truth=None, title=None, dpi: int = 120):
        """:meth:`plot` (6 x 5 in) written to ``path`` all or nothing (format from the suffix)."""
        from matplotlib.figure import Figure  # matplotlib: loaded for a figure only

        fig = Figure(figsize=(6.0, 5.0), layout="constrained")
        ax = fig.subplots()
        self.plot(ax=ax, truth=truth)
        if title:
            ax.set_title(title)
        save_figure(fig, path, dpi=dpi)

    def _draw_overlay(self, ax, item, i, levels, x):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError("each overlay must be (label, region) or (label, region, style_dict)")
        label, region = item[0], item[1]
        style = {"color": P.OVERLAY_COLOURS[i % len(P.OVERLAY_COLOURS)], "zorder": 3}
        key = str(label).lower().replace("-", "_").replace(" ", "_")
        for name, st in P.METHOD_STYLES.items():
            if name in key:
                style.update({k: v for k, v in st.items() if k in ("color", "linestyle")})
        if len(item) == 3:
            style.update(item[2])
        if isinstance(region, PosteriorPlots):
            per_level = P.level_line_styles(levels, style["color"], (style.get("linestyle", "-"),), style["zorder"])
            for lv in levels:
                st = {**style, **per_level[lv]}
                P.draw_lines(ax, region.contours(lv), x=x, label=f"{label} {P.level_label(lv)}", **st)
            return
        if isinstance(region, np.ndarray) and region.dtype == bool:
            if region.shape != self.shape:
                raise ValueError(
                    f"overlay {label!r}: mask shape {region.shape} differs from this grid {self.shape}; "
                    "pass (mask, ue4_centres, dm2_centres) for a mask on another grid"
                )
            P.draw_mask(ax, region, self.ue4, self.dm2, x=x, label=label, **style)
            return
        if isinstance(region, tuple) and len(region) == 3 and np.asarray(region[0]).dtype == bool:
            mask, u, d = region
            P.draw_mask(ax, np.asarray(mask), np.asarray(u, dtype=float), np.asarray(d, dtype=float), x=x, label=label, **style)
            return
        if isinstance(region, (list, tuple)):
            P.draw_lines(ax, region, x=x, label=label, **style)
            return
        raise ValueError(
            f"overlay {label!r}: region must be a boolean mask, (mask, ue4, dm2), a Posterior or a list of "
            f"(N, 2) arrays; got {type(region).__name__}"
        )
