"""Faults in the diagnostic layer produce what ISO 15765-2 and ISO 14229-2 specify, and the BMS keeps working.

The ECU's side: a lost, swapped or misnumbered consecutive frame of an answer makes the tester's ISO-TP layer
abort the message (wrong sequence number, or N_Cr for a lost last frame), so the client's P2 expires; an ECU
that keeps answering 0x78 holds the client until its overall limit, and one whose 0x78s come further apart than
P2* lets P2* expire. The tester's side: a faulty request never reaches the server (N_WRONG_SN, N_Cr) and gets no
answer; a late flow control makes the server give up its multi-frame answer (N_Bs timeout).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from udsoncan.client import Client
from udsoncan.exceptions import NegativeResponseException, TimeoutException

from bms import Emulator
from bms.can import CanNode
from bms.diag import (
    DropConsecutiveFrame,
    LateFlowControl,
    LockstepConnection,
    ReorderConsecutiveFrames,
    ResponsePending,
    WrongSequenceNumber,
    client_config,
    key_for,
)

_channels = itertools.count()
CELLS = 0x0110   # 384 bytes: a first frame and 55 consecutive frames


@pytest.fixture
def session():
    emu = Emulator("assb60-192s2p", seed=5, initial_soc=0.6)
    node = CanNode(emu, channel=f"uds-faults-{next(_channels)}")
    conn = LockstepConnection(node)
    client = Client(conn, config=client_config(node.diag.dids))
    client.open()
    conn.run(1.2)
    yield node, conn, client
    client.close()
    node.close()


def _still_works(node, conn, client):
    """The BMS answers, publishes its frames and its state machine runs on."""
    values = client.read_data_by_identifier(CELLS).service_data.values[CELLS]
    np.testing.assert_allclose(values, node.emulator.sensors.cell_voltage_V, atol=0.01)
    sent = node.counters["tx_frames"]
    conn.run(0.5)
    assert node.counters["tx_frames"] - sent >= 50 * 5     # 10 ms messages and the rest
    assert node.emulator.bms.state.name == "STANDBY"


@pytest.mark.parametrize("fault, error", [
    (DropConsecutiveFrame(3), "WrongSequenceNumberError"),
    (ReorderConsecutiveFrames(5), "WrongSequenceNumberError"),
    (WrongSequenceNumber(1), "WrongSequenceNumberError"),
    (DropConsecutiveFrame(55), "ConsecutiveFrameTimeoutError"),     # the last one: N_Cr at the tester
])
def test_ecu_side_consecutive_frame_faults_abort_the_answer_and_p2_expires(session, fault, error):
    node, conn, client = session
    node.diag.faults.inject(fault)
    t0 = node.t_s
    with pytest.raises(TimeoutException):
        client.read_data_by_identifier(CELLS)
    errors = [name for _, name, _ in conn.transport_errors]
    assert error in errors, errors
    assert node.diag.faults.applied                            # the fault touched the answer
    assert node.t_s - t0 >= client.config["p2_timeout"] - 0.011   # simulated time, not wall time
    node.diag.faults.remove(fault)
    _still_works(node, conn, client)


def test_late_flow_control_from_the_tester_makes_the_ecu_give_up_after_n_bs(session):
    node, conn, client = session
    conn.faults.inject(LateFlowControl(1.5))                     # beyond N_Bs = 1 s
    with pytest.raises(TimeoutException):
        client.read_data_by_identifier(CELLS)
    assert "FlowControlTimeoutError" in [name for _, name, _ in node.diag.transport_errors]
    conn.faults.clear()
    conn.run(1.0)
    _still_works(node, conn, client)


def test_late_flow_control_from_the_ecu_makes_the_tester_give_up(session):
    node, conn, client = session
    client.change_session(3)
    seed = client.request_seed(1).service_data.seed
    client.send_key(2, key_for(seed, 1))
    node.diag.faults.inject(LateFlowControl(1.5))
    with pytest.raises(TimeoutException):
        client.write_data_by_identifier(0xF190, "WASSB00EMU0000123")   # 20 bytes: multi-frame request
    assert "FlowControlTimeoutError" in [name for _, name, _ in conn.transport_errors]
    node.diag.faults.clear()
    conn.run(1.0)
    client.tester_present()
    client.write_data_by_identifier(0xF190, "WASSB00EMU0000123")
    assert client.read_data_by_identifier(0xF190).service_data.values[0xF190] == "WASSB00EMU0000123"


def test_tester_side_consecutive_frame_fault_gets_no_answer(session):
    node, conn, client = session
    client.change_session(3)
    seed = client.request_seed(1).service_data.seed
    client.send_key(2, key_for(seed, 1))
    conn.faults.inject(WrongSequenceNumber(2))
    before = node.diag.requests
    with pytest.raises(TimeoutException):
        client.write_data_by_identifier(0xF190, "WASSB00EMU0000999")
    assert node.diag.requests == before                          # nothing reached the UDS layer
    assert "WrongSequenceNumberError" in [name for _, name, _ in node.diag.transport_errors]
    conn.faults.clear()
    client.write_data_by_identifier(0xF190, "WASSB00EMU0000999")


def test_ecu_answering_0x78_for_too_long(session):
    node, conn, client = session
    node.diag.response_pending = ResponsePending(duration_s=10.0)
    conn.request_timeout_s = 8.0
    pending = []
    client.set_config("nrc78_callback", lambda: pending.append(node.t_s))
    t0 = node.t_s
    with pytest.raises(TimeoutException):
        client.tester_present()
    assert node.t_s - t0 == pytest.approx(8.0, abs=0.02)          # the overall limit, in simulated time
    assert len(pending) == 4                                     # 0x78 at once, then every P2*/2 = 2.5 s
    with pytest.raises(NegativeResponseException) as busy:       # still serving the first request
        client.read_data_by_identifier(0xF190)
    assert busy.value.response.code == 0x21
    # 0x78s further apart than P2*: the client's P2* expires
    node.diag.response_pending = ResponsePending(duration_s=7.0, interval_s=6.0)
    conn.run(2.5)
    t0 = node.t_s
    with pytest.raises(TimeoutException, match="P2\\* timeout"):
        client.tester_present()
    assert node.t_s - t0 == pytest.approx(5.0, abs=0.03)          # P2* = 5 s after the first 0x78
    node.diag.response_pending = None
    conn.run(2.5)
    _still_works(node, conn, client)
    # a pending answer that ends in time: 0x78, then the answer
    node.diag.response_pending = ResponsePending(duration_s=3.0)
    assert client.read_data_by_identifier(0xF190).positive
