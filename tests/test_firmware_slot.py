"""The firmware slot: the C ABI, the library and process transports, the example firmware in the loop, the
differential run, and every way a firmware can fail a run (which then stops with its name, the simulated
time and the cause, its reports kept and marked incomplete)."""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import can
import cantools
import numpy as np
import pytest
from fil_support import EXAMPLE_DBC, ROOT, build, compiler

from bms import Emulator
from bms.can import Codec
from bms.fil import (
    FirmwareAbiError,
    FirmwareCrash,
    FirmwareError,
    FirmwareOutputError,
    FirmwareTimeout,
    bms_layout,
    header_path,
    header_text,
    vcu_layout,
)
from bms.fil.conformance import check_instances
from bms.fil.firmware_side import FrameStruct, Shm
from bms.fil.library import LibraryFirmware
from bms.fil.process import ProcessFirmware
from hil.can_loop import CanLoop
from hil.cli import main as cli
from hil.load import Demand
from hil.runner import run_scenario
from hil.scenario import ScenarioError, load_scenario, parse_scenario


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    return build(tmp_path_factory.mktemp("firmware"))


def _frames(path: Path) -> list[tuple]:
    return [(m.timestamp, m.arbitration_id, bytes(m.data), m.is_rx) for m in can.BLFReader(str(path))]


def _scenario(tmp_path: Path, body: str, name: str = "fil") -> object:
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return load_scenario(path)


# --- the ABI ---------------------------------------------------------------------------------------------
def test_header_layouts_agree_with_the_python_and_compiled_sides(tmp_path):
    """sizeof/offsetof of the shared block and the frame in C equal the ctypes mirror and the transport's."""
    from bms._ext import fil
    probe = tmp_path / "probe.c"
    probe.write_text('#include <stdio.h>\n#include <stddef.h>\n#include "bms_fil.h"\nint main(void){'
                     'printf("%zu %zu %zu %zu %zu %d %d\\n", sizeof(bms_fil_shm), sizeof(bms_fil_frame), '
                     'offsetof(bms_fil_shm, t_ns), offsetof(bms_fil_shm, state_capacity), offsetof(bms_fil_shm, error),'
                     ' BMS_N_INPUTS(192, 24), BMS_N_OUTPUTS(192)); return 0;}\n')
    exe = tmp_path / "probe"
    subprocess.run([compiler(), "-I", str(Path(str(header_path())).parent), str(probe), "-o", str(exe)], check=True)
    sizes = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()]
    assert sizes == [ctypes.sizeof(Shm), ctypes.sizeof(FrameStruct), Shm.t_ns.offset, Shm.state_capacity.offset,
                     Shm.error.offset, bms_layout(192, 24).n_inputs, bms_layout(192, 24).n_outputs]
    assert fil.SHM_HEADER_SIZE == sizes[0] and fil.FRAME_SIZE == sizes[1] == 80
    assert vcu_layout().n_inputs == 6 and vcu_layout().n_outputs == 1


def test_cli_writes_the_shipped_header_and_the_process_side(tmp_path, capsys):
    assert cli(["firmware", "header", "-o", str(tmp_path / "bms_fil.h")]) == 0
    assert (tmp_path / "bms_fil.h").read_text() == header_text()
    assert "#define BMS_FIL_ABI_VERSION 1u" in header_text()
    assert cli(["firmware", "process-c", "-o", str(tmp_path / "p.c")]) == 0
    assert "bms_fil_get_api(BMS_FIL_ABI_VERSION)" in (tmp_path / "p.c").read_text()
    assert cli(["firmware", "contract"]) == 0
    assert "| BMS | in | 0..191 | `cell_voltage_V` | V |" in capsys.readouterr().out


def test_abi_version_mismatch_is_refused_before_the_first_tick(fw, monkeypatch):
    monkeypatch.setenv("MISBEHAVE_ABI", "2")
    emu_layout = vcu_layout()
    with pytest.raises(FirmwareAbiError, match="ABI version mismatch.*version 2.*speaks 1"):
        LibraryFirmware(fw["libmisbehave"], "vcu").open(emu_layout, 10_000_000)
    with pytest.raises(FirmwareAbiError, match="ABI version mismatch"):
        ProcessFirmware([fw["misbehave"]], "vcu").open(emu_layout, 10_000_000)


def test_a_library_without_the_entry_point_or_the_role_is_refused(fw, tmp_path):
    with pytest.raises(FirmwareAbiError, match="does not implement the BMS role"):
        LibraryFirmware(fw["libvcu"], "bms").open(bms_layout(4, 2), 10_000_000)
    with pytest.raises(FirmwareAbiError, match="cannot load"):
        LibraryFirmware(tmp_path / "missing.so", "vcu").open(vcu_layout(), 10_000_000)


def test_two_instances_of_a_library_do_not_interfere_and_globals_are_detected(fw):
    for lib, role in (("libbms", "bms"), ("libvcu", "vcu")):
        report = check_instances(lambda lib=lib, role=role: LibraryFirmware(fw[lib], role), role)
        assert report["independent"], report
    shared = check_instances(lambda: LibraryFirmware(fw["libmisbehave"], "vcu", config="globals=1"), "vcu")
    assert not shared["independent"] and shared["first_divergence_tick"] is not None, shared
    assert "globals" in shared["detail"]
    # in a process of its own each instance has its own globals
    alone = check_instances(lambda: ProcessFirmware.for_library(fw["libmisbehave"], "vcu", config="globals=1"), "vcu",
                            ticks=50)
    assert alone["independent"], alone


def test_a_library_that_declares_globals_runs_in_a_process_of_its_own(fw, monkeypatch):
    from bms.fil.loader import open_firmware
    assert isinstance(open_firmware(_spec("vcu", "library", fw["libmisbehave"])), LibraryFirmware)
    monkeypatch.setenv("MISBEHAVE_DECLARE_GLOBALS", "1")
    firmware = open_firmware(_spec("vcu", "library", fw["libmisbehave"]))
    assert isinstance(firmware, ProcessFirmware) and "bms.fil.serve_library" in firmware.command
    firmware.open(vcu_layout(), 10_000_000)
    try:
        assert firmware.info.name == "misbehave" and firmware.pid is not None
    finally:
        firmware.close()


def test_save_and_restore_give_the_same_future(fw):
    layout = bms_layout(8, 2)
    inputs = np.full(layout.n_inputs, 3.7)
    from bms.fil import BmsActuators
    for make in (lambda: LibraryFirmware(fw["libbms"], "bms"), lambda: ProcessFirmware([fw["bms"]], "bms")):
        firmware = make()
        firmware.open(layout, 10_000_000)
        out = BmsActuators(8)
        try:
            for k in range(30):
                inputs[-6] = 10.0 * k  # current
                firmware.step(k * 10_000_000, 10_000_000, inputs, out)
                firmware.transmit()
            state = firmware.save_state()
            futures = []
            for _ in range(2):
                firmware.restore_state(state)
                trace = []
                for k in range(30, 45):
                    firmware.step(k * 10_000_000, 10_000_000, inputs, out)
                    trace.append([bytes(f.data) for f in firmware.transmit()])
                futures.append(trace)
            assert futures[0] == futures[1] and any(futures[0])
        finally:
            firmware.close()


def test_a_snapshot_keeps_the_frames_queued_for_the_next_step_flags_and_all(fw):
    """Frames a library firmware received since its last step come back after a restore as they were: an extended
    identifier in the 11-bit range, a CAN FD frame with the bit-rate switch (once inferred from id and length)."""
    from bms.can.node import Frame
    from bms.fil import BmsActuators
    from hil.testing.snapshot import _firmware_state
    firmware = LibraryFirmware(fw["libbms"], "bms")
    firmware.open(bms_layout(8, 2), 10_000_000)
    try:
        firmware.step(0, 10_000_000, np.full(bms_layout(8, 2).n_inputs, 3.7), BmsActuators(8))
        firmware.transmit()
        sent = [Frame.build(0x123, b"\x01\x02", is_extended_id=True),
                Frame.build(0x1C0, bytes(range(12)), is_fd=True, bitrate_switch=True),
                Frame.build(0x18FF50E5, b"\xAA" * 8, is_extended_id=True)]
        for k, frame in enumerate(sent):
            firmware.receive(frame, 5_000_000 + k)
        flags = lambda queued: [(f.arbitration_id, f.is_extended_id, f.is_fd, f.bitrate_switch, bytes(f.data), t)  # noqa: E731
                                for f, t in queued]
        expected = [(f.arbitration_id, f.is_extended_id, f.is_fd, f.bitrate_switch, bytes(f.data), 5_000_000 + k)
                    for k, f in enumerate(sent)]
        transport = firmware._lib
        assert flags(transport.queued()) == expected
        _, _, _, _, pending = _firmware_state(firmware, "bench.firmware")
        transport.n_rx = 0
        for frame, t_ns in pending:   # what Snapshot.restore does
            transport.receive(frame, t_ns)
        assert flags(transport.queued()) == expected
    finally:
        firmware.close()


# --- the C VCU in the VCU slot ------------------------------------------------------------------------------
VCU_SCENARIO = """
[scenario]
name = "c-vcu"
seed = 4
initial_soc = 0.8
[[step]]
kind = "power"
power_W = 40000.0
duration_s = 8.0
[[expect]]
name = "precharged and closed"
kind = "event"
event = "contactor:main_positive:closed"
after = "start"
within_s = 2.0
[[expect]]
name = "contactors stay closed"
kind = "bound"
signal = "contactors_closed"
min = 1
from_s = 3.0
[firmware]
role = "vcu"
kind = "{kind}"
path = "{path}"
"""


_BUS_LOGS: dict[str, list] = {}


@pytest.mark.parametrize("kind", ["library", "process", "fmu"])
def test_c_vcu_brings_the_builtin_bms_to_ready_and_every_transport_logs_the_same_bus(fw, tmp_path, kind):
    if kind == "fmu" and "vcu.fmu" not in fw:
        pytest.skip("fmpy is not installed (the fmu extra)")
    path = {"library": fw["libvcu"], "process": fw["vcu"], "fmu": fw.get("vcu.fmu")}[kind]
    scenario = _scenario(tmp_path, VCU_SCENARIO.format(kind=kind, path=path))
    result = run_scenario(scenario, out_dir=tmp_path / kind, mode="lockstep", plots=False,
                          can_options={"log": [str(tmp_path / f"{kind}.blf")], "channel": f"fil-{kind}"})
    assert result.passed, [v.message for v in result.verdicts]
    assert result.summary["firmware"]["vcu"] == {"role": "vcu", "kind": kind, "version": "1.0.0", "path": str(path),
                                                 "name": "example_vcu" if kind == "fmu" else "example-vcu"}
    summary = json.loads((tmp_path / kind / "summary.json").read_text())
    assert summary["firmware"]["vcu"]["version"] == "1.0.0"
    frames = _frames(tmp_path / f"{kind}.blf")
    assert {0x200, 0x100, 0x120} <= {f[1] for f in frames}
    _BUS_LOGS[kind] = frames
    for other, logged in _BUS_LOGS.items():  # every transport before this one: the same bus, frame for frame
        assert logged == frames, f"{kind} and {other} logged different buses"


def test_c_vcu_stays_within_the_published_limits_through_a_cold_drive(fw, tmp_path):
    scenario = load_scenario("cold-us06")
    emu_result = run_scenario(scenario, out_dir=None, mode="lockstep", plots=False, max_sim_s=60.0,
                              can_options={"channel": "fil-cold"},
                              firmware=_spec("vcu", "library", fw["libvcu"]))
    s = emu_result.recording.signals
    closed = s["contactors_closed"] > 0
    assert closed[-300:].all(), "the C VCU precharged and closed the cold pack"
    current, dis, ch = s["current_A"], s["discharge_limit_A"], s["charge_limit_A"]
    # with the contactors closed (the precharge inrush is not the VCU's draw) the pack current stays within
    # the limit published then or a record before (the VCU reads the BMS's frames of the tick before)
    on = closed[1:] & closed[:-1]
    assert np.all((current[1:] <= np.maximum(dis[1:], dis[:-1]) + 1.0)[on])
    assert np.all((-current[1:] <= np.maximum(ch[1:], ch[:-1]) + 1.0)[on])
    assert dis.max() > 50.0 and current.max() > 20.0, "it drove"


def _spec(role, kind, path, **kw):
    from bms.fil.loader import FirmwareSpec
    return FirmwareSpec(role=role, kind=kind, path=str(path), **kw)


def test_when_the_c_vcu_falls_silent_the_builtin_bms_faults_and_opens(fw, tmp_path):
    scenario = _scenario(tmp_path, VCU_SCENARIO.format(kind="library", path=fw["libvcu"]) + """
[[fault]]
name = "vcu silent"
kind = "vcu_silence"
at_s = 5.0
""".replace("[[fault]]", "\n[[fault]]"))
    text = (tmp_path / "fil.toml").read_text()
    text = text.replace("[firmware]", "[[expect]]\nname = \"opens\"\nkind = \"event\"\nevent = "
                        "\"contactor:main_positive:open\"\nafter = \"inject:vcu silent\"\nwithin_s = 1.0\n\n[firmware]")
    (tmp_path / "fil.toml").write_text(text)
    scenario = load_scenario(tmp_path / "fil.toml")
    result = run_scenario(scenario, out_dir=None, mode="lockstep", plots=False,
                          can_options={"channel": "fil-silent"})
    verdicts = {v.name: v for v in result.verdicts}
    assert verdicts["opens"].passed, verdicts["opens"].message
    assert any(name == "fault:VCU_TIMEOUT:ERROR" for _, name, _ in result.recording.events)


def test_a_python_vcu_firmware_runs_in_its_own_process(tmp_path):
    """The Python firmware side: the built-in VCU model itself, served from another process."""
    script = tmp_path / "py_vcu.py"
    script.write_text("from bms.can import Codec\nfrom bms.fil.firmware_side import serve\n"
                      "from hil.can_loop import CanVcu\nserve(lambda layout, config: CanVcu(Codec()))\n")
    emu = Emulator(seed=3, initial_soc=0.8)
    loop = CanLoop(emu, vcu_firmware=ProcessFirmware([sys.executable, str(script)], "vcu", timeout_s=20.0),
                   channel="fil-python")
    try:
        for k in range(300):
            current = loop.vcu.tick(k * emu.dt_s, Demand("current", 100.0), emu.pack.link_voltage_V)
            loop.tick(current, 25.0, 1.0)
        assert loop.vcu.firmware.info.name == "bms-emu VCU model"
    finally:
        loop.close()
    assert emu.bms.state.name == "READY" and current == 100.0


# --- the C BMS in the BMS slot ------------------------------------------------------------------------------
def _c_bms(fw, config="debounce_ms=100", kind="library"):
    return LibraryFirmware(fw["libbms"], "bms", config=config) if kind == "library" else \
        ProcessFirmware([fw["bms"]], "bms", config=config)


_VCU_COMMAND = Codec()["VCU_Command"].encoder()


def _command_drive(emu, firmware, k):
    """The VCU's DRIVE request (counter k), as the C BMS receives it from the bus."""
    data = _VCU_COMMAND(k % 16, 2, 2)
    firmware.receive(can.Message(arbitration_id=0x200, data=data), emu.ticks * emu.dt_ns)


@pytest.mark.parametrize("kind", ["library", "process"])
def test_c_bms_opens_on_an_overvoltage_made_in_the_plant_within_its_debounce(fw, kind):
    firmware = _c_bms(fw, "debounce_ms=100 ov_V=4.20", kind)
    emu = Emulator(seed=2, initial_soc=0.95, firmware=firmware)
    try:
        for k in range(200):  # precharge and close
            _command_drive(emu, firmware, k)
            emu.tick(0.0)
        assert all(emu.pack.contactors_closed.values()) is False and emu.pack.contactors_closed["main_positive"]
        crossed = None
        for k in range(200, 3000):  # charge hard: the highest group rises above 4.20 V
            _command_drive(emu, firmware, k)
            emu.tick(-400.0)
            if crossed is None and emu.sensors.cell_voltage_V.max() > 4.20:
                crossed = emu.t_s
            if not emu.pack.contactors_closed["main_positive"]:
                break
    finally:
        emu.close()
    assert crossed is not None, "the plant never reached the threshold"
    opened = emu.t_s
    assert 0.1 - 1e-9 <= opened - crossed <= 0.1 + 0.03, (crossed, opened)  # its debounce, plus the tick it acts in
    assert not any(emu.pack.state.contactor_command)


def test_c_bms_sees_an_open_cell_monitor_wire_on_the_channel_it_reads(fw):
    from bms import OpenWire
    firmware = _c_bms(fw)
    emu = Emulator(seed=2, initial_soc=0.6, firmware=firmware)
    db = cantools.database.load_file(str(EXAMPLE_DBC))
    try:
        for k in range(100):
            _command_drive(emu, firmware, k)
            emu.tick(50.0)
        emu.sensors.inject("cell_voltage", 117, OpenWire(), t_s=emu.t_s)
        status = None
        for k in range(100, 160):
            _command_drive(emu, firmware, k)
            emu.tick(50.0)
            for frame in firmware.transmit():
                status = db.decode_message(frame.arbitration_id, frame.data, decode_choices=False)
    finally:
        emu.close()
    assert status is not None and status["State"] == 5 and status["FaultCode"] == 4, status
    assert status["FaultChannel"] == 117
    assert not any(emu.pack.state.contactor_command)


@pytest.mark.parametrize("kind", ["library", "process"])
def test_c_bms_in_a_lockstep_scenario_is_driven_by_the_vcu_model(fw, tmp_path, kind):
    path = fw["libbms"] if kind == "library" else fw["bms"]
    scenario = _scenario(tmp_path, f"""
        [scenario]
        name = "c-bms"
        seed = 6
        initial_soc = 0.7
        [[step]]
        kind = "current"
        current_A = 150.0
        duration_s = 5.0
        [[expect]]
        name = "closed through precharge"
        kind = "bound"
        signal = "contactors_closed"
        min = 1
        from_s = 2.0
        [firmware]
        role = "bms"
        kind = "{kind}"
        path = "{path}"
        dbc = "{EXAMPLE_DBC}"
        [firmware.signals]
        state = "EXB_Status.State"
        discharge_limit_A = "EXB_Status.DischargeLimit"
        charge_limit_A = "EXB_Status.ChargeLimit"
        soc_pct = "EXB_Status.SOC"
        fault = "EXB_Status.FaultCode"
        """)
    log = tmp_path / "bus.blf"
    result = run_scenario(scenario, out_dir=tmp_path / "out", mode="lockstep", plots=False,
                          can_options={"log": [str(log)], "channel": f"fil-cbms-{kind}"})
    assert result.passed, [v.message for v in result.verdicts]
    assert result.recording.signals["current_A"][-1] == pytest.approx(150.0, abs=1.0)
    assert result.summary["firmware"]["bms"]["name"] == "example-bms"
    ids = {f[1] for f in _frames(log)}
    assert 0x380 in ids and 0x100 not in ids, "only the firmware's own frames speak for the BMS"


# --- differential ------------------------------------------------------------------------------------------
def test_differential_run_reports_where_the_builtin_and_the_c_bms_differ(fw, tmp_path):
    scenario = _scenario(tmp_path, f"""
        [scenario]
        name = "differential"
        seed = 7
        initial_soc = 0.6
        [[step]]
        kind = "current"
        current_A = 100.0
        duration_s = 11.0
        [[fault]]
        name = "open wire"
        kind = "sensor"
        sensor = "cell_voltage"
        index = 40
        fault = "open_wire"
        at_s = 8.0
        [firmware]
        role = "bms"
        kind = "library"
        path = "{fw['libbms']}"
        config = "debounce_ms=100"
        dbc = "{EXAMPLE_DBC}"
        [firmware.signals]
        state = "EXB_Status.State"
        discharge_limit_A = "EXB_Status.DischargeLimit"
        charge_limit_A = "EXB_Status.ChargeLimit"
        soc_pct = "EXB_Status.SOC"
        fault = "EXB_Status.FaultCode"
        [firmware.differential]
        contactor_s = 0.5
        fault_s = 2.0
        soc = 0.03
        limit_A = 50.0
        """)
    result = run_scenario(scenario, out_dir=tmp_path / "out", mode="lockstep", plots=False,
                          can_options={"channel": "fil-diff"})
    diff = result.summary["differential"]
    assert diff["firmware"]["name"] == "example-bms"
    # both close through precharge within the tolerance; the C BMS opens at once on the open wire while
    # the built-in one confirms it first: the report names the change and both times
    changes = {(c["contactor"], c["closed"]): c for c in diff["contactors"]["changes"]}
    assert changes[("main_positive", True)]["difference_s"] is not None
    assert abs(changes[("main_positive", True)]["difference_s"]) < 0.5
    faults = diff["faults"]
    assert faults["external_fault"] == "OPEN_WIRE" and faults["external_s"] == pytest.approx(8.1, abs=0.05)
    assert faults["builtin_s"] is not None and "CELL_VOLTAGE_SENSOR" in faults["builtin_dtcs"]
    assert diff["soc"]["samples_compared"] > 50 and abs(diff["soc"]["worst_difference"]) < 0.03
    assert diff["limits"]["samples_compared"] > 10
    # the built-in BMS's limits and the C BMS's fixed 480 A differ by more than 50 A: reported as a failure
    names = {v.name: v for v in result.verdicts}
    assert names["differential:soc"].passed
    assert not names["differential:limits"].passed and "tolerance 50.0 A" in names["differential:limits"].message
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["differential"]["faults"]["external_fault"] == "OPEN_WIRE"


# --- failures stop the run, name the firmware and the time, keep the reports -----------------------------
@pytest.mark.parametrize("what, kind, error", [
    ("crash", "process", "the process is gone: killed by SIGSEGV"),
    ("hang", "process", "no answer within 2 s"),
    ("error", "library", "step returned 1: sensor table corrupt"),
    ("error", "process", "step returned 1: sensor table corrupt"),
    ("nan", "library", "outputs[0] (load_current_A) = nan"),
    ("range", "process", "outputs[0] (load_current_A) = 1000000.0"),
    ("garbage_tx", "library", "not a valid CAN frame"),
])
def test_a_failing_firmware_stops_the_run_with_its_name_time_and_cause(fw, tmp_path, what, kind, error):
    """(The deadline, 2 s of wall-clock time, is far above a step's cost even on a loaded machine.)"""
    path = fw["libmisbehave"] if kind == "library" else fw["misbehave"]
    scenario = _scenario(tmp_path, VCU_SCENARIO.format(kind=kind, path=path).replace(
        'path = "', f'config = "{what}_at_ms=1500"\ntimeout_s = 2.0\npath = "'))
    log = tmp_path / "bus.blf"
    result = run_scenario(scenario, out_dir=tmp_path / "out", mode="lockstep", plots=False,
                          can_options={"log": [str(log)], "channel": f"fil-{what}-{kind}"})
    s = result.summary
    assert not s["complete"] and not s["passed"]
    assert "firmware misbehave" in s["stop_reason"] and error in s["stop_reason"], s["stop_reason"]
    assert "at t = 1.500 s" in s["stop_reason"], s["stop_reason"]
    assert s["stop_reason"].count("at t = ") == 1, s["stop_reason"]   # once, not again as "(at t = 1.50 s)"
    assert s["firmware_failure"]["firmware"] == "misbehave" and s["firmware_failure"]["t_s"] == pytest.approx(1.5,
                                                                                                             abs=0.02)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["complete"] is False and (tmp_path / "out" / "junit.xml").exists()
    frames = _frames(log)
    assert frames and max(f[0] for f in frames) == pytest.approx(1.5, abs=0.05), "the log is kept up to the stop"


def test_a_process_that_hangs_at_start_never_hangs_the_run(tmp_path):
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(60)\n")
    firmware = ProcessFirmware([sys.executable, str(script)], "vcu", timeout_s=0.05)
    with pytest.raises(FirmwareTimeout, match="create: no answer within 0.5 s"):
        firmware.open(vcu_layout(), 10_000_000)
    assert firmware.pid is None  # killed and reaped


def test_a_process_that_answers_garbage_is_refused(tmp_path):
    script = tmp_path / "garbage.py"
    script.write_text("import os\nfd = int(os.environ['BMS_FIL_REPLY_FD'])\ncmd = int(os.environ['BMS_FIL_CMD_FD'])\n"
                      "while os.read(cmd, 1):\n    os.write(fd, b'\\x00')\n")  # answers without a reply sequence
    firmware = ProcessFirmware([sys.executable, str(script)], "vcu", timeout_s=2.0)
    with pytest.raises(FirmwareError, match="the answer is garbage"):
        firmware.open(vcu_layout(), 10_000_000)


def test_errors_are_one_family():
    for cls in (FirmwareAbiError, FirmwareCrash, FirmwareTimeout, FirmwareOutputError):
        assert issubclass(cls, FirmwareError)


# --- scenario table and CLI ------------------------------------------------------------------------------------
@pytest.mark.parametrize("table, message", [
    ('role = "ecu"\nkind = "library"\npath = "x.so"', "firmware.role: unknown role 'ecu'"),
    ('role = "vcu"\nkind = "libary"\npath = "x.so"', "did you mean 'library'"),
    ('role = "vcu"\nkind = "library"', "firmware.path: missing"),
    ('role = "vcu"\nkind = "library"\npath = "nope.so"', "firmware.path: no such file"),
    ('role = "bms"\nkind = "fmu"\npath = "x.fmu"', "an FMU goes into the VCU slot"),
    ('role = "vcu"\nkind = "process"\npath = "fw"\ntimeout_s = 0', "firmware.timeout_s: expected a deadline > 0 s"),
    ('role = "vcu"\nkind = "process"\npath = "fw"\nflavour = 1', "firmware.flavour: unknown key"),
    ('role = "vcu"\nkind = "process"\npath = "fw"\n[firmware.differential]\nsoc = 0.1', "beside the built-in one"),
])
def test_firmware_table_errors_name_the_key(tmp_path, table, message):
    text = '[scenario]\nname = "x"\n[[step]]\nkind = "rest"\nduration_s = 1.0\n[firmware]\n' + table + "\n"
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_scenario(text, str(tmp_path / "x.toml"))
    assert info.value.line is not None or "missing" in message


def test_cli_runs_a_scenario_with_the_c_vcu_and_names_it(fw, tmp_path, capsys):
    code = cli(["run", "default", "--max-sim-s", "5", "--out", str(tmp_path), "--no-plots", "--firmware",
                str(fw["libvcu"]), "--firmware-role", "vcu", "-c", "fil-cli"])
    out = capsys.readouterr().out
    assert "firmware (vcu): example-vcu 1.0.0 (library:" in out
    assert code == 4  # cut short by --max-sim-s: reported truncated
    assert json.loads((tmp_path / "summary.json").read_text())["firmware"]["vcu"]["name"] == "example-vcu"


def test_cli_puts_a_bms_firmware_described_once_under_any_scenario(fw, tmp_path, capsys):
    # the firmware's table in a file of its own (its DBC and signals too), put under a built-in scenario; its
    # frames' cycle times are judged against its DBC's GenMsgCycleTime (they were "no CAN traffic")
    (tmp_path / "my-bms.toml").write_text(textwrap.dedent(f"""\
        [firmware]
        role = "bms"
        kind = "library"
        path = "{fw["libbms"]}"
        dbc = "{EXAMPLE_DBC}"
        [firmware.signals]
        state = "EXB_Status.State"
        discharge_limit_A = "EXB_Status.DischargeLimit"
        charge_limit_A = "EXB_Status.ChargeLimit"
        """), encoding="utf-8")
    code = cli(["run", "default", "--max-sim-s", "4", "--out", str(tmp_path / "out"), "--no-plots",
                "--firmware", str(tmp_path / "my-bms.toml"), "-c", "fil-cli-bms"])
    out = capsys.readouterr().out
    assert "firmware (bms): example-bms 1.0.0 (library:" in out, out
    assert code == 4  # cut short by --max-sim-s
    cycle = json.loads((tmp_path / "out" / "summary.json").read_text())["cycle_times"]
    assert cycle["EXB_Status"]["mean_interval_ms"] == pytest.approx(100.0) and cycle["EXB_Status"]["frames"] >= 35
    assert cli(["run", "default", "--firmware", str(tmp_path / "my-bms.toml"), "--firmware-role", "vcu",
                "--out", str(tmp_path / "out2")]) == 2
    assert "--firmware-role vcu: " in capsys.readouterr().err
    (tmp_path / "none.toml").write_text("[firmwar]\nrole = 'bms'\n", encoding="utf-8")
    assert cli(["run", "default", "--firmware", str(tmp_path / "none.toml"), "--out", str(tmp_path / "out3")]) == 2
    assert "none.toml: firmware: no [firmware] table; did you mean 'firmwar'" in capsys.readouterr().err


def test_examples_are_short_and_documented():
    for name in ("bms.c", "vcu.c"):
        text = (ROOT / "examples" / "firmware" / name).read_text()
        assert text.count("\n") < 320 and "Build:" in text


def test_diagnostics_with_a_bms_firmware_in_the_slot_are_refused_before_the_run(fw, tmp_path, capsys):
    # an external BMS has no UDS server: [[diag]] requests, isotp and uds_pending faults and dtc expectations have
    # nothing to act on; they are refused before the first tick (exit 2, the key named), not a traceback mid-run
    signals = ('state = "EXB_Status.State"\ndischarge_limit_A = "EXB_Status.DischargeLimit"\n'
               'charge_limit_A = "EXB_Status.ChargeLimit"\n')
    table = f'[firmware]\nrole = "bms"\nkind = "library"\npath = "{fw["libbms"]}"\ndbc = "{EXAMPLE_DBC}"\n' \
            f'[firmware.signals]\n{signals}'
    (tmp_path / "my-bms.toml").write_text(table, encoding="utf-8")
    code = cli(["run", "diagnostics", "--out", str(tmp_path / "out"), "--no-plots", "--firmware",
                str(tmp_path / "my-bms.toml"), "-c", "fil-diag-refused"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "diagnostics.toml" in err and "diag[0]" in err and "UDS" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "summary.json").exists()
    for fault, key in (('kind = "uds_pending"\nduration_s = 1.0', "fault[0]"),
                       ('kind = "isotp"\nfault = "drop_cf"', "fault[0]")):
        scenario = tmp_path / "bms-diag.toml"
        scenario.write_text(f'[scenario]\nname = "bms-diag"\n{table}[[step]]\nkind = "rest"\nduration_s = 2.0\n'
                            f'[[fault]]\n{fault}\nat_s = 1.0\n', encoding="utf-8")
        code = cli(["run", str(scenario), "--out", str(tmp_path / "out2"), "--no-plots", "-c", "fil-diag-refused"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"bms-diag.toml:15: {key}" in err and "UDS" in err, err


@pytest.mark.parametrize("name", ["bms.c", "vcu.c"])
def test_the_build_commands_the_examples_document_build_them(tmp_path, name):
    """The ``Build:`` lines at the top of each example, run as written (INCLUDE: the header's folder, the process
    side beside the source as ``bms-emu firmware process-c`` writes it): a copy-paste build links."""
    import re
    import shlex
    import shutil
    cc = compiler()
    source = ROOT / "examples" / "firmware" / name
    shutil.copy(source, tmp_path / name)
    shutil.copy(ROOT / "bms" / "fil" / "c" / "bms_fil_process.c", tmp_path / "bms_fil_process.c")
    include = str(ROOT / "bms" / "fil" / "include")
    head = source.read_text().split("*/", 1)[0]
    commands = re.findall(r"^ \*(?: Build:)?\s+(cc .+?)\s+\(kind", head, flags=re.M)
    assert len(commands) == 2, head
    for command in commands:
        argv = [include if a == "INCLUDE" else a for a in shlex.split(command)]
        argv[0] = cc
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}:\n{done.stderr}"


@pytest.mark.parametrize("what, cause", [("error", "step returned 1: sensor table corrupt"),
                                         ("nan", "step returned 1: outputs[0] (load_current_A) = nan")])
def test_a_library_served_in_a_process_of_its_own_reports_its_error_once(fw, what, cause):
    """A library with globals runs under ``bms.fil.serve_library``: its failure read "step returned 1: FirmwareError:
    firmware misbehave at t = 0.000 s: step returned 1: sensor table corrupt" (the firmware and time twice)."""
    from bms.fil.contract import vcu_layout as layout
    firmware = ProcessFirmware.for_library(fw["libmisbehave"], "vcu", config=f"{what}_at_ms=0")
    firmware.open(layout(), 10_000_000)
    try:
        with pytest.raises(FirmwareError) as caught:
            firmware.step(0, 10_000_000, np.zeros(layout().n_inputs), np.zeros(layout().n_outputs))
    finally:
        firmware.close()
    assert str(caught.value).startswith(f"firmware misbehave at t = 0.000 s: {cause}"), str(caught.value)
    assert str(caught.value).count("firmware misbehave") == 1, str(caught.value)
