"""The exit statuses of ``bms-emu`` (the README's table lists the same).

====  =========================================================================================
0     run: complete, every expectation passed; serve: stopped (--duration reached or a signal)
1     run: complete, an expectation failed
2     bad input: arguments, scenario, parameter, DBC, cycle, log or mapping file
3     the CAN bus could not be opened, or failed during the run
4     incomplete: the run simulated less than its scenario asks for (--max-sim-s, nothing
      simulated), a firmware in the slot failed, or a log or report could not be written (disk full)
130   run: stopped by SIGINT (Ctrl-C); 143 SIGTERM, 129 SIGHUP: 128 + the signal's number. The
      reports are written and marked incomplete
====  =========================================================================================
"""
from __future__ import annotations

from .stopping import signal_exit_status

__all__ = ["OK", "FAILED", "BAD_INPUT", "BUS", "INCOMPLETE", "INTERRUPTED", "of_run"]

OK, FAILED, BAD_INPUT, BUS, INCOMPLETE = 0, 1, 2, 3, 4
INTERRUPTED = 130  # Ctrl-C where no handler was installed (KeyboardInterrupt)


def of_run(summary: dict, stop=None) -> int:
    """The status of a run from its summary (and the stop request whose signal it names)."""
    if summary.get("passed"):
        return OK
    cause = summary.get("incomplete_cause")
    if summary.get("complete") or not cause:
        return FAILED
    if cause == "signal" and getattr(stop, "signum", None) is not None:
        return signal_exit_status(stop.signum)
    if cause in ("signal", "interrupted"):
        return INTERRUPTED
    return BUS if cause == "bus" else INCOMPLETE
