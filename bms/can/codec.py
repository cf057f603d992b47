"""Frames from signal values and back, driven by the DBC (cantools parses it; nothing is hand-packed).

cantools' ``Message.encode`` costs 6-8 us a frame, which at ~5 frames a 10 ms tick is most of the CAN
node's budget in lockstep. So each message (each page of a multiplexed one) gets a small encoder and decoder
*generated from its DBC definition* at load time: straight-line Python with the signal's start bit, length,
scale and offset as constants, using cantools' own scaled-to-raw rounding rules; a classic frame's encoder is
the compiled ``FrameEncoder`` (``ext/frame_encoder.pyx``) with the same constants. A test checks them
bit-for-bit against cantools on hypothesis-drawn values. Messages the generator does not cover (big-endian
or float signals, nested multiplexing, extended multiplexing) use cantools directly: slower, same bytes.

Out-of-range values saturate at the signal's DBC minimum/maximum (what an ECU does), NaN encodes as the
maximum; cantools would raise instead.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .._kernels import KERNELS
from ..errors import BmsError
from ..input_files import InputFileError, parse_error_text, read_input_text

__all__ = ["Codec", "MessageCodec", "SignalSpec", "E2E", "DbcError", "CodecError", "crc8_j1850", "load_dbc",
           "DBC_RESOURCE"]

DBC_RESOURCE = "assb_bms.dbc"


class DbcError(BmsError):
    """The DBC cannot be used: which file, which message or signal, what was expected, what was found."""


class CodecError(BmsError, ValueError):
    """A frame or a value does not fit its message."""


# --- CRC-8 SAE J1850: polynomial 0x1D, initial 0xFF, final XOR 0xFF ------------------------------------
def _crc8_table(poly: int = 0x1D) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table()


def crc8_j1850(data: bytes | bytearray, crc: int = 0xFF) -> int:
    """CRC-8 SAE J1850 of ``data`` (check value of b"123456789" is 0x4B)."""
    table = _CRC8
    for byte in data:
        crc = table[crc ^ byte]
    return crc ^ 0xFF


def load_dbc(path: str | Path | None = None):
    """The cantools database of ``path``, or of the DBC shipped in package ``bms.can``."""
    import cantools

    try:
        if path is None:
            text = resources.files(__package__).joinpath(DBC_RESOURCE).read_text(encoding="utf-8")
            return cantools.database.load_string(text, database_format="dbc", strict=True)
        text = read_input_text(path, what="DBC file")  # a device, a directory, a huge file: refused, not read
        return cantools.database.load_string(text, database_format="dbc", strict=True)
    except InputFileError as exc:
        raise DbcError(str(exc)) from None
    except Exception as exc:  # cantools raises its own ParseError / ValueError with the line (never quoted here)
        raise DbcError(f"{path or DBC_RESOURCE}: not a usable DBC: {parse_error_text(exc)}") from None


@dataclass(frozen=True)
class SignalSpec:
    """One signal's layout and scaling, as the DBC defines it."""
    name: str
    start: int           # least significant bit, Intel numbering
    length: int
    signed: bool
    scale: float
    offset: float
    minimum: float
    maximum: float
    raw_min: int
    raw_max: int
    unit: str
    choices: Mapping[int, str]
    page: int | None     # multiplexer value, None for a signal in every frame
    big_endian: bool = False
    shift: int = 0       # the least significant bit's position in int.from_bytes(frame, "little" or "big")


@dataclass(frozen=True)
class E2E:
    """Counter and CRC of a protected message."""
    data_id: int
    crc_signal: str
    crc_byte: int
    counter_signal: str
    counter_start: int
    counter_bits: int


class MessageCodec:
    """Encoder/decoder of one DBC message. ``pages`` are the multiplexer values ((None,) if not multiplexed)."""

    def __init__(self, message, dbc_name: str = "DBC", e2e=None):
        """``e2e``: a ``bms.can.e2e`` protection (a vehicle matrix's profile) instead of the project's scheme,
        which the DBC's ``E2EDataID`` attribute selects."""
        self.dbc_message = message
        self.name: str = message.name
        self.frame_id: int = message.frame_id
        self.is_extended_id: bool = message.is_extended_frame
        self.is_fd: bool = bool(getattr(message, "is_fd", False))
        self.length: int = message.length
        self.cycle_time_s: float | None = message.cycle_time / 1000.0 if message.cycle_time else None
        self.senders: tuple[str, ...] = tuple(message.senders)
        self.receivers: tuple[str, ...] = tuple(sorted({r for s in message.signals for r in s.receivers}))
        self._where = f"{dbc_name}: message {message.name} (0x{message.frame_id:X})"
        self.multiplexer: str | None = None
        signals = []
        for sig in message.signals:
            if sig.is_multiplexer:
                if self.multiplexer is not None:
                    self.multiplexer = "<nested>"
                else:
                    self.multiplexer = sig.name
        for sig in message.signals:
            ids = sig.multiplexer_ids
            page = None
            if ids:
                page = ids[0] if len(ids) == 1 else "<extended>"
            signals.append(self._spec(sig, page))
        self.signals: dict[str, SignalSpec] = {s.name: s for s in signals}
        pages = sorted({s.page for s in signals if isinstance(s.page, int)})
        self.pages: tuple = tuple(pages) if self.multiplexer else (None,)
        # E2E (the project's scheme) or a bms.can.e2e protection: the same attributes where the node reads them
        self.e2e: Any = e2e if e2e is not None else self._find_e2e(message)
        self._project_e2e = isinstance(self.e2e, E2E)  # the generated encoders fold in only this scheme
        self._crc_head: int | None = None
        self._fast = self._can_generate()
        self._enc: dict = {}
        self._enc_e2e: dict = {}
        self._dec: dict = {}
        self._order: dict = {}
        e2e_names = (self.e2e.crc_signal, self.e2e.counter_signal) if self.e2e else ()
        for page in self.pages:
            names = tuple(s.name for s in signals if (s.page is None or s.page == page)
                          and s.name != self.multiplexer and s.name not in e2e_names)
            self._order[page] = names
            if self._fast:
                self._enc[page], self._dec[page] = self._generate(page, names, e2e_names)
        self._mux_spec = self.signals.get(self.multiplexer) if self.multiplexer else None
        self._page_set = frozenset(self.pages)

    # --- DBC reading -------------------------------------------------------------------------------
    def _spec(self, sig, page) -> SignalSpec:
        conv = sig.conversion
        length, signed = sig.length, sig.is_signed
        bit_lo, bit_hi = ((-(1 << (length - 1)), (1 << (length - 1)) - 1) if signed else (0, (1 << length) - 1))
        minimum = sig.minimum if sig.minimum is not None else bit_lo * sig.scale + sig.offset
        maximum = sig.maximum if sig.maximum is not None else bit_hi * sig.scale + sig.offset
        raw_min, raw_max = bit_lo, bit_hi
        if not sig.is_float:
            lo, hi = sorted((conv.numeric_scaled_to_raw(minimum), conv.numeric_scaled_to_raw(maximum)))
            raw_min, raw_max = max(bit_lo, int(lo)), min(bit_hi, int(hi))
            # keep the saturated values inside [minimum, maximum] after scaling back
            while raw_max > raw_min and conv.raw_to_scaled(raw_max, False) > max(minimum, maximum):
                raw_max -= 1
            while raw_min < raw_max and conv.raw_to_scaled(raw_min, False) < min(minimum, maximum):
                raw_min += 1
        big = sig.byte_order == "big_endian"
        # Motorola: start is the most significant bit in DBC numbering; in the frame read as one big-endian
        # integer the signal is contiguous, its least significant bit 8 * length - msb - bits from the right
        shift = 8 * self.length - (8 * (sig.start // 8) + 7 - sig.start % 8) - length if big else sig.start
        return SignalSpec(sig.name, sig.start, length, signed, sig.scale, sig.offset, minimum, maximum, raw_min,
                          raw_max, sig.unit or "", dict(sig.choices or {}), page, big, shift)

    def _find_e2e(self, message) -> E2E | None:
        attrs = message.dbc.attributes if getattr(message, "dbc", None) else {}
        if "E2EDataID" not in attrs:
            return None
        data_id = int(attrs["E2EDataID"].value)
        crc = self.signals.get(f"{self.name}_CRC")
        counter = self.signals.get(f"{self.name}_Counter")
        if crc is None or counter is None:
            raise DbcError(f"{self._where}: E2EDataID is set, so signals {self.name}_CRC and {self.name}_Counter "
                           f"are expected; found {sorted(self.signals)}")
        if crc.start % 8 or crc.length != 8 or crc.page is not None:
            raise DbcError(f"{self._where}: {crc.name}: expected a whole byte (start a multiple of 8, length 8), "
                           f"found start {crc.start}, length {crc.length}")
        return E2E(data_id, crc.name, crc.start // 8, counter.name, counter.start, counter.length)

    def _can_generate(self) -> bool:
        if self.multiplexer == "<nested>":
            return False
        for sig in self.dbc_message.signals:
            if sig.is_float:
                return False
            if sig.multiplexer_ids and len(sig.multiplexer_ids) != 1:
                return False
        return not self.is_fd or self.length <= 64

    def _generate(self, page, names, extra_decoded=()):
        """Straight-line encoder (values in ``names`` order) and decoder (dict) for one page."""
        conv = {s.name: s.conversion for s in self.dbc_message.signals}
        env: dict = {"round": round}
        big = any(self.signals[n].big_endian for n in (*names, *extra_decoded, *(
            [self.multiplexer] if self.multiplexer else [])))
        enc = [f"def encode({', '.join(f'v{i}' for i in range(len(names)))}):", "    w = 0"]
        dec = ["def decode(data):", "    w = int.from_bytes(data, 'little')", "    out = {}"]
        if big:  # Motorola signals: or-ed into the frame read as one big-endian integer
            enc.append("    wb = 0")
            dec.insert(2, "    wb = int.from_bytes(data, 'big')")

        def word(spec):
            return "wb" if spec.big_endian else "w"
        items = list(enumerate(names))
        for j, name in enumerate(extra_decoded):  # counter and CRC: decoded, set by protect() when encoding
            spec, k = self.signals[name], len(names) + j
            env[f"s{k}"], env[f"o{k}"] = conv[name].scale, conv[name].offset
            dec.append(f"    out[{name!r}] = (({word(spec)} >> {spec.shift}) & {(1 << spec.length) - 1}) * s{k} + o{k}")
        base = {"w": 0, "wb": 0}  # constant bits (the multiplexer's page) and each signal, for FrameEncoder
        compiled_signals = []
        if self.multiplexer is not None:
            mux = self.signals[self.multiplexer]
            enc.append(f"    {word(mux)} |= {int(page) & ((1 << mux.length) - 1)} << {mux.shift}")
            base[word(mux)] |= (int(page) & ((1 << mux.length) - 1)) << mux.shift
        for i, name in items:
            spec, c = self.signals[name], conv[name]
            mask = (1 << spec.length) - 1
            env[f"s{i}"], env[f"o{i}"] = c.scale, c.offset
            identity = type(c).__name__ == "LinearIntegerConversion" and c.scale == 1 and c.offset == 0 or (
                type(c).__name__ == "IdentityConversion")
            compiled_signals.append((c.scale, c.offset, spec.raw_min, spec.raw_max, spec.shift, spec.length,
                                     spec.big_endian, 0 if identity else 1))
            if identity:
                expr = f"round(v{i})"
            elif type(c).__name__ == "LinearIntegerConversion":
                # cantools: exact integer division when it divides, else true division, then round
                env["divmod"] = divmod
                enc.append(f"    q, rem = divmod(v{i} - o{i}, s{i})")
                enc.append(f"    r = round(q if rem == 0 else (v{i} - o{i}) / s{i})")
                expr = None
            else:
                expr = f"round((v{i} - o{i}) / s{i})"
            if expr is not None:
                enc.append(f"    r = {expr}")
            enc.append(f"    if r < {spec.raw_min}: r = {spec.raw_min}")
            enc.append(f"    elif r > {spec.raw_max}: r = {spec.raw_max}")
            enc.append(f"    {word(spec)} |= (r & {mask}) << {spec.shift}")
            dec.append(f"    r = ({word(spec)} >> {spec.shift}) & {mask}")
            if spec.signed:
                dec.append(f"    if r & {1 << (spec.length - 1)}: r -= {1 << spec.length}")
            dec.append(f"    out[{name!r}] = r * s{i} + o{i}")
        if big:
            enc.append(f"    w |= int.from_bytes(wb.to_bytes({self.length}, 'big'), 'little')")
        body = enc[1:]
        enc.append(f"    return w.to_bytes({self.length}, 'little')")
        if self.multiplexer is not None:
            dec.insert(3, f"    out[{self.multiplexer!r}] = {page}")
        dec.append("    return out")
        exec(compile("\n".join(dec), f"<decode {self.name} page {page}>", "exec"), env)
        e2e = self.e2e if self._project_e2e else None   # the alive counter and the CRC folded in too
        head = crc8_j1850(bytes((e2e.data_id & 0xFF, (e2e.data_id >> 8) & 0xFF))) ^ 0xFF if e2e else 0
        # the compiled encoder, same bytes, where it applies (a classic frame, signals exact in a double); else
        # the generated Python
        if KERNELS.name == "compiled" and self.length <= 8 and all(s[5] <= 52 for s in compiled_signals):
            make = KERNELS.frame_encoder.FrameEncoder
            if e2e is not None:
                self._enc_e2e[page] = make(self.length, compiled_signals, base["w"], base["wb"],
                                           ((1 << e2e.counter_bits) - 1, e2e.counter_start, e2e.crc_byte, head, _CRC8))
            return make(self.length, compiled_signals, base["w"], base["wb"]), env["decode"]
        exec(compile("\n".join(enc), f"<encode {self.name} page {page}>", "exec"), env)
        if e2e is not None:
            env["T"] = _CRC8
            protected = [f"def encode_e2e(counter, {', '.join(f'v{i}' for i in range(len(names)))}):", *body,
                         f"    w |= (counter & {(1 << e2e.counter_bits) - 1}) << {e2e.counter_start}",
                         f"    c = {head}"]
            if self.length <= 8:  # the bytes unpacked once: the CRC reads small ints, not shifts of a long
                b = [f"b{k}" for k in range(self.length)]
                protected.append(f"    {', '.join(b)}{',' if self.length == 1 else ''} = w.to_bytes({self.length}, "
                                 "'little')")
                protected += [f"    c = T[c ^ b{k}]" for k in range(self.length) if k != e2e.crc_byte]
                b[e2e.crc_byte] = "c ^ 255"
                protected.append(f"    return bytes(({', '.join(b)},))")
            else:
                for byte in range(self.length):
                    if byte != e2e.crc_byte:
                        protected.append(f"    c = T[c ^ ((w >> {8 * byte}) & 255)]")
                protected += [f"    w |= (c ^ 255) << {8 * e2e.crc_byte}",
                              f"    return w.to_bytes({self.length}, 'little')"]
            exec(compile("\n".join(protected), f"<encode_e2e {self.name} page {page}>", "exec"), env)
            self._enc_e2e[page] = env["encode_e2e"]
        return env["encode"], env["decode"]

    # --- public API --------------------------------------------------------------------------------
    def signal_names(self, page=None) -> tuple[str, ...]:
        """The order ``encode_values`` expects: every signal of the page but the multiplexer, counter and CRC."""
        return self._order[page if self.multiplexer else None]

    def encoder(self, page=None):
        """The fastest encoder of a page: ``f(*values)``, or ``f(counter, *values)`` for an E2E message, with
        the values in ``signal_names(page)`` order. Values it cannot take (NaN, inf, strings) fall back to
        the saturating path."""
        fast = (self._enc_e2e if self.e2e is not None else self._enc).get(page)
        if fast is None:
            if self.e2e is not None:
                return lambda counter, *v: self.protect(self.encode_values(v, page), counter)
            return lambda *v: self.encode_values(v, page)
        if self.e2e is not None:
            def safe_protected(counter, *v):
                try:
                    return fast(counter, *v)
                except (ValueError, OverflowError, TypeError):
                    return self.protect(self.encode_values(v, page), counter)
            return safe_protected

        def safe(*v):
            try:
                return fast(*v)
            except (ValueError, OverflowError, TypeError):
                return self.encode_values(v, page)
        return safe

    def generated_encoder(self, page=None):
        """The generated encoder of a page as it is (``f(*values)``, or ``f(counter, *values)`` for an E2E
        message), or None where there is none. It raises ValueError, OverflowError or TypeError on values
        it cannot take, where ``encoder(page)`` falls back to the saturating path: a caller that calls it
        directly calls ``encoder(page)`` on those errors (the node does, saving a call per frame)."""
        return (self._enc_e2e if self.e2e is not None else self._enc).get(page)

    def encode_values(self, values: Sequence[float], page=None) -> bytes:
        """Encode values given in ``signal_names(page)`` order (the fast path of the node)."""
        try:
            return self._enc[page](*values)
        except KeyError:
            if not self._fast:
                return self.encode(dict(zip(self.signal_names(page), values)), page=page)
            raise CodecError(f"{self.name}: no page {page!r}; pages are {self.pages}") from None
        except (ValueError, OverflowError, TypeError):
            return self._enc[page](*self._sanitise(values, page))

    def encode(self, values: Mapping[str, float] | None = None, page=None) -> bytes:
        """Encode a mapping of signal values; missing signals encode as 0 (saturated into range).

        For an E2E-protected message the counter signal (default 0) is set and the CRC computed, unless the
        mapping gives the CRC signal a value (a test that wants a wrong CRC).
        """
        values = dict(values or {})
        if self.e2e is not None:
            counter = values.pop(self.e2e.counter_signal, 0)
            crc = values.pop(self.e2e.crc_signal, None)
            frame = bytearray(self.protect(self._encode_plain(values, page), int(counter)))
            if crc is not None:
                frame[self.e2e.crc_byte] = int(crc) & 0xFF
            return bytes(frame)
        return self._encode_plain(values, page)

    def _encode_plain(self, values: dict, page) -> bytes:
        if self.multiplexer is not None:
            page = values.pop(self.multiplexer, page)
            if page not in self._page_set:
                raise CodecError(f"{self.name}: {self.multiplexer}: expected one of {self.pages}, found {page!r}")
        else:
            page = None
        names = self.signal_names(page)
        unknown = set(values) - set(names)
        if unknown:
            raise CodecError(f"{self.name} page {page}: unknown signals {sorted(unknown)}")
        ordered = [values.get(n, 0) for n in names]
        if self._fast:
            return self.encode_values(ordered, page)
        clean = dict(zip(names, self._sanitise(ordered, page)))
        if self.e2e is not None:  # cantools wants every signal; protect() sets these two afterwards
            clean[self.e2e.crc_signal] = clean[self.e2e.counter_signal] = 0
        if self.multiplexer is not None:
            clean[self.multiplexer] = page
        return bytes(self.dbc_message.encode(clean, scaling=True, padding=False, strict=False))

    def _sanitise(self, values, page):
        out = []
        for name, v in zip(self.signal_names(page), values):
            spec = self.signals[name]
            if isinstance(v, str):
                inverse = {label: raw for raw, label in spec.choices.items()}
                if v not in inverse:
                    raise CodecError(f"{self.name}.{name}: expected a number or one of {sorted(inverse)}, found {v!r}")
                v = inverse[v] * spec.scale + spec.offset
            try:
                v = float(v)
            except (TypeError, ValueError):
                raise CodecError(f"{self.name}.{name}: expected a number, found {v!r}") from None
            lo, hi = sorted((spec.raw_min * spec.scale + spec.offset, spec.raw_max * spec.scale + spec.offset))
            if math.isnan(v) or v > hi:
                v = hi
            elif v < lo:
                v = lo
            out.append(v)
        return out

    def decode(self, data: bytes | bytearray) -> dict[str, float]:
        """Physical values of every signal in the frame (choices as numbers). Raises CodecError."""
        if len(data) != self.length:
            raise CodecError(f"{self.name}: expected {self.length} data bytes, found {len(data)}")
        page = None
        if self.multiplexer is not None:
            page = self.page_of(data)
            if page not in self._page_set:
                raise CodecError(f"{self.name}: {self.multiplexer} {page} is not a page of this message")
        if self._fast:
            return self._dec[page](data)
        try:
            return dict(self.dbc_message.decode(bytes(data), decode_choices=False, scaling=True))
        except Exception as exc:
            raise CodecError(f"{self.name}: {exc}") from None

    def signal_decoder(self, name: str):
        """A reader of one signal: ``f(data)`` gives its physical value, the same number as
        ``decode(data)[name]``, without decoding the rest of the frame or checking the length (for a reader
        that knows the frame is this message and wants one or two signals of it every tick)."""
        spec = self.signals.get(name)
        if spec is None:
            raise CodecError(f"{self.name}: no signal {name!r}; signals are {sorted(self.signals)}")
        if not self._fast or spec.page is not None:
            return lambda data: self.decode(data)[name]
        conv = next(s.conversion for s in self.dbc_message.signals if s.name == name)
        start, mask, scale, offset = spec.shift, (1 << spec.length) - 1, conv.scale, conv.offset
        order = "big" if spec.big_endian else "little"
        if spec.signed:
            sign, span = 1 << (spec.length - 1), 1 << spec.length

            def read_signed(data, _from=int.from_bytes):
                r = (_from(data, order) >> start) & mask
                if r & sign:
                    r -= span
                return r * scale + offset
            return read_signed

        def read(data, _from=int.from_bytes):
            return ((_from(data, order) >> start) & mask) * scale + offset
        return read

    def page_of(self, data: bytes | bytearray):
        if self.multiplexer is None:
            return None
        mux = self._mux_spec
        assert mux is not None
        return (int.from_bytes(data, "big" if mux.big_endian else "little") >> mux.shift) & ((1 << mux.length) - 1)

    # --- E2E -----------------------------------------------------------------------------------------
    def protect(self, data: bytes, counter: int) -> bytes:
        """Set the alive counter and the CRC of an E2E-protected frame."""
        e2e = self.e2e
        if e2e is None:
            return data
        if not self._project_e2e:
            return e2e.protect(data, counter)
        mask = ((1 << e2e.counter_bits) - 1) << e2e.counter_start
        w = int.from_bytes(data, "little")
        w = (w & ~mask) | ((counter & ((1 << e2e.counter_bits) - 1)) << e2e.counter_start)
        frame = bytearray(w.to_bytes(self.length, "little"))
        frame[e2e.crc_byte] = self.crc(frame)
        return bytes(frame)

    def crc(self, frame: bytes | bytearray) -> int:
        """CRC-8 J1850 over the data ID (low byte, high byte) and every data byte but the CRC's own."""
        e2e = self.e2e
        head = self._crc_head
        if head is None:  # the running CRC after the two data-ID bytes, computed once
            head = self._crc_head = crc8_j1850(bytes((e2e.data_id & 0xFF, (e2e.data_id >> 8) & 0xFF))) ^ 0xFF
        b = e2e.crc_byte
        return crc8_j1850(frame[:b] + frame[b + 1:], head)

    def counter_of(self, frame: bytes | bytearray) -> int:
        e2e = self.e2e
        if not self._project_e2e:
            return e2e.counter_of(frame)
        return (int.from_bytes(frame, "little") >> e2e.counter_start) & ((1 << e2e.counter_bits) - 1)

    def crc_ok(self, frame: bytes | bytearray) -> bool:
        if self.e2e is None:
            return True
        if not self._project_e2e:
            return self.e2e.check(frame)
        return frame[self.e2e.crc_byte] == self.crc(frame)

    def __repr__(self) -> str:
        return f"MessageCodec({self.name}, 0x{self.frame_id:X}, pages={len(self.pages)})"


class Codec:
    """Every message of a DBC, by name and by (frame id, extended)."""

    def __init__(self, db=None, *, path: str | Path | None = None, e2e: Mapping | None = None):
        """``e2e``: message name -> a ``bms.can.e2e`` protection, for a vehicle matrix's profiles."""
        self.path = str(path) if path else DBC_RESOURCE
        self.db = db if db is not None else load_dbc(path)
        self.messages: dict[str, MessageCodec] = {}
        self._by_id: dict[tuple[int, bool], MessageCodec] = {}
        e2e = e2e or {}
        for message in self.db.messages:
            codec = MessageCodec(message, self.path, e2e=e2e.get(message.name))
            self.messages[codec.name] = codec
            self._by_id[(codec.frame_id, codec.is_extended_id)] = codec

    def __getitem__(self, name: str) -> MessageCodec:
        try:
            return self.messages[name]
        except KeyError:
            raise DbcError(f"{self.path}: no message named {name!r}") from None

    def by_id(self, frame_id: int, is_extended_id: bool = False) -> MessageCodec | None:
        return self._by_id.get((frame_id, is_extended_id))

    def sent_by(self, node: str) -> list[MessageCodec]:
        return [m for m in self.messages.values() if node in m.senders]

    def received_by(self, node: str) -> list[MessageCodec]:
        return [m for m in self.messages.values() if node in m.receivers and node not in m.senders]

    def encode(self, name: str, values: Mapping[str, float] | None = None, *, page=None,
               counter: int | None = None) -> bytes:
        """Encode by message name; E2E messages get ``counter`` (default 0) and their CRC."""
        message = self[name]
        values = dict(values or {})
        if message.e2e is not None and counter is not None:
            values[message.e2e.counter_signal] = counter
        return message.encode(values, page=page)

    def decode(self, frame_id: int, data: bytes, is_extended_id: bool = False) -> tuple[str, dict[str, float]]:
        message = self.by_id(frame_id, is_extended_id)
        if message is None:
            raise CodecError(f"no message with id 0x{frame_id:X} in {self.path}")
        return message.name, message.decode(data)
