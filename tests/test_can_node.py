"""The CAN node in lockstep on the virtual bus: determinism, an independent decoder, exact cycle times, a test
VCU, fuzzed frames, E2E checks, and a bus that fails."""
import gzip
import math
import os
import signal
import subprocess
import sys
import time

import can
import cantools
import pytest
from can_support import Peer, codec, no_leaked_buses_or_threads  # noqa: F401
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from udsoncan.client import Client
from udsoncan.services import ReadDTCInformation

from bms import Protection
from bms.can import BusError, BusFailure, CanNode, Frame, dbc_text, open_bus
from bms.diag import DTC_DEFINITIONS, LockstepConnection, client_config
from bms.emulator import Emulator

DT = 0.01


def make_emulator(seed=0, soc=0.6):
    return Emulator("assb60-192s2p", seed=seed, initial_soc=soc, temp_C=25.0, dt_s=DT)


def channel_name(request) -> str:
    return f"test-{request.node.name}-{os.getpid()}"


class Session:
    """A node and a test VCU on one virtual channel, stepped together one tick at a time."""

    def __init__(self, request, seed=0, log=None, **node_kwargs):
        self.channel = channel_name(request)
        self.emulator = make_emulator(seed)
        self.node = CanNode(self.emulator, channel=self.channel, log=log, **node_kwargs)
        self.bus = can.Bus(interface="virtual", channel=self.channel, preserve_timestamps=True)
        self.peer = Peer(self.bus, t_s=lambda: self.node.t_s)
        self.node.start()

    def step(self, ticks=1):
        for _ in range(ticks):
            self.node.run_for(DT)
            self.peer.drain()

    def close(self):
        try:
            return self.node.close()
        finally:
            self.bus.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def scripted_drive(s: Session, seconds: float) -> None:
    """VCU: STANDBY, then DRIVE; the bench draws 120 A once READY; a DTC read every second."""
    for k in range(int(round(seconds / DT))):
        s.peer.send("VCU_Command", {"StateRequest": 1 if k < 20 else 2, "ContactorRequest": 2})
        status = s.peer.latest("BMS_Status")
        ready = status is not None and status["BmsState"] == 3
        s.peer.send("HIL_Load", {"LoadCurrent": 120.0 if ready else 0.0, "CoolantTemperature": 25.0,
                                 "CoolingFactor": 1.0})
        if k % 10 == 0:
            s.peer.send("CHG_Status", {"ChargerConnected": 0})
        if k % 100 == 50:  # ReadDTCInformation by status mask, one ISO-TP single frame
            request = ReadDTCInformation.make_request(0x02, status_mask=0xFF).get_payload()
            s.bus.send(can.Message(arbitration_id=0x7E0, data=bytes((len(request),)) + request, is_extended_id=False))
        s.step()


def test_lockstep_runs_are_identical_frame_for_frame(request, tmp_path):
    outputs = []
    for run, seed in enumerate((7, 7, 8)):
        logs = [tmp_path / f"run{run}.blf", tmp_path / f"run{run}.log", tmp_path / f"run{run}.asc"]
        with Session(request, seed=seed, log=logs) as s:
            scripted_drive(s, 3.0)
        outputs.append([p.read_bytes() for p in logs])
    assert outputs[0] == outputs[1], "same seed, same inputs: the logs must be identical byte for byte"
    assert outputs[0][1] != outputs[2][1], "another seed must change the measurements"
    lines = outputs[0][1].decode().splitlines()
    # power-on, 300 ticks, and the frames of the final state: 0.01 s .. 3.01 s
    assert lines[0].startswith("(0.010000)") and lines[-1].startswith("(3.010000)")
    # every format reads back the same simulated times (ASC's count from the measurement's start, not the first frame)
    times = [[round(m.timestamp, 6) for m in can.LogReader(str(tmp_path / f"run0{suffix}"))]
             for suffix in (".blf", ".log", ".asc")]
    assert times[0] == times[1] == times[2] and times[0][0] == 0.01


def test_cantools_decodes_the_log_within_resolution(request, tmp_path):
    """What the BMS measured and estimated at t is what an independent decoder finds in the frames at t."""
    log = tmp_path / "run.blf"
    snapshots = {}

    def snap(s):
        e = s.emulator
        snapshots[round(s.node.t_s, 6)] = {
            "PackVoltage": e.sensors.pack_voltage_V, "PackCurrent": e.sensors.current_A,
            "LinkVoltage": e.sensors.link_voltage_V, "BmsState": int(e.bms.state),
            "cells": e.sensors.cell_voltage_V.copy(), "temps": e.sensors.temperature_C.copy(),
            "SOC": 100 * e.bms.soc if math.isfinite(e.bms.soc) else None,
            "DischargeCurrentLimit": e.bms.limits.discharge_current_A}

    with Session(request, seed=3, log=log) as s:
        snap(s)
        for k in range(200):
            s.peer.send("VCU_Command", {"StateRequest": 2})
            s.peer.send("HIL_Load", {"LoadCurrent": 50.0 if k > 100 else 0.0, "CoolantTemperature": 20.0,
                                     "CoolingFactor": 1.0})
            s.step()
            snap(s)
    db = cantools.database.load_string(dbc_text(), database_format="dbc")
    checked = {"cells": 0, "temps": 0, "scalars": 0}
    with can.BLFReader(str(log)) as reader:
        frames = [m for m in reader if not m.is_rx]
    assert frames
    for msg in frames:
        decoded = db.decode_message(msg.arbitration_id, msg.data, decode_choices=False)
        truth = snapshots[round(msg.timestamp, 6)]
        message = db.get_message_by_frame_id(msg.arbitration_id)

        def close(name, value):
            step = message.get_signal_by_name(name).scale
            assert abs(decoded[name] - value) <= step / 2 + 1e-9, (msg.timestamp, name, decoded[name], value)

        if message.name == "BMS_PackMeasurements":
            for name in ("PackVoltage", "PackCurrent", "LinkVoltage"):
                close(name, truth[name])
            checked["scalars"] += 1
        elif message.name == "BMS_Status":
            assert decoded["BmsState"] == truth["BmsState"]
        elif message.name == "BMS_Limits":
            close("DischargeCurrentLimit", truth["DischargeCurrentLimit"])
        elif message.name == "BMS_SOC" and truth["SOC"] is not None:
            close("SOC", truth["SOC"])
        elif message.name == "BMS_CellVoltages":
            page = decoded["CellVoltagePage"]
            for j in range(3):
                close(f"CellVoltage_{3 * page + j + 1:03d}", truth["cells"][3 * page + j])
                checked["cells"] += 1
        elif message.name == "BMS_CellTemperatures":
            page = decoded["TemperaturePage"]
            for j in range(4):
                close(f"Temperature_{4 * page + j + 1:02d}", truth["temps"][4 * page + j])
                checked["temps"] += 1
    # frames at t = 0.01 .. 2.01 s (201 ticks): every cell page frame and measurement frame was checked
    assert checked["cells"] == 3 * 201 and checked["temps"] >= 4 * 100 and checked["scalars"] == 201



@pytest.mark.parametrize("started", [False, True])
def test_a_run_of_t_seconds_is_t_seconds_whether_or_not_it_was_powered_on_first(request, started):
    """``bms-emu serve --duration 3`` powers on (``start()``) before ``run(3)``, and ran 301 ticks (3.01 s, 301
    BMS_Status frames): the power-on tick is one of the run's."""
    node = CanNode(make_emulator(), channel=channel_name(request))
    if started:
        node.start()
    report = node.run(3.0)
    assert report.ticks == 300 and report.simulated_s == pytest.approx(3.0)
    assert {r["message"]: r["frames"] for r in report.cycle_times}["BMS_Status"] == 300


@pytest.mark.parametrize("lockstep_bus", [False, True])
def test_a_flood_is_read_max_rx_per_tick_frames_a_tick_on_either_bus(request, lockstep_bus):
    """12 frames in one tick with ``max_rx_per_tick=5``: 5 a tick, the overflow counted where frames were left,
    on python-can's virtual bus and on a LockstepBus."""
    from bms.can.lockstep_bus import LockstepBus
    channel = channel_name(request)
    bus = LockstepBus(channel) if lockstep_bus else can.Bus(interface="virtual", channel=channel)
    peer = can.Bus(interface="virtual", channel=channel)
    node = CanNode(make_emulator(), bus=bus, max_rx_per_tick=5, diag=None)
    try:
        node.start()
        for k in range(12):
            peer.send(can.Message(arbitration_id=0x7A0, data=bytes([k]), is_extended_id=False))
        seen = []
        for _ in range(4):
            node.step()
            seen.append((node.counters["rx_frames"], node.counters["rx_overflow_ticks"]))
        assert seen == [(5, 1), (10, 2), (12, 2), (12, 2)]
    finally:
        node.close()
        bus.shutdown()
        peer.shutdown()

def test_cycle_time_statistics_of_a_lockstep_run_are_exact(request):
    node = CanNode(make_emulator(), channel=channel_name(request))
    try:
        node.run_for(10.0)
    finally:
        report = node.close()
    assert report.ticks == 1000 and report.simulated_s == 10.0
    tx = {r["message"]: r for r in report.cycle_times if r["direction"] == "tx"}
    for name, message in codec().messages.items():
        if "BMS" not in message.senders or message.cycle_time_s is None:
            continue
        r = tx[name]
        period_ms = message.cycle_time_s * 1000
        assert r["frames"] == round(10_000 / period_ms), name
        assert r["period_ms"] == period_ms and r["mean_interval_ms"] == period_ms
        assert r["p99_abs_deviation_ms"] == 0.0 and r["max_abs_deviation_ms"] == 0.0
        assert r["mean_abs_deviation_ms"] == 0.0
    assert report.overruns == 0 and report.realtime_factor > 0


def test_a_node_without_a_log_keeps_no_frames(request):
    """Without a log the node holds none of the frames it sends: a long run or a kit session in one process
    stays in bounded memory (its log batch held every frame of the run: 3.6 MB per 30 s here)."""
    import tracemalloc
    node = CanNode(make_emulator(), channel=channel_name(request))
    try:
        node.run_for(2.0)  # past the start-up (schedules, caches, statistics buffers)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            node.run_for(30.0)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert node.counters["tx_frames"] > 15_000
    finally:
        node.close()
    assert grown < 1_000_000, f"{grown / 1e6:.2f} MB kept over 3000 ticks without a log"


def test_a_test_vcu_closes_the_contactors_drives_and_sees_the_bms_fault_when_it_goes_silent(request):
    with Session(request, seed=1) as s:
        states = []
        for _k in range(300):  # 3 s of DRIVE requests
            s.peer.send("VCU_Command", {"StateRequest": 2, "ContactorRequest": 2})
            status = s.peer.latest("BMS_Status")
            ready = status is not None and status["BmsState"] == 3
            s.peer.send("HIL_Load", {"LoadCurrent": 100.0 if ready else 0.0, "CoolantTemperature": 25.0,
                                     "CoolingFactor": 1.0})
            s.step()
            status = s.peer.latest("BMS_Status")
            if status and (not states or states[-1] != status["BmsState"]):
                states.append(status["BmsState"])
        assert 2 in states and states[-1] == 3, f"expected PRECHARGE then READY, saw {states}"
        status = s.peer.latest("BMS_Status")
        assert status["ContactorMainPositive"] == 1 and status["ContactorMainNegative"] == 1
        assert status["ContactorPrecharge"] == 0
        pack = s.peer.latest("BMS_PackMeasurements")
        assert pack["PackCurrent"] == pytest.approx(100.0, abs=3.0)
        assert pack["LinkVoltage"] == pytest.approx(pack["PackVoltage"], rel=0.02)
        # the VCU goes silent (the bench keeps drawing current)
        silent_at = s.node.t_s
        for _ in range(200):
            s.peer.send("HIL_Load", {"LoadCurrent": 100.0, "CoolantTemperature": 25.0, "CoolingFactor": 1.0})
            s.step()
        status = s.peer.latest("BMS_Status")
        assert status["BmsState"] == 5, "FAULT expected after the VCU fell silent"
        assert status["ContactorMainPositive"] == 0 and status["CommFault"] == 1
        assert abs(s.peer.latest("BMS_PackMeasurements")["PackCurrent"]) < 2.0
        fault = next(t for t, name, active in s.node.comm_fault_log if name == "VCU_Command" and active)
        assert silent_at < fault <= silent_at + 0.2
        # a tester reads the fault codes (UDS on ISO-TP, the stock udsoncan client)
        with Client(LockstepConnection(s.node, step=s.step), config=client_config(s.node.diag.dids)) as client:
            confirmed = client.get_dtc_by_status_mask(0x08).service_data.dtcs
            expected = {DTC_DEFINITIONS[Protection[d.name]].code for d in s.emulator.bms.dtcs
                        if d.status == "confirmed"}
            assert {d.id for d in confirmed} == expected and DTC_DEFINITIONS[Protection.VCU_TIMEOUT].code in expected


def test_e2e_errors_raise_the_comm_fault_and_valid_frames_clear_it(request):
    with Session(request) as s:
        for _ in range(5):
            s.peer.send("VCU_Command", {"StateRequest": 1})
            s.step()
        for _ in range(3):  # three bad CRCs in a row
            s.peer.send("VCU_Command", {"StateRequest": 1}, crc=0x00)
            s.step()
        assert s.node.counters["crc_errors"] >= 2 and s.node.comm_fault_active
        assert s.node.comm_fault_log[-1][1:] == ("VCU_Command", True)
        s.peer.send("VCU_Command", {"StateRequest": 1}, counter=s.peer.counters["VCU_Command"])
        s.step()
        s.peer.send("VCU_Command", {"StateRequest": 1}, counter=s.peer.counters["VCU_Command"])  # repeated
        s.step()
        assert s.node.counters["counter_errors"] >= 1
        errors, in_row = s.node.counters["counter_errors"], 0
        for _ in range(2 * s.node.comm_recovery_frames):  # it heals after that many valid frames in a row
            s.peer.send("VCU_Command", {"StateRequest": 1})
            s.step()
            in_row = 0 if s.node.counters["counter_errors"] > errors else in_row + 1  # after the repeat: a jump
            errors = s.node.counters["counter_errors"]
            assert s.node.comm_fault_active is (in_row < s.node.comm_recovery_frames), in_row
        assert not s.node.comm_fault_active and s.node.comm_fault_log[-1][1:] == ("VCU_Command", False)


def test_a_vcu_slower_than_the_timeout_is_one_comm_fault_not_one_per_frame(request):
    """A VCU_Command every 200 ms (the timeout is 100 ms): each frame is valid, but the message is late every
    time. The comm fault is raised once and stays (it heals only after comm_recovery_frames frames in a row
    on time), and a VCU back on its 10 ms cycle clears it: no fault and DTC chattering at 5 Hz."""
    with Session(request) as s:
        for k in range(300):   # 3 s at one frame in 20 ticks
            if k % 20 == 0:
                s.peer.send("VCU_Command", {"StateRequest": 1})
            s.step()
        raised = [(t, active) for t, name, active in s.node.comm_fault_log if name == "VCU_Command"]
        assert [active for _, active in raised] == [True] and s.node.comm_fault_active, raised
        for _ in range(s.node.comm_recovery_frames + 1):
            s.peer.send("VCU_Command", {"StateRequest": 1})
            s.step()
        log = [(t, active) for t, name, active in s.node.comm_fault_log if name == "VCU_Command"]
        assert [active for _, active in log] == [True, False] and not s.node.comm_fault_active, log


_VALID_IDS = sorted(m.frame_id for m in codec().messages.values())


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(["valid-id", "random-id", "extended", "invalid-id", "remote", "error", "e2e"]))
    if kind == "e2e":  # a protected message with a bad counter or CRC, or a good one
        name = draw(st.sampled_from(["VCU_Command", "CHG_Status"]))
        message = codec()[name]
        data = bytearray(message.protect(message.encode({}), draw(st.integers(0, 15))))
        if name == "VCU_Command":  # any StateRequest the 4 bits hold, those above SHUTDOWN (4) too
            data[1] = (data[1] & 0x0F) | draw(st.integers(0, 15)) << 4
            data = bytearray(message.protect(bytes(data), message.counter_of(data)))
        if draw(st.booleans()):
            data[0] ^= draw(st.integers(1, 255))
        return can.Message(arbitration_id=message.frame_id, data=bytes(data), is_extended_id=False)
    dlc = draw(st.integers(0, 8))
    data = draw(st.binary(min_size=dlc, max_size=dlc))
    if kind == "valid-id":
        return can.Message(arbitration_id=draw(st.sampled_from(_VALID_IDS)), data=data, is_extended_id=False)
    if kind == "random-id":
        return can.Message(arbitration_id=draw(st.integers(0, 0x7FF)), data=data, is_extended_id=False)
    if kind == "invalid-id":  # an identifier no CAN frame carries (python-can builds it unchecked)
        extended = draw(st.booleans())
        lowest = 0x20000000 if extended else 0x800
        return can.Message(arbitration_id=draw(st.integers(lowest, 0x3FFFFFFF)), data=data, is_extended_id=extended,
                           check=False)
    if kind == "extended":
        return can.Message(arbitration_id=draw(st.integers(0, 0x1FFFFFFF)), data=data, is_extended_id=True)
    if kind == "remote":
        return can.Message(arbitration_id=draw(st.sampled_from(_VALID_IDS)), is_remote_frame=True, dlc=dlc,
                           is_extended_id=False)
    # error frames, but not bus-off (that one stops the run: tested below)
    return can.Message(arbitration_id=draw(st.integers(0, 0x1FFFFFFF)) & ~0x40, is_error_frame=True, dlc=8,
                       data=bytes(8))


CATEGORIES = ("rx_accepted", "unknown_id", "not_for_bms", "wrong_dlc", "error_frames", "remote_frames",
              "crc_errors", "counter_errors", "bad_values", "bad_frames",
              "diag_frames")  # a random ID may be 0x7DF/0x7E0


def test_fuzzed_frames_never_raise_and_are_all_counted(request):
    with Session(request) as s:
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(frames(), max_size=25))
        def check(batch):
            before = dict(s.node.counters)
            for msg in batch:
                s.bus.send(msg)
            s.step()
            delta = {k: s.node.counters[k] - before[k] for k in before}
            assert delta["rx_frames"] == len(batch)
            assert sum(delta[k] for k in CATEGORIES) == len(batch)

        check()
        assert s.node.counters["rx_frames"] > 0


def test_a_vanished_adapter_stops_the_run_cleanly_with_the_log_flushed(request, tmp_path):
    log = tmp_path / "run.blf"
    node = CanNode(make_emulator(), channel=channel_name(request), log=[log, tmp_path / "run.log"])
    node.run_for(0.5)
    node.bus.shutdown()  # the adapter is gone: python-can raises on the next operation
    with pytest.raises(BusFailure, match="bus failed|failed") as info:
        node.run(10.0)
    report = info.value.report
    assert report.stop_reason.startswith("bus failure") and report.ticks == 50
    with can.BLFReader(str(log)) as reader:
        assert len(list(reader)) == report.counters["tx_frames"] == report.log_frames
    assert (tmp_path / "run.log").read_text().count("\n") == report.log_frames
    assert not node.log.alive


def test_bus_off_of_the_nodes_own_controller_stops_the_run(request):
    """Where error frames are the controller's own reports (SocketCAN, adapters; here said so explicitly,
    since on the virtual bus they come from other handles), bus-off ends the run."""
    with Session(request, controller_error_frames=True) as s:
        s.step(3)
        s.bus.send(can.Message(arbitration_id=0x40, is_error_frame=True, dlc=8, data=bytes(8)))
        with pytest.raises(BusFailure, match="bus-off"):
            s.node.run_for(DT)
        assert s.node.counters["error_frames"] == 1


def test_an_error_frame_another_node_sends_is_counted_and_the_run_goes_on(request):
    """On a bus of software handles an error frame, bus-off bit and all, is another process's frame."""
    with Session(request) as s:
        assert not s.node.controller_error_frames
        s.step(3)
        for _ in range(3):
            s.bus.send(can.Message(arbitration_id=0x40, is_error_frame=True, dlc=8, data=bytes(8)))
        s.step(5)
        assert s.node.counters["error_frames"] == 3
        assert s.node.t_s == pytest.approx(9 * DT)


def test_open_bus_like_python_can_tools(monkeypatch):
    monkeypatch.delenv("CAN_INTERFACE", raising=False)
    monkeypatch.setattr(can, "rc", {})
    monkeypatch.setattr(can.util, "CONFIG_FILES", [])
    with open_bus(channel="ch-default") as bus:  # no interface anywhere: the virtual bus
        assert type(bus).__name__ == "VirtualBus" and bus.channel_id == "ch-default"
    monkeypatch.setenv("CAN_INTERFACE", "virtual")
    monkeypatch.setenv("CAN_CHANNEL", "from-env")
    with open_bus() as bus:  # python-can's environment is honoured
        assert bus.channel_id == "from-env"
    with pytest.raises(BusError, match="cannot open the CAN bus on interface 'socketcan'"):
        open_bus(interface="socketcan", channel="no-such-can9")


def test_serve_runs_in_lockstep_and_prints_cycle_times(tmp_path, capsys):
    from hil.cli import main

    log = tmp_path / "serve.trc"
    assert main(["serve", "--lockstep", "--duration", "0.5", "-c", f"serve-{os.getpid()}", "--log", str(log),
                 "--json", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "BMS_Status" in out and "p99 |dev| ms" in out and "duration reached" in out
    with can.LogReader(str(log)) as reader:
        assert len(list(reader)) > 100


def test_serve_takes_a_bench_dbc_with_other_ids(tmp_path):
    """A bench whose VCU expects the BMS status at 0x500: same names, another ID (and E2E data ID)."""
    import re

    from hil.cli import main

    custom = tmp_path / "bench.dbc"
    custom.write_text(re.sub(r"\b256\b", "1280", dbc_text()), encoding="utf-8")
    log = tmp_path / "bench.log"
    assert main(["serve", "--lockstep", "--duration", "0.2", "-c", f"dbc-{os.getpid()}", "-q", "--dbc", str(custom),
                 "--log", str(log)]) == 0
    ids = {line.split()[2].split("#")[0] for line in log.read_text().splitlines()}
    assert "500" in ids and "100" not in ids
    status = cantools.database.load_file(str(custom)).get_message_by_name("BMS_Status")
    frame = next(line for line in log.read_text().splitlines() if " 500#" in line)
    assert status.decode(bytes.fromhex(frame.split("#")[1].split()[0]))["BmsState"] in ("INIT", "STANDBY")


def test_ctrl_c_stops_serve_cleanly_with_logs_flushed(tmp_path):
    """A HIL engineer's Ctrl-C: exit 0, every log closed and readable, the cycle-time table printed."""
    logs = [tmp_path / "hil.blf", tmp_path / "hil.asc", tmp_path / "hil.log"]
    cmd = [sys.executable, "-m", "hil.cli", "serve", "-i", "virtual", "-c", "ctrl-c", "--rt-priority", "0"]
    for log in logs:
        cmd += ["--log", str(log)]
    # run where the installed package is imported, not the source tree (which holds no compiled kernels)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        first = proc.stdout.readline()
        assert "bms-emu serve: BMS on" in first, first + proc.stderr.read()
        # synchronised on the process, not on a sleep: powered on, and >= 20 frames on disk (the log writer
        # hands its frames to the OS at least every second), however loaded the machine is
        while "powered on, running" not in (line := proc.stdout.readline()):
            assert line, proc.stderr.read()
        deadline = time.monotonic() + 120.0
        while len(logs[2].read_text().splitlines()) < 20:
            assert time.monotonic() < deadline and proc.poll() is None, "the candump log never reached 20 frames"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped: interrupted by SIGINT (Ctrl-C) at t = " in out and "BMS_CellVoltages" in out
    for log in logs:
        with can.LogReader(str(log)) as reader:
            assert len(list(reader)) >= 20, log


def test_frames_cross_the_virtual_bus_as_independent_equal_copies(request):
    channel = channel_name(request)
    sender = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    receiver = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    try:
        frame = Frame.build(0x123, b"\x01\x02\x03", timestamp=1.25)
        reference = can.Message(arbitration_id=0x123, data=b"\x01\x02\x03", is_extended_id=False, is_rx=False,
                                timestamp=1.25)
        assert frame.equals(reference) and isinstance(frame, can.Message)
        sender.send(frame)
        got = receiver.recv(0)
        assert isinstance(got, Frame) and got is not frame and got.data is not frame.data
        assert got.equals(frame, timestamp_delta=0.0, check_channel=False, check_direction=False)
        assert got.is_rx and not frame.is_rx and got.channel == channel and frame.channel is None
        got.data[0] = 0xFF  # the copy owns its data
        assert frame.data[0] == 0x01
    finally:
        sender.shutdown()
        receiver.shutdown()


def test_step_runs_the_same_ticks_as_run_for(request, tmp_path):
    """CanNode.step (what the harness calls every tick) and run_for(dt) write the same log."""
    logs = []
    for way in ("run_for", "step"):
        log = tmp_path / f"{way}.blf"
        node = CanNode(make_emulator(), channel=f"{channel_name(request)}-{way}", log=log)
        for _ in range(150):
            node.step() if way == "step" else node.run_for(DT)
        report = node.close()
        assert report.ticks == 150 and report.stop_reason == "duration reached"
        logs.append(log.read_bytes())
    assert logs[0] == logs[1]


@pytest.mark.parametrize("channel,interface", [("can7", "can7"), ("bms-emu-a-long-virtual-channel", "vcan0")])
def test_a_candump_log_names_one_interface_for_what_the_bms_sends_and_receives(tmp_path, channel, interface):
    from hil.runner import run_scenario
    from hil.scenario import load_scenario

    log, compressed = tmp_path / "bus.log", tmp_path / "bus.log.gz"
    run_scenario(load_scenario("default"), out_dir=None, mode="lockstep", plots=False, max_sim_s=0.5,
                 can_options={"channel": channel, "log": [str(log), str(compressed)]})
    lines = log.read_text().splitlines()
    assert gzip.decompress(compressed.read_bytes()).decode().splitlines() == lines
    directions = {line.rsplit(" ", 1)[1] for line in lines}
    assert directions == {"T", "R"}  # the BMS's frames and the VCU model's
    assert {line.split(" ")[1] for line in lines} == {interface}
    with can.LogReader(str(log)) as reader:
        assert sum(1 for _ in reader) == len(lines)


def test_a_tick_longer_than_a_cycle_time_is_warned_of_and_those_messages_go_out_once_a_tick(request):
    from bms.can.node import CycleTimeWarning

    emulator = Emulator("assb60-192s2p", initial_soc=0.6, dt_s=0.05)
    with pytest.warns(CycleTimeWarning, match=r"dt = 50 ms.*BMS_Status \(10 ms\).*at most 10 ms") as caught:
        node = CanNode(emulator, channel=channel_name(request))
    assert "BMS_SOC" not in str(caught[0].message)  # 100 ms: on time at a 50 ms tick
    node.run_for(1.0)
    report = node.close()
    status = next(s for s in report.cycle_times if s["message"] == "BMS_Status")
    assert status["mean_interval_ms"] == pytest.approx(50.0)
