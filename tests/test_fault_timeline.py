"""The fault timeline: faults at a time or on a condition, cleared when told, each with its effect."""
from hil.runner import run_scenario
from hil.scenario import parse_scenario

BASE = """
[scenario]
name = "timeline"
initial_soc = 0.9
[[step]]
kind = "current"
current_A = 240.0
duration_s = 40.0
"""


def test_condition_triggered_fault_fires_when_the_condition_first_holds():
    text = BASE + """
[[fault]]
name = "short when discharged a little"
kind = "internal_short"
cell = 7
resistance_ohm = 0.05
when = "soc_true < 0.895"
clear_at_s = 35.0
[[expect]]
kind = "bound"
signal = "soc_true"
min = 0.0
"""
    result = run_scenario(parse_scenario(text, "t.toml"), mode="headless", plots=False)
    rec = result.recording
    fired = rec.injections["short when discharged a little"]
    # the first recorded sample below the threshold, give or take one 100 ms recording period
    first_below = rec.time_s[rec.signals["soc_true"] < 0.895][0]
    assert abs(fired - first_below) <= 0.11
    assert rec.injections["short when discharged a little:cleared"] >= 35.0


def test_coolant_loss_heats_the_pack():
    text = BASE.replace("duration_s = 40.0", "duration_s = 300.0") + """
[[fault]]
name = "pump off"
kind = "coolant_loss"
at_s = 1.0
[[expect]]
kind = "bound"
signal = "temp_core_max_C"
min = 30.0
from_s = 290.0
"""
    cooled = run_scenario(parse_scenario(BASE.replace("duration_s = 40.0", "duration_s = 300.0"), "c.toml"),
                          mode="headless", plots=False)
    hot = run_scenario(parse_scenario(text, "h.toml"), mode="headless", plots=False)
    assert hot.verdicts[0].passed, hot.verdicts[0].message
    assert hot.recording.signals["temp_core_max_C"][-1] > cooled.recording.signals["temp_core_max_C"][-1] + 2.0


def test_welded_contactor_is_detected_when_the_bms_opens():
    text = BASE + """
[[fault]]
name = "weld"
kind = "contactor_weld"
contactor = "main_positive"
at_s = 5.0
[[fault]]
name = "vcu gone"
kind = "vcu_silence"
at_s = 10.0
[[expect]]
kind = "event"
event = "fault:CONTACTOR_WELDED:*"
after = "inject:vcu gone"
within_s = 3.0
"""
    result = run_scenario(parse_scenario(text, "w.toml"), mode="headless", plots=False)
    assert result.verdicts[0].passed, result.verdicts[0].message


def test_replay_command_writes_its_comparison(tmp_path, capsys):
    import can
    import cantools
    from cantools.database.can import Database, Message, Signal

    from hil.cli import main

    current = Signal("BattCurrent", start=7, length=16, byte_order="big_endian", is_signed=True,
                     conversion=cantools.database.conversion.LinearConversion(0.1, 0.0, False))
    soc = Signal("BattSoc", start=23, length=8, byte_order="big_endian",
                 conversion=cantools.database.conversion.LinearConversion(0.5, 0.0, False))
    message = Message(0x155, "BATT", 8, [current, soc])
    cantools.database.dump_file(Database([message]), str(tmp_path / "car.dbc"))
    with can.ASCWriter(str(tmp_path / "drive.asc")) as writer:
        for k in range(300):
            writer.on_message_received(can.Message(timestamp=50.0 + 0.1 * k, arbitration_id=0x155,
                                                   is_extended_id=False,
                                                   data=message.encode({"BattCurrent": 80.0, "BattSoc": 70.0})))
    (tmp_path / "map.toml").write_text('[demand]\ncurrent_A = { message = "BATT", signal = "BattCurrent" }\n'
                                       '[compare]\nsoc = { message = "BATT", signal = "BattSoc", scale = 0.01 }\n'
                                       '[replay]\ninitial_soc = 0.7\n')
    out = tmp_path / "out"
    assert main(["replay", str(tmp_path / "drive.asc"), "--dbc", str(tmp_path / "car.dbc"), "--map",
                 str(tmp_path / "map.toml"), "--out", str(out)]) == 0
    assert (out / "replay_compare.png").stat().st_size > 10_000 and (out / "report.html").exists()
    import json
    comparison = json.loads((out / "replay.json").read_text())
    soc = comparison["signals"]["soc"]
    assert abs(soc["recorded_start"] - 0.7) < 1e-9 and soc["rms"] < 0.02


def test_an_injected_bus_off_is_named_as_the_cause_of_the_runs_end(tmp_path):
    """A bus_off fault takes the BMS off the bus and so ends the run (cause "bus"); the stop reason says it
    was the injected fault, not an adapter that failed on its own."""
    import json
    import os

    text = """
[scenario]
name = "bus-off"
initial_soc = 0.6
[[step]]
kind = "rest"
duration_s = 3.0
[[fault]]
name = "controller off"
kind = "bus_off"
at_s = 1.0
"""
    result = run_scenario(parse_scenario(text, "b.toml"), out_dir=tmp_path, mode="lockstep", plots=False,
                          can_options={"channel": f"busoff-{os.getpid()}"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not result.passed and summary["incomplete_cause"] == "bus"
    assert summary["stop_reason"].startswith("bus-off injected ('controller off' at t = 1.00 s)"), summary


def test_a_bus_off_with_recovery_silences_the_bms_and_the_run_goes_on(tmp_path):
    """bus_off with recovery_s: the BMS's controller is off the bus that long (it sends nothing and hears
    nothing: the VCU's commands are lost, so the BMS faults on VCU_TIMEOUT), then rejoins; the run completes and
    its expectations are judged. In the bus log the BMS's frames stop at the injection and start again at the
    recovery."""
    import os

    import can
    text = """
[scenario]
name = "bus-off-recovery"
initial_soc = 0.6
[[step]]
kind = "current"
current_A = 40.0
duration_s = 6.0
[[fault]]
name = "off"
kind = "bus_off"
at_s = 2.0
recovery_s = 1.5
[[expect]]
kind = "event"
event = "fault:VCU_TIMEOUT:ERROR"
"""
    log = tmp_path / "bus.blf"
    result = run_scenario(parse_scenario(text, "r.toml"), out_dir=tmp_path, mode="lockstep", plots=False,
                          can_options={"channel": f"busoff-rec-{os.getpid()}", "log": [str(log)]})
    assert result.passed and result.summary["complete"], result.summary["stop_reason"]
    counters = result.summary["can"]["counters"]
    assert counters["tx_bus_off"] > 0 and counters["rx_bus_off"] > 0
    with can.BLFReader(str(log)) as reader:
        sent = sorted(m.timestamp for m in reader if not m.is_rx)
    gap = [t for t in sent if 2.05 < t < 3.45]   # simulated time; faults act on 100 ms boundaries
    assert not gap, f"the BMS sent while off the bus: {gap[:3]}"
    assert any(1.9 <= t < 2.0 for t in sent) and any(3.5 <= t < 3.6 for t in sent)
    assert [e for e in result.summary["faults"] if e["event"] == "fault:VCU_TIMEOUT:NONE"], "never recovered"
