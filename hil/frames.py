"""CAN frames a scenario injects at given times (``[[frame]]``): a message of the run's DBC by its signal names,
with its alive counter and CRC right or deliberately wrong.

``e2e = "valid"`` takes the alive counter after the last frame of that message seen on the bus (the next one a
sender between the VCU's own frames would use), ``"wrong_counter"`` jumps it by 5, ``"wrong_crc"`` spoils the CRC.
The testing kit's state machine sends its commands the same way (``injected_frame``), so its exported
counterexample replays them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import can

from bms.can.codec import MessageCodec, SignalSpec
from bms.can.node import Frame

__all__ = ["E2E_CHOICES", "FrameInjection", "FrameInjector", "frames_refused", "injected_frame"]

E2E_CHOICES = ("valid", "wrong_counter", "wrong_crc")


@dataclass(frozen=True)
class FrameInjection:
    at_s: float
    message: str
    signals: dict
    e2e: str = "valid"
    name: str = ""
    line: int | None = None


def frames_refused(mode: str, can_options: dict) -> str | None:
    """Why a run with these options cannot send ``[[frame]]`` injections (None: it can)."""
    from .can_loop import _OWN_HANDLE
    if mode == "headless":
        return "[[frame]] injections need the BMS on a bus: run in lockstep or paced mode (--mode lockstep)"
    if can_options.get("matrix") is not None:
        return ("[[frame]] injections speak the built-in DBC; a run on a vehicle CAN matrix (--matrix) cannot send "
                "them")
    interface = can_options.get("interface", "virtual")
    if interface not in _OWN_HANDLE:
        return (f"[[frame]] injections need a second handle on the bus, which interface {interface!r} does not "
                f"give (they work on {', '.join(_OWN_HANDLE)})")
    return None


def injected_frame(codec: MessageCodec, signals: dict, e2e: str, last: can.Message | None,
                   timestamp: float = 0.0) -> Frame:
    """The frame of ``codec`` with ``signals``; for an E2E message its counter follows ``last`` (the last frame
    of the message on the bus, None: counter 0), as ``e2e`` says."""
    values = dict(signals)
    spec = codec.e2e
    if spec is not None:
        counter = int(codec.decode(bytes(last.data))[spec.counter_signal]) if last is not None else -1
        step = 5 if e2e == "wrong_counter" else 1
        values[spec.counter_signal] = (counter + step) % (1 << spec.counter_bits)
    data = bytearray(codec.encode(values))  # saturated into the DBC's ranges: the asked raw values go in below
    for name, value in signals.items():
        if not _is_float(codec, name) and field_overflow(codec, name, value) is None:
            _put_raw(codec.signals[name], data, value)
    if spec is not None:  # the CRC over the bytes as sent
        data = bytearray(codec.protect(bytes(data), values[spec.counter_signal]))
    if spec is not None and e2e == "wrong_crc":
        data[spec.crc_byte] ^= 0x5A
    return Frame.build(codec.frame_id, bytes(data), is_extended_id=codec.is_extended_id, is_fd=codec.is_fd,
                       timestamp=timestamp)


def _is_float(codec: MessageCodec, name: str) -> bool:
    return bool(codec.dbc_message.get_signal_by_name(name).is_float)


def _raw(spec: SignalSpec, value: float) -> int:
    return round((value - spec.offset) / spec.scale)


def field_overflow(codec: MessageCodec, name: str, value: float) -> str | None:
    """Why ``value`` cannot be sent in signal ``name``'s bits (None: it can, perhaps outside the DBC's range;
    a float signal takes any value)."""
    if _is_float(codec, name):
        return None
    spec = codec.signals[name]
    lo, hi = (-(1 << (spec.length - 1)), (1 << (spec.length - 1)) - 1) if spec.signed else (0, (1 << spec.length) - 1)
    if lo <= _raw(spec, value) <= hi:
        return None
    ends = sorted((lo * spec.scale + spec.offset, hi * spec.scale + spec.offset))
    return (f"{value:g} does not fit the signal's {spec.length} bits ({'signed' if spec.signed else 'unsigned'}, "
            f"scale {spec.scale:g}, offset {spec.offset:g}): {ends[0]:g} … {ends[1]:g} can be sent; the DBC's range "
            f"is {spec.minimum:g} … {spec.maximum:g}")


def _put_raw(spec: SignalSpec, data: bytearray, value: float) -> None:
    """The signal's bits in ``data`` set to ``value`` rounded to its raw step (two's complement if signed)."""
    order: Literal["big", "little"] = "big" if spec.big_endian else "little"
    mask = ((1 << spec.length) - 1) << spec.shift
    word = int.from_bytes(data, order) & ~mask | (_raw(spec, value) << spec.shift) & mask
    data[:] = word.to_bytes(len(data), order)


class FrameInjector:
    """Sends a scenario's ``[[frame]]`` entries on ``bus`` (a handle of its own, filtered to the injected
    messages, that does not hear its own frames) when their time comes; what it hears tells it the last frame
    of each message on the bus."""

    def __init__(self, injections, codec, bus: can.BusABC):
        self.pending = sorted(injections, key=lambda f: f.at_s)
        self.codec, self.bus = codec, bus
        self.last: dict[tuple[int, bool], can.Message] = {}

    def due(self, t_s: float) -> list[tuple[float, str, str]]:
        """Send what is due at ``t_s``; returns the events ("frame:NAME", payload in hex)."""
        while True:  # the bus up to now: the last frame of each injected message
            msg = self.bus.recv(0)
            if msg is None:
                break
            self.last[(msg.arbitration_id, msg.is_extended_id)] = msg
        events = []
        while self.pending and self.pending[0].at_s <= t_s + 1e-9:
            entry = self.pending.pop(0)
            codec = self.codec[entry.message]
            frame = injected_frame(codec, entry.signals, entry.e2e,
                                   self.last.get((codec.frame_id, codec.is_extended_id)), timestamp=t_s)
            self.bus.send(frame)
            events.append((t_s, f"frame:{entry.name}", bytes(frame.data).hex(" ")))
        if not self.pending:  # nothing left to send: stop hearing the bus (its copies would pile up unread)
            self.bus.shutdown()
        return events

    def close(self) -> None:
        self.bus.shutdown()
