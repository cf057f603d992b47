"""The emulator and separate processes on real python-can interfaces.

- udp_multicast inside a loopback-only network namespace the test creates and removes: ``bms-emu serve``
  (wall clock), python-can's own ``can.logger`` and ``can.player`` (a recorded VCU) as three processes.
- SocketCAN on a ``vcan`` interface, where the kernel has CAN.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
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
