"""Replay of recorded drives (issue 9, items 7, 8, 22-24): every log format python-can writes, logs that
promise more than they hold, frames that fail to decode, gaps and absent signals, products of signals,
comparisons across different packs, speed quantisation, tolerances in JUnit, the shipped example."""
import json
import re
import sys
import xml.etree.ElementTree as ET

import can
import numpy as np
import pytest
from replay_support import DBC, POWER_MAPPING, READABLE, cut, mapping, recording

from hil.cli import main
from hil.replay import compare, example_path, load_mapping, parse_mapping, read_recording, replay_scenario, verdicts
from hil.replay.examples.synthetic import EXAMPLE_VEHICLE
from hil.runner import run_scenario

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _finding(drive, check, subject=None):
    found = [f for f in drive.findings if f.check == check and (subject is None or f.subject == subject)]
    assert found, [(f.check, f.subject) for f in drive.findings]
    return found[0]


@pytest.mark.parametrize("suffix", [*READABLE, ".asc.gz", ".log.gz"])
def test_every_format_python_can_writes_replays_the_recorded_signals(tmp_path, suffix):
    log, data = recording(tmp_path / f"drive{suffix}", 20.0)
    drive = read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml"))
    assert not drive.failed, [f.message for f in drive.failed]
    assert _finding(drive, "log").ok and "read to the end" in _finding(drive, "log").message
    # the demand is the product current × voltage, each at the DBC's 0.1 A / 0.1 V resolution
    t, power = drive["demand.power_W"]
    exact = data["current_A"] * data["voltage_V"]   # frame k carries sample k
    assert t.size == exact.size and np.max(np.abs(power - exact)) < 0.05 * 400 + 0.05 * 150 + 1.0
    _, soc = drive["compare.soc"]
    np.testing.assert_allclose(soc, data["soc"][::10], atol=0.0026)  # 0.5 % steps
    assert drive.messages["INV_DcLink"]["decoded"] == drive.messages["INV_DcLink"]["frames"] == 2000


def test_a_blf_cut_in_half_is_reported_against_its_header_and_fails_the_replay(tmp_path):
    log, _ = recording(tmp_path / "drive.blf", 60.0)
    size = log.stat().st_size
    cut(log, 0.5, mid_line=False)
    found = _finding(read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml")), "log")
    assert found.fails and f"the header promises {size:,} bytes" in found.message and "cut" in found.message
    out = tmp_path / "out"
    assert main(["replay", str(log), "--dbc", str(DBC), "--map", str(mapping(tmp_path, POWER_MAPPING)),
                 "--out", str(out), "--no-plots"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False and summary["simulated_s"] < 40.0  # what was there was replayed
    failures = [c for c in ET.parse(out / "junit.xml").getroot() if c.find("failure") is not None]
    assert [c.get("name") for c in failures] == ["recording log: drive.blf"]
    # the mapping may allow it explicitly: still reported, no longer failing
    allowed = mapping(tmp_path, POWER_MAPPING + "[checks]\nallow_incomplete_log = true\n", "allow.toml")
    assert main(["replay", str(log), "--dbc", str(DBC), "--map", str(allowed), "--out", str(out), "--no-plots"]) == 0
    report = json.loads((out / "replay.json").read_text())
    assert any("header promises" in c["message"] and c["passed"] for c in report["checks"])


@pytest.mark.parametrize("suffix, expected", [
    (".asc", "the last line is cut off"), (".asc", "no 'End TriggerBlock'"), (".log", "the last line is cut off"),
    (".csv", "the last line is cut off"), (".trc", "the last line is cut off"),
    (".asc.gz", "EOFError"), (".blf", "the header promises")])
def test_a_cut_log_of_any_format_is_found_out(tmp_path, suffix, expected):
    log, _ = recording(tmp_path / f"drive{suffix}", 20.0)
    cut(log, 0.6)
    drive = read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml"))
    found = _finding(drive, "log")
    assert found.fails and expected in found.message, found.message
    assert drive.duration_s < 16.0


def test_a_damaged_record_mid_log_is_reported_where_the_reader_skips_or_stops(tmp_path):
    for suffix, damage, expected in ((".trc", lambda line: line[:20] + "\n", "reader skipped or flagged 1 record"),
                                     (".log", lambda line: "(garbage\n", "unreadable after"),
                                     (".csv", lambda line: "1.0,zz\n", "unreadable after")):
        log, _ = recording(tmp_path / f"drive{suffix}", 10.0)
        lines = log.read_text().splitlines(keepends=True)
        lines[len(lines) // 2] = damage(lines[len(lines) // 2])
        log.write_text("".join(lines))
        found = _finding(read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml")), "log")
        assert found.fails and expected in found.message, (suffix, found.message)


def test_two_logs_joined_are_found_by_their_time_going_back(tmp_path):
    first, _ = recording(tmp_path / "a.asc", 10.0)
    second, _ = recording(tmp_path / "b.asc", 10.0)
    body = [ln for ln in second.read_text().splitlines(keepends=True) if ln[:1] == " " and "Rx" in ln]
    lines = first.read_text().splitlines(keepends=True)
    first.write_text("".join(lines[:-1] + body + lines[-1:]))      # b's frames inside a's trigger block
    found = [f for f in read_recording(first, DBC, parse_mapping(POWER_MAPPING, "map.toml")).findings
             if "goes back" in f.message]
    assert found and found[0].fails and re.search(r"by (9\.9|10\.0)", found[0].message), found


def test_a_stop_request_ends_a_long_read_and_says_so(tmp_path):
    import threading

    from hil.replay.recording import STOP_EVERY_FRAMES
    log, _ = recording(tmp_path / "drive.blf", 30.0)
    stop = threading.Event()
    stop.set()
    drive = read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml"), stop=stop)
    found = _finding(drive, "log")
    assert found.fails and f"stopped by a stop request after {STOP_EVERY_FRAMES - 1:,} frames" in found.message
    assert drive.log_info["frames"] == STOP_EVERY_FRAMES - 1


def test_frames_that_fail_to_decode_are_counted_with_their_reason(tmp_path):
    def short(msg):
        if msg.arbitration_id == 0x110 and int(msg.timestamp * 100) % 10 == 0:
            return can.Message(timestamp=msg.timestamp, arbitration_id=0x110, is_extended_id=False,
                               data=msg.data[:6])
        return msg
    log, _ = recording(tmp_path / "drive.blf", 20.0, edit=short)
    drive = read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml"))
    found = _finding(drive, "decode", "BMS_HV")
    stats = drive.messages["BMS_HV"]
    assert stats["frames"] == 2000 and 150 <= stats["failed"] <= 250 and stats["decoded"] == 2000 - stats["failed"]
    assert found.fails and f"{stats['failed']:,} of 2,000 frames failed to decode" in found.message
    assert f"{stats['failed']:,} × 6 data bytes where the DBC defines 8" in found.message
    tolerant = parse_mapping(POWER_MAPPING + "[checks]\nmax_decode_failure_fraction = 0.2\n", "map.toml")
    assert not _finding(read_recording(log, DBC, tolerant), "decode", "BMS_HV").fails


def test_gaps_and_signals_that_never_appear_fail_unless_the_mapping_allows_them(tmp_path):
    def silent(msg):  # BMS_HV silent from 8 s to 12.5 s
        return None if msg.arbitration_id == 0x110 and 8.0 < msg.timestamp - 1_760_000_000.0 < 12.5 else msg
    log, _ = recording(tmp_path / "drive.blf", 20.0, edit=silent, skip=("BMS_STATE",))
    drive = read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml"))
    gap = _finding(drive, "signal", "compare.current_A")
    assert gap.fails and re.search(r"longest 4\.5\d s after t = (7\.9|8\.0)\d s", gap.message), gap.message
    assert drive.signals["compare.current_A"]["gaps"] == 1
    missing = _finding(drive, "signal", "compare.soc")
    assert missing.fails and "no frame of BMS_STATE (ID 0x120, 11-bit) in the log" in missing.message
    allowed = POWER_MAPPING.replace('scale = 0.01 }', 'scale = 0.01, optional = true }').replace(
        'signal = "PackCurrent", scale = -1.0 }', 'signal = "PackCurrent", scale = -1.0, max_gap_s = 5.0 }').replace(
        'signal = "PackVoltage" }', 'signal = "PackVoltage", max_gap_s = 5.0 }')
    drive = read_recording(log, DBC, parse_mapping(allowed, "map.toml"))
    assert not drive.failed, [f.message for f in drive.failed]
    assert _finding(drive, "signal", "compare.soc").allowed


def test_frames_of_one_message_on_two_channels_must_be_told_apart(tmp_path):
    def second_bus(msg):
        if msg.arbitration_id == 0x210 and int(round(msg.timestamp * 100)) % 2:
            msg.channel = 1
        return msg
    log, _ = recording(tmp_path / "drive.blf", 10.0, edit=second_bus)
    drive = read_recording(log, DBC, parse_mapping(POWER_MAPPING, "map.toml"))
    found = [f for f in drive.findings if f.subject == "INV_DcLink" and "several channels" in f.message]
    assert found and found[0].fails and re.search(r"0 \(\d+ frames\), 1 \(\d+ frames\)", found[0].message)
    chosen = POWER_MAPPING.replace('signal = "DcCurrent" }', 'signal = "DcCurrent", channel = 0 }').replace(
        'signal = "DcVoltage" }', 'signal = "DcVoltage", channel = 0 }')
    drive = read_recording(log, DBC, parse_mapping(chosen, "map.toml"))
    assert 400 < drive.messages["INV_DcLink (channel 0)"]["other_channels"]["1"] < 600
    assert not [f for f in drive.failed if f.check == "decode"]


def _replay(tmp_path, text, duration_s=60.0, **run):
    log, data = recording(tmp_path / "drive.blf", duration_s)
    m = parse_mapping(text, str(tmp_path / "map.toml"))
    drive = read_recording(log, DBC, m)
    scenario, inputs = replay_scenario(drive, m)
    result = run_scenario(scenario, mode="headless", plots=False, **run)
    return m, drive, scenario, inputs, result, data


def test_dc_power_as_current_times_voltage_drives_the_emulated_pack(tmp_path):
    m, drive, _, _, result, data = _replay(tmp_path, POWER_MAPPING)
    rec = result.recording
    t, power = rec.time_s, rec.signals["pack_voltage_V"] * rec.signals["current_A"]
    ready = (t > 3.0) & (np.abs(rec.signals["current_demand_A"] - rec.signals["current_A"]) < 1.0)
    recorded = np.interp(t[ready] - 0.05, data["time_s"], data["current_A"] * data["voltage_V"])
    assert ready.mean() > 0.85
    # the emulated pack delivers the recorded power, not the recorded (400 V pack's) current
    assert np.sqrt(np.mean((power[ready] - recorded) ** 2)) < 300.0
    comparison = compare(drive, rec, m, n_series=192, capacity_Ah=120.0)
    energy = comparison["totals"]["energy_kWh"]
    assert abs(energy["emulated"] - energy["recorded"]) < 0.03 * abs(energy["recorded"])
    charge = comparison["totals"]["charge_Ah"]
    assert 0.4 < charge["emulated"] / charge["recorded"] < 0.6   # twice the voltage, half the current


def test_a_different_pack_is_compared_per_cell_and_side_by_side(tmp_path):
    m, drive, scenario, inputs, result, data = _replay(tmp_path, POWER_MAPPING.replace("initial_soc = 0.62\n", ""))
    # the start SOC comes from the recording (0.5 % steps)
    assert abs(scenario.initial_soc - data["soc"][0]) <= 0.0025 and "recorded compare.soc" in \
        inputs["initial_soc"]["source"]
    comparison = compare(drive, result.recording, m, n_series=192, capacity_Ah=120.0)
    voltage = comparison["signals"]["pack_voltage_V"]
    assert voltage["different_pack"] and "96 series cells against 192" in voltage["note"]
    assert 0.45 < voltage["recorded_to_emulated_ratio"] < 0.55
    cell = comparison["signals"]["cell_voltage_V"]
    assert cell["samples"] > 500 and cell["rms"] < 0.2           # per cell, the two packs are alike
    totals = comparison["totals"]
    for key in ("energy_kWh", "energy_out_kWh", "energy_in_kWh", "charge_Ah", "delta_soc", "peak_discharge_kW"):
        assert {"recorded", "emulated", "difference"} <= set(totals[key]), key
    # each pack's ΔSOC is its own charge over its own capacity
    expected = totals["delta_soc_from_charge"]
    assert abs(expected["recorded_pack"] - totals["delta_soc"]["recorded"]) < 0.006
    assert abs(expected["emulated_pack"] - totals["delta_soc"]["emulated_true"]) < 0.002
    # a tolerance on the pack voltage of another pack fails and says why
    with_tol = parse_mapping(POWER_MAPPING + "[tolerance]\npack_voltage_V = { rms_max = 1000.0 }\n", "map.toml")
    verdict = [v for v in verdicts(drive, comparison, with_tol) if v.kind == "replay-tolerance"][0]
    assert not verdict.passed and "another pack" in verdict.message


def test_initial_temperature_comes_from_the_recording_when_mapped(tmp_path):
    text = POWER_MAPPING.replace("[recorded_pack]", 'temp_max_C = { message = "BMS_STATE", signal = "TempMax" }\n'
                                 '[ambient]\ntemp_C = { message = "ENV", signal = "AmbientTemp", max_gap_s = 5.0 }\n'
                                 '[recorded_pack]')
    _, _, scenario, inputs, result, data = _replay(tmp_path, text, 10.0)
    assert scenario.initial_temp_C == round(data["temp_max_C"][0]) == 6.0
    assert abs(result.recording.signals["temp_surface_max_C"][0] - 6.0) < 0.3       # not the 4 °C ambient
    assert scenario.ambient_C == 4.0 and "recorded ambient.temp_C" in inputs["ambient_temp_C"]["source"]


def test_the_plot_shows_the_recording_itself_and_a_power_panel(tmp_path):
    from hil.replay.plot import comparison_figure
    text = ('[replay]\ninitial_soc = 0.62\n[demand]\ncurrent_A = { message = "INV_DcLink", signal = "DcCurrent" }\n'
            '[compare]\npack_voltage_V = { message = "BMS_HV", signal = "PackVoltage" }\n')
    m, drive, _, _, result, _ = _replay(tmp_path, text, 20.0)
    comparison = compare(drive, result.recording, m, n_series=192, capacity_Ah=120.0)
    fig = comparison_figure(drive, result.recording, m, comparison, 192)
    current_axes, power_axes = fig.axes[0], fig.axes[1]
    line = [ln for ln in current_axes.get_lines() if ln.get_label().startswith("recorded demand")][0]
    t, v = drive["demand.current_A"]
    np.testing.assert_array_equal(line.get_ydata(), v)      # the recorded samples, not a computed current
    assert "DC power" in power_axes.get_ylabel()
    labels = [ln.get_label() for ln in power_axes.get_lines()]
    assert "emulated pack power" in labels and any(lb.startswith("recorded DC power") for lb in labels)


def test_vehicle_speed_quantised_to_0_01_kmh_does_not_become_kilowatts_of_jitter(tmp_path):
    from hil.replay.drive import smooth
    text = ('[replay]\ninitial_soc = 0.62\n[demand]\nspeed_mps = { message = "CHASSIS", signal = "VehSpeed", '
            'scale = 0.2777777777777778 }\n{filter}[vehicle]\nmass_kg = 1750.0\nrotating_mass_factor = 1.04\n'
            'drag_area_m2 = 0.62\nrolling_resistance = 0.0085\ndrivetrain_efficiency = 0.91\n'
            'regen_power_max_W = 90e3\naux_power_W = 600.0\n')
    log, data = recording(tmp_path / "drive.blf", 120.0)
    dt = 0.01

    def demand_power(filter_line):
        m = parse_mapping(text.replace("{filter}", filter_line), "map.toml")
        scenario, _ = replay_scenario(read_recording(log, DBC, m), m, dt_s=dt)
        options = scenario.steps[0].options
        return options["time_s"], options["values"], m.speed_filter_s

    # the vehicle's own physics from the unquantised speed, filtered alike: what the demand should be
    def physics(t, sigma):
        speed = smooth(np.interp(t, data["time_s"], data["speed_mps"]), dt, sigma)
        return EXAMPLE_VEHICLE.battery_power_W(speed, np.gradient(speed, dt))

    t, filtered, sigma = demand_power("")
    assert sigma == 0.5
    jitter = filtered - physics(t, sigma)
    t, raw, _ = demand_power("speed_filter_s = 0.0\n")
    raw_jitter = raw - physics(t, 0.0)
    assert np.max(np.abs(raw_jitter)) > 1.5e3, np.max(np.abs(raw_jitter))   # unfiltered: kilowatts
    assert np.max(np.abs(jitter)) < 100.0 and np.sqrt(np.mean(jitter ** 2)) < 20.0, np.max(np.abs(jitter))
    # and the filter keeps the drive's energy: within 1 % of the exact physics
    exact = np.interp(t, data["time_s"], data["dc_power_W"])
    assert abs(np.sum(filtered) - np.sum(exact)) < 0.01 * np.sum(np.abs(exact))


def test_torque_and_motor_speed_give_the_recorded_dc_power(tmp_path):
    m = load_mapping(example_path("mapping-torque.toml"))
    log, data = recording(tmp_path / "drive.blf", 60.0)
    scenario, _ = replay_scenario(read_recording(log, DBC, m), m)
    o = scenario.steps[0].options
    exact = np.interp(o["time_s"], data["time_s"], data["dc_power_W"])
    assert o["quantity"] == "power_W" and np.sqrt(np.mean((o["values"] - exact) ** 2)) < 150.0


def test_the_example_mappings_use_every_key_and_pass_on_the_example_vehicle(tmp_path):
    keys: set[str] = set()

    def walk(value):
        if isinstance(value, dict):
            keys.update(value)
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
    names = ("mapping.toml", "mapping-current.toml", "mapping-speed.toml", "mapping-torque.toml")
    for name in names:
        walk(tomllib.loads(example_path(name).read_text(encoding="utf-8")))
    from hil.replay import mapping as schema
    every = {*schema.TABLES, *schema.DEMANDS, "motor_speed_rpm", "speed_filter_s", *schema.COMPARE, *schema.REF_KEYS,
             *schema.PRODUCT_KEYS, *{k for ks in schema.TOLERANCES.values() for k in ks}, *schema._REPLAY_KEYS,
             *schema._VEHICLE_KEYS, *schema._AMBIENT_KEYS, *schema._RECORDED_PACK_KEYS, *schema._CHECK_KEYS}
    assert every - keys == set()
    log, _ = recording(tmp_path / "drive.blf", 60.0)
    for name in names:
        out = tmp_path / name
        assert main(["replay", str(log), "--dbc", str(DBC), "--map", str(example_path(name)), "--out", str(out),
                     "--no-plots"]) == 0, name
        suite = ET.parse(out / "junit.xml").getroot()
        cases = [c.get("name") for c in suite.iter("testcase")]
        assert int(suite.get("tests")) == len(cases) > 0 and suite.get("failures") == "0"
        assert "recording log: drive.blf" in cases
        tolerances = tomllib.loads(example_path(name).read_text(encoding="utf-8")).get("tolerance", {})
        assert {f"tolerance {q}" for q in tolerances} <= set(cases)


def test_a_failing_tolerance_fails_the_replay_in_junit_and_summary(tmp_path):
    log, _ = recording(tmp_path / "drive.blf", 20.0)
    text = POWER_MAPPING + "[tolerance]\nsoc = { max_abs = 0.5 }\nenergy_kWh = { max_rel = 1e-9 }\n"
    out = tmp_path / "out"
    assert main(["replay", str(log), "--dbc", str(DBC), "--map", str(mapping(tmp_path, text)), "--out", str(out)]) == 1
    suite = ET.parse(out / "junit.xml").getroot()
    failed = {c.get("name"): c.find("failure").get("message") for c in suite if c.find("failure") is not None}
    assert list(failed) == ["tolerance energy_kWh"] and "max_rel" in failed["tolerance energy_kWh"]
    line = text.splitlines().index("soc = { max_abs = 0.5 }") + 1
    assert [c for c in suite if c.get("name") == "tolerance soc"][0].get("line") == str(line)
    assert json.loads((out / "summary.json").read_text())["passed"] is False
    assert (out / "replay_compare.png").stat().st_size > 10_000
