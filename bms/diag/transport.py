"""ISO-TP (ISO 15765-2) on a caller's clock: can-isotp's state machine, stepped by the CAN node's tick.

can-isotp's ``TransportLayerLogic`` times STmin, N_Bs (flow-control timeout) and N_Cr (consecutive-frame
timeout) with ``isotp.tools.Timer``, which reads ``time.perf_counter_ns``. ``ClockedTransport`` is that same
state machine with every timer reading the clock it is given (the node's virtual clock in lockstep, the wall
clock when paced), and with frames fed in and taken out by the caller instead of a bus thread: no thread,
no wall-clock read in lockstep, so a diagnostic session in lockstep is the same every run.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import isotp
from isotp.tools import Timer

from ..errors import BmsError

__all__ = ["ClockTimer", "ClockedTransport", "IsoTpParams", "DEFAULT_ISOTP_PARAMS", "to_isotp", "TransportError"]

# ISO 15765-2 defaults for a production ECU: padding to 8 bytes, BS 8, STmin 0, N_Bs = N_Cr = 1000 ms
DEFAULT_ISOTP_PARAMS = {"stmin": 0, "blocksize": 8, "tx_padding": 0xCC, "rx_flowcontrol_timeout": 1000,
                        "rx_consecutive_frame_timeout": 1000, "wftmax": 0, "max_frame_size": 4095}
IsoTpParams = dict
LOGGER_NAME = "bms.diag.isotp"
logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


class TransportError(BmsError):
    """An ISO-TP parameter set or address is not usable."""


class ClockTimer(Timer):
    """``isotp.tools.Timer`` reading ``now_ns()`` instead of ``time.perf_counter_ns``."""

    def __init__(self, timeout: float, now_ns: Callable[[], int]):
        self._now_ns = now_ns
        super().__init__(timeout)

    def start(self, timeout: float | None = None) -> None:
        if timeout is not None:
            self.set_timeout(timeout)
        self.start_time = self._now_ns()

    def elapsed_ns(self) -> int:
        return 0 if self.start_time is None else self._now_ns() - self.start_time

    def elapsed(self) -> float:
        return self.elapsed_ns() / 1e9


def to_isotp(msg) -> isotp.CanMessage:
    """A python-can message as can-isotp's frame type."""
    return isotp.CanMessage(arbitration_id=msg.arbitration_id, dlc=msg.dlc, data=bytes(msg.data),
                            extended_id=msg.is_extended_id, is_fd=msg.is_fd,
                            bitrate_switch=getattr(msg, "bitrate_switch", False))


class ClockedTransport(isotp.TransportLayerLogic):
    """can-isotp's transport layer on ``now_ns``: frames in with ``feed``, out through ``txfn``, one
    ``process()`` per tick. ``errors`` lists what the layer reported (N_Cr and N_Bs timeouts, wrong
    sequence numbers ...) as ``(t_ns, error class name, text)``."""

    def __init__(self, address: isotp.Address, now_ns: Callable[[], int], txfn: Callable[[isotp.CanMessage], None],
                 params: dict | None = None, *, on_error: Callable[[Exception], None] | None = None):
        self._now_ns = now_ns
        self._inbox: deque = deque()
        self._on_error = on_error
        self.errors: list[tuple[int, str, str]] = []
        merged = {**DEFAULT_ISOTP_PARAMS, **(params or {})}
        merged["wait_func"] = _no_wait  # validation calls it; nothing here may sleep
        merged.setdefault("logger_name", LOGGER_NAME)  # errors are in ``errors``; the log stays quiet by default
        try:
            super().__init__(rxfn=self._next_frame, txfn=txfn, address=address, error_handler=self._error,
                             params=merged)
        except ValueError as exc:
            raise TransportError(f"ISO-TP parameters: {exc}") from exc
        self.timer_tx_stmin = ClockTimer(0, now_ns)

    # every timer of the layer on the given clock
    def load_params(self) -> None:
        super().load_params()
        self.timer_rx_fc = ClockTimer(self.params.rx_flowcontrol_timeout / 1000, self._now_ns)
        self.timer_rx_cf = ClockTimer(self.params.rx_consecutive_frame_timeout / 1000, self._now_ns)
        if hasattr(self, "timer_tx_stmin"):
            self.timer_tx_stmin = ClockTimer(0, self._now_ns)

    def _start_rx_fc_timer(self) -> None:
        self.timer_rx_fc = ClockTimer(self.params.rx_flowcontrol_timeout / 1000, self._now_ns)
        self.timer_rx_fc.start()

    def _start_rx_cf_timer(self) -> None:
        self.timer_rx_cf = ClockTimer(self.params.rx_consecutive_frame_timeout / 1000, self._now_ns)
        self.timer_rx_cf.start()

    def feed(self, frame: isotp.CanMessage) -> None:
        """A received frame for this layer (taken by the next ``process()``)."""
        self._inbox.append(frame)

    def _next_frame(self, timeout: float) -> isotp.CanMessage | None:
        inbox = self._inbox
        return inbox.popleft() if inbox else None

    def _error(self, error: Exception) -> None:
        self.errors.append((self._now_ns(), type(error).__name__, str(error)))
        if len(self.errors) > 1000:
            del self.errors[:100]
        if self._on_error is not None:
            self._on_error(error)

    def step(self) -> None:
        """``process()`` when there is something to do: frames in, a message being received or sent,
        a flow control to send (an idle layer has no timer running, so skipping it changes nothing)."""
        if (self._inbox or self.rx_state is not _RX_IDLE or self.tx_state is not _TX_IDLE
                or self.pending_flow_control_tx or self.tx_queue.queue):   # the deque: no lock taken
            self.process()

    @property
    def has_message(self) -> bool:
        """A whole message was received (``recv()`` returns it); cheaper than ``available()``."""
        return bool(self.rx_queue.queue)


_RX_IDLE = isotp.TransportLayerLogic.RxState.IDLE
_TX_IDLE = isotp.TransportLayerLogic.TxState.IDLE


def _no_wait(seconds: float) -> None:
    return None
