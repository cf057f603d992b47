"""One schedule per node: a heap of absolute deadlines, no thread per message (python-can #1729).

Times are integer nanoseconds of run time. A task's next deadline is always ``previous + period``; a task
found more than one period late skips the deadlines it missed (counted in ``missed``) and keeps its phase.
Tasks due at the same instant come out in the order they were added (the DBC's order), so the frame
sequence of a run is a function of its inputs alone.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Scheduler", "Task"]


@dataclass(eq=False)
class Task:
    name: str
    period_ns: int
    next_due_ns: int
    order: int
    payload: Any = None
    runs: int = 0
    missed: int = 0
    active: bool = field(default=True)


class Scheduler:
    """Cyclic tasks on a heap of (deadline, order)."""

    def __init__(self):
        self._heap: list[tuple[int, int, Task]] = []
        self._tasks: dict[str, Task] = {}

    def add(self, name: str, period_ns: int, *, phase_ns: int = 0, payload: Any = None) -> Task:
        if period_ns <= 0:
            raise ValueError(f"{name}: period must be > 0 ns, found {period_ns}")
        if name in self._tasks:
            raise ValueError(f"{name}: already scheduled")
        task = Task(name, int(period_ns), int(phase_ns), len(self._tasks), payload)
        self._tasks[name] = task
        heapq.heappush(self._heap, (task.next_due_ns, task.order, task))
        return task

    def remove(self, name: str) -> None:
        """Cancel a task (lazily: its heap entry is dropped when it surfaces)."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.active = False

    @property
    def tasks(self) -> list[Task]:
        return sorted(self._tasks.values(), key=lambda t: t.order)

    def next_due_ns(self) -> int | None:
        heap = self._heap
        while heap and not heap[0][2].active:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now_ns: int) -> list[Task]:
        """Every task due at or before ``now_ns``, in (deadline, order) order; each is rescheduled."""
        heap = self._heap
        due: list[Task] = []
        replace, pop = heapq.heapreplace, heapq.heappop
        while heap and heap[0][0] <= now_ns:
            deadline, order, task = heap[0]
            if not task.active:
                pop(heap)
                continue
            due.append(task)
            task.runs += 1
            nxt = deadline + task.period_ns
            if nxt <= now_ns:  # late by a period or more: skip to the first deadline after now
                skipped = (now_ns - nxt) // task.period_ns + 1
                task.missed += skipped
                nxt += skipped * task.period_ns
            task.next_due_ns = nxt
            replace(heap, (nxt, order, task))
        return due

    def cyclic_table(self, tick_ns: int, max_ticks: int = 10_000) -> list[list[Any]] | None:
        """What ``pop_due(k * tick_ns)`` gives for every k >= 1, precomputed: the payloads due at tick k are
        ``table[k % len(table)]``, in pop_due's order. Only where the schedule repeats exactly: every period
        and phase a whole number of ticks, no phase beyond its period (so nothing is due before its first
        deadline), the pattern within ``max_ticks``; else None. For a caller that calls pop_due once per tick
        at exactly k * tick_ns (the node), the heap's work (~4 us a tick) done once; it does not update the
        tasks' ``runs``/``next_due_ns``."""
        tasks = self.tasks
        if not tasks or tick_ns <= 0:
            return None
        hyper = 1
        for t in tasks:
            if t.period_ns % tick_ns or t.next_due_ns % tick_ns or t.runs or not 0 < t.next_due_ns <= t.period_ns:
                return None
            n = t.period_ns // tick_ns
            hyper = hyper * n // math.gcd(hyper, n)
            if hyper > max_ticks:
                return None
        return [[t.payload for t in tasks if (k * tick_ns - t.next_due_ns) % t.period_ns == 0] for k in range(hyper)]

    def __len__(self) -> int:
        return len(self._tasks)
