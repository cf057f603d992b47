"""A live session: the telemetry stream, the bench control and (optionally) the web server of one run.

The loop calls ``LiveSession.tick(t_s)`` once per recording tick (``run``) or per tick (``serve``): it
applies queued bench commands, forwards new events and offers a snapshot. Everything else (HTTP, the
page, JSON encoding) happens in the server's own process (``hil.live.server_process``), which gets the
snapshots through a socket that never blocks the loop.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from .control import BenchControl, ControlError
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .server_process import ServerProcess

__all__ = ["LiveSession", "RunTarget", "serve_target", "CAN_FAULT_KINDS"]

CAN_FAULT_KINDS = ("can_corrupt", "bus_off", "isotp", "uds_pending")


class RunTarget:
    """Faults applied through a run's fault timeline (``hil.runner._FaultTimeline``): the same code path as
    a scenario's ``[[fault]]`` entries; they show in the run's injections and events."""

    def __init__(self, timeline, events: list, telemetry: Telemetry | None = None, *, cooling=None):
        self.timeline, self.events, self.telemetry = timeline, events, telemetry
        self._cooling = cooling   # serve: where the cooling factor acts (the node), run: the timeline

    def apply(self, fault, t_s: float, on: bool) -> None:
        if fault.kind in CAN_FAULT_KINDS and self.timeline.can is None:
            raise ControlError(f"{fault.kind}: CAN and diagnostic faults need a bus (this run is headless)", 409)
        self.timeline._apply(fault, t_s, on)
        if self._cooling is not None and fault.kind == "coolant_loss":
            self._cooling(self.timeline.cooling_factor)
        self.timeline.injections[fault.name if on else f"{fault.name}:cleared"] = t_s

    def record(self, t_s: float, name: str, detail: str) -> None:
        self.events.append((t_s, name, detail))
        if self.telemetry is not None:
            self.telemetry.event(t_s, name, detail)


class _NoVcuModel:
    """``serve`` has no VCU model: the VCU is the firmware under test on the bus."""

    def _refuse(self, *_):
        raise ControlError("vcu_silence and can_corrupt act on the emulator's VCU model, which serve does not "
                           "run (the VCU under test is on the bus); use bms-emu run", 409)

    silent = property(lambda self: False, _refuse)
    corrupt = property(lambda self: None, _refuse)


class _ServeCan:
    """What ``CanLoop.fault`` needs of a CAN loop, for ``serve``'s node (bus-off, ISO-TP, 0x78)."""

    def __init__(self, node):
        from ..can_loop import CanLoop
        self.node, self.tester, self.vcu = node, None, _NoVcuModel()
        self._fault = CanLoop.fault

    def fault(self, kind, options, on, t_s):
        self._fault(self, kind, options, on, t_s)


def serve_target(node, events: list, telemetry: Telemetry | None) -> RunTarget:
    """The fault target of ``bms-emu serve``: a fault timeline with no scheduled faults over its node."""
    from ..runner import _FaultTimeline
    from ..scenario import Scenario

    vcu = _NoVcuModel()
    timeline = _FaultTimeline(Scenario(name="serve", source="serve"), node.emulator, vcu, _ServeCan(node))

    def cooling(factor: float) -> None:
        node.cooling_factor = factor
    return RunTarget(timeline, events, telemetry, cooling=cooling)


class LiveSession:
    """Telemetry, control and the web server of one run. ``attach`` it to the loop, ``start`` the server,
    ``tick`` from the loop, ``close`` at the end (the server stops, the audit log is closed)."""

    def __init__(self, *, audit_path: str | Path | None = None, host: str = "127.0.0.1", port: int = 5006,
                 allow_remote: bool = False, serve_http: bool = True, period_s: float = 0.1,
                 max_rate_hz: float | None = 25.0, capacity: int = 600, token: str | None = None,
                 arm_timeout_s: float = 30.0):
        self.control = BenchControl(audit_path, token=token)
        self.host, self.port, self.allow_remote, self.serve_http = host, port, allow_remote, serve_http
        self.period_s, self.max_rate_hz, self.capacity = period_s, max_rate_hz, capacity
        self.arm_timeout_s = arm_timeout_s   # the page: arm, then confirm within this wall time
        self.telemetry: Telemetry | None = None
        self.target: RunTarget | None = None
        self.server: ServerProcess | None = None
        self.info: dict = {}
        self._events: list = []
        self._event_cursor = 0
        self._bms_seen = 0
        self._own_events = False
        self.announce = False     # print the banner (URL, token) when the server is up

    def attach(self, emulator, *, node=None, timeline=None, events: list | None = None, info: dict | None = None):
        """Bind to a loop: ``timeline`` and ``events`` are a run's (``run``); without them (``serve``) the
        session collects the BMS's events itself and injects through the node."""
        self.telemetry = Telemetry(emulator, node=node, period_s=self.period_s, max_rate_hz=self.max_rate_hz,
                                   capacity=self.capacity)
        self.info = {**(info or {}), "arm_timeout_s": self.arm_timeout_s}
        if timeline is not None:
            self._events = events if events is not None else []
            self.target = RunTarget(timeline, self._events, None)
        else:
            self._own_events = True
            self._events = events if events is not None else []
            self.target = serve_target(node, self._events, None)
        self._event_cursor = len(self._events)
        self._every = max(1, int(round(min(self.period_s, 0.1) / emulator.dt_s)))
        self._ticks_left = 1
        self._node = node
        if node is not None:  # HIL_FaultControl frames reach the same control
            from .can_control import FrameControl
            node.on_fault_control = FrameControl(self.control)
        return self

    def start(self):
        """Start the web server (a process of its own); returns its URL."""
        if not self.serve_http:
            return None
        from .server_process import ServerProcess
        self.server = ServerProcess(self, host=self.host, port=self.port, allow_remote=self.allow_remote)
        self.server.start()
        if self.announce:
            print(self.banner(), flush=True)
        return self.server.url

    def tick(self, t_s: float, demand_A: float = math.nan) -> None:
        """The loop's hook (its own thread; cheap when nothing is due)."""
        control, telemetry = self.control, self.telemetry
        if self.server is not None:
            self.server.pump()
        if control.pending:
            control.apply_pending(t_s, self.target)
            if self.server is not None:
                self.server.sync_state()
        else:
            control.t_s = t_s
        assert telemetry is not None   # attach() came first
        if self._own_events:
            from ..runner import _collect_events
            self._bms_seen = _collect_events(telemetry.emulator, self._events, self._bms_seen)
        events = self._events
        if len(events) > self._event_cursor:
            for ev_t, name, detail in events[self._event_cursor:]:
                telemetry.event(ev_t, name, detail)
            self._event_cursor = len(events)
        telemetry.demand_A = demand_A
        telemetry.offer(t_s)

    def finished(self, verdicts) -> None:
        """The run is over: its expectation results go onto the viewers' timeline."""
        t = self.telemetry
        if t is None:
            return
        at = self.control.t_s
        for v in verdicts:
            t.event(v.t_s if v.t_s is not None else at, f"expect:{v.name}:{'PASS' if v.passed else 'FAIL'}",
                    v.message)

    def every_tick(self, t_s: float) -> None:
        """A hook for a loop that calls it every tick (``serve``'s node): ``tick`` once per recording period
        (0.1 s simulated), so the loop pays a counter per tick and nothing more."""
        self._ticks_left -= 1
        if self._ticks_left <= 0:
            self._ticks_left = self._every
            self.tick(t_s)

    def close(self, reason: str = "finished") -> None:
        if getattr(self, "_node", None) is not None:
            self._node.on_fault_control = None
        if self.server is not None:  # what the server refused since the last tick: into the log before it closes
            self.server.pump()
        self.control.close(reason)
        if self.server is not None:
            self.server.stop()
            self.server = None

    def banner(self) -> str:
        """What the command prints at start: where the page is, the token, the CAN key."""
        url = f"{self.server.url}?token={self.control.token}" if self.server is not None else "(no web server)"
        return (f"live view: {url}\n"
                f"bench control token: {self.control.token}  (HTTP header 'Authorization: Bearer TOKEN'; "
                f"CAN HIL_FaultControl.ControlKey = 0x{self.control.can_key:04X})\n"
                f"audit log: {self.control.audit_path or '(in memory)'}")
