"""The library functions behind `fcmlc wilks` and `fcmlc fc`: goodness of fit, the test of no
oscillation, the summary (the same as the command's summary.json), FC-result compatibility
with a chi2 model, and the per-level summary of critical values."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from fcmlc import frequentist as fq
from fcmlc.exceptions import IncompatibleError
from fcmlc.physics import Grid

SMALL = Grid(shape=(11, 11))


@pytest.fixture(scope="module")
def model():
    return fq.Chi2Model("STEREO,BEST", SMALL)


@pytest.fixture(scope="module")
def fc_file(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("fcapi") / "fc.h5"
    fq.feldman_cousins(model, n_toys=20, seed=4, levels=(0.68, 0.9), out=out, threads=2, progress=False)
    return out


def test_goodness_of_fit():
    assert fq.goodness_of_fit(10.0, 12) == pytest.approx(stats.chi2.sf(10.0, 12), rel=1e-15)
    assert fq.goodness_of_fit(3.0, 0) is None and fq.goodness_of_fit(3.0, -1) is None


def test_no_oscillation_test(model):
    n0 = np.concatenate([e.null_expectation for e in model.experiments])
    null = fq.no_oscillation_test(model, n0)  # Asimov data of no oscillation: chi2 = 0
    assert null.chi2 == pytest.approx(0.0, abs=1e-6) and null.delta_chi2 == pytest.approx(0.0, abs=1e-6)
    assert not null.excluded and null.p_value == pytest.approx(1.0)
    x = fq.asimov_data(model, 0.3, 1.5, seed=2)  # large mixing: no oscillation far off
    scan = fq.chi2_scan(model, x)
    t = fq.no_oscillation_test(model, x, scan, level=0.9, dof=2)
    assert t.chi2 == pytest.approx(float(model.chi2_at(x, n0)), rel=1e-9)  # the exact profile chi2 at s2 = 0
    assert t.delta_chi2 == pytest.approx(t.chi2 - scan.min, rel=1e-12) and t.delta_chi2 > 0
    assert t.threshold == fq.wilks_threshold(0.9, 2) and t.excluded == (t.delta_chi2 > t.threshold)
    assert t.p_value == pytest.approx(stats.chi2.sf(t.delta_chi2, 2), rel=1e-12)
    assert fq.no_oscillation_test(model, x, level=0.9) == t  # the scan computed when not given


def test_summary_is_the_cli_summary(model, fc_file, tmp_path):
    from fcmlc.cli import main

    x = fq.asimov_data(model, 0.2, 1.5, seed=3)
    data = tmp_path / "x.npy"
    np.save(data, x)
    out = tmp_path / "w"
    assert main(["wilks", "--experiments", "STEREO,BEST", "--grid", "11", "--data", str(data), "-o", str(out),
                 "--fc", str(fc_file)]) == 0
    cli = json.loads((out / "summary.json").read_text())
    scan = fq.chi2_scan(model, x)
    own = fq.summary(model, scan, x, scan_seconds=cli["scan_seconds"], fc=fq.FCResult.load(fc_file))
    meta = {k: v for k, v in cli.items() if k not in own}
    lib = json.loads(json.dumps(fq.summary(model, scan, x, meta=meta, scan_seconds=cli["scan_seconds"],
                                           fc=fq.FCResult.load(fc_file))))
    assert lib == cli and list(lib) == list(cli)  # same keys, same order, same values
    assert "fc_region_cells" in lib and lib["ndof"] == model.n_effective_bins - 2
    assert lib["gof_p_value"] == fq.goodness_of_fit(scan.min, scan.ndof)


def test_check_compatible(model, fc_file):
    fc = fq.FCResult.load(fc_file)
    fq.check_compatible(fc, model)
    fq.check_compatible(fc, "stereo,best", SMALL)  # names compare case-insensitively
    fq.check_compatible(fc, model.experiments)
    with pytest.raises(IncompatibleError, match="is for"):
        fq.check_compatible(fc, "BEST,STEREO", SMALL)  # order matters: it is the data order
    with pytest.raises(IncompatibleError, match="is for"):
        fq.check_compatible(fc, "STEREO")
    with pytest.raises(IncompatibleError, match="grid differs"):
        fq.check_compatible(fc, model, Grid(shape=(11, 12)))
    changed = dataclasses.replace(fc, definition_hashes=("0" * 16, fc.definition_hashes[1]))
    with pytest.raises(IncompatibleError, match="other definitions of STEREO"):
        fq.check_compatible(changed, model)
    with pytest.raises(ValueError):  # IncompatibleError is a ValueError for existing callers
        fq.check_compatible(changed, model)


def test_critical_summary_is_what_fc_prints(fc_file, capsys):
    from fcmlc.cli import main

    fc = fq.FCResult.load(fc_file)
    s = fc.critical_summary()
    assert list(s) == [0.68, 0.9]
    for L, row in s.items():
        v = fc.critical_value(L)[fc.done]
        assert row == {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()),
                       "wilks_2dof": fq.wilks_threshold(L, 2)}
    assert main(["fc", "--experiments", "STEREO,BEST", "--grid", "11", "--toys", "20", "--seed", "4", "--levels",
                 "0.68,0.9", "-o", str(fc_file), "--threads", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    for L, row in s.items():
        assert f"critical Delta-chi2 median {row['median']:.3f}" in text
    none = dataclasses.replace(fc, done=np.zeros_like(fc.done))
    assert none.critical_summary() == {}


def test_singular_covariance_warns_with_the_effective_degrees_of_freedom():
    # a rank-deficient covariance used to give "ndof = -2" and Delta chi2 = 0 without a word
    from _toys import gaussian_toy

    from fcmlc.frequentist import Chi2Model
    from fcmlc.physics import Grid

    e = gaussian_toy(normalisation=False, rho=1.0)  # fully correlated: rank 1
    with pytest.warns(RuntimeWarning, match="rank 1 < 8 bins.*1 effective degrees of freedom"):
        Chi2Model([e], Grid(shape=(4, 4)))
    e = gaussian_toy(normalisation=True, rho=1.0)  # rank 1, one free normalisation: nothing left
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="no degree of freedom"):
        Chi2Model([e], Grid(shape=(4, 4)))
