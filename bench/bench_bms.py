"""BMS logic speed in the closed loop: 192s2p pack, 10 ms ticks, WLTC with a compliant VCU heard every 100 ms.

Prints JSON. Usage: python bench/bench_bms.py [--hours 1.0] [--repeat 1] [--twin-ticks 3000]

Measured, per 10 ms tick (best of ``--repeat``):
  plant_sensors                 pack.step + sensors.sample (the reference)
  plant_sensors_bms             + Bms.step (no estimator: the BMS's own tables)
  plant_sensors_estimator       + PackEstimator.update
  emulator                      Emulator.tick: plant + sensors + estimator + BMS (the issue's budget: <= 10 us)
  bms_isolated                  Bms.step (+ vcu_alive every 10th tick) in READY on frozen readings: the BMS's
                                own cost without the cache pressure of the plant
  bms_kernel_isolated           ProtectionKernel.tick alone (per-tick checks + the 100 ms per-cell task)
  bms_twin_isolated             Bms.step with the NumPy twin of the kernel
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from bms import Emulator, StateRequest, load_pack
from bms import _kernels
from hil.cycles import load_cycle
from hil.vehicle import Vehicle, power_profile

DT = 0.01


def _ready(estimator, kernels=None) -> Emulator:
    emu = Emulator(load_pack("assb60-192s2p"), seed=1, initial_soc=0.9, estimator=estimator, kernels=kernels)
    emu.run(0.4)
    emu.bms.request(StateRequest.DRIVE, emu.t_s)
    for k in range(100):
        if k % 10 == 0:
            emu.bms.vcu_alive(emu.t_s)
        emu.tick(0.0)
    assert emu.bms.state == 3, emu.bms.events[-5:]
    return emu


def loop(mode: str, ticks: int, current: list) -> float:
    """Seconds of wall time for ``ticks`` ticks of one configuration."""
    emu = _ready("auto" if mode in ("plant_sensors_estimator", "emulator") else None)
    pack, sensors, bms, est = emu.pack, emu.sensors, emu.bms, emu.estimator
    step, sample, bms_step, alive = pack.step, sensors.sample, bms.step, bms.vcu_alive
    update = est.update if est is not None else None
    limit = bms.limits
    t = emu.t_s
    start = time.perf_counter()
    if mode == "plant_sensors":
        for k in range(ticks):
            t += DT
            step(DT, current[k], 25.0)
            sample(t)
    elif mode == "plant_sensors_bms":
        for k in range(ticks):
            t += DT
            if k % 10 == 0:
                alive(t)
                limit = bms.limits
            step(DT, min(current[k], limit.discharge_current_A), 25.0)
            sample(t)
            bms_step(t, DT)
    elif mode == "plant_sensors_estimator":
        for k in range(ticks):
            t += DT
            step(DT, current[k], 25.0)
            sample(t)
            update(t, DT)
    elif mode == "emulator":
        tick = emu.tick
        for k in range(ticks):
            if k % 10 == 0:
                alive(emu.t_s)
                limit = bms.limits
            tick(min(current[k], limit.discharge_current_A))
    else:
        raise ValueError(mode)
    wall = time.perf_counter() - start
    assert bms.state in (0, 1, 3) or mode in ("plant_sensors", "plant_sensors_estimator"), bms.events[-5:]
    return wall


def isolated(ticks: int, kernel_only: bool = False, kernels=None) -> float:
    emu = _ready(None, kernels)
    bms = emu.bms
    t = emu.t_s
    if kernel_only:
        tick = bms._kernel.tick
        start = time.perf_counter()
        for _ in range(ticks):
            t += DT
            tick(t, DT)
        return time.perf_counter() - start
    step, alive = bms.step, bms.vcu_alive
    start = time.perf_counter()
    for k in range(ticks):
        t += DT
        if k % 10 == 0:
            alive(t)
        step(t, DT)
    wall = time.perf_counter() - start
    assert bms.state == 3, bms.events[-5:]
    return wall


def figure(wall: float, ticks: int) -> dict:
    return {"ticks": ticks, "wall_s": round(wall, 4), "us_per_tick": round(wall / ticks * 1e6, 3),
            "realtime_factor": round(ticks * DT / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours per closed-loop configuration")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; the best is reported")
    parser.add_argument("--twin-ticks", type=int, default=3000, help="ticks for the NumPy twin")
    args = parser.parse_args()
    ticks = int(args.hours * 3600 / DT)
    power, _ = power_profile(load_cycle("wltc"), Vehicle(), DT)
    current = np.resize(power / 700.0, ticks).tolist()
    modes = ("plant_sensors", "plant_sensors_bms", "plant_sensors_estimator", "emulator")
    best = {m: float("inf") for m in modes}
    best_iso = best_kernel = float("inf")
    for _ in range(args.repeat):  # interleaved, so a busy moment on the machine does not hit one mode only
        for m in modes:
            best[m] = min(best[m], loop(m, ticks, current))
        best_iso = min(best_iso, isolated(ticks))
        best_kernel = min(best_kernel, isolated(ticks, kernel_only=True))
    twin = isolated(args.twin_ticks, kernels=_kernels.load("numpy"))
    result = {"pack": "assb60-192s2p", "cells": 384, "dt_s": DT, "python": platform.python_version(),
              "machine": platform.machine(), "simulated_h": args.hours, "repeat": args.repeat}
    for m in modes:
        result[m] = figure(best[m], ticks)
    result["bms_isolated"] = figure(best_iso, ticks)
    result["bms_kernel_isolated"] = figure(best_kernel, ticks)
    result["bms_twin_isolated"] = figure(twin, args.twin_ticks)
    us = {m: result[m]["us_per_tick"] for m in modes}
    result["bms_us_per_tick_in_loop"] = {
        "without_estimator": round(us["plant_sensors_bms"] - us["plant_sensors"], 3),
        "with_estimator": round(us["emulator"] - us["plant_sensors_estimator"], 3)}
    result["budget_us_per_tick"] = 10.0
    result["emulator_within_budget"] = us["emulator"] <= 10.0
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
