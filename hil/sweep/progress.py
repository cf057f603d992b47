"""Progress of a sweep over its members: a rich bar on a terminal (done, failed, errors, members/s), plain
status lines elsewhere (CI logs), as ``bms-emu run`` does over simulated time."""
from __future__ import annotations

import sys
import time

__all__ = ["SweepBar", "SweepStatusLines"]


class _Rate:
    def __init__(self):
        self.total = self.skipped = 0
        self._start = time.monotonic()

    def start(self, total: int, skipped: int) -> None:
        self.total, self.skipped = total, skipped
        self._start = time.monotonic()

    def rate(self, done: int) -> float:
        wall = time.monotonic() - self._start
        return done / wall if wall > 0 else 0.0

    def rate_text(self, done: int) -> str:
        """Members per second, or per hour for long members (a 10-minute drive runs well under one a second)."""
        rate = self.rate(done)
        return f"{rate:.1f} members/s" if rate >= 1.0 or done == 0 else f"{rate * 3600:.0f} members/h"


class SweepBar(_Rate):
    def __init__(self):
        super().__init__()
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn("[bold]members"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                                 TextColumn("[red]{task.fields[failed]} failed[/] {task.fields[errors]} errors"),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
        self.task = None

    def start(self, total: int, skipped: int) -> None:
        super().start(total, skipped)
        self.task = self.progress.add_task("sweep", total=total, completed=skipped, failed=0, errors=0, rate="")
        self.progress.start()

    def update(self, done: int, failed: int, errors: int) -> None:
        self.progress.update(self.task, completed=self.skipped + done, failed=failed, errors=errors,
                             rate=self.rate_text(done))

    def close(self) -> None:
        self.progress.stop()


class SweepStatusLines(_Rate):
    """``bms-emu sweep: 120 of 200 members (60 %), 3 failed, 0 errors, 4.1 members/s, 29 s wall``."""

    def __init__(self, every_s: float = 10.0, *, stream=None):
        super().__init__()
        self.every_s = max(0.0, float(every_s))
        self.stream = stream
        self._last = 0.0
        self._state = (0, 0, 0)

    def _print(self, text: str) -> None:
        print(f"bms-emu sweep: {text}", file=self.stream or sys.stdout, flush=True)

    def start(self, total: int, skipped: int) -> None:
        super().start(total, skipped)
        self._last = time.monotonic()
        self._print(f"{total} members, {skipped} already finished, {total - skipped} to run")

    def update(self, done: int, failed: int, errors: int) -> None:
        self._state = (done, failed, errors)
        if time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self._print(self._line())

    def _line(self) -> str:
        done, failed, errors = self._state
        finished = self.skipped + done
        share = f" ({100.0 * finished / self.total:.0f} %)" if self.total else ""
        return (f"{finished} of {self.total} members{share}, {failed} failed, {errors} errors, "
                f"{self.rate_text(done)}, {time.monotonic() - self._start:.0f} s wall")

    def close(self) -> None:
        self._print("ended: " + self._line())
