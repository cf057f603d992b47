"""A DBC-driven tester on a bench's channel, in the bench's virtual time.

It sends messages by name with signal values by name (alive counter and CRC filled in for E2E messages, unless
the test sets them), keeps periodic messages going at their DBC cycle time on simulated deadlines, and expects
a message or a signal value within simulated milliseconds by stepping the bench. Nothing here reads the wall
clock: a tester in lockstep is as deterministic as the bench (cantools' ``Tester`` waits on the wall clock).
"""
from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import can

from bms.can import Codec
from bms.can.node import Frame

from .bench import Bench, BenchError

__all__ = ["Tester", "Periodic", "ExpectationFailed"]


class ExpectationFailed(AssertionError):
    """An expected message or signal value did not come in time (the message lists what did)."""


class Periodic:
    """A message the tester sends every ``period_s`` of simulated time until ``stop()``; ``update`` changes its
    signal values from the next frame on."""

    def __init__(self, tester: Tester, message: str, signals: dict, period_s: float, next_s: float):
        self.tester, self.message, self.signals = tester, message, dict(signals)
        self.period_s, self.next_s = period_s, next_s
        self.stopped = False

    def update(self, **signals) -> None:
        self.signals.update(signals)

    def stop(self) -> None:
        self.stopped = True


class Tester:
    __test__ = False  # not a test class for pytest, whatever the module that imports it
    """The tester on ``bench``'s channel. ``dbc``: the messages it speaks (default: the emulator's DBC; a BMS
    firmware team gives its own, e.g. ``examples/firmware/example_bms.dbc``). ``history``: frames kept.

    On a matrix bench (``Bench(matrix=...)``) and without ``dbc``, it still speaks the built-in DBC's names: what it
    sends goes out as the matrix's frames and what it receives is read back as built-in messages, through the
    map's own translation (``bms.can.matrix.VcuGateway``, as the VCU model), so a test runs unchanged on a
    vehicle matrix. A name the map does not carry raises ``BenchError`` naming it and the map file."""

    def __init__(self, bench: Bench, dbc: str | Path | None = None, *, history: int = 256):
        self.bench = bench
        self.codec = Codec(path=dbc) if dbc is not None else bench.can.codec
        self.matrix = getattr(bench.can, "matrix", None) if dbc is None else None
        self._gateway = None
        if self.matrix is not None:
            from bms.can.matrix import VcuGateway
            self._gateway = VcuGateway(None, self.matrix, self.codec, messages=None)
        self.bus = can.Bus(interface="virtual", channel=bench.channel, preserve_timestamps=True,
                           receive_own_messages=False)
        self.received: deque = deque(maxlen=history)   # (t_s, frame)
        self._counters: dict[str, int] = {}
        self._periodic: list[Periodic] = []
        self._seq = 0     # frames received so far (expect() looks at the ones after its start)
        self.closed = False
        bench.tick_hooks.append(self)

    # --- per tick (the bench calls it after every tick) ---------------------------------------------------
    def __call__(self, bench: Bench) -> None:
        t_s = bench.t_s
        recv = self.bus.recv
        while True:
            frame = recv(0)
            if frame is None:
                break
            bench.last_frames.append((t_s, frame))
            for seen in self._gateway.builtin_frames(frame) if self._gateway is not None else (frame,):
                self.received.append((t_s, seen))
                self._seq += 1
        for p in self._periodic:
            if not p.stopped and t_s >= p.next_s - 1e-9:
                p.next_s += p.period_s
                self.send(p.message, p.signals)
        self._periodic = [p for p in self._periodic if not p.stopped]

    # --- sending -----------------------------------------------------------------------------------------
    def encode(self, message: str, signals: dict | None = None) -> bytes:
        """The payload of ``message`` with ``signals`` (missing ones 0); an E2E message gets the next alive
        counter and its CRC unless ``signals`` gives them. A value outside the DBC's range goes out as given where
        the signal's bits hold it (a bad value the receiver must refuse, as a scenario's ``[[frame]]``); one they
        cannot hold raises ``BenchError``."""
        from hil.frames import _is_float, _put_raw, field_overflow
        codec = self.codec[message]
        values = dict(signals or {})
        unknown = set(values) - {s.name for s in codec.dbc_message.signals}
        if unknown:
            raise BenchError(f"{message}: no signal(s) {', '.join(sorted(unknown))} in {self.codec.path}; it has "
                             f"{', '.join(s.name for s in codec.dbc_message.signals)}")
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v) and not _is_float(codec, k)}
        for name, value in numbers.items():
            why = field_overflow(codec, name, value)
            if why is not None:
                raise BenchError(f"{message}.{name}: {why}")
        if codec.e2e is not None and codec.e2e.counter_signal not in values:
            counter = self._counters.get(message, 0)
            self._counters[message] = (counter + 1) % (1 << codec.e2e.counter_bits)
            values[codec.e2e.counter_signal] = counter
        data = codec.encode(values)   # saturated into the DBC's ranges: the values as given go in below
        outside = {k: v for k, v in numbers.items()
                   if not codec.signals[k].minimum - 1e-9 <= v <= codec.signals[k].maximum + 1e-9}
        if not outside:
            return data
        raw = bytearray(data)
        for name, value in outside.items():
            _put_raw(codec.signals[name], raw, value)
        if codec.e2e is not None:   # the CRC over the bytes as sent
            return codec.protect(bytes(raw), values[codec.e2e.counter_signal])
        return bytes(raw)

    def send(self, message: str, signals: dict | None = None, **kw_signals) -> Frame:
        """Send ``message`` now (at the bench's simulated time); signals by name, as a dict or keywords."""
        codec = self.codec[message]
        values = {**(signals or {}), **kw_signals}
        data = self.encode(message, values)  # the built-in DBC's names first: an unknown one is named as such
        if self._gateway is not None:
            self._check_mapped(message, values, self._gateway.mapped_out, "[receive]")
        frame = Frame.build(codec.frame_id, data, is_extended_id=codec.is_extended_id, is_fd=codec.is_fd,
                            timestamp=self.bench.t_s)
        if self._gateway is None:
            self.bus.send(frame)
            return frame
        for out in self._gateway.matrix_frames(frame):  # the matrix's messages, their own counters and E2E
            out.timestamp = self.bench.t_s
            self.bus.send(out)
        return frame

    def _check_mapped(self, message: str, signals: dict, mapped: dict, table: str) -> None:
        """On a matrix bench: ``message`` and each of ``signals`` must be carried by the map (the built-in DBC's
        own alive counter and CRC excepted: the matrix has its own)."""
        source = getattr(self.matrix, "source", "?")
        e2e = self.codec[message].e2e
        own = {e2e.counter_signal, e2e.crc_signal} if e2e is not None else set()
        carried = mapped.get(message)
        if carried is None:
            raise BenchError(f"{message}: not mapped by the matrix map {source} (no {table} entry "
                             f"for it); mapped: {', '.join(sorted(mapped)) or 'none'}")
        missing = sorted(set(signals) - carried - own)
        if missing:
            raise BenchError(f"{message}: signal(s) {', '.join(missing)} not mapped by the matrix map "
                             f"{source} ({table}); mapped: {', '.join(sorted(carried))}")

    def send_frame(self, frame: can.Message) -> None:
        """Send a frame as it is (a malformed one, a drawn one)."""
        frame.timestamp = self.bench.t_s
        self.bus.send(frame)

    def start_periodic(self, message: str, signals: dict | None = None, *, period_ms: float | None = None) -> Periodic:
        """Send ``message`` now and then every ``period_ms`` (default: its DBC cycle time) of simulated time."""
        codec = self.codec[message]
        period_s = period_ms / 1e3 if period_ms is not None else codec.cycle_time_s
        if not period_s or period_s <= 0 or not math.isfinite(period_s):
            raise BenchError(f"{message}: no cycle time in {self.codec.path}; give period_ms")
        p = Periodic(self, message, signals or {}, period_s, self.bench.t_s)
        self._periodic.append(p)
        return p

    # --- expecting ---------------------------------------------------------------------------------------
    def decode(self, frame: can.Message) -> tuple[str, dict] | None:
        codec = self.codec.by_id(frame.arbitration_id, frame.is_extended_id)
        if codec is None or len(frame.data) != codec.length:
            return None
        try:
            return codec.name, codec.decode(bytes(frame.data))
        except Exception:  # noqa: BLE001 - a frame that does not decode is not the one expected
            return None

    def expect(self, message: str, signals: dict | None = None, *, within_ms: float, tolerance: float = 1e-6,
               **kw_signals) -> dict:
        """Step the bench until a frame of ``message`` arrives whose signals equal ``signals`` (numbers within
        ``tolerance``, or a callable that returns True), within ``within_ms`` of simulated time; returns its
        decoded signals. Raises ``ExpectationFailed`` listing the last frames of that message."""
        self.codec[message]  # an unknown name fails here, not after waiting
        wanted = {**(signals or {}), **kw_signals}
        if self._gateway is not None:
            self._check_mapped(message, wanted, self._gateway.mapped_in, "[publish]")
        start_seq, start_t = self._seq, self.bench.t_s
        found: list[dict] = []
        seen: list[dict] = []

        last_seq = [start_seq]

        def arrived(_bench) -> bool:
            n_new = self._seq - last_seq[0]
            last_seq[0] = self._seq
            for _, frame in list(self.received)[-n_new:] if n_new else []:
                decoded = self.decode(frame)
                if decoded is None or decoded[0] != message:
                    continue
                values = decoded[1]
                seen.append(values)
                if all(_matches(values.get(k), v, tolerance) for k, v in wanted.items()):
                    found.append(values)
                    return True
            return False
        try:
            self.bench.run_until(arrived, within_ms / 1e3)
        except BenchError:
            last = seen[-1] if seen else None
            shown = {k: last.get(k) for k in wanted} if last and wanted else last
            raise ExpectationFailed(
                f"{message}{' with ' + _show(wanted) if wanted else ''} did not arrive within {within_ms:g} ms of "
                f"simulated time (from t = {start_t:.3f} s); {len(seen)} frame(s) of {message} came"
                + (f", the last with {shown}" if seen else "")) from None
        return found[0]

    def expect_signal(self, message: str, signal: str, *, within_ms: float, min_value: float = -math.inf,
                      max_value: float = math.inf) -> float:
        """The first value of ``signal`` within [min_value, max_value] in ``message`` within ``within_ms``."""
        def inside(v) -> bool:
            return isinstance(v, (int, float)) and min_value <= v <= max_value
        return float(self.expect(message, {signal: inside}, within_ms=within_ms)[signal])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self in self.bench.tick_hooks:
            self.bench.tick_hooks.remove(self)
        self.bus.shutdown()


def _matches(value, wanted, tolerance: float) -> bool:
    if callable(wanted):
        return bool(wanted(value))
    if isinstance(wanted, str):
        return str(value) == wanted
    try:
        return abs(float(value) - float(wanted)) <= tolerance
    except (TypeError, ValueError):
        return False


def _show(values: dict) -> str:
    return ", ".join(f"{k}={getattr(v, '__name__', v)}" for k, v in values.items())
