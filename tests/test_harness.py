"""The scenario harness end to end: examples run and hold, failures name what and when, replay, Ctrl-C."""
import json
import xml.etree.ElementTree as ET

import can
import cantools
import numpy as np
import pytest
from cantools.database.can import Database, Message, Signal

from hil.replay import load_mapping, read_recording, replay_scenario, compare
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
    assert result.summary["complete"]
    assert (tmp_path / "report.html").stat().st_size > 10_000
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    assert int(suite.get("tests")) == len(scenario.expectations) and suite.get("failures") == "0"


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


def _vehicle_dbc(path):
    """A small vehicle DBC of its own: big-endian signals, scaling and offsets, unrelated IDs."""
    current = Signal("HvBattCurrent", start=7, length=16, byte_order="big_endian", is_signed=False,
                     conversion=cantools.database.conversion.LinearConversion(0.05, -1600.0, False))
    voltage = Signal("HvBattVoltage", start=23, length=12, byte_order="big_endian", is_signed=False,
                     conversion=cantools.database.conversion.LinearConversion(0.25, 0.0, False))
    speed = Signal("VehSpeed", start=7, length=16, byte_order="big_endian", is_signed=False,
                   conversion=cantools.database.conversion.LinearConversion(0.01, 0.0, False))
    db = Database([Message(0x2F1, "HV_POWER", 8, [current, voltage]), Message(0x1A0, "CHASSIS", 8, [speed])])
    cantools.database.dump_file(db, str(path))
    return db


def test_replay_of_a_recorded_drive_reproduces_the_recorded_current(tmp_path):
    dbc = tmp_path / "vehicle.dbc"
    db = _vehicle_dbc(dbc)
    hv, chassis = db.get_message_by_name("HV_POWER"), db.get_message_by_name("CHASSIS")
    rng = np.random.default_rng(3)
    times = np.arange(0.0, 60.0, 0.1)
    current = np.round((40 + 60 * np.sin(times / 5) + rng.normal(0, 5, times.size)) / 0.05) * 0.05
    current[times < 2.0] = 0.0  # the recording starts at standstill, as the BMS precharges
    log = tmp_path / "drive.blf"
    with can.BLFWriter(str(log)) as writer:
        for t, i in zip(times, current):
            writer.on_message_received(can.Message(timestamp=1000.0 + t, arbitration_id=0x2F1, is_extended_id=False,
                                                   data=hv.encode({"HvBattCurrent": i, "HvBattVoltage": 700.0})))
            writer.on_message_received(can.Message(timestamp=1000.0 + t + 0.01, arbitration_id=0x1A0,
                                                   is_extended_id=False, data=chassis.encode({"VehSpeed": 10.0})))
            writer.on_message_received(can.Message(timestamp=1000.0 + t + 0.02, arbitration_id=0x7FF,
                                                   is_extended_id=False, data=b"\x00" * 8))
    mapping_path = tmp_path / "map.toml"
    mapping_path.write_text('[demand]\ncurrent_A = { message = "HV_POWER", signal = "HvBattCurrent" }\n'
                            '[compare]\npack_voltage_V = { message = "HV_POWER", signal = "HvBattVoltage" }\n'
                            '[replay]\ninitial_soc = 0.8\n')
    mapping = load_mapping(mapping_path)
    recorded = read_recording(log, dbc, mapping)
    np.testing.assert_allclose(recorded["demand"][1], current, atol=0.05 / 2)
    result = run_scenario(replay_scenario(recorded, mapping, "replay"), out_dir=tmp_path, mode="headless",
                          plots=False)
    rec = result.recording
    ready = rec.time_s >= 2.0
    # the recorded value holds until the next 100 ms frame
    held = current[np.clip(np.searchsorted(times, rec.time_s[ready] - 1e-9, side="right") - 1, 0, None)]
    assert np.max(np.abs(rec.signals["current_A"][ready] - held)) < 0.05, "replayed current"
    comparison = compare(recorded, rec)
    assert comparison["pack_voltage_V"]["rms"] < 60.0  # the emulated pack sits near the recorded 700 V


def test_replay_names_bad_inputs(tmp_path):
    from hil.replay import ReplayError
    dbc = tmp_path / "vehicle.dbc"
    _vehicle_dbc(dbc)
    mapping_path = tmp_path / "map.toml"
    mapping_path.write_text('[demand]\ncurrent_A = { message = "HV_PWR", signal = "HvBattCurrent" }\n')
    log = tmp_path / "empty.asc"
    log.write_text("date Sat Nov 21 10:00:00.000 am 2026\nbase hex  timestamps absolute\n")
    with pytest.raises(ReplayError, match="did you mean 'HV_POWER'"):
        read_recording(log, dbc, load_mapping(mapping_path))
    corrupt = tmp_path / "corrupt.blf"
    corrupt.write_bytes(b"LOGG" + b"\xff" * 200)
    mapping_path.write_text('[demand]\ncurrent_A = { message = "HV_POWER", signal = "HvBattCurrent" }\n')
    with pytest.raises(ReplayError, match="corrupt.blf"):
        read_recording(corrupt, dbc, load_mapping(mapping_path))


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
