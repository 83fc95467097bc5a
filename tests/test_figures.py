"""Every figure of the report (Figs. 2-5), `fcmlc wilks`'s wilks.png and a posterior's plot,
rendered from small toy inputs: every marker lies inside its axes and off the frame, every
level of every method is drawn distinguishably (a wider, paler line beneath where boundaries
coincide), the view frames what is drawn, and raster-scan lines say what they are."""
from __future__ import annotations

import numpy as np
import pytest

from _toys import gaussian_toy
from fcmlc import cli
from fcmlc.cli import frequentist as cli_frequentist
from fcmlc.exact import ExactModel
from fcmlc.frequentist import Chi2Model, chi2_scan, raster_limits, wilks_regions
from fcmlc.physics import Grid
from fcmlc.plotting import RASTER_CAPTION
from fcmlc.reproduce import figures
from fcmlc.simulation import realizations
from fcmlc.validation import Comparison, CoverageResult, MSEMaps

LEVELS = (0.9, 0.95)
# a marker closer to the frame than this share of the axis (in the axis' scale) counts as on the
# frame: a 10-point marker on a 5-inch axis covers ~3 %, so half of it spills over below ~1.5 %
FRAME_MARGIN = 0.015


@pytest.fixture(scope="module")
def toy():
    exp = gaussian_toy()
    grid = Grid(shape=(13, 13))
    model = Chi2Model([exp], grid)
    exact = ExactModel([exp], grid)
    sens = raster_limits(chi2_scan(model, exp.null_expectation).delta_chi2, 0.9, grid), grid.dm2
    return exp, grid, model, exact, sens


def _comparison(toy, truth, seed):
    exp, grid, model, exact, _ = toy
    x = realizations([exp], [truth[0]], [truth[1]], 1, seed=seed)[0, 0]
    scan = chi2_scan(model, x)
    post = exact.posterior(x)
    wilks = wilks_regions(scan.delta_chi2, LEVELS)
    # a coarse FC construction often gives the same region at 90 and 95 %: drawn on top of each other
    regions = {"fcmlc": {L: post.credible_region(L) for L in LEVELS}, "wilks": {L: wilks[L] for L in LEVELS},
               "fc": {L: wilks[0.9] for L in LEVELS}}
    iou = {L: {"fcmlc-wilks": 0.5, "fcmlc-fc": 0.5, "wilks-fc": 1.0} for L in LEVELS}
    return Comparison(post, scan, grid, LEVELS, regions, iou, {}, truth)


@pytest.fixture
def captured(monkeypatch):
    """The figures the report and the CLI save, kept instead of written."""
    figs = []
    for mod in (figures, cli_frequentist):
        monkeypatch.setattr(mod, "save_figure", lambda fig, path, **kw: figs.append(fig))
    return figs


def _markers(ax):
    return [ln for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "", " ") and len(ln.get_xdata())]


def _assert_markers_inside(ax):
    to_axes = ax.transScale + ax.transLimits  # data -> (0, 1) axes coordinates
    for ln in _markers(ax):
        xy = np.column_stack([np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)])
        a = to_axes.transform(xy)
        assert np.all((a >= FRAME_MARGIN) & (a <= 1 - FRAME_MARGIN)), (ln.get_label(), xy, ax.get_xlim(), ax.get_ylim())


def _fig_text(fig, which: str) -> str:
    """The figure's suptitle or supxlabel text, on one line (getters from matplotlib 3.8; the
    attribute before)."""
    get = getattr(fig, f"get_{which}", None)
    text = get() if get is not None else (getattr(fig, f"_{which}").get_text() if getattr(fig, f"_{which}") else "")
    return text.replace("\n", " ")


def _styles(ax):
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def test_fig3_and_fig5_markers_levels_and_view(toy, captured, tmp_path):
    exp, grid, *_ = toy
    # null-like: the truth on the outer edge of the lowest-|Ue4| cells (the report's null-like truth
    # lies on the edge of the FCMLC posterior's cells): on the frame before the view framed the markers
    half = 0.5 * (np.log10(grid.ue4[1]) - np.log10(grid.ue4[0]))
    null = _comparison(toy, (grid.ue4[0] * 10 ** -half, 1.0), seed=3)
    signal = _comparison(toy, (0.3, 2.0), seed=4)
    figures.fig3_examples({"null-like": null, "signal-like": signal},
                          {"null-like": null.truth, "signal-like": signal.truth}, toy[4], "best", tmp_path / "f3.png")
    figures.fig5_observed(signal, ["TOY"], [], "best", tmp_path / "f5.png")
    fig3, fig5 = captured
    for ax in [*fig3.axes, *fig5.axes]:
        _assert_markers_inside(ax)
        st = _styles(ax)
        assert {"truth", "best point", "χ² best fit", "edge of the scanned grid"} <= set(st)
        for method in ("Wilks", "Feldman-Cousins"):  # the 95 % line shows beside the 90 % one it may share
            lo, hi = st[f"{method} 90%"], st[f"{method} 95%"]
            assert hi.get_linewidth() > lo.get_linewidth() + 1 and hi.get_zorder() < lo.get_zorder()
            assert lo.get_color() == hi.get_color()
    # one legend for both panels of Fig. 3, naming the sensitivity as a per-dm2 1-D limit, with a caption
    labels = [t.get_text() for t in fig3.legends[0].get_texts()]
    assert any("per Δm² (1-D raster scan" in t for t in labels) and "Feldman-Cousins 95%" in labels
    assert figures.SENSITIVITY_CAPTION in _fig_text(fig3, "suptitle")
    # Fig. 5's view frames the signal-like regions: the largest drawn region fills most of the view
    ax = fig5.axes[0]
    (x0, x1), (y0, y1) = np.log10(ax.get_xlim()), np.log10(ax.get_ylim())
    ax.relim()
    lim = ax.dataLim
    assert (np.log10(lim.x1) - np.log10(lim.x0)) / (x1 - x0) > 0.7
    assert (np.log10(lim.y1) - np.log10(lim.y0)) / (y1 - y0) > 0.7


def test_fig2_and_fig4_markers_inside(toy, captured, tmp_path):
    exp, grid, *_ = toy
    edges_u, edges_d = np.log10(grid.ue4_range), np.log10(grid.dm2_range)
    r = np.random.default_rng(0)
    mse = r.uniform(0.01, 1.0, (grid.n_dm2, grid.n_ue4))
    mm = MSEMaps(10 ** np.linspace(*edges_u, grid.n_ue4 + 1), 10 ** np.linspace(*edges_d, grid.n_dm2 + 1), "log10",
                 {"interpolation": {"mse": mse, "count": np.ones_like(mse)},
                  "random": {"mse": mse[::-1], "count": np.ones_like(mse)}}, {"interpolation": 0.1, "random": 0.2})
    figures.fig2_mse(mm, toy[4], "best", tmp_path / "f2.png")
    n = 50
    covered = {m: np.ones((n, 3), bool) for m in ("fcmlc", "wilks")}  # coverage 1 at every level
    cv = CoverageResult((0.68, 0.9, 0.95), ("fcmlc", "wilks"), "continuous", np.full(n, 0.1), np.full(n, 1.0),
                        covered, {"fcmlc": np.zeros(n), "wilks": np.zeros(n)}, np.linspace(0, 1, 11))
    figures.fig4_coverage(cv, "best", tmp_path / "f4.png")
    for fig in captured:
        for ax in fig.axes:
            _assert_markers_inside(ax)
    assert any(ln.get_label().startswith("Asimov sensitivity") for ln in captured[0].axes[0].get_lines())


def test_wilks_png_explains_its_raster_line(captured, tmp_path):
    assert cli.main(["wilks", "--experiments", "BEST", "--grid", "13", "--asimov", "0.3", "2.0", "--seed", "1",
                     "-o", str(tmp_path / "w")]) == 0
    (fig,) = captured
    ax = fig.axes[0]
    _assert_markers_inside(ax)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("90% raster-scan limit") and "1-D, per Δm²" in t for t in labels)
    assert _fig_text(fig, "supxlabel") == RASTER_CAPTION
    st = _styles(ax)
    assert st["Wilks 95%"].get_linewidth() > st["Wilks 90%"].get_linewidth()


def test_posterior_plot_frames_a_truth_outside_the_cells(toy):
    exp, grid, model, exact, _ = toy
    x = realizations([exp], [0.3], [2.0], 1, seed=5)[0, 0]
    ax = exact.posterior(x).plot(truth=(1e-4, 20.0), best_point=True)  # beyond the grid on both axes
    _assert_markers_inside(ax)
    assert {"truth", "best point"} <= set(_styles(ax))


@pytest.mark.parametrize("width", [4.0, 9.0])
@pytest.mark.parametrize("sin2_range", [(0.07, 0.4), (0.02, 0.6), (0.016, 0.9), (1e-5, 0.9)])
def test_log_tick_labels_never_overlap(sin2_range, width):
    """Over less than three decades matplotlib labels the minor ticks too (2, 3, 4, 6 x 10^k),
    which collided on the global fit's observed-data figure ("3x10^-2" over "4x10^-2"): every axis
    framed by frame_drawn has at least two labels, none of them overlapping."""
    from fcmlc.plotting import frame_drawn, pyplot, setup_oscillation_axes

    fig, ax = pyplot().subplots(figsize=(width, 3.5), layout="constrained")
    setup_oscillation_axes(ax)
    ax.plot(list(sin2_range), [0.3, 9.0], "o")
    frame_drawn(ax, (1e-3, 2 ** -0.5, 0.01, 10.0))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for axis in (ax.xaxis, ax.yaxis):
        labels = [t for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
        lo, hi = sorted(axis.get_view_interval())
        inside = [t for t, v in zip(labels, [t.get_position()[axis is ax.yaxis] for t in labels]) if lo <= v <= hi]
        assert len(inside) >= 2, [t.get_text() for t in inside]
        boxes = sorted((t.get_window_extent(renderer) for t in inside), key=lambda b: (b.x0, b.y0))
        for a, b in zip(boxes, boxes[1:]):
            assert not a.overlaps(b), (a, b)
    pyplot().close(fig)
