"""The emulated BMS on a vehicle's own CAN matrix: the map file, AUTOSAR E2E, CAN FD and 29-bit IDs end to end.

The VCU of the end-to-end tests is written from the example matrix file alone: cantools encodes and decodes,
cantools' ``cantools.autosar`` computes and checks the profile 5 CRCs; nothing of the project's codec.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import can
import cantools
import cantools.autosar
import crccheck.crc
import pytest
from can_support import no_leaked_buses_or_threads  # noqa: F401 - autouse fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from bms import load_pack
from bms.can import CanNode, Codec
from bms.can.e2e import Profile02, Profile05, crc16_ccitt_false
from bms.can.matrix import PUBLISHED, VcuGateway
from bms.emulator import Emulator
from hil.can_loop import CanVcu, VcuHost
from hil.matrix import example_path, load_matrix_map
from hil.scenario import ScenarioError

EXAMPLE_MAP = example_path()
EXAMPLE_DBC = example_path("ev_fd_bms.dbc")


# --- E2E ---------------------------------------------------------------------------------------------------
def test_crc_algorithms_are_the_autosar_catalogue_ones():
    """Check values of "123456789" in the CRC catalogue (AUTOSAR SWS CRC library: CRC-8H2F 0xDF,
    CRC-16/CCITT-FALSE 0x29B1, CRC-8 SAE J1850 0x4B)."""
    assert crccheck.crc.Crc8Autosar.calc(b"123456789") == 0xDF
    assert crccheck.crc.Crc16CcittFalse.calc(b"123456789") == 0x29B1 == crc16_ccitt_false(b"123456789")
    from bms.can import crc8_j1850
    assert crc8_j1850(b"123456789") == 0x4B


@settings(max_examples=60)
@given(st.binary(min_size=4, max_size=64), st.integers(0, 0xFFFF), st.integers(0, 255))
def test_profile05_agrees_with_cantools(payload, data_id, counter):
    p5 = Profile05(data_id, crc_signal="c", counter_signal="n", length=len(payload))
    frame = p5.protect(payload, counter)
    assert frame[2] == counter and frame[3:] == payload[3:]
    assert cantools.autosar.check_profile5_crc(frame, data_id) is True
    assert p5.check(frame) and p5.counter_of(frame) == counter
    bad = bytearray(frame)
    bad[-1] ^= 0x01
    assert not p5.check(bad)


@settings(max_examples=60)
@given(st.binary(min_size=2, max_size=64), st.lists(st.integers(0, 255), min_size=16, max_size=16),
       st.integers(0, 15))
def test_profile02_agrees_with_cantools(payload, data_ids, counter):
    p2 = Profile02(data_ids, crc_signal="c", counter_signal="n", length=len(payload))
    frame = p2.protect(payload, counter)
    assert p2.counter_of(frame) == counter
    assert cantools.autosar.check_profile2_crc(frame, data_ids[counter]) is True
    assert p2.check(frame)


@settings(max_examples=40)
@given(st.binary(max_size=64))
def test_table_crc16_is_crccheck_s(data):
    assert crc16_ccitt_false(data) == crccheck.crc.Crc16CcittFalse.calc(data)


_MATRIX = None


def _matrix():
    global _MATRIX
    if _MATRIX is None:
        _MATRIX = load_matrix_map(EXAMPLE_MAP)
    return _MATRIX


@st.composite
def matrix_values(draw):
    codec = _matrix().codec
    message = codec[draw(st.sampled_from(sorted(codec.messages)))]
    values = {}
    for name in message.signal_names():
        spec = message.signals[name]
        values[name] = draw(st.integers(spec.raw_min, spec.raw_max)) * spec.scale + spec.offset
    return message, values


@settings(max_examples=150)
@given(matrix_values(), st.integers(0, 255))
def test_generated_codec_of_big_endian_fd_frames_is_cantools_bit_for_bit(drawn, counter):
    """The generated encoders and decoders (Motorola signals, 64-byte frames) against cantools; the profile 5
    frames against cantools.autosar."""
    message, values = drawn
    assert message.generated_encoder() is not None or message.e2e is not None  # no fallback to cantools
    full = dict(values)
    if message.e2e:
        full[message.e2e.counter_signal] = counter
        full[message.e2e.crc_signal] = 0
    theirs = bytes(message.dbc_message.encode(full, scaling=True, padding=False, strict=True))
    if message.e2e:
        ours = message.encoder()(counter, *[values[n] for n in message.signal_names()])
        theirs = bytes(cantools.autosar.apply_profile5_crc(theirs, message.e2e.data_id))
    else:
        ours = message.encoder()(*[values[n] for n in message.signal_names()])
    assert ours == theirs
    assert message.decode(ours) == message.dbc_message.decode(ours, decode_choices=False, scaling=True)


# --- the map file ------------------------------------------------------------------------------------------
def _edited_map(tmp_path: Path, old: str, new: str, dbc_edit=None) -> Path:
    text = EXAMPLE_MAP.read_text()
    assert old in text
    dbc = EXAMPLE_DBC.read_text()
    if dbc_edit:
        assert dbc_edit[0] in dbc
        dbc = dbc.replace(dbc_edit[0], dbc_edit[1])
    (tmp_path / "ev_fd_bms.dbc").write_text(dbc)
    path = tmp_path / "map.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize("old, new, key, needle, words", [
    ("pack_voltage_V = {", "pack_voltag_V = {", "publish.pack_voltag_V", "pack_voltag_V",
     "did you mean 'pack_voltage_V'"),
    ('signal = "BMS_PackU"', 'signal = "BMS_PackV"', "publish.pack_voltage_V.signal", "BMS_PackV",
     "did you mean 'BMS_PackU'"),
    ('message = "BMS_Energy", signal = "BMS_SoC",', 'message = "BMS_Enrgy", signal = "BMS_SoC",',
     "publish.soc_pct.message", "BMS_Enrgy", "did you mean 'BMS_Energy'"),
    ('signal = "BMS_PackU" }', 'signal = "BMS_PackU", scale = 1000.0 }', "publish.pack_voltage_V.signal",
     "BMS_PackU", "too narrow"),
    ('INIT = "Startup"', 'INIT = "Starting"', "publish.state.enum.INIT", "Starting", "did you mean 'Startup'"),
    ("state_request = {", "# state_request = {", "receive.state_request", None, "missing"),
    ("charger_max_current_A = {", "# charger_max_current_A = {", "receive.charger_max_current_A", None, "missing"),
    ('message = "OBC_Offer", signal = "OBC_MaxU"', 'message = "BMS_Energy", signal = "BMS_SoC"',
     "receive.charger_max_voltage_V.message", "charger_max_voltage_V", "a command comes from another node"),
    ('profile = "P05"', 'profile = "P5"', "e2e.BMS_State.profile", 'profile = "P5"', "did you mean 'P05'"),
    ('counter_signal = "BMS_St_AliveCtr"', 'counter_signal = "BMS_St_CRC"', "e2e.BMS_State.counter_signal",
     'counter_signal = "BMS_St_CRC"', "expects 8 bits"),
    ('node = "BMS_ECU"', 'node = "BMS"', "matrix.node", 'node = "BMS"', "did you mean 'BMS_ECU'"),
])
def test_malformed_maps_name_file_line_and_key(tmp_path, old, new, key, needle, words):
    path = _edited_map(tmp_path, old, new)
    with pytest.raises(ScenarioError) as info:
        load_matrix_map(path)
    err = info.value
    assert err.source == str(path) and err.key == key, str(err)
    assert words in str(err)
    if needle is not None:
        assert err.line == _line_of(path, needle), str(err)


def test_a_message_longer_than_its_dlc_allows_is_refused(tmp_path):
    # BMS_Energy made 12 bytes long while staying a classic CAN frame
    path = _edited_map(tmp_path, "[matrix]", "[matrix]", dbc_edit=("BO_ 289 BMS_Energy: 8", "BO_ 289 BMS_Energy: 12"))
    with pytest.raises(ScenarioError, match=r"BMS_Energy \(0x121\) is 12 bytes long, more than a classic CAN") as info:
        load_matrix_map(path)
    assert info.value.key == "matrix.file"


def test_a_log_that_cannot_hold_can_fd_frames_is_refused_before_the_bus_opens(tmp_path, capsys):
    from hil.cli import main
    log = tmp_path / "run.trc"
    assert main(["serve", "--matrix", str(EXAMPLE_MAP), "--lockstep", "--duration", "0.1", "--log", str(log),
                 "-q"]) == 2
    assert "TRC writer cannot write CAN FD frames" in capsys.readouterr().err and not log.exists()


def test_a_bad_map_fails_before_the_bus_opens(tmp_path):
    from hil.cli import main
    path = _edited_map(tmp_path, 'signal = "BMS_PackU"', 'signal = "BMS_PackV"')
    log = tmp_path / "never.blf"
    assert main(["serve", "--matrix", str(path), "--lockstep", "--duration", "1", "--log", str(log), "-q"]) == 2
    assert not log.exists()


# --- end to end, with a VCU written from the matrix alone --------------------------------------------------
class MatrixVcu:
    """A VCU that knows only ev_fd_bms.dbc: cantools encodes its command (profile 5 by cantools.autosar),
    decodes the BMS's frames and checks their CRCs."""

    def __init__(self, bus):
        self.bus = bus
        self.db = cantools.database.load_file(str(EXAMPLE_DBC))
        self.cmd = self.db.get_message_by_name("VCU_BmsCmd")
        self.counter = 0
        self.latest: dict[str, dict] = {}
        self.bad_crc = 0
        self.silent = False
        self.next_s = 0.0

    def tick(self, t_s: float) -> None:
        while (msg := self.bus.recv(0)) is not None:
            try:
                message = self.db.get_message_by_frame_id(msg.arbitration_id)
            except KeyError:
                continue
            if message.name in ("BMS_State", "BMS_Power"):
                data_id = 0x1040 if message.name == "BMS_State" else 0x0120
                if not cantools.autosar.check_profile5_crc(bytes(msg.data), data_id):
                    self.bad_crc += 1
                    continue
            self.latest[message.name] = message.decode(bytes(msg.data), decode_choices=True)
        if self.silent or t_s < self.next_s - 1e-9:
            return
        self.next_s = t_s + 0.02  # the matrix's cycle time of VCU_BmsCmd
        payload = self.cmd.encode({"VCU_Cmd_CRC": 0, "VCU_Cmd_AliveCtr": self.counter, "VCU_BmsModeReq": "HvOn",
                                   "VCU_HvRelayReq": "Close"})
        payload = cantools.autosar.apply_profile5_crc(payload, 0x0010)
        self.counter = (self.counter + 1) % 256
        self.bus.send(can.Message(arbitration_id=self.cmd.frame_id, is_extended_id=True, data=payload,
                                  timestamp=t_s))


def test_a_vcu_written_from_the_matrix_drives_the_bms_to_ready_and_sees_it_open_when_silent(tmp_path):
    matrix = load_matrix_map(EXAMPLE_MAP)
    emu = Emulator("assb60-192s2p", seed=3, initial_soc=0.7)
    logs = [tmp_path / "bus.blf", tmp_path / "bus.asc", tmp_path / "bus.log"]
    node = CanNode(emu, matrix=matrix, interface="virtual", channel="matrix-e2e0", log=[str(p) for p in logs],
                   diag=False)
    bus = can.Bus(interface="virtual", channel="matrix-e2e0", preserve_timestamps=True)
    vcu = MatrixVcu(bus)
    try:
        modes = []
        for _ in range(400):
            node.step()
            vcu.tick(node.t_s)
            mode = str(vcu.latest.get("BMS_State", {}).get("BMS_OpMode", ""))
            if not modes or modes[-1] != mode:
                modes.append(mode)
            if mode == "Operational":
                break
        assert "PreCharge" in modes and modes[-1] == "Operational", modes
        assert vcu.bad_crc == 0 and node.counters["crc_errors"] == 0 and node.counters["counter_errors"] == 0
        for _ in range(20):
            node.step()
            vcu.tick(node.t_s)
        # limits equal the built-in DBC's within resolution (matrix 0.1 A, built-in 0.25 A)
        builtin = Codec()
        power = vcu.latest["BMS_Power"]
        lim = emu.bms.limits
        ref = builtin["BMS_Limits"].decode(builtin.encode("BMS_Limits", {
            "DischargeCurrentLimit": lim.discharge_current_A, "ChargeCurrentLimit": lim.charge_current_A,
            "DischargePowerLimit": lim.discharge_power_W / 1e3, "ChargePowerLimit": lim.charge_power_W / 1e3}))
        assert power["BMS_DchgILim"] > 100
        assert abs(power["BMS_DchgILim"] - ref["DischargeCurrentLimit"]) <= 0.125 + 0.05 + 1e-9
        assert abs(power["BMS_ChgILim"] - ref["ChargeCurrentLimit"]) <= 0.125 + 0.05 + 1e-9
        assert abs(power["BMS_DchgPLim"] - 1000 * ref["DischargePowerLimit"]) <= 50 + 25 + 1e-6
        assert vcu.latest["BMS_State"]["BMS_RlyMainPos"] == "True"
        # the VCU falls silent: past the 100 ms timeout the BMS flags the fault and opens
        vcu.silent = True
        for _ in range(200):
            node.step()
            vcu.tick(node.t_s)
        state = vcu.latest["BMS_State"]
        assert state["BMS_ComFlt"] == "True" and state["BMS_RlyMainPos"] == "False", state
        assert node.comm_fault_log and node.comm_fault_log[0][1] == "VCU_BmsCmd"
    finally:
        node.close()
        bus.shutdown()
    # CAN FD frames (with BRS) and 29-bit IDs survive every log format python-can writes them in
    for path in logs:
        frames = {(m.arbitration_id, m.is_rx): m for m in can.LogReader(str(path))}
        state = next(m for (i, rx), m in frames.items() if i == 0x18FF1040)
        assert state.is_extended_id and state.is_fd and state.bitrate_switch and len(state.data) == 16, path
        cells = next(m for (i, rx), m in frames.items() if i == 0x130)
        assert cells.is_fd and len(cells.data) == 64 and not cells.is_extended_id, path
        cmd = next(m for (i, rx), m in frames.items() if i == 0x18FF0010)
        assert cmd.is_extended_id and not cmd.is_fd, path
        assert cantools.database.load_file(str(EXAMPLE_DBC)).get_message_by_name("BMS_CellVolt1").decode(
            bytes(cells.data))["BMS_CellU001"] > 3000  # mV of a cell at 70 % SOC


# --- every quantity of the built-in DBC, from the matrix's log ---------------------------------------------
def _run(tmp_path: Path, name: str, matrix=None, seconds: float = 3.0, quiet_sensors: bool = False) -> Path:
    params = load_pack("assb60-192s2p")
    if quiet_sensors:  # no measurement noise: frames sent at other instants still carry the same value
        params = replace(params, sensors=replace(params.sensors, cell_voltage_noise_V=0.0, temperature_noise_K=0.0,
                                                 current_noise_A=0.0, pack_voltage_noise_V=0.0))
    emu = Emulator(params, seed=11, initial_soc=0.6)
    log = tmp_path / f"{name}.blf"
    channel = f"matrix-eq-{name}0"
    node = CanNode(emu, matrix=matrix, interface="virtual", channel=channel, log=str(log), diag=False)
    bus = can.Bus(interface="virtual", channel=channel)
    builtin = Codec()
    firmware = CanVcu(builtin) if matrix is None else VcuGateway(CanVcu(builtin), matrix, builtin)
    vcu = VcuHost(bus, firmware, dt_s=emu.dt_s)
    try:
        for _ in range(int(seconds / emu.dt_s)):
            node.step()
            vcu.tick(node.t_s, None, emu.sensors.link_voltage_V)
    finally:
        node.close()
        bus.shutdown()
    return log


def _series(path: Path, db, wanted: set) -> dict:
    out: dict = {}
    for msg in can.LogReader(str(path)):
        if msg.is_rx:
            continue
        try:
            message = db.get_message_by_frame_id(msg.arbitration_id)
        except KeyError:
            continue
        if message.name not in wanted:
            continue
        for sig, value in message.decode(bytes(msg.data), decode_choices=False).items():
            out.setdefault((message.name, sig), []).append((round(msg.timestamp, 6), float(value)))
    return out


def test_every_mapped_quantity_matches_the_builtin_dbc_within_resolution(tmp_path):
    """The same seeded run (noise-free sensors) on the built-in DBC and on the example matrix (the VCU model
    through the map): each quantity decoded by cantools from each log agrees within the two signals'
    resolutions, at the same instant where both logs carry it then, else at the nearest instant within what
    the quantity itself changes over +-1 s."""
    matrix = load_matrix_map(EXAMPLE_MAP)
    builtin_db = Codec().db
    matrix_db = cantools.database.load_file(str(EXAMPLE_DBC))
    ref = _series(_run(tmp_path, "builtin", quiet_sensors=True), builtin_db, {m.name for m in builtin_db.messages})
    got = _series(_run(tmp_path, "matrix", matrix, quiet_sensors=True), matrix_db,
                  {m.name for m in matrix_db.messages})
    assert {r.quantity for r in matrix.publish} == set(PUBLISHED) | {"cell_voltage_V", "temperature_C"}
    checked = 0
    for r in matrix.publish:
        bmsg, bsig = r.builtin
        b_sig = builtin_db.get_message_by_name(bmsg).get_signal_by_name(bsig)
        m_sig = matrix_db.get_message_by_name(r.message).get_signal_by_name(r.signal)
        inverse = r.translation.inverse()
        series_ref, series_got = ref[(bmsg, bsig)], got[(r.message, r.signal)]
        tol = abs(b_sig.scale) / 2 + abs(m_sig.scale / (r.translation.scale if r.translation.enum is None
                                                         else 1.0)) / 2 + 1e-9
        by_time = dict(series_ref)
        common = [(t, v) for t, v in series_got if t in by_time]
        if common:
            t, v = common[-1]
            value = inverse.apply(v)
            assert value is not None and abs(value - by_time[t]) <= tol, (r.key, r.signal, t, value, by_time[t])
        else:  # slow messages in other phases: the matrix's frame nearest the built-in's last one, within
            # the matrix series' own change around it (measurement noise, relaxation)
            t_ref, v_ref = series_ref[-1]
            k = min(range(len(series_got)), key=lambda j: abs(series_got[j][0] - t_ref))
            value = inverse.apply(series_got[k][1])
            near = [inverse.apply(v) for t, v in series_got if abs(t - t_ref) <= 1.0]
            drift = max(near) - min(near)  # what the quantity itself does over +-1 s
            assert value is not None and abs(value - v_ref) <= tol + drift, (r.key, r.signal, value, v_ref, drift)
        checked += 1
    assert checked == len(matrix.publish) == len(PUBLISHED) + 192 + 24


def test_unmapped_messages_go_out_with_their_initial_values_at_the_overridden_cycle(tmp_path):
    matrix = load_matrix_map(EXAMPLE_MAP)
    log = _run(tmp_path, "version", matrix, seconds=2.0)
    db = cantools.database.load_file(str(EXAMPLE_DBC))
    version = [m for m in can.LogReader(str(log)) if m.arbitration_id == 0x1FF]
    assert len(version) == 4  # 500 ms ([cycle_time_ms]) instead of the matrix's 1000 ms, over 2 s
    assert db.get_message_by_name("BMS_Version").decode(bytes(version[0].data)) == {
        "BMS_SwMajor": 3, "BMS_SwMinor": 14, "BMS_MatrixRev": 2}


def test_run_with_the_matrix_uses_the_map_for_the_vcu_model(tmp_path, capsys):
    from hil.cli import main
    out = tmp_path / "out"
    status = main(["run", "default", "--matrix", str(EXAMPLE_MAP), "--max-sim-s", "3", "--no-plots",
                   "--no-progress", "--out", str(out)])
    assert status == 4  # a shortened run is incomplete, never passed
    ids = {m.arbitration_id for m in can.LogReader(str(out / "bus.blf"))}
    assert {0x18FF1040, 0x18FF0010, 0x130} <= ids and 0x100 not in ids  # matrix frames, no built-in BMS_Status
    assert "PASS  contactors closed through the drive" in capsys.readouterr().out  # the VCU model closed them
    # the log (CAN FD frames, 29-bit IDs) replays, from every format that keeps them
    mapping = tmp_path / "replay.toml"
    mapping.write_text('[replay]\npack = "assb60-192s2p"\n[demand]\n'
                       'current_A = { message = "BMS_Power", signal = "BMS_PackI", scale = -1.0 }\n[compare]\n'
                       'soc = { message = "BMS_Energy", signal = "BMS_SoC" }\n'
                       'pack_voltage_V = { message = "BMS_Power", signal = "BMS_PackU" }\n')
    frames = list(can.LogReader(str(out / "bus.blf")))
    for suffix in ("blf", "asc", "log"):
        log = out / "bus.blf" if suffix == "blf" else tmp_path / f"copy.{suffix}"
        if suffix != "blf":
            with can.Logger(str(log)) as writer:
                for frame in frames:
                    writer(frame)
        status = main(["replay", str(log), "--dbc", str(EXAMPLE_DBC), "--map", str(mapping), "--out",
                       str(tmp_path / f"replay-{suffix}"), "--no-plots"])
        text = capsys.readouterr().out
        assert status == 0, text
        assert "0 of" in text and "checks failed" in text, text


@pytest.mark.parametrize("suffix", ["kcd", "sym"])
def test_kcd_and_sym_matrices_load_through_cantools(tmp_path, suffix):
    db = cantools.database.load_file(str(EXAMPLE_DBC))
    cantools.database.dump_file(db, str(tmp_path / f"ev.{suffix}"))
    shutil.copy(EXAMPLE_MAP, tmp_path / "map.toml")
    text = (tmp_path / "map.toml").read_text().replace('file = "ev_fd_bms.dbc"', f'file = "ev.{suffix}"')
    (tmp_path / "map.toml").write_text(text)
    try:
        matrix = load_matrix_map(tmp_path / "map.toml")
    except ScenarioError as exc:  # a format that cannot say what the map needs must say so by key
        assert exc.key.startswith(("matrix", "publish", "receive", "e2e")), str(exc)
        return
    assert matrix.codec["BMS_State"].frame_id == 0x18FF1040


# --- ARXML ------------------------------------------------------------------------------------------------
def test_an_arxml_matrix_selects_its_ecu_and_generates_and_checks_its_e2e_profile(tmp_path):
    """An AUTOSAR 4 system description (tests/matrix_arxml.py): the BMS ECU's frames by name, cycle times from
    the I-PDU timing, profile 5 and the data IDs from its END-TO-END-PROTECTION-SET; a VCU on cantools alone
    (``apply_profile5_crc(payload, message)`` takes the data ID from the ARXML) brings it to READY."""
    from matrix_arxml import write_arxml
    matrix = load_matrix_map(write_arxml(tmp_path))
    assert [m.name for m in matrix.sent_messages()] == ["BMS_Status"]
    db = cantools.database.load_file(str(tmp_path / "bms.arxml"))
    status, command = db.get_message_by_name("BMS_Status"), db.get_message_by_name("VCU_Cmd")
    emu = Emulator("assb60-192s2p", seed=5, initial_soc=0.6)
    node = CanNode(emu, matrix=matrix, interface="virtual", channel="matrix-arxml0", diag=False)
    bus = can.Bus(interface="virtual", channel="matrix-arxml0")
    modes, bad = [], 0
    try:
        for k in range(300):
            node.step()
            while (msg := bus.recv(0)) is not None:
                if msg.arbitration_id == status.frame_id:
                    if not cantools.autosar.check_profile5_crc(bytes(msg.data), status):
                        bad += 1
                    modes.append(int(status.decode(bytes(msg.data))["BMS_Mode"]))
            if k % 2 == 0:  # 20 ms
                payload = command.encode({"VCU_Cmd_CRC": 0, "VCU_Cmd_Ctr": (k // 2) % 256, "VCU_Req": 2})
                bus.send(can.Message(arbitration_id=command.frame_id, is_extended_id=False,
                                     data=cantools.autosar.apply_profile5_crc(payload, command)))
        assert bad == 0 and node.counters["crc_errors"] == 0 and node.counters["rx_accepted"] > 100
        assert 2 in modes and modes[-1] == 3  # PRECHARGE, then READY
        assert node.stats.report()[1]["message"] == "BMS_Status"
        # a frame with a wrong CRC is counted, and three in a row are a communication fault
        for k in range(3):
            payload = bytearray(apply := cantools.autosar.apply_profile5_crc(
                command.encode({"VCU_Cmd_CRC": 0, "VCU_Cmd_Ctr": (150 + k) % 256, "VCU_Req": 2}), command))
            payload[0] ^= 0xFF
            assert apply is not None
            bus.send(can.Message(arbitration_id=command.frame_id, is_extended_id=False, data=payload))
            node.step()
        assert node.counters["crc_errors"] == 3 and node.comm_fault_log[-1][1:] == ("VCU_Cmd", True)
    finally:
        node.close()
        bus.shutdown()


# --- fault injection through the map -----------------------------------------------------------------------
@pytest.mark.parametrize("what, counter", [("crc", "crc_errors"), ("counter", "counter_errors")])
def test_the_vcu_models_faults_reach_the_bms_in_the_matrix_s_own_e2e(what, counter):
    matrix = load_matrix_map(EXAMPLE_MAP)
    emu = Emulator("assb60-192s2p", seed=2, initial_soc=0.6)
    node = CanNode(emu, matrix=matrix, interface="virtual", channel=f"matrix-fault-{what}0", diag=False)
    bus = can.Bus(interface="virtual", channel=f"matrix-fault-{what}0")
    builtin = Codec()
    vcu = VcuHost(bus, VcuGateway(CanVcu(builtin), matrix, builtin), dt_s=emu.dt_s)
    try:
        for k in range(250):
            if k == 200:
                vcu.corrupt = what
            node.step()
            vcu.tick(node.t_s, None, emu.sensors.link_voltage_V)
            if k == 199:
                assert emu.bms.state.name == "READY" and node.counters[counter] == 0
        assert node.counters[counter] >= 3
        assert node.comm_fault_log and node.comm_fault_log[0][1:] == ("VCU_BmsCmd", True)
        assert 2.0 < node.comm_fault_log[0][0] < 2.1  # the third bad frame after the fault began at 2.0 s
    finally:
        node.close()
        bus.shutdown()


# --- the project's own DBC, CAN FD variant ------------------------------------------------------------------
def test_the_fd_variant_of_the_builtin_dbc_is_what_the_generator_writes_and_serve_sends_it(tmp_path):
    from bms.can import dbc_text, fd_dbc_path
    from bms.can._dbcgen import render
    from hil.cli import main
    assert dbc_text(fd=True) == render(fd=True), "run: python -m bms.can._dbcgen --fd > bms/can/assb_bms_fd.dbc"
    log = tmp_path / "fd.blf"
    assert main(["serve", "--dbc", str(fd_dbc_path()), "--fd", "--lockstep", "--duration", "0.5", "--log", str(log),
                 "-q", "--no-diag"]) == 0
    db = cantools.database.load_file(str(fd_dbc_path()))
    cells = db.get_message_by_name("BMS_CellVoltages")
    frames = [m for m in can.LogReader(str(log)) if m.arbitration_id == cells.frame_id]
    assert frames and all(m.is_fd and m.bitrate_switch and len(m.data) == 64 for m in frames)
    seen = {}
    for m in frames[:8]:  # a full sweep of 192 series groups in 8 frames (80 ms)
        seen.update({k: v for k, v in cells.decode(bytes(m.data), decode_choices=False).items()
                     if k.startswith("CellVoltage_")})
    assert len(seen) == 192 and all(3.0 < v < 4.3 for v in seen.values())
    status = [m for m in can.LogReader(str(log)) if m.arbitration_id == 0x100]
    assert status and not any(m.is_fd for m in status)  # everything else stays classical CAN


def test_the_builtin_fd_dbc_as_a_matrix_through_an_identity_map_sends_what_the_dbc_itself_sends(tmp_path):
    """The project's CAN FD DBC used as a vehicle matrix (multiplexed cell and temperature pages, the project's
    E2E from its E2EDataID attributes), every quantity and command mapped to itself: the bus log is the one
    ``--dbc`` gives, frame for frame, bit for bit (the map adds nothing of its own)."""
    from bms.can import fd_dbc_path
    from bms.can.matrix import ARRAYS, COMMANDS
    shutil.copy(fd_dbc_path(), tmp_path / "fd.dbc")
    lines = ['[matrix]\nfile = "fd.dbc"\nnode = "BMS"\n[publish]']
    lines += [f'{q} = {{ message = "{m}", signal = "{s}" }}' for q, (m, s) in PUBLISHED.items()]
    lines += ['cell_voltage_V = { message = "BMS_CellVoltages", signal = "CellVoltage_{index:03d}" }',
              'temperature_C = { message = "BMS_CellTemperatures", signal = "Temperature_{index:02d}" }', "[receive]"]
    lines += [f'{c} = {{ message = "{m}", signal = "{s}" }}' for c, (m, s) in COMMANDS.items()]
    assert set(ARRAYS) == {"cell_voltage_V", "temperature_C"}
    (tmp_path / "identity.toml").write_text("\n".join(lines) + "\n")
    matrix = load_matrix_map(tmp_path / "identity.toml")

    def run(name, **kwargs):
        emu = Emulator("assb60-192s2p", seed=4, initial_soc=0.5)
        channel = f"matrix-identity-{name}0"
        node = CanNode(emu, interface="virtual", channel=channel, log=str(tmp_path / f"{name}.blf"), diag=False,
                       **kwargs)
        bus = can.Bus(interface="virtual", channel=channel)
        codec = Codec(path=fd_dbc_path())
        vcu = VcuHost(bus, CanVcu(codec), dt_s=emu.dt_s)
        try:
            for _ in range(150):
                node.step()
                vcu.tick(node.t_s, None, emu.sensors.link_voltage_V)
            assert emu.bms.state.name == "READY"
        finally:
            node.close()
            bus.shutdown()
        return [(m.timestamp, m.arbitration_id, m.is_rx, m.is_fd, m.bitrate_switch, bytes(m.data))
                for m in can.LogReader(str(tmp_path / f"{name}.blf"))]

    direct = run("dbc", codec=Codec(path=fd_dbc_path()))
    mapped = run("map", matrix=matrix)
    assert len(direct) > 800 and any(f[3] for f in direct)
    assert mapped == direct
