"""The emulator and separate processes on real python-can interfaces.

- udp_multicast inside a loopback-only network namespace the test creates and removes: ``bms-emu serve``
  (wall clock), python-can's own ``can.logger`` and ``can.player`` (a recorded VCU) as three processes.
- SocketCAN on a ``vcan`` interface, where the kernel has CAN.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import can
import pytest
from can_support import Peer, codec, no_leaked_buses_or_threads  # noqa: F401

from bms.can import BusError, CanNode
from bms.emulator import Emulator

GROUP = "239.74.163.2"


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)


@pytest.fixture
def netns():
    """A loopback-only network namespace with multicast routed to lo; removed afterwards."""
    if sys.platform != "linux":
        pytest.skip("network namespaces are Linux only")
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    if shutil.which("ip") is None:
        pytest.skip("no 'ip' command (iproute2)")
    name = f"bmsemu-{uuid.uuid4().hex[:8]}"
    made = _run(["ip", "netns", "add", name])
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        for cmd in (["ip", "-n", name, "link", "set", "lo", "up"],
                    ["ip", "-n", name, "link", "set", "lo", "multicast", "on"],
                    ["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo"]):
            done = _run(cmd)
            assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
        yield name
    finally:
        _run(["ip", "netns", "del", name])
    assert name not in _run(["ip", "netns", "list"]).stdout


def _vcu_log(path: Path, seconds: float) -> None:
    """A candump log of a VCU asking for DRIVE every 10 ms, with valid counters and CRCs."""
    message = codec()["VCU_Command"]
    lines = []
    for k in range(int(seconds / 0.01)):
        data = message.protect(message.encode({"StateRequest": 2, "ContactorRequest": 2}), k % 16)
        lines.append(f"({1000 + k * 0.01:.6f}) vcan0 {message.frame_id:03X}#{data.hex().upper()} T")
    path.write_text("\n".join(lines) + "\n")


def _popen(ns, args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # run outside the source tree so the installed package (with its compiled kernels) is imported
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], cwd=tempfile.gettempdir(), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _stop(proc, sig=None, timeout=20):
    if proc.poll() is None and sig is not None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_udp_multicast_across_processes_in_a_network_namespace(netns, tmp_path):
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack "
                                          "(python-can[multicast])")
    emu_log, logger_log, vcu_log = tmp_path / "emulator.blf", tmp_path / "logger.log", tmp_path / "vcu.log"
    _vcu_log(vcu_log, 1.5)
    bus = ["-i", "udp_multicast", "-c", GROUP]
    emulator = _popen(netns, ["-m", "hil.cli", "serve", *bus, "--duration", "6", "--rt-priority", "0",
                              "--log", str(emu_log)])
    logger = player = None
    try:
        first = emulator.stdout.readline()
        assert "bms-emu serve: BMS on" in first, first + emulator.stderr.read()
        assert f"BMS on channel {GROUP} (UdpMulticastBus)" in first, first  # not python-can's "unknown"
        logger = _popen(netns, ["-m", "can.logger", *bus, "-f", str(logger_log)])
        assert "Connected to" in logger.stdout.readline()
        time.sleep(0.3)
        player = _popen(netns, ["-m", "can.player", *bus, str(vcu_log)])
        _, player_err = _stop(player, timeout=30)
        assert player.returncode == 0, player_err
        out, err = _stop(emulator, timeout=30)
        assert emulator.returncode == 0, err
        assert "duration reached" in out
    finally:
        for proc in (player, emulator):
            if proc is not None and proc.poll() is None:
                _stop(proc, signal.SIGINT)
        if logger is not None:
            _stop(logger, signal.SIGINT)
    # the emulator heard the recorded VCU: precharge, READY, then FAULT when it fell silent
    status = codec()["BMS_Status"]
    with can.BLFReader(str(emu_log)) as reader:
        frames = list(reader)
    states = [status.decode(m.data)["BmsState"] for m in frames if m.arbitration_id == status.frame_id]
    heard = [m for m in frames if m.arbitration_id == 0x200]
    assert len(heard) >= 140, f"the emulator logged {len(heard)} VCU frames"
    assert 3 in states and states[-1] == 5, sorted(set(states))
    assert states.index(2) < states.index(3) < len(states) - 1 - states[::-1].index(5)
    # a separate python-can process saw the BMS's frames, counters and CRCs intact
    with can.LogReader(str(logger_log)) as reader:
        seen = [m for m in reader if m.arbitration_id == status.frame_id]
    assert len(seen) > 200
    assert all(status.crc_ok(m.data) for m in seen)
    counters = [status.counter_of(m.data) for m in seen]
    assert sum((b - a) % 16 == 1 for a, b in zip(counters, counters[1:])) >= 0.99 * (len(counters) - 1)


def _kernel_has_can() -> str | None:
    try:
        socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW).close()
    except (OSError, AttributeError) as exc:  # python-can raises a plain OSError here too
        return f"this kernel has no SocketCAN ({exc})"
    return None


@pytest.fixture
def vcan():
    reason = _kernel_has_can()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("creating a vcan interface needs root and 'ip'")
    name = f"vbms{uuid.uuid4().hex[:4]}"
    made = _run(["ip", "link", "add", "dev", name, "type", "vcan"])
    if made.returncode != 0:
        pytest.skip(f"no vcan support: {made.stderr.strip()}")
    try:
        assert _run(["ip", "link", "set", "up", name]).returncode == 0
        yield name
    finally:
        _run(["ip", "link", "del", name])


def test_socketcan_vcan(vcan, tmp_path):
    emulator = Emulator("assb60-192s2p", seed=2, initial_soc=0.6, dt_s=0.01)
    try:
        node = CanNode(emulator, interface="socketcan", channel=vcan, log=tmp_path / "vcan.log")
    except BusError as exc:
        pytest.skip(str(exc))
    with node, can.Bus(interface="socketcan", channel=vcan) as bus:
        peer = Peer(bus)
        node.start()
        for _ in range(150):
            peer.send("VCU_Command", {"StateRequest": 2})
            node.run_for(0.01)
            time.sleep(0.0005)  # the kernel delivers between the two sockets
            peer.drain()
        assert peer.latest("BMS_Status")["BmsState"] in (2, 3)
        assert node.counters["rx_accepted"] >= 100


# --- what another node sends at a running serve (issue 9, items 10 and 11) ---------------------------------
_INJECTOR = '''
"""A careless or hostile peer on the group: garbage, an identifier no CAN frame carries, a foreign error
frame with the bus-off bit, and valid VCU_Commands asking for a state that does not exist."""
import socket, sys, time
import can, cantools
from can.interfaces.udp_multicast.utils import pack_message
from bms.can import Codec, dbc_text

group, commands = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()  # imports done: inject when the test says so, while serve runs
raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
raw.sendto(b"\\x00", (group, 43113))                                    # one byte: not a msgpack frame
raw.sendto(pack_message(can.Message(arbitration_id=0x800, is_extended_id=False, data=bytes(8), check=False)),
           (group, 43113))                                            # an 11-bit frame with ID 0x800
with can.Bus(interface="udp_multicast", channel=group) as bus:
    bus.send(can.Message(arbitration_id=0x40, is_error_frame=True, dlc=8, data=bytes(8)))  # CAN_ERR_BUSOFF
    vcu = cantools.database.load_string(dbc_text(), database_format="dbc").get_message_by_name("VCU_Command")
    protect = Codec()["VCU_Command"].protect
    for k in range(commands):
        data = vcu.encode({"VCU_Command_CRC": 0, "VCU_Command_Counter": 0, "StateRequest": 7,
                           "ContactorRequest": 0}, strict=False)
        bus.send(can.Message(arbitration_id=vcu.frame_id, is_extended_id=False, data=protect(data, k % 16)))
        time.sleep(0.01)
print("injected", flush=True)
'''


def _wait_for(proc, text: str) -> None:
    lines: list[str] = []
    while not any(text in line for line in lines):
        line = proc.stdout.readline()
        assert line, "".join(lines) + proc.stderr.read()
        lines.append(line)


def _run_with_injection(ns, tmp_path, args, *, ready: str, commands: int, timeout: float):
    """Start the injecting peer and wait past its imports (slow on a loaded machine), start ``args``, and once
    it prints ``ready`` set the peer off; returns the command's (process, stdout, stderr) when it has ended."""
    script = tmp_path / "inject.py"
    script.write_text(_INJECTOR)
    injector = _popen(ns, [str(script), GROUP, str(commands)], stdin=subprocess.PIPE)
    proc = None
    try:
        _wait_for(injector, "ready")
        proc = _popen(ns, args)
        _wait_for(proc, ready)
        injector.stdin.write("go\n")
        injector.stdin.flush()
        i_out, i_err = _stop(injector, timeout=60)
        assert injector.returncode == 0 and "injected" in i_out, i_err
        out, err = _stop(proc, timeout=timeout)
    finally:
        if proc is not None and proc.poll() is None:
            _stop(proc, signal.SIGINT)
        if injector.poll() is None:
            _stop(injector, signal.SIGKILL)
    return proc, out, err


def test_serve_on_udp_multicast_counts_what_another_node_sends_and_goes_on(netns, tmp_path):
    """Garbage, an invalid ID and a foreign bus-off error frame at a running serve: it keeps its 10 ms
    schedule, counts each once, logs every frame once (its own sends come back on the group), and stops
    cleanly at --duration."""
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    log, report_path, commands = tmp_path / "serve.blf", tmp_path / "serve.json", 20
    serve, out, err = _run_with_injection(
        netns, tmp_path, ["-m", "hil.cli", "serve", "-i", "udp_multicast", "-c", GROUP, "--duration", "4",
                          "--rt-priority", "0", "--log", str(log), "--json", str(report_path)],
        ready="powered on", commands=commands, timeout=60)
    assert serve.returncode == 0, err
    assert "duration reached" in out and "the bus failed" not in err
    report = json.loads(report_path.read_text())
    c = report["counters"]
    assert report["complete"] and report["stop_reason"] == "duration reached" and report["ticks"] >= 400
    assert c["bad_frames"] == 2 and c["error_frames"] == 1 and c["bad_values"] == commands, c
    assert c["rx_frames"] == commands + 1 and c["not_for_bms"] == 0 and c["unknown_id"] == 0, c
    assert c["rx_accepted"] == 0, c  # each frame counted once: an out-of-range request is not also accepted
    assert c["tx_frames"] - 100 <= c["own_frames"] <= c["tx_frames"], c  # its own sends, heard back once each
    # the last of them, named with what it was and when: the out-of-range requests came after the garbage
    assert report["last_rx_error"].startswith("VCU_Command: a request for what does not exist (ID 0x200"), report
    assert " at t = " in report["last_rx_error"]
    status = next(s for s in report["cycle_times"] if s["message"] == "BMS_Status")
    assert status["period_ms"] == 10 and status["mean_interval_ms"] == pytest.approx(10.0, abs=0.5)
    with can.BLFReader(str(log)) as reader:
        frames = list(reader)
    assert len(frames) == report["log_frames"] == c["tx_frames"] + c["rx_frames"]
    codec_status = codec()["BMS_Status"]
    counters = [codec_status.counter_of(m.data) for m in frames if m.arbitration_id == codec_status.frame_id]
    assert len(counters) == status["frames"]
    assert all((b - a) % 16 == 1 for a, b in zip(counters, counters[1:]))  # each BMS frame logged once


def test_a_paced_run_on_udp_multicast_counts_stray_frames_and_goes_on(netns, tmp_path):
    """run --mode paced with the VCU model on its own handle of the group: stray frames are counted, the
    VCU model still drives the BMS to READY, the run ends where --max-sim-s cuts it, not at the bus."""
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    out_dir = tmp_path / "out"
    run, out, err = _run_with_injection(  # "simulating": printed once the bus is open, as the loop starts
        netns, tmp_path, ["-m", "hil.cli", "run", "--mode", "paced", "-i", "udp_multicast", "-c", GROUP,
                          "--max-sim-s", "4", "--out", str(out_dir), "--status-every", "0.5"],
        ready="simulating", commands=0, timeout=90)  # no commands: they would cross the VCU model's alive counter
    summary = json.loads((out_dir / "summary.json").read_text())
    assert run.returncode == 4 and summary["incomplete_cause"] == "max_sim_s", (out, err, summary["stop_reason"])
    c = summary["can"]["counters"]
    assert c["bad_frames"] == 2 and c["error_frames"] == 1 and c["crc_errors"] == c["counter_errors"] == 0, c
    assert c["rx_accepted"] > 100 and c["own_frames"] > 0 and c["not_for_bms"] == 0, c
    status = codec()["BMS_Status"]
    with can.BLFReader(str(out_dir / "bus.blf")) as reader:
        states = [status.decode(m.data)["BmsState"] for m in reader if m.arbitration_id == status.frame_id]
    assert 3 in states  # READY: the VCU model's commands reached the BMS


_FLOOD = '''
import os, socket, sys
raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    raw.sendto(os.urandom(1 + os.urandom(1)[0] % 64), (sys.argv[1], 43113))
print("flooded", flush=True)
'''


def test_a_flood_of_garbage_never_stops_serve(netns, tmp_path):
    """20,000 random datagrams as fast as a process can send them (more than the socket buffer holds, so
    some are dropped by the kernel): every one that arrives is counted, serve runs to its --duration."""
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    report_path, script = tmp_path / "serve.json", tmp_path / "flood.py"
    script.write_text(_FLOOD)
    serve = _popen(netns, ["-m", "hil.cli", "serve", "-i", "udp_multicast", "-c", GROUP, "--duration", "3",
                           "--rt-priority", "0", "--json", str(report_path)])
    try:
        _wait_for(serve, "powered on")
        flood = _popen(netns, [str(script), GROUP, "20000"])
        flood_out, flood_err = _stop(flood, timeout=60)
        assert "flooded" in flood_out, flood_err
        out, err = _stop(serve, timeout=60)
    finally:
        if serve.poll() is None:
            _stop(serve, signal.SIGINT)
    assert serve.returncode == 0, err
    report = json.loads(report_path.read_text())
    assert report["stop_reason"] == "duration reached", report["stop_reason"]
    assert report["counters"]["bad_frames"] > 100 and report["counters"]["rx_errors"] == 0, report["counters"]


_CLOSED_SOCKET = '''
"""The node's own socket closed under it (as when the interface goes away): the run stops, logs flushed."""
import os, sys
from bms.can import BusFailure, CanNode
from bms.emulator import Emulator

node = CanNode(Emulator("assb60-192s2p", seed=0, initial_soc=0.6, dt_s=0.01), interface="udp_multicast",
               channel=sys.argv[1], clock="wall", log=sys.argv[2])
node.run_for(0.3)
if sys.argv[3] == "closed":
    os.close(node.bus.fileno())
else:  # the descriptor now names a file: every receive fails with ENOTSOCK, an error of no known adapter failure
    os.dup2(os.open(os.devnull, os.O_RDWR), node.bus.fileno())
try:
    node.run(5.0)
except BusFailure as exc:
    c = exc.report.counters
    print(f"ticks {exc.report.ticks} tx {c['tx_frames']} logged {exc.report.log_frames} rx_errors {c['rx_errors']}")
    print(f"failure: {exc}", flush=True)
'''


def test_a_closed_socket_is_the_adapters_own_failure_and_stops_the_run(netns, tmp_path):
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    script, log = tmp_path / "closed.py", tmp_path / "closed.log"
    script.write_text(_CLOSED_SOCKET)
    proc = _popen(netns, [str(script), GROUP, str(log), "closed"])
    out, err = _stop(proc, timeout=60)
    assert proc.returncode == 0 and "failure: " in out, out + err
    assert "Bad file descriptor" in out, out
    ticks, tx, logged, _ = (int(w) for w in out.split()[1:8:2])
    assert ticks < 100 and tx > 0
    assert log.read_text().count("\n") == logged == tx  # every frame sent is in the log, once


def test_a_receive_that_fails_for_a_second_on_end_stops_the_run(netns, tmp_path):
    """An operating-system error on every receive that names no known adapter failure (ENOTSOCK): counted
    and retried, then, after a second without one good read, the bus has failed."""
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    script, log = tmp_path / "failing.py", tmp_path / "failing.log"
    script.write_text(_CLOSED_SOCKET)
    proc = _popen(netns, [str(script), GROUP, str(log), "not-a-socket"])
    out, err = _stop(proc, timeout=60)
    assert proc.returncode == 0 and "receiving from the bus has failed for" in out, out + err
    ticks, tx, logged, rx_errors = (int(w) for w in out.split()[1:8:2])
    assert 30 + 100 <= ticks < 30 + 500 and rx_errors > 100  # a second of failed receives, then the end
    assert log.read_text().count("\n") == logged


def test_a_paced_diagnostic_scenario_on_udp_multicast_gets_its_answers(netns, tmp_path):
    """The scenario's UDS tester on a handle of its own: the node's responses reach it (on the node's
    handle they would be the node's own frames heard back), and the node hears its requests."""
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    out_dir = tmp_path / "out"
    run = _popen(netns, ["-m", "hil.cli", "run", "diagnostics", "--mode", "paced", "-i", "udp_multicast", "-c",
                         GROUP, "--max-sim-s", "3.5", "--out", str(out_dir), "--no-plots"])
    out, err = _stop(run, timeout=90)
    assert run.returncode == 4, out + err  # truncated by --max-sim-s, not ended by the bus
    summary = json.loads((out_dir / "summary.json").read_text())
    answered = [v["message"] for v in summary["verdicts"] if v["passed"] and "positive at" in v["message"]]
    assert any(m.startswith("uds:vin:positive") for m in answered), summary["verdicts"]
    assert any(m.startswith("uds:unlock:positive") for m in answered), summary["verdicts"]
    c = summary["can"]["counters"]
    assert c["diag_frames"] >= 3 and c["not_for_bms"] == 0 and c["own_frames"] > 0, c


def test_a_bus_argument_the_backend_chokes_on_is_a_bus_that_could_not_be_opened(netns, tmp_path):
    """udp_multicast's constructor raises struct.error for a non-integer hop_limit (--bus-kwargs): the bus
    could not be opened (exit 3, the interface and the reason named), not a traceback with exit 1."""
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    proc = _popen(netns, ["-m", "hil.cli", "serve", "-i", "udp_multicast", "-c", GROUP, "--bus-kwargs",
                          "hop_limit=abc", "--duration", "1", "--log", str(tmp_path / "never.blf")])
    out, err = _stop(proc, timeout=60)
    assert proc.returncode == 3, out + err
    assert "cannot open the CAN bus on interface 'udp_multicast'" in err and "Traceback" not in err, err
    assert not (tmp_path / "never.blf").exists()
