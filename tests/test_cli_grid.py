"""--dm2-range widens or narrows the grid of a command, and every fit says when its best point or
a region touches a limit of the grid."""
from __future__ import annotations

import json

import pytest

from fcmlc.cli import main


def test_wilks_dm2_range_and_edge_warning(tmp_path, capsys):
    # BEST's real data prefer dm2 ~ 3 eV^2 and above: a grid ending at 1 eV^2 puts the best fit on its edge
    assert main(["wilks", "--experiments", "BEST", "--observed", "--grid", "21", "--dm2-range", "0.01:1",
                 "-o", str(tmp_path / "narrow")]) == 0
    s = json.loads((tmp_path / "narrow" / "summary.json").read_text())
    assert s["grid"]["dm2_range"] == [0.01, 1.0]
    assert s["edge_warnings"][0] == "best fit on the grid's high dm2 edge"
    assert "warning: best fit on the grid's high dm2 edge" in capsys.readouterr().out
    # the default grid (the paper's 0.01-10 eV^2) has the best fit inside
    assert main(["wilks", "--experiments", "BEST", "--observed", "--grid", "21", "-o", str(tmp_path / "wide")]) == 0
    s = json.loads((tmp_path / "wide" / "summary.json").read_text())
    assert s["grid"]["dm2_range"] == [0.01, 10.0]
    assert not any(w.startswith("best fit") for w in s["edge_warnings"])


@pytest.mark.parametrize("bad", ["3:1", "0:1", "x:2", "1"])
def test_bad_dm2_range_is_a_clear_error(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["wilks", "--experiments", "BEST", "--observed", "--dm2-range", bad, "-o", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "--dm2-range" in capsys.readouterr().err
