"""What a run's reports say (inputs, version, cycle times, bus log, honest range), the exit statuses the
help and README document, and the bounds of the log writer that keep every log readable."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import can
import pytest

import bms
from bms.can.logs import LogWriter
from hil.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
SCENARIO = """
[scenario]
name = "contents"
initial_soc = 0.7
seed = 5
[ambient]
temp_C = 15.0
[[step]]
kind = "drive"
cycle = "hwfet"
[[expect]]
kind = "bound"
signal = "cell_voltage_max_V"
max = 4.25
"""


def test_the_report_carries_inputs_version_cycle_times_and_the_bus_log(tmp_path, capsys):
    path = tmp_path / "contents.toml"
    path.write_text(SCENARIO)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--max-sim-s", "30", "-c", f"contents-{os.getpid()}"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    inputs = summary["inputs"]
    assert inputs["pack"] == "assb60-192s2p" and inputs["seed"] == 5 and inputs["initial_soc"] == 0.7
    assert inputs["ambient_C"] == 15.0 and inputs["steps"] == "drive hwfet" and inputs["mode"] == "lockstep"
    assert inputs["max_sim_s"] == 30.0 and inputs["scenario_file"] == str(path)
    assert summary["version"] == metadata.version("assb-bms-emulator") == bms.__version__
    assert summary["logs"] == [str(out / "bus.blf")]
    assert summary["cycle_times"]["BMS_Status"]["frames"] > 100
    # the range that is left (the BMS's usable energy at the end) and the range of a full pack, both at
    # this run's consumption: what is left is less, and follows from the energy
    per_km = summary["consumption_kWh_per_100km"] / 100.0
    assert summary["range_remaining_km"] == pytest.approx(summary["usable_energy_end_kWh"] / per_km)
    assert 0 < summary["range_remaining_km"] < summary["range_full_pack_km"]
    assert "range_estimate_km" not in summary
    page = (out / "report.html").read_text()
    for text in ("<h2>Inputs</h2>", "assb60-192s2p", "drive hwfet", "<h2>Cycle times", "BMS_Status",
                 "href='bus.blf'", f"assb-bms-emulator {summary['version']}", "INCOMPLETE", "range_remaining_km"):
        assert text in page, text
    properties = {p.get("name"): p.get("value") for p in ET.parse(out / "junit.xml").getroot().iter("property")}
    assert properties["seed"] == "5" and properties["version"] == summary["version"]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    from bms import KERNELS
    kernels = "numpy" if KERNELS.name == "numpy" else f"compiled, {KERNELS.isa}"
    assert re.match(rf"bms-emu {re.escape(metadata.version('assb-bms-emulator'))} \(kernels: {kernels}; python-can ",
                    capsys.readouterr().out)


def test_every_command_the_readme_shows_parses():
    commands = re.findall(r"`(bms-emu [^`]*)`", README.read_text())
    commands += [line.strip() for line in README.read_text().splitlines() if line.strip().startswith("bms-emu ")]
    assert "bms-emu dbc -o FILE" in commands and len(commands) > 5
    parser = build_parser()
    for command in commands:
        try:
            words = shlex.split(command.replace("\\|", "|"), comments=True)
            ends = [i for i, word in enumerate(words) if word in (">", ">>", "|", "&&")]  # the shell's, not ours
            parser.parse_args(words[1:ends[0] if ends else None])
        except SystemExit as exc:
            assert exc.code == 0, f"the README's {command!r} does not parse"


def test_cycles_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["cycles", "--help"])
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["run", "default", "--mode", "lockstep"], ["serve", "--duration", "1"]])
def test_a_bus_that_cannot_be_opened_exits_3_as_documented(tmp_path, capsys, command):
    args = [*command, "-i", "socketcan", "-c", "bms-emu-no-such-if0"]
    if command[0] == "run":
        args += ["--out", str(tmp_path)]
    assert main(args) == 3
    assert "cannot open the CAN bus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([command[0], "--help"])
    assert "3 the bus could not be opened" in capsys.readouterr().out.replace("\n ", "")
    assert "| 3 | the CAN bus could not be opened" in README.read_text()


# --- the log writer's bounds -------------------------------------------------------------------------------
def _frames(n, start=0):
    return [can.Message(timestamp=1.0 + (start + i) * 0.01, arbitration_id=0x100 + (start + i) % 16,
                        data=bytes([i % 256] * 8), is_extended_id=False) for i in range(n)]


def _until(condition, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _count(path):
    with can.LogReader(str(path)) as reader:
        return len(list(reader))


def test_every_log_has_its_header_on_disk_from_the_start(tmp_path):
    paths = [tmp_path / "a.blf", tmp_path / "a.asc", tmp_path / "a.log"]
    writer = LogWriter(paths)
    try:
        assert (tmp_path / "a.blf").stat().st_size >= 144 and _count(tmp_path / "a.blf") == 0
        assert (tmp_path / "a.asc").read_text().startswith("date ")
    finally:
        writer.stop()


def test_the_writer_hands_frames_to_the_os_within_its_wall_time_bound(tmp_path):
    blf, log = tmp_path / "t.blf", tmp_path / "t.log"
    writer = LogWriter([blf, log], flush_s=0.05, block=False).start()
    try:
        writer.write(_frames(10))  # far fewer than a BLF container holds: only the time bound writes them
        _until(lambda: _count(blf) == 10 and _count(log) == 10)
    finally:
        writer.stop()
    with can.BLFReader(str(blf)) as reader:
        assert reader.object_count == 10


def test_the_writer_cuts_lockstep_containers_by_frames_alone(tmp_path):
    blf = tmp_path / "f.blf"
    writer = LogWriter(blf, flush_frames=100, flush_s=3600.0, start_s=0.0).start()
    try:
        for k in range(3):
            writer.write(_frames(50, 50 * k))
        _until(lambda: writer.flushes >= 1)
        assert _count(blf) >= 100
    finally:
        writer.stop()
    assert _count(blf) == 150


def test_a_full_queue_holds_a_lockstep_producer_until_the_disk_catches_up(tmp_path):
    writer = LogWriter(tmp_path / "q.log", max_pending_frames=100)
    producer = threading.Thread(target=lambda: [writer.write(_frames(60, 60 * k)) for k in range(2)])
    producer.start()
    producer.join(0.2)
    assert writer.frames == 60  # the second batch waits: 120 frames would exceed the bound
    writer.start()
    producer.join(60)
    assert not producer.is_alive()
    writer.stop()
    assert writer.frames == 120 and writer.dropped_frames == 0 and _count(tmp_path / "q.log") == 120


KILLED_WRITER = """
import sys, time
import can
from bms.can.logs import LogWriter
writer = LogWriter([sys.argv[1], sys.argv[2]], flush_s=0.05).start()
k = 0
while True:
    writer.write([can.Message(timestamp=1.0 + k * 0.01, arbitration_id=0x123, data=bytes(8))])
    k += 1
    if writer.flushes >= 3 and k % 50 == 0:
        print("flushed", k, flush=True)
    time.sleep(0.001)
"""


def test_a_killed_writer_leaves_readable_logs(tmp_path):
    """SIGKILL cannot be handled: the bounds still leave the header and all but a short tail on disk."""
    blf, log = tmp_path / "k.blf", tmp_path / "k.log"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(blf), str(log)], stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("flushed"), line
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert _count(blf) > 0 and _count(log) > 0


def test_consumption_counts_the_drive_and_its_regeneration_not_a_charger():
    from bms import load_pack
    from hil.runner import run_scenario
    from hil.scenario import parse_scenario

    drive = """
[scenario]
name = "c"
initial_soc = 0.5
[[step]]
kind = "drive"
cycle = "hwfet"
"""
    charge = drive + """
[[step]]
kind = "charge"
target_soc = 0.53
max_current_A = 200
"""
    driven = run_scenario(parse_scenario(drive, "d.toml"), out_dir=None, plots=False).summary
    charged = run_scenario(parse_scenario(charge, "c.toml"), out_dir=None, plots=False).summary
    assert driven["energy_charged_kWh"] == 0.0 and driven["energy_in_kWh"] > 0.1  # regeneration
    # what the charger brought: the SOC it added times the pack's nominal energy, beside the losses
    pack = load_pack("assb60-192s2p")
    nominal_kWh = pack.capacity_Ah * pack.n_series * pack.cell.voltage_nominal_V / 1000.0
    added_kWh = (charged["soc_end"] - driven["soc_end"]) * nominal_kWh
    assert added_kWh > 3.0 and 0.95 * added_kWh < charged["energy_charged_kWh"] < 1.15 * added_kWh
    assert charged["energy_in_kWh"] == pytest.approx(driven["energy_in_kWh"] + charged["energy_charged_kWh"], rel=1e-3)
    assert charged["consumption_kWh_per_100km"] == pytest.approx(driven["consumption_kWh_per_100km"], rel=1e-3)
    assert 8.0 < driven["consumption_kWh_per_100km"] < 25.0
