"""`fcmlc reproduce`: the whole pipeline at the test-only 'tiny' scale for BEST, the report's
content and consistency, re-use of finished steps, refusal of other settings, and the
experiments/data bookkeeping of the global task."""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from fcmlc import cli
from fcmlc.cli import reproduce as cli_reproduce
from fcmlc.reproduce import FC_LEVELS, FIT_LEVELS, SCALES, STEP_NAMES, reproduce, task_experiments

FIGURES = ("fig2_mse.png", "fig3_examples.png", "fig4_coverage.png", "fig5_observed.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "best"
    t0 = time.perf_counter()
    report = reproduce("best", "tiny", out, threads=2, seed=0, progress=False)
    return out, report, time.perf_counter() - t0


def _records(out: Path) -> dict:
    return {s: json.loads((out / "steps" / f"{s}.json").read_text()) for s in STEP_NAMES}


def _all_numbers(o):
    if isinstance(o, dict):
        for v in o.values():
            yield from _all_numbers(v)
    elif isinstance(o, list):
        for v in o:
            yield from _all_numbers(v)
    elif isinstance(o, (int, float)) and not isinstance(o, bool):
        yield o


def test_report_and_every_figure_exist(best_run):
    out, report, _ = best_run
    assert report == out / "REPORT.md" and report.is_file()
    text = report.read_text()
    for fig in FIGURES:
        p = out / fig
        assert p.is_file() and p.stat().st_size > 5000, fig
        assert p.read_bytes()[:8] == PNG_MAGIC, fig
        assert f"]({fig})" in text, f"{fig} not linked from the report"
    for title in ("Fig. 2", "Fig. 3", "Fig. 4", "Fig. 5", "Table II"):
        assert f"## {title}" in text
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE)
    assert "**real**" in text and "BEST" in text  # BEST enters with its published ratios
    # the observed fit says how far to trust it, and coverage scores FCMLC against the exact posterior
    assert "### How far to trust this fit" in text and "| goodness_of_fit |" in text and "| distance:BEST |" in text
    assert "Distance of the FCMLC posteriors from the exact posterior" in text and "exact posterior" in text
    assert not list(out.rglob("*.tmp")) and not (out / "work" / "model.partial").exists()


def test_step_records_are_finite_and_consistent(best_run):
    out, _, _ = best_run
    recs = _records(out)
    sc = SCALES["tiny"]
    for name, rec in recs.items():
        assert rec["seconds"] > 0, name
        for v in _all_numbers(rec["result"]):
            assert math.isfinite(v), (name, v)
    sim = recs["simulate"]["result"]
    assert sim["n_samples"] == sc.grid_shape[0] * sc.grid_shape[1] * sc.n_per_point
    assert sim["n_train"] + sim["n_test_interpolation"] + sim["n_test_random"] == sim["n_samples"]
    tr = recs["train"]["result"]
    assert tr["regressor"]["epochs"] >= 1 and tr["flow"]["epochs"] >= 1
    assert tr["regressor"]["seconds"] > 0 and tr["flow"]["seconds"] > 0 and tr["transition_seconds"] > 0
    assert all(v > 0 for v in recs["mse"]["result"]["overall_mse"].values())

    cov = recs["coverage"]["result"]
    assert cov["n_trials"] == sc.coverage_trials and set(cov["methods"]) == {"fcmlc", "exact", "wilks", "fc"}
    for meth, per_level in cov["coverage"].items():
        fr = [per_level[f"{L:g}"]["observed"] for L in FC_LEVELS]
        for L in FC_LEVELS:
            c = per_level[f"{L:g}"]
            assert 0.0 <= c["band"][0] <= c["observed"] <= c["band"][1] <= 1.0, (meth, L, c)
            assert c["covered"] == round(c["observed"] * cov["n_trials"])
        assert fr == sorted(fr), (meth, fr)  # nested regions: coverage grows with the level

    for name in ("examples", "observed"):
        fits = recs[name]["result"]
        fits = fits.values() if name == "examples" else [fits]
        for fit in fits:
            areas = []
            for L in FIT_LEVELS:
                reg = fit["regions"][f"{L:g}"]
                assert reg["fcmlc"] is not None and reg["fcmlc"]["n_cells"] > 0  # region non-empty
                assert reg["fcmlc_mass"] >= L - 1e-9
                assert 0 < reg["fcmlc"]["sin2_min"] <= reg["fcmlc"]["sin2_max"] <= 1
                assert 0 < reg["fcmlc"]["dm2_min"] <= reg["fcmlc"]["dm2_max"]
                assert reg["wilks"] is not None and reg["fc"] is not None
                areas.append(fit["area_fraction"]["fcmlc"][f"{L:g}"])
                for v in fit["iou"][f"{L:g}"].values():
                    assert 0.0 <= v <= 1.0
            assert areas == sorted(areas)
    obs = recs["observed"]["result"]
    assert obs["real"] == ["BEST"] and obs["mock"] == []
    ex = recs["examples"]["result"]
    assert ex["signal-like"]["asimov_delta_chi2_null"] > ex["null-like"]["asimov_delta_chi2_null"]


def test_second_run_reuses_every_step(best_run):
    out, report, first = best_run
    before = _tree_digest(out)
    t0 = time.perf_counter()
    again = reproduce("best", "tiny", out, threads=1, seed=0, progress=False)  # threads are not a setting
    dt = time.perf_counter() - t0
    assert again == report
    assert dt < max(5.0, 0.25 * first), (dt, first)
    assert _tree_digest(out) == before  # nothing rewritten


def test_cli_reuses_and_reports(best_run, capsys):
    out, _, _ = best_run
    parser = argparse.ArgumentParser(prog="fcmlc")
    cli_reproduce.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["reproduce", "--task", "best", "--scale", "tiny", "-o", str(out), "--no-progress"])
    assert args.func(args) == 0
    assert "REPORT.md written" in capsys.readouterr().out


def test_other_settings_are_refused(best_run):
    out, _, _ = best_run
    before = _tree_digest(out)
    with pytest.raises(ValueError, match=r"different settings.*seed"):
        reproduce("best", "tiny", out, seed=1, progress=False)
    assert _tree_digest(out) == before
    assert cli.main(["reproduce", "--task", "best", "--scale", "tiny", "-o", str(out), "--seed", "3",
                                "--no-progress"]) == 2


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        reproduce("minos", "tiny", tmp_path)
    with pytest.raises(ValueError, match="unknown scale"):
        reproduce("best", "huge", tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        reproduce("best", "tiny", tmp_path, data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="seed"):
        reproduce("best", "tiny", tmp_path, seed=-1)


def test_global_task_data_provenance_without_releases(tmp_path):
    exps, data = task_experiments("global", tmp_path)  # an empty folder: no releases
    names = [e.name for e in exps]
    assert names == ["STEREO", "PROSPECT", "DANSS", "NEOS", "GALLIUM", "BEST"]
    kinds = {d["name"]: d["kind"] for d in data}
    assert kinds == {"STEREO": "mock", "PROSPECT": "mock", "DANSS": "mock", "NEOS": "mock", "GALLIUM": "real",
                     "BEST": "real"}
    for e, d in zip(exps, data):
        assert d["x"].shape == (e.n_bins,) and np.all(np.isfinite(d["x"]))
        if d["kind"] == "mock":
            assert "MOCK" in d["source"]
            # one seeded realization of the no-oscillation model: noisy, not the Asimov vector, and
            # reproducible from the seed
            mu = e.expectation(0.0, 1.0)
            assert not np.allclose(d["x"], mu)
            z = np.linalg.solve(np.linalg.cholesky(e.covariance), d["x"] - mu)
            # z.z ~ chi2(n_bins) for a realization (an Asimov vector gives 0): inside its 0.01 %-99.99 %
            # range (deterministic under the fixed seed; the range only guards against a wrong scale)
            from scipy.stats import chi2 as chi2_dist

            assert chi2_dist.ppf(1e-4, e.n_bins) < z @ z < chi2_dist.ppf(1 - 1e-4, e.n_bins)
    _, again = task_experiments("global", tmp_path)
    for d, d2 in zip(data, again):
        np.testing.assert_array_equal(d["x"], d2["x"])


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="public data releases (../shared/data) not available")
def test_global_task_uses_the_public_releases():
    exps, data = task_experiments("global", SHARED_DATA)
    kinds = {d["name"]: d["kind"] for d in data}
    assert kinds["STEREO"] == "mock"  # no public STEREO release
    for name in ("PROSPECT", "DANSS", "NEOS", "GALLIUM", "BEST"):
        assert kinds[name] == "real", name
    for e, d in zip(exps, data):
        if d["kind"] == "real":
            np.testing.assert_array_equal(d["x"], np.asarray(e.observed, dtype=float))


def test_report_discusses_levels_outside_their_band():
    from fcmlc.reproduce.report import coverage_discussion

    def row(nominal, covered, band):
        return {"nominal": nominal, "observed": covered / 300, "band": band, "covered": covered}

    c = {"n_trials": 300, "band_confidence": 0.6827, "methods": ["fcmlc", "exact", "wilks"],
         "coverage": {"fcmlc": {"0.68": row(0.68, 189, [0.601, 0.658]), "0.9": row(0.9, 270, [0.88, 0.92])},
                      "exact": {"0.68": row(0.68, 204, [0.652, 0.707]), "0.9": row(0.9, 269, [0.877, 0.915])},
                      "wilks": {"0.68": row(0.68, 276, [0.90, 0.94]), "0.9": row(0.9, 270, [0.88, 0.92])}}}
    text = " ".join(coverage_discussion(c))
    # FCMLC at 68 %: 0.630 against sqrt(0.68 * 0.32 / 300) = 0.0269 -> 1.86 standard errors below
    assert "FCMLC at 68%: observed 0.630 (189 of 300), **under-covers** by 0.050 = 1.9 standard errors" in text
    assert "consistent with a Monte-Carlo fluctuation" in text and "would be too small" in text
    # Wilks at 68 %: 0.920, (0.92 - 0.68) / 0.0269 = 8.9 standard errors above: significant, conservative
    assert "Wilks at 68%: observed 0.920 (276 of 300), **over-covers** by 0.240 = 8.9 standard errors" in text
    assert "significant" in text and "are conservative" in text
    assert "2 of 6 method-level pairs" in text and "about 1.9 would lie outside by chance" in text
    assert "exact posterior at" not in text  # inside its band: not discussed
    inside = {**c, "coverage": {"exact": c["coverage"]["exact"]}, "methods": ["exact"]}
    assert "Every nominal level lies inside" in " ".join(coverage_discussion(inside))
