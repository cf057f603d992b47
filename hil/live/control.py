"""Bench control: inject and clear faults while a run goes on, in the scenarios' own vocabulary.

A request (from the JSON API, the live page or the CAN control message) is checked on the caller's thread
against the scenario grammar (``hil.scenario``: the same kinds, keys, types and names, the same messages),
queued, and applied by the loop at its next recording tick, so a fault acts at a tick boundary as a
scenario's does. Every request, refused or applied, is a line of the audit log (JSON lines, flushed at once)
and every applied one an event ``bench:inject:NAME`` / ``bench:clear:NAME`` on the run's timeline.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import hashlib
import hmac
import itertools
import json
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hil.scenario import FaultAction

__all__ = ["BenchControl", "ControlError", "Command", "parse_command", "fault_from_spec"]

_TIMING_KEYS = ("at_s", "when", "clear_at_s")


class ControlError(ValueError):
    """A bench request that cannot be carried out; ``status`` is the HTTP status that says why."""

    MAX_CHARS = 500   # a refusal quotes what it refused: a 2 MB value is not sent back whole

    def __init__(self, message: str, status: int = 400):
        if len(message) > self.MAX_CHARS:
            message = f"{message[:self.MAX_CHARS - 100]} ... ({len(message):,} characters in all)"
        super().__init__(message)
        self.status = status


class Command:
    """One validated request: ``action`` inject (``fault``: a ``hil.scenario.FaultAction``) or clear
    (``name``: an injection's name, or None for every bench injection)."""

    def __init__(self, action: str, fault=None, name: str | None = None, source: str = "api", remote: str = ""):
        self.action, self.fault, self.name, self.source, self.remote = action, fault, name, source, remote
        self.result: concurrent.futures.Future = concurrent.futures.Future()

    def describe(self) -> dict:
        out: dict = {"action": self.action, "source": self.source}
        if self.remote:
            out["remote"] = self.remote
        if self.fault is not None:
            out["fault"] = {"kind": self.fault.kind, "name": self.fault.name, **self.fault.options}
        if self.action == "clear":
            out["name"] = self.name
        return out


def fault_from_spec(spec: dict, name: str):
    """A fault table as a scenario writes it (``{"kind": "sensor", "sensor": "cell_voltage", "index": 17,
    "fault": "open_wire"}``) checked by the scenario parser itself; returns its ``FaultAction``."""
    import tomli_w

    from ..scenario import ScenarioError, parse_scenario

    if not isinstance(spec, dict):
        raise ControlError(f"fault: expected an object such as {{\"kind\": \"sensor\", ...}}, found {spec!r}")
    for key in _TIMING_KEYS:
        if key in spec:
            raise ControlError(f"fault.{key}: a bench injection acts now and stays until cleared; "
                               f"leave out {key}")
    try:
        text = tomli_w.dumps({"step": [{"kind": "rest", "duration_s": 1.0}],
                              "fault": [{**spec, "at_s": 0.0, "name": name}]})
    except (TypeError, ValueError) as exc:
        raise ControlError(f"fault: {exc}") from exc
    try:
        return parse_scenario(text, "request").faults[0]
    except ScenarioError as exc:
        key = exc.key.replace("fault[0]", "fault")
        message = str(exc).split(f"{exc.key}: ", 1)[-1]
        raise ControlError(f"{key}: {message}") from None


def parse_command(body, *, source: str = "api", remote: str = "", name_for=None) -> Command:
    """``{"action": "inject", "fault": {...}, "name": "..."}`` or ``{"action": "clear", "name": "..."}``
    (no name: every bench injection) as a ``Command``; a malformed one raises ``ControlError``.
    ``name_for(kind)`` names an injection that comes without a name."""
    if not isinstance(body, dict):
        raise ControlError(f"expected a JSON object, found {type(body).__name__}")
    unknown = set(body) - {"action", "fault", "name"}
    if unknown:
        raise ControlError(f"{sorted(unknown)[0]}: unknown key; expected action, fault, name")
    action = body.get("action")
    if action not in ("inject", "clear"):
        raise ControlError(f"action: expected 'inject' or 'clear', found {action!r}")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 80):
        raise ControlError(f"name: expected a short non-empty string, found {name!r}")
    if action == "inject":
        if "fault" not in body:
            raise ControlError("fault: missing (required to inject)")
        fault = fault_from_spec(body["fault"], name or "bench")
        if name is None and name_for is not None:
            fault = dataclasses.replace(fault, name=name_for(fault.kind))
        return Command("inject", fault=fault, source=source, remote=remote)
    if "fault" in body:
        raise ControlError("fault: not used to clear; give the injection's name (none: clear all)")
    return Command("clear", name=name, source=source, remote=remote)


class BenchControl:
    """The queue between the bench (API, page, CAN) and the loop, the token, the active injections and the
    audit log (``audit_path``, JSON lines; None: kept in memory only)."""

    def __init__(self, audit_path: str | Path | None = None, *, token: str | None = None):
        self.token = token or secrets.token_urlsafe(18)
        # the CAN control message carries 16 bits of the token's hash: enough to stop a stray frame
        self.can_key = int.from_bytes(hashlib.sha256(self.token.encode()).digest()[:2], "little")
        self.audit_path = Path(audit_path) if audit_path is not None else None
        self.audit: list[dict] = []
        self.active: dict[str, FaultAction] = {}      # name -> FaultAction injected by the bench
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()            # the audit file and list, written from several threads
        self._numbers = itertools.count(1)
        self._file = None
        self.closed_reason: str | None = None
        self.t_s = 0.0
        self.on_audit = None      # called with every audit entry written (the server process's mirror)
        self.changed = False      # the active injections or the closing changed since the flag was reset
        if self.audit_path is not None:
            self.audit_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.audit_path, "w", encoding="utf-8")  # noqa: SIM115 - one per run

    # --- the bench's side ---------------------------------------------------------------------------
    def check_token(self, given: str | None) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode())

    def next_name(self, kind: str) -> str:
        return f"bench{next(self._numbers)}:{kind}"

    def command(self, body, *, source: str = "api", remote: str = "") -> Command:
        """A request body checked (``parse_command``); a malformed one is audited and refused."""
        try:
            return parse_command(body, source=source, remote=remote, name_for=self.next_name)
        except ControlError as exc:
            self.refuse({"request": body if isinstance(body, dict) else repr(body), "source": source,
                         **({"remote": remote} if remote else {})}, str(exc), exc.status)
            raise  # not reached: refuse raises

    def submit(self, command: Command) -> concurrent.futures.Future:
        """Queue a checked command for the loop; the future gets the audit entry once it was applied (or an
        exception if it could not be)."""
        if self.closed_reason is not None:
            self.refuse(command.describe(), f"the run is over ({self.closed_reason})", status=409)
        if command.action == "inject" and command.fault.name in self.active:
            self.refuse(command.describe(), f"name: an injection named {command.fault.name!r} is active; "
                        "clear it first or choose another name", status=409)
        self._queue.append(command)
        return command.result

    def refuse(self, request: dict, reason: str, status: int = 400):
        """Audit a refused request and raise ``ControlError``."""
        self.write_audit({**request, "result": "refused", "reason": reason})
        raise ControlError(reason, status)

    def state(self) -> dict:
        return {"t_s": self.t_s, "active": {n: {"kind": f.kind, **f.options} for n, f in self.active.items()},
                "queued": len(self._queue), "audit_entries": len(self.audit), "closed": self.closed_reason}

    # --- the loop's side ----------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def apply_pending(self, t_s: float, target) -> None:
        """Carry out every queued command at simulated time ``t_s`` (loop thread). ``target.apply(fault,
        t_s, on)`` does the injection; ``target.record(t_s, name, detail)`` puts it on the timeline."""
        self.t_s = t_s
        self.changed = True
        while self._queue:
            command = self._queue.popleft()
            try:
                entries = self._apply(command, t_s, target)
            except Exception as exc:  # noqa: BLE001 - a fault the target cannot take: refused, said why
                self.write_audit({**command.describe(), "t_s": t_s, "result": "failed",
                                  "reason": str(exc)})
                command.result.set_exception(ControlError(f"{exc}", exc.status if isinstance(exc, ControlError)
                                                          else 422))
                continue
            command.result.set_result(entries)

    def _apply(self, command: Command, t_s: float, target) -> list[dict]:
        if command.action == "inject":
            fault = command.fault
            if fault.name in self.active:
                raise ControlError(f"an injection named {fault.name!r} is active", 409)
            target.apply(fault, t_s, True)
            self.active[fault.name] = fault
            detail = ", ".join(f"{k}={v}" for k, v in fault.options.items())
            target.record(t_s, f"bench:inject:{fault.name}", f"kind={fault.kind}, {detail} ({command.source})")
            return [self.write_audit({**command.describe(), "t_s": t_s, "result": "applied"})]
        names = list(self.active) if command.name is None else [command.name]
        if command.name is not None and command.name not in self.active:
            raise ControlError(f"name: no active bench injection {command.name!r} (active: "
                               f"{', '.join(self.active) or 'none'})", 404)
        entries = []
        for name in names:
            fault = self.active.pop(name)
            target.apply(fault, t_s, False)
            target.record(t_s, f"bench:clear:{name}", f"kind={fault.kind} ({command.source})")
            entries.append(self.write_audit({"action": "clear", "source": command.source, "name": name,
                                             **({"remote": command.remote} if command.remote else {}),
                                             "t_s": t_s, "result": "applied"}))
        return entries

    def close(self, reason: str) -> None:
        """The run ended: queued commands are refused, the audit log closed."""
        self.closed_reason = reason
        self.changed = True
        while self._queue:
            command = self._queue.popleft()
            self.write_audit({**command.describe(), "result": "refused", "reason": f"the run is over ({reason})"})
            command.result.set_exception(ControlError(f"the run is over ({reason})", 409))
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def write_audit(self, entry: dict, *, stamp: bool = True) -> dict:
        """Append ``entry`` (with the wall time, unless it has one: ``stamp=False``) to the log."""
        if stamp or "wall_time" not in entry:
            entry = {"wall_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                     **entry}
        with self._lock:
            self.audit.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, default=str) + "\n")
                self._file.flush()
        if self.on_audit is not None:
            self.on_audit(entry)
        return entry
