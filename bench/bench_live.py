"""What the live view costs the loop, printed as JSON.

The 192s2p emulator as ``bms-emu serve`` runs it (CAN node on the virtual bus, wall clock, absolute 10 ms
deadlines), for --seconds each, in these configurations, one after the other:

1. ``no_live``: no telemetry, no server;
2. ``stream_no_reader``: telemetry, bench control and the web server running, nobody connected;
3. ``stalled_reader``: a client opens the NDJSON stream (``/api/stream``) and stops reading; plus, where
   Chromium and its driver are installed, the live page open in headless Chromium (``page_open``);
4. ``reading_client``: a client reading the stream as fast as it comes (and the page, as above).

Figures: the tick's |period deviation| p99 and max (``<tick>`` row of the node's cycle-time statistics),
overruns, the process's resident memory at the end of each configuration, the stream's snapshots,
drops and the stalled client's bytes. Then the telemetry's cost in lockstep (simulated s per wall s,
without and with a session at its defaults). Keep --seconds modest on a shared machine.

Usage: python bench/bench_live.py [--seconds 20] [--lockstep-seconds 60] [--no-browser] [--rt-priority 50]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import threading
import time

from bms.can import CanNode, VirtualClock, WallClock
from bms.emulator import Emulator
from hil.live import LiveSession

RT_PRIORITY = 0   # --rt-priority: the loop thread SCHED_FIFO, as serve does by default


def _rss_MB() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _tick_row(report) -> dict:
    for row in report.cycle_times:
        if row["message"] == "<tick>":
            return {"p99_deviation_ms": row.get("p99_abs_deviation_ms"), "max_deviation_ms":
                    row.get("max_abs_deviation_ms"), "ticks": row["frames"]}
    return {}


class _StalledClient:
    """Opens the stream and never reads: the server's writes back up into the socket buffers."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.sendall(b"GET /api/stream?limit=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

    def close(self):
        self.sock.close()


class _ReadingClient(threading.Thread):
    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"GET /api/stream?limit=50 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.bytes = 0
        self.stop = False

    def run(self):
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            if not data:
                break
            self.bytes += len(data)

    def close(self):
        self.stop = True
        self.join(timeout=5)
        self.sock.close()


def _browser(url: str):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,1900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.get(url)
    return driver


def paced(config: str, seconds: float, browser: bool) -> dict:
    emulator = Emulator("assb60-192s2p", seed=1, initial_soc=0.7, temp_C=25.0, dt_s=0.01)
    clock = WallClock(spin_s=0.0003, rt_priority=RT_PRIORITY or None)
    node = CanNode(emulator, clock=clock, channel=f"bench-live-{os.getpid()}-{config}", load_current_A=50.0)
    live = driver = client = None
    if config != "no_live":
        live = LiveSession(port=0)
        live.attach(emulator, node=node, info={"scenario": "bench", "mode": "wall"})
        live.start()
        port = live.server.port
        if config in ("stalled_reader", "reading_client"):
            client = _StalledClient(port) if config == "stalled_reader" else _ReadingClient(port)
            if isinstance(client, _ReadingClient):
                client.start()
            if browser:
                driver = _browser(live.server.url)
    try:
        report = node.run(seconds, on_tick=live.every_tick if live is not None else None)
    finally:
        rss = _rss_MB()
        stats = live.telemetry.stats() if live is not None else None
        if driver is not None:
            driver.quit()
        if client is not None:
            read = getattr(client, "bytes", None)
            client.close()
        else:
            read = None
        if live is not None:
            live.close()
    out = {"config": config, **_tick_row(report), "overruns": report.overruns if hasattr(report, "overruns")
           else node.overruns, "rss_MB": round(rss, 1), "page_open": driver is not None}
    if stats is not None:
        out["stream"] = stats
    if read is not None:
        out["reader_bytes"] = read
    return out


def lockstep(seconds: float, with_live: bool) -> dict:
    emulator = Emulator("assb60-192s2p", seed=1, initial_soc=0.7, temp_C=25.0, dt_s=0.01)
    node = CanNode(emulator, clock=VirtualClock(), channel=f"bench-live-ls-{os.getpid()}-{with_live}",
                   load_current_A=50.0)
    live = None
    if with_live:
        live = LiveSession(serve_http=False)
        live.attach(emulator, node=node)
    start, cpu = time.perf_counter(), time.process_time()
    node.run(seconds, on_tick=live.every_tick if live is not None else None)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    out = {"live": with_live, "simulated_s": seconds, "sim_per_wall_s": round(seconds / wall, 1),
           "sim_per_cpu_s": round(seconds / cpu, 1)}
    if live is not None:
        out["stream"] = live.telemetry.stats()
        live.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--lockstep-seconds", type=float, default=60.0)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--rt-priority", type=int, default=50, help="SCHED_FIFO priority of the loop thread "
                        "where permitted, as bms-emu serve (0: normal scheduling)")
    args = parser.parse_args()
    global RT_PRIORITY
    RT_PRIORITY = args.rt_priority
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "load_average": os.getloadavg()}, "rt_priority": args.rt_priority, "paced": [],
               "lockstep": []}
    for config in ("no_live", "stream_no_reader", "stalled_reader", "reading_client"):
        results["paced"].append(paced(config, args.seconds, not args.no_browser))
    base = results["paced"][0].get("p99_deviation_ms") or 0.0
    for row in results["paced"][1:]:
        row["p99_change_ms"] = round((row.get("p99_deviation_ms") or 0.0) - base, 4)
    for with_live in (False, True):
        results["lockstep"].append(lockstep(args.lockstep_seconds, with_live))
    results["machine"]["load_average_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
