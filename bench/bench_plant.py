"""Plant (and sensor) kernel speed: the 192s2p pack stepped one tick per call, as the emulator loop does.

Prints JSON. Usage: python bench/bench_plant.py [--hours 1.0] [--twin-ticks 3000]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from bms import Pack, SensorLayer, _kernels, load_pack
from hil.cycles import load_cycle
from hil.drive import precharge_and_close
from hil.vehicle import Vehicle, power_profile


def run(kernels, ticks: int, dt_s: float, with_sensors: bool) -> dict:
    params = load_pack("assb60-192s2p")
    pack = Pack(params, initial_soc=0.9, seed=1, kernels=kernels)
    sensors = SensorLayer(pack, seed=2, kernels=kernels)
    precharge_and_close(pack, dt_s)
    power, _ = power_profile(load_cycle("wltc"), Vehicle(), dt_s)
    current = np.resize(power / 700.0, ticks).tolist()
    step, sample = pack.step, sensors.sample
    start = time.perf_counter()
    if with_sensors:
        for k in range(ticks):
            step(dt_s, current[k], 25.0)
            sample(k * dt_s)
    else:
        for k in range(ticks):
            step(dt_s, current[k], 25.0)
    wall = time.perf_counter() - start
    return {"ticks": ticks, "wall_s": round(wall, 4), "us_per_tick": round(wall / ticks * 1e6, 3),
            "cell_steps_per_s": round(ticks * params.n_cells / wall), "realtime_factor": round(ticks * dt_s / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours for the compiled kernels")
    parser.add_argument("--twin-ticks", type=int, default=3000, help="ticks for the (slow) NumPy twin")
    args = parser.parse_args()
    dt = 0.01
    ticks = int(args.hours * 3600 / dt)
    compiled, twin = _kernels.load("compiled"), _kernels.load("numpy")
    result = {
        "pack": "assb60-192s2p", "cells": 384, "dt_s": dt, "python": platform.python_version(),
        "compiled_plant": run(compiled, ticks, dt, with_sensors=False),
        "compiled_plant_and_sensors": run(compiled, ticks, dt, with_sensors=True),
        "twin_plant": run(twin, args.twin_ticks, dt, with_sensors=False),
        "twin_plant_and_sensors": run(twin, args.twin_ticks, dt, with_sensors=True),
    }
    result["speedup_plant"] = round(result["compiled_plant"]["cell_steps_per_s"]
                                    / result["twin_plant"]["cell_steps_per_s"], 1)
    result["speedup_plant_and_sensors"] = round(result["compiled_plant_and_sensors"]["cell_steps_per_s"]
                                                / result["twin_plant_and_sensors"]["cell_steps_per_s"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
