"""The report's figures (analogues of the paper's Figs. 2-5), each drawn from a step's results
and saved all or nothing under its fixed name. matplotlib loads only when a figure is drawn."""
from __future__ import annotations

import textwrap

import numpy as np

from .._io import save_figure
from ..physics import sin2_2theta
from ..plotting import METHOD_STYLES, frame_drawn
from .scales import SENSITIVITY_LEVEL, TASK_TITLES

#: File names of the figures, in the report's order (relative to a task's output directory).
FIGURE_FILES = ("fig2_mse.png", "fig3_examples.png", "fig4_coverage.png", "fig5_observed.png")


def new_figure(figsize):
    """A matplotlib Figure with constrained layout, without pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


#: Legend entry of the Asimov sensitivity: a raster-scan line, one limit per dm2 (not a 2-D region).
SENSITIVITY_LABEL = (f"Asimov sensitivity: expected {100 * SENSITIVITY_LEVEL:.0f}% limit\n"
                     "per Δm² (1-D raster scan, Wilks 1 dof)")
#: Caption of the figures that draw it.
SENSITIVITY_CAPTION = ("Dotted grey: the expected (Asimov, no-oscillation data) raster-scan upper limit on sin²2θ, "
                       "found separately at each Δm²; a one-dimensional limit, not the boundary of a 2-D region, so it "
                       "differs from the regions by construction.")


def draw_sensitivity(ax, sens, label=None):
    """The Asimov sensitivity curve (``fits.sensitivity``'s (ue4_limit, dm2)) on an
    oscillation-plane axis, where a limit exists (legend: :data:`SENSITIVITY_LABEL`)."""
    lim, dm2 = sens
    ok = np.isfinite(lim)
    if not ok.any():
        return
    st = METHOD_STYLES["sensitivity"]
    ax.plot(sin2_2theta(np.minimum(lim[ok], 1 / np.sqrt(2))), dm2[ok], color=st["color"], linestyle=st["linestyle"],
            linewidth=1.6, label=label or SENSITIVITY_LABEL, zorder=4)


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


def figure_legend(fig, axes, loc: str, ncol: int):
    """One legend beside the panels (``loc``: 'outside lower center', ...) for every entry drawn
    on any of ``axes`` (the first handle of each label)."""
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc=loc, ncol=ncol, fontsize="small",
               frameon=False)


def fig3_examples(comps: dict, truths: dict, sens, task: str, path):
    """Fig. 3: one panel per example realization (name -> validation.compare result, truth
    (ue4, dm2)), FCMLC regions filled, Wilks and FC regions as lines, with the sensitivity; one
    legend and a caption for both panels below them."""
    fig = new_figure((12.5, 7.4))
    axes = fig.subplots(1, 2)
    for i, (k, comp) in enumerate(comps.items()):
        comp.plot(ax=axes[i], title=None, legend=False)
        draw_sensitivity(axes[i], sens)
        frame_drawn(axes[i], comp.posterior.extent)  # with the sensitivity curve
        axes[i].set_title(f"{k} realization, truth sin$^2 2\\theta$={sin2_2theta(truths[k][0]):.2g}, "
                          f"$\\Delta m^2$={truths[k][1]:.3g} eV$^2$", fontsize="small")
    figure_legend(fig, axes, "outside lower center", ncol=5)
    fig.suptitle(f"Fig. 3 analogue - {TASK_TITLES[task]}: FCMLC credible regions (filled) vs Wilks and "
                 "Feldman-Cousins confidence regions (lines)\n" + "\n".join(textwrap.wrap(SENSITIVITY_CAPTION, 140)),
                 fontsize="medium")
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
    fig = new_figure((9.6, 6.0))
    ax = fig.subplots()
    comp.plot(ax=ax, legend=False)
    figure_legend(fig, [ax], "outside right upper", ncol=1)
    label = ("real data: " + ", ".join(real) if real else "no real data") + \
            ("; MOCK (no-oscillation realization): " + ", ".join(mock) if mock else "")
    ax.set_title(f"Fig. 5 analogue - {TASK_TITLES[task]}\n{label}\n" + ax.get_title(), fontsize="small")
    save_figure(fig, path)
