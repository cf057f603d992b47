"""The scenario's diagnostic tester: UDS requests at given times, on the bus, answers recorded as events.

A ``[[diag]]`` entry of a scenario is one request at ``at_s`` (simulated time): a session change, security
access (seed, then the key), reading DTCs or a DID, clearing DTCs, tester present, ECU reset, a routine, a raw
payload, or (not UDS: the bench's key cycle) a new operation cycle. Requests are built with udsoncan's
services and go out through can-isotp on the node's clock, so a scenario run is the same every time. Each
answer becomes an event ``uds:NAME:positive``, ``uds:NAME:nrc:0xNN`` or ``uds:NAME:timeout`` (P2, P2* after
0x78, or the overall ``request_timeout_s``), which expectations can match.
"""
from __future__ import annotations

from dataclasses import dataclass

import can
import isotp
from udsoncan import Request, services

from bms.can.node import BusFailure, Frame, classify_rx_error
from bms.diag import FaultyLink, key_for
from bms.diag.transport import ClockedTransport, to_isotp

__all__ = ["ScenarioTester", "DIAG_REQUESTS", "DiagRequest"]

DIAG_REQUESTS = ("session", "security", "read_dtc", "read_did", "clear_dtc", "tester_present", "reset", "routine",
                 "raw", "new_operation_cycle")
_SESSIONS = {"default": 0x01, "extended": 0x03}
_PENDING = 0x78


@dataclass(frozen=True)
class DiagRequest:
    at_s: float
    request: str
    options: dict
    name: str
    line: int | None = None   # in the scenario file


def _payload(req: DiagRequest) -> bytes | None:
    o = req.options
    kind = req.request
    if kind == "session":
        return Request(services.DiagnosticSessionControl, subfunction=_SESSIONS[o.get("session", "extended")]
                       ).get_payload()
    if kind == "read_dtc":
        return services.ReadDTCInformation.make_request(0x02, status_mask=int(o.get("mask", 0xFF))).get_payload()
    if kind == "read_did":
        return services.ReadDataByIdentifier.make_request([int(o["did"])], {int(o["did"]): "B"}).get_payload()
    if kind == "clear_dtc":
        return services.ClearDiagnosticInformation.make_request(int(o.get("group", 0xFFFFFF))).get_payload()
    if kind == "tester_present":
        return services.TesterPresent.make_request().get_payload()
    if kind == "reset":
        return services.ECUReset.make_request(int(o.get("reset_type", 1))).get_payload()
    if kind == "routine":
        return services.RoutineControl.make_request(int(o["routine"]), int(o.get("control", 1)),
                                                    bytes.fromhex(o.get("data", ""))).get_payload()
    if kind == "raw":
        return bytes.fromhex(o["payload"])
    if kind == "security":
        return services.SecurityAccess.make_request(int(o.get("level", 1)), services.SecurityAccess.Mode.RequestSeed
                                                    ).get_payload()
    return None


class ScenarioTester:
    """A tester on the node's bus (its own handle on a virtual channel) working through ``requests``."""

    def __init__(self, node, requests: list[DiagRequest], *, bus: can.BusABC | None = None,
                 p2_s: float = 1.0, p2_star_s: float = 5.0, request_timeout_s: float = 10.0):
        self.node = node
        self.pending = sorted(requests, key=lambda r: r.at_s)
        self.events: list[tuple[float, str, str]] = []
        self.p2_s, self.p2_star_s, self.request_timeout_s = p2_s, p2_star_s, request_timeout_s
        c = node.diag.config
        self._own_bus = bus is None
        self.bus = bus if bus is not None else can.Bus(interface="virtual", channel=node.bus.channel_id,
                                                        preserve_timestamps=True)
        mode = isotp.AddressingMode.Normal_29bits if c.extended_id else isotp.AddressingMode.Normal_11bits
        now = node.clock.now_ns

        def tx(frame: isotp.CanMessage) -> None:
            self.bus.send(Frame.build(frame.arbitration_id, frame.data, is_extended_id=frame.is_extended_id,
                                      timestamp=node.clock.timestamp(now())))
        self.faults = FaultyLink(tx, now)
        self._rx_id = c.response_id
        self._layer = ClockedTransport(isotp.Address(mode, txid=c.physical_id, rxid=c.response_id), now, self.faults)
        self._active: DiagRequest | None = None
        self._stage = ""
        self._deadline_s = self._overall_s = 0.0

    def close(self) -> None:
        if self._own_bus:
            self.bus.shutdown()

    def tick(self, t_s: float) -> None:
        """After each node tick: take the BMS's frames, finish or time out the request, start the next."""
        layer = self._layer
        self.faults.release()
        errors = 0
        while errors < 64:
            try:
                msg = self.bus.recv(0)
            except (can.CanError, OSError, ValueError, TypeError) as exc:  # a stray datagram: the node counts it
                if classify_rx_error(self.bus, exc) == "fatal":
                    raise BusFailure(f"the diagnostic tester's bus failed: {exc}") from exc
                errors += 1
                continue
            if msg is None:
                break
            if msg.arbitration_id == self._rx_id and msg.dlc:
                layer.feed(to_isotp(msg))
        layer.step()
        while layer.has_message:
            self._answer(bytes(layer.recv() or b""), t_s)
        req = self._active
        if req is not None and not layer.is_rx_active() and (t_s >= self._deadline_s - 1e-9
                                                             or t_s >= self._overall_s - 1e-9):
            which = "overall" if t_s >= self._overall_s - 1e-9 else ("P2*" if self._stage == "pending" else "P2")
            self._event(t_s, f"uds:{req.name}:timeout", f"{which} timeout")
            self._active = None
        while self._active is None and self.pending and t_s >= self.pending[0].at_s - 1e-9:
            self._start(self.pending.pop(0), t_s)
        layer.step()

    def _start(self, req: DiagRequest, t_s: float) -> None:
        if req.request == "new_operation_cycle":
            self.node.diag.start_operation_cycle(t_s, f"scenario: {req.name}")
            self._event(t_s, f"uds:{req.name}:positive", "operation cycle started")
            return
        self._send(req, _payload(req), t_s, "seed" if req.request == "security" else "")

    def _send(self, req: DiagRequest, payload: bytes | None, t_s: float, stage: str) -> None:
        self._active, self._stage = req, stage
        self._deadline_s = t_s + self.p2_s
        if stage != "key":
            self._overall_s = t_s + self.request_timeout_s
        self._layer.send(payload or b"")

    def _answer(self, payload: bytes, t_s: float) -> None:
        req = self._active
        if req is None:
            return
        if payload[:1] == b"\x7f" and len(payload) >= 3:
            if payload[2] == _PENDING:
                self._stage = "pending" if self._stage in ("", "pending") else self._stage
                self._deadline_s = t_s + self.p2_star_s
                return
            self._event(t_s, f"uds:{req.name}:nrc:0x{payload[2]:02X}", f"answer {payload.hex()}")
            self._active = None
            return
        if req.request == "security" and self._stage == "seed":
            level = int(req.options.get("level", 1))
            seed = payload[2:]
            key = bytes.fromhex(req.options["key"]) if "key" in req.options else key_for(
                seed, level, self.node.diag.config.security)
            self._send(req, services.SecurityAccess.make_request(level, services.SecurityAccess.Mode.SendKey,
                                                                 key).get_payload(), t_s, "key")
            return
        self._event(t_s, f"uds:{req.name}:positive", f"answer {payload[:32].hex()}"
                    + ("..." if len(payload) > 32 else "") + f" ({len(payload)} bytes)")
        self._active = None

    def _event(self, t_s: float, name: str, detail: str) -> None:
        self.events.append((t_s, name, detail))
