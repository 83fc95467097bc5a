"""The dataset generator: content, determinism (threads, chunking, Dask), resume after
Ctrl-C and kill -9, the stored split, and refusal to clobber files."""
import hashlib
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import fcmlc
from fcmlc import experiments as ex
from fcmlc import simulation
from fcmlc.dataset import SPLIT_STREAM, DatasetOutput, open_dataset, paper_split
from fcmlc.physics import Grid

EXPS = ["STEREO", "GALLIUM", "DANSS"]  # a covariance model, a pull model and the ratio model
GRID = Grid(shape=(7, 6))


def data_arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f["data"][k][...] for k in f["data"]}, f["params"][...], f["split"][...], dict(f.attrs)


def digest(path):
    """Hash of everything a user reads from the file (data, params, split, grid, attrs)."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                h.update(name.encode())
                h.update(np.ascontiguousarray(obj[...]).tobytes())
        f.visititems(visit)
        for k in sorted(f.attrs):
            h.update(k.encode())
            h.update(repr(f.attrs[k]).encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "base.h5"
    fcmlc.simulate(EXPS, GRID, n_per_point=6, seed=11, out=out, threads=2, progress=False)
    return out


def test_content_matches_realizations(base):
    data, params, split, attrs = data_arrays(base)
    assert attrs["complete"]
    assert int(attrs["seed"]) == 11 and attrs["n_per_point"] == 6
    assert attrs["fcmlc_version"] == fcmlc.__version__
    np.testing.assert_array_equal(params, GRID.points())
    eset = ex.combine(EXPS)
    for name, e in zip(eset.names, eset.experiments):
        assert data[name].shape == (GRID.n_points, 6, e.n_bins)
        assert data[name].dtype == np.float32
    # Same keyed generator at the same (seed, point id): realizations() reproduces the file
    # (float32 storage of float64 draws: compare after the same rounding).
    pts = GRID.points()
    sel = np.array([0, 5, 17, GRID.n_points - 1])
    again = simulation.realizations(EXPS, pts[sel, 0], pts[sel, 1], n_per_point=6, seed=11, point_ids=sel)
    stored = np.concatenate([data[n][sel] for n in eset.names], axis=2)
    np.testing.assert_array_equal(stored, again.astype(np.float32))
    with open_dataset(base) as d:
        assert d.experiments == list(eset.names)
        assert d.n_features == sum(e.n_bins for e in eset.experiments)
        assert d.grid == GRID


def test_mean_of_realizations_is_the_expectation(base):
    # 42 points x 6 realizations: the per-bin mean over a point's realizations estimates the
    # expectation with standard error sqrt(C_ii / 6); all |z| < 5 (a ~6e-7 per-bin false alarm
    # rate over ~10^4 bins).
    data, params, _, _ = data_arrays(base)
    e = ex.load("STEREO")
    mu = e.expectation(params[:, 0], params[:, 1])
    sd = np.sqrt(np.diag(e.covariance))  # built-ins: free normalisations, x = mu + F z
    z = (data["STEREO"].astype(float).mean(axis=1) - mu) / (sd / np.sqrt(6))
    assert np.all(np.abs(z) < 5)


@pytest.mark.parametrize("kw", [dict(threads=1), dict(threads=2, chunk_points=1), dict(threads=1, chunk_points=5)])
def test_identical_for_threads_and_chunking(base, tmp_path, kw):
    out = tmp_path / "x.h5"
    fcmlc.simulate(EXPS, GRID, n_per_point=6, seed=11, out=out, progress=False, **kw)
    a, b = data_arrays(base), data_arrays(out)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
    np.testing.assert_array_equal(a[2], b[2])


def test_dask_local_cluster_identical(base, tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask.h5"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        fcmlc.simulate(EXPS, GRID, n_per_point=6, seed=11, out=out, chunk_points=4, scheduler=client, progress=False)
    a, b = data_arrays(base), data_arrays(out)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])


def test_split_is_the_papers(base):
    _, _, split, _ = data_arrays(base)
    n_pts, n_per = split.shape
    held = np.all(split == 1, axis=1)
    assert held.sum() == round(0.10 * n_pts)  # whole grid points held out (interpolation sample)
    assert not np.any(split[~held] == 1)
    rest = (~held).sum() * n_per
    assert (split == 2).sum() == round(rest / 9)  # 1/9 of the rest at random
    np.testing.assert_array_equal(split, paper_split(n_pts, n_per, 11))
    assert not np.array_equal(split, paper_split(n_pts, n_per, 12))  # seeded
    assert SPLIT_STREAM not in [ex.load(n).stream_id for n in EXPS]


def test_resume_after_keyboard_interrupt(base, tmp_path, monkeypatch):
    out = tmp_path / "ctrlc.h5"
    calls = {"n": 0}
    orig = DatasetOutput.write

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return orig(*a, **k)

    monkeypatch.setattr(DatasetOutput, "write", flaky)
    with pytest.raises(KeyboardInterrupt):
        fcmlc.simulate(EXPS, GRID, n_per_point=6, seed=11, out=out, chunk_points=3, progress=False)
    with h5py.File(out, "r") as f:
        assert not f.attrs["complete"] and f["progress/done"][...].sum() == 3
    monkeypatch.setattr(DatasetOutput, "write", orig)
    fcmlc.simulate(EXPS, GRID, n_per_point=6, seed=11, out=out, progress=False)
    assert digest_without_chunking(out) == digest_without_chunking(base)


def digest_without_chunking(path):
    """The file's content except the chunk bookkeeping (chunk size differs between runs)."""
    data, params, split, attrs = data_arrays(path)
    h = hashlib.sha256()
    for k in sorted(data):
        h.update(data[k].tobytes())
    h.update(params.tobytes()), h.update(split.tobytes())
    for k in sorted(attrs):
        if k != "chunk_points":
            h.update(f"{k}={attrs[k]!r}".encode())
    return h.hexdigest()


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import fcmlc
    from fcmlc.dataset import DatasetOutput
    from fcmlc.physics import Grid

    out, mode = sys.argv[1], sys.argv[2]
    orig = DatasetOutput.write
    n = dict(calls=0)

    def dying(self, f, c, result, seconds):
        n["calls"] += 1
        if n["calls"] == 5:
            if mode == "mid-write":  # half the chunk's data on disk, not marked done
                p0 = c * self.chunk_points
                parts = result[0]
                f["data"][self.spec.experiments[0]][p0:p0 + 1] = np.full_like(parts[0][:1], 1e30)
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(self, f, c, result, seconds)

    if mode != "none":
        DatasetOutput.write = dying
    fcmlc.simulate({exps!r}, Grid(shape={shape!r}), n_per_point=6, seed=11, out=out, chunk_points=3,
                   progress=False)
""").format(exps=EXPS, shape=GRID.shape)


@pytest.mark.parametrize("mode", ["between-chunks", "mid-write"])
def test_resume_after_kill_9(base, tmp_path, mode):
    out = tmp_path / "killed.h5"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(out), mode], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    with h5py.File(out, "r") as f:
        assert not f.attrs["complete"]
        assert f["progress/done"][...].sum() == 4
    r = subprocess.run([sys.executable, str(script), str(out), "none"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert digest_without_chunking(out) == digest_without_chunking(base)


def test_finished_file_is_not_recomputed(base, tmp_path):
    out = tmp_path / "done.h5"
    fcmlc.simulate(EXPS, GRID, n_per_point=6, seed=11, out=out, progress=False)
    before = (out.stat().st_mtime_ns, digest(out))
    fcmlc.simulate(EXPS, GRID, n_per_point=6, seed=11, out=out, progress=False)
    assert (out.stat().st_mtime_ns, digest(out)) == before


@pytest.mark.parametrize("change, word", [(dict(seed=12), "seed"), (dict(n_per_point=5), "n_per_point"),
                                          (dict(experiments=["STEREO"]), "experiments"),
                                          (dict(grid=Grid(shape=(7, 7))), "grid")])
def test_mismatched_settings_refused_and_file_untouched(base, tmp_path, change, word):
    out = tmp_path / "keep.h5"
    out.write_bytes(base.read_bytes())
    before = digest(out)
    kw = dict(experiments=EXPS, grid=GRID, n_per_point=6, seed=11) | change
    with pytest.raises(ValueError, match="different settings") as e:
        fcmlc.simulate(out=out, progress=False, **kw)
    assert word in str(e.value)
    assert digest(out) == before
    fcmlc.simulate(out=out, progress=False, overwrite=True, **kw)  # explicit overwrite works
    with h5py.File(out, "r") as f:
        assert f.attrs["complete"]


def test_foreign_file_is_not_clobbered(tmp_path):
    out = tmp_path / "notes.h5"
    out.write_text("my thesis draft")
    with pytest.raises(ValueError, match="not an fcmlc dataset"):
        fcmlc.simulate(["BEST"], GRID, n_per_point=2, out=out, progress=False)
    assert out.read_text() == "my thesis draft"


def test_malformed_model_file_rejected_before_any_file_is_written(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(ex.load("STEREO").to_toml().replace("norm_prior = 0.0", "norm_prior = -0.1", 1))
    out = tmp_path / "never.h5"
    r = subprocess.run([sys.executable, "-m", "fcmlc.cli", "simulate", "--experiments", f"BEST,{bad}", "--grid", "5",
                        "-o", str(out), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "bad.toml" in r.stderr and "norm_prior" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("kw, msg", [(dict(n_per_point=0), "n_per_point"), (dict(seed=-1), "seed"),
                                     (dict(seed=1.5), "seed"), (dict(dtype="float16"), "dtype"),
                                     (dict(chunk_points=0), "chunk_points"), (dict(experiments=["NOPE"]), "NOPE"),
                                     (dict(out=None), "out")])
def test_argument_errors(tmp_path, kw, msg):
    args = dict(experiments=["BEST"], grid=GRID, n_per_point=2, seed=0, out=tmp_path / "a.h5", progress=False) | kw
    with pytest.raises(ValueError, match=msg):
        fcmlc.simulate(**args)


def test_cli_simulate(tmp_path, base):
    out = tmp_path / "cli.h5"
    r = subprocess.run([sys.executable, "-m", "fcmlc.cli", "simulate", "--experiments", ",".join(EXPS), "--grid",
                        "7x6", "--per-point", "6", "--seed", "11", "-o", str(out), "--threads", "1", "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "252 realizations" in r.stdout  # 42 points x 6
    assert digest_without_chunking(out) == digest_without_chunking(base)
    r = subprocess.run([sys.executable, "-m", "fcmlc.cli", "simulate", "--experiments", "STEREO", "--grid", "7x6",
                        "--seed", "3", "-o", str(out), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2 and "different settings" in r.stderr
    assert digest_without_chunking(out) == digest_without_chunking(base)
