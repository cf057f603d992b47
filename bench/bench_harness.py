"""Scenario runs end to end: the default scenario (WLTC x3, 192s2p) headless and in lockstep with the full
CAN traffic logged to BLF. Prints JSON. Usage: python bench/bench_harness.py [--max-sim-s 5400]

``wall_s`` and ``realtime_factor`` are the runner's loop; ``process_cpu_s`` is the CPU time of the whole run
(every thread, reports included): on a shared machine it moves less than the wall time.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hil.runner import run_scenario
from hil.scenario import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", default="default")
    parser.add_argument("--max-sim-s", type=float, default=None, help="shorten the run (default: all of it)")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    out = {"scenario": scenario.name}
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("headless", "lockstep"):
            options = {"log": [str(Path(folder) / "bus.blf")]} if mode == "lockstep" else None
            cpu = time.process_time()
            result = run_scenario(scenario, out_dir=Path(folder) / mode, mode=mode, plots=False,
                                  max_sim_s=args.max_sim_s, can_options=options)
            cpu = time.process_time() - cpu  # every thread (the log writer too), reports included
            s = result.summary
            out[mode] = {"simulated_s": round(s["simulated_s"], 1), "wall_s": round(s["wall_s"], 2),
                         "realtime_factor": round(s["realtime_factor"], 1),
                         "us_per_tick": round(1e6 * s["wall_s"] * scenario.dt_s / s["simulated_s"], 1),
                         "process_cpu_s": round(cpu, 2), "passed": s["passed"],
                         "soc_error_rms_pct": round(s["soc_error_rms_pct"], 3)}
            if mode == "lockstep":
                out[mode]["bus_log_MB"] = round((Path(folder) / "bus.blf").stat().st_size / 1e6, 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
