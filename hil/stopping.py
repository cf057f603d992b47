"""Stopping a run on a signal: SIGINT (Ctrl-C), SIGTERM (CI timeouts, ``timeout(1)``, systemd, containers)
and SIGHUP (a closed terminal) all become one request to stop, honoured the same way at any instant.

The first signal only records the request: the run loop looks at it once per tick and ends there, so the
logs are flushed and the reports written exactly as at the end of a run, marked incomplete. A signal
that arrives before the loop (power-on, the estimator's initialisation) or while the reports are written
is kept and honoured at the next look. A second signal means "now": it raises ``StopNow`` (a
``KeyboardInterrupt``) wherever the program is. A signal that was ignored when the program started
(``nohup``, a background job's SIGINT) stays ignored.

``graceful = False`` (commands without a run loop) makes the first signal raise ``StopNow`` at once, as
Ctrl-C does by default; a request recorded before that switch is still seen by ``requested``.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopRequest", "StopNow", "STOP_SIGNALS", "signal_exit_status", "describe_stop"]

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
_WHY = {"SIGINT": "interrupted by SIGINT (Ctrl-C)", "SIGHUP": "stopped by SIGHUP (hang-up)"}


def signal_exit_status(signum: int) -> int:
    """The shell's status of a program stopped by ``signum``: 128 + its number (130 for SIGINT)."""
    return 128 + int(signum)


def describe_stop(stop) -> str:
    """What a report says about a stop request: ``stopped by SIGTERM`` (or any ``is_set()`` object's)."""
    reason = getattr(stop, "reason", None)
    return (reason() if callable(reason) else "") or "stopped on request"


class StopNow(KeyboardInterrupt):
    """A second stop signal (or a first one where nothing polls): stop at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """Holds the first stop signal received while installed; ``is_set()`` lets it stand in for a
    ``threading.Event`` (``CanNode.run(stop=...)``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.graceful = True
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    # --- the request ----------------------------------------------------------------------------------
    @property
    def requested(self) -> bool:
        return self.signum is not None

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def reason(self) -> str:
        """``stopped by SIGTERM``: what a report says (the caller adds the simulated time)."""
        return _WHY.get(self.name, f"stopped by {self.name}") if self.signum is not None else ""

    def exit_status(self) -> int:
        return signal_exit_status(self.signum) if self.signum is not None else 0

    def request(self, signum: int) -> None:
        """Record a stop as if ``signum`` had arrived (also what the handler does)."""
        if self.signum is None:
            self.signum = int(signum)
            self._event.set()

    # --- the handlers ---------------------------------------------------------------------------------
    def _handle(self, signum, frame) -> None:
        if self.signum is not None or not self.graceful:
            self.request(signum)
            raise StopNow(signum)
        self.request(signum)

    def install(self) -> StopRequest:
        """Handle every stop signal this platform has (main thread only; elsewhere nothing is installed)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None or signum in self._previous:
                continue
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except (OSError, ValueError):
                pass
        return self

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (OSError, ValueError, TypeError):
                pass
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
