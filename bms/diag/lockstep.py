"""A udsoncan connection for test code in lockstep: the stock ``udsoncan.Client`` on simulated time.

``LockstepConnection(node)`` is a tester on the node's virtual bus: its ISO-TP layer is can-isotp's on the
node's virtual clock (``ClockedTransport``), and while the client waits for an answer the connection steps
the simulation one tick at a time (``step``, default ``node.step``) until the answer is there or the
client's timeout has passed in simulated time. P2 and P2* (the client's own timers, handed to
``wait_frame``; as ISO 14229-2 has it they end with the first frame of a multi-frame answer), STmin,
N_Bs and N_Cr all run on simulated time, and no thread is involved, so a session is the same every run.

udsoncan's overall ``request_timeout`` is measured on the wall clock inside the client; give the client
``request_timeout=None`` (``client_config()`` does) and let the connection's ``request_timeout_s`` bound a
request in simulated time instead::

    conn = LockstepConnection(node)
    with udsoncan.Client(conn, config=client_config(node.diag.dids)) as client:
        client.change_session(3)
"""
from __future__ import annotations

from collections.abc import Callable

import can
import isotp
from can.interfaces.virtual import VirtualBus
from udsoncan.configs import default_client_config
from udsoncan.connections import BaseConnection
from udsoncan.exceptions import TimeoutException

from ..errors import BmsError
from .faults import FaultyLink
from .transport import ClockedTransport, to_isotp

__all__ = ["LockstepConnection", "client_config"]

_SEND_ERRORS = ("FlowControlTimeoutError", "OverflowError", "MaximumWaitFrameReachedError",
                "UnsupportedWaitFrameError")


def client_config(dids=None, **overrides) -> dict:
    """udsoncan client configuration for a lockstep session: no wall-clock overall timeout, the BMS's DID
    table as ``data_identifiers``, its extended data size, P2 from the session response."""
    config = dict(default_client_config)
    config.update(request_timeout=None, p2_timeout=1.0, p2_star_timeout=5.0, use_server_timing=True,
                  extended_data_size=16, dtc_snapshot_did_size=2, exception_on_unexpected_response=True)
    if dids is not None:
        config["data_identifiers"] = dids.client_config()
    config.update(overrides)
    return config


class LockstepConnection(BaseConnection):
    """A tester's connection to the node's UDS server in lockstep.

    ``node``: a started or unstarted ``CanNode`` on python-can's virtual bus with a virtual clock.
    ``step``: advances the simulation one tick (default ``node.step``; a harness passes its own tick).
    ``request_timeout_s``: the longest a request may take in simulated time (the client's overall timeout).
    ``faults``: a ``FaultyLink`` on what the tester sends (``inject(DropConsecutiveFrame(2))`` ...).
    ``transport_errors``: what the tester's ISO-TP layer reported, ``(t_ns, error, text)``.
    """

    def __init__(self, node, *, step: Callable[[], None] | None = None, request_timeout_s: float | None = 10.0,
                 isotp_params: dict | None = None, name: str = "lockstep", functional: bool = False):
        super().__init__(name)
        if node.clock.realtime:
            raise BmsError("LockstepConnection needs a node on the virtual clock; on the wall clock use "
                           "udsoncan's PythonIsoTpConnection over isotp.CanStack")
        if node.diag is None:
            raise BmsError("this CanNode has no diagnostic server (diag=None)")
        self.node = node
        self._step = step or node.step
        self.request_timeout_s = request_timeout_s
        self.functional = functional
        self._isotp_params = isotp_params
        self._bus: can.BusABC | None = None
        self._layer: ClockedTransport | None = None
        self.faults: FaultyLink | None = None
        self._request_deadline_ns: int | None = None
        self._rx: list[bytes] = []
        self._first_frame_t_s = 0.0
        self.last_answer_t_s: float | None = None   # timestamp of the first frame of the last answer

    # --- BaseConnection ---------------------------------------------------------------------------------
    def open(self) -> LockstepConnection:
        if self._bus is not None:
            return self
        bus = self.node.bus
        channel = getattr(bus, "channel_id", None)
        if not isinstance(bus, VirtualBus) or channel is None:  # python-can's virtual bus or a LockstepBus
            raise BmsError("LockstepConnection needs the node on python-can's 'virtual' interface")
        c = self.node.diag.config
        self._bus = tester_bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        mode = isotp.AddressingMode.Normal_29bits if c.extended_id else isotp.AddressingMode.Normal_11bits
        address = isotp.Address(mode, txid=c.physical_id, rxid=c.response_id)
        now = self.node.clock.now_ns

        def tx(frame: isotp.CanMessage) -> None:
            arbitration_id = frame.arbitration_id
            if self.functional and c.functional_id is not None and (frame.data[0] >> 4) == 0:
                arbitration_id = c.functional_id
            from ..can.node import Frame
            tester_bus.send(Frame.build(arbitration_id, frame.data, is_extended_id=frame.is_extended_id,
                                       timestamp=self.node.clock.timestamp(now())))
        self.faults = FaultyLink(tx, now)
        self._layer = ClockedTransport(address, now, self.faults, self._isotp_params)
        return self

    def close(self) -> None:
        if self._bus is not None:
            self._bus.shutdown()
        self._bus = self._layer = None

    def is_open(self) -> bool:
        return self._bus is not None

    def __enter__(self) -> LockstepConnection:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        """Send a request and return once it is on the bus (ISO 14229-2: P2 starts when the request has been
        sent); a multi-frame request the server does not take (no flow control within N_Bs) raises
        ``TimeoutException``."""
        layer = self._layer
        if layer is None:
            raise BmsError("the LockstepConnection is not open")
        errors = len(layer.errors)
        layer.send(payload)
        if self.request_timeout_s is not None:
            self._request_deadline_ns = self.node.clock.now_ns() + int(round(self.request_timeout_s * 1e9))
        self._pump()
        while layer.transmitting():
            self.tick()
        failed = [name for _, name, _ in layer.errors[errors:] if name in _SEND_ERRORS]
        if failed:
            raise TimeoutException(f"the request was not sent: {', '.join(failed)}")

    def specific_wait_frame(self, timeout: float | None = None) -> bytes | None:
        clock = self.node.clock
        start = clock.now_ns()
        limit = None if timeout is None else start + int(round(timeout * 1e9))
        while not self._rx:
            now = clock.now_ns()
            # ISO 14229-2: P2/P2* end at the first frame of the answer; N_Cr watches the rest of it
            receiving = self._layer is not None and self._layer.is_rx_active()
            if limit is not None and now >= limit and not receiving:
                raise TimeoutException(f"no answer within {timeout:.3f} s of simulated time")
            if self._request_deadline_ns is not None and now >= self._request_deadline_ns:
                raise TimeoutException(f"no final answer within request_timeout_s = {self.request_timeout_s} s "
                                       f"of simulated time")
            self.tick()
        return self._rx.pop(0)

    def empty_rxqueue(self) -> None:
        self._pump()
        self._rx.clear()

    # --- the simulation ----------------------------------------------------------------------------------
    def tick(self, n: int = 1) -> None:
        """Advance the simulation ``n`` ticks, the tester's ISO-TP layer with it."""
        for _ in range(n):
            self._step()
            self._pump()

    def run(self, seconds: float) -> None:
        """Advance the simulation by ``seconds`` of simulated time (the tester keeps listening)."""
        self.tick(max(0, int(round(seconds / self.node.emulator.dt_s))))

    def _pump(self) -> None:
        layer, bus, faults = self._layer, self._bus, self.faults
        if layer is None or bus is None or faults is None:
            return
        faults.release()
        while True:
            msg = bus.recv(0)
            if msg is None:
                break
            if msg.arbitration_id == layer.address.get_rx_arbitration_id() and msg.dlc:
                if msg.data[0] >> 4 in (0, 1):   # a single or first frame: an answer starts
                    self._first_frame_t_s = msg.timestamp
                layer.feed(to_isotp(msg))
        layer.step()
        while layer.has_message:
            self._rx.append(bytes(layer.recv() or b""))
            self.last_answer_t_s = self._first_frame_t_s

    @property
    def transport_errors(self) -> list[tuple[int, str, str]]:
        return list(self._layer.errors) if self._layer is not None else []
