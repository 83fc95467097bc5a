"""Fault injection on the command line: a read-only output directory, a full disk (a file-size
limit set with setrlimit in the child, SIGXFSZ ignored), Ctrl-C at random points of `simulate`
(20 tries), SIGTERM, kill -9 then resume, a corrupted dataset, a truncated or damaged FC file,
wrong kinds of output paths, a grid beyond the memory, missing inputs.

Each fault must give one line on stderr (no traceback, no crash), the documented exit status
(fcmlc.cli.EXIT_CODES), and leave every file written before it unchanged (digests before and
after) with no temporary litter. When the tests run as root (containers), the child drops the
capabilities that let root write into a read-only directory, so the permission checks are real.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from fcmlc.cli import EXIT_CODES, build_parser, main
from fcmlc.dataset import open_dataset
from fcmlc.exceptions import CorruptFileError, FormatError
from fcmlc.frequentist import FCResult, feldman_cousins
from fcmlc.physics import Grid

ROOT = Path(__file__).resolve().parents[1]
FC_GRID = Grid(shape=(9, 9))
#: a short `simulate` run of many chunks (one grid point each), so that a signal lands mid-run
SIM = ["simulate", "--experiments", "GALLIUM", "--grid", "10", "--per-point", "5", "--chunk-points", "1",
       "--threads", "1", "--no-progress"]
SIM_CHUNKS = 100
TINY_TRAIN = ('{"regressor": {"hidden": [16, 8], "batch_size": 128}, "flow": {"n_layers": 1, "hidden": 8, '
              '"n_blocks": 1}, "yhat_shape": [8, 9], "y_shape": [10, 11]}')


# --- helpers -----------------------------------------------------------------------------------


def _child_setup(fsize=None, unprivileged=False):
    """preexec_fn of a faulty child: a file-size limit (writes beyond it fail with EFBIG; SIGXFSZ
    ignored so they fail instead of killing), and for root no CAP_DAC_OVERRIDE /
    CAP_DAC_READ_SEARCH (dropped from the bounding set, so permissions apply after exec)."""
    def setup():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))
        if unprivileged and os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (1, 2):  # PR_CAPBSET_DROP = 24
                if libc.prctl(24, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return setup


def fcmlc_cmd(args, code=None):
    return [sys.executable, "-c", code, *map(str, args)] if code else [sys.executable, "-m", "fcmlc", *map(str, args)]


def run(args, cwd, fsize=None, unprivileged=False, code=None, timeout=120):
    return subprocess.run(fcmlc_cmd(args, code), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_child_setup(fsize, unprivileged))


#: a child whose space check before the work is defeated, as when the disk fills after the check
NO_PRECHECK = ("import sys, fcmlc._io as io_; io_.check_space = lambda *a, **k: None\n"
               "from fcmlc.cli import main; sys.exit(main(sys.argv[1:]))")
#: ... and whose reservation of the file's blocks is too, as on a file system without fallocate
NO_RESERVE = "import fcmlc._io as io_; io_.GuardedFile.reserve = lambda self: None\n" + NO_PRECHECK


def one_line(stderr: str, *words) -> str:
    """The single line of `stderr`, checked: no traceback, starts with 'fcmlc', says `words`."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fcmlc") and "Traceback" not in stderr, stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def tree(d: Path) -> dict:
    """{relative path: sha256} of every file under `d` (hidden ones too: litter counts)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).rglob("*")) if p.is_file()}


def data_digest(path) -> str:
    """The realizations and their bookkeeping (what a rerun must reproduce)."""
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for k in sorted(f["data"]):
            h.update(f["data"][k][...].tobytes())
        for k in ("params", "split", "progress/done", "progress/crc32"):
            h.update(f[k][...].tobytes())
        assert f.attrs["complete"]
    return h.hexdigest()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A reference `simulate` dataset (SIM, uninterrupted; its wall time), a small BEST dataset
    and an FC file, in one module directory."""
    d = tmp_path_factory.mktemp("faults")
    t0 = time.perf_counter()
    r = run(SIM + ["-o", d / "ref.h5"], d)
    assert r.returncode == 0, r.stderr
    sim_seconds = time.perf_counter() - t0
    assert main(["simulate", "--experiments", "BEST", "--grid", "9", "--per-point", "20", "-o", str(d / "best.h5"),
                 "--no-progress"]) == 0
    feldman_cousins(["BEST"], FC_GRID, n_toys=40, seed=1, out=d / "fc.h5", progress=False)
    return {"dir": d, "ref": d / "ref.h5", "best": d / "best.h5", "fc": d / "fc.h5", "sim_seconds": sim_seconds}


# --- read-only output directory ------------------------------------------------------------------


def test_read_only_directory_every_command(work, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(work["ref"], ro / "old.h5")  # something written earlier
    ro.chmod(0o555)
    model = work["dir"] / "model"  # the output is checked before the model is read
    cmds = {
        "simulate": SIM + ["-o", ro / "s.h5"],
        "fc": ["fc", "--experiments", "BEST", "--grid", "9", "--toys", "20", "-o", ro / "fc.h5", "--no-progress"],
        "wilks": ["wilks", "--experiments", "BEST", "--grid", "9", "--observed", "-o", ro / "w"],
        "exact": ["exact", "--experiments", "BEST", "--grid", "9", "--observed", "-o", ro / "e", "--no-diagnostics"],
        "coverage": ["coverage", model, "--trials", "20", "--samples", "20", "-o", ro / "c", "--no-progress"],
        "compare": ["compare", model, "--observed", "-o", ro / "cmp", "--samples", "50"],
        "reproduce": ["reproduce", "--task", "best", "--scale", "tiny", "-o", ro / "r", "--no-progress"],
    }
    before = tree(ro)
    try:
        procs = {k: subprocess.Popen(fcmlc_cmd(a), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=_child_setup(unprivileged=True)) for k, a in cmds.items()}
        for name, p in procs.items():
            _, err = p.communicate(timeout=300)
            assert p.returncode == EXIT_CODES["file error"], (name, err)
            line = one_line(err, f"fcmlc {name}: error:", str(ro))
            assert "ermission denied" in line, line
    finally:
        ro.chmod(0o755)
    assert tree(ro) == before


# --- disk full: a file-size limit in the child -----------------------------------------------------


def test_file_size_limit_is_refused_before_any_work(tmp_path):
    r = run(SIM + ["-o", tmp_path / "x.h5"], tmp_path, fsize=64 << 10)
    assert r.returncode == EXIT_CODES["disk full"], r.stderr
    one_line(r.stderr, "x.h5 needs", "file-size limit (ulimit -f) is 64 KiB")
    assert list(tmp_path.iterdir()) == []


def test_failed_writes_never_crash_and_keep_what_was_written(work, tmp_path):
    # the check before the work defeated: the file's creation fails inside HDF5 (this crashed
    # with a segmentation fault, exit 139, leaving a temporary file)
    r = run(SIM + ["-o", tmp_path / "x.h5"], tmp_path, fsize=8 << 10, code=NO_PRECHECK)
    assert r.returncode == EXIT_CODES["disk full"], r.stderr
    one_line(r.stderr, "writing", "x.h5 failed: File too large", "ulimit -f")
    assert list(tmp_path.iterdir()) == []

    # resumed: a file half done; the chunks beyond the limit cannot be written. With the blocks
    # reserved first, that is found before any chunk is computed; without (a file system that
    # cannot reserve), when a chunk is written: either way nothing written is lost, and the
    # same command then finishes the file
    part = tmp_path / "part.h5"
    shutil.copy(work["ref"], part)
    with h5py.File(part, "r+") as f:
        f["progress/done"][20:] = 0
        f.attrs["complete"] = False
        kept = {k: f["data"][k][:20] for k in f["data"]}
    off, size = _data_offset(part, "GALLIUM")
    for code in (NO_PRECHECK, NO_RESERVE):
        r = run(SIM + ["-o", part], tmp_path, fsize=off + size // 2, code=code)  # in the middle of the data
        assert r.returncode == EXIT_CODES["disk full"], r.stderr
        line = one_line(r.stderr, "part.h5 failed: File too large", "rerun the same command to resume")
        with h5py.File(part, "r") as f:
            done = f["progress/done"][...]
            assert 20 <= done.sum() < done.size and not f.attrs["complete"]
            assert all(np.array_equal(f["data"][k][:20], v) for k, v in kept.items())  # nothing written lost
        assert f"{int(done.sum())}/{done.size} chunks kept" in line
    r = run(SIM + ["-o", part], tmp_path)
    assert r.returncode == 0, r.stderr
    assert data_digest(part) == data_digest(work["ref"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.h5"]


def test_full_disk_keeps_previous_results(tmp_path):
    out = tmp_path / "w"
    args = ["wilks", "--experiments", "BEST", "--grid", "9", "--observed", "-o", out]
    assert run(args, tmp_path).returncode == 0
    before = tree(out)
    r = run(args + ["--overwrite", "--grid", "11"], tmp_path, fsize=8 << 10)  # the figure does not fit
    assert r.returncode == EXIT_CODES["disk full"], r.stderr
    one_line(r.stderr, "fcmlc wilks: error:", "File too large")
    assert tree(out) == before  # all three files as they were, no staging directory left

    r = run(["fc", "--experiments", "BEST", "--grid", "9", "--toys", "20", "-o", tmp_path / "fc.h5", "--no-progress"],
            tmp_path, fsize=8 << 10)
    assert r.returncode == EXIT_CODES["disk full"], r.stderr
    one_line(r.stderr, "fc.h5 needs", "file-size limit")
    assert not (tmp_path / "fc.h5").exists()


# --- interruption ------------------------------------------------------------------------------------


def _started(p) -> None:
    """Wait until the child has loaded the command line (h5py mapped: `python -m fcmlc` then
    handles Ctrl-C; a signal in the first ~0.1 s of interpreter start-up is Python's own)."""
    while p.poll() is None:
        with contextlib.suppress(OSError):
            if "h5py" in Path(f"/proc/{p.pid}/maps").read_text():
                return
        time.sleep(0.005)


def _interrupt(out, delay, sig=signal.SIGINT):
    """Run SIM into `out`, send `sig` `delay` seconds after it started: (exit status, stderr,
    seconds from the signal to the exit), or None when the run was over before the signal."""
    p = subprocess.Popen(fcmlc_cmd(SIM + ["-o", out]), cwd=out.parent, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _started(p)
    time.sleep(delay)
    if p.poll() is not None:
        p.communicate()
        return None
    t0 = time.perf_counter()
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    return p.returncode, err, time.perf_counter() - t0


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see the child start")
def test_sigint_at_random_points_of_simulate_20_of_20(work, tmp_path, capsys):
    rng = random.Random(13)
    window = 0.5 * work["sim_seconds"]  # from loading the experiments to the last chunks
    ref = data_digest(work["ref"])
    honoured = late = 0
    with ThreadPoolExecutor(4) as pool:  # four runs at a time: the tries are mostly waiting
        while honoured < 20:
            assert late <= 8, late  # many "late" tries would hide lost signals
            outs = [tmp_path / f"t{honoured + late + k}.h5" for k in range(4)]
            for out, got in zip(outs, pool.map(_interrupt, outs, [rng.uniform(0.0, window) for _ in outs])):
                if got is None or got[0] == 0:  # the run was over before the signal came: not a try
                    late += 1
                    window *= 0.7  # (a slower reference run than these)
                    assert data_digest(out) == ref
                    continue
                rc, err, stop = got
                assert rc == EXIT_CODES["interrupted"], err
                line = one_line(err, "fcmlc simulate: interrupted")
                assert stop < 5, stop  # stops within a chunk, not at the end of the run
                if "chunks written" in line:  # else stopped before the file was made, or once it was complete
                    with h5py.File(out, "r") as f:
                        assert f"{int(f['progress/done'][...].sum())}/{SIM_CHUNKS} chunks written" in line, line
                assert main(SIM + ["-o", str(out)]) == 0  # the same command resumes it
                assert data_digest(out) == ref
                honoured += 1
    capsys.readouterr()
    assert honoured >= 20
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".h5"] * (honoured + late)  # no temporaries


def test_sigterm_stops_and_resumes(work, tmp_path):
    out = tmp_path / "term.h5"
    for delay in 0.3 * work["sim_seconds"] * 0.5 ** np.arange(6):
        got = _interrupt(out, delay, signal.SIGTERM)
        if got is not None and got[0] != 0:
            break
        out.unlink()  # over before the signal: again, sooner
    rc, err, _ = got
    assert rc == 128 + signal.SIGTERM, err
    one_line(err, "fcmlc simulate: interrupted")
    assert run(SIM + ["-o", out], tmp_path).returncode == 0
    assert data_digest(out) == data_digest(work["ref"])


def test_kill_9_then_resume(work, tmp_path):
    rng = random.Random(5)
    out = tmp_path / "k.h5"
    for _ in range(3):
        p = subprocess.Popen(fcmlc_cmd(SIM + ["-o", out]), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        _started(p)
        time.sleep(rng.uniform(0.0, 0.6 * work["sim_seconds"]))
        p.kill()
        p.wait()
    r = run(SIM + ["-o", out], tmp_path)
    assert r.returncode == 0, r.stderr
    assert data_digest(out) == data_digest(work["ref"])
    assert [q.name for q in tmp_path.iterdir()] == ["k.h5"]  # a killed run's temporary is removed too


# --- damaged inputs ------------------------------------------------------------------------------


def _data_offset(path, name):
    with h5py.File(path, "r") as f:
        d = f["data"][name]
        return d.id.get_offset(), d.id.get_storage_size()


def test_corrupted_dataset_is_refused_naming_the_sample(work, tmp_path, capsys):
    bad = tmp_path / "flipped.h5"
    shutil.copy(work["best"], bad)
    off, size = _data_offset(bad, "BEST")
    raw = bytearray(bad.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.choice(size, 200, replace=False):  # 200 flipped bytes in the realizations
        raw[off + int(i)] ^= 0xFF
    bad.write_bytes(bytes(raw))
    before = tree(tmp_path)
    with open_dataset(bad) as ds, pytest.raises(CorruptFileError, match=r"flipped.h5: (sample \d+ .*BEST bin|the "
                                                                        r"realizations of BEST)"):
        ds.features()
    assert main(["train", str(bad), "-o", str(tmp_path / "m"), "--epochs", "1", "--device", "cpu", "--no-progress",
                 "--config", TINY_TRAIN]) == EXIT_CODES["file error"]
    line = one_line(capsys.readouterr().err, "fcmlc train: error:", "flipped.h5", "simulate it again")
    assert tree(tmp_path) == before, line

    # one NaN (written through HDF5): the sample, point, realization and bin are named
    nan = tmp_path / "nan.h5"
    shutil.copy(work["best"], nan)
    with h5py.File(nan, "r+") as f:
        f["data/BEST"][40, 7, 1] = np.nan
    with open_dataset(nan) as ds, pytest.raises(
            CorruptFileError, match=r"sample 807 \(grid point 40, realization 7\), BEST bin 1 = nan is not a "
                                    r"finite number \(and the chunk fails its checksum\)"):
        ds.features()

    # a value the experiment model cannot give, its checksum made to match: the range check
    odd = tmp_path / "odd.h5"
    shutil.copy(work["best"], odd)
    with h5py.File(odd, "r+") as f:
        x = f["data/BEST"][...]
        x[12, 3, 0] = -4.19
        f["data/BEST"][...] = x
        cp = int(f.attrs["chunk_points"])
        f["progress/crc32"][0, 0] = zlib.crc32(np.ascontiguousarray(x[:cp]))
    with open_dataset(odd) as ds, pytest.raises(CorruptFileError, match=r"sample 243 \(grid point 12, realization "
                                                                        r"3\), BEST bin 0 = -4.19 is outside the "
                                                                        r"range the experiment model allows"):
        ds.features(np.arange(200, 300))


def test_truncated_or_damaged_fc_file(work, tmp_path, capsys):
    cut = tmp_path / "cut.h5"
    cut.write_bytes(work["fc"].read_bytes()[: work["fc"].stat().st_size // 2])
    with pytest.raises(FormatError, match="cut.h5 cannot be read as HDF5"):
        FCResult.load(cut)
    before = tree(tmp_path)
    assert main(["wilks", "--experiments", "BEST", "--grid", "9", "--observed", "--fc", str(cut),
                 "-o", str(tmp_path / "w")]) == EXIT_CODES["file error"]
    one_line(capsys.readouterr().err, "fcmlc wilks: error:", "cut.h5 cannot be read as HDF5")
    assert main(["coverage", str(work["dir"] / "model"), "--fc", str(cut), "--trials", "5", "--samples", "20",
                 "-o", str(tmp_path / "c"), "--no-progress"]) == EXIT_CODES["file error"]
    one_line(capsys.readouterr().err, "fcmlc coverage: error:", "cut.h5")
    assert tree(tmp_path) == before

    flipped = tmp_path / "flipped.h5"
    shutil.copy(work["fc"], flipped)
    with h5py.File(flipped, "r+") as f:
        f["critical"][1, 30] += 0.5  # a plausible value, not the one computed
    with pytest.raises(CorruptFileError, match="grid point 30 do not match the checksum"):
        FCResult.load(flipped)


def test_missing_inputs(work, tmp_path, capsys):
    assert main(["wilks", "--experiments", "BEST", "--grid", "9", "--observed", "--fc", str(tmp_path / "no.h5"),
                 "-o", str(tmp_path / "w")]) == EXIT_CODES["file error"]
    one_line(capsys.readouterr().err, "no.h5 does not exist")
    assert main(["train", str(tmp_path / "no.h5"), "-o", str(tmp_path / "m")]) == EXIT_CODES["file error"]
    one_line(capsys.readouterr().err, "fcmlc train: error:", "no.h5 does not exist")
    assert tree(tmp_path) == {}


# --- output paths -----------------------------------------------------------------------------------


def test_output_of_the_wrong_kind_or_existing(work, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("notes")
    before = tree(tmp_path)
    assert main(SIM + ["-o", str(tmp_path / "adir")]) == EXIT_CODES["bad input"]
    one_line(capsys.readouterr().err, "adir is a directory: name a file")
    assert main(["fc", "--experiments", "BEST", "--grid", "9", "--toys", "20", "-o", str(tmp_path / "adir"),
                 "--no-progress"]) == EXIT_CODES["bad input"]
    one_line(capsys.readouterr().err, "adir is a directory")
    assert main(["wilks", "--experiments", "BEST", "--grid", "9", "--observed", "-o", str(tmp_path / "afile")]) \
        == EXIT_CODES["bad input"]
    one_line(capsys.readouterr().err, "afile exists and is not a directory")
    assert tree(tmp_path) == before

    # an earlier result is replaced only with --overwrite, all files together
    out = tmp_path / "e"
    args = ["exact", "--experiments", "BEST", "--grid", "9", "--observed", "-o", str(out)]
    assert main(args) == 0
    first = tree(out)
    assert set(first) == {"posterior.npz", "posterior.png", "summary.json", "diagnostics.json"}
    capsys.readouterr()
    assert main(args + ["--grid", "11"]) == EXIT_CODES["bad input"]
    one_line(capsys.readouterr().err, "already holds", "--overwrite")
    assert tree(out) == first
    assert main(args + ["--grid", "11", "--overwrite", "--no-diagnostics"]) == 0
    assert set(tree(out)) == {"posterior.npz", "posterior.png", "summary.json"}  # no stale diagnostics.json


def test_grid_beyond_the_memory(work, tmp_path, capsys):
    for args in (SIM + ["--grid", "100000", "-o", str(tmp_path / "g.h5")],
                 ["wilks", "--experiments", "BEST", "--grid", "100000", "--observed", "-o", str(tmp_path / "w")],
                 ["fc", "--experiments", "BEST", "--grid", "100000", "-o", str(tmp_path / "fc.h5")],
                 ["exact", "--experiments", "BEST", "--grid", "100000", "--observed", "-o", str(tmp_path / "e")]):
        assert main(args) == EXIT_CODES["out of memory"], args
        one_line(capsys.readouterr().err, "100000 x 100000 grid (1e+10 points) needs about", "GiB of memory",
                 "smaller grid")
    assert list(tmp_path.iterdir()) == []


def test_exit_codes_are_documented():
    readme = (ROOT / "README.md").read_text()
    epilog = " ".join(build_parser().format_help().split())
    for what, code in EXIT_CODES.items():
        assert f"`{code}`" in readme, (what, code)
        assert str(code) in epilog, (what, code)
    assert "`143`" in readme and "143" in epilog


def test_every_fault_type_has_its_exit_status(monkeypatch, tmp_path, capsys):
    """main's one error path, exception by exception (the command raising it is stubbed)."""
    import errno

    from fcmlc.cli import simulate as cli_simulate
    from fcmlc.exceptions import DiskFullError, IncompatibleError, Interrupted, OutOfMemoryError

    cases = [(ValueError("bad --seed"), 2, "bad --seed"), (IncompatibleError("other grid"), 2, "other grid"),
             (FileNotFoundError(errno.ENOENT, "No such file or directory", "in.h5"), 3, "in.h5: No such file"),
             (PermissionError(errno.EACCES, "Permission denied", "out.h5"), 3, "out.h5: Permission denied"),
             (FormatError("x.h5 is truncated"), 3, "x.h5 is truncated"),
             (CorruptFileError("x.h5: sample 3"), 3, "sample 3"),
             (OSError(errno.ENOSPC, "No space left on device", "out.h5"), 4, "free some space"),
             (OSError(errno.EFBIG, "File too large", "out.h5"), 4, "ulimit -f"),
             (OSError("Can't write data (file write failed: errno = 28, error\nmessage = 'No space')"), 4, "errno = 28"),
             (DiskFullError("out.h5 needs 2 GiB"), 4, "needs 2 GiB"),
             (MemoryError("Unable to allocate 74.5 GiB for an array"), 5, "out of memory: Unable to allocate 74.5 GiB"),
             (OutOfMemoryError("needs about 596 GiB"), 5, "596 GiB"),
             (KeyboardInterrupt(), 130, "fcmlc simulate: interrupted"),
             (Interrupted("interrupted: 3/9 chunks written", signal.SIGTERM), 143, "3/9 chunks written")]
    for exc, code, words in cases:
        def boom(args, exc=exc):
            raise exc
        monkeypatch.setattr(cli_simulate, "simulate", lambda *a, exc=exc, **k: boom(None, exc))
        assert main(SIM + ["-o", str(tmp_path / "x.h5")]) == code, exc
        one_line(capsys.readouterr().err, words)


def test_temporaries_of_killed_runs_are_removed(tmp_path):
    from fcmlc._io import OutputDir, atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / f"a.json.{pid}.tmp").write_text("half")
    (tmp_path / f"a.json.{os.getppid()}.tmp").write_text("a running writer's")  # kept: its process runs
    atomic_write_text(tmp_path / "a.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", f"a.json.{os.getppid()}.tmp"]
    out = tmp_path / "res"
    (out / f".fcmlc-staging.{pid}.tmp").mkdir(parents=True)
    (out / f".fcmlc-staging.{pid}.tmp" / "x.png").write_text("half")
    with OutputDir(out, ("x.png",)).writing() as stage:
        (stage / "x.png").write_text("new")
    assert tree(out) == {"x.png": hashlib.sha256(b"new").hexdigest()}


def test_no_hdf5_file_is_written_around_the_guard():
    """Every HDF5 write of the package goes through fcmlc._io.h5_writer (h5py.File opened for
    reading only elsewhere)."""
    import re

    for p in sorted((ROOT / "python" / "fcmlc").rglob("*.py")):
        for m in re.finditer(r"h5py\.File\(([^)]*)\)", p.read_text()):
            assert m.group(1).rstrip().endswith('"r"') or m.group(0) == "h5py.File(self.guard, mode)", \
                (p.name, m.group(0))


def test_files_without_checksums_are_finished_and_read_unchecked(work, tmp_path):
    """A dataset or FC file begun by an fcmlc without the checksums is resumed (without them)
    and read with the finiteness check only."""
    old = tmp_path / "old.h5"
    shutil.copy(work["ref"], old)
    with h5py.File(old, "r+") as f:
        del f["progress/crc32"], f["progress/bounds"]
        f["progress/done"][50:] = 0
        f.attrs["complete"] = False
    assert main(SIM + ["-o", str(old)]) == 0
    with open_dataset(old) as ds, open_dataset(work["ref"]) as ref:
        assert np.array_equal(ds.features(), ref.features())
    fc = tmp_path / "fc.h5"
    shutil.copy(work["fc"], fc)
    with h5py.File(fc, "r+") as f:
        del f["crc32"]
        f["done"][40:] = 0
        f.attrs["complete"] = False
    res = feldman_cousins(["BEST"], FC_GRID, n_toys=40, seed=1, out=fc, progress=False)
    assert res.complete
    np.testing.assert_array_equal(res.critical, FCResult.load(work["fc"]).critical)


def test_sigint_in_fc_stops_between_chunks_and_resumes(work, tmp_path):
    """Ctrl-C while fc's chunks run: it stops after the chunk in hand, says how far it got, and
    the rerun finishes to the uninterrupted result. (20000 toys: the job takes ~1 s of chunks;
    BEST with 200 toys was over in 0.1 s and the signal met the summary instead.)"""
    args = ["fc", "--experiments", "BEST", "--grid", "12", "--toys", "20000", "--chunk-points", "2", "--threads",
            "1", "--no-progress"]
    assert main(args + ["-o", str(tmp_path / "ref.h5")]) == 0
    out = tmp_path / "cut.h5"
    err = ""
    for delay in (0.3, 0.1, 0.03, 0.0):
        p = subprocess.Popen(fcmlc_cmd(args + ["-o", out]), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        while p.poll() is None and not out.exists():  # laid out: the chunks are about to run
            time.sleep(0.002)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
            if "resume" in err:
                break
        p.communicate()
        out.unlink(missing_ok=True)  # finished before the signal: again, sooner
    assert p.returncode == EXIT_CODES["interrupted"], err
    one_line(err, "fcmlc fc: interrupted", "grid points written", "rerun the same command to resume")
    assert not FCResult.load(out).complete
    assert main(args + ["-o", str(out)]) == 0
    a, b = FCResult.load(out), FCResult.load(tmp_path / "ref.h5")
    assert a.complete and np.array_equal(a.critical, b.critical, equal_nan=True)


def test_signal_inside_a_c_extension_import_is_an_interruption(tmp_path, monkeypatch, capsys):
    """A Ctrl-C that arrives while a C extension initialises (CI caught one in fc's lazy
    ``import scipy.stats``: `ImportError: initialization failed`, raised from our Interrupted)
    ends as an interruption (one line, exit 130), not as a traceback with exit 1; an
    ImportError without an interruption behind it is a bug and keeps its traceback."""
    import fcmlc.frequentist.wilks as wilks

    def import_cut_short():
        try:
            signal.raise_signal(signal.SIGINT)  # main's handler raises Interrupted here
            time.sleep(1.0)  # not reached: the handler runs at the next bytecode
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    args = ["fc", "--experiments", "BEST", "--grid", "5", "--toys", "20", "--threads", "1", "--no-progress"]
    monkeypatch.setattr(wilks, "_chi2_dist", import_cut_short)
    assert main(args + ["-o", str(tmp_path / "a.h5")]) == EXIT_CODES["interrupted"]
    one_line(capsys.readouterr().err, "fcmlc fc: interrupted")
    assert FCResult.load(tmp_path / "a.h5").complete  # the signal came after the last chunk

    def broken_import():
        raise ImportError("a broken installation")

    monkeypatch.setattr(wilks, "_chi2_dist", broken_import)
    with pytest.raises(ImportError, match="broken installation"):
        main(args + ["-o", str(tmp_path / "b.h5")])
