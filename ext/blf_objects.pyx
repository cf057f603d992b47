# Classic CAN frames as python-can's BLF objects, for bms.can.logs.BatchBLFWriter: a lockstep run logs
# about six frames a 10 ms tick, and packing them in Python (ten attribute reads and one struct.pack
# each) cost about 1.2 us a frame, more than python-can's zlib. Readable specification (arguments,
# stops, results): bms/_twin/blf_objects.py.
import struct

import can

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.math cimport isfinite
from libc.string cimport memcpy, memset

DEF OBJECT_SIZE = 48
DEF HEADER_SIZE = 32
DEF CAN_MESSAGE = 1
DEF TIME_ONE_NANS = 2
DEF CAN_MSG_EXT = 0x80000000
DEF REMOTE_FLAG = 0x80
DEF DIR = 0x1


cdef inline void put16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = v >> 8


cdef inline void put32(uint8_t* p, uint32_t v) noexcept nogil:
    cdef int k
    for k in range(4):
        p[k] = (v >> (8 * k)) & 0xFF


cdef inline void put64(uint8_t* p, uint64_t v) noexcept nogil:
    cdef int k
    for k in range(8):
        p[k] = (v >> (8 * k)) & 0xFF


cpdef long long channel_number(object channel, long long own_channel, dict channels) except? -1:
    """The BLF channel python-can writes for a frame's ``channel`` (see the twin)."""
    cdef object found
    if channel is None:
        return own_channel
    if type(channel) is str:
        found = channels.get(channel, channels)
        if found is channels:
            found = channels[channel] = can.util.channel2int(channel)
    else:
        found = channel if type(channel) is int else can.util.channel2int(channel)
    return own_channel if found is None else found + 1


def pack_can_objects(frames, Py_ssize_t i, start_ts, int own_channel, dict channels, Py_ssize_t size,
                     Py_ssize_t limit):
    """See bms/_twin/blf_objects.py; the same bytes and results."""
    cdef Py_ssize_t n = len(frames), used = 0, length
    cdef uint8_t* buf
    cdef uint8_t* p
    cdef const char* src
    cdef double timestamp, start = 0.0, ns_f
    cdef uint64_t ns
    cdef object msg, data, stamp, last = None, arbitration
    cdef long long dlc, ident
    cdef long long number
    cdef uint8_t flags
    if i >= n:
        return b"", i, start_ts, None, size
    buf = <uint8_t*>PyMem_Malloc((n - i) * OBJECT_SIZE)
    if buf == NULL:
        raise MemoryError()
    try:
        if start_ts is not None:
            start = start_ts
        while i < n:
            msg = frames[i]
            stamp = msg.timestamp
            if msg.is_error_frame or msg.is_fd or stamp is None:
                break
            timestamp = stamp
            if not isfinite(timestamp):
                break
            number = channel_number(msg.channel, own_channel, channels)
            if not 0 <= number <= 0xFFFF:
                raise struct.error("ushort format requires 0 <= number <= 65535")
            if start_ts is None:
                start_ts = <double>(<long long>(timestamp * 1000)) / 1000
                start = start_ts
            last = stamp
            ns_f = (timestamp - start) * 1e9
            if ns_f >= 18446744073709551616.0:
                raise struct.error("argument out of range")
            ns = <uint64_t>ns_f if ns_f >= 1.0 else 0   # int() truncates; a negative offset is written as 0
            flags = REMOTE_FLAG if msg.is_remote_frame else 0
            if not msg.is_rx:
                flags |= DIR
            dlc = msg.dlc
            if not 0 <= dlc <= 255:
                raise struct.error("ubyte format requires 0 <= number <= 255")
            arbitration = msg.arbitration_id
            if msg.is_extended_id:
                arbitration = arbitration | CAN_MSG_EXT
            if not 0 <= arbitration <= 0xFFFFFFFF:
                raise struct.error("argument out of range")
            ident = arbitration
            data = msg.data
            if type(data) is bytearray:
                src, length = PyByteArray_AS_STRING(data), PyByteArray_GET_SIZE(data)
            else:
                data = bytes(data)
                src, length = PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)
            p = buf + used
            memcpy(p, b"LOBJ", 4)
            put16(p + 4, HEADER_SIZE)
            put16(p + 6, 1)
            put32(p + 8, OBJECT_SIZE)
            put32(p + 12, CAN_MESSAGE)
            put32(p + 16, TIME_ONE_NANS)
            put16(p + 20, 0)
            put16(p + 22, 0)
            put64(p + 24, ns)
            put16(p + 32, number)
            p[34] = flags
            p[35] = <uint8_t>dlc
            put32(p + 36, <uint32_t>ident)
            memset(p + 40, 0, 8)
            memcpy(p + 40, src, length if length < 8 else 8)
            used += OBJECT_SIZE
            size += OBJECT_SIZE
            i += 1
            if size >= limit:
                break
        return PyBytes_FromStringAndSize(<char*>buf, used), i, start_ts, last, size
    finally:
        PyMem_Free(buf)
