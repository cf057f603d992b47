"""Progress of a run over simulated time: a rich bar on a terminal, plain status lines elsewhere (CI logs).

Both take ``start(total_s)``, ``update(t_s)`` (called every few simulated seconds) and ``close(t_s)``.
"""
from __future__ import annotations

import sys
import time

__all__ = ["ProgressBar", "StatusLines", "sim_time"]


def sim_time(t_s: float) -> str:
    """Simulated seconds as a report line shows them: whole seconds from 100 s on, to the 10 ms tick below (a
    counterexample of 1.3 s read "1 s of 1 s")."""
    return f"{t_s:.0f}" if abs(t_s) >= 100.0 else (f"{t_s:.2f}".rstrip("0").rstrip(".") or "0")


class ProgressBar:
    """A rich progress bar over simulated time."""

    def __init__(self):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn("[bold]simulating"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f} s"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), transient=False)
        self.task = None

    def start(self, total_s: float) -> None:
        self.task = self.progress.add_task("run", total=total_s)
        self.progress.start()

    def update(self, t_s: float) -> None:
        self.progress.update(self.task, completed=t_s)

    def close(self, t_s: float | None = None) -> None:
        self.progress.stop()


class StatusLines:
    """A plain line every ``every_s`` of wall time (and one at the start and at the end), for logs that are
    no terminal: ``bms-emu run: t = 1200 s of 5400 s (22 %), 11 s wall, 107x real time``."""

    def __init__(self, every_s: float = 10.0, *, prefix: str = "bms-emu run", stream=None):
        self.every_s = max(0.0, float(every_s))
        self.prefix = prefix
        self.stream = stream
        self.total_s = 0.0
        self._start = self._last = 0.0

    def _print(self, text: str) -> None:
        print(f"{self.prefix}: {text}", file=self.stream or sys.stdout, flush=True)

    def start(self, total_s: float) -> None:
        self.total_s = float(total_s)
        self._start = self._last = time.monotonic()
        self._print(f"simulating {sim_time(self.total_s)} s")

    def update(self, t_s: float) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(self._line(t_s, now))

    def _line(self, t_s: float, now: float) -> str:
        wall = now - self._start
        share = f" ({100.0 * t_s / self.total_s:.0f} %)" if self.total_s > 0 else ""
        rate = f", {t_s / wall:.0f}x real time" if wall > 0 else ""
        return f"t = {sim_time(t_s)} s of {sim_time(self.total_s)} s{share}, {wall:.0f} s wall{rate}"

    def close(self, t_s: float | None = None) -> None:
        if t_s is not None:
            self._print("simulated " + self._line(t_s, time.monotonic()))
