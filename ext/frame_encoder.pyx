# A classic CAN frame (at most 8 bytes) from signal values, for the generated encoders of bms.can.codec:
# the node encodes about six frames a 10 ms tick, and the Python encoders cost 1-4 us each (the alive
# counter and CRC-8 of the E2E ones most). Readable specification: bms/_twin/frame_encoder.py.
from libc.math cimport isfinite, isnan, nearbyint
from libc.stdint cimport int64_t, uint64_t
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.float cimport PyFloat_AsDouble
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE

DEF MAX_SIGNALS = 64


cdef class FrameEncoder:
    """``FrameEncoder(length, signals, base_le, base_be, e2e)``; calling it with the values (the alive counter
    first for an E2E message) returns the frame's bytes. See the twin for the arguments."""
    cdef int n, length, e2e, counter_start, crc_byte, crc_head
    cdef uint64_t base_le, base_be, counter_mask
    cdef double scale[MAX_SIGNALS]
    cdef double offset[MAX_SIGNALS]
    cdef double raw_min[MAX_SIGNALS]
    cdef double raw_max[MAX_SIGNALS]
    cdef uint64_t mask[MAX_SIGNALS]
    cdef int shift[MAX_SIGNALS]
    cdef bint big[MAX_SIGNALS]
    cdef bint linear[MAX_SIGNALS]
    cdef unsigned char table[256]

    def __init__(self, int length, signals, base_le=0, base_be=0, e2e=None):
        if not 1 <= length <= 8:
            raise ValueError(f"FrameEncoder: a classic frame of 1 to 8 bytes, not {length}")
        signals = [tuple(s) for s in signals]
        if len(signals) > MAX_SIGNALS:
            raise ValueError(f"FrameEncoder: at most {MAX_SIGNALS} signals, not {len(signals)}")
        self.length, self.n = length, len(signals)
        self.base_le, self.base_be = base_le, base_be
        for i, (scale, offset, raw_min, raw_max, shift, bits, big, kind) in enumerate(signals):
            if not 1 <= bits <= 52 or not 0 <= shift <= 64 - bits:
                raise ValueError(f"FrameEncoder: signal {i}: {bits} bits at {shift} do not fit exactly in a double")
            self.scale[i], self.offset[i] = scale, offset
            self.raw_min[i], self.raw_max[i] = raw_min, raw_max
            self.mask[i] = (1 << bits) - 1
            self.shift[i], self.big[i], self.linear[i] = shift, big, kind != 0
        self.e2e = e2e is not None
        if self.e2e:
            counter_mask, self.counter_start, self.crc_byte, self.crc_head, table = e2e
            self.counter_mask = counter_mask
            for k in range(256):
                self.table[k] = table[k]

    def __call__(self, *args):
        cdef Py_ssize_t first = 1 if self.e2e else 0
        if PyTuple_GET_SIZE(args) != self.n + first:
            raise TypeError(f"FrameEncoder: {self.n} values expected, {PyTuple_GET_SIZE(args) - first} given")
        cdef uint64_t w = self.base_le, wb = self.base_be, raw
        cdef double v, r
        cdef int i, k
        cdef unsigned char data[8]
        cdef unsigned char crc
        for i in range(self.n):
            v = PyFloat_AsDouble(<object>PyTuple_GET_ITEM(args, i + first))
            if not isfinite(v):  # what Python's round raises on (the caller's saturating path takes these)
                if isnan(v):
                    raise ValueError("cannot convert float NaN to integer")
                raise OverflowError("cannot convert float infinity to integer")
            r = nearbyint((v - self.offset[i]) / self.scale[i]) if self.linear[i] else nearbyint(v)
            if r < self.raw_min[i]:
                r = self.raw_min[i]
            elif r > self.raw_max[i]:
                r = self.raw_max[i]
            raw = (<uint64_t><int64_t>r & self.mask[i]) << self.shift[i]
            if self.big[i]:
                wb |= raw
            else:
                w |= raw
        for k in range(self.length):  # the big-endian word's bytes, most significant first
            data[k] = <unsigned char>((w >> (8 * k)) | (wb >> (8 * (self.length - 1 - k))))
        if self.e2e:
            w = (<uint64_t><object>PyTuple_GET_ITEM(args, 0) & self.counter_mask) << self.counter_start
            crc = self.crc_head
            for k in range(self.length):
                data[k] |= <unsigned char>(w >> (8 * k))
                if k != self.crc_byte:
                    crc = self.table[crc ^ data[k]]
            data[self.crc_byte] = crc ^ 0xFF
        return PyBytes_FromStringAndSize(<char*>data, self.length)
