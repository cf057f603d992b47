"""The compiled frame encoder (``ext/frame_encoder.pyx``) against its twin and against cantools, on drawn
frame layouts: Intel and Motorola signals, signed, scaled and offset, multiplexed pages, E2E counter and CRC."""
import math

import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bms import KERNELS
from bms._twin.frame_encoder import FrameEncoder as TwinEncoder
from bms.can.codec import _CRC8, MessageCodec

SCALES = [(1, 0), (1, -40), (0.1, 0), (0.001, -20), (0.25, 12.5), (2, 0), (5, -1000), (1e-4, 0)]


@st.composite
def layouts(draw):
    """A frame of 1 to 8 bytes: Intel signals packed from bit 0 of the first bytes, Motorola ones in the
    bytes after them, each with a drawn length, sign, scale and offset."""
    length = draw(st.integers(1, 8))
    intel_bytes = draw(st.integers(0, length))
    signals = []
    for intel, bits_free in ((True, 8 * intel_bytes), (False, 8 * (length - intel_bytes))):
        pos = 0
        while pos < bits_free and draw(st.booleans()):
            bits = draw(st.integers(1, min(32, bits_free - pos)))
            signed = bits > 1 and draw(st.booleans())
            scale, offset = draw(st.sampled_from(SCALES))
            if intel:
                start = pos
            else:  # the msb in DBC numbering of a signal whose lsb is bit ``pos`` of the big-endian word
                m = pos + bits - 1
                start = (length - 1 - m // 8) * 8 + m % 8
            signals.append((f"S{len(signals)}", start, bits, intel, signed, scale, offset))
            pos += bits + draw(st.integers(0, 3))
    return length, signals


def dbc_message(length, signals):
    lines = ['VERSION ""', "", "NS_ :", "", "BS_:", "", "BU_: BMS VCU", "", f"BO_ 256 M: {length} BMS"]
    for name, start, bits, intel, signed, scale, offset in signals:
        lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1))
        lines.append(f' SG_ {name} : {start}|{bits}@{1 if intel else 0}{"-" if signed else "+"} ({scale},{offset}) '
                     f'[{lo * scale + offset}|{hi * scale + offset}] "" VCU')
    db = cantools.database.load_string("\n".join(lines) + "\n", database_format="dbc", strict=True)
    return MessageCodec(db.get_message_by_name("M"))


@settings(max_examples=300, deadline=None)
@given(layouts(), st.data())
def test_compiled_frame_encoder_matches_its_twin_and_cantools(layout, data):
    length, signals = layout
    message = dbc_message(length, signals)
    names = message.signal_names()
    values = []
    for name in names:
        spec = message.signals[name]
        lo, hi = sorted((spec.raw_min * spec.scale + spec.offset, spec.raw_max * spec.scale + spec.offset))
        values.append(data.draw(st.floats(lo, hi) if spec.scale != 1 else st.integers(math.ceil(lo), math.floor(hi))))
    theirs = bytes(message.dbc_message.encode(dict(zip(names, values)), scaling=True, padding=False, strict=True))
    assert message.encode_values(values) == theirs
    spec_args = _encoder_args(message)
    assert TwinEncoder(*spec_args)(*values) == theirs
    if KERNELS.name == "compiled":
        assert type(message.generated_encoder()).__module__ == "bms._ext.frame_encoder"
        assert KERNELS.frame_encoder.FrameEncoder(*spec_args)(*values) == theirs
    # out of range saturates the same way in both; NaN and infinity raise the same errors in both
    if values:
        k = data.draw(st.integers(0, len(values) - 1))
        wild = data.draw(st.sampled_from([1e12, -1e12, math.nan, math.inf, -math.inf]))
        bad = [*values[:k], wild, *values[k + 1:]]
        outcomes = []
        for encoder in (TwinEncoder(*spec_args), KERNELS.frame_encoder.FrameEncoder(*spec_args)):
            try:
                outcomes.append(encoder(*bad))
            except (ValueError, OverflowError) as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]
        if math.isfinite(wild):
            assert outcomes[0] == message.encode_values(bad)


def _encoder_args(message):
    signals = []
    for name in message.signal_names():
        s = message.signals[name]
        identity = s.scale == 1 and s.offset == 0
        signals.append((s.scale, s.offset, s.raw_min, s.raw_max, s.shift, s.length, s.big_endian, 0 if identity else 1))
    return message.length, signals


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 8), st.data())
def test_e2e_counter_and_crc_match_the_twin(length, data):
    crc_byte = data.draw(st.integers(0, length - 1))
    free = [b for b in range(length) if b != crc_byte]
    counter_byte = data.draw(st.sampled_from(free))
    signal_byte = data.draw(st.sampled_from(free))
    counter = data.draw(st.integers(0, 255))
    head = data.draw(st.integers(0, 255))
    e2e = (0xF, 8 * counter_byte + data.draw(st.integers(0, 4)), crc_byte, head, _CRC8)
    signals = [] if signal_byte == counter_byte else [(0.5, -10, 0, 255, 8 * signal_byte, 8, False, 1)]
    values = [data.draw(st.floats(-10, 117.5))] * len(signals)
    twin = TwinEncoder(length, signals, 0, 0, e2e)(counter, *values)
    assert KERNELS.frame_encoder.FrameEncoder(length, signals, 0, 0, e2e)(counter, *values) == twin


def test_wrong_arguments_are_refused():
    encoder = KERNELS.frame_encoder.FrameEncoder(2, [(1, 0, 0, 255, 0, 8, False, 0)])
    with pytest.raises(TypeError, match="1 values expected, 2 given"):
        encoder(1, 2)
    with pytest.raises(TypeError):
        encoder("3")
    with pytest.raises(ValueError, match="1 to 8 bytes"):
        KERNELS.frame_encoder.FrameEncoder(9, [])
    with pytest.raises(ValueError, match="do not fit"):
        KERNELS.frame_encoder.FrameEncoder(8, [(1, 0, 0, 1, 0, 53, False, 0)])
