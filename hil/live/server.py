"""The live view's web server: a Bokeh server (Tornado) on its own thread and event loop, with the JSON API
beside the page on the same port.

Routes: ``/`` the live page (``hil.live.page``); ``GET /api/state`` (run, stream and control state),
``GET /api/telemetry?since=N&limit=M`` (snapshots as JSON), ``GET /api/events?since=N``,
``GET /api/stream`` (newline-delimited JSON snapshots, as they come), ``GET /api/faults`` (the fault
vocabulary and the active bench injections), ``GET /api/audit``, ``POST /api/control`` (inject or clear;
needs the token). Bound to 127.0.0.1 unless the command line asks otherwise.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
import threading
from typing import TYPE_CHECKING

from tornado import web

from .control import ControlError
from .telemetry import jsonable

if TYPE_CHECKING:
    from bokeh.server.server import BaseServer
    from bokeh.server.urls import URLRoutes
    from tornado.ioloop import IOLoop

__all__ = ["LiveServer", "is_loopback"]

_STREAM_POLL_S = 0.1


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _dump(obj) -> str:
    return json.dumps(obj, allow_nan=False, default=str)


class _Api(web.RequestHandler):
    def initialize(self, session):
        self.session = session

    def set_default_headers(self):
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def reply(self, obj, status: int = 200) -> None:
        self.set_status(status)
        self.finish(_dump(obj))

    def arg_int(self, name: str, default: int | None) -> int | None:
        text = self.get_argument(name, None)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise web.HTTPError(400, reason=f"{name}: expected an integer, found {text!r}") from None
        if value < 0:
            raise web.HTTPError(400, reason=f"{name}: expected an integer >= 0, found {value}")
        return value

    def write_error(self, status_code, **kwargs):
        self.finish(_dump({"error": self._reason}))


class StateHandler(_Api):
    def get(self):
        s = self.session
        t = s.telemetry
        latest = t.samples.latest() if t is not None else None
        scalars = {k: v for k, v in jsonable(latest).items() if not isinstance(v, (list, dict))} if latest else None
        self.reply({"run": s.info, "telemetry": t.stats() if t is not None else None, "latest": scalars,
                    "control": s.control.state(), "layout": t.layout if t is not None else None})


class TelemetryHandler(_Api):
    def get(self):
        t = self.session.telemetry
        since, limit = self.arg_int("since", 0), self.arg_int("limit", 100)
        items, cursor, missed = t.samples.since(since, limit=limit)
        self.reply({"samples": [jsonable(x) for x in items], "next": cursor, "missed": missed})


class EventsHandler(_Api):
    def get(self):
        t = self.session.telemetry
        items, cursor, missed = t.events.since(self.arg_int("since", 0), limit=self.arg_int("limit", 1000))
        self.reply({"events": items, "next": cursor, "missed": missed})


class AuditHandler(_Api):
    def get(self):
        self.reply({"audit": list(self.session.control.audit), "path": str(self.session.control.audit_path)})


class FaultsHandler(_Api):
    def get(self):
        from ..scenario import FAULT_KINDS, FAULT_REQUIRED
        vocabulary = {kind: {"keys": {k: _type_name(v) for k, v in keys.items()},
                             "required": sorted(FAULT_REQUIRED.get(kind, ()))} for kind, keys in FAULT_KINDS.items()}
        self.reply({"kinds": vocabulary, "active": self.session.control.state()["active"]})


def _type_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({float: "number", int: "integer", str: "string", list: "list", dict: "object"}[k]
                       for k in kinds)


class ControlHandler(_Api):
    async def post(self):
        control = self.session.control
        remote = self.request.remote_ip or ""
        header = self.request.headers.get("Authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else self.request.headers.get("X-Bench-Token")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
            body = None
            error = f"the body is not JSON: {exc}"
        else:
            error = None
        if not control.check_token(token):
            status = 401 if not token else 403
            reason = "missing token (Authorization: Bearer TOKEN)" if not token else "wrong token"
            control.write_audit({"source": "api", "remote": remote, "result": "refused", "reason": reason,
                                 "request": body if isinstance(body, dict) else None})
            self.reply({"error": reason}, status)
            return
        try:
            if error is not None:
                control.refuse({"source": "api", "remote": remote}, error)
            command = control.command(body, source="api", remote=remote)
            future = control.submit(command)
        except ControlError as exc:
            self.reply({"error": str(exc)}, exc.status)
            return
        try:  # the loop applies it at its next recording tick; a stalled loop leaves it queued
            entries = await asyncio.wait_for(asyncio.wrap_future(future), timeout=10.0)
        except asyncio.TimeoutError:
            self.reply({"queued": command.describe()}, 202)
            return
        except ControlError as exc:
            self.reply({"error": str(exc)}, exc.status)
            return
        self.reply({"applied": entries})


class StreamHandler(_Api):
    """Snapshots as newline-delimited JSON while the client reads. A client that stops reading stalls only
    its own handler (one chunk is in flight at a time: ``flush`` is awaited); the loop and the ring
    never wait for it, and the client resumes with the newest samples (the older ones count as missed)."""

    def set_default_headers(self):
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-store")

    async def get(self):
        t = self.session.telemetry
        cursor = t.samples.pushed
        limit = self.arg_int("limit", 10)
        max_samples = self.arg_int("max", None)
        sent = 0
        try:
            while self.session.server is not None and (max_samples is None or sent < max_samples):
                items, cursor, missed = t.samples.since(cursor, limit=limit)
                for item in items:
                    self.write(_dump({**jsonable(item), "missed": missed}) + "\n")
                    missed = 0
                    sent += 1
                if items:
                    await self.flush()
                else:
                    await asyncio.sleep(_STREAM_POLL_S)
        except Exception:  # noqa: BLE001 - the client went away
            return
        self.finish()


class LiveServer:
    """The Bokeh server and the API on ``host:port`` (port 0: any free port), on a thread of its own."""

    def __init__(self, session, *, host: str = "127.0.0.1", port: int = 5006, allow_remote: bool = False):
        if not is_loopback(host) and not allow_remote:
            raise ValueError(f"--live-host {host}: not a loopback address; binding elsewhere makes the bench "
                             "control reachable from the network: pass --live-allow-remote to do it anyway")
        self.session, self.host, self.requested_port = session, host, port
        self.port: int | None = None
        self.bound: list[tuple] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: IOLoop | None = None
        self._server: BaseServer | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        if not is_loopback(self.host):
            print(f"bms-emu: warning: the live view and bench control listen on {self.host}:{self.requested_port}, "
                  "beyond this machine; anyone who can reach it and has the token can inject faults",
                  file=sys.stderr, flush=True)
        self._thread = threading.Thread(target=self._run, name="bms-emu-live", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=60.0)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise RuntimeError("the live view's server did not start within 60 s")

    def _run(self) -> None:
        try:
            asyncio.set_event_loop(asyncio.new_event_loop())
            from bokeh.application import Application
            from bokeh.application.handlers.function import FunctionHandler
            from bokeh.server.server import BaseServer
            from bokeh.server.tornado import BokehTornado
            from bokeh.server.util import bind_sockets
            from tornado.httpserver import HTTPServer
            from tornado.ioloop import IOLoop

            from .page import build_page

            sockets, self.port = bind_sockets(self.host, self.requested_port)
            self.bound = [s.getsockname() for s in sockets]
            origins = [f"{h}:{self.port}" for h in {self.host, "localhost", "127.0.0.1"}]
            session = self.session
            kw = {"session": session}
            patterns: URLRoutes = [(r"/api/state", StateHandler, kw), (r"/api/telemetry", TelemetryHandler, kw),
                        (r"/api/events", EventsHandler, kw), (r"/api/stream", StreamHandler, kw),
                        (r"/api/faults", FaultsHandler, kw), (r"/api/audit", AuditHandler, kw),
                        (r"/api/control", ControlHandler, kw)]
            app = Application(FunctionHandler(lambda doc: build_page(doc, session)))
            tornado_app = BokehTornado({"/": app}, extra_websocket_origins=origins, extra_patterns=patterns,
                                       keep_alive_milliseconds=10_000, check_unused_sessions_milliseconds=5_000,
                                       unused_session_lifetime_milliseconds=10_000)
            http_server = HTTPServer(tornado_app, xheaders=False)
            http_server.add_sockets(sockets)
            self._loop = loop = IOLoop.current()
            self._server = server = BaseServer(loop, tornado_app, http_server)
            server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.start()
        loop.close(all_fds=True)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        loop, server = self._loop, self._server

        def shutdown():
            try:
                assert server is not None   # set together with the loop in _run
                server.stop(wait=False)
            finally:
                loop.stop()
        loop.add_callback(shutdown)
        self._thread.join(timeout=10.0)
        self._thread = None
