"""Shared fixtures: the public data releases (../shared/data next to the repository).

Tests that need a release skip, saying which folder was missing, when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

from fcmlc import experiments as ex

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROSPECT_DIR = DATA / "prospect-2020-oscillation"
DANSS_DIR = DATA / "danss-2018"
NEOS_DIR = DATA / "neos-2017"


def need(path: Path) -> Path:
    """`path` if it is a directory; otherwise skip the test, naming what is missing."""
    if not path.is_dir():
        pytest.skip(f"public data not available: {path} (expected ../shared/data next to the repository)")
    return path


@pytest.fixture(scope="module")
def prospect():
    return ex.load_prospect_release(need(PROSPECT_DIR))


@pytest.fixture(scope="module")
def danss():
    return ex.load_danss_ratio(need(DANSS_DIR))


@pytest.fixture(scope="module")
def neos():
    return ex.load_neos_ratio(need(NEOS_DIR))
