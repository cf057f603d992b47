"""The BMS's UDS server against the stock udsoncan.Client: lockstep (LockstepConnection) and paced
(udsoncan's PythonIsoTpConnection over can-isotp's CanStack on a virtual bus)."""
from __future__ import annotations

import itertools
import struct
import threading

import can
import isotp
import numpy as np
import pytest
import udsoncan
from udsoncan.client import Client
from udsoncan.exceptions import NegativeResponseException, TimeoutException
from udsoncan.services import ReadDTCInformation

from bms import Emulator, OpenWire, Protection
from bms.can import CanNode
from bms.diag import (
    DTC_DEFINITIONS,
    DiagConfig,
    LockstepConnection,
    SecurityConfig,
    client_config,
    dtc_display,
    key_for,
)

_channels = itertools.count()
OPEN_WIRE_DTC = DTC_DEFINITIONS[Protection.CELL_VOLTAGE_SENSOR].code


def _node(diag=True, **kw):
    emu = Emulator("assb60-192s2p", seed=3, initial_soc=0.7)
    return CanNode(emu, channel=f"uds-test-{next(_channels)}", diag=diag, **kw)


@pytest.fixture
def lockstep():
    node = _node()
    conn = LockstepConnection(node)
    client = Client(conn, config=client_config(node.diag.dids))
    client.open()
    conn.run(1.5)   # INIT -> STANDBY, every monitor has run
    yield node, conn, client
    client.close()
    node.close()


def _unlock(client):
    client.change_session(3)
    seed = client.request_seed(1).service_data.seed
    client.send_key(2, key_for(seed, 1))


def _raw(conn, payload: bytes, timeout=1.0) -> bytes | None:
    conn.empty_rxqueue()
    conn.send(payload)
    try:
        return conn.wait_frame(timeout=timeout, exception=True)
    except TimeoutException:
        return None


def test_session_change_reports_timing_and_s3_falls_back_to_default(lockstep):
    node, conn, client = lockstep
    r = client.change_session(3)
    assert r.service_data.session_echo == 3
    assert (r.service_data.p2_server_max, r.service_data.p2_star_server_max) == (0.05, 5.0)
    assert client.read_data_by_identifier(0xF186).service_data.values[0xF186] == 3
    conn.run(4.0)
    client.tester_present()      # keeps the session alive
    conn.run(4.0)
    assert node.diag.session == 3
    conn.run(5.1)                # S3 (5 s) without a request
    assert node.diag.session == 1
    assert any(name == "diag:session:default" and why == "S3 timeout" for _, name, why in node.diag.events)


def test_security_access_seed_key_attempts_and_delay(lockstep):
    node, conn, client = lockstep
    client.change_session(3)
    seed = client.request_seed(1).service_data.seed
    assert len(seed) == 4 and any(seed)
    with pytest.raises(NegativeResponseException) as wrong:
        client.send_key(2, bytes(b ^ 0xFF for b in key_for(seed, 1)))
    assert wrong.value.response.code == 0x35
    with pytest.raises(NegativeResponseException) as no_seed:
        client.send_key(2, b"\x00\x00\x00\x00")
    assert no_seed.value.response.code == 0x24           # a key without a seed: sequence error
    for expected in (0x35, 0x36):                         # the third wrong key uses up the attempts
        seed = client.request_seed(1).service_data.seed
        with pytest.raises(NegativeResponseException) as e:
            client.send_key(2, b"\x01\x02\x03\x04" if key_for(seed, 1) != b"\x01\x02\x03\x04" else b"\x00" * 4)
        assert e.value.response.code == expected
    with pytest.raises(NegativeResponseException) as delay:
        client.request_seed(1)
    assert delay.value.response.code == 0x37
    for _ in range(4):                                    # the delay (10 s) is simulated time
        conn.run(2.6)
        client.tester_present()                           # the session stays (S3)
    seed = client.request_seed(1).service_data.seed
    assert client.send_key(2, key_for(seed, 1)).positive
    assert client.request_seed(1).service_data.seed == b"\x00" * 4   # unlocked: a zero seed
    assert node.diag.security.unlocked == 1


def test_dtcs_with_status_snapshot_extended_data_and_clear_after_an_open_wire(lockstep):
    node, conn, client = lockstep
    emu = node.emulator
    emu.sensors.inject("cell_voltage", 17, OpenWire(), t_s=emu.t_s)
    conn.run(3.0)
    # every DTC the BMS raised is reported with its ISO status byte
    dtcs = client.get_dtc_by_status_mask(0x09).service_data.dtcs
    codes = {d.id: d.status.get_byte_as_int() for d in dtcs}
    assert OPEN_WIRE_DTC in codes
    status = codes[OPEN_WIRE_DTC]
    assert status & 0x01 and status & 0x02 and status & 0x04 and status & 0x08 and status & 0x20
    assert not status & 0x40                                   # the test completed (failed) in this cycle
    assert status & 0x80                                       # ERROR level: the warning lamp
    for d in dtcs:                                             # each one matches a BMS protection that failed
        protection = next(p for p, definition in DTC_DEFINITIONS.items() if definition.code == d.id)
        assert any(ev.kind == "fault" and ev.detail.get("protection") == protection.name for ev in emu.bms.events)
    count = client.get_number_of_dtc_by_status_mask(0x09).service_data.dtc_count
    assert count == len(dtcs)
    supported = client.get_supported_dtc().service_data.dtcs
    assert {d.id for d in supported} == {d.code for d in DTC_DEFINITIONS.values()}
    # the snapshot: the fault's simulated time and what the BMS measured then
    fault = next(ev for ev in emu.bms.events if ev.kind == "fault"
                 and ev.detail.get("protection") == "CELL_VOLTAGE_SENSOR")
    frozen = next(d for d in emu.bms.dtcs if d.name == "CELL_VOLTAGE_SENSOR").freeze_frame
    snap = client.get_dtc_snapshot_by_dtc_number(OPEN_WIRE_DTC, record_number=1).service_data.dtcs[0]
    values = {s.did: s.data for s in snap.snapshots}
    assert values[0xDD00] == pytest.approx(fault.t_s, abs=1e-3)
    assert values[0xDD02]["channel"] == 17 == fault.detail["channel"]
    assert values[0xDD02]["value"] == pytest.approx(fault.detail["value"], rel=1e-6, abs=1e-6)
    assert values[0x0104] == pytest.approx(frozen["current_A"], abs=0.05)
    assert values[0x0103] == pytest.approx(frozen["pack_voltage_V"], abs=0.01)
    assert values[0x0107]["min_V"] == pytest.approx(frozen["cell_voltage_min_V"], abs=5e-5)
    assert values[0x0101] == pytest.approx(100 * frozen["soc"], abs=0.05)
    ext = client.get_dtc_extended_data_by_dtc_number(OPEN_WIRE_DTC, record_number=1, data_size=16)
    occurrences, ageing, aged, failed_cycles, level, first_ms, last_ms = struct.unpack(
        ">BBBBB3xII", ext.service_data.dtcs[0].extended_data[0].raw_data)
    assert occurrences == 1 and failed_cycles == 1 and level >= 2
    assert first_ms == last_ms == round(fault.t_s * 1000)
    # clear: the sensor is still open, so the monitor fails again: testFailed, but a new record
    emu.sensors.clear("cell_voltage", 17)
    conn.run(3.0)
    client.clear_dtc(0xFFFFFF)
    conn.run(0.5)
    after = client.get_dtc_by_status_mask(0xFF).service_data.dtcs
    assert all(d.status.get_byte_as_int() in (0x50, 0x40, 0x10, 0x00) for d in after), \
        {dtc_display(d.id): hex(d.status.get_byte_as_int()) for d in after if d.status.get_byte_as_int() & 0x2F}
    assert any(name == f"dtc:{dtc_display(OPEN_WIRE_DTC)}:cleared" for _, name, _ in node.diag.events)
    assert not emu.bms.latched


def test_multi_frame_did_of_all_cell_voltages_equals_the_sensor_readings():
    node = _node()
    readings: dict[int, np.ndarray] = {}

    def step():
        readings[round(node.t_s * 1000)] = node.emulator.sensors.cell_voltage_V.copy()
        node.step()
    conn = LockstepConnection(node, step=step)
    with Client(conn, config=client_config(node.diag.dids)) as client:
        conn.run(0.5)
        for _ in range(3):
            values = client.read_data_by_identifier(0x0110).service_data.values[0x0110]
            served = readings[round(conn.last_answer_t_s * 1000)]
            assert len(values) == 192
            np.testing.assert_array_equal(np.round(np.array(values) / 1e-4), np.round(served / 1e-4))
            # at the DID's resolution as a tester prints them: 3.7133, not 3.7133000000000003
            assert all(v == float(f"{v:.4f}") for v in values), values[:5]
            conn.run(0.37)
        temps = client.read_data_by_identifier(0x0111).service_data.values[0x0111]
        assert len(temps) == 24
    node.close()


def test_nrcs_in_iso_14229_precedence(lockstep):
    node, conn, client = lockstep
    assert _raw(conn, b"\xBA\x01") == b"\x7F\xBA\x11"             # service not supported
    assert _raw(conn, b"\x31\x09\x02\x02") == b"\x7F\x31\x7F"     # not in this session, before the sub-function
    assert _raw(conn, b"\x2E\xF1\x90") == b"\x7F\x2E\x7F"         # ... and before the length
    assert _raw(conn, b"\x10") == b"\x7F\x10\x13"                 # sub-function byte missing
    assert _raw(conn, b"\x10\x05") == b"\x7F\x10\x12"             # sub-function not supported
    assert _raw(conn, b"\x11\x03") == b"\x7F\x11\x7E"             # soft reset: extended session only
    assert _raw(conn, b"\x3E\x00\x00") == b"\x7F\x3E\x13"         # length
    assert _raw(conn, b"\x22\xF1") == b"\x7F\x22\x13"
    assert _raw(conn, b"\x22\x12\x34") == b"\x7F\x22\x31"         # unknown DID
    assert _raw(conn, b"\x22\xDD\x00") == b"\x7F\x22\x31"         # snapshot-only DID
    assert _raw(conn, b"\x19\x04\x12\x34\x56\x01") == b"\x7F\x19\x31"
    assert _raw(conn, b"\x14\x12\x34\x56") == b"\x7F\x14\x31"
    assert _raw(conn, b"\x3E\x80") is None                        # suppressPosRspMsgIndication
    client.change_session(3)
    assert _raw(conn, b"\x2E\xF1\x90" + b"X" * 3) == b"\x7F\x2E\x33"   # security before the total length
    assert _raw(conn, b"\x2E\x12\x34" + b"X" * 3) == b"\x7F\x2E\x31"   # the DID before security
    assert _raw(conn, b"\x31\x01\x02\x02") == b"\x7F\x31\x33"          # contactor test needs security
    assert _raw(conn, b"\x31\x03\x02\x01") == b"\x7F\x31\x24"          # results before a start
    assert _raw(conn, b"\x31\x01\x02\x01\x00") == b"\x7F\x31\x13"      # option record too short
    assert _raw(conn, b"\x31\x01\x02\x01\x03\x00\x05") == b"\x7F\x31\x31"  # group 768 of 192
    assert _raw(conn, b"\x28\x00\x00") == b"\x7F\x28\x31"              # communication type 0
    assert _raw(conn, b"\x85\x02\x00\x00\x01") == b"\x7F\x85\x31"
    _unlock(client)
    assert _raw(conn, b"\x2E\xF1\x90" + b"X" * 3) == b"\x7F\x2E\x13"   # now the length
    assert _raw(conn, b"\x2E\xF1\x90" + b"\x01" * 17) == b"\x7F\x2E\x31"   # not printable
    client.write_data_by_identifier(0xF190, "WASSB00EMU0000042")
    assert client.read_data_by_identifier(0xF190).service_data.values[0xF190] == "WASSB00EMU0000042"


def test_conditions_ecu_reset_power_cycles_the_bms_and_memory_survives(lockstep):
    node, conn, client = lockstep
    emu = node.emulator
    emu.sensors.inject("cell_voltage", 5, OpenWire(), t_s=emu.t_s)
    conn.run(2.0)
    emu.sensors.clear("cell_voltage", 5)
    before = client.get_dtc_by_status_mask(0x08).service_data.dtcs
    assert OPEN_WIRE_DTC in {d.id for d in before}
    emu.bms.request(__import__("bms").StateRequest.DRIVE, emu.t_s)   # latched fault: the BMS stays open
    cycle = node.diag.memory.operation_cycle
    client.ecu_reset(1)
    conn.run(0.05)
    assert emu.bms.state.name == "INIT" and not emu.bms.latched
    assert node.diag.memory.operation_cycle == cycle + 1
    after = {d.id: d.status.get_byte_as_int() for d in client.get_dtc_by_status_mask(0x08).service_data.dtcs}
    assert after[OPEN_WIRE_DTC] & 0x08 and not after[OPEN_WIRE_DTC] & 0x01   # confirmed, not failing now
    conn.run(1.5)
    assert emu.bms.state.name == "STANDBY"
    assert client.read_data_by_identifier(0x0106).service_data.values[0x0106] == 1


def test_functional_addressing_and_busy_and_response_pending():
    node = _node()
    conn = LockstepConnection(node, functional=True)
    with Client(conn, config=client_config(node.diag.dids)) as client:
        conn.run(1.0)
        assert client.tester_present().positive                         # functional 0x3E
        assert _raw(conn, b"\xBA\x01") is None                           # no 0x11 to a functional request
        assert _raw(conn, b"\x22\x12\x34") is None                       # no 0x31 either
    node.close()


def _paced_client(node, bus):
    c = node.diag.config
    stack = isotp.CanStack(bus, address=isotp.Address(isotp.AddressingMode.Normal_11bits, txid=c.physical_id,
                                                       rxid=c.response_id),
                           params={"tx_padding": 0xCC, "blocksize": 0})
    config = client_config(node.diag.dids, request_timeout=10.0, p2_timeout=3.0, use_server_timing=False)
    return Client(udsoncan.connections.PythonIsoTpConnection(stack), config=config)


def test_stock_client_over_can_isotp_on_a_paced_virtual_bus():
    node = _node(clock="wall")
    node.clock.rt_priority = None
    stop = threading.Event()
    bus = can.Bus(interface="virtual", channel=node.bus.channel_id)
    thread = threading.Thread(target=node.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        emu = node.emulator
        with _paced_client(node, bus) as client:
            client.change_session(3)
            seed = client.request_seed(1).service_data.seed
            assert client.send_key(2, key_for(seed, 1)).positive
            emu.sensors.inject("cell_voltage", 40, OpenWire(), t_s=emu.t_s)
            values = client.read_data_by_identifier(0x0110).service_data.values[0x0110]
            assert len(values) == 192 and all(2.5 < v < 4.5 for i, v in enumerate(values) if i != 40)
            for _ in range(100):
                dtcs = client.get_dtc_by_status_mask(0x08).service_data.dtcs
                if OPEN_WIRE_DTC in {d.id for d in dtcs}:
                    break
                client.tester_present()
            else:
                pytest.fail("the open wire was never confirmed")
            with pytest.raises(NegativeResponseException) as e:
                client.read_data_by_identifier(0xDD00)   # snapshot records only
            assert e.value.response.code == 0x31
            client.clear_dtc(0xFFFFFF)
            r = client.get_dtc_by_status_mask(0x08)
            assert r.service_data.dtc_count == 0 or all(d.id != 0 for d in r.service_data.dtcs)
    finally:
        stop.set()
        thread.join(10)
        bus.shutdown()
        node.close()
    assert not thread.is_alive()


def test_diag_can_be_configured_and_turned_off():
    config = DiagConfig(physical_id=0x7E1, response_id=0x7E9, functional_id=None,
                        security=SecurityConfig(algorithm="add", secret=0x1234))
    node = _node(diag=config)
    conn = LockstepConnection(node)
    with Client(conn, config=client_config(node.diag.dids)) as client:
        client.change_session(3)
        seed = client.request_seed(1).service_data.seed
        assert key_for(seed, 1, config.security) == (
            (int.from_bytes(seed, "big") + 0x1234) % 2**32).to_bytes(4, "big")
        assert client.send_key(2, key_for(seed, 1, config.security)).positive
    node.close()
    quiet = _node(diag=None)
    assert quiet.diag is None
    quiet.close()


_ = ReadDTCInformation


def test_routines_balancing_contactor_and_precharge_tests(lockstep):
    node, conn, client = lockstep
    emu = node.emulator
    _unlock(client)
    # balancing test: runs in the background; the group bleeds, the others do not
    r = client.start_routine(0x0201, data=struct.pack(">HB", 7, 2))
    assert r.service_data.routine_status_record == b"\x01"
    conn.run(0.5)
    assert emu.pack.state.balancing[7] == 1 and emu.pack.state.balancing.sum() == 1
    status, group = struct.unpack(">BH", client.get_routine_result(0x0201).service_data.routine_status_record[:3])
    assert (status, group) == (1, 7)
    conn.run(2.0)
    client.tester_present()
    record = client.get_routine_result(0x0201).service_data.routine_status_record
    status, group, before, after, tenths = struct.unpack(">BHHHH", record)
    assert status == 0 and emu.pack.state.balancing[7] == 0 and tenths == 20
    # contactor test: longer than P2, so 0x78 first, then the results; every contact followed its coil
    closings = dict(node.diag.counters.closings)
    pending = []
    client.set_config("nrc78_callback", lambda: pending.append(node.t_s))
    r = client.start_routine(0x0202)
    assert pending, "the contactor test answers 0x78 first"
    status, verdict, bits = r.service_data.routine_status_record
    assert (status, verdict, bits) == (0, 0, 0x3F)
    assert all(node.diag.counters.closings[c] == closings[c] + 1 for c in closings)
    assert emu.pack.state.contactor_command.sum() == 0 and emu.bms.state.name == "STANDBY"
    # precharge test: the DC link reaches the precharge fraction through the resistor, then everything opens
    r = client.start_routine(0x0203)
    status, verdict, t_ms, link, pack = struct.unpack(">BBHHH", r.service_data.routine_status_record)
    tau_s = emu.params.precharge_resistance_ohm * emu.params.link_capacitance_F
    assert status == 0 and verdict == 0 and 0 < t_ms / 1000 < 10 * tau_s
    assert link >= emu.bms.config.precharge_fraction * pack
    conn.run(0.2)
    assert emu.pack.state.contactor_command.sum() == 0
    # not at rest any more: conditions not correct
    emu.bms.request(__import__("bms").StateRequest.DRIVE, emu.t_s)
    for _ in range(100):                                         # a VCU keeps the BMS awake: READY
        emu.bms.vcu_alive(emu.t_s)
        conn.tick()
    assert emu.bms.state.name == "READY"
    with pytest.raises(NegativeResponseException) as e:
        client.start_routine(0x0201, data=struct.pack(">HB", 7, 2))
    assert e.value.response.code == 0x22
    with pytest.raises(NegativeResponseException) as e:
        client.ecu_reset(1)                                      # contactors closed: no reset
    assert e.value.response.code == 0x22


def test_communication_control_and_dtc_setting(lockstep):
    node, conn, client = lockstep
    emu = node.emulator
    client.change_session(3)
    client.control_dtc_setting(2)                                # off: status bits frozen
    emu.sensors.inject("cell_voltage", 9, OpenWire(), t_s=emu.t_s)
    conn.run(1.0)
    assert not node.diag.memory.status(OPEN_WIRE_DTC) & 0x01
    client.control_dtc_setting(1)
    conn.run(0.3)
    assert node.diag.memory.status(OPEN_WIRE_DTC) & 0x09 == 0x09
    sent = node.counters["tx_frames"]
    client.communication_control(3, 1)                           # disableRxAndTx, normal messages
    conn.run(1.0)
    assert node.counters["tx_suppressed"] > 0
    assert node.counters["tx_frames"] - sent < 10                # only the diagnostic answers went out
    client.communication_control(0, 1)
    conn.run(0.2)
    assert node.counters["tx_frames"] - sent > 50


def test_memory_file_survives_a_restart(tmp_path):
    path = tmp_path / "nvm.json"
    node = _node(diag=DiagConfig(memory_path=path))
    conn = LockstepConnection(node)
    with Client(conn, config=client_config(node.diag.dids)) as client:
        conn.run(1.0)
        node.emulator.sensors.inject("cell_voltage", 3, OpenWire(), t_s=node.emulator.t_s)
        conn.run(2.0)
        _unlock(client)
        client.write_data_by_identifier(0xF190, "WASSB00EMU0000777")
        before = client.get_dtc_by_status_mask(0x08).service_data.dtcs
    node.close()
    cycle = __import__("json").loads(path.read_text())["dtc"]["operation_cycle"]
    again = _node(diag=DiagConfig(memory_path=path))
    conn = LockstepConnection(again)
    with Client(conn, config=client_config(again.diag.dids)) as client:
        conn.run(0.2)
        after = client.get_dtc_by_status_mask(0x08).service_data.dtcs
        assert {d.id for d in after} == {d.id for d in before} and OPEN_WIRE_DTC in {d.id for d in after}
        assert client.read_data_by_identifier(0xF190).service_data.values[0xF190] == "WASSB00EMU0000777"
        assert again.diag.memory.operation_cycle == cycle + 1
        snap = client.get_dtc_snapshot_by_dtc_number(OPEN_WIRE_DTC, record_number=1).service_data.dtcs[0]
        assert {s.did: s.data for s in snap.snapshots}[0xDD02]["channel"] == 3
    again.close()
    path.write_text("not json")
    with pytest.raises(Exception, match="not a diagnostic memory file"):
        _node(diag=DiagConfig(memory_path=path))


def test_a_memory_file_that_cannot_be_written_does_not_stop_the_bms(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    node = _node(diag=DiagConfig(memory_path=blocker / "nvm.json"))   # a file where a folder should be
    node.run_for(1.5)
    assert node.emulator.bms.state.name == "STANDBY"
    assert "cannot be written" in node.diag.memory_error
    node.close()
