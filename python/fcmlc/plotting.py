"""Matplotlib helpers in the conventions of sterile-neutrino fits.

Log-log axes with sin^2(2 theta_ee) (or |Ue4|) horizontally and dm2_41 [eV^2]
vertically; credible regions filled in shades of one colour (darker = lower
credibility); other methods' regions (Wilks, Feldman-Cousins, published
sensitivities) drawn as lines. Used by :meth:`fcmlc.posterior.Posterior.plot`
and by the frequentist and validation modules.

pyplot is imported lazily; without a display (and without MPLBACKEND) the
non-interactive Agg backend is selected, so figures can be written on a cluster.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .physics import sin2_2theta
from .regions import mask_contours

__all__ = [
    "pyplot",
    "LEVEL_CMAP",
    "METHOD_STYLES",
    "OVERLAY_COLOURS",
    "level_colours",
    "level_label",
    "level_line_styles",
    "to_xaxis",
    "setup_oscillation_axes",
    "draw_lines",
    "draw_mask",
    "fill_between_thresholds",
    "frame_drawn",
    "RASTER_CAPTION",
]

#: Colour map for filled credible regions (light = high credibility, dark = low).
LEVEL_CMAP = "Blues"

#: Line styles of the methods compared in fcmlc.
METHOD_STYLES = {
    "fcmlc": {"color": "tab:blue", "linestyle": "-"},
    "exact": {"color": "tab:purple", "linestyle": (0, (5, 1, 1, 1))},
    "wilks": {"color": "tab:red", "linestyle": "--"},
    "feldman_cousins": {"color": "tab:green", "linestyle": "-."},
    "sensitivity": {"color": "0.3", "linestyle": ":"},
    "truth": {"color": "tab:orange", "marker": "*", "markersize": 14, "markeredgecolor": "k", "linestyle": "none"},
    "best_fit": {"color": "k", "marker": "+", "markersize": 10, "linestyle": "none"},
    "chi2_best": {"color": "tab:red", "marker": "X", "markersize": 9, "markeredgecolor": "w", "linestyle": "none"},
}

#: Colours cycled through for overlays without a named style.
OVERLAY_COLOURS = ("tab:red", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "0.3")

#: Line styles for several credibility levels of one overlay (lowest level first).
LEVEL_LINESTYLES = ("-", "--", ":", "-.")

#: What a raster-scan line on a region plot is, for a caption under the figure.
RASTER_CAPTION = ("Raster-scan line: a one-dimensional upper limit on sin²2θ, found separately at each Δm² "
                  "(sin²2θ scanned at fixed Δm², Δχ² from that row's minimum, 1 dof). It is not the boundary of a "
                  "2-D region and, by construction, differs from the 2-D regions: it may cross them.")

#: gid of the line marking the edge of the scanned grid (redrawn by :func:`frame_drawn`).
GRID_EDGE_GID = "fcmlc-grid-edge"


def _has_display() -> bool:
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pyplot():
    """matplotlib.pyplot, choosing the Agg backend first when there is no display."""
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND") and not _has_display():
        import matplotlib

        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def level_colours(levels, cmap: str = LEVEL_CMAP) -> dict:
    """Fill colour per credibility level: the highest level gets the lightest shade (light enough
    everywhere for the other methods' lines drawn over the fills to show)."""
    import matplotlib

    levels = sorted(float(v) for v in levels)
    cm = matplotlib.colormaps[cmap]
    n = len(levels)
    shades = np.linspace(0.4, 0.12, n) if n > 1 else [0.3]
    return {lv: cm(s) for lv, s in zip(levels, shades)}


def level_label(level) -> str:
    """'90%' for 0.9, '68.3%' for 0.683."""
    pct = 100.0 * float(level)
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-9 else f"{pct:.3g}%"


def level_line_styles(levels, color, linestyles=("-",), zorder: float = 3.0) -> dict:
    """Line style per level (level -> matplotlib keywords) for one method's region boundaries
    at several levels, each visible where the boundaries coincide (on a coarse grid the 90 % and
    95 % regions often share edges): the lowest level drawn thinnest, opaque and on top; each
    higher level wider, paler and beneath, a band that shows on both sides of the lines above
    it. ``linestyles`` are cycled through the levels (one style: the method's own)."""
    out = {}
    for j, lv in enumerate(sorted(float(v) for v in levels)):
        out[lv] = {"color": color, "linestyle": linestyles[j % len(linestyles)], "linewidth": 1.4 + 1.6 * j,
                   "alpha": (1.0, 0.6, 0.45, 0.35)[min(j, 3)], "zorder": zorder - 0.1 * j}
    return out


def to_xaxis(ue4, x: str = "sin2"):
    """|Ue4| -> horizontal coordinate: sin^2(2 theta_ee) (x='sin2') or |Ue4| (x='ue4')."""
    if x == "sin2":
        return sin2_2theta(ue4)
    if x == "ue4":
        return np.asarray(ue4, dtype=float)
    raise ValueError(f"x must be 'sin2' or 'ue4', got {x!r}")


def setup_oscillation_axes(ax, x: str = "sin2", ue4_range=None, dm2_range=None, title=None):
    """Log-log axes with the field's labels; limits from |Ue4| and dm2 ranges when given."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\sin^2 2\theta_{ee}$" if x == "sin2" else r"$|U_{e4}|$")
    ax.set_ylabel(r"$\Delta m^2_{41}$ [eV$^2$]")
    if ue4_range is not None:
        ax.set_xlim(*to_xaxis(np.asarray(ue4_range, dtype=float), x))
    if dm2_range is not None:
        ax.set_ylim(*dm2_range)
    if title:
        ax.set_title(title)
    return ax


def readable_log_ticks(ax) -> None:
    """Tick labels of both log axes that never overlap: over less than three decades matplotlib
    has one or two labelled decades and labels minor ticks too (2, 3, 4, 6 x 10^k, which collide
    on a narrow panel); there the labels go at 1 and 3 x 10^k (1, 2, 5 x 10^k below 1.3 decades)
    and the other minor ticks stay unlabelled. Call after the limits are set."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or not (0 < lo < hi):
            continue
        span = np.log10(hi / lo)
        if span >= 3:
            continue  # labelled decades, unlabelled minor ticks: matplotlib's default reads well
        subs = (1.0, 2.0, 5.0) if span < 1.3 else (1.0, 3.0)
        k = np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
        majors = (np.asarray(subs)[None, :] * 10.0 ** k[:, None]).ravel()
        if np.count_nonzero((majors >= lo) & (majors <= hi)) < 2:
            continue
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(np.inf, np.inf)))
        axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10)))
        axis.set_minor_formatter(NullFormatter())


def frame_drawn(ax, plane, x: str = "sin2", margin: float = 0.06, min_decades: float = 1.0):
    """Axis limits around what is drawn on ``ax`` -- regions, lines and markers, clipped to
    ``plane`` = (|Ue4| low, |Ue4| high, dm2 low, dm2 high), the extent of the scanned grid --
    widened on each side by ``margin`` of the span (in log10; each axis spans at least
    ``min_decades``), so that nothing sits on the frame (a best fit at sin^2 2theta = 1 or on
    the grid's top row included) and the panel is not mostly empty. Where the view extends
    beyond the grid (always, by the margin), the grid's edge is drawn as a thin grey line (one
    legend entry): regions that reach it are cut there, not closed. Call it again after drawing more."""
    for ln in [a for a in ax.lines if a.get_gid() == GRID_EDGE_GID]:
        ln.remove()
    ax.relim()
    u0, u1, d0, d1 = (float(v) for v in plane)
    xe = to_xaxis(np.array([u0, min(u1, 2 ** -0.5)]), x)
    # the box allowed to the content: the grid, widened to the markers drawn (e.g. a truth outside it)
    box = np.array([[xe[0], d0], [xe[1], d1]])
    for ln in ax.lines:
        if ln.get_marker() not in (None, "None", "", " ") and len(ln.get_xdata()):
            xy = np.column_stack([np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)])
            xy = xy[np.all(np.isfinite(xy) & (xy > 0), axis=1)]
            if len(xy):
                box = np.array([np.minimum(box[0], xy.min(0)), np.maximum(box[1], xy.max(0))])
    lo, hi = ax.dataLim.min, ax.dataLim.max
    if not (np.all(np.isfinite([*lo, *hi])) and np.all(hi >= lo)):  # nothing drawn: the grid
        lo, hi = box
    content = np.clip(np.array([lo, hi]), box[0], box[1])
    lims = []
    for a, b in content.T:
        la, lb = np.log10(max(a, 1e-300)), np.log10(max(b, 1e-300))
        if lb - la < min_decades:
            mid = 0.5 * (la + lb)
            la, lb = mid - 0.5 * min_decades, mid + 0.5 * min_decades
        pad = margin * (lb - la)
        lims.append((10.0 ** (la - pad), 10.0 ** (lb + pad)))
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    readable_log_ticks(ax)
    # the grid's edge (the view always extends beyond it by the margin)
    edge = np.array([[xe[0], d0], [xe[1], d0], [xe[1], d1], [xe[0], d1], [xe[0], d0]])
    ax.plot(edge[:, 0], edge[:, 1], color="0.55", linewidth=0.8, zorder=2.5, gid=GRID_EDGE_GID,
            label="edge of the scanned grid", scalex=False, scaley=False)
    return ax


def draw_lines(ax, lines, x: str = "sin2", label=None, **style):
    """Draw contour lines given as (N, 2) arrays of (|Ue4|, dm2); one legend entry."""
    style = {"linewidth": 1.6, **style}
    handle = None
    for i, v in enumerate(lines):
        v = np.asarray(v, dtype=float)
        if v.ndim != 2 or v.shape[1] != 2:
            raise ValueError(f"contour lines must be (N, 2) arrays of (|Ue4|, dm2), got shape {v.shape}")
        (h,) = ax.plot(to_xaxis(v[:, 0], x), v[:, 1], label=label if i == 0 else None, **style)
        handle = handle or h
    if handle is None and label is not None:  # empty region: keep the legend entry
        (handle,) = ax.plot([], [], label=label, **style)
    return handle


def draw_mask(ax, mask, ue4, dm2, x: str = "sin2", label=None, **style):
    """Draw the boundary of a boolean region (n_dm2, n_ue4) on the grid ``ue4`` x ``dm2``."""
    return draw_lines(ax, mask_contours(mask, ue4, dm2), x=x, label=label, **style)


def fill_between_thresholds(ax, density, ue4, dm2, lower, upper=None, x: str = "sin2", **style):
    """Fill the part of the grid where lower <= density (< upper); interpolation in
    (log10|Ue4|, log10 dm2), polygons drawn in the axis coordinates of ``x``."""
    import contourpy
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path

    lu, ld = np.log10(np.asarray(ue4, dtype=float)), np.log10(np.asarray(dm2, dtype=float))
    gen = contourpy.contour_generator(x=lu, y=ld, z=np.asarray(density, dtype=float), fill_type=contourpy.FillType.OuterCode)
    hi = np.inf if upper is None else float(upper)
    points, codes = gen.filled(float(lower), hi)
    patch = None
    for pts, cds in zip(points, codes):
        xy = np.column_stack([to_xaxis(10.0 ** pts[:, 0], x), 10.0 ** pts[:, 1]])
        patch = PathPatch(Path(xy, cds), **{"linewidth": 0, **style})
        ax.add_patch(patch)
        style.pop("label", None)  # one legend entry
    return patch
