"""AUTOSAR end-to-end protection of a vehicle matrix's messages: alive counter and CRC, set on send and
checked on receive by the same object.

Profiles (AUTOSAR PRS E2E protocol; the CRCs are crccheck's catalogue algorithms, the same ones cantools'
``cantools.autosar`` uses for its profile 2 and 5 helpers):

- ``P02``: CRC-8H2F (0x2F) in byte 0 over bytes 1.. and the data ID of the counter value (16 data IDs); a 4-bit
  counter in the low nibble of byte 1.
- ``P05``: CRC-16/CCITT-FALSE (0x1021) over the data without the CRC bytes, then the data ID's low and high
  byte; the CRC little-endian at the byte offset of its signal, an 8-bit counter in the next byte.

The project's own scheme (CRC-8 SAE J1850 over the data ID and the data, a 4-bit counter) is ``bms.can.codec.E2E``.
A vendor scheme is any object with the attributes and methods of ``Protection`` below (``vendor_protection``
loads one from ``module:factory``).
"""
from __future__ import annotations

import importlib
from binascii import crc_hqx
from dataclasses import dataclass

import crccheck.crc

from ..errors import BmsError

__all__ = ["Protection", "Profile02", "Profile05", "PROFILES", "E2EConfigError", "vendor_protection",
           "crc16_ccitt_false"]

PROFILES = ("P02", "P05", "project", "vendor")


class E2EConfigError(BmsError, ValueError):
    """A profile that does not fit its message (signal position, length, data IDs)."""


@dataclass
class Protection:
    """What the CAN node needs of an E2E scheme (a vendor's scheme provides the same)."""
    name: str
    crc_signal: str
    counter_signal: str
    counter_bits: int
    crc_byte: int        # first CRC byte: where fault injection flips bits

    def protect(self, data: bytes, counter: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def check(self, data: bytes | bytearray) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def counter_of(self, data: bytes | bytearray) -> int:  # pragma: no cover - interface
        raise NotImplementedError


_CRC8H2F = crccheck.crc.Crc8Autosar      # poly 0x2F, init 0xFF, xorout 0xFF; check 0xDF


def crc16_ccitt_false(data, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0; check value 0x29B1): the standard
    library's C ``binascii.crc_hqx`` is this CRC with a start value (crccheck's ``Crc16CcittFalse`` gives the
    same numbers at ~50x the cost, too slow for a 48-byte frame every 10 ms; the tests hold the two together)."""
    return crc_hqx(data, crc)


class Profile02(Protection):
    def __init__(self, data_ids, *, crc_signal: str, counter_signal: str, length: int):
        ids = [int(d) for d in data_ids]
        if len(ids) != 16 or not all(0 <= d <= 0xFF for d in ids):
            raise E2EConfigError(f"profile P02 takes 16 data IDs of one byte (one per counter value), found {ids}")
        if length < 2:
            raise E2EConfigError(f"profile P02 needs at least 2 data bytes, found {length}")
        super().__init__("P02", crc_signal, counter_signal, 4, 0)
        self.data_ids = tuple(ids)

    def crc(self, data) -> int:
        return _CRC8H2F.calc(bytes(data[1:]) + bytes((self.data_ids[data[1] & 0x0F],)))

    def protect(self, data: bytes, counter: int) -> bytes:
        frame = bytearray(data)
        frame[1] = (frame[1] & 0xF0) | (counter & 0x0F)
        frame[0] = self.crc(frame)
        return bytes(frame)

    def check(self, data) -> bool:
        return len(data) >= 2 and data[0] == self.crc(data)

    def counter_of(self, data) -> int:
        return data[1] & 0x0F


class Profile05(Protection):
    def __init__(self, data_id: int, *, crc_signal: str, counter_signal: str, length: int, offset_byte: int = 0):
        if not 0 <= int(data_id) <= 0xFFFF:
            raise E2EConfigError(f"profile P05 takes a 16-bit data ID, found {data_id}")
        if offset_byte + 3 > length:
            raise E2EConfigError(f"profile P05 needs 3 header bytes from byte {offset_byte}, the frame has {length}")
        super().__init__("P05", crc_signal, counter_signal, 8, offset_byte)
        self.data_id = int(data_id)
        self.offset = offset_byte
        self._id_bytes = bytes((self.data_id & 0xFF, self.data_id >> 8))

    def crc(self, data) -> int:
        o = self.offset
        view = memoryview(data)
        head = crc_hqx(view[:o], 0xFFFF) if o else 0xFFFF
        return crc_hqx(self._id_bytes, crc_hqx(view[o + 2:], head))

    def protect(self, data: bytes, counter: int) -> bytes:
        frame = bytearray(data)
        o = self.offset
        frame[o + 2] = counter & 0xFF
        crc = self.crc(frame)
        frame[o] = crc & 0xFF
        frame[o + 1] = crc >> 8
        return bytes(frame)

    def check(self, data) -> bool:
        o = self.offset
        return len(data) >= o + 3 and data[o] | (data[o + 1] << 8) == self.crc(data)

    def counter_of(self, data) -> int:
        return data[self.offset + 2]


def vendor_protection(spec: str, message, options: dict) -> Protection:
    """A vendor scheme: ``spec`` is ``module:factory``; ``factory(message, **options)`` (``message`` the
    cantools message) returns an object with ``Protection``'s attributes and methods."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise E2EConfigError(f"a vendor hook is 'module:factory', found {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise E2EConfigError(f"vendor hook {spec!r} cannot be loaded: {exc}") from exc
    scheme = factory(message, **options)
    missing = [n for n in ("crc_signal", "counter_signal", "counter_bits", "crc_byte", "protect", "check",
                           "counter_of") if not hasattr(scheme, n)]
    if missing:
        raise E2EConfigError(f"vendor hook {spec!r} returned {type(scheme).__name__} without {', '.join(missing)}")
    return scheme
