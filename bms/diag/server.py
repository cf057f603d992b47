"""The BMS's UDS server (ISO 14229-1) on ISO-TP (ISO 15765-2), stepped by the CAN node once per tick.

Requests are parsed with ``udsoncan.Request.from_payload`` and answered with ``udsoncan.Response`` objects;
every request passes the checks of ISO 14229-1's general server response behaviour in the standard's order,
and the first that fails gives the negative response code:

1. service supported at all                       0x11 serviceNotSupported
2. service supported in the active session        0x7F serviceNotSupportedInActiveSession
3. sub-function services: a sub-function byte     0x13 incorrectMessageLengthOrInvalidFormat
4. sub-function supported                         0x12 subFunctionNotSupported
5. sub-function supported in the active session   0x7E subFunctionNotSupportedInActiveSession
6. the service's own checks, in its order: length 0x13, identifiers and values 0x31, security 0x33,
   sequence 0x24, conditions 0x22, keys 0x35/0x36/0x37, busy 0x21

Functional requests (0x7DF) get no 0x11, 0x12, 0x31, 0x7E or 0x7F answer; a set suppressPosRspMsgIndication
bit suppresses the positive answer unless a 0x78 went out first. A request that takes longer than P2 (the
contactor and precharge tests, or a ``ResponsePending`` fault) is answered 0x78 at once and every
``pending_interval`` until its final answer; requests meanwhile get 0x21 busyRepeatRequest.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import isotp
from udsoncan import Request, Response, services
from udsoncan.BaseService import BaseService

from ..errors import BmsError
from ..faults import Event, FaultLevel, Protection
from .config import DiagConfig
from .dids import SESSIONS, DidTable, load_did_table
from .dtc import DTC_DEFINITIONS, EXTENDED_DATA_RECORDS, STATUS_AVAILABILITY, DtcMemory, dtc_display
from .faults import FaultyLink, ResponsePending
from .reset import restart_bms
from .routines import COMPLETED, ROUTINES, RUNNING, Nrc, RoutineRun, check_conditions
from .security import SecurityAccess
from .transport import ClockedTransport, to_isotp

__all__ = ["UdsServer", "DiagCounters", "DiagError", "DidContext"]

DEFAULT, PROGRAMMING, EXTENDED = 0x01, 0x02, 0x03
_ALL = frozenset({DEFAULT, EXTENDED})
_EXT = frozenset({EXTENDED})
_C = Response.Code
_FUNCTIONAL_SILENT = {_C.ServiceNotSupported, _C.SubFunctionNotSupported, _C.RequestOutOfRange,
                      _C.SubFunctionNotSupportedInActiveSession, _C.ServiceNotSupportedInActiveSession}
_MAX_RESPONSE = 4095
from .._layout import CONTACTOR_NAMES as _CONTACTORS  # noqa: E402


class DiagError(BmsError):
    """The diagnostic server cannot be set up (table, memory file, addressing)."""


@dataclass
class _Service:
    cls: type
    sessions: frozenset
    subfunctions: dict | None = None     # sub-function -> sessions


def _service_table(config: DiagConfig) -> dict[int, _Service]:
    levels = {}
    for level in config.security.levels:
        levels[level] = levels[level + 1] = _EXT
    return {
        0x10: _Service(services.DiagnosticSessionControl, _ALL, {DEFAULT: _ALL, EXTENDED: _ALL}),
        0x11: _Service(services.ECUReset, _ALL, {0x01: _ALL, 0x02: _ALL, 0x03: _EXT}),
        0x14: _Service(services.ClearDiagnosticInformation, _ALL),
        0x19: _Service(services.ReadDTCInformation, _ALL, dict.fromkeys((0x01, 0x02, 0x04, 0x06, 0x0A), _ALL)),
        0x22: _Service(services.ReadDataByIdentifier, _ALL),
        0x27: _Service(services.SecurityAccess, _EXT, levels),
        0x28: _Service(services.CommunicationControl, _EXT, dict.fromkeys((0x00, 0x01, 0x02, 0x03), _EXT)),
        0x2E: _Service(services.WriteDataByIdentifier, _EXT),
        0x31: _Service(services.RoutineControl, _EXT, dict.fromkeys((0x01, 0x02, 0x03), _EXT)),
        0x3E: _Service(services.TesterPresent, _ALL, {0x00: _ALL}),
        0x85: _Service(services.ControlDTCSetting, _EXT, {0x01: _EXT, 0x02: _EXT}),
    }


@dataclass
class DiagCounters:
    """Counters the BMS keeps in its non-volatile memory."""
    closings: dict = field(default_factory=lambda: dict.fromkeys(_CONTACTORS, 0))
    opened_under_load: int = 0
    insulation_tests: int = 0
    insulation_below_threshold: int = 0


class DidContext:
    """What a DID's source reads: the server, the emulator, a snapshot being written."""

    def __init__(self, server: UdsServer):
        self.server, self.emulator = server, server.emulator
        from .. import __version__
        self.version = __version__
        self.snapshot: dict = {}

    def soh_percent(self) -> float:
        est = self.emulator.estimator
        capacity = getattr(est, "capacity_Ah_estimate", None)
        if capacity is None or not len(capacity):
            return math.nan
        return 100.0 * float(min(capacity)) / self.emulator.pack.params.capacity_Ah


@dataclass
class _Pending:
    """A request answered 0x78 until ``finish()`` returns its final answer."""
    request: Request
    sid: int
    spr: bool
    finish: Callable[[float], bytes | None]
    hold_until_s: float
    next_pending_s: float
    interval_s: float
    sent_pending: bool = False


class UdsServer:
    """The BMS's UDS server. The CAN node calls ``on_frame`` for every frame on a diagnostic identifier and
    ``step(t_ns)`` once per tick; ``attach(now_ns, send)`` gives it the node's clock and transmit path.

    ``faults`` injects transport faults into what the server sends (``bms.diag.faults``);
    ``response_pending`` (a ``ResponsePending`` or None) delays answers with 0x78. ``events`` lists
    ``(t_s, name, detail)``: session changes, resets, DTC status changes, operation cycles.
    """

    def __init__(self, emulator, config: DiagConfig | None = None, *, dids: DidTable | None = None):
        self.emulator = emulator
        self.config = c = config or DiagConfig()
        params = emulator.pack.params
        try:
            self.dids = dids or load_did_table(c.did_table, n_series=params.n_series,
                                               n_temperatures=len(emulator.sensors.temperature_C))
        except BmsError:
            raise
        self._services = _service_table(c)
        self.memory = DtcMemory(confirmation_cycles=c.confirmation_cycles, ageing_cycles=c.ageing_cycles,
                                confirm_immediately_at=FaultLevel[c.confirm_immediately_at],
                                pass_after_s=c.pass_after_s)
        self.memory.snapshot = self._snapshot
        self.memory.on_change = self._dtc_changed
        self.counters = DiagCounters()
        self.nvm: dict = {"dids": self.dids.nvm_defaults(), "security": {}}
        self._load_memory()
        self.security = SecurityAccess(c.security, self.nvm["security"])
        self.insulation_resistance_kohm = float(c.insulation_resistance_kohm)
        self._ctx = DidContext(self)
        self.session = DEFAULT
        self.normal_rx = self.normal_tx = True       # CommunicationControl
        self.response_pending: ResponsePending | None = None
        self.events: list[tuple[float, str, str]] = []
        self.events_dropped = 0
        self.memory_error: str | None = None
        self.requests = self.responses = self.negative_responses = 0
        self.t_s = 0.0
        self.power_on_s = 0.0
        self._t_ns = 0
        self._now_ns: Callable[[], int] = lambda: self._t_ns
        self._send: Callable | None = None
        self._phys: ClockedTransport | None = None
        self._func: ClockedTransport | None = None
        self.faults: FaultyLink | None = None
        self._pending: _Pending | None = None
        self._routines: dict[int, RoutineRun] = {}
        self._s3_deadline: float | None = None
        self._reset_at: tuple[int, str] | None = None
        self._last_state = None
        self._powered = False
        self._next_dtc_s = 0.0
        self._last_flags: tuple | None = None
        self._commands = [0, 0, 0]
        self._flush_at = 0.0

    # --- wiring ----------------------------------------------------------------------------------------
    def ids(self) -> dict[tuple[int, bool], bool]:
        """``{(CAN id, extended): functional}`` of the frames this server takes."""
        c = self.config
        out = {(c.physical_id, c.extended_id): False}
        if c.functional_id is not None:
            out[(c.functional_id, c.extended_id)] = True
        return out

    def attach(self, now_ns: Callable[[], int], send: Callable[[int, bytes, bool], None]) -> None:
        """Give the server a clock (run time in ns) and a transmit function ``send(id, data, extended)``."""
        c = self.config
        self._now_ns, self._send = now_ns, send
        mode = isotp.AddressingMode.Normal_29bits if c.extended_id else isotp.AddressingMode.Normal_11bits

        def tx(frame: isotp.CanMessage) -> None:
            send(frame.arbitration_id, bytes(frame.data), frame.is_extended_id)
        self.faults = FaultyLink(tx, now_ns)
        self._phys = ClockedTransport(isotp.Address(mode, txid=c.response_id, rxid=c.physical_id), now_ns,
                                      self.faults, c.isotp)
        if c.functional_id is not None:
            self._func = ClockedTransport(isotp.Address(mode, txid=c.response_id, rxid=c.functional_id), now_ns,
                                          self.faults, {**c.isotp, "listen_mode": True})

    @property
    def transport_errors(self) -> list[tuple[int, str, str]]:
        """What the server's ISO-TP layer reported (N_Cr/N_Bs timeouts, wrong sequence numbers ...)."""
        return (self._phys.errors if self._phys else []) + (self._func.errors if self._func else [])

    def on_frame(self, msg, functional: bool) -> None:
        layer = self._func if functional else self._phys
        if layer is not None and len(msg.data):
            layer.feed(to_isotp(msg))

    # --- the tick -------------------------------------------------------------------------------------
    def step(self, t_ns: int) -> None:
        self._t_ns = t_ns
        self.t_s = t_s = t_ns / 1e9
        if not self._powered:
            self._power_on(t_s, "power on")
        phys, func = self._phys, self._func
        if phys is not None and self.faults is not None:
            self.faults.release()
            if func is not None:
                func.step()
                while func.has_message:
                    self._request(bytes(func.recv() or b""), True, t_s)
            phys.step()
            while phys.has_message:
                self._request(bytes(phys.recv() or b""), False, t_s)
        if self._pending is not None:
            self._run_pending(t_s)
        for run in self._routines.values():
            run.step(t_s)
        if self._s3_deadline is not None and t_s >= self._s3_deadline - 1e-9 and self._pending is None:
            self._to_session(DEFAULT, t_s, "S3 timeout")
        self._observe(t_s)
        if phys is not None:
            phys.step()
        if self._reset_at is not None and not (phys is not None and phys.transmitting()):
            self._reset(t_s)
        if self.memory.take_dirty() or self._dirty_nvm:
            self._dirty_nvm = True
            if t_s >= self._flush_at:
                self._write_memory()
                self._flush_at = t_s + 1.0

    _dirty_nvm = False

    def close(self) -> None:
        """Write the non-volatile memory (if a file is named); a failure is kept in ``memory_error``."""
        self._write_memory()

    def _write_memory(self) -> None:
        """``flush`` that never stops the BMS: a memory file that cannot be written (disk full, read-only)
        is reported in ``memory_error`` and an event, and the memory lives on in RAM."""
        try:
            self.flush()
        except DiagError as exc:
            if self.memory_error != str(exc):
                self.memory_error = str(exc)
                self._event(self.t_s, "diag:memory:error", str(exc))

    # --- requests --------------------------------------------------------------------------------------
    def _request(self, payload: bytes, functional: bool, t_s: float) -> None:
        if not payload:
            return
        self.requests += 1
        if self.session != DEFAULT:
            self._s3_deadline = t_s + self.config.s3_server_s
        request = Request.from_payload(payload)
        sid = payload[0]
        spr = bool(request.suppress_positive_response)
        if self._pending is not None:
            if not (sid == 0x3E and spr):
                self._answer(self._negative(sid, _C.BusyRepeatRequest), functional)
            return
        fault = self.response_pending
        if fault is not None and (fault.service is None or fault.service == sid):
            def serve_later(t: float, p: bytes = payload, f: bool = functional) -> bytes | None:
                return self._serve(p, f, t)
            self._pending = _Pending(request, sid, spr, serve_later, t_s + fault.duration_s, t_s,
                                     fault.interval_s or self.config.pending_interval)
            self._run_pending(t_s)
            return
        try:
            answer = self._serve(payload, functional, t_s)
        except _Deferred as deferred:
            self._pending = _Pending(request, sid, spr, deferred.finish, t_s, t_s, self.config.pending_interval)
            self._run_pending(t_s)
            return
        self._answer(answer, functional, request)

    def _run_pending(self, t_s: float) -> None:
        job = self._pending
        assert job is not None
        answer = None
        if t_s >= job.hold_until_s - 1e-9:
            try:
                answer = job.finish(t_s)
            except _Deferred as deferred:
                job.finish = deferred.finish
                job.hold_until_s = t_s
        if answer is not None:
            self._pending = None
            if job.sent_pending or not (job.spr and answer[0] != 0x7F):
                self._send_payload(answer)
            return
        if t_s >= job.next_pending_s - 1e-9:
            self._send_payload(self._negative(job.sid, _C.RequestCorrectlyReceived_ResponsePending))
            job.sent_pending = True
            job.next_pending_s = t_s + job.interval_s

    def _answer(self, answer: bytes | None, functional: bool, request: Request | None = None) -> None:
        if answer is None:
            return
        if answer[0] == 0x7F:
            if functional and answer[2] in _FUNCTIONAL_SILENT:
                return
        elif request is not None and request.suppress_positive_response:
            return
        self._send_payload(answer)

    def _send_payload(self, payload: bytes) -> None:
        if self._phys is None:
            return
        if payload[0] == 0x7F:
            if payload[2] != _C.RequestCorrectlyReceived_ResponsePending:
                self.negative_responses += 1
        else:
            self.responses += 1
        self._phys.send(payload)

    @staticmethod
    def _negative(sid: int, code: int) -> bytes:
        service = BaseService.from_request_id(sid)
        if service is None:
            return bytes((0x7F, sid, code))  # udsoncan has no class for an unknown SID: same three bytes
        return Response(service=service, code=code).get_payload()

    @staticmethod
    def _positive(service: type, data: bytes = b"") -> bytes:
        return Response(service=service, code=_C.PositiveResponse, data=bytes(data)).get_payload()

    def _serve(self, payload: bytes, functional: bool, t_s: float) -> bytes | None:
        """The answer to one request, after the checks in ISO 14229-1 order."""
        sid = payload[0]
        spec = self._services.get(sid)
        if spec is None:
            return self._negative(sid, _C.ServiceNotSupported)
        if self.session not in spec.sessions:
            return self._negative(sid, _C.ServiceNotSupportedInActiveSession)
        if spec.subfunctions is not None:
            if len(payload) < 2:
                return self._negative(sid, _C.IncorrectMessageLengthOrInvalidFormat)
            sub = payload[1] & 0x7F
            if sub not in spec.subfunctions:
                return self._negative(sid, _C.SubFunctionNotSupported)
            if self.session not in spec.subfunctions[sub]:
                return self._negative(sid, _C.SubFunctionNotSupportedInActiveSession)
        handler = getattr(self, f"_sid_{sid:02x}")
        try:
            return handler(payload, t_s, functional)
        except Nrc as nrc:
            return self._negative(sid, nrc.code)

    # --- 0x10 DiagnosticSessionControl ----------------------------------------------------------------
    def _sid_10(self, p: bytes, t_s: float, functional: bool) -> bytes:
        _length(p, 2)
        session = p[1] & 0x7F
        if session != self.session or session == DEFAULT:
            self._to_session(session, t_s, "requested")
        c = self.config
        data = bytes((session,)) + struct.pack(">HH", round(c.p2_server_s * 1000), round(c.p2_star_server_s * 100))
        return self._positive(services.DiagnosticSessionControl, data)

    def _to_session(self, session: int, t_s: float, why: str) -> None:
        old = self.session
        self.session = session
        if session != old:
            self.security.lock()
        if session == DEFAULT:
            self._s3_deadline = None
            self.normal_rx = self.normal_tx = True
            if not self.memory.setting_enabled:
                self.memory.setting_enabled = True
            for run in self._routines.values():
                if run.status == RUNNING:
                    run.abort("default session", t_s)
        else:
            self._s3_deadline = t_s + self.config.s3_server_s
        if session != old or why != "requested":
            name = {DEFAULT: "default", EXTENDED: "extended"}.get(session, f"0x{session:02X}")
            self._event(t_s, f"diag:session:{name}", why)

    # --- 0x11 ECUReset -----------------------------------------------------------------------------------
    def _sid_11(self, p: bytes, t_s: float, functional: bool) -> bytes:
        _length(p, 2)
        bms = self.emulator.bms
        if not bms.contactors_open:
            raise Nrc(_C.ConditionsNotCorrect, "contactors closed")
        kind = p[1] & 0x7F
        self._reset_at = (kind, {0x01: "hardReset", 0x02: "keyOffOnReset", 0x03: "softReset"}[kind])
        return self._positive(services.ECUReset, bytes((kind,)))

    def _reset(self, t_s: float) -> None:
        assert self._reset_at is not None
        kind, name = self._reset_at
        self._reset_at = None
        restart_bms(self.emulator, t_s, f"ECU reset ({name})")
        self._routines.clear()
        self._pending = None
        self.session = DEFAULT
        self._s3_deadline = None
        self.normal_rx = self.normal_tx = True
        self.memory.setting_enabled = True
        if self._phys is not None:
            self._phys.reset()
        self._power_on(t_s, f"ECU reset ({name})")

    def _power_on(self, t_s: float, why: str) -> None:
        self._powered = True
        self.power_on_s = t_s
        self.security.power_on(t_s)
        self.memory.power_on()
        self._last_state = None
        self._last_flags = None
        if self.config.operation_cycle == "power":
            self.start_operation_cycle(t_s, why, monitors_running=False)
        self._event(t_s, "diag:power_on", why)

    def start_operation_cycle(self, t_s: float | None = None, why: str = "started", *,
                              monitors_running: bool = True) -> None:
        """A new operation cycle (for the DTC status bits): at power-on, reset and wake-up in "power" mode,
        and whenever a test or scenario calls this (a key cycle, a new trip)."""
        t = self.t_s if t_s is None else t_s
        self.memory.start_operation_cycle(t, why, monitors_running=monitors_running)
        self._event(t, f"diag:operation_cycle:{self.memory.operation_cycle}", why)

    # --- 0x14 ClearDiagnosticInformation ---------------------------------------------------------------
    def _sid_14(self, p: bytes, t_s: float, functional: bool) -> bytes:
        if len(p) not in (4, 5):
            raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
        group = int.from_bytes(p[1:4], "big")
        if len(p) == 5 and p[4] != 0x00:
            raise Nrc(_C.RequestOutOfRange, "memory selection")
        if group == 0xFFFFFF:
            codes = None
        elif group in self.memory.records:
            codes = {group}
        else:
            raise Nrc(_C.RequestOutOfRange, "unknown group of DTC")
        held = self.memory.clear(t_s, codes)
        if codes is None:
            self.emulator.bms.clear_dtcs(t_s)   # and the BMS releases what it latched, if the cause is gone
        self._event(t_s, "diag:clear_dtc", f"group=0x{group:06X}, records={held}")
        return self._positive(services.ClearDiagnosticInformation)

    # --- 0x19 ReadDTCInformation -----------------------------------------------------------------------
    def _sid_19(self, p: bytes, t_s: float, functional: bool) -> bytes:
        sub = p[1] & 0x7F
        mem = self.memory
        head = bytes((sub,))
        if sub in (0x01, 0x02):
            _length(p, 3)
            matching = mem.matching(p[2])
            if sub == 0x01:
                data = head + bytes((STATUS_AVAILABILITY, 0x01)) + struct.pack(">H", len(matching))  # ISO14229-1 format
            else:
                data = head + bytes((STATUS_AVAILABILITY,)) + b"".join(_dtc_bytes(r.code, r.status) for r in matching)
        elif sub == 0x0A:
            _length(p, 2)
            data = head + bytes((STATUS_AVAILABILITY,)) + b"".join(
                _dtc_bytes(code, r.status) for code, r in sorted(mem.records.items()))
        else:
            _length(p, 6)
            code = int.from_bytes(p[2:5], "big")
            record_number = p[5]
            r = mem.records.get(code)
            if r is None:
                raise Nrc(_C.RequestOutOfRange, "unknown DTC")
            data = head + _dtc_bytes(code, r.status)
            if sub == 0x04:
                if record_number not in (0x01, 0x02, 0xFF):
                    raise Nrc(_C.RequestOutOfRange, "snapshot record number")
                numbers = sorted(r.snapshots) if record_number == 0xFF else [record_number]
                for n in numbers:
                    snap = r.snapshots.get(n)
                    if snap is None:
                        continue
                    dids = snap["dids"]
                    data += bytes((n, len(dids))) + b"".join(
                        struct.pack(">H", int(did)) + bytes.fromhex(value) for did, value in dids.items())
            else:
                if record_number not in EXTENDED_DATA_RECORDS and record_number not in (0xFE, 0xFF):
                    raise Nrc(_C.RequestOutOfRange, "extended data record number")
                numbers = sorted(EXTENDED_DATA_RECORDS) if record_number in (0xFE, 0xFF) else [record_number]
                for n in numbers:
                    data += bytes((n,)) + r.extended_data(n)
        return self._positive(services.ReadDTCInformation, data)

    # --- 0x22 ReadDataByIdentifier / 0x2E WriteDataByIdentifier ------------------------------------------
    def _sid_22(self, p: bytes, t_s: float, functional: bool) -> bytes:
        if len(p) < 3 or (len(p) - 1) % 2 or (len(p) - 1) // 2 > self.config.max_dids_per_request:
            raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
        out = b""
        for (did,) in struct.iter_unpack(">H", p[1:]):
            d = self.dids.dids.get(did)
            if d is None or self.session not in d.read_sessions:
                continue
            out += struct.pack(">H", did) + bytes(self.read_did(did))
        if not out:
            raise Nrc(_C.RequestOutOfRange, "no DID supported in this session")
        if len(out) + 1 > _MAX_RESPONSE:
            raise Nrc(_C.ResponseTooLong)
        return self._positive(services.ReadDataByIdentifier, out)

    def read_did(self, did: int) -> bytes:
        """The encoded value of ``did`` now."""
        d = self.dids[did]
        values = []
        for f in d.fields:
            if f.value is not None or f.source is None:
                values.append(f.value)
            elif f.source.startswith("nvm."):
                values.append(self.nvm["dids"].get(f.source[4:]))
            else:
                from .dids import SOURCES
                values.append(SOURCES[f.source](self._ctx))
        return d.codec.encode(values[0]) if len(values) == 1 else d.codec.encode(values)

    def _sid_2e(self, p: bytes, t_s: float, functional: bool) -> bytes:
        if len(p) < 4:
            raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
        did = int.from_bytes(p[1:3], "big")
        d = self.dids.dids.get(did)
        if d is None or not d.writable or self.session not in d.write_sessions:
            raise Nrc(_C.RequestOutOfRange, "DID not writable in this session")
        if d.write_security and self.security.unlocked < d.write_security:
            raise Nrc(_C.SecurityAccessDenied)
        if len(p) - 3 != d.size:
            raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
        field_ = d.fields[0]
        value = d.codec.decode(p[3:])
        if field_.type == "ascii":
            if not all(32 <= b < 127 for b in p[3:]):
                raise Nrc(_C.RequestOutOfRange, "not printable ASCII")
        elif (d.write_min is not None and value < d.write_min) or (d.write_max is not None and value > d.write_max):
            raise Nrc(_C.RequestOutOfRange, "value out of range")
        self.nvm["dids"][d.nvm_key] = value
        self._dirty_nvm = True
        self._event(t_s, f"diag:write_did:0x{did:04X}", d.name)
        return self._positive(services.WriteDataByIdentifier, p[1:3])

    # --- 0x27 SecurityAccess ----------------------------------------------------------------------------
    def _sid_27(self, p: bytes, t_s: float, functional: bool) -> bytes:
        sub = p[1] & 0x7F
        if sub % 2:
            seed, nrc = self.security.request_seed(sub, t_s)
            if nrc or seed is None:
                raise Nrc(nrc)
            return self._positive(services.SecurityAccess, bytes((sub,)) + seed)
        if len(p) != 2 + self.config.security.seed_bytes:
            raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
        nrc = self.security.send_key(sub - 1, p[2:], t_s)
        self._dirty_nvm = True
        if nrc:
            self._event(t_s, "diag:security:denied", f"level={sub - 1}, nrc=0x{nrc:02X}")
            raise Nrc(nrc)
        self._event(t_s, "diag:security:unlocked", f"level={sub - 1}")
        return self._positive(services.SecurityAccess, bytes((sub,)))

    # --- 0x28 CommunicationControl ----------------------------------------------------------------------
    def _sid_28(self, p: bytes, t_s: float, functional: bool) -> bytes:
        _length(p, 3)
        if p[2] & 0x03 == 0:
            raise Nrc(_C.RequestOutOfRange, "communication type")
        sub = p[1] & 0x7F
        if p[2] & 0x01:  # normal communication messages (network management has none here)
            self.normal_rx = sub in (0x00, 0x01)
            self.normal_tx = sub in (0x00, 0x02)
        self._event(t_s, "diag:communication_control", f"rx={'on' if self.normal_rx else 'off'}, "
                    f"tx={'on' if self.normal_tx else 'off'}")
        return self._positive(services.CommunicationControl, bytes((sub,)))

    # --- 0x31 RoutineControl ----------------------------------------------------------------------------
    def _sid_31(self, p: bytes, t_s: float, functional: bool) -> bytes:
        if len(p) < 4:
            raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
        sub = p[1] & 0x7F
        rid = int.from_bytes(p[2:4], "big")
        routine = ROUTINES.get(rid)
        if routine is None:
            raise Nrc(_C.RequestOutOfRange, "unknown routine")
        if routine.security and self.security.unlocked < routine.security:
            raise Nrc(_C.SecurityAccessDenied)
        run = self._routines.get(rid)
        head = bytes((sub,)) + p[2:4]
        if sub == 0x01:
            if run is not None and run.status == RUNNING:
                raise Nrc(_C.RequestSequenceError, "already running")
            if len(p) != 4 + routine.option_bytes:
                raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
            check_conditions(self.emulator, self.config.rest_current_A)
            run = RoutineRun(routine, self.emulator, t_s, p[4:], settle_s=self.config.routine_settle_s)
            self._routines[rid] = run
            self._event(t_s, f"diag:routine:{routine.name}:started", "")
            if not routine.long:
                return self._positive(services.RoutineControl, head + bytes((RUNNING,)))

            def finish(t, run=run, head=head, name=routine.name):
                if run.status == RUNNING:
                    return None
                self._event(t, f"diag:routine:{name}:{'completed' if run.status == COMPLETED else 'aborted'}",
                            run.why)
                return self._positive(services.RoutineControl, head + run.result(t))
            raise _Deferred(finish)
        _length(p, 4)
        if run is None:
            raise Nrc(_C.RequestSequenceError, "routine not started")
        if sub == 0x02:
            if run.status != RUNNING:
                raise Nrc(_C.RequestSequenceError, "routine not running")
            run.abort("stopped by the tester", t_s)
        return self._positive(services.RoutineControl, head + run.result(t_s))

    # --- 0x3E TesterPresent, 0x85 ControlDTCSetting ---------------------------------------------------
    def _sid_3e(self, p: bytes, t_s: float, functional: bool) -> bytes:
        _length(p, 2)
        return self._positive(services.TesterPresent, b"\x00")

    def _sid_85(self, p: bytes, t_s: float, functional: bool) -> bytes:
        if len(p) not in (2, 5):
            raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)
        if len(p) == 5 and p[2:5] != b"\xff\xff\xff":
            raise Nrc(_C.RequestOutOfRange, "DTCSettingControlOptionRecord")
        sub = p[1] & 0x7F
        self.memory.setting_enabled = sub == 0x01
        self._last_flags = None   # evaluated at the next tick
        self._event(t_s, f"diag:dtc_setting:{'on' if sub == 0x01 else 'off'}", "")
        return self._positive(services.ControlDTCSetting, bytes((sub,)))

    # --- watching the BMS: DTC monitors, counters ------------------------------------------------------
    def _observe(self, t_s: float) -> None:
        e = self.emulator
        bms = e.bms
        state = bms.state
        if state is not self._last_state:
            last = self._last_state
            if last is not None and last.name == "SHUTDOWN" and state.name == "INIT" and \
                    self.config.operation_cycle == "power":
                self.start_operation_cycle(t_s, "wake-up")
            if state.name == "INIT" or last is None:
                self._insulation_test()
            self._last_state = state
            self._next_dtc_s = t_s
        flags = (bms.warning_flags, bms.error_flags)
        memory = self.memory
        if flags != self._last_flags or (t_s >= self._next_dtc_s - 1e-9 and (memory.waiting
                                                                             or not memory.setting_enabled)):
            self._last_flags = flags
            self._next_dtc_s = t_s + self.config.dtc_period_s
            levels = {p: int(lv) for p, lv in ((Protection[k], v) for k, v in bms.levels.items())}
            self.memory.evaluate(t_s, levels, state.name)
        command = e.pack.state.contactor_command[:3].tolist()
        if command != self._commands:
            current = abs(e.sensors.current_A)
            for name, before, now in zip(_CONTACTORS, self._commands, command):
                if now and not before:
                    self.counters.closings[name] += 1
                elif before and not now and name != "precharge" and current > bms.config.open_current_threshold_A:
                    self.counters.opened_under_load += 1
            self._commands = command
            self._dirty_nvm = True

    def _insulation_test(self) -> None:
        self.counters.insulation_tests += 1
        pack_V = self.emulator.pack.params.n_series * self.emulator.pack.params.cell.voltage_max_V
        if self.insulation_resistance_kohm * 1000 < self.config.insulation_threshold_ohm_per_V * pack_V:
            self.counters.insulation_below_threshold += 1

    def _snapshot(self, protection: Protection, mt: float) -> dict:
        channel, value = 0, math.nan
        for ev in reversed(self.emulator.bms.events[-64:]):
            if ev.kind == "fault" and ev.detail.get("protection") == protection.name:
                channel, value = int(ev.detail.get("channel", 0)), float(ev.detail.get("value", math.nan))
                break
        self._ctx.snapshot = {"time_s": mt, "operation_cycle": self.memory.operation_cycle, "channel": channel,
                              "value": value}
        return {"time_s": mt, "dids": {str(did): self.read_did(did).hex() for did in self.dids.snapshot_dids}}

    def _dtc_changed(self, mt: float, record, old: int, new: int, why: str) -> None:
        """A status change as an event ``dtc:P1A0A-64:LABEL`` with ``status=0xNN`` in its detail (changes of the
        test-not-completed bits alone only for a DTC that has failed since the last clear)."""
        gained, lost = new & ~old, old & ~new
        if not (gained | lost) & 0xAF and not (old | new) & 0x2F:
            return
        label = next((name for bit, name in ((0x08, "confirmed"), (0x04, "pending"), (0x01, "test_failed"),
                                             (0x80, "warning_indicator")) if gained & bit), None)
        if label is None:
            label = ("cleared" if why == "cleared" else "aged" if lost & 0x08 else "passed" if lost & 0x01
                     else "status")
        t_s = mt - self.memory.time_offset_s   # run time of the change (the memory's clock runs on across restarts)
        self._event(t_s, f"dtc:{dtc_display(record.code)}:{label}", f"status=0x{new:02X}, was=0x{old:02X}, {why}")

    def _event(self, t_s: float, name: str, detail: str) -> None:
        self.events.append((t_s, name, detail))
        if len(self.events) > 20_000:
            del self.events[:2_000]
            self.events_dropped += 2_000

    # --- non-volatile memory --------------------------------------------------------------------------
    def _load_memory(self) -> None:
        path = self.config.memory_path
        if path is None or not Path(path).exists():
            return
        from ..input_files import InputFileError, read_input_text
        try:  # a device or a huge file is refused before it is read; json recurses once per nesting level
            data = json.loads(read_input_text(path, what="diagnostic memory file"))
            self.memory.load_dict(data.get("dtc", {}))
            self.nvm["dids"].update(data.get("dids", {}))
            self.nvm["security"] = dict(data.get("security", {}))
            counters = data.get("counters", {})
            self.counters = DiagCounters(dict(self.counters.closings, **counters.get("closings", {})),
                                         int(counters.get("opened_under_load", 0)),
                                         int(counters.get("insulation_tests", 0)),
                                         int(counters.get("insulation_below_threshold", 0)))
        except InputFileError as exc:
            raise DiagError(f"{exc}; move it away to start with an empty memory") from None
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise DiagError(f"{path}: not a diagnostic memory file this BMS wrote ({exc}); move it away to start "
                            f"with an empty memory") from exc

    def flush(self) -> None:
        """Write the non-volatile memory now (atomically: a new file renamed over the old)."""
        self._dirty_nvm = False
        path = self.config.memory_path
        if path is None:
            return
        c = self.counters
        data = {"format": "assb-bms-emu diagnostic memory 1", "dtc": self.memory.as_dict(self.t_s),
                "dids": self.nvm["dids"], "security": self.nvm["security"],
                "counters": {"closings": c.closings, "opened_under_load": c.opened_under_load,
                             "insulation_tests": c.insulation_tests,
                             "insulation_below_threshold": c.insulation_below_threshold}}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            raise DiagError(f"{path}: the diagnostic memory cannot be written: {exc}") from exc

    # --- for tests and reports ----------------------------------------------------------------------------
    def dtc_table(self) -> list[dict]:
        """One row per DTC: number, protection, failure type, severity, text, status now."""
        return [{"dtc": d.display, "code": f"0x{d.code:06X}", "protection": p.name, "ftb": f"0x{d.ftb:02X}",
                 "severity": f"0x{d.severity:02X}", "text": d.text,
                 "status": f"0x{self.memory.records[d.code].status:02X}"} for p, d in DTC_DEFINITIONS.items()]


class _Deferred(Exception):
    """Raised by a handler whose answer takes longer than P2: ``finish(t_s)`` returns it once ready."""

    def __init__(self, finish):
        super().__init__("deferred")
        self.finish = finish


def _length(p: bytes, n: int) -> None:
    if len(p) != n:
        raise Nrc(_C.IncorrectMessageLengthOrInvalidFormat)


def _dtc_bytes(code: int, status: int) -> bytes:
    return services.ReadDTCInformation.pack_dtc(code) + bytes((status,))


_ = (SESSIONS, Event)  # re-exported names other modules use
