"""The clock that drives the tick and the CAN schedule (DESIGN.md, "The loop").

Both clocks count integer nanoseconds from the start of the run, so deadlines never drift:
- ``VirtualClock`` (lockstep): ``wait_until`` jumps to the deadline at once; frame timestamps are
  simulated time (plus ``epoch_s``), identical from run to run.
- ``WallClock`` (HIL): ``wait_until`` sleeps to just before the absolute deadline, then spins the last
  ``spin_s``; the caller advances its deadline by the period (never ``sleep(period)``) and counts overruns.
  While the clock runs it narrows the thread's timer slack (Linux) and the interpreter's GIL switch
  interval, and puts both back when stopped.
"""
from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable

__all__ = ["VirtualClock", "WallClock", "make_clock"]

_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30


class VirtualClock:
    """Simulated time: the next tick starts as soon as the last one ends."""

    kind = "virtual"
    realtime = False

    def __init__(self, *, epoch_s: float = 0.0):
        self.epoch_s = float(epoch_s)
        self._now_ns = 0

    def start(self) -> None:
        self._now_ns = 0

    def stop(self) -> None:
        pass

    def now_ns(self) -> int:
        return self._now_ns

    def wait_until(self, deadline_ns: int, idle: Callable[[float], None] | None = None) -> int:
        """Jump to ``deadline_ns``; returns the lateness (always 0)."""
        if deadline_ns > self._now_ns:
            self._now_ns = deadline_ns
        return 0

    def rebase(self, delta_ns: int) -> None:
        pass

    def timestamp(self, t_ns: int) -> float:
        """Frame timestamp (s) of run time ``t_ns``."""
        return self.epoch_s + t_ns / 1e9

    def __repr__(self) -> str:
        return f"VirtualClock(epoch_s={self.epoch_s})"


class WallClock:
    """Wall-clock pacing against absolute deadlines (``time.perf_counter_ns``)."""

    kind = "wall"
    realtime = True

    def __init__(self, *, spin_s: float = 0.0003, timer_slack_ns: int | None = 1000,
                 switch_interval_s: float | None = 0.0002, rt_priority: int | None = None):
        if not 0 <= spin_s < 0.05:
            raise ValueError(f"spin_s: expected a number in [0, 0.05), found {spin_s!r}")
        if rt_priority is not None and not 1 <= int(rt_priority) <= 99:
            raise ValueError(f"rt_priority: expected an integer in [1, 99], found {rt_priority!r}")
        self.spin_ns = int(spin_s * 1e9)
        self.timer_slack_ns = timer_slack_ns
        self.switch_interval_s = switch_interval_s
        self.rt_priority = rt_priority
        self.rt_error: str | None = None
        self._origin_perf = 0
        self._origin_epoch = 0
        self._saved_slack: int | None = None
        self._saved_switch: float | None = None
        self._saved_policy = None

    def start(self) -> None:
        """Tune the thread (timer slack, GIL switch interval, optional SCHED_FIFO), then start time at 0."""
        if self.switch_interval_s is not None and self._saved_switch is None:
            self._saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(self._saved_switch, self.switch_interval_s))
        if self.timer_slack_ns is not None and self._saved_slack is None:
            self._saved_slack = _timer_slack(self.timer_slack_ns)
        if self.rt_priority is not None and self._saved_policy is None:
            self._saved_policy, self.rt_error = _set_fifo(int(self.rt_priority))
        self._origin_perf = time.perf_counter_ns()
        self._origin_epoch = time.time_ns()

    def stop(self) -> None:
        if self._saved_switch is not None:
            sys.setswitchinterval(self._saved_switch)
            self._saved_switch = None
        if self._saved_slack is not None:
            _timer_slack(self._saved_slack)
            self._saved_slack = None
        if self._saved_policy is not None:
            try:
                os.sched_setscheduler(0, *self._saved_policy)
            except (OSError, AttributeError):
                pass
            self._saved_policy = None

    def now_ns(self) -> int:
        return time.perf_counter_ns() - self._origin_perf

    def wait_until(self, deadline_ns: int, idle: Callable[[float], None] | None = None) -> int:
        """Return at ``deadline_ns`` (run time) or later; returns the lateness in ns.

        ``idle(seconds)`` is called instead of ``time.sleep`` while more than ``spin_s`` remains (the node
        waits for frames there); it may return early, and is called again while time remains.
        """
        perf = time.perf_counter_ns
        target = self._origin_perf + deadline_ns
        spin = self.spin_ns
        sleep = idle or time.sleep
        while True:
            remaining = target - perf()
            if remaining <= 0:
                return -remaining
            if remaining > spin:
                sleep((remaining - spin) / 1e9)

    def rebase(self, delta_ns: int) -> None:
        """Move run time's origin ``delta_ns`` later (the run skipped that much time after a stall)."""
        self._origin_perf += delta_ns
        self._origin_epoch += delta_ns

    def timestamp(self, t_ns: int) -> float:
        """Epoch timestamp (s) of run time ``t_ns``: monotonic within a run, anchored at start."""
        return (self._origin_epoch + t_ns) / 1e9

    def __repr__(self) -> str:
        return f"WallClock(spin_s={self.spin_ns / 1e9})"


def make_clock(clock: str | VirtualClock | WallClock | None) -> VirtualClock | WallClock:
    if clock is None or clock == "virtual" or clock == "lockstep":
        return VirtualClock()
    if clock == "wall":
        return WallClock()
    if not isinstance(clock, str) and hasattr(clock, "wait_until") and hasattr(clock, "timestamp"):
        return clock
    raise ValueError(f"clock: expected 'virtual', 'wall' or a clock object, found {clock!r}")


def _set_fifo(priority: int):
    """SCHED_FIFO for this thread; returns ((policy, param) to restore, None) or (None, why not)."""
    try:
        saved = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return saved, None
    except (OSError, AttributeError) as exc:
        return None, f"SCHED_FIFO {priority} not set: {exc}"


_LIBC = None


def _timer_slack(value_ns: int) -> int | None:
    """Set this thread's timer slack (Linux prctl); returns the previous value, None where unsupported."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return None
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter already uses
        libc = _LIBC
        previous = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
        if previous < 0 or libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(max(1, int(value_ns))), 0, 0, 0) != 0:
            return None
        return int(previous)
    except (OSError, AttributeError):
        return None
