"""The report's figures (analogues of the paper's Figs. 2-5), each drawn from a step's results
and saved all or nothing under its fixed name. matplotlib loads only when a figure is drawn."""
from __future__ import annotations

import numpy as np

from .._io import save_figure
from ..physics import sin2_2theta
from ..plotting import METHOD_STYLES
from .scales import SENSITIVITY_LEVEL, TASK_TITLES

#: File names of the figures, in the report's order (relative to a task's output directory).
FIGURE_FILES = ("fig2_mse.png", "fig3_examples.png", "fig4_coverage.png", "fig5_observed.png")


def new_figure(figsize):
    """A matplotlib Figure with constrained layout, without pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def draw_sensitivity(ax, sens, label=None):
    """The Asimov sensitivity curve (``fits.sensitivity``'s (ue4_limit, dm2)) on an
    oscillation-plane axis, where a limit exists."""
    lim, dm2 = sens
    ok = np.isfinite(lim)
    if not ok.any():
        return
    st = METHOD_STYLES["sensitivity"]
    ax.plot(sin2_2theta(np.minimum(lim[ok], 1 / np.sqrt(2))), dm2[ok], color=st["color"], linestyle=st["linestyle"],
            linewidth=1.6, label=label or f"Asimov sensitivity (Wilks raster {100 * SENSITIVITY_LEVEL:.0f}%)",
            zorder=4)


def fig2_mse(mm, sens, task: str, path):
    """Fig. 2: the binned MSE maps ``mm`` (validation.mse_maps) with the sensitivity curve."""
    fig = new_figure((11.5, 4.8))
    mm.plot(fig=fig)
    for ax in fig.axes[:len(mm.maps)]:
        draw_sensitivity(ax, sens)
        ax.legend(loc="lower left", fontsize="small")
    fig.suptitle(f"Fig. 2 analogue - {TASK_TITLES[task]}: binned test-set MSE of the regressor "
                 f"(white = accurate)", fontsize="medium")
    save_figure(fig, path)


def fig3_examples(comps: dict, truths: dict, sens, task: str, path):
    """Fig. 3: one panel per example realization (name -> validation.compare result, truth
    (ue4, dm2)), FCMLC regions filled, Wilks and FC regions as lines, with the sensitivity."""
    fig = new_figure((12.5, 5.6))
    axes = fig.subplots(1, 2)
    for i, (k, comp) in enumerate(comps.items()):
        comp.plot(ax=axes[i], title=None)
        draw_sensitivity(axes[i], sens)
        axes[i].legend(loc="lower left", fontsize="x-small", framealpha=0.85)
        axes[i].set_title(f"{k} realization, truth sin$^2 2\\theta$={sin2_2theta(truths[k][0]):.2g}, "
                          f"$\\Delta m^2$={truths[k][1]:.3g} eV$^2$", fontsize="small")
    fig.suptitle(f"Fig. 3 analogue - {TASK_TITLES[task]}: FCMLC credible regions (filled) vs Wilks and "
                 "Feldman-Cousins confidence regions (lines)", fontsize="medium")
    save_figure(fig, path)


def fig4_coverage(cv, task: str, path):
    """Fig. 4: the coverage curves of ``cv`` (validation.coverage) with their binomial bands."""
    fig = new_figure((6.2, 5.8))
    ax = fig.subplots()
    cv.plot(ax=ax, title=f"Fig. 4 analogue - {TASK_TITLES[task]}\n{cv.n_trials} trials, log-uniform truths, "
                         f"{100 * cv.band:.3g}% binomial bands")
    save_figure(fig, path)


def fig5_observed(comp, real: list, mock: list, task: str, path):
    """Fig. 5: the fit on observed data, titled with which experiments entered with real and
    which with MOCK data."""
    fig = new_figure((6.8, 6.0))
    ax = fig.subplots()
    comp.plot(ax=ax)
    label = ("real data: " + ", ".join(real) if real else "no real data") + \
            ("; MOCK (no-oscillation realization): " + ", ".join(mock) if mock else "")
    ax.set_title(f"Fig. 5 analogue - {TASK_TITLES[task]}\n{label}\n" + ax.get_title(), fontsize="small")
    save_figure(fig, path)
