import json

import pytest

from hil.cli import main
from hil.cycles import CycleError, load_cycle

SCENARIO = """
[scenario]
name = "cli"
initial_soc = 0.8
[[step]]
kind = "drive"
cycle = "short.csv"
repeat = 2
[[expect]]
kind = "bound"
signal = "cell_voltage_max_V"
max = {vmax}
"""


@pytest.fixture
def scenario_file(tmp_path):
    (tmp_path / "short.csv").write_text("time_s,speed_mps\n0,0\n10,10\n20,20\n30,0\n")

    def write(vmax=4.25):
        path = tmp_path / "s.toml"
        path.write_text(SCENARIO.format(vmax=vmax))
        return path
    return write


@pytest.mark.parametrize("mode", ["headless", "lockstep"])
def test_run_scenario_file(tmp_path, scenario_file, capsys, mode):
    out = tmp_path / "out"
    assert main(["run", str(scenario_file()), "--out", str(out), "--mode", mode, "--no-plots"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["soc_end"] < summary["soc_start"]
    assert 0.1 < summary["distance_km"] < 1.0
    assert "PASS" in capsys.readouterr().out
    assert (out / "bus.blf").exists() == (mode == "lockstep")


def test_failing_expectation_exits_1(tmp_path, scenario_file, capsys):
    assert main(["run", str(scenario_file(vmax=3.0)), "--out", str(tmp_path / "o"), "--mode", "headless",
                 "--no-plots"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_bad_scenario_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 'x'\n[[step]]\nkind = 'drve'\n")
    assert main(["run", str(bad), "--mode", "headless"]) == 2
    assert "bad.toml:4: step[0].kind" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--max-sim-s", "inf"], "--max-sim-s inf: must be a number of seconds > 0"),
    (["--max-sim-s", "nan"], "--max-sim-s nan: must be a number of seconds > 0"),
    (["--mode", "headless", "--log", "x.blf"], "--log x.blf: headless runs have no bus to log"),
    (["--out", "{file}"], "cannot create the report folder"),
])
def test_run_arguments_refused_before_the_first_tick(tmp_path, scenario_file, capsys, args, message):
    """Arguments that would crash the run (inf ticks, a file as the report folder) or be ignored (a log of a
    headless run) exit 2 with a one-line error naming the flag."""
    (tmp_path / "afile").write_text("")
    args = [a.format(file=tmp_path / "afile") for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o")]
    assert main(["run", str(scenario_file()), "--no-plots", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.blf").exists()


def test_a_fault_that_never_fired_is_named(tmp_path, scenario_file, capsys):
    """A condition that never held is not an error (the run passes), but the summary and the output say so."""
    path = scenario_file()
    path.write_text(path.read_text() + '[[fault]]\nname = "late"\nkind = "vcu_silence"\nwhen = "soc_true < 0.1"\n')
    out = tmp_path / "o"
    assert main(["run", str(path), "--out", str(out), "--mode", "headless", "--no-plots"]) == 0
    (missed,) = json.loads((out / "summary.json").read_text())["faults_not_injected"]
    assert missed == {"name": "late", "line": 13, "why": "its condition 'soc_true < 0.1' never held"}
    assert "NOT INJECTED  fault late (line 13): its condition 'soc_true < 0.1' never held" in capsys.readouterr().out


def test_cycles_and_scenario_lists(capsys):
    assert main(["cycles"]) == 0
    listing = capsys.readouterr().out
    for name in ("udds", "hwfet", "us06", "wltc"):
        assert name in listing
    assert main(["run", "--list"]) == 0
    assert "default" in capsys.readouterr().out


def test_builtin_cycles_match_provenance():
    assert load_cycle("udds").distance_km == pytest.approx(11.99, abs=0.01)
    assert load_cycle("wltc").distance_km == pytest.approx(23.27, abs=0.01)


@pytest.mark.parametrize("text,message", [
    ("time,speed\n0,0\n", ":1: expected the header"),
    ("time_s,speed_kmh\n0,0\n", ":1: .*'time_s,speed_kmh': the speed column is speed_mps, in m/s"),
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


def test_a_short_run_reports_its_simulated_time_to_the_tick(tmp_path, capsys):
    """A counterexample of 1.3 s read "simulating 1 s", "t = 1 s of 1 s", "1 s simulated": to the tick below 100 s."""
    path = tmp_path / "short.toml"
    path.write_text('[scenario]\nname = "short"\n[[step]]\nkind = "rest"\nduration_s = 1.3\n')
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--mode", "headless", "--no-plots",
                 "--no-progress"]) == 0
    assert "short: 1.3 s simulated in" in capsys.readouterr().out
    from hil.progress import StatusLines, sim_time
    assert (sim_time(1.3), sim_time(2.0), sim_time(0.0), sim_time(5400.4)) == ("1.3", "2", "0", "5400")
    import io
    out = io.StringIO()
    lines = StatusLines(0.0, stream=out)
    lines.start(1.3)
    lines.close(1.3)
    assert "simulating 1.3 s" in out.getvalue() and "t = 1.3 s of 1.3 s" in out.getvalue()
