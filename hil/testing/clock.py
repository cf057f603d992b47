"""The simulated clock of a bench, as a test sees it."""
from __future__ import annotations

from .bench import Bench

__all__ = ["SimClock"]


class SimClock:
    """``now_s``, ``advance(seconds)``, ``run_until(condition, timeout_s)``: all in simulated seconds; the bench
    ticks in lockstep (nothing waits on the wall clock)."""

    def __init__(self, bench: Bench):
        self.bench = bench

    @property
    def now_s(self) -> float:
        return self.bench.t_s

    def advance(self, seconds: float) -> float:
        """Let ``seconds`` pass at rest; returns the new time."""
        self.bench.advance(seconds)
        return self.bench.t_s

    def run_until(self, condition, timeout_s: float) -> float:
        """Tick until ``condition()`` (or ``condition(bench)``) holds; returns the simulated seconds it took;
        ``BenchError`` after ``timeout_s`` simulated seconds."""
        import inspect
        try:
            takes_bench = len(inspect.signature(condition).parameters) >= 1
        except (TypeError, ValueError):
            takes_bench = True
        check = condition if takes_bench else (lambda _bench: condition())
        if not takes_bench:
            check.__name__ = getattr(condition, "__name__", "condition")
        return self.bench.run_until(check, timeout_s)
