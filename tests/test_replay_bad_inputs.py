"""Malformed replay mappings and logs, table-driven (issue 9, items 7, 8, 16).

Documented statuses (``bms-emu replay --help``): exit 2 when a mapping, DBC or log cannot be used at all
(nothing is run; the error names the file, the line where known and the key); exit 1 when the log can be
replayed but breaks a check (cut or damaged, frames failing to decode, gaps, absent signals, a failed
tolerance): the readable part is replayed, the reports are written and say what failed. Neither leaves a
summary that claims success, and neither prints a traceback.
"""
import json
import xml.etree.ElementTree as ET

import can
import pytest
from replay_support import DBC, POWER_MAPPING, cut, recording

from hil.cli import main

BASE = POWER_MAPPING
END = BASE.count("\n") + 1   # the line of a table appended to BASE


def _swap(old, new, text=BASE):
    assert old in text, old
    return text.replace(old, new, 1)


# (case id, mapping text, log kind, expected exit, what the message must name)
MAPPINGS = [
    ("misspelt replay key", _swap("initial_soc = 0.62", "inital_soc = 0.62"), 2,
     ["map.toml:2:", "replay.inital_soc", "did you mean 'initial_soc'"]),
    ("misspelt ambient key", BASE + '[ambient]\ntemp = { message = "ENV", signal = "AmbientTemp" }\n', 2,
     [f"map.toml:{END + 1}:", "ambient.temp", "did you mean 'temp_C'"]),
    ("initial_soc not a number", _swap("initial_soc = 0.62", 'initial_soc = "eighty"'), 2,
     ["map.toml:2:", "replay.initial_soc", "expected a number, found 'eighty'"]),
    ("initial_soc out of range", _swap("initial_soc = 0.62", "initial_soc = 1.5"), 2,
     ["replay.initial_soc", "<= 1"]),
    ("scale not a number", _swap('signal = "DcCurrent" }', 'signal = "DcCurrent", scale = "x" }'), 2,
     ["map.toml:4:", "demand.power_W.product[0].scale", "expected a number, found 'x'"]),
    ("scale zero", _swap('signal = "PackVoltage" }', 'signal = "PackVoltage", scale = 0 }'), 2,
     ["compare.pack_voltage_V.scale", "non-zero"]),
    ("offset infinite", _swap('signal = "PackVoltage" }', 'signal = "PackVoltage", offset = inf }'), 2,
     ["compare.pack_voltage_V.offset", "finite"]),
    ("unknown signal key", _swap('signal = "PackVoltage" }', 'signal = "PackVoltage", scal = 2.0 }'), 2,
     ["map.toml:9:", "compare.pack_voltage_V.scal", "did you mean 'scale'"]),
    ("unknown table", BASE + "[comparison]\n", 2, [f"map.toml:{END}:", "comparison", "did you mean 'compare'"]),
    ("unknown compare quantity", _swap("pack_voltage_V = {", "voltage_V = {"), 2,
     ["map.toml:9:", "compare.voltage_V", "did you mean"]),
    ("two demands", _swap("[demand]\n", '[demand]\ncurrent_A = { message = "BMS_HV", signal = "PackCurrent" }\n'),
     2, ["demand", "exactly one of", "current_A, power_W"]),
    ("no demand", "[replay]\ninitial_soc = 0.5\n", 2, ["demand", "exactly one of", "found none"]),
    ("torque without speed", '[replay]\ninitial_soc = 0.5\n[demand]\n'
                             'torque_Nm = { message = "MOTOR", signal = "MotorTorque" }\n', 2,
     ["demand.motor_speed_rpm", "required with torque_Nm"]),
    ("product of one", _swap('power_W = { product = [ { message = "INV_DcLink", signal = "DcCurrent" },\n'
                             '                        { message = "INV_DcLink", signal = "DcVoltage" } ] }',
                             'power_W = { product = [ { message = "INV_DcLink", signal = "DcCurrent" } ] }'), 2,
     ["demand.power_W.product", "two or more"]),
    ("optional demand", _swap("] }", "], optional = true }"), 2, ["demand.power_W.optional", "cannot be optional"]),
    ("compare entry not a table", _swap('soc = { message = "BMS_STATE", signal = "Soc", scale = 0.01 }',
                                        "soc = 5"), 2, ["map.toml:7:", "compare.soc", "found 5"]),
    ("signal without message", _swap('{ message = "BMS_STATE", signal = "Soc", scale = 0.01 }',
                                     '{ signal = "Soc", scale = 0.01 }'), 2, ["compare.soc.message", "missing"]),
    ("negative seed", BASE.replace("initial_soc = 0.62", "initial_soc = 0.62\nseed = -1"), 2,
     ["map.toml:3:", "replay.seed", "integer >= 0"]),
    ("unknown pack", BASE.replace("initial_soc = 0.62", 'initial_soc = 0.62\npack = "assb61-192s2p"'), 2,
     ["replay.pack", "assb60-192s2p"]),
    ("tolerance key misspelt", BASE + "[tolerance]\nsoc = { rms = 0.1 }\n", 2,
     [f"map.toml:{END + 1}:", "tolerance.soc.rms", "did you mean 'rms_max'"]),
    ("tolerance on nothing mapped", BASE + "[tolerance]\ntemp_max_C = { rms_max = 1.0 }\n", 2,
     ["tolerance.temp_max_C", "nothing to compare"]),
    ("vehicle with a power demand", BASE + "[vehicle]\nmass_kg = 1500.0\n", 2,
     ["vehicle", "only used with a speed_mps or torque_Nm"]),
    ("checks fraction above 1", BASE + "[checks]\nmax_decode_failure_fraction = 2\n", 2,
     ["checks.max_decode_failure_fraction", "<= 1"]),
    ("checks flag not a bool", BASE + '[checks]\nallow_incomplete_log = "yes"\n', 2,
     [f"map.toml:{END + 1}:", "checks.allow_incomplete_log", "true or false"]),
    ("series cells not an integer", _swap("series_cells = 96", "series_cells = 96.5"), 2,
     ["recorded_pack.series_cells", "integer"]),
    ("not TOML", BASE + "[tolerance\n", 2, [f"map.toml:{END}:", "not valid TOML"]),
    ("no SOC anywhere", _swap("initial_soc = 0.62\n", "").replace(
        'soc = { message = "BMS_STATE", signal = "Soc", scale = 0.01 }\n', ""), 2,
     ["replay.initial_soc", "missing"]),
    ("message not in the DBC", _swap('"INV_DcLink", signal = "DcCurrent"', '"INV_DcLnk", signal = "DcCurrent"'), 2,
     ["map.toml:4:", "demand.power_W.product[0].message", "did you mean 'INV_DcLink'"]),
    ("signal not in the message", _swap('signal = "Soc"', 'signal = "SOC"'), 2,
     ["map.toml:7:", "compare.soc.signal", "did you mean 'Soc'"]),
    ("recorded SOC in percent", _swap("initial_soc = 0.62\n", "").replace("scale = 0.01 }", "scale = 1.0 }"), 2,
     ["compare.soc.scale", "first recorded SOC is 62", "scale = 0.01"]),
    ("tolerance failed", BASE + "[tolerance]\nenergy_kWh = { max_rel = 1e-9 }\n", 1, ["tolerance energy_kWh"]),
]


def _short_frames(msg):
    if msg.arbitration_id == 0x210:
        return can.Message(timestamp=msg.timestamp, arbitration_id=0x210, is_extended_id=False, data=msg.data[:6])
    return msg


def _extended(msg):
    if msg.arbitration_id == 0x210:
        msg.is_extended_id = True
    return msg


def _garbled_soc(msg):
    if msg.arbitration_id == 0x120 and int(round(msg.timestamp * 10)) % 4 == 0:
        return can.Message(timestamp=msg.timestamp, arbitration_id=0x120, is_extended_id=False, data=b"\x01")
    return msg


def _silent_hv(msg):
    return None if msg.arbitration_id == 0x110 and 5.0 < msg.timestamp - 1_760_000_000.0 < 9.0 else msg


def _late_demand(msg):
    return None if msg.arbitration_id == 0x210 and msg.timestamp - 1_760_000_000.0 < 3.0 else msg


def _make(kind, folder):
    """A log of the given kind; returns its path."""
    if kind == "missing":
        return folder / "nowhere.blf"
    if kind == "unknown suffix":
        path = folder / "drive.txt"
        path.write_text("12.0 1 210 Rx d 8 00 00 00 00 00 00 00 00\n")
        return path
    if kind == "not a BLF":
        path = folder / "drive.blf"
        path.write_bytes(b"NOTA" + b"\x00" * 300)
        return path
    if kind == "BLF shorter than its header":
        path = folder / "drive.blf"
        path.write_bytes(b"LOGG" + b"\x00" * 40)
        return path
    if kind == "one demand frame":
        path, _ = recording(folder / "drive.blf", 0.005)
        return path
    if kind == "empty ASC":
        path = folder / "drive.asc"
        path.write_text("date Sat Nov 21 10:00:00.000 am 2026\nbase hex  timestamps absolute\n")
        return path
    edits = {"demand frames too short": _short_frames, "demand as 29-bit IDs": _extended,
             "some SOC frames garbled": _garbled_soc, "gap in the pack current": _silent_hv,
             "demand starts late": _late_demand}
    skip = ("BMS_STATE",) if kind == "no SOC frames" else ()
    suffix = {"cut ASC": ".asc", "cut candump": ".log", "cut CSV": ".csv", "cut TRC": ".trc",
              "cut gzip": ".log.gz", "damaged CSV line": ".csv"}.get(kind, ".blf")
    path, _ = recording(folder / f"drive{suffix}", 20.0, edit=edits.get(kind), skip=skip)
    if kind.startswith("cut"):
        cut(path, 0.5, mid_line=suffix != ".blf")
    if kind == "BLF never closed":  # the header python-can's writer leaves until stop(): no size, no count
        data = bytearray(path.read_bytes())
        data[16:24] = (144).to_bytes(8, "little")
        data[32:36] = (0).to_bytes(4, "little")
        path.write_bytes(bytes(data))
    if kind == "damaged CSV line":
        lines = path.read_text().splitlines(keepends=True)
        lines[len(lines) // 2] = "1760000010.0,210,0\n"
        path.write_text("".join(lines))
    return path


# (case id, log kind, mapping text, expected exit, what the message must name)
LOGS = [
    ("log missing", "missing", BASE, 2, ["nowhere.blf", "no such log file"]),
    ("unknown format", "unknown suffix", BASE, 2, ["drive.txt", "no such format", ".blf, .asc"]),
    ("not a BLF", "not a BLF", BASE, 2, ["drive.blf", "cannot open the log"]),
    ("BLF without its header", "BLF shorter than its header", BASE, 2, ["drive.blf", "cannot open the log",
                                                                        "unpack requires a buffer"]),
    ("BLF never closed by its writer", "BLF never closed", BASE, 1,
     ["recording log: drive.blf", "the header was never completed", "the writer did not close the file"]),
    ("a demand of one frame", "one demand frame", BASE, 2, ["drive.blf", "nothing to replay", "1 sample(s)"]),
    ("no frames at all", "empty ASC", BASE, 2, ["drive.asc", "nothing to replay", "no frame of INV_DcLink"]),
    ("demand frames all too short", "demand frames too short", BASE, 2,
     ["drive.blf", "2,000 frames of INV_DcLink found, all of them failed to decode",
      "2,000 × 6 data bytes where the DBC defines 8", "demand.power_W.product[0]"]),
    ("demand under 29-bit IDs", "demand as 29-bit IDs", BASE, 2,
     ["no frame of INV_DcLink (ID 0x210, 11-bit)", "2,000 frames carry ID 0x210 as a 29-bit ID"]),
    ("BLF cut in half", "cut BLF", BASE, 1, ["recording log: drive.blf", "the header promises"]),
    ("ASC cut mid-line", "cut ASC", BASE, 1, ["recording log: drive.asc", "the last line is cut off",
                                              "End TriggerBlock"]),
    ("candump cut mid-line", "cut candump", BASE, 1, ["recording log: drive.log", "the last line is cut off"]),
    ("CSV cut mid-line", "cut CSV", BASE, 1, ["recording log: drive.csv", "the last line is cut off"]),
    ("TRC cut mid-line", "cut TRC", BASE, 1, ["recording log: drive.trc", "the last line is cut off"]),
    ("gzip cut", "cut gzip", BASE, 1, ["recording log: drive.log.gz", "EOFError"]),
    ("damaged CSV line", "damaged CSV line", BASE, 1, ["recording log: drive.csv", "unreadable after"]),
    ("comparison signal never appears", "no SOC frames", BASE, 1,
     ["recording signal: compare.soc", "no frame of BMS_STATE (ID 0x120, 11-bit) in the log"]),
    ("some comparison frames garbled", "some SOC frames garbled", BASE, 1,
     ["recording decode: BMS_STATE", "frames failed to decode", "1 data bytes where the DBC defines 8"]),
    ("gap in a mapped signal", "gap in the pack current", BASE, 1,
     ["recording signal: compare.current_A", "gap(s) over 1 s", "after t = 4.9", "the comparison leaves the gaps out"]),
    ("demand recorded from 3 s on", "demand starts late", BASE, 1,
     ["recording signal: demand.power_W.product[0]", "the longest 3.0", "at the start",
      "the replay holds the first recorded value before it"]),
]


def _run(tmp_path, capsys, mapping_text, log, dbc=DBC):
    mapping = tmp_path / "map.toml"
    mapping.write_text(mapping_text, encoding="utf-8")
    out = tmp_path / "out"
    status = main(["replay", str(log), "--dbc", str(dbc), "--map", str(mapping), "--out", str(out), "--no-plots"])
    captured = capsys.readouterr()
    return status, captured.out + captured.err, out


def _check(status, text, out, expected_status, expected):
    assert "Traceback" not in text
    assert status == expected_status, text
    summary = out / "summary.json"
    if status == 2:
        assert text.startswith("bms-emu: error: ") and not summary.exists(), text
        for part in expected:
            assert part in text, (part, text)
        return
    assert json.loads(summary.read_text())["passed"] is False
    failures = " ".join(f"{c.get('name')}: {c.find('failure').get('message')}"
                        for c in ET.parse(out / "junit.xml").getroot() if c.find("failure") is not None)
    for part in expected:
        assert part in failures, (part, failures)
    assert any(line.startswith("FAIL  ") for line in text.splitlines())


@pytest.fixture(scope="module")
def good_log(tmp_path_factory):
    return recording(tmp_path_factory.mktemp("log") / "drive.blf", 20.0)[0]


@pytest.mark.parametrize("name, text, status, expected", MAPPINGS, ids=[c[0] for c in MAPPINGS])
def test_a_malformed_mapping_is_refused_naming_file_and_key(tmp_path, capsys, good_log, name, text, status, expected):
    _check(*_run(tmp_path, capsys, text, good_log), status, expected)


@pytest.mark.parametrize("name, kind, text, status, expected", LOGS, ids=[c[0] for c in LOGS])
def test_a_bad_log_is_refused_or_fails_the_replay_saying_what(tmp_path, capsys, name, kind, text, status, expected):
    _check(*_run(tmp_path, capsys, text, _make(kind, tmp_path)), status, expected)


def test_a_bad_dbc_or_tick_is_refused(tmp_path, capsys, good_log):
    dbc = tmp_path / "broken.dbc"
    dbc.write_text("BO_ BMS_HV: 8 BMS\n")
    _check(*_run(tmp_path, capsys, BASE, good_log, dbc), 2, ["broken.dbc", "cannot load the DBC"])
    _check(*_run(tmp_path, capsys, BASE, good_log, tmp_path / "absent.dbc"), 2, ["absent.dbc", "no such DBC"])
    mapping = tmp_path / "map.toml"
    status = main(["replay", str(good_log), "--dbc", str(DBC), "--map", str(mapping), "--dt", "1e-9"])
    text = capsys.readouterr().err
    assert status == 2 and "--dt" in text and "0.001" in text


def test_at_least_fifteen_malformed_inputs_are_covered():
    assert len(MAPPINGS) + len(LOGS) >= 15
