"""Fit diagnostics (fcmlc.diagnostics): they warn on misspecified data and keep their stated
false-alarm rate on data drawn from the model."""
from __future__ import annotations

import numpy as np
import pytest

from fcmlc.diagnostics import THRESHOLDS, diagnose, default_groups, total_variation
from fcmlc.exact import ExactModel
from fcmlc.physics import Grid
from fcmlc.simulation import realizations

from _toys import gaussian_toy

GRID = Grid(ue4_range=(0.01, 0.7), dm2_range=(0.2, 20.0), shape=(18, 16))
# Truths on grid points, as in fcmlc's coverage checks: the p-values come from toys at the grid's
# best point, so data whose truth falls between points carry the grid's discretisation in their
# chi2_min (large for precise experiments on a coarse grid; see docs/diagnostics.md).
U1, D1 = GRID.points()[GRID.index(7, 6)]
U2, D2 = GRID.points()[GRID.index(5, 9)]


@pytest.fixture(scope="module")
def setup():
    exps = [gaussian_toy(n_bins=10, events=20000.0), gaussian_toy("TOY2", n_bins=6, baseline=25.0, events=8000.0,
                                                              normalisation=False, rel_syst=0.02)]
    return exps, ExactModel(exps, GRID)


def test_data_from_the_model_pass_and_misspecified_data_warn(setup):
    exps, model = setup
    x = realizations(exps, [U1], [D1], 1, seed=3)[0, 0]
    d = diagnose(exps, x, model=model, n_toys=200, seed=1)
    stat = {c.name: c.status for c in d.checks}
    assert stat["goodness_of_fit"] == "pass" and stat["distance:TOY"] == "pass" and stat["distance:TOY2"] == "pass"
    assert stat["compatibility"] == "pass"
    assert 0 <= d["goodness_of_fit"].values["p_toys"] <= 1
    # one experiment shifted far outside its model (a 15 % slope across its spectrum)
    bad = x.copy()
    bad[10:] *= np.linspace(0.85, 1.15, 6)
    d = diagnose(exps, bad, model=model, n_toys=200, seed=1)
    assert d["goodness_of_fit"].status == "warn" and d["distance:TOY2"].status == "warn"
    assert "too far" in d["distance:TOY2"].message and d.status == "warn"
    # a noiseless (Asimov) block is 'too clean'
    clean = x.copy()
    clean[:10] = realizations(exps[:1], [U1], [D1], 1, seed=3)[0, 0] * 0 + exps[0].expectation(
        np.array([U1]), np.array([D1]))[0]
    d = diagnose(exps, clean, model=model, n_toys=200, seed=1)
    assert d["distance:TOY"].status == "warn" and "too clean" in d["distance:TOY"].message


def test_experiments_at_different_truths_are_incompatible(setup):
    exps, model = setup
    a = realizations(exps[:1], [0.35], [1.2], 1, seed=5)[0, 0]  # large mixing for TOY
    b = realizations(exps[1:], [0.0101], [1.2], 1, seed=6)[0, 0]  # ~ no oscillation for TOY2
    d = diagnose(exps, np.concatenate([a, b]), model=model, n_toys=300, seed=2)
    assert d["compatibility"].status == "warn", d["compatibility"].message
    # named groups are checked too, names case-insensitive
    d = diagnose(exps, np.concatenate([a, b]), model=model, n_toys=100, seed=2, groups={"a": ["toy"], "b": ["Toy2"]})
    assert d["compatibility"].status == "warn"


def test_false_alarm_rate_on_realizations_from_the_model(setup):
    # 200 data vectors drawn from the model at a fixed truth: each check warns at most at its
    # stated level (0.01). Under Binomial(200, 0.01) P(count >= 9) < 1e-4, the bound used.
    exps, model = setup
    X = realizations(exps, [U2], [D2], 200, seed=9)[0]
    counts = {}
    for i, x in enumerate(X):
        for c in diagnose(exps, x, model=model, n_toys=150, seed=1000 + i, groups=None).checks:
            if c.name != "edges":
                counts[c.name] = counts.get(c.name, 0) + (c.status == "warn")
    assert set(counts) == {"goodness_of_fit", "distance:TOY", "distance:TOY2", "compatibility"}
    assert max(counts.values()) <= 8, counts


def test_agreement_with_the_exact_posterior(setup):
    exps, model = setup
    x = realizations(exps, [0.2], [1.2], 1, seed=3)[0, 0]
    same = model.posterior(x, meta={"method": "fcmlc"})
    d = diagnose(exps, x, posterior=same, model=model, n_toys=50)
    c = d["fcmlc_vs_exact"]
    assert c.status == "pass" and c.values["total_variation"] == pytest.approx(0, abs=1e-12)
    assert all(v == pytest.approx(1.0) for v in c.values["iou"].values())
    other = model.posterior(realizations(exps, [0.02], [8.0], 1, seed=4)[0, 0], meta={"method": "fcmlc"})
    d = diagnose(exps, x, posterior=other, model=model, n_toys=50)
    assert d["fcmlc_vs_exact"].status == "warn"
    assert total_variation(other, d.exact) > THRESHOLDS["tv"]


def test_default_groups_and_bad_arguments(setup):
    assert default_groups(["STEREO", "BEST", "GALLIUM"]) == {"reactors": ["STEREO"], "gallium+BEST": ["BEST", "GALLIUM"]}
    assert default_groups(["STEREO", "PROSPECT"]) is None
    exps, model = setup
    x = realizations(exps, [0.2], [1.2], 1, seed=3)[0, 0]
    with pytest.raises(ValueError, match="not one of the fit's experiments"):
        diagnose(exps, x, model=model, groups={"a": ["NEOS"], "b": ["TOY"]})
    with pytest.raises(ValueError, match="n_toys must be a positive integer"):
        diagnose(exps, x, model=model, n_toys=0)
    with pytest.raises(ValueError, match="unknown threshold"):
        diagnose(exps, x, model=model, thresholds={"p": 0.1})
    with pytest.raises(ValueError, match="one data vector"):
        diagnose(exps, np.stack([x, x]), model=model)


def test_posterior_carries_its_data_for_diagnostics(setup):
    exps, model = setup
    x = realizations(exps, [U1], [D1], 1, seed=3)[0, 0]
    post = model.posterior(x)
    d = post.diagnostics(model=model, n_toys=50)
    assert d.chi2_min == diagnose(exps, x, model=model, n_toys=50).chi2_min
    from fcmlc.posterior import Posterior

    bare = Posterior(post.ue4, post.dm2, post.density)
    with pytest.raises(ValueError, match="does not know its data"):
        bare.diagnostics()


def test_cli_exact_writes_posterior_and_diagnostics(tmp_path, capsys):
    import json

    from fcmlc.cli import main

    out = tmp_path / "best"
    assert main(["exact", "--experiments", "BEST", "--observed", "-o", str(out), "--grid", "30",
                 "--diagnostic-toys", "100"]) == 0
    text = capsys.readouterr().out
    assert "exact posterior of BEST" in text and "goodness_of_fit" in text and "distance:BEST" in text
    assert {p.name for p in out.iterdir()} == {"posterior.npz", "posterior.png", "summary.json", "diagnostics.json"}
    d = json.loads((out / "diagnostics.json").read_text())
    assert d["status"] in ("pass", "warn") and d["n_toys"] == 100
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "exact" and s["diagnostics"] == d["status"] and s["input"] == "observed"
