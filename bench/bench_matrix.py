"""The CAN node on the example vehicle matrix (CAN FD, big-endian, AUTOSAR E2E P05) against the built-in DBC,
in lockstep on the virtual bus with the VCU model in the loop, printed as JSON.

Figures per run: CPU microseconds per tick of the loop thread (``time.thread_time``: what the figures would be
on an otherwise idle machine; the log writer's thread is not counted) for the whole tick and for the CAN face
alone (the node's tick minus the emulator's), and the ratio matrix / built-in of the CAN face's cost (the
issue's bound: 1.2). Both runs use the same seed and the same commands.

Usage: python bench/bench_matrix.py [--seconds 60]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import can

from bms.can import CanNode, Codec
from bms.can.matrix import VcuGateway
from bms.emulator import Emulator
from hil.can_loop import CanVcu, VcuHost
from hil.matrix import example_path, load_matrix_map


def run(seconds: float, matrix, folder: Path) -> dict:
    emulator = Emulator("assb60-192s2p", seed=1, initial_soc=0.7, temp_C=25.0, dt_s=0.01)
    name = "matrix" if matrix is not None else "builtin"
    channel = f"bench-matrix-{os.getpid()}-{name}"
    node = CanNode(emulator, matrix=matrix, log=folder / f"{name}.blf", channel=channel, diag=False)
    bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
    builtin = Codec()
    firmware = CanVcu(builtin) if matrix is None else VcuGateway(CanVcu(builtin), matrix, builtin)
    vcu = VcuHost(bus, firmware, dt_s=emulator.dt_s)
    plant_cpu = [0.0]
    tick = emulator.tick

    def timed_tick(*args, _clock=time.thread_time, _tick=tick):
        t0 = _clock()
        _tick(*args)
        plant_cpu[0] += _clock() - t0
    emulator.tick = timed_tick
    ticks = int(round(seconds / emulator.dt_s))
    node_cpu = 0.0
    try:
        node.step()  # power-on (the estimator's initialisation): not counted
        plant_cpu[0] = 0.0
        for _ in range(ticks):
            t0 = time.thread_time()
            node.step()
            node_cpu += time.thread_time() - t0
            vcu.tick(node.t_s, None, emulator.sensors.link_voltage_V)
        state = emulator.bms.state.name
    finally:
        report = node.close()
        bus.shutdown()
    return {"bus": name, "ticks": ticks, "state": state, "tx_frames": report.counters["tx_frames"],
            "crc_errors": report.counters["crc_errors"],
            "tick_cpu_us": round(1e6 * node_cpu / ticks, 1),
            "can_face_cpu_us": round(1e6 * (node_cpu - plant_cpu[0]) / ticks, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated seconds per run (default 60)")
    args = parser.parse_args()
    matrix = load_matrix_map(example_path())
    with tempfile.TemporaryDirectory() as folder:
        builtin = run(args.seconds, None, Path(folder))
        vehicle = run(args.seconds, matrix, Path(folder))
    print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                      "load_average": os.getloadavg()[0], "builtin": builtin, "matrix": vehicle,
                      "can_face_ratio": round(vehicle["can_face_cpu_us"] / builtin["can_face_cpu_us"], 2),
                      "tick_ratio": round(vehicle["tick_cpu_us"] / builtin["tick_cpu_us"], 2)}, indent=2))


if __name__ == "__main__":
    main()
