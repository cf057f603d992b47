"""Shared helpers of the CAN tests (imported by tests/test_can*.py; not a test module itself)."""
from __future__ import annotations

import threading
import time

import can
import pytest
from can.interfaces import virtual

from bms.can import Codec

_CODEC = None


def codec() -> Codec:
    global _CODEC
    if _CODEC is None:
        _CODEC = Codec()
    return _CODEC


@pytest.fixture(autouse=True)
def no_leaked_buses_or_threads():
    """Fail a test that leaves a virtual CAN channel open or a thread running (python-can's conftest idea)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    with virtual.channels_lock:
        leaked = sorted(map(str, virtual.channels))
        virtual.channels.clear()  # keep the next test clean whatever happened here
    assert not leaked, f"virtual CAN channels left open: {leaked}"
    assert not extra, f"threads left running: {[t.name for t in extra]}"


class Peer:
    """A test node on the bus: sends DBC messages with their counters and CRCs, collects the BMS's frames."""

    def __init__(self, bus: can.BusABC, t_s=lambda: 0.0):
        self.bus = bus
        self.codec = codec()
        self.counters: dict[str, int] = {}
        self.t_s = t_s
        self.received: list[can.Message] = []

    def send(self, name: str, values: dict | None = None, *, counter: int | None = None, crc: int | None = None):
        message = self.codec[name]
        values = dict(values or {})
        if message.e2e is not None:
            if counter is None:
                counter = self.counters.get(name, 0)
                self.counters[name] = (counter + 1) % 16
            values[message.e2e.counter_signal] = counter
            if crc is not None:
                values[message.e2e.crc_signal] = crc
        data = message.encode(values)
        msg = can.Message(arbitration_id=message.frame_id, data=data, is_extended_id=False, is_rx=False,
                          timestamp=self.t_s())
        self.bus.send(msg)
        return msg

    def drain(self) -> list[can.Message]:
        out = []
        while True:
            msg = self.bus.recv(0)
            if msg is None:
                break
            out.append(msg)
        self.received += out
        return out

    def latest(self, name: str, frames=None) -> dict | None:
        """The last decoded frame of ``name`` among ``frames`` (default: everything received)."""
        message = self.codec[name]
        for msg in reversed(frames if frames is not None else self.received):
            if msg.arbitration_id == message.frame_id:
                return message.decode(msg.data)
        return None
