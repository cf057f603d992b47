"""Data identifiers from a table (``dids.toml`` ships the default): what each DID holds, how it is encoded,
who may read and write it.

Each DID becomes a ``udsoncan.DidCodec`` (``DidTable.codec(did)``) that encodes the physical values the
server reads from the BMS and decodes them again, so a tester uses the very same table
(``DidTable.client_config()`` is the ``data_identifiers`` configuration of a stock ``udsoncan.Client``).
"""
from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import udsoncan

from ..errors import BmsError
from ..input_files import parse_toml, suggest

__all__ = ["DidTable", "DidDefinition", "DidField", "DidTableError", "load_did_table", "SOURCES", "SESSIONS",
           "DID_RESOURCE"]

DID_RESOURCE = "dids.toml"
SESSIONS = {"default": 0x01, "programming": 0x02, "extended": 0x03}
_TYPES = {"u8": "B", "u16": "H", "u32": "I", "s8": "b", "s16": "h", "s32": "i", "f32": "f", "ascii": None}
_COUNTS = ("n_series", "n_temperatures")

# where a field's value comes from: name -> f(ctx) with ctx a bms.diag.server.DidContext
SOURCES: dict[str, Callable[[Any], Any]] = {
    "diag.session": lambda c: c.server.session,
    "diag.operation_cycle": lambda c: c.server.memory.operation_cycle,
    "diag.time_since_power_on_s": lambda c: c.server.t_s - c.server.power_on_s,
    "diag.insulation_resistance_kohm": lambda c: c.server.insulation_resistance_kohm,
    "package.version": lambda c: c.version,
    "bms.soc_percent": lambda c: 100.0 * c.emulator.bms.soc,
    "bms.state": lambda c: int(c.emulator.bms.state),
    "bms.cell_voltage_min_V": lambda c: c.emulator.bms.cell_voltage_min_V,
    "bms.cell_voltage_max_V": lambda c: c.emulator.bms.cell_voltage_max_V,
    "bms.temperature_min_C": lambda c: c.emulator.bms.temperature_min_C,
    "bms.temperature_max_C": lambda c: c.emulator.bms.temperature_max_C,
    "bms.discharge_current_limit_A": lambda c: c.emulator.bms.limits.discharge_current_A,
    "bms.charge_current_limit_A": lambda c: c.emulator.bms.limits.charge_current_A,
    "estimator.soh_percent": lambda c: c.soh_percent(),
    "sensors.cell_voltage_V": lambda c: c.emulator.sensors.cell_voltage_V,
    "sensors.temperature_C": lambda c: c.emulator.sensors.temperature_C,
    "sensors.current_A": lambda c: c.emulator.sensors.current_A,
    "sensors.pack_voltage_V": lambda c: c.emulator.sensors.pack_voltage_V,
    "sensors.link_voltage_V": lambda c: c.emulator.sensors.link_voltage_V,
    "counters.closings.main_positive": lambda c: c.server.counters.closings["main_positive"],
    "counters.closings.main_negative": lambda c: c.server.counters.closings["main_negative"],
    "counters.closings.precharge": lambda c: c.server.counters.closings["precharge"],
    "counters.opened_under_load": lambda c: c.server.counters.opened_under_load,
    "counters.insulation_tests": lambda c: c.server.counters.insulation_tests,
    "counters.insulation_below_threshold": lambda c: c.server.counters.insulation_below_threshold,
    "snapshot.time_s": lambda c: c.snapshot["time_s"],
    "snapshot.operation_cycle": lambda c: c.snapshot["operation_cycle"],
    "snapshot.channel": lambda c: c.snapshot["channel"],
    "snapshot.value": lambda c: c.snapshot["value"],
}


class DidTableError(BmsError, ValueError):
    """A DID table is malformed: names the file, the line where known, the key, what was expected."""

    def __init__(self, source: str, line: int | None, key: str, message: str):
        self.source, self.line, self.key = source, line, key
        super().__init__(f"{source}:{line}: {key}: {message}" if line else f"{source}: {key}: {message}")


@dataclass(frozen=True)
class DidField:
    name: str
    type: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    count: int | None = None           # an array of this many values
    length: int = 0                    # ascii
    source: str | None = None
    value: Any = None                  # a constant

    @property
    def size(self) -> int:
        if self.type == "ascii":
            return self.length
        return struct.calcsize(">" + str(_TYPES[self.type])) * (self.count or 1)

    def encode(self, value) -> bytes:
        if self.type == "ascii":
            text = str(value)[: self.length].ljust(self.length)
            return text.encode("ascii", errors="replace")
        fmt = ">" + str(_TYPES[self.type])
        if self.count is not None:
            values = list(value)[: self.count]
            values += [math.nan] * (self.count - len(values))
            return b"".join(struct.pack(fmt, self._raw(v)) for v in values)
        return struct.pack(fmt, self._raw(value))

    def decode(self, data: bytes):
        if self.type == "ascii":
            return data.decode("ascii", errors="replace")
        fmt = ">" + str(_TYPES[self.type])
        raws = [r[0] for r in struct.iter_unpack(fmt, data)]
        values = [self._physical(r) for r in raws]
        return values if self.count is not None else values[0]

    def _raw(self, value):
        if self.type == "f32":
            return float(value)
        code = str(_TYPES[self.type])
        bits = struct.calcsize(code) * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code.islower() else (0, (1 << bits) - 1)
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            return -1 if lo < 0 else hi  # not available: all ones
        raw = round((x - self.offset) / self.scale)
        return min(max(raw, lo), hi)

    def _physical(self, raw):
        if self.type == "f32":
            return raw
        if self.scale == 1 and self.offset == 0:
            return raw
        # at the resolution the scale and offset have: 37133 x 0.0001 reads 3.7133, not 3.7133000000000003
        return round(raw * self.scale + self.offset, self._decimals)

    @functools.cached_property
    def _decimals(self) -> int:   # once per field, not per value (a DID of 192 cell voltages)
        return max(_decimals(self.scale), _decimals(self.offset))


def _decimals(x: float) -> int:
    """Decimal places of ``x`` as written (0.25 -> 2, 1e-05 -> 5, 10 -> 0)."""
    mantissa, _, exponent = f"{abs(x):.15g}".partition("e")
    places = len(mantissa.partition(".")[2]) - int(exponent or 0)
    return max(places, 0)


class _TableCodec(udsoncan.DidCodec):
    """A DID's fields as a udsoncan codec: one value, a list (array) or a dict of field values."""

    def __init__(self, fields: tuple[DidField, ...]):
        super().__init__()
        self.fields = fields
        self._size = sum(f.size for f in fields)

    def encode(self, *values) -> bytes:
        if len(self.fields) == 1:
            return self.fields[0].encode(values[0])
        value = values[0] if len(values) == 1 else values
        if isinstance(value, dict):
            value = [value[f.name] for f in self.fields]
        return b"".join(f.encode(v) for f, v in zip(self.fields, value))

    def decode(self, payload: bytes):
        if len(self.fields) == 1:
            return self.fields[0].decode(bytes(payload))
        out, at = {}, 0
        for f in self.fields:
            out[f.name] = f.decode(bytes(payload[at:at + f.size]))
            at += f.size
        return out

    def __len__(self) -> int:
        return self._size


@dataclass(frozen=True)
class DidDefinition:
    id: int
    name: str
    fields: tuple[DidField, ...]
    read_sessions: frozenset[int] = frozenset({0x01, 0x03})
    write_sessions: frozenset[int] = frozenset()
    write_security: int = 0
    write_min: float | None = None
    write_max: float | None = None
    default: Any = None
    codec: _TableCodec = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "codec", _TableCodec(self.fields))

    @property
    def writable(self) -> bool:
        return bool(self.write_sessions)

    @property
    def nvm_key(self) -> str | None:
        source = self.fields[0].source if len(self.fields) == 1 else None
        return source[4:] if source and source.startswith("nvm.") else None

    @property
    def size(self) -> int:
        return len(self.codec)


class DidTable:
    """The DIDs of one BMS (array sizes resolved for its pack) and the DIDs of its snapshot records."""

    def __init__(self, dids: dict[int, DidDefinition], snapshot_dids: tuple[int, ...], source: str = "<table>"):
        self.dids, self.snapshot_dids, self.source = dids, snapshot_dids, source

    def __contains__(self, did: int) -> bool:
        return did in self.dids

    def __getitem__(self, did: int) -> DidDefinition:
        return self.dids[did]

    def __iter__(self):
        return iter(self.dids.values())

    def by_name(self, name: str) -> DidDefinition:
        for d in self.dids.values():
            if d.name == name:
                return d
        raise KeyError(name)

    def codec(self, did: int) -> udsoncan.DidCodec:
        return self.dids[did].codec

    def client_config(self) -> dict[int, udsoncan.DidCodec]:
        """``{did: codec}`` for ``udsoncan.Client(config={"data_identifiers": ...})`` (snapshot DIDs too)."""
        return {d.id: d.codec for d in self.dids.values()}

    def nvm_defaults(self) -> dict[str, Any]:
        return {d.nvm_key: d.default for d in self.dids.values() if d.nvm_key is not None}

    def rows(self) -> list[dict]:
        """One row per DID (for documentation and reports)."""
        return [{"id": f"0x{d.id:04X}", "name": d.name, "bytes": d.size,
                 "fields": ", ".join(f"{f.name}: {f.type}" + (f"[{f.count}]" if f.count else "")
                                     + (f" x{f.scale:g}" if f.scale != 1 else "") + (f" {f.unit}" if f.unit else "")
                                     for f in d.fields),
                 "read": "/".join(_session_name(s) for s in sorted(d.read_sessions)) or "snapshot only",
                 "write": ("/".join(_session_name(s) for s in sorted(d.write_sessions))
                           + (f", security level {d.write_security}" if d.write_security else "")) or "-"}
                for d in self.dids.values()]


def _session_name(session: int) -> str:
    return next((k for k, v in SESSIONS.items() if v == session), f"0x{session:02X}")


def _line(text_lines: list[str], did: int | None, key: str | None) -> int | None:
    """The line of ``key`` in the [[did]] entry with ``id = did`` (best effort)."""
    inside = did is None
    for number, line in enumerate(text_lines, 1):
        m = re.match(r"\s*id\s*=\s*(0x[0-9A-Fa-f]+|\d+)", line)
        if m:
            inside = int(m.group(1), 0) == did
            if inside and key in (None, "id"):
                return number
            continue
        if inside and key is not None and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


def load_did_table(path: str | Path | None = None, *, n_series: int, n_temperatures: int) -> DidTable:
    """The DID table in ``path`` (None: the shipped ``dids.toml``) for a pack of ``n_series`` groups and
    ``n_temperatures`` sensors. Errors name the file, line and key."""
    if path is None:
        resource = resources.files(__package__).joinpath(DID_RESOURCE)
        text, source = resource.read_text(encoding="utf-8"), str(resource)
    else:
        source = str(path)
        from ..input_files import InputFileError, read_input_text
        try:  # a device, a directory or a huge file is refused before it is read
            text = read_input_text(path, what="DID table", max_bytes=4 * 1024 * 1024)
        except InputFileError as exc:
            raise DidTableError(source, None, "file", f"cannot be read: {exc.reason}") from None
    data = parse_toml(text, source, DidTableError, "DID table")
    lines = text.splitlines()
    counts = {"n_series": n_series, "n_temperatures": n_temperatures}
    for key in data:
        if key not in ("did", "snapshot_dids"):
            raise DidTableError(source, _line(lines, None, key), key, "unknown key; expected did or snapshot_dids")
    dids: dict[int, DidDefinition] = {}
    for n, entry in enumerate(data.get("did", [])):
        d = _definition(entry, n, source, lines, counts)
        if d.id in dids:
            raise DidTableError(source, _line(lines, d.id, "id"), f"did[{n}].id", f"0x{d.id:04X} is defined twice")
        dids[d.id] = d
    snapshot = data.get("snapshot_dids", [])
    if not isinstance(snapshot, list) or not all(isinstance(x, int) for x in snapshot):
        raise DidTableError(source, _line(lines, None, "snapshot_dids"), "snapshot_dids", "expected a list of DIDs")
    for did in snapshot:
        if did not in dids:
            raise DidTableError(source, _line(lines, None, "snapshot_dids"), "snapshot_dids",
                                f"0x{did:04X} is not defined in the table")
    return DidTable(dids, tuple(snapshot), source)


_DID_KEYS = {"id", "name", "fields", "read", "write", "default", "type", "scale", "offset", "unit", "count",
             "length", "source", "value"}
_FIELD_KEYS = {"name", "type", "scale", "offset", "unit", "count", "length", "source", "value"}
_WRITE_KEYS = {"session", "security", "min", "max"}


def _definition(entry: dict, n: int, source: str, lines, counts) -> DidDefinition:
    did = entry.get("id")
    where = f"did[{n}]"
    if not (isinstance(did, int) and 0 <= did <= 0xFFFF):
        raise DidTableError(source, _line(lines, did if isinstance(did, int) else None, "id"), f"{where}.id",
                            f"expected a DID 0x0000..0xFFFF, found {did!r}")

    def fail(key, message):
        raise DidTableError(source, _line(lines, did, key.split(".")[-1].split("[")[0]), f"{where}.{key}", message)

    for key in entry:
        if key not in _DID_KEYS:
            fail(key, f"unknown key{suggest(key, _DID_KEYS, list_all=False)}")
    name = entry.get("name", f"did_{did:04x}")
    if "fields" in entry:
        if not isinstance(entry["fields"], list) or not entry["fields"]:
            fail("fields", "expected a non-empty list of field tables")
        raw_fields = entry["fields"]
        for key in _FIELD_KEYS - {"name"}:
            if key in entry:
                fail(key, "give it inside each of `fields`, not beside them")
    else:
        raw_fields = [{k: v for k, v in entry.items() if k in _FIELD_KEYS and k != "name"} | {"name": name}]
    fields = tuple(_field(f, f"fields[{i}]" if "fields" in entry else "", fail, counts)
                   for i, f in enumerate(raw_fields))
    read = entry.get("read", ["default", "extended"])
    read_sessions = _sessions(read, "read", fail)
    write = entry.get("write")
    write_sessions: frozenset[int] = frozenset()
    security, lo, hi = 0, None, None
    if write is not None:
        if not isinstance(write, dict):
            fail("write", "expected a table { session = [...], security = level }")
        for key in write:
            if key not in _WRITE_KEYS:
                fail(f"write.{key}", f"unknown key{suggest(key, _WRITE_KEYS, list_all=False)}")
        write_sessions = _sessions(write.get("session", ["extended"]), "write.session", fail)
        security = write.get("security", 0)
        if not (isinstance(security, int) and 0 <= security <= 0x3F):
            fail("write.security", f"expected a security level 0..63 (0: none), found {security!r}")
        lo, hi = write.get("min"), write.get("max")
        if len(fields) != 1 or not (fields[0].source or "").startswith("nvm."):
            fail("write", "only a one-field DID whose source is an nvm. value can be written")
    definition = DidDefinition(did, str(name), fields, read_sessions, write_sessions, security, lo, hi,
                               entry.get("default"))
    if definition.nvm_key is not None and definition.default is None:
        fail("default", "an nvm. value needs a default (what a new ECU holds)")
    if definition.nvm_key is None and "default" in entry:
        fail("default", "only an nvm. value has a default")
    return definition


def _sessions(value, key, fail) -> frozenset[int]:
    if not isinstance(value, list):
        fail(key, "expected a list of sessions (default, extended, programming)")
    out = set()
    for s in value:
        if s not in SESSIONS:
            fail(key, f"unknown session {s!r}{suggest(str(s), SESSIONS, list_all=False)}; expected one of "
                      f"{', '.join(SESSIONS)}")
        out.add(SESSIONS[s])
    return frozenset(out)


def _field(raw: dict, where: str, fail, counts) -> DidField:
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in _FIELD_KEYS:
            fail(f"{prefix}{key}", f"unknown key{suggest(key, _FIELD_KEYS, list_all=False)}")
    kind = raw.get("type")
    if kind not in _TYPES:
        fail(f"{prefix}type", f"expected one of {', '.join(_TYPES)}, found {kind!r}")
    scale, offset = raw.get("scale", 1.0), raw.get("offset", 0.0)
    for key, value in (("scale", scale), ("offset", offset)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            fail(f"{prefix}{key}", f"expected a finite number, found {value!r}")
    if scale == 0:
        fail(f"{prefix}scale", "expected a number other than 0")
    count = raw.get("count")
    if count is not None:
        if isinstance(count, str):
            if count not in counts:
                fail(f"{prefix}count", f"expected an integer or one of {', '.join(_COUNTS)}, found {count!r}")
            count = counts[count]
        if not (isinstance(count, int) and 1 <= count <= 2000) or kind == "ascii":
            fail(f"{prefix}count", f"expected an array length 1..2000 of a numeric field, found {raw.get('count')!r}")
    length = raw.get("length", 0)
    if kind == "ascii" and not (isinstance(length, int) and 1 <= length <= 255):
        fail(f"{prefix}length", f"an ascii field needs a length 1..255, found {length!r}")
    src, value = raw.get("source"), raw.get("value")
    if (src is None) == (value is None):
        fail(f"{prefix}source", "give exactly one of source (where the value comes from) or value (a constant)")
    if src is not None and not (src in SOURCES or (isinstance(src, str) and re.fullmatch(r"nvm\.\w+", src))):
        fail(f"{prefix}source", f"unknown source {src!r}{suggest(str(src), SOURCES, list_all=False)}")
    if value is not None and kind == "ascii" and (not isinstance(value, str) or len(value) != length):
        fail(f"{prefix}value", f"expected a string of {length} characters, found {value!r}")
    return DidField(str(raw.get("name", "value")), str(kind), float(scale), float(offset), str(raw.get("unit", "")),
                    count, int(length), src, value)
