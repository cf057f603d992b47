"""The CAN node's speed and timing, printed as JSON.

1. lockstep: the 192s2p emulator (plant, sensors, estimators, BMS) with every cyclic BMS message of the DBC
   on the virtual bus, logging to BLF; alone on the bus, then with a VCU peer in the loop (VCU_Command and
   HIL_Load every 10 ms, CHG_Status every 100 ms, all of them received and checked by the node).
   Figures: simulated seconds per wall second (target >= 100x), and per CPU second of the process (what the
   figure would be on an otherwise idle machine: the 2-core machines here are shared).
2. wall clock: the same node paced by absolute 10 ms deadlines for --seconds (default 60), idle and with a
   busy-loop process saturating the other core; with normal scheduling and, where permitted, SCHED_FIFO.
   Figures: |deviation| of the 10 ms periods of every 10 ms message (p99, max), and the tick's wake-up
   lateness. python-can's own ``send_periodic`` (one 10 ms task) is measured beside it for reference.

Usage: python bench/bench_can.py [--seconds 60] [--lockstep-seconds 120] [--skip-wall] [--skip-lockstep]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

import can

from bms.can import CanNode, Codec, VirtualClock, WallClock
from bms.emulator import Emulator


def _burn(stop_at: float) -> None:  # pragma: no cover - runs in a child process
    x = 0
    while time.time() < stop_at:
        x += 1


def _emulator(seed: int = 1) -> Emulator:
    return Emulator("assb60-192s2p", seed=seed, initial_soc=0.7, temp_C=25.0, dt_s=0.01)


def lockstep(seconds: float, with_peer: bool, folder: Path) -> dict:
    emulator = _emulator()
    log = folder / f"lockstep{'-peer' if with_peer else ''}.blf"
    channel = f"bench-lockstep-{os.getpid()}-{with_peer}"
    node = CanNode(emulator, clock=VirtualClock(), log=log, channel=channel, load_current_A=0.0)
    codec = Codec()
    peer = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True) if with_peer else None
    try:
        ticks = int(round(seconds / 0.01))
        start, cpu_start = time.perf_counter(), time.process_time()
        if peer is None:
            node.run_for(seconds)  # power-on tick included
        else:
            node.start()  # power-on: the first of the ticks
            vcu, load, chg = codec["VCU_Command"], codec["HIL_Load"], codec["CHG_Status"]
            for k in range(1, ticks):
                t = k * 0.01
                drive = 2 if k >= 10 else 1
                peer.send(can.Message(arbitration_id=vcu.frame_id, is_extended_id=False, timestamp=t,
                                      data=vcu.protect(vcu.encode({"StateRequest": drive}), k % 16)))
                peer.send(can.Message(arbitration_id=load.frame_id, is_extended_id=False, timestamp=t,
                                      data=load.encode({"LoadCurrent": 80.0 if k > 100 else 0.0,
                                                        "CoolantTemperature": 25.0, "CoolingFactor": 1.0})))
                if k % 10 == 0:
                    peer.send(can.Message(arbitration_id=chg.frame_id, is_extended_id=False, timestamp=t,
                                          data=chg.protect(chg.encode({"ChargerConnected": 0}), (k // 10) % 16)))
                node.run_for(0.01)
                while peer.recv(0) is not None:
                    pass
        report = node.close()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        node.close()
        if peer is not None:
            peer.shutdown()
    return {"peer": with_peer, "simulated_s": report.simulated_s, "wall_s": round(wall, 3),
            "realtime_factor": round(report.simulated_s / wall, 1), "us_per_tick": round(wall / ticks * 1e6, 1),
            "cpu_s": round(cpu, 3), "realtime_factor_cpu": round(report.simulated_s / cpu, 1),
            "frames_tx": report.counters["tx_frames"], "frames_rx": report.counters["rx_frames"],
            "frames_logged": report.log_frames, "log_bytes": log.stat().st_size,
            "bms_state_end": int(emulator.bms.state)}


def lockstep_without_can(seconds: float) -> dict:
    """The emulator alone (no bus, no log): what the CAN node adds is the difference."""
    emulator = _emulator()
    ticks = int(round(seconds / 0.01))
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(ticks):
        emulator.tick(0.0)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"simulated_s": seconds, "wall_s": round(wall, 3), "realtime_factor": round(seconds / wall, 1),
            "us_per_tick": round(wall / ticks * 1e6, 1), "realtime_factor_cpu": round(seconds / cpu, 1)}


def _ten_ms_stats(report) -> dict:
    rows = [r for r in report.cycle_times if r.get("period_ms") == 10.0 and r["direction"] == "tx"]
    tick = next(r for r in report.cycle_times if r["message"] == "<tick>")
    return {"messages": [r["message"] for r in rows], "periods": sum(r.get("frames", 1) - 1 for r in rows),
            "p99_abs_deviation_ms": max(r["p99_abs_deviation_ms"] for r in rows),
            "max_abs_deviation_ms": max(r["max_abs_deviation_ms"] for r in rows),
            "mean_abs_deviation_ms": round(sum(r["mean_abs_deviation_ms"] for r in rows) / len(rows), 4),
            "tick_wake_p99_ms": tick["p99_abs_deviation_ms"], "overruns": report.overruns,
            "skipped_ticks": report.skipped_ticks, "max_lateness_ms": round(report.max_lateness_ms, 3)}


def wall(seconds: float, loaded: bool, rt_priority: int | None, folder: Path) -> dict:
    emulator = _emulator()
    clock = WallClock(rt_priority=rt_priority)
    node = CanNode(emulator, clock=clock, log=folder / "wall.blf", channel=f"bench-wall-{os.getpid()}")
    burner = None
    if loaded:
        burner = multiprocessing.Process(target=_burn, args=(time.time() + seconds + 5,), daemon=True)
        burner.start()
    try:
        report = node.run(seconds)
    finally:
        node.close()
        if burner is not None:
            burner.terminate()
            burner.join()
    out = {"loaded": loaded, "sched_fifo": rt_priority if rt_priority and not clock.rt_error else None,
           "seconds": seconds, **_ten_ms_stats(report)}
    if rt_priority and clock.rt_error:
        out["sched_fifo_error"] = clock.rt_error
    return out


def python_can_send_periodic(seconds: float, loaded: bool) -> dict:
    """Reference: python-can's broadcast manager, one 10 ms task on a virtual bus, received by a peer."""
    channel = f"bench-bcm-{os.getpid()}"
    burner = None
    if loaded:
        burner = multiprocessing.Process(target=_burn, args=(time.time() + seconds + 5,), daemon=True)
        burner.start()
    tx = can.Bus(interface="virtual", channel=channel)
    rx = can.Bus(interface="virtual", channel=channel)
    stamps = []
    try:
        task = tx.send_periodic(can.Message(arbitration_id=0x100, data=bytes(8), is_extended_id=False), 0.01)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            msg = rx.recv(0.1)
            if msg is not None:
                stamps.append(msg.timestamp)
        task.stop()
    finally:
        tx.shutdown()
        rx.shutdown()
        if burner is not None:
            burner.terminate()
            burner.join()
    devs = sorted(abs((b - a) - 0.01) for a, b in zip(stamps, stamps[1:]))
    return {"loaded": loaded, "periods": len(devs),
            "p99_abs_deviation_ms": round(devs[int(0.99 * (len(devs) - 1))] * 1e3, 3) if devs else None,
            "max_abs_deviation_ms": round(devs[-1] * 1e3, 3) if devs else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-clock run length, s (default: 60)")
    parser.add_argument("--lockstep-seconds", type=float, default=120.0,
                        help="simulated seconds of each lockstep run (default: 120)")
    parser.add_argument("--skip-wall", action="store_true")
    parser.add_argument("--skip-lockstep", action="store_true")
    parser.add_argument("--rt-priority", type=int, default=50, help="SCHED_FIFO priority to try (0: skip)")
    args = parser.parse_args()
    result = {"pack": "assb60-192s2p", "dt_s": 0.01, "python": platform.python_version(),
              "python_can": can.__version__, "cpus": os.cpu_count(),
              "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.skip_lockstep:
            result["emulator_alone"] = lockstep_without_can(min(args.lockstep_seconds, 60.0))
            result["lockstep_blf"] = lockstep(args.lockstep_seconds, False, folder)
            result["lockstep_blf_with_vcu_peer"] = lockstep(args.lockstep_seconds, True, folder)
        if not args.skip_wall:
            runs = [(False, None), (True, None)]
            if args.rt_priority:
                runs += [(False, args.rt_priority), (True, args.rt_priority)]
            result["wall"] = [wall(args.seconds, loaded, rt, folder) for loaded, rt in runs]
            result["python_can_send_periodic"] = [python_can_send_periodic(min(args.seconds, 20.0), loaded)
                                                  for loaded in (False, True)]
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
