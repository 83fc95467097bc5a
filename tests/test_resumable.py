"""The one resumable HDF5 job (fcmlc._resumable) on a toy output: layout, refusal of foreign,
unreadable or differently-made files, interruption and resume, finished files left alone."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from fcmlc._resumable import ChunkedOutput, open_output, run_chunks, run_output
from fcmlc.exceptions import FormatError, IncompatibleError, Interrupted

N_CHUNKS = 5


class Squares(ChunkedOutput):
    """Chunk c holds c^2 + seed in 3 cells."""

    kind = "a squares file"

    def __init__(self, seed):
        self.seed = seed

    def inspect(self, f):
        if f.attrs.get("what") != "squares":
            raise FormatError("not squares")
        return [] if int(f.attrs["seed"]) == self.seed else [f"seed: file has {f.attrs['seed']}, requested {self.seed}"]

    def layout(self, f):
        f.attrs["what"], f.attrs["seed"], f.attrs["complete"] = "squares", self.seed, False
        f.create_dataset("x", shape=(N_CHUNKS, 3), dtype="f8", fillvalue=np.nan)
        f.create_dataset("done", shape=(N_CHUNKS,), dtype="u1", fillvalue=0)

    def pending(self, f):
        return [int(c) for c in np.flatnonzero(f["done"][...] == 0)]

    def write(self, f, c, result, seconds):
        f["x"][c] = result
        f.flush()
        f["done"][c] = 1
        f.flush()

    def written(self, f):
        return f"{int(f['done'][...].sum())}/{N_CHUNKS} chunks"

    def finished(self, f):
        return True


def compute(seed):
    return lambda c: np.full(3, c * c + seed, dtype=float)


def contents(path):
    with h5py.File(path, "r") as f:
        return f["x"][...], f["done"][...], bool(f.attrs["complete"])


def test_run_resume_and_refusals(tmp_path):
    p = tmp_path / "sq.h5"
    assert open_output(p, Squares(1)) is False
    run_output(p, Squares(1), compute(1))
    x, done, complete = contents(p)
    assert complete and done.all() and np.array_equal(x[:, 0], np.arange(N_CHUNKS) ** 2 + 1)
    assert [q.name for q in tmp_path.iterdir()] == ["sq.h5"]  # no temporary left

    # interrupted after two chunks, then resumed: the same file content
    q = tmp_path / "killed.h5"
    open_output(q, Squares(1))
    calls = []

    def flaky(c):
        calls.append(c)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return compute(1)(c)

    with pytest.raises(Interrupted, match="interrupted: 2/5 chunks written to .*killed.h5; rerun the same command "
                       "to resume"):  # a KeyboardInterrupt carrying what was kept
        run_output(q, Squares(1), flaky)
    assert contents(q)[1].sum() == 2 and not contents(q)[2]
    assert open_output(q, Squares(1)) is True
    run_output(q, Squares(1), compute(1))
    assert all(np.array_equal(a, b) for a, b in zip(contents(q), contents(p)))

    # a finished file is not opened for writing
    before = q.stat().st_mtime_ns
    run_output(q, Squares(1), lambda c: pytest.fail("recomputed a finished file"))
    assert q.stat().st_mtime_ns == before

    # other settings, another kind, not HDF5: refused, untouched
    with pytest.raises(IncompatibleError, match="different settings.*seed"):
        open_output(q, Squares(2))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["what"] = "cubes"
    with pytest.raises(FormatError, match="is not a squares file.*not squares"):
        open_output(tmp_path / "other.h5", Squares(1))
    (tmp_path / "notes.h5").write_text("my notes")
    with pytest.raises(FormatError, match="not a squares file.*cannot be read as HDF5"):
        open_output(tmp_path / "notes.h5", Squares(1))
    assert (tmp_path / "notes.h5").read_text() == "my notes" and q.stat().st_mtime_ns == before
    # overwrite replaces
    assert open_output(q, Squares(2), overwrite=True) is False
    run_output(q, Squares(2), compute(2))
    assert np.array_equal(contents(q)[0][:, 0], np.arange(N_CHUNKS) ** 2 + 2)


def test_failed_layout_leaves_nothing(tmp_path):
    class Broken(Squares):
        def layout(self, f):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        open_output(tmp_path / "b.h5", Broken(0))
    assert list(tmp_path.iterdir()) == []


def test_run_chunks_writes_in_order():
    got = []
    run_chunks(range(6), lambda t: t * 10, lambda t, r, s: got.append((t, r, s >= 0)))
    assert got == [(t, 10 * t, True) for t in range(6)]
    run_chunks([], lambda t: pytest.fail("no task"), lambda *a: pytest.fail("no task"))
