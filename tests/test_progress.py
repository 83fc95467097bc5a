"""Progress bars in logs (fcmlc._progress): with stderr not a terminal, every bar is written as
whole lines (no carriage returns, no cursor movements) and nested bars are not drawn; the real
training loop's bars follow the rule."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import fcmlc

#: where the fcmlc under test lives (the installed package in CI, python/ in a development build):
#: the child interpreters must import the same one, compiled core included
PYTHON_DIR = str(Path(fcmlc.__file__).resolve().parents[1])


def _stderr_of(code: str) -> str:
    """stderr of ``code`` run in a fresh interpreter with stderr piped (not a terminal)."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": PYTHON_DIR, "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    return p.stderr


def test_piped_bars_are_whole_lines_and_nested_bars_are_not_drawn():
    err = _stderr_of("""
        from fcmlc._progress import progress_bar
        for epoch in progress_bar(range(3), desc="outer", unit="epoch"):
            with progress_bar(total=5, desc=f"inner {epoch}", nested=True) as bar:
                for _ in range(5):
                    bar.update(1)
        with progress_bar(total=4, desc="silent", enabled=False) as bar:
            bar.update(4)
    """)
    assert "\r" not in err and "\x1b" not in err, repr(err)
    lines = err.splitlines()
    # a start line and the final state (the 30 s interval is never reached by this short loop)
    assert lines[0].startswith("outer:   0%") and lines[-1].startswith("outer: 100%"), lines
    assert "3/3" in lines[-1]
    assert not any("inner" in ln or "silent" in ln for ln in lines), lines


def test_training_loop_bars_in_a_log():
    # the regressor loop (epochs outside, samples of one epoch nested): one readable bar
    err = _stderr_of("""
        import numpy as np, torch
        torch.set_num_threads(1)
        from fcmlc.models.training import RegressorConfig, Samples, fit_regressor

        class Mem:  # a dataset in memory with the interface Samples reads
            def __init__(self, n):
                r = np.random.default_rng(0)
                self.x = r.normal(size=(n, 3)).astype(np.float32)
                self.y = 10.0 ** r.uniform(-1, 0, size=(n, 2))
                self.n_features = 3
            def iter_batches(self, indices, rows, shuffle_seed=None, window=None):
                for r0 in range(0, len(indices), rows):
                    i = indices[r0:r0 + rows]
                    yield self.x[i], self.y[i]

        ds = Mem(64)
        tr = Samples(ds, np.arange(48), progress=True, desc="loading training set")
        va = Samples(ds, np.arange(48, 64))
        fit_regressor(tr, va, RegressorConfig(hidden=(4,), max_epochs=3, batch_size=16), seed=0, progress=True)
    """)
    assert "\r" not in err and "\x1b" not in err, repr(err)
    assert any(ln.startswith("regressor: 100%") for ln in err.splitlines()), err
    assert "epoch 0" not in err


def test_every_progress_bar_goes_through_the_one_rule():
    """No module but fcmlc._progress makes a tqdm bar itself (a direct tqdm bar would redraw with
    carriage returns into a log)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "python" / "fcmlc"
    direct = [str(p.relative_to(root)) for p in root.rglob("*.py")
              if p.name != "_progress.py" and "tqdm" in p.read_text()]
    assert direct == []
