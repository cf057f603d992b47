import json

import pytest

from hil.cli import main
from hil.cycles import CycleError, load_cycle


def test_run_short_user_cycle(tmp_path, capsys):
    csv = tmp_path / "short.csv"
    csv.write_text("time_s,speed_mps\n0,0\n10,10\n20,20\n30,0\n")
    out = tmp_path / "summary.json"
    assert main(["run", "--cycle", str(csv), "--repeat", "2", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["cycle"] == "shortx2"
    assert summary["soc_end"] < summary["soc_start"]
    assert 0.1 < summary["distance_km"] < 1.0
    assert summary["energy_out_kWh"] > 0


def test_cycles_lists_builtins(capsys):
    assert main(["cycles"]) == 0
    listing = capsys.readouterr().out
    for name in ("udds", "hwfet", "us06", "wltc"):
        assert name in listing


def test_builtin_cycles_match_provenance():
    assert load_cycle("udds").distance_km == pytest.approx(11.99, abs=0.01)
    assert load_cycle("wltc").distance_km == pytest.approx(23.27, abs=0.01)


@pytest.mark.parametrize("text,message", [
    ("time,speed\n0,0\n", ":1: expected the header"),
    ("time_s,speed_mps\n0,0\n1,nan\n", ":3: time and speed must be finite"),
    ("time_s,speed_mps\n0,0\n1,abc\n", ":3: expected two numbers"),
    ("time_s,speed_mps\n0,0\n0,1\n", ":3: time_s must increase"),
    ("time_s,speed_mps\n0,-1\n1,0\n", ":2: speed_mps must be >= 0"),
])
def test_bad_cycle_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CycleError, match=message):
        load_cycle(path)


def test_missing_cycle_suggests_builtin(capsys):
    assert main(["run", "--cycle", "wltp"]) == 2
    assert "did you mean 'wltc'" in capsys.readouterr().err
