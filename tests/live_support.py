"""A scenario run with its live session on a thread, and waits bounded by simulated progress (not wall time):
a loaded machine runs the loop slower, and the bound stretches with it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from hil.live import LiveSession
from hil.runner import run_scenario
from hil.scenario import load_scenario

LONG_SCENARIO = """
[scenario]
name = "live-bench"
seed = 3
initial_soc = 0.8
[[step]]
kind = "current"
current_A = 60.0
duration_s = 3600.0
"""

WALL_LIMIT_S = 900.0   # a last resort against a hung loop, never the bound a test relies on


class LiveRun:
    """``with LiveRun(tmp_path, mode=...) as run:`` the scenario runs until the block ends (then it is
    stopped and its reports written); ``run.result`` afterwards."""

    def __init__(self, folder: Path, *, mode: str = "lockstep", max_rate_hz=None, can_options=None,
                 arm_timeout_s: float = 30.0):
        self.folder = Path(folder)
        path = self.folder / "live-bench.toml"
        path.write_text(LONG_SCENARIO)
        self.scenario = load_scenario(str(path))
        self.out = self.folder / "out"
        self.live = LiveSession(audit_path=self.out / "bench-audit.jsonl", port=0, max_rate_hz=max_rate_hz,
                                arm_timeout_s=arm_timeout_s)
        self.mode, self.can_options = mode, can_options
        self.stop = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.result = run_scenario(self.scenario, out_dir=self.out, mode=self.mode, plots=False, stop=self.stop,
                                       live=self.live, can_options=self.can_options)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            self.error = exc

    def __enter__(self) -> LiveRun:
        self._thread.start()
        start = time.monotonic()
        while self.live.server is None or self.live.telemetry is None or not self.live.telemetry.samples.pushed:
            assert self._thread.is_alive(), f"the run ended before its live view started: {self.error!r}"
            assert time.monotonic() - start < WALL_LIMIT_S, "the live view never started"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self._thread.join(timeout=WALL_LIMIT_S)
        self.live.close()
        if self.error is not None and exc[0] is None:
            raise self.error

    @property
    def url(self) -> str:
        return self.live.server.url

    @property
    def t_s(self) -> float:
        return self.live.control.t_s

    def wait_until(self, condition, what: str, sim_budget_s: float = 120.0):
        """Wait for ``condition()`` to be truthy while the run simulates at most ``sim_budget_s`` more."""
        start_t, start_wall = self.t_s, time.monotonic()
        while True:
            value = condition()
            if value:
                return value
            assert self._thread.is_alive(), f"the run ended while waiting for {what}: {self.error!r}"
            assert self.t_s - start_t <= sim_budget_s, f"{what}: not within {sim_budget_s} s of simulated time"
            assert time.monotonic() - start_wall < WALL_LIMIT_S, f"{what}: the loop made no progress"
            time.sleep(0.01)

    # --- a real HTTP client against the real server ---------------------------------------------
    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=60) as r:
            return json.load(r)

    def post(self, path: str, body, token: str | None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path.lstrip("/"), data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


def start_serve_live(folder: Path, *args: str, until: str = "bench control token"):
    """``bms-emu serve --live`` in a process of its own (``args`` added), read until a line holding ``until``:
    ``(process, lines, base_url, token)``. The caller stops the process (``kill`` in a ``finally``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "serve", "--live", "--live-port", "0", "--rt-priority",
                             "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=folder)
    lines: list[str] = []
    try:
        while not any(until in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"serve ended early: {proc.stderr.read()}"
            lines.append(line)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    url = next(re.search(r"(http://127\.0\.0\.1:\d+/)\?token=(\S+)", x) for x in lines if "live view" in x)
    return proc, lines, url.group(1), url.group(2)


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
