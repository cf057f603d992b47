"""Faults in the diagnostic layer: what a marginal gateway, a bad transceiver or a slow ECU does to a session.

Transport faults act on the ISO-TP frames one side sends (``FaultyLink`` sits between a transport layer and
the bus): a consecutive frame dropped, two consecutive frames swapped, a wrong sequence number, a flow
control sent late. ``ResponsePending`` acts in the UDS server: it answers 0x78 (requestCorrectlyReceived-
ResponsePending) for ``duration_s`` before it serves the request, every ``interval_s``.

What the standard makes of them (ISO 15765-2, ISO 14229-2): the receiver of a message with a lost, swapped or
misnumbered consecutive frame aborts it (N_WRONG_SN, or N_Cr timeout for a lost last frame) and no request or
response is delivered, so the client's P2 timer expires; a flow control later than N_Bs makes the sender abort
(N_Bs timeout); a server that keeps answering 0x78 holds the client on P2* until the client's own overall
limit, and one whose 0x78s come further apart than P2* lets the client's P2* expire.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["DropConsecutiveFrame", "ReorderConsecutiveFrames", "WrongSequenceNumber", "LateFlowControl",
           "ResponsePending", "TransportFault", "FaultyLink", "transport_fault"]

_SF, _FF, _CF, _FC = 0, 1, 2, 3


def _check_index(index) -> int:
    if not (isinstance(index, int) and not isinstance(index, bool) and index >= 1):
        raise InputError("index", "the consecutive frame's number in its message, an integer >= 1", index)
    return index


@dataclass(frozen=True)
class DropConsecutiveFrame:
    """The ``index``-th consecutive frame (1-based) of every multi-frame message is not sent."""
    index: int = 1

    def __post_init__(self):
        _check_index(self.index)


@dataclass(frozen=True)
class ReorderConsecutiveFrames:
    """Consecutive frames ``index`` and ``index + 1`` go out swapped."""
    index: int = 1

    def __post_init__(self):
        _check_index(self.index)


@dataclass(frozen=True)
class WrongSequenceNumber:
    """The ``index``-th consecutive frame carries the sequence number after the right one."""
    index: int = 1

    def __post_init__(self):
        _check_index(self.index)


@dataclass(frozen=True)
class LateFlowControl:
    """Every flow-control frame goes out ``delay_s`` late (beyond N_Bs = 1 s the sender gives up)."""
    delay_s: float = 1.5

    def __post_init__(self):
        if not (isinstance(self.delay_s, (int, float)) and math.isfinite(self.delay_s) and self.delay_s > 0):
            raise InputError("delay_s", "a finite delay > 0 s", self.delay_s)


@dataclass(frozen=True)
class ResponsePending:
    """The server answers 0x78 for ``duration_s`` (inf: for ever) before serving a request, one 0x78 every
    ``interval_s`` (None: half the P2* it announced); ``service``: only this service ID (None: any)."""
    duration_s: float = math.inf
    interval_s: float | None = None
    service: int | None = None

    def __post_init__(self):
        if not (isinstance(self.duration_s, (int, float)) and self.duration_s > 0):
            raise InputError("duration_s", "a time > 0 s (inf: for ever)", self.duration_s)
        if self.interval_s is not None and not (isinstance(self.interval_s, (int, float))
                                                and math.isfinite(self.interval_s) and self.interval_s > 0):
            raise InputError("interval_s", "None or a finite time > 0 s", self.interval_s)
        if self.service is not None and not (isinstance(self.service, int) and 0 <= self.service <= 0xFF):
            raise InputError("service", "None or a service ID 0..0xFF", self.service)


TransportFault = DropConsecutiveFrame | ReorderConsecutiveFrames | WrongSequenceNumber | LateFlowControl
_TRANSPORT_FAULTS = {"drop_cf": DropConsecutiveFrame, "reorder_cf": ReorderConsecutiveFrames,
                     "wrong_sn": WrongSequenceNumber, "late_fc": LateFlowControl}


def transport_fault(name: str, **options) -> TransportFault:
    """A transport fault by its scenario name: drop_cf, reorder_cf, wrong_sn (``index``), late_fc (``delay_s``)."""
    cls = _TRANSPORT_FAULTS.get(name)
    if cls is None:
        raise InputError("fault", f"one of {', '.join(_TRANSPORT_FAULTS)}", name)
    return cls(**options)  # type: ignore[return-value]


class FaultyLink:
    """The frames a transport layer sends, through the active faults, to ``send``.

    ``inject(fault)`` / ``remove(fault)`` / ``clear()``; ``release()`` (once per tick) sends the flow-control
    frames whose delay has passed. ``applied`` lists ``(t_ns, fault, frame kind)`` of every frame a fault
    touched, for logs and reports.
    """

    def __init__(self, send: Callable, now_ns: Callable[[], int]):
        self._send, self._now_ns = send, now_ns
        self.faults: list = []
        self.applied: list[tuple[int, str, str]] = []
        self._cf_number = 0
        self._held = None              # a consecutive frame held back to go out after the next one
        self._held_ns = 0
        self._late: list = []          # (due_ns, frame) of delayed flow controls

    def inject(self, fault: TransportFault) -> None:
        if type(fault) not in _TRANSPORT_FAULTS.values():
            raise InputError("fault", "DropConsecutiveFrame, ReorderConsecutiveFrames, WrongSequenceNumber or "
                             "LateFlowControl", fault)
        self.faults.append(fault)

    def remove(self, fault: TransportFault) -> None:
        if fault in self.faults:
            self.faults.remove(fault)
        if not any(isinstance(f, ReorderConsecutiveFrames) for f in self.faults):
            self._flush_held()

    def clear(self) -> None:
        self.faults.clear()
        self._flush_held()

    def __call__(self, frame) -> None:
        data = frame.data
        kind = data[0] >> 4 if len(data) else _SF
        if not self.faults:
            if self._held is not None:
                self._flush_held()
            self._send(frame)
            return
        if kind == _FF:
            self._flush_held()
            self._cf_number = 0
        elif kind == _FC:
            late = next((f for f in self.faults if isinstance(f, LateFlowControl)), None)
            if late is not None:
                self._note(late, "FC")
                self._late.append((self._now_ns() + int(round(late.delay_s * 1e9)), frame))
                return
        elif kind == _CF:
            self._cf_number += 1
            n = self._cf_number
            for fault in self.faults:
                if isinstance(fault, DropConsecutiveFrame) and fault.index == n:
                    self._note(fault, f"CF {n}")
                    return
                if isinstance(fault, WrongSequenceNumber) and fault.index == n:
                    self._note(fault, f"CF {n}")
                    data = bytearray(data)
                    data[0] = 0x20 | ((data[0] + 1) & 0x0F)
                    frame.data = data
                if isinstance(fault, ReorderConsecutiveFrames) and fault.index == n:
                    self._note(fault, f"CF {n}")
                    self._held, self._held_ns = frame, self._now_ns()
                    return
            self._send(frame)
            self._flush_held()
            return
        self._send(frame)

    def release(self) -> None:
        """Send what is due: delayed flow controls, and a held frame nothing came after (by a later tick)."""
        if not self._late and self._held is None:
            return
        now = self._now_ns()
        if self._late:
            due = [f for t, f in self._late if t <= now]
            if due:
                self._late = [(t, f) for t, f in self._late if t > now]
                for frame in due:
                    self._send(frame)
        if self._held is not None and now > self._held_ns:
            self._flush_held()

    def _flush_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._send(held)

    def _note(self, fault, what: str) -> None:
        self.applied.append((self._now_ns(), type(fault).__name__, what))
        if len(self.applied) > 1000:
            del self.applied[:100]
