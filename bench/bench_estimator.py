"""The estimator's two kernels on the default pack, each path against its reference in one run. Prints JSON.

Usage: python bench/bench_estimator.py [--ticks 2000] [--repeat 5]

The tick kernel with its vectorised pass (``TickKernel.vectorise``) and through the scalar loop alone, the
100 ms task with the state-of-power search over the groups that can limit (``SlowKernel.sop_prune``) and
with a solve of every group; µs per tick (the 100 ms task averaged over the ticks), best of ``--repeat``.
The kernels are fed readings recorded from a WLTC drive (frozen readings would look stuck to the
plausibility check and skip the measurement update). Instruction counts: ``bench_loop.py --callgrind``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import bms._ext.estimators as compiled_estimators
import numpy as np
from bench_loop import driving_emulator, wltc_current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    current = wltc_current(args.ticks)
    probe, recorded = driving_emulator(), []
    for k in range(args.ticks):
        probe.tick(current[k])
        recorded.append(probe.sensors.state.reading.copy())
    rows = []
    for vectorise in (False, True):
        for prune in (False, True):
            tick_s = slow_s = float("inf")
            for _ in range(max(1, args.repeat)):
                emu = driving_emulator()
                reading, tick, slow = emu.sensors.state.reading, emu.estimator._tick, emu.estimator._slow
                tick.vectorise, slow.sop_prune = vectorise, prune
                t_tick = t_slow = 0.0
                for k in range(args.ticks):
                    np.copyto(reading, recorded[k])
                    t0 = time.perf_counter()
                    tick.tick(0.01, current[k], True, k % 10 == 0)
                    t_tick += time.perf_counter() - t0
                    if k % 10 == 9:
                        t0 = time.perf_counter()
                        slow.update()
                        t_slow += time.perf_counter() - t0
                tick_s, slow_s = min(tick_s, t_tick), min(slow_s, t_slow)
            rows.append({"vectorise": vectorise, "sop_prune": prune,
                         "tick_kernel_us_per_tick": round(tick_s / args.ticks * 1e6, 2),
                         "slow_task_us_per_tick": round(slow_s / args.ticks * 1e6, 2)})
    print(json.dumps({"vector_width": compiled_estimators.VECTOR_WIDTH,
                      "fma_contraction": compiled_estimators.FMA_CONTRACTION,
                      "load_average": os.getloadavg()[0], "ticks": args.ticks, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
