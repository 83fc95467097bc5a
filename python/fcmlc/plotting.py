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
    "to_xaxis",
    "setup_oscillation_axes",
    "draw_lines",
    "draw_mask",
    "fill_between_thresholds",
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
    """Fill colour per credibility level: the highest level gets the lightest shade."""
    import matplotlib

    levels = sorted(float(v) for v in levels)
    cm = matplotlib.colormaps[cmap]
    n = len(levels)
    shades = np.linspace(0.85, 0.35, n) if n > 1 else [0.6]
    return {lv: cm(s) for lv, s in zip(levels, shades)}


def level_label(level) -> str:
    """'90%' for 0.9, '68.3%' for 0.683."""
    pct = 100.0 * float(level)
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-9 else f"{pct:.3g}%"


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
