"""The `fcmlc` command line as a whole: every command's --help, a light `fcmlc --help`, the
shared argument helpers, and the layout of fcmlc.cli (command modules import only the library
and cli._args)."""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from fcmlc.cli import build_parser, main
from fcmlc.cli._args import dm2_range_arg, grid_arg, parse_levels

CLI_DIR = Path(__file__).resolve().parents[1] / "python" / "fcmlc" / "cli"
COMMANDS = ("simulate", "experiments", "train", "fit", "exact", "fc", "wilks", "coverage", "compare", "reproduce")


def test_every_command_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(c in text for c in COMMANDS) and "%%" not in text
    for cmd in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert text.startswith(f"usage: fcmlc {cmd}") and "%%" not in text, cmd


def test_help_is_light():
    code = ("import sys\nfrom fcmlc.cli import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'scipy', 'dask', 'normflows') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    for mod in ("fcmlc", "fcmlc.cli"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("usage: fcmlc"), r.stderr


def test_argument_helpers():
    assert grid_arg("7").shape == (7, 7) and grid_arg("5x9").shape == (5, 9)
    for bad in ("1", "3x", "axb", "2x3x4"):
        with pytest.raises(argparse.ArgumentTypeError, match="--grid"):
            grid_arg(bad)
    assert dm2_range_arg("0.01:100") == (0.01, 100.0) and dm2_range_arg("1,2") == (1.0, 2.0)
    assert parse_levels("0.9, 0.68,") == (0.68, 0.9)  # sorted, as every output lists them
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_levels("0.9,x")
    with pytest.raises(ValueError, match=r"--levels must lie in \(0, 1\)"):
        parse_levels("0.9,1")
    with pytest.raises(ValueError, match="--levels contain duplicates"):
        parse_levels("0.9,0.9")
    with pytest.raises(ValueError, match="--levels must not be empty"):
        parse_levels(" , ")


def test_bad_counts_use_the_library_messages(tmp_path, capsys):
    assert main(["fc", "--experiments", "BEST", "--grid", "5", "--toys", "0", "-o", str(tmp_path / "f.h5")]) == 2
    assert "--toys must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["wilks", "--experiments", "BEST", "--grid", "5", "--observed", "--threads", "0",
                 "-o", str(tmp_path / "w")]) == 2
    assert "--threads must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["reproduce", "--task", "best", "--scale", "tiny", "--seed", "-1", "-o", str(tmp_path / "r")]) == 2
    assert "--seed must be an integer in [0, 2^64), got -1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _relative_imports(path):
    """(level, module) of every relative import in ``path``; `from . import x` gives (1, 'x')."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.module:
                out.append((node.level, node.module))
            else:
                out.extend((node.level, a.name) for a in node.names)
    return out


def test_command_modules_import_only_the_library_and_args():
    leaves = sorted(p for p in CLI_DIR.glob("*.py") if p.stem not in ("__init__", "__main__", "_args"))
    assert {p.stem for p in leaves} == {"simulate", "frequentist", "inference", "exact", "validation", "estimators", "reproduce"}
    for p in leaves + [CLI_DIR / "_args.py"]:
        for level, mod in _relative_imports(p):
            if level == 1:  # inside fcmlc.cli: only the shared argument helpers
                assert mod == "_args" and p.stem != "_args", (p.name, mod)
            else:  # the library, never the cli package itself
                assert level == 2 and not mod.startswith("cli"), (p.name, mod)
