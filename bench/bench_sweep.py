"""Sweep throughput: members per second of a 200-member sweep of short members on 1 and 2 local Dask worker
processes (and in this process), the per-member and per-task overheads, and optionally members per hour of
10-minute drives (US06). Prints JSON.

    python bench/bench_sweep.py                 # 200 members of 2 s simulated
    python bench/bench_sweep.py --long 4        # and 4 members of a 600 s US06 drive per worker count

The cluster is started before the clock runs (its start-up is reported apart): the rates are the sweep's.
Per-member overhead: the wall time a worker spends per member beyond the member's own ``run_scenario``
(parsing its scenario, KPIs, the manifest, the task's share); per-task overhead: from the same sweep cut into
one member per task and into the default chunks.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

BASE = """\
[scenario]
name = "bench"
seed = 1
initial_soc = 0.8
[[step]]
kind = "{kind}"
{step}
[[expect]]
kind = "bound"
signal = "cell_voltage_min_V"
min = 3.0
"""

SWEEP = """\
[sweep]
name = "bench"
scenario = "base.toml"
seed = 1
design = "random"
members = {members}
[[parameter]]
path = "ambient.temp_C"
min = -10.0
max = 40.0
[[parameter]]
path = "age.capacity_fraction"
min = 0.8
max = 1.0
"""


def _sweep(folder: Path, members: int, long: bool):
    from hil.sweep import load_sweep
    step = 'cycle = "us06"' if long else "current_A = 150.0\nduration_s = 2.0"
    (folder / "base.toml").write_text(BASE.format(kind="drive" if long else "current", step=step))
    (folder / "sweep.toml").write_text(SWEEP.format(members=members))
    return load_sweep(folder / "sweep.toml")


def _run(sweep, out: Path, workers: int, chunk: int | None):
    """(wall_s of the sweep alone, cluster start-up s, result)."""
    from hil.sweep.execute import run_sweep
    if workers == 0:
        start = time.perf_counter()
        result = run_sweep(sweep, out, workers=0, report=False, chunk=chunk)
        return time.perf_counter() - start, 0.0, result
    from distributed import Client, LocalCluster
    start = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=50) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("hil.runner"))  # the workers' imports, as a long-lived cluster has them
        startup = time.perf_counter() - start
        start = time.perf_counter()
        result = run_sweep(sweep, out, executor=client.get_executor(pure=False), report=False, chunk=chunk)
        wall = time.perf_counter() - start
        if workers == 2 and chunk == 1:
            result.noop_task_s = _noop_tasks(client)
        return wall, startup, result


def _noop_tasks(client, n: int = 400) -> float:
    """Wall time per task of empty chunks through the same executor path: Dask's own per-task cost."""
    from concurrent.futures import wait

    from hil.sweep.execute import run_chunk
    executor = client.get_executor(pure=False)
    start = time.perf_counter()
    wait([executor.submit(run_chunk, []) for _ in range(n)])
    return (time.perf_counter() - start) / n


def _figures(name: str, wall: float, startup: float, result, workers: int, chunk: int) -> dict:
    rows = [r for r in result.rows if r["status"] != "pending"]
    member_s = sum(r["wall_s"] for r in rows) / len(rows)
    per_member_wall = wall * max(workers, 1) / len(rows)   # a worker's wall time per member
    return {"case": name, "workers": workers, "members": len(rows), "chunk": chunk, "wall_s": round(wall, 3),
            "cluster_startup_s": round(startup, 3), "members_per_s": round(len(rows) / wall, 2),
            "members_per_hour": round(3600 * len(rows) / wall), "member_run_s": round(member_s, 4),
            "overhead_per_member_s": round(per_member_wall - member_s, 4),
            "overhead_fraction": round((per_member_wall - member_s) / member_s, 4),
            "statuses": sorted({r["status"] for r in rows})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--long", type=int, default=0, metavar="N", help="members of a 600 s US06 drive per case")
    args = parser.parse_args()
    import pyarrow.parquet  # noqa: F401  (imported before the clocks run)
    import scipy.stats  # noqa: F401

    from hil.sweep import members
    from hil.sweep.execute import chunk_size

    out = {"load_average_start": os.getloadavg(), "cpu_count": os.cpu_count(), "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sweep = _sweep(folder, args.members, long=False)
        start = time.perf_counter()
        members(sweep)
        out["design_and_member_validation_s_per_member"] = round((time.perf_counter() - start) / sweep.members, 5)
        for workers in (0, 1, 2):
            chunk = chunk_size(sweep.members, max(workers, 1), 2.0)
            wall, startup, result = _run(sweep, folder / f"short-{workers}", workers, chunk)
            out["cases"].append(_figures("short, default chunks", wall, startup, result, workers, chunk))
        wall, startup, result = _run(sweep, folder / "short-2-single", 2, 1)
        out["cases"].append(_figures("short, one member per task", wall, startup, result, 2, 1))
        chunked = next(c for c in out["cases"] if c["workers"] == 2 and c["chunk"] > 1)
        single = out["cases"][-1]
        tasks_chunked = -(-args.members // chunked["chunk"])
        extra_tasks = args.members - tasks_chunked
        out["per_task_overhead_s"] = round((single["wall_s"] - chunked["wall_s"]) * 2 / extra_tasks, 5)
        out["noop_task_wall_s"] = round(result.noop_task_s, 5)
        one = next(c for c in out["cases"] if c["workers"] == 1)
        out["speedup_2_over_1_workers"] = round(chunked["members_per_s"] / one["members_per_s"], 3)
        if args.long:
            (folder / "long").mkdir()
            rates = {}
            for workers in (1, 2):
                long_sweep = _sweep(folder / "long", args.long * workers, long=True)
                wall, startup, result = _run(long_sweep, folder / f"long-{workers}", workers, 1)
                case = _figures("US06 600 s drives", wall, startup, result, workers, 1)
                out["cases"].append(case)
                rates[workers] = case["members_per_hour"]
            out["long_speedup_2_over_1_workers"] = round(rates[2] / rates[1], 3)
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
