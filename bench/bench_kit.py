"""Testing kit figures as JSON: the cost of a new bench, of a reset (restoring the snapshot of a settled bench), and
examples per second of a property over a 60 s simulated drive on the 192s2p pack (built-in BMS and VCU model,
lockstep with full CAN), each example starting from the process's ready bench (``hil.testing.pool``).

    python bench/bench_kit.py [--examples 5] [--drive-s 60] [--resets 200]

``--callgrind``: instructions per simulated tick of one example instead of times (deterministic on a loaded
machine), run as ``BENCH_CALLGRIND_OUT=cg.out valgrind --tool=callgrind --collect-atstart=no
--callgrind-out-file=cg.out python bench/bench_kit.py --callgrind --drive-s 20``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from hil.testing import Bench, Power, Rest, check
from hil.testing.pool import close_all, ready_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", type=int, default=5)
    ap.add_argument("--drive-s", type=float, default=60.0)
    ap.add_argument("--resets", type=int, default=200)
    ap.add_argument("--callgrind", action="store_true", help="instructions per tick (under valgrind)")
    args = ap.parse_args()
    if args.callgrind:
        _instructions(args.drive_s)
        return
    Bench().close()  # the first bench parses the DBC and computes the observer's gains once per process
    t0 = time.process_time()
    for _ in range(10):
        Bench().close()
    build_ms = (time.process_time() - t0) / 10 * 1e3
    t0 = time.process_time()
    for _ in range(5):   # what an example cost before the pool: a new bench, then its settle (precharge, close)
        with Bench() as b:
            b.run(Rest(1.0))
    fresh_ms = (time.process_time() - t0) / 5 * 1e3
    bench, _ = ready_bench(1.0)   # the first of a setup: not kept
    t0 = time.process_time()
    snap = bench.snapshot()
    snapshot_ms = (time.process_time() - t0) * 1e3
    bench.run(Power(50_000.0, 1.0))   # something to undo
    t0 = time.process_time()
    for _ in range(args.resets):
        bench.restore(snap)
    reset_ms = (time.process_time() - t0) / args.resets * 1e3
    t0 = time.process_time()
    for k in range(args.examples):
        check([Power(30_000.0 + 1_000.0 * k, args.drive_s)], settle_s=1.0)
    per_example_s = (time.process_time() - t0) / args.examples
    bench.close()
    close_all()
    print(json.dumps({"bench_build_ms_cpu": round(build_ms, 2), "new_settled_bench_ms_cpu": round(fresh_ms, 2),
                      "snapshot_ms_cpu": round(snapshot_ms, 2), "reset_ms_cpu": round(reset_ms, 3),
                      "snapshot_MB": round(snap.nbytes / 1e6, 2), "snapshot_objects": snap.objects,
                      "drive_s": args.drive_s, "examples": args.examples,
                      "cpu_s_per_example": round(per_example_s, 3), "examples_per_s": round(1.0 / per_example_s, 2),
                      "cpu_s_for_100_examples": round(100 * per_example_s, 1),
                      "simulated_x_realtime": round(args.drive_s / per_example_s, 1),
                      "load_average_1min": round(os.getloadavg()[0], 1)}))


def _instructions(drive_s: float) -> None:
    import tempfile
    from pathlib import Path

    from bench_loop import Meter
    for _ in range(2):   # the first bench of a setup is not kept; the second is the pool's (built, snapshot taken)
        bench = check([Power(30_000.0, 2.0)], settle_s=1.0)
    with tempfile.TemporaryDirectory() as folder:
        meter = Meter(True, Path(folder))
        instructions = meter.measure(lambda: check([Power(31_000.0, drive_s)], settle_s=1.0))
    ticks = round(drive_s / bench.dt_s)
    close_all()
    print(json.dumps({"drive_s": drive_s, "instructions_per_tick": round(instructions / ticks),
                      "instructions_per_example": round(instructions)}))


if __name__ == "__main__":
    main()
