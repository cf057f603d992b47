"""The live view's server in a process of its own, so it never holds the loop's GIL.

Measured with the server on a thread of the loop's process, a page open in a browser raised the paced
loop's p99 period deviation from 0.003 ms to 95 ms on a loaded 2-core machine, even with the loop thread
at SCHED_FIFO: the server thread, holding the GIL, was preempted by other processes and the loop waited
for the GIL behind it. Here the loop's process only pickles a snapshot into a socket that never blocks
(``hil.live.link``); the server process mirrors the rings and the control state, checks tokens and
requests, and sends validated commands back; the loop's process applies them and writes the audit log.

Parent -> server: ``("config", dict)``, ``("s", sample, stats)``, ``("e", event)``, ``("a", audit entry)``,
``("state", control state)``, ``("r", id, entries)`` / ``("x", id, status, message)`` (a command's result),
``("stop",)``. Server -> parent: ``("ready", port, bound)`` or ``("failed", message)``, ``("c", id, command)``,
``("a", audit entry)``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hmac
import itertools
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

from .control import Command, ControlError, parse_command
from .link import Link, link_pair
from .ring import Ring

if TYPE_CHECKING:
    from .server import LiveServer

__all__ = ["ServerProcess"]

START_TIMEOUT_S = 120.0
_AUDIT_TEXT_MAX = 2000


def _bounded(value):
    """An audit entry's value, what a client sent quoted at most _AUDIT_TEXT_MAX characters long: a request
    of megabytes (a name, a body) is still one line of the audit log, in a packet the link can carry."""
    if not isinstance(value, (str, dict, list)):
        return value
    text = value if isinstance(value, str) else repr(value)
    return value if len(text) <= _AUDIT_TEXT_MAX else f"{text[:_AUDIT_TEXT_MAX]}... ({len(text)} characters)"


# --- the loop's side ----------------------------------------------------------------------------------

class ServerProcess:
    """Starts the server process and relays between it and the session (loop thread only)."""

    def __init__(self, session, *, host: str, port: int, allow_remote: bool):
        self.session, self.host, self.requested_port, self.allow_remote = session, host, port, allow_remote
        self.port: int | None = None
        self.bound: list = []
        self.link: Link | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        from .server import is_loopback
        if not is_loopback(self.host) and not self.allow_remote:
            raise ValueError(f"--live-host {self.host}: not a loopback address; pass --live-allow-remote")
        self.link, theirs = link_pair()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            fd = theirs.fileno()   # -P: the installed package, not whatever lies in the current folder
            flags = ["-P"] if sys.version_info >= (3, 11) else []
            self.proc = subprocess.Popen([sys.executable, *flags, "-m", "hil.live.server_process", "--fd", str(fd)],
                                         pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        s, c = self.session, self.session.control
        t = s.telemetry
        self.link.send(("config", {"host": self.host, "port": self.requested_port, "allow_remote": self.allow_remote,
                                   "info": s.info, "layout": t.layout, "token": c.token, "can_key": c.can_key,
                                   "audit_path": str(c.audit_path) if c.audit_path else None,
                                   "capacity": t.samples.capacity, "state": c.state()}))
        try:
            reply = self.link.receive(START_TIMEOUT_S)
        except EOFError:
            reply = ("failed", f"the server process ended (exit status {self.proc.wait()})")
        if reply is None or reply[0] != "ready":
            self.stop()
            from bms.errors import BmsError
            raise BmsError(f"the live view's server did not start on {self.host}:{self.requested_port}: "
                           f"{reply[1] if reply else 'no answer'} (--live-host, --live-port; port 0 picks a free one)")
        _, self.port, self.bound = reply
        c.on_audit = self._audit_written
        t.sink, t.link = self.link.send, self.link

    def _audit_written(self, entry: dict) -> None:
        assert self.link is not None   # set as on_audit once the link is up
        self.link.send(("a", entry))

    def pump(self) -> None:
        """Handle what the server sent (commands, audit entries of refused requests)."""
        link = self.link
        if link is None:
            return
        control = self.session.control
        for message in link.pending():
            kind = message[0]
            if kind == "a":
                control.write_audit(message[1], stamp=False)
            elif kind == "c":
                self._command(message[1], message[2])
        self.sync_state()

    def sync_state(self) -> None:
        control = self.session.control
        if control.changed and self.link is not None:
            control.changed = False
            self.link.send(("state", control.state()))

    def _command(self, ident: int, payload: dict) -> None:
        control = self.session.control
        command = Command(payload["action"], fault=payload.get("fault"), name=payload.get("name"),
                          source=payload.get("source", "api"), remote=payload.get("remote", ""))
        try:
            future = control.submit(command)
        except ControlError as exc:
            assert self.link is not None   # pump() calls this only with the link up
            self.link.send(("x", ident, exc.status, str(exc)))
            return

        def done(f):
            exc = f.exception()
            if exc is None:
                self.link.send(("r", ident, f.result()))
            else:
                self.link.send(("x", ident, getattr(exc, "status", 500), str(exc)))
        future.add_done_callback(done)

    def stop(self) -> None:
        if self.link is not None:
            self.pump()
            self.link.send(("stop",))
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.link is not None:
            self.link.close()
            self.link = None


# --- the server's side --------------------------------------------------------------------------------
class _MirrorTelemetry:
    def __init__(self, layout: dict, capacity: int):
        self.layout = layout
        self.samples = Ring(capacity)
        self.events = Ring(10_000)
        self.parent_stats: dict = {}
        self.link_dropped = 0

    def stats(self) -> dict:
        return {**self.parent_stats, "server_kept": len(self.samples)}


class _MirrorControl:
    """What the server and the page use of ``BenchControl``: checks here, effects in the loop's process."""

    def __init__(self, link: Link, config: dict):
        self.link = link
        self.token, self.can_key = config["token"], config["can_key"]
        self.audit_path = config["audit_path"]
        self.audit: list[dict] = []
        self._state = config["state"]
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1)
        self.futures: dict[int, concurrent.futures.Future] = {}

    @property
    def active(self) -> dict:
        return self._state.get("active", {})

    @property
    def t_s(self) -> float:
        return self._state.get("t_s", 0.0)

    def state(self) -> dict:
        return dict(self._state)

    def check_token(self, given) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode())

    def next_name(self, kind: str) -> str:
        return f"bench{next(self._numbers)}:{kind}"

    def write_audit(self, entry: dict) -> dict:
        entry = {"wall_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                 **{k: _bounded(v) for k, v in entry.items()}}
        self.link.send(("a", entry))   # the loop's process writes the log (and echoes it back)
        return entry

    def refuse(self, request: dict, reason: str, status: int = 400):
        self.write_audit({**request, "result": "refused", "reason": reason})
        raise ControlError(reason, status)

    def command(self, body, *, source: str = "api", remote: str = "") -> Command:
        try:
            return parse_command(body, source=source, remote=remote, name_for=self.next_name)
        except ControlError as exc:
            self.refuse({"request": body if isinstance(body, dict) else repr(body), "source": source,
                         **({"remote": remote} if remote else {})}, str(exc), exc.status)
            raise

    def submit(self, command: Command) -> concurrent.futures.Future:
        ident = next(self._ids)
        self.futures[ident] = command.result
        if not self.link.send(("c", ident, {"action": command.action, "fault": command.fault, "name": command.name,
                                            "source": command.source, "remote": command.remote})):
            del self.futures[ident]
            raise ControlError("the emulator's loop does not take commands (its link is full or closed)", 503)
        return command.result

    def settle(self, ident: int, entries=None, status: int = 0, message: str = "") -> None:
        future = self.futures.pop(ident, None)
        if future is None:
            return
        if entries is not None:
            future.set_result(entries)
        else:
            future.set_exception(ControlError(message, status))


class _MirrorSession:
    def __init__(self, link: Link, config: dict):
        self.info = config["info"]
        self.telemetry = _MirrorTelemetry(config["layout"], config["capacity"])
        self.control = _MirrorControl(link, config)
        self.server: LiveServer | None = None


def _serve(fd: int) -> int:
    link = Link(socket.socket(fileno=fd), blocking=False)
    config = link.receive(START_TIMEOUT_S)
    if config is None or config[0] != "config":
        return 2
    config = config[1]
    session = _MirrorSession(link, config)
    from .server import LiveServer
    try:
        server = LiveServer(session, host=config["host"], port=config["port"], allow_remote=config["allow_remote"])
        server.start()
    except BaseException as exc:  # noqa: BLE001 - said to the loop's process, which raises it
        link.send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    session.server = server
    link.send(("ready", server.port, server.bound))
    telemetry, control = session.telemetry, session.control
    try:
        while True:
            try:
                message = link.receive(None)
            except EOFError:
                break
            kind = message[0]
            if os.environ.get("BMS_EMU_LIVE_DEBUG"):
                print("live server got", kind, file=sys.stderr, flush=True)
            if kind == "s":
                telemetry.samples.push(message[1])
                telemetry.parent_stats = message[2]
            elif kind == "e":
                telemetry.events.push(message[1])
            elif kind == "a":
                control.audit.append(message[1])
            elif kind == "state":
                control._state = message[1]
            elif kind == "r":
                control.settle(message[1], entries=message[2])
            elif kind == "x":
                control.settle(message[1], status=message[2], message=message[3])
            elif kind == "stop":
                break
    finally:
        for ident in list(control.futures):
            control.settle(ident, status=409, message="the run is over")
        session.server = None
        server.stop()
        link.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="the bms-emu live view's server process (started by --live)")
    parser.add_argument("--fd", type=int, required=True, help="the socket of the link to the emulator's process")
    return _serve(parser.parse_args(argv).fd)


if __name__ == "__main__":
    sys.exit(main())
