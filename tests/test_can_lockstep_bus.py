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



@pytest.mark.parametrize("handover", [False, True])
def test_a_handed_over_frame_reaches_every_receiver_as_a_copy_would(handover):
    """``send(msg, handover=True)``: the sender keeps no reference, so the last LockstepBus receiver that takes the
    frame gets ``msg`` itself (one copy fewer a frame); every receiver still gets a frame of its own, with the
    sender's time, the channel and ``is_rx``, and plain virtual handles and filters are served as before."""
    a, b, c = LockstepBus("lb-hand"), LockstepBus("lb-hand", can_filters=[_STATUS]), LockstepBus("lb-hand")
    own = LockstepBus("lb-hand", receive_own_messages=True)
    plain = can.Bus(interface="virtual", channel="lb-hand", preserve_timestamps=True)
    try:
        first, second = Frame.build(0x100, b"\x01\x02", timestamp=0.5), Frame.build(0x200, b"\x03", timestamp=0.6)
        a.send(first, handover=handover)
        a.send(second, handover=handover)
        own.send(Frame.build(0x300, b"\x04", timestamp=0.7), handover=handover)
        heard = {name: _drain(bus) for name, bus in (("b", b), ("c", c), ("own", own), ("plain", plain))}
        assert [bytes(m.data) for m in heard["b"]] == [b"\x01\x02"]          # its filter
        assert [bytes(m.data) for m in heard["c"]] == [b"\x01\x02", b"\x03", b"\x04"]
        assert [(bytes(m.data), m.is_rx) for m in heard["own"]] == [(b"\x01\x02", True), (b"\x03", True),
                                                                     (b"\x04", False)]   # its own frame
        assert [bytes(m.data) for m in heard["plain"]] == [b"\x01\x02", b"\x03", b"\x04"]
        assert [bytes(m.data) for m in _drain(a)] == [b"\x04"]
        frames = [m for got in heard.values() for m in got]
        assert len({id(m) for m in frames}) == len(frames)                  # a frame of its own each
        assert all(m.channel == "lb-hand" for m in frames)
        assert [m.timestamp for m in heard["c"]] == [0.5, 0.6, 0.7]
        assert any(m is first for m in frames) is handover                  # the original went to one of them
        heard["c"][0].data[0] = 0xFF
        assert [m.data[0] for m in (*heard["b"], heard["own"][0], heard["plain"][0])] == [1, 1, 1]
    finally:
        for bus in (a, b, c, own, plain):
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


def test_heard_names_the_ids_other_handles_take():
    a, b = LockstepBus("lb-heard"), LockstepBus("lb-heard", can_filters=[_STATUS])
    try:
        assert a.heard() == frozenset({(0x100, False)})
        assert b.heard() is None  # a has no filters: it takes every frame
        b.set_filters([{"can_id": 0x110, "can_mask": 0x7FF, "extended": False}])
        assert a.heard() == frozenset({(0x110, False)})
        plain = can.Bus(interface="virtual", channel="lb-heard")
        assert a.heard() is None
        plain.shutdown()
        assert a.heard() == frozenset({(0x110, False)})
        a.shutdown()
        assert a.heard() is None  # its sender tries, and meets the closed bus's error
    finally:
        a.shutdown()
        b.shutdown()


def _lockstep_run(channel: str, join_at: int | None, ticks: int = 300):
    """A lockstep loop without a log for ``ticks``; a plain virtual handle listening from tick ``join_at``
    (None: never). Returns what that handle heard, the node's counters, the VCU's view and the SOC estimate."""
    from hil.can_loop import CanLoop
    from hil.runner import build_emulator
    from hil.scenario import Scenario
    emulator = build_emulator(Scenario(name="heard", source="<test>", pack="assb60-192s2p", seed=3,
                                       initial_soc=0.6, dt_s=0.01, ambient_C=25.0, mode="lockstep"), None)
    loop = CanLoop(emulator, mode="lockstep", channel=channel)
    listener, heard = None, []
    try:
        for k in range(ticks):
            if k == join_at:
                listener = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
            current = loop.vcu.tick(k * 0.01, None, emulator.pack.link_voltage_V)
            loop.tick(current + (80.0 if k > 150 else 0.0), 25.0, 1.0)
            if listener is not None:
                heard += [(round(m.timestamp, 6), m.arbitration_id, bytes(m.data)) for m in _drain(listener)]
        vcu = (loop.vcu.firmware.state, loop.vcu.firmware.discharge_limit_A)
        return heard, dict(loop.node.counters), vcu, emulator.estimator.pack_soc
    finally:
        loop.close()
        if listener is not None:
            listener.shutdown()


def test_frames_nobody_hears_are_counted_and_a_handle_that_joins_hears_them_all():
    """Without a log, the node does not build the cyclic frames no handle takes (the VCU model reads two of
    them): the run is the same as one where a listener hears everything, and a handle that joins mid-run hears
    every frame a listener present from the start heard from then on."""
    always, counters, vcu, soc = _lockstep_run("lb-heard-always", join_at=0)
    late, counters_late, vcu_late, soc_late = _lockstep_run("lb-heard-late", join_at=120)
    never, counters_never, vcu_never, soc_never = _lockstep_run("lb-heard-never", join_at=None)
    assert never == [] and len(always) > 1500
    assert late == [f for f in always if f[0] >= late[0][0]] and late[0][0] <= 1.21
    assert counters == counters_late == counters_never and counters["tx_frames"] > 1500
    assert vcu == vcu_late == vcu_never and soc == soc_late == soc_never
