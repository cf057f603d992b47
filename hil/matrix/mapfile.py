"""The CAN-matrix map file: which signal of a vehicle's matrix carries each quantity the emulated BMS publishes
and each command it obeys, validated whole against the matrix before any bus is opened.

Errors are ``ScenarioError``s naming the file, line and key, what was expected and what was found, and the
nearest valid name, through the replay mapping's reader (``hil.replay.mapping._Reader``). The format is in
the README ("Speaking the vehicle's CAN matrix") and in ``examples/ev_fd_bms.toml``, which uses every table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bms.can.codec import E2E, Codec, DbcError, MessageCodec
from bms.can.e2e import PROFILES, E2EConfigError, Profile02, Profile05, vendor_protection
from bms.can.matrix import (
    ARRAYS,
    COMMAND_GROUPS,
    COMMANDS,
    FD_LENGTHS,
    PUBLISHED,
    REQUIRED_COMMANDS,
    CommandRef,
    MatrixMap,
    PublishRef,
    Translation,
    load_matrix_db,
)
from bms.input_files import parse_toml, suggest

from ..replay.mapping import _Reader
from ..scenario import ScenarioError

__all__ = ["load_matrix_map", "parse_matrix_map", "TABLES"]

TABLES = ("matrix", "publish", "receive", "cycle_time_ms", "e2e", "diagnostics")
_MATRIX_KEYS = ("file", "node", "bitrate_switch")
_PUBLISH_KEYS = ("message", "signal", "scale", "offset", "enum", "enum_default", "saturate")
_ARRAY_KEYS = ("message", "signal", "scale", "offset", "per_page", "index_base", "page_base", "saturate")
_RECEIVE_KEYS = ("message", "signal", "scale", "offset", "enum", "timeout_s")
_E2E_KEYS = ("profile", "data_id", "data_ids", "crc_signal", "counter_signal", "hook", "options")
_DIAG_KEYS = ("request_id", "response_id", "functional_id")


def load_matrix_map(path: str | Path, *, n_cells: int = 192, n_temperatures: int = 24) -> MatrixMap:
    """Read and validate a map file (TOML) and its matrix; ``n_cells``/``n_temperatures``: the pack's series
    groups and temperature sensors, each of which an array mapping must place."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ScenarioError(str(path), None, "file", f"cannot read the map file: {reason}") from exc
    return parse_matrix_map(text, str(path), n_cells=n_cells, n_temperatures=n_temperatures)


def parse_matrix_map(text: str, source: str, *, n_cells: int = 192, n_temperatures: int = 24) -> MatrixMap:
    data = parse_toml(text, source, ScenarioError, "CAN-matrix map")
    r = _Reader(source, text)
    for key in data:
        if key not in TABLES:
            raise r.error(key, f"unknown table{suggest(key, TABLES)}")
    head = r.table(data.get("matrix"), "matrix", _MATRIX_KEYS) if "matrix" in data else None
    if head is None or "file" not in head:
        raise r.error("matrix.file", "missing: the map names its matrix (DBC, ARXML, KCD or SYM beside the map)")
    matrix_path = Path(source).parent / r.string(head["file"], "matrix.file")
    try:
        db = load_matrix_db(matrix_path)
    except DbcError as exc:
        raise r.error("matrix.file", str(exc)) from exc
    m = _Matrix(r, db, str(matrix_path))
    node = m.node(head.get("node", "BMS"))
    bitrate_switch = r.boolean(head.get("bitrate_switch", True), "matrix.bitrate_switch")
    builtin = Codec()

    publish = _publish(r, m, node, builtin, r.table(data.get("publish", {}), "publish", (*PUBLISHED, *ARRAYS)),
                       {"cell_voltage_V": n_cells, "temperature_C": n_temperatures})
    receive = _receive(r, m, node, builtin, r.table(data.get("receive", {}), "receive", tuple(COMMANDS)))
    _check_signals_once(r, publish, receive)
    cycle = {}
    for name, value in r.table(data.get("cycle_time_ms", {}), "cycle_time_ms", m.names).items():
        m.message(name, f"cycle_time_ms.{name}", sent_by=node)
        cycle[name] = r.number(value, f"cycle_time_ms.{name}", low=0, low_open=True)
    for message in m.sent_by(node):
        if message.cycle_time is None and message.name not in cycle and any(p.message == message.name
                                                                            for p in publish):
            ref = next(p for p in publish if p.message == message.name)
            raise r.error(ref.key, f"{message.name} has no cycle time in {m.path}: give it one in [cycle_time_ms]")
    e2e = _e2e(r, m, r.table(data.get("e2e", {}), "e2e", m.names))
    diagnostics = {k: r.integer(v, f"diagnostics.{k}", low=0)
                   for k, v in r.table(data.get("diagnostics", {}), "diagnostics", _DIAG_KEYS).items()}
    if diagnostics and not {"request_id", "response_id"} <= set(diagnostics):
        raise r.error("diagnostics", "expected request_id and response_id (and optionally functional_id)")
    for k, v in diagnostics.items():
        if v > 0x1FFFFFFF:
            raise r.error(f"diagnostics.{k}", f"expected an 11- or 29-bit identifier, found 0x{v:X}")
    for message in {*m.sent_by(node), *(m.db.get_message_by_name(c.message) for c in receive)}:
        _check_length(r, m, message)
    try:
        codec = Codec(db, path=str(matrix_path), e2e=e2e)
    except DbcError as exc:
        raise r.error("matrix.file", str(exc)) from exc
    return MatrixMap(source, str(matrix_path), db, node, codec, tuple(publish), tuple(receive), cycle,
                     bitrate_switch, diagnostics)


class _Matrix:
    """Names in the matrix, with the nearest name when one is not there."""

    def __init__(self, r: _Reader, db, path: str):
        self.r, self.db, self.path = r, db, path
        self.names = tuple(msg.name for msg in db.messages)
        self._codecs: dict[str, MessageCodec] = {}

    def node(self, name: Any) -> str:
        name = self.r.string(name, "matrix.node")
        nodes = {n.name for n in self.db.nodes} | {s for msg in self.db.messages for s in msg.senders}
        if name not in nodes:
            raise self.r.error("matrix.node", f"no node (ECU) {name!r} in {self.path}{suggest(name, nodes)}")
        return name

    def sent_by(self, node: str) -> list:
        return [msg for msg in self.db.messages if node in msg.senders]

    def message(self, name: Any, key: str, *, sent_by: str | None = None, not_sent_by: str | None = None):
        name = self.r.string(name, key)
        try:
            message = self.db.get_message_by_name(name)
        except KeyError:
            raise self.r.error(key, f"no message {name!r} in {self.path}{suggest(name, self.names)}") from None
        if sent_by is not None and sent_by not in message.senders:
            raise self.r.error(key, f"{name} is sent by {', '.join(message.senders) or 'no node'}, not by {sent_by}: "
                                    f"the BMS publishes only in its own messages")
        if not_sent_by is not None and not_sent_by in message.senders:
            raise self.r.error(key, f"{name} is sent by {not_sent_by} itself: a command comes from another node")
        return message

    def signal(self, message, name: Any, key: str):
        name = self.r.string(name, key)
        names = [s.name for s in message.signals]
        if name not in names:
            raise self.r.error(key, f"no signal {name!r} in {message.name}{suggest(name, names)}")
        return message.get_signal_by_name(name)

    def spec(self, message, signal: str):
        codec = self._codecs.get(message.name)
        if codec is None:
            codec = self._codecs[message.name] = MessageCodec(message, self.path)
        return codec.signals[signal]


def _translation(r: _Reader, value: dict, key: str) -> tuple[float, float]:
    scale = r.number(value.get("scale", 1.0), f"{key}.scale")
    if scale == 0:
        raise r.error(f"{key}.scale", "expected a non-zero number (0 maps every value to the offset)")
    return scale, r.number(value.get("offset", 0.0), f"{key}.offset")


def _enum(r: _Reader, table: Any, key: str, builtin_spec, matrix_signal) -> dict:
    """``{ BUILT_IN_LABEL = MATRIX_LABEL or raw number }`` -> {built-in value: matrix physical value}."""
    if not isinstance(table, dict) or not table:
        raise r.error(key, f"expected a table {{ BUILT_IN_NAME = \"MATRIX_NAME\" or number, … }}, found {table!r}")
    labels = {str(label): raw for raw, label in builtin_spec.choices.items()}
    choices = {str(label): raw for raw, label in (matrix_signal.choices or {}).items()}
    out = {}
    for name, target in table.items():
        if name not in labels:
            raise r.error(f"{key}.{name}", f"no value {name!r} in the built-in {builtin_spec.name}"
                                           f"{suggest(name, [str(x) for x in labels])}")
        if isinstance(target, str):
            if target not in choices:
                hint = suggest(target, choices) if choices else " (it has no value table)"
                raise r.error(f"{key}.{name}", f"no value {target!r} in {matrix_signal.name}{hint}")
            raw = choices[target]
        elif isinstance(target, int) and not isinstance(target, bool):
            raw = target
        else:
            raise r.error(f"{key}.{name}", f"expected a value name of {matrix_signal.name} or an integer, found "
                                           f"{target!r}")
        out[float(labels[name])] = float(matrix_signal.conversion.raw_to_scaled(raw, decode_choices=False))
    return out


def _covers(r: _Reader, key: str, lo: float, hi: float, spec, what: str) -> None:
    tol = 1e-9 * max(1.0, abs(lo), abs(hi)) + abs(spec.scale) * 1e-6
    if lo < spec.minimum - tol or hi > spec.maximum + tol:
        raise r.error(key, f"{spec.name} carries {spec.minimum:g} .. {spec.maximum:g} {spec.unit}".rstrip()
                           + f", too narrow for {what} ({lo:g} .. {hi:g} after scale and offset); give a scale "
                             f"that fits, or saturate = true to accept clipping")


def _publish(r, m: _Matrix, node, builtin: Codec, table: dict, sizes: dict) -> list[PublishRef]:
    out = []
    for quantity, value in table.items():
        key = f"publish.{quantity}"
        if not isinstance(value, dict):
            raise r.error(key, f'expected {{ message = "NAME", signal = "NAME", … }}, found {value!r}')
        array = quantity in ARRAYS
        r.table(value, key, _ARRAY_KEYS if array else _PUBLISH_KEYS)
        for name in ("message", "signal"):
            if name not in value:
                raise r.error(f"{key}.{name}", "missing: a mapped quantity names its message and signal")
        scale, offset = _translation(r, value, key)
        saturate = r.boolean(value.get("saturate", False), f"{key}.saturate")
        line = r.where.line(key)
        if not array:
            message = m.message(value["message"], f"{key}.message", sent_by=node)
            signal = m.signal(message, value["signal"], f"{key}.signal")
            bmsg, bsig = PUBLISHED[quantity]
            bspec = builtin[bmsg].signals[bsig]
            spec = m.spec(message, signal.name)
            if "enum" in value:
                enum = _enum(r, value["enum"], f"{key}.enum", bspec, signal)
                default = None
                if "enum_default" in value:
                    default = float(signal.conversion.raw_to_scaled(
                        _raw_of(r, value["enum_default"], f"{key}.enum_default", signal), decode_choices=False))
                translation = Translation(enum=enum, enum_default=default)
                targets = list(enum.values())
                if not saturate:
                    _covers(r, f"{key}.enum", min(targets), max(targets), spec, f"the values of {bsig}")
            else:
                translation = Translation(scale, offset)
                a, b = sorted((bspec.minimum * scale + offset, bspec.maximum * scale + offset))
                if not saturate:
                    _covers(r, f"{key}.signal", a, b, spec, f"{quantity} (the built-in {bmsg}.{bsig})")
            out.append(PublishRef(quantity, message.name, signal.name, translation, key=key, line=line))
            continue
        per_page = r.integer(value["per_page"], f"{key}.per_page", low=1) if "per_page" in value else None
        index_base = r.integer(value.get("index_base", 1), f"{key}.index_base", low=0)
        page_base = r.integer(value.get("page_base", 1), f"{key}.page_base", low=0)
        msg_pattern = r.string(value["message"], f"{key}.message")
        sig_pattern = r.string(value["signal"], f"{key}.signal")
        uses_page = "{page" in msg_pattern or "{slot" in sig_pattern
        if uses_page and per_page is None:
            raise r.error(f"{key}.per_page", "missing: {page} and {slot} need per_page (elements per message)")
        bmsg, bpattern = ARRAYS[quantity]
        bspec = builtin[bmsg].signals[bpattern.format(1)]
        for i in range(sizes[quantity]):
            fields = {"index": i + index_base}
            if per_page is not None:
                fields.update(page=i // per_page + page_base, slot=i % per_page + index_base)
            try:
                msg_name, sig_name = msg_pattern.format(**fields), sig_pattern.format(**fields)
            except (KeyError, IndexError, ValueError) as exc:
                raise r.error(key, f"a pattern takes the fields {{index}}, {{page}} and {{slot}} (with Python "
                                   f"format specs such as {{index:03d}}): {exc!r}") from None
            message = m.message(msg_name, f"{key}.message", sent_by=node)
            signal = m.signal(message, sig_name, f"{key}.signal")
            if i == 0 and not saturate:
                a, b = sorted((bspec.minimum * scale + offset, bspec.maximum * scale + offset))
                _covers(r, f"{key}.signal", a, b, m.spec(message, signal.name), f"{quantity} (the built-in {bmsg})")
            out.append(PublishRef(quantity, message.name, signal.name, Translation(scale, offset), index=i, key=key,
                                  line=line))
    return out


def _raw_of(r: _Reader, value: Any, key: str, signal) -> int:
    choices = {str(label): raw for raw, label in (signal.choices or {}).items()}
    if isinstance(value, str) and value in choices:
        return choices[value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise r.error(key, f"expected a value name of {signal.name} or an integer{suggest(str(value), choices)}")


def _receive(r, m: _Matrix, node, builtin: Codec, table: dict) -> list[CommandRef]:
    out = []
    for command, value in table.items():
        key = f"receive.{command}"
        if not isinstance(value, dict):
            raise r.error(key, f'expected {{ message = "NAME", signal = "NAME", … }}, found {value!r}')
        r.table(value, key, _RECEIVE_KEYS)
        for name in ("message", "signal"):
            if name not in value:
                raise r.error(f"{key}.{name}", "missing: a mapped command names its message and signal")
        message = m.message(value["message"], f"{key}.message", not_sent_by=node)
        signal = m.signal(message, value["signal"], f"{key}.signal")
        scale, offset = _translation(r, value, key)
        bmsg, bsig = COMMANDS[command]
        if "enum" in value:
            enum = _enum(r, value["enum"], f"{key}.enum", builtin[bmsg].signals[bsig], signal)
            translation = Translation(enum={v: k for k, v in enum.items()})
        else:
            translation = Translation(scale, offset)
        timeout = (r.number(value["timeout_s"], f"{key}.timeout_s", low=0) if "timeout_s" in value else None)
        out.append(CommandRef(command, message.name, signal.name, translation, timeout, key, r.where.line(key)))
    have = {c.command for c in out}
    for command in REQUIRED_COMMANDS:
        if command not in have:
            raise r.error(f"receive.{command}", "missing: the BMS must hear where its state request comes from")
    for group, members in COMMAND_GROUPS.items():
        given = [c for c in members if c in have]
        if given and len(given) != len(members):
            missing = [c for c in members if c not in have]
            raise r.error(f"receive.{missing[0]}", f"missing: {', '.join(given)} without {', '.join(missing)} "
                                                   f"(the {group} values come together)")
    return out


def _check_signals_once(r: _Reader, publish, receive) -> None:
    seen: dict = {}
    for ref in (*publish, *receive):
        where = (ref.message, ref.signal)
        name = getattr(ref, "quantity", None) or ref.command
        if where in seen and seen[where][0] != ref.key:
            raise r.error(ref.key, f"{ref.message}.{ref.signal} already carries {seen[where][1]}")
        seen.setdefault(where, (ref.key, name))


def _check_length(r: _Reader, m: _Matrix, message) -> None:
    where = f"{message.name} (0x{message.frame_id:X})"
    if message.is_fd:
        if message.length not in FD_LENGTHS:
            raise r.error("matrix.file", f"{m.path}: {where} is {message.length} bytes long; a CAN FD frame carries "
                                         f"one of {', '.join(map(str, FD_LENGTHS[8:]))} (or 0..8) bytes")
    elif message.length > 8:
        raise r.error("matrix.file", f"{m.path}: {where} is {message.length} bytes long, more than a classic CAN "
                                     f"frame's 8 (is it a CAN FD frame whose VFrameFormat is missing?)")
    if message.frame_id > (0x1FFFFFFF if message.is_extended_frame else 0x7FF):
        raise r.error("matrix.file", f"{m.path}: {where}: identifier too large for a "
                                     f"{'29' if message.is_extended_frame else '11'}-bit ID")


def _e2e(r: _Reader, m: _Matrix, table: dict) -> dict:
    """Every protected message's scheme: from the map, with an ARXML's profile and data IDs as defaults."""
    out: dict[str, Any] = {}
    names = set(table)
    for message in m.db.messages:  # an ARXML's E2E protection is used even when the map names no signals
        autosar = getattr(message, "autosar", None)
        if autosar is not None and autosar.e2e is not None and message.name not in names:
            raise r.error(f"e2e.{message.name}", f"missing: {m.path} protects {message.name} with "
                                                 f"{autosar.e2e.category}; give its crc_signal and counter_signal")
    for name, value in table.items():
        key = f"e2e.{name}"
        message = m.message(name, key)
        r.table(value, key, _E2E_KEYS)
        arxml = getattr(getattr(message, "autosar", None), "e2e", None)
        default_profile = None
        if arxml is not None:
            category = str(arxml.category or "")
            default_profile = "P05" if "5" in category else "P02" if "2" in category else None
        profile = value.get("profile", default_profile)
        if profile is None:
            raise r.error(f"{key}.profile", f"missing: one of {', '.join(PROFILES)}")
        profile = r.string(profile, f"{key}.profile")
        if profile not in PROFILES:
            raise r.error(f"{key}.profile", f"unknown profile {profile!r}{suggest(profile, PROFILES)}")
        if profile == "vendor":
            if "hook" not in value:
                raise r.error(f"{key}.hook", "missing: a vendor scheme names its factory as 'module:function'")
            options = value.get("options", {})
            if not isinstance(options, dict):
                raise r.error(f"{key}.options", f"expected a table of the hook's options, found {options!r}")
            try:
                out[name] = vendor_protection(r.string(value["hook"], f"{key}.hook"), message, options)
            except E2EConfigError as exc:
                raise r.error(f"{key}.hook", str(exc)) from exc
            continue
        crc, counter = (m.signal(message, value.get(k), f"{key}.{k}") if k in value else None
                        for k in ("crc_signal", "counter_signal"))
        if crc is None or counter is None:
            raise r.error(f"{key}.{'crc_signal' if crc is None else 'counter_signal'}",
                          "missing: a protected message names its CRC and counter signals")
        data_ids = list(arxml.data_ids or []) if arxml is not None else []
        try:
            if profile == "P05":
                data_id = _data_id(r, value, key, data_ids[0] if len(data_ids) == 1 else None)
                _layout(r, f"{key}.crc_signal", crc, 16, None)
                _layout(r, f"{key}.counter_signal", counter, 8, crc.start + 16)
                out[name] = Profile05(data_id, crc_signal=crc.name, counter_signal=counter.name,
                                      length=message.length, offset_byte=crc.start // 8)
            elif profile == "P02":
                ids = value.get("data_ids", data_ids or None)
                if not isinstance(ids, list):
                    raise r.error(f"{key}.data_ids", "missing: profile P02 takes 16 data IDs (one per counter value)")
                _layout(r, f"{key}.crc_signal", crc, 8, 0)
                _layout(r, f"{key}.counter_signal", counter, 4, 8)
                out[name] = Profile02(ids, crc_signal=crc.name, counter_signal=counter.name, length=message.length)
            else:  # the project's own scheme (CRC-8 SAE J1850 over the data ID and the data)
                data_id = _data_id(r, value, key, None)
                _layout(r, f"{key}.crc_signal", crc, 8, None)
                if counter.byte_order != "little_endian":
                    raise r.error(f"{key}.counter_signal", "expected a little-endian counter")
                out[name] = E2E(data_id, crc.name, crc.start // 8, counter.name, counter.start, counter.length)
        except E2EConfigError as exc:
            raise r.error(key, str(exc)) from exc
    return out


def _data_id(r: _Reader, value: dict, key: str, default: int | None) -> int:
    if "data_id" not in value:
        if default is None:
            raise r.error(f"{key}.data_id", "missing: the profile's 16-bit data ID")
        return default
    return r.integer(value["data_id"], f"{key}.data_id", low=0)


def _layout(r: _Reader, key: str, signal, length: int, start: int | None) -> None:
    """E2E header fields as the profile places them: little-endian, byte-aligned, of the profile's length."""
    if signal.byte_order != "little_endian" or signal.length != length or signal.start % 8 and length >= 8 \
            or (start is not None and signal.start != start):
        where = f"start bit {start}, " if start is not None else "a byte boundary, "
        raise r.error(key, f"{signal.name}: the profile expects {length} bits at {where}little-endian; found "
                           f"{signal.length} bits at start bit {signal.start}, {signal.byte_order.replace('_', '-')}")
