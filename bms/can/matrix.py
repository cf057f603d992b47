"""The emulated BMS speaking a vehicle's own CAN matrix (DBC, ARXML, KCD or SYM) through a signal map.

The BMS's quantities are those its own DBC carries (``PUBLISHED``: name -> built-in message and signal, in
the built-in DBC's units); a map (``hil.matrix`` reads and validates the TOML) says which signal of the
matrix carries each, with ``matrix value = quantity x scale + offset`` or an enumeration, and which matrix
signal carries each command the BMS obeys (``COMMANDS``), with ``command = matrix value x scale + offset``.

At run time the node asks ``MatrixMap.tx_messages`` for every message the BMS node sends in the matrix:
a ``values(page)`` callable in the matrix codec's signal order (mapped signals from the BMS's state,
the rest at their initial values) and a period (the matrix's cycle time, or the map's override);
``rx_messages`` gives each mapped source message's handler, which translates and hands the values to the
node's built-in handlers. ``VcuGateway`` does the inverse for the VCU model of a scenario run, so a
scenario written against the built-in DBC runs unchanged against a vehicle matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BmsError
from .codec import Codec, DbcError, MessageCodec

__all__ = ["PUBLISHED", "ARRAYS", "COMMANDS", "REQUIRED_COMMANDS", "Translation", "PublishRef", "CommandRef",
           "MatrixMap", "MatrixError", "load_matrix_db", "VcuGateway", "FD_LENGTHS"]

FD_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64)


class MatrixError(BmsError):
    """A matrix or map that cannot be used at run time (the map file's own errors are ``ScenarioError``)."""


# quantity -> (built-in message, built-in signal); units are the built-in DBC's (V, A, kW, kWh, %, degC)
PUBLISHED: dict[str, tuple[str, str]] = {
    "state": ("BMS_Status", "BmsState"),
    "fault_level": ("BMS_Status", "FaultLevel"),
    "fault_latched": ("BMS_Status", "FaultLatched"),
    "contactor_main_positive": ("BMS_Status", "ContactorMainPositive"),
    "contactor_main_negative": ("BMS_Status", "ContactorMainNegative"),
    "contactor_precharge": ("BMS_Status", "ContactorPrecharge"),
    "discharge_allowed": ("BMS_Status", "DischargeAllowed"),
    "charge_allowed": ("BMS_Status", "ChargeAllowed"),
    "balancing_active": ("BMS_Status", "BalancingActive"),
    "charger_connected": ("BMS_Status", "ChargerConnected"),
    "comm_fault": ("BMS_Status", "CommFault"),
    "state_request_echo": ("BMS_Status", "StateRequestEcho"),
    "active_dtc_count": ("BMS_Status", "ActiveDtcCount"),
    "pack_voltage_V": ("BMS_PackMeasurements", "PackVoltage"),
    "link_voltage_V": ("BMS_PackMeasurements", "LinkVoltage"),
    "current_A": ("BMS_PackMeasurements", "PackCurrent"),
    "discharge_current_limit_A": ("BMS_Limits", "DischargeCurrentLimit"),
    "charge_current_limit_A": ("BMS_Limits", "ChargeCurrentLimit"),
    "discharge_power_limit_kW": ("BMS_Limits", "DischargePowerLimit"),
    "charge_power_limit_kW": ("BMS_Limits", "ChargePowerLimit"),
    "cell_voltage_min_V": ("BMS_CellVoltageStats", "CellVoltageMin"),
    "cell_voltage_max_V": ("BMS_CellVoltageStats", "CellVoltageMax"),
    "cell_voltage_min_index": ("BMS_CellVoltageStats", "CellVoltageMinIndex"),
    "cell_voltage_max_index": ("BMS_CellVoltageStats", "CellVoltageMaxIndex"),
    "cell_voltage_mean_V": ("BMS_CellVoltageStats", "CellVoltageMean"),
    "temp_min_C": ("BMS_TemperatureStats", "TemperatureMin"),
    "temp_max_C": ("BMS_TemperatureStats", "TemperatureMax"),
    "temp_min_index": ("BMS_TemperatureStats", "TemperatureMinIndex"),
    "temp_max_index": ("BMS_TemperatureStats", "TemperatureMaxIndex"),
    "core_temp_max_C": ("BMS_TemperatureStats", "CoreTemperatureMax"),
    "core_temp_max_index": ("BMS_TemperatureStats", "CoreTemperatureMaxIndex"),
    "core_temp_valid": ("BMS_TemperatureStats", "CoreTemperatureValid"),
    "soc_pct": ("BMS_SOC", "SOC"),
    "soc_min_pct": ("BMS_SOC", "SOCMin"),
    "soc_max_pct": ("BMS_SOC", "SOCMax"),
    "energy_remaining_kWh": ("BMS_SOC", "EnergyRemaining"),
    "soc_valid": ("BMS_SOC", "SOCValid"),
    "fault_level_max": ("BMS_Faults", "FaultLevelMax"),
    "faults_latched": ("BMS_Faults", "FaultsLatched"),
    "warning_flags": ("BMS_Faults", "WarningFlags"),
    "error_flags": ("BMS_Faults", "ErrorFlags"),
    **{f"sop_{kind}_{h}": ("BMS_SOP", f"Sop{name}_{h}") for h in ("2s", "10s", "30s")
       for kind, name in (("discharge_current_A", "DischargeCurrent"), ("charge_current_A", "ChargeCurrent"),
                          ("discharge_power_kW", "DischargePower"), ("charge_power_kW", "ChargePower"))},
    "charge_voltage_request_V": ("BMS_ChargeRequest", "ChargeVoltageRequest"),
    "charge_current_request_A": ("BMS_ChargeRequest", "ChargeCurrentRequest"),
    "charge_enable": ("BMS_ChargeRequest", "ChargeEnable"),
}
# arrays: quantity -> (built-in message, built-in signal name of element i (0-based))
ARRAYS: dict[str, tuple[str, str]] = {"cell_voltage_V": ("BMS_CellVoltages", "CellVoltage_{:03d}"),
                                      "temperature_C": ("BMS_CellTemperatures", "Temperature_{:02d}")}
# command -> (built-in message, built-in signal)
COMMANDS: dict[str, tuple[str, str]] = {
    "state_request": ("VCU_Command", "StateRequest"),
    "contactor_request": ("VCU_Command", "ContactorRequest"),
    "charger_connected": ("CHG_Status", "ChargerConnected"),
    "charger_max_voltage_V": ("CHG_Status", "ChargerMaxVoltage"),
    "charger_max_current_A": ("CHG_Status", "ChargerMaxCurrent"),
    "load_current_A": ("HIL_Load", "LoadCurrent"),
    "coolant_temp_C": ("HIL_Load", "CoolantTemperature"),
    "cooling_factor": ("HIL_Load", "CoolingFactor"),
}
REQUIRED_COMMANDS = ("state_request",)
# commands of one built-in message that come together (a charger offer without a current is no offer)
COMMAND_GROUPS = {"CHG_Status": ("charger_connected", "charger_max_voltage_V", "charger_max_current_A"),
                  "HIL_Load": ("load_current_A", "coolant_temp_C", "cooling_factor")}


@dataclass(frozen=True)
class Translation:
    """``out = in x scale + offset``, or ``enum[in]`` (numbers) where an enumeration is given; ``enum_default``
    is the value of an input the enumeration does not list (None: the input is invalid)."""
    scale: float = 1.0
    offset: float = 0.0
    enum: dict | None = None
    enum_default: float | None = None

    def apply(self, value: float) -> float | None:
        if self.enum is not None:
            return self.enum.get(value, self.enum_default)
        return value * self.scale + self.offset

    def inverse(self) -> Translation:
        if self.enum is not None:
            return Translation(enum={v: k for k, v in self.enum.items()})
        return Translation(1.0 / self.scale, -self.offset / self.scale)


@dataclass(frozen=True)
class PublishRef:
    quantity: str            # a PUBLISHED name, or an ARRAYS name with ``index``
    message: str             # matrix message
    signal: str              # matrix signal
    translation: Translation
    index: int | None = None
    key: str = ""            # where it is in the map ("publish.state")
    line: int | None = None

    @property
    def builtin(self) -> tuple[str, str]:
        if self.index is None:
            return PUBLISHED[self.quantity]
        message, pattern = ARRAYS[self.quantity]
        return message, pattern.format(self.index + 1)


@dataclass(frozen=True)
class CommandRef:
    command: str
    message: str
    signal: str
    translation: Translation
    timeout_s: float | None = None    # None: the built-in DBC's RxTimeoutTime of the command's message
    key: str = ""
    line: int | None = None


@dataclass
class MatrixMap:
    """A validated map bound to its matrix (``hil.matrix.load_matrix_map`` builds one)."""
    source: str                      # the map file
    matrix_path: str
    db: object                       # the cantools database
    node: str
    codec: Codec                     # the matrix's codec (E2E profiles applied)
    publish: tuple[PublishRef, ...]
    receive: tuple[CommandRef, ...]
    cycle_time_ms: dict[str, float] = field(default_factory=dict)
    bitrate_switch: bool = True
    diagnostics: dict = field(default_factory=dict)  # request_id, response_id, functional_id

    def diag_config(self, **options):
        """The UDS server's ``bms.diag.DiagConfig`` on the map's ``[diagnostics]`` identifiers (29-bit where
        any is above 0x7FF), or None where the map gives none (the server keeps its defaults)."""
        d = self.diagnostics
        if not d:
            return None
        from ..diag import DiagConfig
        ids = [d["request_id"], d["response_id"], d.get("functional_id", 0)]
        return DiagConfig(physical_id=d["request_id"], response_id=d["response_id"],
                          functional_id=d.get("functional_id"), extended_id=max(ids) > 0x7FF, **options)

    def sent_messages(self) -> list[MessageCodec]:
        return self.codec.sent_by(self.node)

    def period_s(self, message: MessageCodec) -> float | None:
        ms = self.cycle_time_ms.get(message.name)
        return ms / 1000.0 if ms is not None else message.cycle_time_s

    # --- transmission ------------------------------------------------------------------------------------
    def tx_messages(self, publisher, emulator):
        """(message, values(page), pages, period_s) for every message the node sends; messages without a
        cycle time (event messages the map does not schedule) are left out."""
        by_message: dict[str, list[PublishRef]] = {}
        for ref in self.publish:
            by_message.setdefault(ref.message, []).append(ref)
        for message in self.sent_messages():
            period = self.period_s(message)
            if period is None:
                continue
            refs = by_message.get(message.name, [])
            pages = _pages_of(message, refs)
            yield message, _values_builder(message, refs, publisher, emulator, pages), pages, period

    # --- reception ---------------------------------------------------------------------------------------
    def rx_messages(self, handlers: dict, builtin: Codec, counters: dict):
        """(message, timeout_s, handler, feeds_charger) for every matrix message a command comes from.

        ``handlers``: built-in message -> the node's handler ``f(values, t_ns, rx)``; each keeps the latest
        translated values of its built-in message (what a matrix message does not carry keeps its last or
        initial value) and is called whenever a source message brings any of them."""
        latest = {name: {s.name: _initial(s) for s in builtin[name].dbc_message.signals} for name in handlers}
        by_message: dict[str, list[CommandRef]] = {}
        for ref in self.receive:
            by_message.setdefault(ref.message, []).append(ref)
        for name, refs in by_message.items():
            message = self.codec[name]
            groups: dict[str, list] = {}
            for ref in refs:
                target, signal = COMMANDS[ref.command]
                groups.setdefault(target, []).append((ref.signal, signal, ref.translation.apply))
            timeouts = [r.timeout_s for r in refs if r.timeout_s is not None]
            if timeouts:
                timeout_s = min(timeouts)
            else:  # the built-in message's own receive timeout
                timeout_s = min((_rx_timeout_s(builtin[t]) for t in groups), default=0.0)
            plan = tuple((latest[t], tuple(picks), handlers[t]) for t, picks in groups.items())
            yield message, timeout_s, _rx_handler(plan, counters), "CHG_Status" in groups


def _pages_of(message: MessageCodec, refs) -> tuple:
    if message.multiplexer is None:
        return (None,)
    mapped = {message.signals[r.signal].page for r in refs} - {None}
    return tuple(p for p in message.pages if p in mapped) or message.pages


def _initial(sig) -> float:
    """A signal's initial value (physical), else the value of raw 0."""
    raw = sig.raw_initial if getattr(sig, "raw_initial", None) is not None else 0
    return float(sig.conversion.raw_to_scaled(raw, decode_choices=False))


def _rx_timeout_s(message: MessageCodec) -> float:
    db = getattr(message.dbc_message, "dbc", None)
    attrs = db.attributes if db else {}
    return int(attrs["RxTimeoutTime"].value) / 1000.0 if "RxTimeoutTime" in attrs else 0.0


def _values_builder(message: MessageCodec, refs, publisher, emulator, pages):
    """``values(page)`` for one matrix message: straight-line code generated per page (a frame of 32 cells
    or 40 signals every 10 ms is otherwise a Python loop per signal): each built-in message's values fetched
    once a frame, each mapped signal translated, the rest at their initial values."""
    by_signal = {r.signal: r for r in refs}
    initial = {s.name: _initial(s) for s in message.dbc_message.signals}
    builtin = publisher.codec
    arrays = {"cell_voltage_V": emulator.sensors.cell_voltage_V, "temperature_C": emulator.sensors.temperature_C}
    plans = {}
    for page in pages:
        env: dict = {"nan": math.nan}
        head, items = [], []
        where: dict = {}
        for name in message.signal_names(page):
            ref = by_signal.get(name)
            if ref is None:
                items.append(repr(initial[name]))
                continue
            if ref.index is not None:
                array = f"a_{ref.quantity}"
                if array not in env:
                    env[array] = arrays[ref.quantity]
                    head.append(f"    {array}_ = {array}.tolist()")
                source = f"{array}_[{ref.index}]"
            else:
                bmsg, bsig = ref.builtin
                spec = builtin[bmsg].signals[bsig]
                key = (bmsg, spec.page)
                if key not in where:
                    handler = publisher.handler(bmsg)
                    if handler is None:
                        raise MatrixError(f"{ref.key}: the BMS has no data for {bmsg}")
                    where[key] = k = len(where)
                    env[f"h{k}"] = handler
                    head.append(f"    g{k} = h{k}({spec.page!r})")
                source = f"g{where[key]}[{builtin[bmsg].signal_names(spec.page).index(bsig)}]"
            tr = ref.translation
            if tr.enum is not None:
                n = len(env)
                env[f"e{n}"], env[f"d{n}"] = tr.enum, math.nan if tr.enum_default is None else tr.enum_default
                items.append(f"e{n}.get({source}, d{n})")
            elif tr.scale == 1.0 and tr.offset == 0.0:
                items.append(source)
            else:
                items.append(f"{source} * {tr.scale!r} + {tr.offset!r}")
        code = "\n".join(["def values(page):", *head, f"    return [{', '.join(items)}]"])
        exec(compile(code, f"<matrix values {message.name} page {page}>", "exec"), env)
        plans[page] = env["values"]
    if len(plans) == 1:
        return next(iter(plans.values()))
    return lambda page: plans[page](page)


def _rx_handler(plan, counters):
    def handle(values, t_ns, rx):
        for latest, picks, handler in plan:
            for matrix_signal, builtin_signal, apply in picks:
                value = apply(values[matrix_signal])
                if value is None:  # a value the enumeration does not list: not a command
                    counters["bad_values"] += 1
                    break
                latest[builtin_signal] = value
            else:
                handler(latest, t_ns, rx)
    return handle


# --- loading a matrix -------------------------------------------------------------------------------------
def load_matrix_db(path: str | Path):
    """A vehicle matrix (DBC, ARXML, KCD, SYM) through cantools; raises ``DbcError`` with the file."""
    import cantools

    try:
        db = cantools.database.load_file(str(path), strict=True)
    except FileNotFoundError as exc:
        raise DbcError(f"{path}: no such file") from exc
    except Exception as exc:  # noqa: BLE001 - cantools' parse errors name the line
        raise DbcError(f"{path}: not a usable CAN matrix: {exc}") from exc
    if not hasattr(db, "messages"):
        raise DbcError(f"{path}: not a CAN database (a diagnostics database?)")
    return db


# --- the VCU model against a matrix ------------------------------------------------------------------------
class VcuGateway:
    """A VCU-role firmware written against the built-in DBC (the VCU model), on a matrix bus: frames of the
    matrix become the built-in BMS_Status / BMS_Limits it reads, its VCU_Command / CHG_Status become the
    matrix's command messages (their own alive counters and E2E)."""

    def __init__(self, inner, matrix: MatrixMap, builtin: Codec,
                 messages: tuple[str, ...] | None = ("BMS_Status", "BMS_Limits")):
        """``messages``: the built-in messages rebuilt from the matrix (None: every non-array one the map fills;
        the testing kit's tester reads them all)."""
        self.inner, self.matrix, self.builtin = inner, matrix, builtin
        for attr in ("kind", "role", "name", "version"):
            setattr(self, attr, getattr(inner, attr, None))
        self._rx: dict = {}   # (id, extended) -> (matrix codec, [(signal, built-in message, built-in signal, inv)])
        for ref in matrix.publish:
            bmsg, bsig = ref.builtin
            if ref.index is not None or builtin[bmsg].multiplexer is not None \
                    or (messages is not None and bmsg not in messages):
                continue  # paged built-in messages (cells, SOP pages) are not rebuilt
            m = matrix.codec[ref.message]
            self._rx.setdefault((m.frame_id, m.is_extended_id), (m, []))[1].append(
                (ref.signal, bmsg, bsig, ref.translation.inverse().apply))
        # python-can acceptance filters: the matrix frames it rebuilds (the inner model's are the built-in ids)
        self.can_filters = [{"can_id": i, "can_mask": 0x1FFFFFFF if ext else 0x7FF, "extended": ext}
                            for i, ext in self._rx]
        names = {b for _, picks in self._rx.values() for _, b, _, _ in picks}
        self._latest = {n: {s: 0.0 for s in builtin[n].signal_names()} for n in sorted(names)}
        # built-in message -> the signals the map fills (what the tester may expect)
        self.mapped_in = {n: {b for _, picks in self._rx.values() for _, m, b, _ in picks if m == n}
                          for n in self._latest}
        self._tx: dict = {}   # built-in message -> [(matrix message, [(built-in signal, matrix signal, tr)])]
        for command in matrix.receive:
            bmsg, bsig = COMMANDS[command.command]
            per = self._tx.setdefault(bmsg, {})
            per.setdefault(command.message, []).append((bsig, command.signal, command.translation.inverse().apply))
        self.mapped_out = {b: {bsig for picks in per.values() for bsig, _, _ in picks} for b, per in self._tx.items()}
        self._values = {m: {s.name: _initial(s) for s in matrix.codec[m].dbc_message.signals}
                        for per in self._tx.values() for m in per}
        self._counters = dict.fromkeys(self._values, 0)
        self._frames: list = []

    def __getattr__(self, name):  # silent, corrupt, state ... are the inner model's
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        if name in ("silent", "corrupt"):
            setattr(self.inner, name, value)
        else:
            object.__setattr__(self, name, value)

    def open(self, layout, dt_ns):
        return self.inner.open(layout, dt_ns)

    def close(self):
        return self.inner.close()

    def receive(self, frame, t_ns: int) -> None:
        for frame_in in self.builtin_frames(frame):
            self.inner.receive(frame_in, t_ns)

    def builtin_frames(self, frame) -> list:
        """The built-in frames (BMS_Status …) a matrix frame updates, rebuilt from the latest translated values
        (counter 0, CRC right: a reader of values only); [] for a frame that is not mapped or fails its CRC."""
        entry = self._rx.get((frame.arbitration_id, frame.is_extended_id))
        if entry is None:
            return []
        message, picks = entry
        if len(frame.data) != message.length or not message.crc_ok(frame.data):
            return []
        try:
            values = message.decode(frame.data)
        except BmsError:
            return []
        touched: dict[str, None] = {}  # an ordered set
        for signal, bmsg, bsig, inv in picks:
            value = inv(values[signal])
            if value is not None:
                self._latest[bmsg][bsig] = value
                touched[bmsg] = None
        from .node import Frame
        out = []
        for bmsg in touched:
            codec = self.builtin[bmsg]
            out.append(Frame.build(codec.frame_id, codec.encode(self._latest[bmsg])))
        return out

    def step(self, t_ns, dt_ns, inputs, outputs) -> None:
        self.inner.step(t_ns, dt_ns, inputs, outputs)
        corrupt = getattr(self.inner, "corrupt", None)
        for frame in self.inner.transmit():
            self._frames += self.matrix_frames(frame, corrupt)

    def matrix_frames(self, frame, corrupt: str | None = None) -> list:
        """The matrix frames a built-in command frame (VCU_Command, CHG_Status …) becomes, with the matrix's own
        alive counters and E2E (``corrupt``: "counter" or "crc" breaks them, as a fault); [] where unmapped."""
        from .node import Frame
        out: list = []
        codec = self.builtin.by_id(frame.arbitration_id, frame.is_extended_id)
        per = self._tx.get(codec.name) if codec is not None else None
        if codec is None or per is None:
            return out
        values = codec.decode(frame.data)
        for name, picks in per.items():
            current = self._values[name]
            for bsig, msig, inv in picks:
                value = inv(values[bsig])
                if value is not None:
                    current[msig] = value
            message = self.matrix.codec[name]
            counter = self._counters[name]
            if message.e2e is not None:
                # a counter fault jumps every frame by 8: each one fails the BMS's delta check
                step = 8 if corrupt == "counter" else 1
                self._counters[name] = (counter + step) % (1 << message.e2e.counter_bits)
                current[message.e2e.counter_signal] = counter
            crc_signal = message.e2e.crc_signal if message.e2e is not None else None
            data = bytearray(message.encode({k: v for k, v in current.items() if k != crc_signal}))
            if corrupt == "crc" and message.e2e is not None:
                data[message.e2e.crc_byte] ^= 0xA5
            out.append(Frame.build(message.frame_id, data, is_extended_id=message.is_extended_id,
                                   is_fd=message.is_fd,
                                   bitrate_switch=message.is_fd and self.matrix.bitrate_switch))
        return out

    def transmit(self) -> list:
        frames, self._frames = self._frames, []
        return frames
