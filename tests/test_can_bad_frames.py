"""What the node needs of a DBC, what it does with frames it cannot use, its own frames heard back, what the
base install brings for udp_multicast, and the first frames it sends (issue 9, items 9-13).

The udp_multicast cases across processes are in test_can_crossprocess.py (inside a network namespace)."""
import os
import re
from importlib import metadata

import can
import cantools
import numpy as np
import pytest
from can_support import Peer, codec, no_leaked_buses_or_threads  # noqa: F401

from bms.can import CanNode, Codec, DbcError, dbc_text
from bms.can.node import classify_rx_error
from bms.emulator import Emulator

DT = 0.01


def _emulator(seed=0, soc=0.6):
    return Emulator("assb60-192s2p", seed=seed, initial_soc=soc, temp_C=25.0, dt_s=DT)


# --- item 9: a DBC that lacks what the node sends or reads is refused before the bus opens ---------------
def _without(edit):
    db = cantools.database.load_string(dbc_text(), database_format="dbc")
    edit(db)
    db.refresh()
    return db.as_dbc_string()


def _drop_message(name):
    return lambda db: db.messages.remove(db.get_message_by_name(name))


def _drop_signal(message, signal):
    def edit(db):
        m = db.get_message_by_name(message)
        m.signals.remove(m.get_signal_by_name(signal))
    return edit


def _rename_signal(message, old, new):
    return lambda db: setattr(db.get_message_by_name(message).get_signal_by_name(old), "name", new)


def _sender(message, node):
    return lambda db: db.get_message_by_name(message).senders.__setitem__(slice(None), [node])


BAD_DBCS = [  # (edit, what the error must name)
    (_drop_message("BMS_Status"), ["no message BMS_Status"]),
    (_drop_message("VCU_Command"), ["no message VCU_Command"]),
    (_drop_message("BMS_SOP"), ["no message BMS_SOP"]),
    (_drop_signal("VCU_Command", "ContactorRequest"), ["VCU_Command", "lacks signal ContactorRequest"]),
    (_drop_signal("BMS_Limits", "ChargePowerLimit"), ["BMS_Limits", "lacks signal ChargePowerLimit"]),
    (_drop_signal("CHG_Status", "ChargerMaxCurrent"), ["CHG_Status", "lacks signal ChargerMaxCurrent"]),
    (_rename_signal("BMS_SOC", "SOCValid", "SOCValidity"),
     ["lacks signal SOCValid", "SOCValidity that the BMS has no value for"]),
    (_sender("BMS_Status", "VCU"), ["BMS_Status", "sent by node BMS", "VCU"]),
]


@pytest.mark.parametrize("edit, named", BAD_DBCS, ids=[n[0] for _, n in BAD_DBCS])
def test_serve_refuses_a_dbc_without_what_the_node_needs(tmp_path, capsys, edit, named):
    from hil.cli import main

    path = tmp_path / "bench.dbc"
    path.write_text(_without(edit), encoding="utf-8")
    log = tmp_path / "never.blf"
    status = main(["serve", "--lockstep", "--duration", "0.1", "-c", f"dbc-{os.getpid()}", "-q", "--dbc", str(path),
                   "--log", str(log)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert str(path) in err and all(text in err for text in named), err
    assert "Traceback" not in err and not log.exists()  # refused before the bus or a log was opened


def test_every_gap_is_named_at_once_with_the_line_of_its_message(tmp_path):
    text = _without(lambda db: (_drop_message("BMS_Status")(db), _drop_signal("VCU_Command", "StateRequest")(db),
                                _drop_signal("HIL_Load", "CoolingFactor")(db)))
    path = tmp_path / "bench.dbc"
    path.write_text(text, encoding="utf-8")
    line = 1 + next(k for k, row in enumerate(text.splitlines()) if re.match(r"BO_ \d+ VCU_Command:", row))
    with pytest.raises(DbcError) as info:
        CanNode(_emulator(), codec=Codec(path=path), channel=f"dbc-{os.getpid()}")
    message = str(info.value)
    assert "no message BMS_Status" in message
    assert f"line {line}: VCU_Command (received by BMS) lacks signal StateRequest" in message
    assert "HIL_Load (received by BMS) lacks signal CoolingFactor" in message


def test_a_bench_dbc_without_the_optional_charger_and_bench_messages_is_taken(tmp_path):
    path = tmp_path / "vehicle.dbc"
    path.write_text(_without(lambda db: (_drop_message("CHG_Status")(db), _drop_message("HIL_Load")(db))),
                    encoding="utf-8")
    with CanNode(_emulator(), codec=Codec(path=path), channel=f"opt-{os.getpid()}") as node:
        node.run_for(0.05)
        assert node.counters["tx_frames"] > 0


# --- item 10: what another node sends never stops the run -----------------------------------------------
def test_a_frame_with_an_identifier_no_can_frame_carries_is_a_bad_frame(request):
    channel = f"badid-{os.getpid()}"
    with CanNode(_emulator(), channel=channel) as node, can.Bus(interface="virtual", channel=channel) as bus:
        node.start()
        for arbitration_id, extended in ((0x800, False), (0x7FFF, False), (0x20000000, True)):
            bus.send(can.Message(arbitration_id=arbitration_id, is_extended_id=extended, data=bytes(8), check=False))
        bus.send(can.Message(arbitration_id=0x7FF, is_extended_id=False, data=bytes(8)))  # valid, unknown
        node.run_for(0.05)
        assert node.counters["bad_frames"] == 3 and node.counters["unknown_id"] == 1
        assert node.t_s == pytest.approx(0.06)


def test_the_report_names_the_last_frame_it_could_not_use_and_when(request):
    """Each kind of unusable frame the README lists is counted and, as the last receive error, named with
    its message, what was wrong, its identifier and data, and the simulated time it came at."""
    channel = f"lastrx-{os.getpid()}"
    with CanNode(_emulator(), channel=channel) as node, can.Bus(interface="virtual", channel=channel) as bus:
        peer = Peer(bus)
        node.start()

        def after(send) -> str:
            send()
            node.run_for(DT)
            return node.report().last_rx_error or ""

        short = can.Message(arbitration_id=0x200, is_extended_id=False, data=bytes(5))
        assert after(lambda: bus.send(short)).startswith("VCU_Command: DLC 5 (5 data bytes) where the DBC defines 8")
        assert "ID 0x200, data 0000000000, at t = 0.0" in node.report().last_rx_error
        unknown = can.Message(arbitration_id=0x205, is_extended_id=False, data=bytes(8))
        assert after(lambda: bus.send(unknown)).startswith("an identifier not in the DBC (ID 0x205")
        assert after(lambda: peer.send("VCU_Command", {"StateRequest": 1}, crc=0x00)) \
            .startswith("VCU_Command: wrong CRC (ID 0x200")
        peer.send("VCU_Command", {"StateRequest": 1}, counter=2)
        sent_at = node.t_s
        assert after(lambda: peer.send("VCU_Command", {"StateRequest": 1}, counter=9)) \
            .startswith("VCU_Command: alive counter 2 then 9")
        node.run_for(30 * DT)
        said = float(re.search(r"at t = ([0-9.]+) s\)$", node.report().last_rx_error).group(1))
        assert abs(said - sent_at) <= DT + 1e-9 and node.t_s > said + 0.2  # when it came, not the report's time
        c = node.counters
        assert c["wrong_dlc"] == c["unknown_id"] == c["crc_errors"] == c["counter_errors"] == 1, c


def test_what_a_receive_error_means():
    """Errors as python-can raises them: a message that cannot be built is a bad frame, a closed bus or a
    vanished device the adapter's failure, another operating-system error a receive error."""
    with can.Bus(interface="virtual", channel=f"classify-{os.getpid()}") as bus:
        try:
            can.Message(arbitration_id=0x800, is_extended_id=False, check=True)
        except ValueError as exc:
            invalid = exc
        wrapped = can.CanOperationError("could not unpack received message")
        wrapped.__cause__ = invalid
        assert classify_rx_error(bus, wrapped) == "bad_frame"
        assert classify_rx_error(bus, invalid) == "bad_frame"
        gone = can.CanOperationError("Error receiving: No such device", 19)
        gone.__cause__ = OSError(19, "No such device")
        assert classify_rx_error(bus, gone) == "fatal"
        busy = can.CanOperationError("Failed to wait for IP/UDP socket")
        busy.__cause__ = OSError(105, "No buffer space available")
        assert classify_rx_error(bus, busy) == "error"
    assert classify_rx_error(bus, can.CanOperationError("Cannot operate on a closed bus")) == "fatal"
    with can.Bus(interface="virtual", channel=f"classify2-{os.getpid()}") as bus:  # select() on a closed socket
        assert classify_rx_error(bus, ValueError("file descriptor cannot be a negative integer (-1)")) == "fatal"


# --- item 11: the node's own frames heard back are logged and counted once ------------------------------
def _out_of_range_command(counter: int) -> can.Message:
    """A VCU_Command with a good counter and CRC asking for StateRequest 7 (the DBC allows 0..4)."""
    raw = cantools.database.load_string(dbc_text(), database_format="dbc").get_message_by_name("VCU_Command")
    data = raw.encode({"VCU_Command_CRC": 0, "VCU_Command_Counter": 0, "StateRequest": 7, "ContactorRequest": 0},
                      strict=False)
    return can.Message(arbitration_id=raw.frame_id, is_extended_id=False,
                       data=codec()["VCU_Command"].protect(data, counter % 16))


def test_own_frames_heard_back_are_logged_and_read_once(tmp_path):
    """python-can's receive_own_messages: the bus hands the node its own sends back, marked is_rx False."""
    channel = f"own-{os.getpid()}"
    log = tmp_path / "own.log"
    with can.Bus(interface="virtual", channel=channel) as bus:
        node = CanNode(_emulator(), channel=channel, log=log, receive_own_messages=True)
        node.start()
        for k in range(20):
            bus.send(_out_of_range_command(k))
            node.run_for(DT)
        assert node.counters["own_frames"] == node.counters["tx_frames"] > 0  # every send came back, once
        report = node.close()
    c = report.counters
    assert c["rx_frames"] == 20 and c["bad_values"] == 20 and c["not_for_bms"] == 0
    assert c["rx_accepted"] == 0  # each frame in one category: an out-of-range request is not also accepted
    with can.LogReader(str(log)) as reader:
        frames = list(reader)
    assert len(frames) == report.log_frames == c["tx_frames"] + 20
    status = codec()["BMS_Status"]
    counters = [status.counter_of(m.data) for m in frames if m.arbitration_id == status.frame_id]
    assert all((b - a) % 16 == 1 for a, b in zip(counters, counters[1:]))  # each frame once, none twice


# --- item 12: the base install brings what udp_multicast needs -------------------------------------------
def test_the_base_install_requires_what_udp_multicast_needs():
    from packaging.requirements import Requirement

    base = [Requirement(r) for r in metadata.requires("assb-bms-emulator") or ()]
    base = [r for r in base if r.marker is None or "extra" not in str(r.marker)]
    can_req = next(r for r in base if r.name == "python-can")
    assert "multicast" in can_req.extras or any(r.name == "msgpack" for r in base), [str(r) for r in base]
    import msgpack  # noqa: F401 - installed with it
    from can.interfaces.udp_multicast.utils import is_msgpack_installed
    assert is_msgpack_installed(raise_exception=False)


# --- item 13: no signal flagged valid before its value exists --------------------------------------------
def _energy_at_ocv_kWh(estimator) -> float:
    """Energy above empty at open-circuit voltage, integrated from the cell's OCV table (independently of
    the estimator's kernel): sum over groups of capacity x integral of OCV from 0 to the group's SOC."""
    cell, params = estimator.params.cell, estimator.params
    ocv = np.array(cell.ocv_V)
    grid = np.linspace(0.0, 1.0, ocv.size)
    z = np.linspace(0.0, 1.0, 20001)
    v = np.interp(z, grid, ocv)
    cumulative_Vh = np.concatenate([[0.0], np.cumsum(np.diff(z) * 0.5 * (v[1:] + v[:-1]))])
    per_group_Wh = np.interp(estimator.group_soc, z, cumulative_Vh) * estimator.state.capacity_cell_Ah \
        * params.n_parallel
    return float(per_group_Wh.sum() / 1000.0)


def test_the_first_frames_carry_values_that_exist(request):
    """The first BMS_SOC says SOCValid with the energy its SOC means; the first BMS_SOP of every horizon
    carries the estimator's limits, not zeros."""
    channel = f"first-{os.getpid()}"
    emulator = _emulator(seed=3, soc=0.7)
    with CanNode(emulator, channel=channel) as node, can.Bus(interface="virtual", channel=channel) as bus:
        peer = Peer(bus)
        node.run_for(0.3)
        peer.drain()
        expected_kWh = _energy_at_ocv_kWh(emulator.estimator)
        sop = emulator.estimator.sop
    soc_message, sop_message = codec()["BMS_SOC"], codec()["BMS_SOP"]
    socs = [soc_message.decode(m.data) for m in peer.received if m.arbitration_id == soc_message.frame_id]
    assert socs and all(s["SOCValid"] == 1 for s in socs)
    assert socs[0]["EnergyRemaining"] == pytest.approx(expected_kWh, rel=0.01)  # at rest: no energy moved
    pages = {}
    for m in peer.received:
        if m.arbitration_id == sop_message.frame_id:
            values = sop_message.decode(m.data)
            pages.setdefault(int(values["SopHorizon"]), values)
    assert sorted(pages) == [0, 1, 2]
    for k, horizon_s in enumerate(sop.horizons_s):
        first = pages[k]
        assert first[f"SopDischargeCurrent_{horizon_s:g}s"] == pytest.approx(sop.discharge_current_A[k], abs=0.5)
        assert first[f"SopChargePower_{horizon_s:g}s"] == pytest.approx(sop.charge_power_W[k] / 1000, abs=0.5)
        assert first[f"SopDischargeCurrent_{horizon_s:g}s"] > 0 and first[f"SopChargeCurrent_{horizon_s:g}s"] > 0


def test_the_estimator_has_state_of_power_and_energy_after_its_first_update():
    emulator = _emulator(seed=1, soc=0.4)
    emulator.tick(0.0, None, 1.0)  # the power-on task
    est = emulator.estimator
    assert est.energy_remaining_kWh == pytest.approx(_energy_at_ocv_kWh(est), rel=1e-6)
    for array in (est.sop.discharge_current_A, est.sop.charge_current_A, est.sop.discharge_power_W,
                  est.sop.charge_power_W):
        assert np.all(np.isfinite(array)) and np.all(array > 0)


def test_a_bms_without_an_estimator_reports_the_energy_its_soc_means(request):
    """With the BMS on its own tables (no state of energy) a valid SOC still comes with an energy: the
    SOC's share of the pack's nominal energy (120 Ah x 192 x nominal cell voltage)."""
    channel = f"noest-{os.getpid()}"
    emulator = Emulator("assb60-192s2p", seed=2, initial_soc=0.6, temp_C=25.0, dt_s=DT, estimator=None)
    params = emulator.pack.params
    nominal_kWh = params.capacity_Ah * params.n_series * params.cell.voltage_nominal_V / 1000.0
    with CanNode(emulator, channel=channel) as node, can.Bus(interface="virtual", channel=channel) as bus:
        peer = Peer(bus)
        node.run_for(0.3)
        peer.drain()
    message = codec()["BMS_SOC"]
    socs = [message.decode(m.data) for m in peer.received if m.arbitration_id == message.frame_id]
    assert socs
    for s in socs:
        if s["SOCValid"]:
            assert s["EnergyRemaining"] == pytest.approx(s["SOC"] / 100.0 * nominal_kWh, abs=0.1)
        else:
            assert s["EnergyRemaining"] == 0.0
    assert socs[-1]["SOCValid"] == 1
