"""Ready benches kept per process, reset by restoring a snapshot: the cheap start of each hypothesis example.

``ready_bench(settle_s, **bench_options)`` returns a bench that has run ``settle_s`` at rest (powered on,
precharged, contactors closed, estimator warm): the first call with these options builds and settles one (the
caller closes it: most drawn starts are never drawn again, and a snapshot costs about a fifth of a new bench); the
second builds and settles one and keeps it with its snapshot; every later call restores that snapshot (about a
millisecond) instead of building and precharging a new bench. A restored bench runs exactly as a new one
settled the same way (``tests/test_testing_kit.py`` checks the recording and every frame). A bench that cannot be
snapshot (a bus log, a firmware without ``save_state``) is built anew each time. ``pooled`` False: the bench is
the caller's to close.

The kept benches stay open between tests: the leak check counts them as the kit's own (``kept()``), and the
pytest plugin closes them at the end of the session (``close_all``; ``atexit`` outside pytest).
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from collections import OrderedDict

from .bench import Bench
from .segments import Rest
from .snapshot import SnapshotError

__all__ = ["ready_bench", "close_all", "kept", "MAX_KEPT", "STATS"]

MAX_KEPT = 4          # ready benches per process (each a few MB with its snapshot); the least recently used goes
_kept: OrderedDict = OrderedDict()   # key -> (bench, snapshot)
_lock = threading.Lock()
STATS = {"resets": 0, "built": 0, "first": 0, "not_pooled": 0}   # how the examples of this process started
_asked: set = set()   # setups asked for (a snapshot is kept from the second time on)


def _key(settle_s: float, options: dict) -> str:
    return repr((round(float(settle_s), 6), sorted(options.items())))


def ready_bench(settle_s: float = 1.0, *, tester: bool = False, **options) -> tuple[Bench, bool]:
    """(bench, pooled): a bench settled ``settle_s`` at rest with ``options`` (what ``Bench`` takes); ``tester``:
    with a ``hil.testing.Tester`` on its channel (``bench.tester``, part of the snapshot)."""
    key = _key(settle_s, {**options, "tester": tester})
    with _lock:
        entry = _kept.pop(key, None)
    if entry is not None:
        bench, snap = entry
        if not bench.closed:
            try:
                bench.restore(snap)
            except Exception:  # noqa: BLE001 - a firmware that failed: build a new bench below
                bench.close()
            else:
                _keep(key, bench, snap)
                STATS["resets"] += 1
                return bench, True
    first = key not in _asked
    if first:   # a setup asked for once (a drawn start) is not worth a snapshot; the second time it is
        if len(_asked) > 4096:
            _asked.clear()
        _asked.add(key)
    bench = Bench(**options)
    try:
        if tester:
            from .tester import Tester
            bench.tester = Tester(bench)
        if settle_s > 0:
            bench.run(Rest(round(settle_s, 2)))
        if first:
            STATS["first"] += 1
            return bench, False
        snap = bench.snapshot()
    except SnapshotError:
        STATS["not_pooled"] += 1
        return bench, False
    except BaseException:
        bench.close()
        raise
    _keep(key, bench, snap)
    STATS["built"] += 1
    return bench, True


def _keep(key: str, bench: Bench, snap) -> None:
    with _lock:
        _kept[key] = (bench, snap)
        old = [_kept.popitem(last=False)[1][0] for _ in range(len(_kept) - MAX_KEPT)]
    for b in old:
        b.close()


def kept() -> list[Bench]:
    """The open benches the pool keeps (not leaks of a test)."""
    with _lock:
        return [b for b, _ in _kept.values() if not b.closed]


def close_all() -> None:
    if os.environ.get("BMS_KIT_POOL_STATS"):
        print(f"hil.testing.pool (pid {os.getpid()}): {STATS}", file=sys.stderr)
    with _lock:
        benches = [b for b, _ in _kept.values()]
        _kept.clear()
    for b in benches:
        b.close()


atexit.register(close_all)
