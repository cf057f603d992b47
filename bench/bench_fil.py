"""Firmware slot transports. Prints JSON. Usage: python bench/bench_fil.py [--max-sim-s 600] [--steps 200000]

- library: the in-process transport's cost per tick (a firmware that does nothing, so what is measured is
  the call, the output check and the write to the actuators), BMS role on the 192s2p pack and VCU role;
  and the closed loop ``Emulator.tick`` with the example C BMS against the built-in BMS.
- process: round trips per second of the process transport (same do-nothing firmware in its own process).
- lockstep: the default scenario on virtual CAN with the example C VCU as a process, the same as a library,
  and the built-in VCU model (ratios within one run beside absolute figures: the machine is shared).
The examples are compiled with the system C compiler into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fil_support import build  # noqa: E402

from bms import Emulator  # noqa: E402
from bms.fil import BmsActuators, bms_layout, vcu_layout  # noqa: E402
from bms.fil.library import LibraryFirmware  # noqa: E402
from bms.fil.loader import FirmwareSpec  # noqa: E402
from bms.fil.process import ProcessFirmware  # noqa: E402


def _per_call_us(fw, layout, steps: int) -> float:
    fw.open(layout, 10_000_000)
    inputs = np.full(layout.n_inputs, 3.7)
    outputs = BmsActuators(layout.n_cells) if layout.role.name == "BMS" else np.zeros(1)
    step, transmit = fw.step, fw.transmit
    try:
        best = float("inf")
        for _ in range(5):  # best of five: the shared machine's quietest stretch
            t0 = time.perf_counter()
            for k in range(steps):
                step(k, 10_000_000, inputs, outputs)
                transmit()
            best = min(best, (time.perf_counter() - t0) / steps)
    finally:
        fw.close()
    return best * 1e6


def _tick_us(emu, seconds: float, current_A: float = 50.0) -> float:
    n = int(seconds / emu.dt_s)
    emu.tick(0.0)  # the estimator's first-tick initialisation out of the timing
    t0 = time.perf_counter()
    for _ in range(n):
        emu.tick(current_A)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-sim-s", type=float, default=600.0, help="simulated time of the lockstep runs")
    parser.add_argument("--steps", type=int, default=100_000, help="calls per library measurement")
    args = parser.parse_args()
    out: dict = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as folder:
        fw = build(Path(folder))
        null_bms = lambda: LibraryFirmware(fw["libmisbehave"], "bms")  # noqa: E731
        null_vcu = lambda: LibraryFirmware(fw["libmisbehave"], "vcu")  # noqa: E731
        bms_192 = bms_layout(192, 24)
        out["library"] = {
            "bms_role_us_per_tick": round(_per_call_us(null_bms(), bms_192, args.steps), 3),
            "vcu_role_us_per_tick": round(_per_call_us(null_vcu(), vcu_layout(), args.steps), 3),
            "goal_us_per_tick": 2.0,
        }
        builtin = Emulator(seed=1, initial_soc=0.6)
        c_bms = Emulator(seed=1, initial_soc=0.6, firmware=LibraryFirmware(fw["libbms"], "bms"))
        t_builtin, t_c = _tick_us(builtin, 30.0), _tick_us(c_bms, 30.0)
        c_bms.close()
        out["library"]["closed_loop_builtin_bms_us_per_tick"] = round(t_builtin, 2)
        out["library"]["closed_loop_c_bms_library_us_per_tick"] = round(t_c, 2)
        out["library"]["overhead_share_of_builtin_loop"] = round(out["library"]["bms_role_us_per_tick"] / t_builtin, 4)

        n = max(5000, args.steps // 5)
        proc = ProcessFirmware([fw["misbehave"]], "vcu")
        us = _per_call_us(proc, vcu_layout(), n)
        out["process"] = {"round_trips_per_s": round(1e6 / us), "us_per_round_trip": round(us, 2),
                          "goal_round_trips_per_s": 25_000}
        proc = ProcessFirmware([fw["misbehave"]], "bms")
        out["process"]["bms_role_192_cells_round_trips_per_s"] = round(1e6 / _per_call_us(proc, bms_192, n))

        from hil.runner import run_scenario
        from hil.scenario import load_scenario
        scenario = load_scenario("default")
        runs = {}
        for label, spec in (("c_vcu_process", FirmwareSpec("vcu", "process", str(fw["vcu"]))),
                            ("c_vcu_library", FirmwareSpec("vcu", "library", str(fw["libvcu"]))),
                            ("builtin_vcu", None)):
            cpu = time.process_time()
            result = run_scenario(scenario, out_dir=None, mode="lockstep", plots=False, max_sim_s=args.max_sim_s,
                                  can_options={"log": [str(Path(folder) / f"{label}.blf")]}, firmware=spec)
            s = result.summary
            runs[label] = {"simulated_s": round(s["simulated_s"], 1), "wall_s": round(s["wall_s"], 2),
                           "realtime_factor": round(s["realtime_factor"], 1), "passed": s["passed"],
                           "process_cpu_s": round(time.process_time() - cpu, 2)}
        base = runs["builtin_vcu"]["wall_s"]
        for label in runs:
            runs[label]["wall_vs_builtin_vcu"] = round(runs[label]["wall_s"] / base, 3)
        out["lockstep_default"] = runs
    out["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
