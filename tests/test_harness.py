"""The scenario harness end to end: examples run and hold, failures name what and when, replay, Ctrl-C."""
import json
import xml.etree.ElementTree as ET

import can
import numpy as np
import pytest

from hil.load import LoadProgram
from hil.runner import run_scenario
from hil.scenario import builtin_scenarios, load_scenario, parse_scenario

SHORT = {"default": 240.0, "cold-us06": 200.0, "fast-charge": None}  # None: the whole run


@pytest.mark.parametrize("name", sorted(builtin_scenarios()))
def test_example_scenarios_hold_their_expectations(tmp_path, name):
    scenario = load_scenario(name)
    result = run_scenario(scenario, out_dir=tmp_path, mode=scenario.mode or "headless",
                          max_sim_s=SHORT.get(name, 240.0))
    failed = [f"{v.name}: {v.message}" for v in result.verdicts if not v.passed]
    assert not failed, failed
    summary = result.summary
    assert (tmp_path / "report.html").stat().st_size > 10_000
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    # a run cut short by max_sim_s holds what it checked, but is truncated: incomplete, never passed
    limit = SHORT.get(name, 240.0)
    truncated = limit is not None and limit < LoadProgram(scenario).planned_duration_s()
    assert summary["truncated"] is truncated and summary["complete"] is not truncated
    assert summary["passed"] is not truncated and (summary["incomplete_cause"] == "max_sim_s") is truncated
    assert int(suite.get("tests")) == len(scenario.expectations) + truncated
    assert suite.get("failures") == str(int(truncated))


WRONG = """
[scenario]
name = "wrong"
initial_soc = 0.9
[[step]]
kind = "current"
current_A = 120.0
duration_s = 30.0
[[expect]]
name = "pack voltage stays above 760 V"
kind = "bound"
signal = "pack_voltage_V"
min = 760.0
from_s = 1.0
"""


def test_a_wrong_expectation_fails_naming_itself_and_the_time(tmp_path):
    result = run_scenario(parse_scenario(WRONG, "wrong.toml"), out_dir=tmp_path, mode="headless", plots=False)
    assert not result.passed
    verdict = result.verdicts[0]
    assert not verdict.passed and verdict.t_s is not None and 1.0 <= verdict.t_s < 30.0
    assert "pack_voltage_V" in verdict.message and f"t = {verdict.t_s:.2f} s" in verdict.message
    failure = ET.parse(tmp_path / "junit.xml").getroot().find("testcase/failure")
    assert "pack voltage stays above 760 V" in failure.get("message") and "at t = " in failure.get("message")
    assert json.loads((tmp_path / "summary.json").read_text())["passed"] is False


def test_interrupted_run_keeps_its_record_and_says_so(tmp_path, monkeypatch):
    from bms.emulator import Emulator
    real_tick, calls = Emulator.tick, {"n": 0}

    def tick(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1500:
            raise KeyboardInterrupt
        return real_tick(self, *args, **kwargs)

    monkeypatch.setattr(Emulator, "tick", tick)
    result = run_scenario(parse_scenario(WRONG.replace("760.0", "0.0"), "w.toml"), out_dir=tmp_path,
                          mode="headless", plots=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False and "interrupted" in summary["stop_reason"] and not summary["passed"]
    assert 14.0 < summary["simulated_s"] < 15.1  # everything up to the interruption is kept
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert any(case.get("name") == "run completed" for case in suite.iter("testcase"))
    assert not result.passed


def test_lockstep_runs_of_a_scenario_write_identical_logs(tmp_path):
    """Same scenario, same seed: the bus log (BLF, frames and timestamps) and the recording are identical."""
    scenario = load_scenario("default")
    logs, recordings = [], []
    for run in range(2):
        log = tmp_path / f"run{run}.blf"
        result = run_scenario(scenario, out_dir=None, mode="lockstep", max_sim_s=20.0,
                              can_options={"log": [str(log)]})
        logs.append(log.read_bytes())
        recordings.append(result.recording)
    assert logs[0] == logs[1]
    a, b = recordings
    assert np.array_equal(a.time_s, b.time_s) and a.events == b.events
    for name in a.signals:
        assert np.array_equal(a.signals[name], b.signals[name], equal_nan=True), name
    frames = list(can.BLFReader(str(tmp_path / "run0.blf")))
    assert frames[0].timestamp == pytest.approx(0.01) and frames[-1].timestamp == pytest.approx(20.0)


def test_the_runners_fast_paths_give_what_the_plain_ones_give():
    from hil.load import LoadProgram
    from hil.runner import _temperature_source

    def temperature_at(spec, t):  # the plain reading of a constant or a [[time_s, temp_C], ...] profile
        if isinstance(spec, list):
            return float(np.interp(t, [p[0] for p in spec], [p[1] for p in spec]))
        return float(spec)

    profile = [[0.0, -10.0], [30.0, 5.0], [90.0, 25.0]]
    for spec in (25.0, -7, profile):
        constant, at = _temperature_source(spec)
        for t in (0.0, 0.005, 12.34, 30.0, 61.0, 90.0, 500.0):
            assert (constant if at is None else at(t)) == temperature_at(spec, t)
    scenario = parse_scenario(FAST_PATH, "fast-path.toml")
    plain, fast = LoadProgram(scenario), LoadProgram(scenario)
    kinds, k = set(), 0
    while True:
        reported = 0.54 + max(0, k - 137_500) * 1e-4  # the charge step ends on the reported SOC
        a, b = plain.next(reported), fast.next_for(lambda: reported)
        assert a == b
        if a is None:
            break
        kinds.add(a.mode)
        k += 1
    assert kinds == {"power", "rest", "current", "charge"}


FAST_PATH = """
[scenario]
name = "fast-path"
initial_soc = 0.5
[[step]]
kind = "drive"
cycle = "udds"
[[step]]
kind = "rest"
duration_s = 2.0
[[step]]
kind = "current"
current_A = 50.0
duration_s = 1.0
[[step]]
kind = "charge"
target_soc = 0.55
max_duration_s = 300.0
"""


FRAME_SCENARIO = """
[scenario]
name = "frames"
[[step]]
kind = "rest"
duration_s = 2.5
[[frame]]
at_s = 1.5
message = "VCU_Command"
signals = { StateRequest = 1, ContactorRequest = 1 }
e2e = "wrong_crc"
[[frame]]
at_s = 1.8
message = "VCU_Command"
signals = { StateRequest = 1, ContactorRequest = 1 }
"""


def test_injected_frames_reach_the_bms_with_their_counter_and_crc():
    """A wrong CRC is counted and ignored; a valid STANDBY request (the next alive counter after the VCU's last)
    opens the contactors; each injection is an event carrying the payload it sent."""
    from bms.can import Codec
    result = run_scenario(parse_scenario(FRAME_SCENARIO, "frames.toml"), mode="lockstep", plots=False)
    sent = [(t, bytes.fromhex(payload)) for t, name, payload in result.recording.events if name.startswith("frame:")]
    assert [t for t, _ in sent] == [1.5, 1.8]
    command = Codec()["VCU_Command"]
    assert not command.crc_ok(sent[0][1]) and command.crc_ok(sent[1][1])
    assert command.decode(sent[1][1])["StateRequest"] == 1
    assert result.summary["can"]["counters"]["crc_errors"] == 1
    standby = [t for t, name, _ in result.recording.events if name == "state:STANDBY"]
    assert any(1.8 <= t <= 2.0 for t in standby), result.recording.events


def test_an_injected_value_outside_the_dbc_range_is_sent_as_asked():
    """StateRequest 7 fits the signal's 4 bits but is no request of the DBC's value table: it goes on the bus as
    7 (not saturated to SHUTDOWN), and the BMS counts a bad value and stays in its state."""
    from bms.can import Codec
    scenario = FRAME_SCENARIO.replace("StateRequest = 1, ContactorRequest = 1 }\ne2e", "StateRequest = 7, "
                                      "ContactorRequest = 1 }\ne2e").replace('e2e = "wrong_crc"', 'e2e = "valid"')
    result = run_scenario(parse_scenario(scenario, "frames.toml"), mode="lockstep", plots=False)
    sent = [bytes.fromhex(payload) for _, name, payload in result.recording.events if name.startswith("frame:")]
    command = Codec()["VCU_Command"]
    assert command.crc_ok(sent[0]) and command.decode(sent[0])["StateRequest"] == 7
    assert result.summary["can"]["counters"]["bad_values"] == 1
    assert not any(name == "state:SHUTDOWN" for _, name, _ in result.recording.events)


CHARGE_TO_FULL = """
[scenario]
name = "charge to 100 %, drive, charge again"
initial_soc = 0.93
[[step]]
kind = "charge"
target_soc = 1.0
max_current_A = 60.0
max_duration_s = 7200.0
[[step]]
kind = "current"
current_A = 120.0
duration_s = 120.0
[[step]]
kind = "charge"
target_soc = 1.0
max_current_A = 60.0
max_duration_s = 7200.0
"""


def test_a_charge_step_ends_when_the_bms_ends_the_charge(tmp_path):
    """A target the BMS's end of charge (CV phase below its cut-off current) comes before: each charge step ends
    there, as a charger ends its session, instead of holding the pack at rest to the step's 2 h limit; and a
    second charge after a completed one charges again (the flag left from the first does not end it)."""
    result = run_scenario(parse_scenario(CHARGE_TO_FULL, "<test>"), out_dir=tmp_path, mode="headless")
    events = result.recording.events
    complete = [t for t, kind, detail in events if kind == "charge" and "complete" in detail]
    assert len(complete) == 2, [e for e in events if e[1] == "charge"]
    simulated = result.summary["simulated_s"]
    assert simulated == pytest.approx(complete[1], abs=0.2) and simulated < 7200.0
    rec = result.recording
    soc, t = rec.signals["soc_true"], rec.time_s
    drive_end = np.searchsorted(t, complete[0] + 120.0)
    assert soc[drive_end] < soc[np.searchsorted(t, complete[0])] - 0.03   # the drive drew it down ...
    assert soc[-1] > soc[drive_end] + 0.03                                # ... the second charge filled it
