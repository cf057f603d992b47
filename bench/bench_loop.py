"""The closed loop's speed, every ratio measured within one run. Prints JSON.

Usage: python bench/bench_loop.py [--sim-s 600] [--part-ticks 20000] [--repeat 3] [--sizes 96s4p,192s2p,240s3p]

Figures:
  scenario.headless / scenario.lockstep   the default scenario (WLTC, 192s2p) through ``hil.runner``: headless,
                                          and lockstep with every DBC message on python-can's virtual bus and
                                          the BLF log; ticks/s, x real time, µs per tick
  ratios                                  lockstep / headless, headless / plant kernel (the same run)
  parts_us_per_tick                       one tick taken apart (``Emulator.tick`` on a driving pack, each part
                                          timed in place): plant kernel, sensors, estimator tick, the 100 ms
                                          task averaged over its ticks, the BMS logic, the Python around them
  flop_limit                              a calibration loop of the plant's operation mix (mul/add/div on 384
                                          cells) against the plant kernel's cost per cell-step; the same loop
                                          four cells at a time (independent chains: the scalar throughput
                                          limit, where the one-cell loop waits on its chains' latency);
                                          under --callgrind, flops per instruction instead of per second
  sizes                                   ``Emulator.tick`` and the plant kernel per tick against pack size

``--callgrind``: run under ``valgrind --tool=callgrind --collect-atstart=no``; the bench then counts the
instructions of each measured loop (deterministic on a loaded machine) through callgrind's client requests
(a small C helper it compiles with ``cc``) and prints Ir per tick instead of times. Keep it short there:
``valgrind --tool=callgrind --collect-atstart=no python bench/bench_loop.py --callgrind --sim-s 20
--part-ticks 500``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bms import Emulator, StateRequest, load_pack
from bms._kernels import KERNELS
from hil.cycles import load_cycle
from hil.runner import run_scenario
from hil.scenario import load_scenario
from hil.vehicle import Vehicle, power_profile

DT = 0.01
# the plant kernel's floating-point operations (mul/add/sub/div) per cell-step of the 192s2p pack, counted
# from ext/plant.pyx: cache check 1, sources 23, group sums 6.5, group voltages 1, currents and heat 50,
# charge and hysteresis 17, thermal 17, Arrhenius check 1, end-of-step sources 30, terminal sums 4 (4 of
# them divisions). The Arrhenius exponentials (on a 0.01 K change) and the kernel before the end-of-step
# values were kept for the next step (which recomputed 15 more per cell, the same physics) are not counted.
PLANT_FLOPS_PER_CELL_STEP = 150
_HELPER = r"""
#include <valgrind/callgrind.h>
void cg_begin(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void cg_end(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; }
/* the plant's mix per cell: 128 dependent mul/add/sub in two chains and 2 divisions, cells independent */
void calibrate(const double* x, const double* y, double* out, int n, int reps) {
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < n; k++) {
            double a = x[k], b = y[k], c = a * b, d = a + b;
            for (int j = 0; j < 16; j++) { c = c * 0.999 + d * 1e-3; d = d * 0.998 + a * b - c * 1e-3; }
            out[k] += c / (d + 1.0) + a / (b + 2.0);
        }
    }
}
/* the same mix four cells at a time: eight independent chains, what the FP units sustain in scalar code */
#define CELL_IN(m) double a##m = x[k + m], b##m = y[k + m], c##m = a##m * b##m, d##m = a##m + b##m;
#define CELL_J(m) c##m = c##m * 0.999 + d##m * 1e-3; d##m = d##m * 0.998 + a##m * b##m - c##m * 1e-3;
#define CELL_OUT(m) out[k + m] += c##m / (d##m + 1.0) + a##m / (b##m + 2.0);
void calibrate4(const double* x, const double* y, double* out, int n, int reps) {
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k + 3 < n; k += 4) {
            CELL_IN(0) CELL_IN(1) CELL_IN(2) CELL_IN(3)
            for (int j = 0; j < 16; j++) { CELL_J(0) CELL_J(1) CELL_J(2) CELL_J(3) }
            CELL_OUT(0) CELL_OUT(1) CELL_OUT(2) CELL_OUT(3)
        }
    }
}
"""
CALIBRATION_FLOPS_PER_CELL = 16 * 8 + 6


class Meter:
    """Wall time of a measured section, or under callgrind its instruction count."""

    def __init__(self, callgrind: bool, folder: Path, repeat: int = 1):
        self.repeat = 1 if callgrind else max(1, repeat)
        src, so = folder / "cg.c", folder / "libcg.so"
        src.write_text(_HELPER)
        # scalar code: no vectorisation, no FMA contraction (the "scalar floating-point limit")
        subprocess.run(["cc", "-O2", "-fno-tree-vectorize", "-ffp-contract=off", "-shared", "-fPIC", str(src),
                        "-o", str(so)], check=True)
        self.helper = ctypes.CDLL(str(so))
        self.lib = self.helper if callgrind else None
        if callgrind:
            self.out = _callgrind_out_base()
            self.dumps = 0

    def measure(self, fn) -> float:
        """Seconds (or instructions under callgrind) that ``fn()`` takes."""
        if self.lib is None:  # the best of ``repeat`` runs: a busy moment of a shared machine hits one run
            best = float("inf")
            for _ in range(self.repeat):
                start = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - start)
            return best
        self.lib.cg_begin()
        fn()
        self.lib.cg_end()
        self.dumps += 1
        return float(_read_totals(Path(f"{self.out}.{self.dumps}")))


def _callgrind_out_base() -> str:
    """callgrind's output file name for this process (its --callgrind-out-file or the default)."""
    for arg in os.environ.get("BENCH_CALLGRIND_OUT", "").split():
        return arg
    return f"callgrind.out.{os.getpid()}"


def _read_totals(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line (run under valgrind --tool=callgrind --collect-atstart=no "
                       f"--callgrind-out-file=$BENCH_CALLGRIND_OUT)")


def driving_emulator(pack: str | object = "assb60-192s2p") -> Emulator:
    """An emulator with its contactors closed and the BMS in READY, as during a drive."""
    params = load_pack(pack) if isinstance(pack, str) else pack
    emu = Emulator(params, seed=1, initial_soc=0.9)
    emu.run(0.4)
    emu.bms.request(StateRequest.DRIVE, emu.t_s)
    for k in range(100):
        if k % 10 == 0:
            emu.bms.vcu_alive(emu.t_s)
        emu.tick(0.0)
    if int(emu.bms.state) != 3:
        raise RuntimeError(f"the BMS did not reach READY: {emu.bms.events[-3:]}")
    return emu


def wltc_current(ticks: int, n_series: int = 192) -> list[float]:
    power, _ = power_profile(load_cycle("wltc"), Vehicle(), DT)
    return np.resize(power / (3.7 * n_series), ticks).tolist()


def parts(meter: Meter, ticks: int) -> dict:
    """Each part of ``Emulator.tick`` on its own loop over the same drive (the sum is not the tick: the
    parts share caches in the tick), then the whole tick."""
    current = wltc_current(ticks)
    out = {}
    emu = driving_emulator()
    pack_step, sample, est, bms, fw = emu.pack.step, emu.sensors.sample, emu.estimator, emu.bms, emu.firmware
    t0 = emu.t_s

    def plant():
        for k in range(ticks):
            pack_step(DT, current[k], 25.0, 1.0)

    clock = {"t": t0, "n": emu.ticks}  # the time the stateful parts' loops go on from (each repeat too)

    def sensors():
        t = clock["t"]
        for _ in range(ticks):
            t += DT
            sample(t)
        clock["t"] = t

    tick_kernel = est._tick.tick
    slow_kernel = est._slow.update
    # the estimator on readings that move as in the loop: frozen readings look stuck to its plausibility
    # check, which then skips the measurement update (a third of the instructions)
    reading = emu.sensors.state.reading
    recorded = []
    probe = driving_emulator()
    for k in range(ticks):
        probe.tick(current[k])
        recorded.append(probe.sensors.state.reading.copy())
    copyto = np.copyto

    def estimator():  # the tick kernel, and the 100 ms task every 10th tick (it works on what they gathered)
        for k in range(ticks):
            copyto(reading, recorded[k])
            tick_kernel(DT, current[k], True, k % 10 == 0)
            if k % 10 == 9:
                slow_kernel()

    def bms_step():
        t = clock["t"]
        for k in range(ticks):
            t += DT
            if k % 10 == 0:
                bms.vcu_alive(t)
            bms.step(t, DT)
        clock["t"] = t

    def firmware_step():  # the slot's wrapper: estimator update (tick + 100 ms task) and BMS logic
        step, inputs, outputs, dt_ns = fw.step, emu.inputs, emu.actuators, emu.dt_ns
        n0 = round(clock["t"] / DT)
        for k in range(ticks):
            if k % 10 == 0:
                bms.vcu_alive((n0 + k) * DT)
            step((n0 + k + 1) * dt_ns, dt_ns, inputs, outputs)
        clock["t"] = (n0 + ticks) * DT

    fresh = driving_emulator()  # the whole tick on a pack of its own (the parts above moved their clocks)

    def whole():
        tick, alive = fresh.tick, fresh.bms.vcu_alive
        for k in range(ticks):
            if k % 10 == 0:
                alive(fresh.t_s)
            tick(current[k])

    for name, fn in (("plant_kernel", plant), ("sensors", sensors), ("estimator_kernels", estimator),
                     ("bms_logic", bms_step), ("firmware_slot_step", firmware_step), ("emulator_tick", whole)):
        out[name] = meter.measure(fn) / ticks
    out["python_glue"] = out["emulator_tick"] - (out["plant_kernel"] + out["sensors"] + out["firmware_slot_step"])
    return out


class _LoopMeter:
    """The runner's progress hook: ``start`` is called right before its loop and ``close`` right after, so
    under callgrind the instructions of the loop alone are counted (no bus, codec or report set-up)."""

    def __init__(self, meter: Meter):
        self.meter, self.count = meter, 0.0

    def start(self, total_s: float) -> None:
        if self.meter.lib is not None:
            self.meter.lib.cg_begin()

    def update(self, t_s: float) -> None:
        pass

    def close(self, t_s: float) -> None:
        if self.meter.lib is not None:
            self.meter.lib.cg_end()
            self.meter.dumps += 1
            self.count = float(_read_totals(Path(f"{self.meter.out}.{self.meter.dumps}")))


def scenario_runs(meter: Meter, sim_s: float, folder: Path) -> dict:
    scenario = load_scenario("default")
    out = {}
    for mode in ("headless", "lockstep"):
        options = {"log": [str(folder / f"bus-{mode}.blf")]} if mode == "lockstep" else None
        runs = []
        for _ in range(meter.repeat):
            loop = _LoopMeter(meter)
            runs.append((run_scenario(scenario, out_dir=None, mode=mode, plots=False, max_sim_s=sim_s,
                                      can_options=options, progress=loop).summary, loop))
        s, loop = min(runs, key=lambda r: r[0]["wall_s"])
        ticks = round(s["simulated_s"] / scenario.dt_s)
        figure = {"simulated_s": round(s["simulated_s"], 2), "ticks": ticks}
        if meter.lib is None:  # the runner's own loop time (no bus set-up, no reports)
            figure.update(wall_s=round(s["wall_s"], 3), ticks_per_s=round(ticks / s["wall_s"]),
                          realtime_factor=round(s["simulated_s"] / s["wall_s"], 1),
                          us_per_tick=round(1e6 * s["wall_s"] / ticks, 2))
        else:  # instructions of the runner's loop (the log writer's thread included)
            figure.update(Ir_per_tick=round(loop.count / ticks))
        out[mode] = figure
    return out


def flop_limit(meter: Meter, plant_per_tick: float, n_cells: int, ticks: int) -> dict:
    """The machine's scalar floating-point rate on the plant's operation mix (a compiled calibration loop over
    ``n_cells`` independent cells), and the plant kernel's rate as a fraction of it."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0.1, 0.9, n_cells), rng.uniform(0.1, 0.9, n_cells)
    out = np.zeros(n_cells)
    ptr = ctypes.POINTER(ctypes.c_double)
    args = [a.ctypes.data_as(ptr) for a in (x, y, out)]
    n = ctypes.c_int(n_cells - n_cells % 4)
    cost, cost4 = (meter.measure(lambda f=fn: f(*args, n, ctypes.c_int(ticks))) / (ticks * n.value)
                   for fn in (meter.helper.calibrate, meter.helper.calibrate4))
    per_cell = plant_per_tick / n_cells
    result = {"calibration_per_cell_step": cost, "calibration_independent_per_cell_step": cost4,
              "plant_per_cell_step": per_cell}
    rate = "GFLOP_per_s" if meter.lib is None else "flops_per_instruction"
    unit = 1e9 if meter.lib is None else 1.0
    result[f"calibration_{rate}"] = round(CALIBRATION_FLOPS_PER_CELL / cost / unit, 3)
    result[f"calibration_independent_{rate}"] = round(CALIBRATION_FLOPS_PER_CELL / cost4 / unit, 3)
    result[f"plant_{rate}"] = round(PLANT_FLOPS_PER_CELL_STEP / per_cell / unit, 3)
    # the ratio (against the one-cell loop), and against the scalar throughput limit
    result["plant_fraction_of_limit"] = round(result[f"plant_{rate}"] / result[f"calibration_{rate}"], 3)
    result["plant_fraction_of_independent_limit"] = round(
        result[f"plant_{rate}"] / result[f"calibration_independent_{rate}"], 3)
    return result


def _size_loops(emu: Emulator, current: list[float], ticks: int):
    bms, step = emu.bms, emu.pack.step

    def whole():
        tick = emu.tick
        for k in range(ticks):
            if k % 10 == 0:
                bms.vcu_alive(emu.t_s)
            tick(current[k])

    def plant():
        for k in range(ticks):
            step(DT, current[k], 25.0, 1.0)

    return whole, plant


def sizes(meter: Meter, ticks: int, names: list[str]) -> dict:
    out = {}
    for name in names:
        match = re.fullmatch(r"(\d+)s(\d+)p", name.lower())
        if match is None:
            raise SystemExit(f"--sizes: {name!r} is not a size like 192s2p")
        series, parallel = int(match[1]), int(match[2])
        preset = f"assb60-{name}"
        try:
            params = load_pack(preset)
        except Exception:  # noqa: BLE001 - a size without a preset: the 192s2p pack resized
            params = load_pack("assb60-192s2p", overrides={"pack": {"n_series": series, "n_parallel": parallel,
                                                                    "n_modules": series // 8}})
        whole, plant = _size_loops(driving_emulator(params), wltc_current(ticks, series), ticks)
        tick_cost = meter.measure(whole) / ticks
        plant_cost = meter.measure(plant) / ticks
        out[name] = {"cells": series * parallel, "emulator_tick": tick_cost, "plant_kernel": plant_cost,
                     "emulator_tick_per_cell": tick_cost / (series * parallel)}
    return out


def _fmt(d, callgrind: bool):
    """µs (or instructions, one decimal below 1000) rounded for printing; rates and fractions as they are."""
    if not isinstance(d, dict):
        return d

    def one(k, v):
        if not isinstance(v, float) or "flop" in k.lower() or "fraction" in k:
            return _fmt(v, callgrind)
        if callgrind:
            return round(v) if abs(v) >= 1000 else round(v, 1)
        return round(v * 1e6, 3)
    return {k: one(k, v) for k, v in d.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim-s", type=float, default=600.0, help="simulated seconds of each scenario run")
    parser.add_argument("--part-ticks", type=int, default=20000, help="ticks of each part's loop")
    parser.add_argument("--sizes", default="96s4p,192s2p,240s3p", help="pack sizes (empty: none)")
    parser.add_argument("--no-scenario", action="store_true", help="the parts and sizes only (a kernel build)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each loop; the best is reported")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (run under callgrind)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meter = Meter(args.callgrind, folder, args.repeat)
        unit = "Ir" if args.callgrind else "us"
        result = {"python": platform.python_version(), "machine": platform.machine(),
                  "processor": _cpu_name(), "load_average": os.getloadavg()[0], "kernels": KERNELS.name,
                  "isa": KERNELS.isa, "unit": f"{unit} per tick"}
        part = parts(meter, args.part_ticks)
        result["parts_per_tick"] = _fmt(part, args.callgrind)
        result["flop_limit"] = _fmt(flop_limit(meter, part["plant_kernel"], 384, args.part_ticks),
                                    args.callgrind)
        result["ratios"] = {"emulator_tick_over_plant_kernel": round(part["emulator_tick"] / part["plant_kernel"], 3)}
        if not args.no_scenario:
            result["scenario"] = runs = scenario_runs(meter, args.sim_s, folder)
            key = "Ir_per_tick" if args.callgrind else "us_per_tick"
            head, lock = runs["headless"][key], runs["lockstep"][key]
            plant_unit = part["plant_kernel"] if args.callgrind else part["plant_kernel"] * 1e6
            result["ratios"].update(lockstep_over_headless=round(lock / head, 3),
                                    headless_over_plant_kernel=round(head / plant_unit, 3))
        names = [s for s in args.sizes.split(",") if s]
        if names:
            result["sizes"] = _fmt(sizes(meter, max(200, args.part_ticks // 4), names), args.callgrind)
        result["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
