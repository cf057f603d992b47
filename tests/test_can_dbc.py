"""The shipped DBC and the codec generated from it."""
import logging
import math
import warnings

import cantools
import pytest
from can_support import codec, no_leaked_buses_or_threads  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st

from bms.can import DbcError, dbc_text, load_dbc
from bms.can._dbcgen import render
from bms.can.codec import Codec, crc8_j1850

CYCLIC_TX = {"BMS_Status": 10, "BMS_PackMeasurements": 10, "BMS_Limits": 10, "BMS_CellVoltageStats": 100,
             "BMS_TemperatureStats": 100, "BMS_SOC": 100, "BMS_Faults": 100, "BMS_SOP": 100,
             "BMS_ChargeRequest": 100, "BMS_CellVoltages": 10, "BMS_CellTemperatures": 20}


def test_dbc_loads_in_cantools_without_warnings(tmp_path, caplog):
    path = tmp_path / "assb_bms.dbc"
    path.write_text(dbc_text(), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.DEBUG):
            db = cantools.database.load_file(str(path), strict=True)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]
    assert {m.name for m in db.messages} >= set(CYCLIC_TX) | {"VCU_Command", "CHG_Status", "HIL_Load"}
    # diagnostics are UDS on ISO-TP (bms.diag), not DBC messages: nothing on the diagnostic identifiers
    assert not {m.frame_id for m in db.messages} & {0x7E0, 0x7E8, 0x7DF}
    assert "UDS (ISO 14229-1) on ISO-TP" in db.dbc.attributes.get("CM_", "") or "UDS" in dbc_text()
    for name, cycle_ms in CYCLIC_TX.items():
        message = db.get_message_by_name(name)
        assert message.cycle_time == cycle_ms and message.senders == ["BMS"]
        assert message.comment, name
        for signal in message.signals:
            assert signal.comment, f"{name}.{signal.name} has no comment"
    # units, ranges and value tables are there
    status = db.get_message_by_name("BMS_Status")
    assert status.get_signal_by_name("BmsState").choices[5] == "FAULT"
    assert db.get_message_by_name("BMS_PackMeasurements").get_signal_by_name("PackCurrent").unit == "A"
    assert db.get_message_by_name("VCU_Command").get_signal_by_name("StateRequest").choices[2] == "DRIVE"
    # every cell voltage and temperature of the 192s2p pack has its own multiplexed signal
    cells = db.get_message_by_name("BMS_CellVoltages")
    assert cells.is_multiplexed() and len([s for s in cells.signals if s.name.startswith("CellVoltage_")]) == 192
    temps = db.get_message_by_name("BMS_CellTemperatures")
    assert len([s for s in temps.signals if s.name.startswith("Temperature_")]) == 24


def test_shipped_dbc_is_what_the_generator_writes():
    assert dbc_text() == render(), "run: python -m bms.can._dbcgen > bms/can/assb_bms.dbc"


def test_safety_relevant_messages_carry_counter_and_crc():
    c = codec()
    protected = {m.name for m in c.messages.values() if m.e2e is not None}
    assert protected == {"BMS_Status", "BMS_PackMeasurements", "BMS_Limits", "BMS_Faults", "BMS_ChargeRequest",
                         "VCU_Command", "CHG_Status"}
    for name in protected:
        e2e = c[name].e2e
        assert e2e.data_id == c[name].frame_id and e2e.crc_byte == 0 and e2e.counter_bits == 4


def test_crc8_j1850_check_value():
    assert crc8_j1850(b"123456789") == 0x4B  # catalogue check value of CRC-8/SAE-J1850
    assert crc8_j1850(b"") == 0x00


def test_e2e_protect_and_check():
    m = codec()["VCU_Command"]
    frame = codec().encode("VCU_Command", {"StateRequest": 2}, counter=7)
    assert m.crc_ok(frame) and m.counter_of(frame) == 7
    for byte in range(8):  # any single-bit error is caught
        for bit in range(8):
            bad = bytearray(frame)
            bad[byte] ^= 1 << bit
            assert not m.crc_ok(bad)
    other = codec()["CHG_Status"]  # the data ID makes a frame invalid under another message's ID
    assert not other.crc_ok(frame)


def test_a_bad_dbc_says_which_file(tmp_path):
    bad = tmp_path / "broken.dbc"
    bad.write_text("BO_ 1 X: 8 BMS\n SG_ A : 0|80@1+ (1,0) [0|1] \"\" VCU\n", encoding="utf-8")
    with pytest.raises(DbcError, match="broken.dbc"):
        load_dbc(bad)
    with pytest.raises(DbcError, match="no such file"):
        load_dbc(tmp_path / "missing.dbc")


def _value_strategy(spec):
    lo, hi = sorted((spec.raw_min * spec.scale + spec.offset, spec.raw_max * spec.scale + spec.offset))
    if spec.choices or (spec.scale == 1 and spec.offset == 0):
        return st.integers(int(math.ceil(lo)), int(math.floor(hi)))
    return st.floats(lo, hi, allow_nan=False)


@st.composite
def message_values(draw):
    c = codec()
    message = c[draw(st.sampled_from(sorted(c.messages)))]
    page = draw(st.sampled_from(message.pages))
    values = {name: draw(_value_strategy(message.signals[name])) for name in message.signal_names(page)}
    return message, page, values


@settings(max_examples=300)
@given(message_values())
def test_generated_codec_matches_cantools_bit_for_bit(drawn):
    message, page, values = drawn
    full = dict(values)
    if message.multiplexer:
        full[message.multiplexer] = page
    if message.e2e:
        full[message.e2e.counter_signal] = 0
        full[message.e2e.crc_signal] = 0
    ours = message.encode_values([values[n] for n in message.signal_names(page)], page)
    theirs = message.dbc_message.encode(full, scaling=True, padding=False, strict=True)
    assert ours == bytes(theirs)
    # the node's encoder (alive counter and CRC folded in for E2E messages) gives the same bytes
    ordered = [values[n] for n in message.signal_names(page)]
    if message.e2e:
        assert message.encoder(page)(5, *ordered) == message.protect(ours, 5)
        assert message.encode({**values, message.e2e.counter_signal: 5}, page=page) == message.protect(ours, 5)
    else:
        assert message.encoder(page)(*ordered) == ours
    # and back: the generated decoder gives cantools' numbers exactly
    assert message.decode(ours) == message.dbc_message.decode(ours, decode_choices=False, scaling=True)
    # round trip within half a resolution step
    decoded = message.decode(ours)
    for name, value in values.items():
        assert abs(decoded[name] - value) <= abs(message.signals[name].scale) / 2 + 1e-9


@settings(max_examples=100)
@given(message_values(), st.data())
def test_out_of_range_values_saturate(drawn, data):
    message, page, values = drawn
    name = data.draw(st.sampled_from(message.signal_names(page)))
    spec = message.signals[name]
    lo, hi = sorted((spec.raw_min * spec.scale + spec.offset, spec.raw_max * spec.scale + spec.offset))
    wild = data.draw(st.sampled_from([math.nan, math.inf, -math.inf, hi + 1e6, lo - 1e6, 1e300]))
    values[name] = wild
    frame = message.encode_values([values[n] for n in message.signal_names(page)], page)
    got = message.decode(frame)[name]
    expected = lo if (wild == -math.inf or wild == lo - 1e6) else hi
    assert abs(got - expected) <= abs(spec.scale) * 1e-6 + 1e-9


def test_encode_by_name_and_decode_by_id():
    c = Codec()
    frame = c.encode("BMS_CellVoltages", {"CellVoltagePage": 63, "CellVoltage_190": 3.6543})
    name, values = c.decode(0x1C0, frame)
    assert name == "BMS_CellVoltages" and values["CellVoltagePage"] == 63
    assert values["CellVoltage_190"] == pytest.approx(3.6543, abs=5e-5) and values["CellVoltage_192"] == 0
    with pytest.raises(Exception, match="unknown signals"):
        c.encode("BMS_Status", {"NoSuchSignal": 1})
    with pytest.raises(Exception, match="expected 8 data bytes"):
        c["BMS_Status"].decode(b"\x00" * 7)


def test_dbc_command_writes_the_shipped_file(tmp_path, capsys):
    from hil.cli import main

    out = tmp_path / "out" / "bms.dbc"
    assert main(["dbc", "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == dbc_text()
    assert main(["dbc", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "BMS_CellVoltages" in listing and "0x200" in listing


@settings(max_examples=200)
@given(message_values(), st.integers(0, 15))
def test_single_signal_readers_give_what_decode_gives(drawn, counter):
    message, page, values = drawn
    ordered = [values[n] for n in message.signal_names(page)]
    data = message.encoder(page)(counter, *ordered) if message.e2e else message.encoder(page)(*ordered)
    decoded = message.decode(data)
    for name in decoded:
        assert message.signal_decoder(name)(data) == decoded[name], name
    # the generated encoder as it is gives the same bytes as the wrapped one
    raw = message.generated_encoder(page)
    if raw is not None:
        assert (raw(counter, *ordered) if message.e2e else raw(*ordered)) == data


def test_a_single_signal_reader_of_an_unknown_signal_says_which():
    with pytest.raises(Exception, match="BMS_Status: no signal 'Nope'"):
        codec()["BMS_Status"].signal_decoder("Nope")
