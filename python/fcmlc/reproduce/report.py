"""REPORT.md of `fcmlc reproduce`: one section per figure of the paper plus settings, data
provenance and Table II timings, written from the step records; and the index of ``--task all``.

Every number comes from the records' results (``steps/*.json``); nothing is recomputed here.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .. import __version__
from .._io import atomic_write_text
from ..physics import UE4_RANGE
from .figures import FIGURE_FILES
from .scales import FC_LEVELS, FIT_LEVELS, SENSITIVITY_LEVEL, TASK_TITLES, TASKS, Scale

#: The paper's timings (CPU hours) for its whole study, Table II and Sec. IV A.
PAPER_TABLE_II = (
    ("Realization generation (shared)", 2400.0, "Table II; Sec. IV A: \"~2.4 K computing hours\""),
    ("FCMLC: neural network training", 20.0 / 60.0,
     "Sec. IV A: networks and flows \"~20 minutes each to train on a CPU\""),
    ("FCMLC: normalizing flows", 0.3, "Table II"),
    ("FCMLC: integration / evaluation", 0.1, "Table II; Sec. IV A: \"~5 minutes\""),
    ("FCMLC: total", 2500.0, "Table II (\"~2.5 khrs\")"),
    ("sblmc fit of every realization (FC)", 510000.0, "Table II; Sec. IV A: ~2 h per realization (MCMC)"),
    ("Feldman-Cousins construction", 4.0, "Table II"),
    ("Feldman-Cousins: total", 510000.0, "Table II (\"~510 khrs\", ~200x FCMLC)"),
)

METHOD_NAMES = {"fcmlc": "FCMLC", "exact": "exact posterior", "wilks": "Wilks", "fc": "Feldman-Cousins"}


# ------------------------------------------------------------------------------------------------
# number formats


def fmt(v, spec=".3g"):
    """A number for the report: booleans as yes/no, None and non-finite values as n/a."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return format(f, spec) if math.isfinite(f) else "n/a"


def fmt_seconds(s):
    """A duration in ms, s, min or h, whichever reads best."""
    if s is None:
        return "n/a"
    s = float(s)
    if s < 1:
        return f"{1e3 * s:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def extent_text(e):
    """A region's extent (``fits.region_extent``) in words."""
    if not e:
        return "empty"
    return (f"sin²2θ {fmt(e['sin2_min'])}–{fmt(e['sin2_max'])}, Δm² {fmt(e['dm2_min'])}–{fmt(e['dm2_max'])} eV² "
            f"({e['n_cells']} cells)")


# ------------------------------------------------------------------------------------------------
# sections of REPORT.md (each a list of lines, ending with a blank one)


def _header(task, sc: Scale, seed) -> list:
    return [
        f"# fcmlc reproduce — {TASK_TITLES[task]}",
        "",
        f"Experiments: {', '.join(TASKS[task])}. Scale `{sc.name}`: {sc.description}. Seed {seed}. fcmlc {__version__}. "
        f"Reproduces the pipeline of the FCMLC paper (Villarreal, Hardin, Conrad 2025), Figs. 2-5 and Table II. "
        f"Every number below is computed by this run (or by the earlier run whose finished steps were reused; "
        f"`steps/*.json` hold the settings and results of each step).",
        "",
    ]


def _settings(sc: Scale, R) -> list:
    g = sc.grid_shape
    rs, tr = R["simulate"], R["train"]
    return [
        "## Settings",
        "",
        "| item | value |",
        "|---|---|",
        f"| parameter grid | {g[0]} x {g[1]} (\\|Ue4\\| x Δm²), log-spaced, \\|Ue4\\| in [{UE4_RANGE[0]:g}, 1/√2], "
        f"Δm² in [{sc.dm2_range[0]:g}, {sc.dm2_range[1]:g}] eV² |",
        f"| realizations | {sc.n_per_point} per grid point, {rs['n_samples']} in all ({rs['n_features']} bins each); "
        f"train {rs['n_train']}, interpolation test {rs['n_test_interpolation']}, random test {rs['n_test_random']} |",
        f"| training | preset `{sc.train.get('hyperparameters', 'paper')}`, overlay `{json.dumps(sc.train)}`; "
        f"regressor layers {tr['hidden']}; KDE grid {tr['yhat_shape'][0]} x {tr['yhat_shape'][1]}, posterior grid "
        f"{tr['y_shape'][0]} x {tr['y_shape'][1]}; device {tr['device']} |",
        f"| regressor | {tr['regressor']['epochs']} epochs (stop: {tr['regressor']['stop_reason']}), best validation "
        f"MSE {fmt(tr['regressor']['best_val_mse'])} (standardised units) |",
        f"| flow | {tr['flow']['epochs']} epochs (stop: {tr['flow']['stop_reason']}), best validation NLL "
        f"{fmt(tr['flow']['best_val_nll'])} nats |",
        (f"| **machine-dependent model** | {tr.get('machine_dependent_reason')} |" if tr.get("machine_dependent") else
         "| training stop | epochs and patience only: the same seed gives the same model however fast or busy the "
         "machine |"),
        f"| Feldman-Cousins | {sc.fc_toys} toys per grid point on the same {g[0]} x {g[1]} grid, levels "
        f"{', '.join(f'{x:g}' for x in FC_LEVELS)}; median critical values "
        + ", ".join(f"{k}: {fmt(v)} (Wilks {fmt(R['feldman_cousins']['wilks_2dof'][k])})"
                    for k, v in R['feldman_cousins']['critical_median'].items()) + " |",
        f"| fits | {sc.mc_samples} MC-dropout samples per FCMLC fit; regions drawn at "
        f"{', '.join(f'{100 * x:.0f}%' for x in FIT_LEVELS)} |",
        f"| coverage | {sc.coverage_trials} trials, truths log-uniform over the grid's ranges (paper Sec. II C 2) |",
        "",
    ]


def _data(data, hint, data_dir) -> list:
    L = ["## Data entering the fit on observed data", "", "| experiment | data | model |", "|---|---|---|"]
    for d in data:
        L.append(f"| {d['name']} | {'**real**' if d['kind'] == 'real' else '**mock**'}: {d['source']} | {d['model']} |")
    L.append("")
    if hint:
        L += [f"> {hint}", ""]
    L += [f"Data directory: `{data_dir}`." if data_dir else
          "Data directory: none found (no `../shared/data` beside the repository or the working directory): "
          "experiments with an official data release use their built-in models and mock data.", ""]
    return L


def _fig2(sc: Scale, m) -> list:
    return [
        "## Fig. 2 — regressor accuracy (binned MSE)",
        "",
        "![Fig. 2](fig2_mse.png)",
        "",
        f"Test-set mean squared error of the regressor's mean prediction (in {m['variables']} units, "
        f"log10|Ue4| and log10 Δm²), one bin per grid point: interpolation sample "
        f"{fmt(m['overall_mse']['interpolation'])} ({m['n_test_samples']['interpolation']} samples), random sample "
        f"{fmt(m['overall_mse']['random'])} ({m['n_test_samples']['random']} samples). The dotted line is the "
        f"Asimov sensitivity computed here (no-oscillation expectation, raster scan, Wilks 1 dof, "
        f"{100 * SENSITIVITY_LEVEL:.0f}% CL; limits exist in {m['sensitive_dm2_rows']} of {sc.grid_shape[1]} Δm² rows): "
        "the regressor should be accurate (white) to its right, as in the paper's Fig. 2. Grey: no test sample at "
        "that grid point (the interpolation sample holds out 10% of the grid points entirely).",
        "",
    ]


def _fig3(examples) -> list:
    L = ["## Fig. 3 — example fits on simulated realizations", "", "![Fig. 3](fig3_examples.png)", "",
         "| realization | truth (sin²2θ, Δm²) | Asimov Δχ² of no oscillation | FCMLC credible level of the truth | "
         "FCMLC best point | level | FCMLC region | excludes no-oscillation edge (FCMLC / Wilks / FC) | "
         "truth inside (FCMLC / Wilks / FC) |",
         "|---|---|---|---|---|---|---|---|---|"]
    for k, e in examples.items():
        t = e["truth"]
        b = e["best_point"]["fcmlc"]
        for lv, reg in e["regions"].items():
            L.append(f"| {k} | ({fmt(t['sin2_2theta'])}, {fmt(t['dm2'])} eV²) | {fmt(e['asimov_delta_chi2_null'])} | "
                     f"{fmt(e['truth_credible_level'])} | ({fmt(b['sin2_2theta'])}, {fmt(b['dm2'])} eV²) | "
                     f"{100 * float(lv):.0f}% | {extent_text(reg['fcmlc'])} | "
                     f"{fmt(reg['fcmlc_excludes_null'])} / {fmt(reg.get('wilks_excludes_null'))} / "
                     f"{fmt(reg.get('fc_excludes_null'))} | {fmt(reg.get('fcmlc_contains_truth'))} / "
                     f"{fmt(reg.get('wilks_contains_truth'))} / {fmt(reg.get('fc_contains_truth'))} |")
    L += ["",
          "Expected (paper Sec. III B): for the signal-like realization (inside the sensitivity: large Asimov Δχ² of "
          "no oscillation) a region around the truth that excludes the no-oscillation edge; for the null-like one an "
          "exclusion-shaped region open towards small mixing, shaped like the sensitivity curve. "
          + " ".join(f"IoU at {100 * float(lv):.0f}% ({k}): " + ", ".join(f"{p} {fmt(v, '.2f')}" for p, v in iou.items())
                     + "." for k, e in examples.items() for lv, iou in e["iou"].items()),
          ""]
    return L


def _fig4(c) -> list:
    L = ["## Fig. 4 — coverage", "", "![Fig. 4](fig4_coverage.png)", "",
         f"{c['n_trials']} trials; observed fraction of trials whose region contains the truth, with "
         f"{100 * c['band_confidence']:.3g}% Clopper-Pearson bands. FCMLC fits that failed (counted as not covering): "
         f"{c['n_failed_fcmlc_fits']}.",
         "",
         "| nominal | " + " | ".join(METHOD_NAMES.get(x, x) for x in c["methods"]) + " |",
         "|---|" + "---|" * len(c["methods"])]
    for lv in FC_LEVELS:
        cells = []
        for meth in c["methods"]:
            v = c["coverage"][meth][f"{lv:g}"]
            cells.append(f"{fmt(v['observed'], '.3f')} [{fmt(v['band'][0], '.3f')}, {fmt(v['band'][1], '.3f')}]")
        L.append(f"| {lv:g} | " + " | ".join(cells) + " |")
    L += [""] + coverage_discussion(c)
    L += [f"How the truth is located: {c.get('truth_location')}.", ""]
    d = c.get("fcmlc_vs_exact")
    if d:
        tv = d["total_variation"]
        L += [f"Distance of the FCMLC posteriors from the exact posterior (same cells; docs/diagnostics.md), over "
              f"{d['n_trials']} trials: total variation mean {fmt(tv['mean'], '.3f')}, median {fmt(tv['median'], '.3f')}, "
              f"90th percentile {fmt(tv['p90'], '.3f')}; mean IoU of the HPD regions "
              + ", ".join(f"{100 * float(k):g}% {fmt(v, '.2f')}" for k, v in d["iou_mean"].items()) + ".", ""]
    return L


#: What a significant deviation of each method's coverage means (the report's discussion).
COVERAGE_CAUSES = {
    "fcmlc": "FCMLC approximates the posterior with networks trained on a finite simulation set",
    "exact": "the exact posterior is calibrated by construction when, as here, the truths are drawn from its "
             "prior, so a real deviation points to the discretization (the truth located by its posterior cell) "
             "or to an error",
    "wilks": "Wilks' theorem is asymptotic and fails near the physical boundaries (sin²2θ → 0, where Δm² is "
             "undefined, and sin²2θ ≤ 1) and for few bins: the reason for the Feldman-Cousins construction",
    "fc": "Feldman-Cousins covers by construction up to its finite number of toys per grid point and the critical "
          "value taken at the nearest grid point of a truth between grid points",
}


def coverage_discussion(c) -> list:
    """A paragraph on every (method, level) whose nominal level lies outside the observed
    coverage's Monte-Carlo band: under- or over-covering, by how many binomial standard errors
    of a correctly covering method (sqrt(L (1 - L) / n)), and what it implies; with how many such
    levels chance alone gives at the band's confidence."""
    n, conf = int(c["n_trials"]), float(c["band_confidence"])
    rows, n_pairs = [], 0
    for meth in c["methods"]:
        for lv_key, v in c["coverage"][meth].items():
            n_pairs += 1
            nominal, obs = float(v["nominal"]), float(v["observed"])
            lo, hi = v["band"]
            if lo <= nominal <= hi:
                continue
            se = math.sqrt(nominal * (1.0 - nominal) / n)
            z = (obs - nominal) / se
            rows.append((meth, nominal, obs, v["covered"], z, se))
    if not rows:
        return [f"Every nominal level lies inside its {100 * conf:.3g}% Monte-Carlo band: no method shows under- or "
                f"over-coverage that {n} trials can resolve.", ""]
    chance = n_pairs * (1.0 - conf)
    L = [f"**Levels outside their Monte-Carlo band** ({len(rows)} of {n_pairs} method-level pairs; with "
         f"{100 * conf:.3g}% bands about {chance:.1f} would lie outside by chance alone even if every method covered "
         f"exactly, so only a deviation of several standard errors points to a miscalibration). Standard error: "
         f"√(L(1−L)/n) of a method covering exactly at level L, n = {n} trials.", ""]
    for meth, nominal, obs, k, z, se in rows:
        name, pct = METHOD_NAMES.get(meth, meth), f"{100 * nominal:.0f}%"
        under = z < 0
        if abs(z) < 2:
            verdict = "consistent with a Monte-Carlo fluctuation at this number of trials"
        elif abs(z) < 3:
            verdict = "a 2-3 standard-error tension: suggestive, not conclusive with this number of trials"
        else:
            verdict = "significant: a real miscalibration at this level"
        w, be = ("", "are") if abs(z) >= 3 else ("would ", "would be")
        meaning = (f"its {pct} regions {w}contain the truth less often than stated: they {be} too small, and limits "
                   f"read from them too strong" if under else
                   f"its {pct} regions {w}contain the truth more often than stated: they {be} conservative (too "
                   f"large), and limits read from them weaker than the data allow")
        line = (f"- {name} at {pct}: observed {obs:.3f} ({k} of {c['n_trials']}), "
                f"**{'under' if under else 'over'}-covers** by {abs(obs - nominal):.3f} = {abs(z):.1f} standard errors "
                f"(one standard error: {se:.3f}): {verdict}. "
                + (f"So {meaning}" if abs(z) >= 3 else f"Were it confirmed with more trials, {meaning}"))
        if abs(z) >= 2:
            line += f"; {COVERAGE_CAUSES.get(meth, 'see docs/diagnostics.md')}"
            ex = (c["coverage"].get("exact") or {}).get(f"{nominal:g}") if meth == "fcmlc" else None
            if ex is not None:
                same = ex["band"][0] <= nominal <= ex["band"][1]
                line += (" (the exact posterior covers at this level, so the deviation is FCMLC's approximation: "
                         "more realizations or training would reduce it)" if same else
                         " (the exact posterior deviates too, so part of the cause is common to both, not the "
                         "networks)")
        L.append(line + ".")
    return L + [""]


def _diagnostics(d) -> list:
    """The diagnostics of the observed-data fit (fcmlc.diagnostics) as a table."""
    if not d:
        return []
    L = ["### How far to trust this fit (diagnostics)", "",
         f"Status: **{d['status']}** ({d['n_toys']} realizations at the χ² best fit, seed {d['seed']}; what to do "
         "when a check warns: docs/diagnostics.md).", "",
         "| check | status | result | rule |", "|---|---|---|---|"]
    for c in d["checks"]:
        status = "**warn**" if c["status"] == "warn" else c["status"]
        L.append(f"| {c['name']} | {status} | {c['message']} | {c['rule']} |")
    return L + [""]


def _edge_warnings(ed) -> list:
    warn = []
    if ed.get("chi2_best"):
        warn.append(f"the χ² best fit lies on the grid's {' and '.join(ed['chi2_best'])} edge: the true minimum may "
                    "lie beyond the grid (rerun with a wider --dm2-range)")
    if ed.get("fcmlc_best"):
        warn.append(f"the FCMLC best point lies on the grid's {' and '.join(ed['fcmlc_best'])} edge")
    for lv, per in (ed.get("regions") or {}).items():
        for m, edges in per.items():
            if edges:
                warn.append(f"the {m} {100 * float(lv):.0f}% region reaches the grid's {' and '.join(edges)} edge")
    return warn


def _fig5(o) -> list:
    L = ["## Fig. 5 — fit on observed data", "", "![Fig. 5](fig5_observed.png)", "",
         f"Real data: {', '.join(o['real']) or 'none'}; MOCK data (one seeded realization of the no-oscillation model): "
         f"{', '.join(o['mock']) or 'none'}.",
         ""]
    bf, bc = o["best_point"]["fcmlc"], o["best_point"]["chi2"]
    L += [f"FCMLC best point: sin²2θ = {fmt(bf['sin2_2theta'])}, Δm² = {fmt(bf['dm2'])} eV². χ² grid minimum: "
          f"sin²2θ = {fmt(bc['sin2_2theta'])}, Δm² = {fmt(bc['dm2'])} eV² (χ²_min = {fmt(bc['chi2_min'])}).",
          ""]
    cl = o.get("chi2_best_credible_level")
    if cl is not None:
        L += [f"FCMLC credible level of the χ² best fit: {fmt(cl)} (the point lies inside the FCMLC region of every "
              f"level above this; {'inside' if cl < 0.9 else 'OUTSIDE'} the 90% region).",
              ""]
    warn = _edge_warnings(o.get("edges") or {})
    if warn:
        L += ["**Grid-edge warnings:** " + "; ".join(warn) + ".", ""]
    L += ["| level | FCMLC region | Wilks region | Feldman-Cousins region | excludes no-oscillation edge (FCMLC / Wilks / FC) "
          "| IoU |",
          "|---|---|---|---|---|---|"]
    for lv, reg in o["regions"].items():
        L.append(f"| {100 * float(lv):.0f}% | {extent_text(reg['fcmlc'])} | {extent_text(reg.get('wilks'))} | "
                 f"{extent_text(reg.get('fc'))} | {fmt(reg['fcmlc_excludes_null'])} / {fmt(reg.get('wilks_excludes_null'))}"
                 f" / {fmt(reg.get('fc_excludes_null'))} | "
                 + ", ".join(f"{p} {fmt(v, '.2f')}" for p, v in o["iou"][lv].items()) + " |")
    L += ["",
          "For orientation (published, not used by the fit): BEST alone prefers sin²2θ ≈ 0.3-0.4 with Δm² ≳ 1 eV² "
          "(arXiv:2109.11482, 2201.07364); the paper's traditional global best fit is (sin²2θ, Δm²) = (0.35, 9.3 eV²) "
          "(Sec. III D); STEREO excludes the reactor-anomaly region (its fit here uses mock no-oscillation data).",
          ""]
    return L + _diagnostics(o.get("diagnostics"))


def _timing(sc: Scale, R, T) -> list:
    rs, tr, c, o = R["simulate"], R["train"], R["coverage"], R["observed"]
    g = sc.grid_shape
    fit_s = (o.get("seconds") or {}).get("fcmlc")
    fcmlc_total = T["simulate"] + T["train"] + (fit_s or 0.0)
    fc_total = T["simulate"] + T["feldman_cousins"]
    L = ["## Table II — timing", "",
         "Our wall time for each step of this run (on this machine; a step reused from an earlier run shows the time "
         "measured when it was computed), beside the paper's CPU hours for its full study (101 x 101 x 50 "
         "realizations of all six experiments, FC with sblmc MCMC fits).",
         "",
         "| step (this run) | wall time |",
         "|---|---|",
         f"| simulate ({rs['n_samples']} realizations) | {fmt_seconds(T['simulate'])} |",
         f"| train: regressor ({tr['regressor']['epochs']} epochs) | {fmt_seconds(tr['regressor']['seconds'])} |",
         f"| train: normalizing flow ({tr['flow']['epochs']} epochs) | {fmt_seconds(tr['flow']['seconds'])} |",
         f"| train: transition matrix (integration grid) | {fmt_seconds(tr['transition_seconds'])} |",
         f"| train: step total | {fmt_seconds(T['train'])} |",
         f"| Feldman-Cousins ({sc.fc_toys} toys x {g[0] * g[1]} points, exact χ² grid scans) | "
         f"{fmt_seconds(T['feldman_cousins'])} |",
         f"| one FCMLC fit of observed data (posterior evaluation) | {fmt_seconds(fit_s)} |",
         f"| MSE maps | {fmt_seconds(T['mse'])} |",
         f"| example fits (2, with χ² scans) | {fmt_seconds(T['examples'])} |",
         f"| coverage ({c['n_trials']} trials, FCMLC + Wilks + FC) | {fmt_seconds(T['coverage'])} |",
         f"| fit on observed data (FCMLC + Wilks + FC) | {fmt_seconds(T['observed'])} |",
         f"| **FCMLC path** (simulate + train + one fit) | **{fmt_seconds(fcmlc_total)}** |",
         f"| **Feldman-Cousins path** (simulate + FC) | **{fmt_seconds(fc_total)}** |",
         f"| whole pipeline | {fmt_seconds(sum(T.values()))} |",
         "",
         "| the paper's step | CPU hours | source |",
         "|---|---|---|"]
    for name, hours, src in PAPER_TABLE_II:
        row = f"| {name} | {hours:,.0f} |" if hours >= 1 else f"| {name} | {hours:.2g} |"
        L.append(row + f" {src} |")
    L += ["",
          "The paper's Feldman-Cousins cost is dominated by fitting every realization with MCMC (~2 h each); here "
          "every toy is fitted by an exact χ² scan over the grid (closed-form profile of the shape nuisances, "
          "`fcmlc.frequentist`), which is why FC is affordable at this scale.",
          ""]
    return L


def _files() -> list:
    return ["## Files", "",
            "`fig2_mse.png`, `fig3_examples.png`, `fig4_coverage.png`, `fig5_observed.png`; `work/sim.h5` (realizations), "
            "`work/model/` (trained model), `work/fc.h5` (FC critical values), `work/coverage.npz`, `work/mse.npz`, "
            "`work/*.npz` (posteriors); `steps/*.json` (settings, timings and numbers of every step).",
            ""]


def report_markdown(task, sc: Scale, seed, data, hint, recs, data_dir) -> str:
    """The text of a task's REPORT.md from the records ``recs`` (step name -> record) of the
    seven computing steps, the observed data's provenance ``data`` and the download ``hint``."""
    R = {k: v["result"] for k, v in recs.items()}
    T = {k: float(v["seconds"]) for k, v in recs.items()}
    L = (_header(task, sc, seed) + _settings(sc, R) + _data(data, hint, data_dir) + _fig2(sc, R["mse"])
         + _fig3(R["examples"]) + _fig4(R["coverage"]) + _fig5(R["observed"]) + _timing(sc, R, T) + _files())
    return "\n".join(L)


def write_index(out: Path, reports: dict, sc: Scale, seed: int) -> Path:
    """``out/REPORT.md`` of ``--task all``: a link to each task's report (task -> (path of its
    REPORT.md, pipeline wall time in seconds)) and its figures. Returns the path."""
    L = [f"# fcmlc reproduce — all tasks (scale `{sc.name}`, seed {seed})", "",
         f"Scale: {sc.description}.", ""]
    for t, (p, seconds) in reports.items():
        rel = p.relative_to(out)
        L.append(f"- [{TASK_TITLES[t]}]({rel.as_posix()})")
        L.append(f"  - pipeline wall time {fmt_seconds(seconds)}; figures "
                 + ", ".join(f"[{n}]({(rel.parent / n).as_posix()})" for n in FIGURE_FILES))
    L.append("")
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(L))
    return path
