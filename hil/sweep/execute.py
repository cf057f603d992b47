"""Runs a sweep's members: on local worker processes (a Dask ``LocalCluster``), an existing Dask cluster, any
``concurrent.futures.Executor`` (``client.get_executor()``, a ``ProcessPoolExecutor``), or in this process.

Members go out in chunks (several short members per task: a task's overhead is paid once per chunk), a few
chunks per worker in flight at a time. Each finished chunk's rows go into the manifest at once, so a stop
(Ctrl-C, SIGTERM: ``hil.stopping``) or a kill loses at most the members in flight; a rerun skips the rest.
A member that raises is recorded with its error and the sweep goes on; a task lost with its worker leaves its
members ``lost``, run again by the next run.
"""
from __future__ import annotations

import contextlib
import math
import os
import shlex
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .members import Member, members
from .results import Manifest, error_row, member_row, table_rows, write_tables
from .sweepfile import Sweep

__all__ = ["run_sweep", "run_member", "run_chunk", "SweepResult", "rerun_command", "chunk_size"]

TASK_TARGET_SIM_S = 600.0   # a chunk covers at least this much simulated time (a few seconds of a worker's)
CHUNKS_PER_WORKER = 4       # ... and the sweep is cut in at least this many chunks per worker (balance)


@dataclass
class SweepResult:
    sweep: Sweep
    members: list[Member]
    rows: list[dict]
    complete: bool
    stop_reason: str = ""
    ran: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)

    @property
    def passed(self) -> bool:
        return self.complete and all(row["status"] == "passed" for row in self.rows)


def rerun_command(sweep: Sweep, index: int) -> str:
    return f"bms-emu sweep {shlex.quote(sweep.source)} --member {index}"


def run_member(index: int, key: str, text: str, source: str, mode: str = "headless", stop=None) -> dict:
    """One member in this process (a worker's job): its row, or its error; never raises for the member."""
    from ..run_info import package_version
    from ..runner import run_scenario
    from ..scenario import parse_scenario

    start = time.perf_counter()
    try:
        scenario = parse_scenario(text, source)
        can_options = {"channel": f"sweep-{key[:12]}0", "log": []} if mode == "lockstep" else None
        result = run_scenario(scenario, mode=mode, plots=False, can_options=can_options, stop=stop)
        row = member_row(result)
        if result.summary["incomplete_cause"] in ("interrupted", "signal"):
            row = error_row(result.summary["stop_reason"], status="lost")  # not the member's doing: run again
    except Exception as exc:  # the member's own failure: recorded, the sweep goes on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        row = error_row(f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})")
    row.update(key=key, index=index, wall_s=time.perf_counter() - start, version=package_version())
    return row


def run_chunk(tasks: list[tuple], mode: str = "headless", stop=None) -> list[dict]:
    """Several members in one task, in order (the pack presets and observer gains they share are computed once
    per worker process: ``bms`` caches them). ``stop`` (in this process only): a member it cuts short is
    ``lost``, the rest of the chunk is not run."""
    rows = []
    for index, key, text, source in tasks:
        if stop is not None and stop.is_set():
            break
        row = run_member(index, key, text, source, mode, stop)
        if row["status"] == "lost" and stop is not None and stop.is_set():
            break  # cut short by the stop: not a result, the next run does it
        rows.append(row)
    return rows


def chunk_size(n_members: int, workers: int, member_sim_s: float) -> int:
    per_task = max(1, math.ceil(TASK_TARGET_SIM_S / max(member_sim_s, 1e-3)))
    balance = max(1, n_members // (CHUNKS_PER_WORKER * max(1, workers)))
    return max(1, min(per_task, balance))


class _Serial(Executor):
    """This process, one chunk at a time (``workers = 0``): the reference a parallel run must equal. A stop
    request reaches the member running (its run ends at the next tick)."""

    def __init__(self, stop=None):
        self.stop = stop

    def submit(self, fn, /, *args, **kwargs):
        from concurrent.futures import Future
        future: Future = Future()
        if fn is run_chunk:
            kwargs["stop"] = self.stop
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def _executor(executor, workers: int | None, scheduler: str | None, stop=None):
    """``(executor, n_workers)``: the caller's, a client of an existing cluster, local processes or serial."""
    if executor is not None:
        yield executor, _workers_of(executor)
        return
    if workers == 0:
        yield _Serial(stop), 1
        return
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client.get_executor(pure=False), max(1, sum(client.nthreads().values()))
        return
    n = workers or os.cpu_count() or 1
    with _no_sigint():  # the workers ignore Ctrl-C: this process stops them, after the manifest is written
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=50)
    try:
        with Client(cluster) as client:
            yield client.get_executor(pure=False), n
    finally:
        cluster.close()


def _workers_of(executor) -> int:
    """How many members an executor runs at once: a process pool's size, a Dask client's threads."""
    client = getattr(executor, "_client", None)  # distributed's ClientExecutor
    if client is not None:
        with contextlib.suppress(Exception):
            return max(1, sum(client.nthreads().values()))
    return getattr(executor, "_max_workers", None) or os.cpu_count() or 1


@contextlib.contextmanager
def _no_sigint():
    """An ignored SIGINT is inherited by the processes started meanwhile (and kept across exec)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_sweep(sweep: Sweep, out_dir: str | Path, *, executor: Executor | None = None, workers: int | None = None,
              scheduler: str | None = None, chunk: int | None = None, stop=None, progress=None,
              report: bool = True, sweep_members: list[Member] | None = None) -> SweepResult:
    """Run every member of ``sweep`` not yet in ``out_dir``'s manifest; write the results and the report.

    ``executor``: any ``concurrent.futures.Executor`` (not shut down here); else ``scheduler``: the address of
    a Dask scheduler; else ``workers`` local processes (default: one per core; 0: in this process).
    ``stop``: anything with ``is_set()``, looked at every 0.2 s (in this process, by the running member too).
    ``progress``: an object with ``start(total, skipped)``, ``update(done, failed, errors)`` and ``close()``
    (``hil.sweep.progress``). ``sweep_members``: ``members(sweep)`` where the caller has them (checked once).
    """
    from ..load import LoadProgram
    from ..scenario import parse_scenario

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    everyone = sweep_members if sweep_members is not None else members(sweep)
    manifest = Manifest(out / "manifest.jsonl")
    todo = [m for m in everyone if not manifest.finished(m.key)]
    skipped = len(everyone) - len(todo)
    stop_requested = stop.is_set if stop is not None else (lambda: False)
    start = time.perf_counter()
    stop_reason, ran = "", 0
    if progress is not None:
        progress.start(len(everyone), skipped)
    counts = {"done": 0, "failed": 0, "errors": 0}

    def record(rows: list[dict]) -> None:
        nonlocal ran
        manifest.add(rows)
        ran += sum(r["status"] != "lost" for r in rows)
        counts["done"] += len(rows)
        counts["failed"] += sum(r["status"] in ("failed", "incomplete") for r in rows)
        counts["errors"] += sum(r["status"] in ("error", "lost") for r in rows)
        if progress is not None:
            progress.update(counts["done"], counts["failed"], counts["errors"])

    try:
        if todo:
            with _executor(executor, workers, scheduler, stop) as (pool, n_workers):
                member_sim_s = LoadProgram(parse_scenario(todo[0].text, todo[0].source)).planned_duration_s()
                size = chunk or chunk_size(len(todo), n_workers, member_sim_s)
                chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
                stop_reason = _drive(pool, chunks, sweep.mode, 2 * n_workers, record, stop_requested, stop)
    except KeyboardInterrupt:
        stop_reason = "interrupted (Ctrl-C)"
    finally:
        if progress is not None:
            progress.close()
    wall = time.perf_counter() - start
    rows = table_rows(everyone, manifest, lambda k: rerun_command(sweep, k))
    complete = not stop_reason and all(r["status"] not in ("pending", "lost") for r in rows)
    if not stop_reason and not complete:
        stop_reason = "members were lost with their workers: run the sweep again to finish them"
    result = SweepResult(sweep, everyone, rows, complete, stop_reason, ran, skipped, wall)
    with contextlib.suppress(FileNotFoundError):  # an earlier verdict never stands in for this run's
        (out / "sweep.json").unlink()
    result.files = write_tables(out, rows)
    if report:
        from .report import write_report
        result.files.update(write_report(out, result))
    result.files["summary"] = _write_summary(out, result)
    return result


def _write_summary(out: Path, result: SweepResult) -> Path:
    """``sweep.json``, the last file written (atomically): the sweep's verdict for a CI job."""
    import json

    from ..report import write_text_atomic
    from ..run_info import package_version
    s = result.sweep
    statuses = ("passed", "failed", "incomplete", "error", "lost", "pending")
    summary = {"sweep": s.name, "source": s.source, "base_scenario": s.base_source, "design": s.design,
               "seed": s.seed, "members": len(result.rows), "replicates": s.replicates,
               "parameters": [p.path for p in s.parameters], "counts": {k: result.count(k) for k in statuses},
               "complete": result.complete, "passed": result.passed, "stop_reason": result.stop_reason,
               "ran": result.ran, "skipped": result.skipped, "wall_s": result.wall_s, "version": package_version(),
               "files": {k: str(v) for k, v in result.files.items()}}
    path = out / "sweep.json"
    write_text_atomic(path, json.dumps(summary, indent=2) + "\n")
    return path


def _drive(pool, chunks, mode, window, record, stop_requested, stop) -> str:
    """Keeps ``window`` chunks in flight until all are done or a stop is asked for (then: why)."""
    pending: dict = {}
    queue = list(reversed(chunks))
    while queue or pending:
        while queue and len(pending) < window and not stop_requested():
            batch = queue.pop()
            future = pool.submit(run_chunk, [(m.index, m.key, m.text, m.source) for m in batch], mode)
            pending[future] = batch
        if stop_requested():
            for future in pending:
                future.cancel()
            from ..stopping import describe_stop
            return describe_stop(stop)
        finished, _ = wait(list(pending), timeout=0.2, return_when=FIRST_COMPLETED)
        for future in finished:
            batch = pending.pop(future)
            try:
                record(future.result())
            except Exception as exc:  # the task died (a worker killed, a broken pool): its members are lost
                record([{**error_row(f"task lost: {type(exc).__name__}: {exc}", status="lost"), "key": m.key,
                         "index": m.index} for m in batch])
    return ""
