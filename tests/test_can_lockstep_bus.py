"""LockstepBus: a python-can virtual bus handle that filters at the sender, against python-can's own."""
import threading

import can
import pytest
from can_support import no_leaked_buses_or_threads  # noqa: F401
from hypothesis import given
from hypothesis import strategies as st

from bms.can.lockstep_bus import LockstepBus
from bms.can.node import Frame

_STATUS = {"can_id": 0x100, "can_mask": 0x7FF, "extended": False}


def _drain(bus) -> list:
    out = []
    while (msg := bus.recv(0)) is not None:
        out.append(msg)
    return out


def test_plain_virtual_handles_and_lockstep_handles_hear_each_other_in_order():
    a, b = LockstepBus("lb-mixed"), LockstepBus("lb-mixed", can_filters=[_STATUS])
    plain = can.Bus(interface="virtual", channel="lb-mixed", preserve_timestamps=True)
    try:
        sent = [Frame.build(0x100, b"\x01", timestamp=0.01), Frame.build(0x110, b"\x02", timestamp=0.01),
                can.Message(arbitration_id=0x100, data=b"\x03", timestamp=0.02, is_extended_id=False)]
        for msg in sent:
            a.send(msg)
        plain.send(can.Message(arbitration_id=0x100, data=b"\x04", timestamp=0.03, is_extended_id=False))
        plain.send(can.Message(arbitration_id=0x7FF, data=b"\x05", timestamp=0.03, is_extended_id=False))
        heard_plain, heard_b, heard_a = _drain(plain), _drain(b), _drain(a)
        assert [bytes(m.data) for m in heard_plain] == [b"\x01", b"\x02", b"\x03"]
        assert [bytes(m.data) for m in heard_b] == [b"\x01", b"\x03", b"\x04"]  # its filter, either sender
        assert [bytes(m.data) for m in heard_a] == [b"\x04", b"\x05"]
        for m in heard_plain + heard_b + heard_a:
            assert m.is_rx and m.channel == "lb-mixed"
        assert [m.timestamp for m in heard_b] == [0.01, 0.02, 0.03]  # the sender's (simulated) time
        assert all(not m.is_rx and m.channel is None for m in sent[:2])  # the sent frames are left as they were
        heard_b[0].data[0] = 0xFF  # each receiver has its own copy
        assert heard_plain[0].data[0] == 1 and sent[0].data[0] == 1
    finally:
        for bus in (a, b, plain):
            bus.shutdown()


_filter = st.fixed_dictionaries({"can_id": st.integers(0, 0x1FFFFFFF),
                                 "can_mask": st.sampled_from([0x7FF, 0x1FFFFFFF, 0x700, 0, 0x1FFFFF00])},
                                optional={"extended": st.booleans()})


@given(st.lists(_filter, max_size=4), st.lists(st.tuples(st.integers(0, 0x1FFFFFFF), st.booleans()), max_size=12))
def test_what_passes_the_filters_is_what_python_can_lets_through(filters, frames):
    reference = can.Bus(interface="virtual", channel="lb-filters-ref", can_filters=filters or None)
    sender = can.Bus(interface="virtual", channel="lb-filters-ref")
    ours = LockstepBus("lb-filters", can_filters=filters or None)
    our_sender = LockstepBus("lb-filters")
    try:
        for frame_id, extended in frames:
            frame_id = frame_id if extended else frame_id & 0x7FF
            for bus in (sender, our_sender):
                bus.send(can.Message(arbitration_id=frame_id, is_extended_id=extended, data=b""))
        expected = []
        while (msg := reference.recv(0)) is not None or reference.queue.qsize():
            if msg is not None:
                expected.append((msg.arbitration_id, msg.is_extended_id))
        assert [(m.arbitration_id, m.is_extended_id) for m in _drain(ours)] == expected
    finally:
        for bus in (reference, sender, ours, our_sender):
            bus.shutdown()


def test_a_blocking_receive_is_woken_by_a_frame_from_another_thread():
    rx, tx = LockstepBus("lb-block"), LockstepBus("lb-block")
    try:
        assert rx.recv(timeout=0.01) is None
        sender = threading.Thread(target=lambda: tx.send(Frame.build(0x123, b"\x09")))
        sender.start()
        msg = rx.recv(timeout=30.0)
        sender.join()
        assert msg is not None and bytes(msg.data) == b"\x09" and msg.is_rx
    finally:
        rx.shutdown()
        tx.shutdown()


def test_own_messages_come_back_unmarked_and_a_closed_handle_refuses():
    bus = LockstepBus("lb-own", receive_own_messages=True)
    bus.send(Frame.build(0x321, b"\x07"))
    back = bus.recv(0)
    assert back is not None and not back.is_rx and bytes(back.data) == b"\x07"
    bus.shutdown()
    with pytest.raises(can.CanOperationError):
        bus.recv(0)
    with pytest.raises(can.CanOperationError):
        bus.send(Frame.build(0x321, b"\x07"))
