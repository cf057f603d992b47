"""Readable twin of ext/frame_encoder.pyx: a classic CAN frame (at most 8 bytes) from signal values.

Each signal: ``raw = round(v)`` (``kind`` 0: scale 1, offset 0) or ``round((v - offset) / scale)`` (kind 1),
Python's rounding (half to even), clamped to ``[raw_min, raw_max]``, masked to its bits and shifted into the
frame read as one little-endian integer (Intel) or one big-endian integer (Motorola), as
``MessageCodec._generate`` does. ``base_le`` / ``base_be`` hold constant bits (a multiplexer's page).
With ``e2e = (counter_mask, counter_start, crc_byte, crc_head, table)`` the first argument is the alive
counter, or-ed in at ``counter_start``, and the CRC-8 of every other byte goes into ``crc_byte``.
A value that is NaN, infinite or no number raises ValueError, OverflowError or TypeError: the callers fall
back to the codec's saturating path on those.
"""
from __future__ import annotations

IDENTITY, LINEAR = 0, 1


class FrameEncoder:
    def __init__(self, length: int, signals, base_le: int = 0, base_be: int = 0, e2e=None):
        if not 1 <= length <= 8:
            raise ValueError(f"FrameEncoder: a classic frame of 1 to 8 bytes, not {length}")
        self.length, self.signals = length, [tuple(s) for s in signals]
        for i, (_, _, _, _, shift, bits, _, _) in enumerate(self.signals):
            if not 1 <= bits <= 52 or not 0 <= shift <= 64 - bits:
                raise ValueError(f"FrameEncoder: signal {i}: {bits} bits at {shift} do not fit exactly in a double")
        self.base_le, self.base_be, self.e2e = base_le, base_be, e2e

    def __call__(self, *args) -> bytes:
        e2e = self.e2e
        values = args[1:] if e2e is not None else args
        if len(values) != len(self.signals):
            raise TypeError(f"FrameEncoder: {len(self.signals)} values expected, {len(values)} given")
        w, wb = self.base_le, self.base_be
        for v, (scale, offset, raw_min, raw_max, shift, bits, big, kind) in zip(values, self.signals):
            v = v + 0.0  # a number as a float (a string raises TypeError, as in the compiled encoder)
            r = round(v) if kind == IDENTITY else round((v - offset) / scale)
            r = min(max(r, raw_min), raw_max)
            if big:
                wb |= (r & ((1 << bits) - 1)) << shift
            else:
                w |= (r & ((1 << bits) - 1)) << shift
        n = self.length
        w |= int.from_bytes(wb.to_bytes(n, "big"), "little")
        if e2e is None:
            return w.to_bytes(n, "little")
        counter_mask, counter_start, crc_byte, crc, table = e2e
        w |= (args[0] & counter_mask) << counter_start
        data = bytearray(w.to_bytes(n, "little"))
        for k in range(n):
            if k != crc_byte:
                crc = table[crc ^ data[k]]
        data[crc_byte] = crc ^ 0xFF
        return bytes(data)
