"""Python 3.10 has no ``tomllib``: fcmlc must then read TOML with ``tomli`` (pyproject.toml's
conditional dependency). Simulated here in a fresh interpreter: ``tomllib`` made unimportable,
and a ``tomli`` module (the real tomllib under that name, as tomli is the same code) provided."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# the fcmlc this test session imports (the installed package in CI, the source tree with an
# in-place build in development): the subprocess must import the same one, compiled core included
import fcmlc  # noqa: E402

PYTHON_DIR = Path(fcmlc.__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib.abc
    import sys
    import types

    import tomllib as real

    fake = types.ModuleType("tomli")
    fake.loads = real.loads
    fake.load = real.load
    fake.TOMLDecodeError = real.TOMLDecodeError
    fake.calls = 0

    def counting_loads(text, **kw):
        fake.calls += 1
        return real.loads(text, **kw)

    fake.loads = counting_loads
    sys.modules["tomli"] = fake
    del sys.modules["tomllib"]

    class HideTomllib(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tomllib":
                raise ModuleNotFoundError("No module named 'tomllib'", name="tomllib")
            return None

    sys.meta_path.insert(0, HideTomllib())
    try:
        import tomllib  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("tomllib could still be imported")

    import fcmlc
    from fcmlc import experiments
    from fcmlc.experiments import toml_io

    assert toml_io.tomllib is fake, toml_io.tomllib
    exp = experiments.load("BEST")
    assert exp.name == "BEST" and exp.n_bins == 2, exp
    again = experiments.from_dict(toml_io.loads(exp.to_toml()))
    assert again.definition_hash == exp.definition_hash
    try:
        experiments.from_dict(toml_io.loads("x = "))
    except toml_io.TOMLDecodeError:
        pass
    else:
        raise SystemExit("invalid TOML was accepted")
    assert fake.calls >= 3, fake.calls
    print("ok", fcmlc.__version__)
""")


def test_reads_toml_with_tomli_when_tomllib_is_missing():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR)] + [p for p in [env.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok"), r.stdout
