"""BMS logic speed in the closed loop: 192s2p pack, 10 ms ticks, WLTC with a compliant VCU heard every 100 ms.

Prints JSON. Usage: python bench/bench_bms.py [--hours 1.0] [--repeat 1] [--twin-ticks 3000]

The load is what a compliant VCU draws: the WLTC demand clipped to both published limits (discharge and
charge), read every 100 ms. Every timed section must end where it started, in READY with no state change
(no fault, no opened contactors): a run that leaves READY stops the bench with an error instead of timing a
pack that did nothing. The plant-only references drive the same demand within the limits as published when
READY was reached (no BMS runs there to change them).

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

from bms import BmsState, Emulator, StateRequest, _kernels, load_pack
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
    require_ready(emu, emu.t_s, "reaching READY")  # READY now; how it got there does not matter
    return emu


def require_ready(emu: Emulator, since_s: float, what: str) -> None:
    """Stop the bench unless the BMS is in READY with main contactors closed and has not changed state since
    ``since_s`` (not ``assert``: the check must hold under ``python -O`` too)."""
    bms, closed = emu.bms, emu.pack.contactors_closed
    changes = [e for e in bms.events if e.kind == "state" and e.t_s > since_s]
    if bms.state != BmsState.READY or changes or not (closed["main_positive"] and closed["main_negative"]):
        raise SystemExit(f"bench_bms: {what} did not stay in READY (state {BmsState(bms.state).name}, "
                         f"contactors {closed}); state changes: {changes}; last events: {bms.events[-5:]}")


def within_limits(demand_A: float, limits) -> float:
    """What a compliant VCU draws: the demand clipped to the discharge and the charge limit."""
    return min(max(demand_A, -limits.charge_current_A), limits.discharge_current_A)


def loop(mode: str, ticks: int, demand: list) -> float:
    """Seconds of wall time for ``ticks`` ticks of one configuration."""
    emu = _ready("auto" if mode in ("plant_sensors_estimator", "emulator") else None)
    pack, sensors, bms, est = emu.pack, emu.sensors, emu.bms, emu.estimator
    step, sample, bms_step, alive = pack.step, sensors.sample, bms.step, bms.vcu_alive
    update = est.update if est is not None else None
    t = t_start = emu.t_s
    # the references without a BMS drive the demand within the limits as published now
    ready_limits = bms.limits
    current = [within_limits(i, ready_limits) for i in demand]
    dis_A, ch_A = ready_limits.discharge_current_A, -ready_limits.charge_current_A
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
                dis_A, ch_A = limit.discharge_current_A, -limit.charge_current_A
            i = demand[k]
            step(DT, dis_A if i > dis_A else (ch_A if i < ch_A else i), 25.0)
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
                dis_A, ch_A = limit.discharge_current_A, -limit.charge_current_A
            i = demand[k]
            tick(dis_A if i > dis_A else (ch_A if i < ch_A else i))
    else:
        raise ValueError(mode)
    wall = time.perf_counter() - start
    require_ready(emu, t_start, f"the timed {mode} section")
    return wall


def isolated(ticks: int, kernel_only: bool = False, kernels=None) -> float:
    emu = _ready(None, kernels)
    bms = emu.bms
    t = t_start = emu.t_s
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
    require_ready(emu, t_start, "the timed bms_isolated section")
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
    demand = np.resize(power / 700.0, ticks).tolist()
    modes = ("plant_sensors", "plant_sensors_bms", "plant_sensors_estimator", "emulator")
    best = {m: float("inf") for m in modes}
    best_iso = best_kernel = float("inf")
    for _ in range(args.repeat):  # interleaved, so a busy moment on the machine does not hit one mode only
        for m in modes:
            best[m] = min(best[m], loop(m, ticks, demand))
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
