"""The replay mapping file: which signals of the recording vehicle's DBC mean what, validated whole on load.

Every table and key is checked as the scenario loader checks a scenario: an unknown key or a value of the
wrong kind is a ``ScenarioError`` naming the file, line and key, what was expected and what was found, and
the nearest valid name. The format is documented in the README ("Replaying a recorded drive") and in the
shipped example ``hil/replay/examples/mapping.toml``, which uses every key.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bms.input_files import parse_toml, suggest

from ..scenario import ScenarioError
from ..vehicle import Vehicle

__all__ = ["SignalRef", "Product", "Tolerance", "Checks", "ReplayMapping", "load_mapping", "parse_mapping",
           "DEMANDS", "COMPARE", "TOLERANCES"]

DEMANDS = ("current_A", "power_W", "torque_Nm", "speed_mps")
# recorded BMS signal -> what the emulated run records for the same quantity
COMPARE = {"soc": "soc_estimated", "pack_voltage_V": "pack_voltage_V", "current_A": "current_A",
           "power_W": "power_W", "cell_voltage_min_V": "cell_voltage_min_V",
           "cell_voltage_max_V": "cell_voltage_max_V", "temp_max_C": "temp_surface_max_C"}
SERIES_TOLERANCES = ("rms_max", "max_abs")
TOTAL_TOLERANCES = ("max_abs", "max_rel")
# quantity -> the tolerance keys it takes
TOLERANCES = {**{q: SERIES_TOLERANCES for q in (*COMPARE, "cell_voltage_V")},
              **{q: TOTAL_TOLERANCES for q in ("energy_kWh", "charge_Ah", "delta_soc")},
              "time_limited_s": ("max",)}
TABLES = ("replay", "demand", "vehicle", "ambient", "compare", "recorded_pack", "tolerance", "checks")
REF_KEYS = ("message", "signal", "scale", "offset", "channel", "max_gap_s", "optional")
PRODUCT_KEYS = ("product", "scale", "offset", "max_gap_s", "optional")
DEFAULT_SPEED_FILTER_S = 0.5


@dataclass(frozen=True)
class SignalRef:
    """One DBC signal: ``value = decoded physical value × scale + offset`` (the DBC's own factor and offset
    are applied first, by cantools)."""
    message: str
    signal: str
    scale: float = 1.0
    offset: float = 0.0
    channel: int | str | None = None     # only frames of this channel (as python-can reports it)
    max_gap_s: float | None = None       # None: the [checks] default
    optional: bool = False               # may be absent from the log without failing the replay
    key: str = ""                        # where it is in the mapping: "compare.soc"
    line: int | None = None

    def leaves(self) -> tuple[SignalRef, ...]:
        return (self,)

    def describe(self) -> str:
        return f"{self.message}.{self.signal}"


@dataclass(frozen=True)
class Product:
    """The product of two or more signals (DC power = current × voltage), then × scale + offset."""
    factors: tuple[SignalRef, ...]
    scale: float = 1.0
    offset: float = 0.0
    max_gap_s: float | None = None
    optional: bool = False
    key: str = ""
    line: int | None = None

    def leaves(self) -> tuple[SignalRef, ...]:
        return self.factors

    def describe(self) -> str:
        return " × ".join(f.describe() for f in self.factors)


Ref = SignalRef | Product


@dataclass(frozen=True)
class Tolerance:
    quantity: str
    limits: dict[str, float]             # rms_max / max_abs / max_rel / max
    line: int | None = None


@dataclass(frozen=True)
class Checks:
    max_gap_s: float | None = None       # None: max(1 s, 5 × the signal's median period)
    allow_incomplete_log: bool = False   # a cut or damaged log is reported but does not fail the replay
    max_decode_failure_fraction: float = 0.0


@dataclass(frozen=True)
class ReplayMapping:
    source: str
    demand_kind: str
    demand: Ref
    motor_speed: Ref | None = None
    speed_filter_s: float = DEFAULT_SPEED_FILTER_S
    vehicle: dict = field(default_factory=dict)
    ambient: dict[str, float | Ref] = field(default_factory=dict)    # temp_C, coolant_C
    compare: dict[str, Ref] = field(default_factory=dict)
    recorded_pack: dict[str, float] = field(default_factory=dict)    # series_cells, capacity_Ah
    tolerances: tuple[Tolerance, ...] = ()
    checks: Checks = Checks()
    pack: str = "assb60-192s2p"
    initial_soc: float | None = None     # None: the first recorded SOC
    initial_temp_C: float | None = None  # None: the first recorded temp_max_C, else the ambient's start
    seed: int = 0
    name: str | None = None

    def refs(self) -> dict[str, Ref]:
        """Every mapped quantity by its key in the mapping."""
        out: dict[str, Ref] = {f"demand.{self.demand_kind}": self.demand}
        if self.motor_speed is not None:
            out["demand.motor_speed_rpm"] = self.motor_speed
        out.update({f"ambient.{k}": v for k, v in self.ambient.items() if not isinstance(v, float)})
        out.update({f"compare.{k}": v for k, v in self.compare.items()})
        return out

    def leaves(self) -> dict[str, SignalRef]:
        """Every DBC signal the mapping reads, by its key (factors of a product: ``KEY.product[N]``)."""
        return {leaf.key: leaf for ref in self.refs().values() for leaf in ref.leaves()}


# --- where a key is -----------------------------------------------------------------------------
class _Lines:
    """The line of a dotted key in a TOML text: ``compare.soc.scale`` in ``[compare]`` as
    ``soc = { scale = … }``, in ``[compare.soc]`` as ``scale = …``, or dotted at the top."""

    _HEADER = re.compile(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def line(self, path: str) -> int | None:
        parts = [p.split("[")[0] for p in path.split(".")]
        for depth in range(len(parts), 0, -1):  # the deepest match: the key itself, else its parent
            found = self._find(parts[:depth])
            if found:
                return found
        return None

    def _find(self, parts: list[str]) -> int | None:
        table: list[str] = []
        for number, text in enumerate(self.lines, 1):
            header = self._HEADER.match(text)
            if header:
                table = [p.strip().strip('"') for p in header.group(1).split(".")]
                if table == parts:
                    return number
                continue
            if table == parts[:len(table)] and len(parts) > len(table):
                rest = parts[len(table):]
                key = r"\s*\.\s*".join(re.escape(p) for p in rest[:1])
                if re.match(rf"\s*\"?{key}\"?\s*[=.]", text):
                    if len(rest) == 1:
                        return number
                    inner = re.escape(rest[1])
                    if re.search(rf"[{{,\s.]\"?{inner}\"?\s*=", text):
                        return number
        return None


# --- values -------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, source: str, text: str):
        self.source, self.where = source, _Lines(text)

    def error(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(self.source, self.where.line(key), key, message)

    def table(self, value: Any, key: str, allowed) -> dict:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, found {value!r}")
        for name in value:
            if name not in allowed:
                raise self.error(f"{key}.{name}", f"unknown key{suggest(name, allowed)}")
        return value

    def number(self, value: Any, key: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, infinite: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, found {value!r}")
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not infinite):
            raise self.error(key, f"expected a finite number, found {value!r}")
        if low is not None and (value < low or (low_open and value == low)):
            raise self.error(key, f"expected a number {'>' if low_open else '>='} {low:g}, found {value:g}")
        if high is not None and value > high:
            raise self.error(key, f"expected a number <= {high:g}, found {value:g}")
        return value

    def integer(self, value: Any, key: str, *, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, found {value!r}")
        if value < low:
            raise self.error(key, f"expected an integer >= {low}, found {value}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, found {value!r}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, found {value!r}")
        return value

    def ref(self, value: Any, key: str) -> Ref:
        if not isinstance(value, dict):
            raise self.error(key, 'expected { message = "NAME", signal = "NAME", scale = …, offset = … } or '
                                  '{ product = [ {…}, {…} ] }' + f", found {value!r}")
        if "product" in value:
            self.table(value, key, PRODUCT_KEYS)
            factors = value["product"]
            if not isinstance(factors, list) or len(factors) < 2:
                raise self.error(f"{key}.product", f"expected a list of two or more signals, found {factors!r}")
            return Product(tuple(self.signal(f, f"{key}.product[{n}]") for n, f in enumerate(factors)),
                           **self._common(value, key), key=key, line=self.where.line(key))
        return self.signal(value, key, factor=False)

    def signal(self, value: Any, key: str, *, factor: bool = True) -> SignalRef:
        """One DBC signal (a factor of a product takes no ``optional``: the product as a whole does)."""
        if not isinstance(value, dict) or "product" in value:
            raise self.error(key, f'expected {{ message = "NAME", signal = "NAME", … }}, found {value!r}')
        self.table(value, key, [k for k in REF_KEYS if not (factor and k == "optional")])
        for name in ("message", "signal"):
            if name not in value:
                raise self.error(f"{key}.{name}", "missing: a mapped signal names its message and signal")
        channel = value.get("channel")
        if channel is not None and (isinstance(channel, bool) or not isinstance(channel, (int, str))):
            raise self.error(f"{key}.channel", f"expected a channel number or name, found {channel!r}")
        return SignalRef(self.string(value["message"], f"{key}.message"), self.string(value["signal"], f"{key}.signal"),
                         channel=channel, **self._common(value, key), key=key, line=self.where.line(key))

    def _common(self, value: dict, key: str) -> dict:
        scale = self.number(value.get("scale", 1.0), f"{key}.scale")
        if scale == 0:
            raise self.error(f"{key}.scale", "expected a non-zero number (0 maps every value to the offset)")
        gap = value.get("max_gap_s")
        return {"scale": scale, "offset": self.number(value.get("offset", 0.0), f"{key}.offset"),
                "max_gap_s": None if gap is None else self.number(gap, f"{key}.max_gap_s", low=0, low_open=True,
                                                                  infinite=True),
                **({"optional": self.boolean(value["optional"], f"{key}.optional")} if "optional" in value else {})}


# --- the mapping --------------------------------------------------------------------------------
_REPLAY_KEYS = ("pack", "initial_soc", "initial_temp_C", "seed", "name")
_VEHICLE_KEYS = tuple(f.name for f in fields(Vehicle))
_AMBIENT_KEYS = ("temp_C", "coolant_C")
_RECORDED_PACK_KEYS = ("series_cells", "capacity_Ah")
_CHECK_KEYS = ("max_gap_s", "allow_incomplete_log", "max_decode_failure_fraction")


def load_mapping(path: str | Path) -> ReplayMapping:
    """Read and validate a mapping file (TOML); a ``ScenarioError`` names file, line and key."""
    from bms.input_files import InputFileError, read_input_text
    path = Path(path)
    try:  # a device, a directory or a huge file is refused before it is read
        text = read_input_text(path, what="mapping file", max_bytes=8 * 1024 * 1024)
    except InputFileError as exc:
        raise ScenarioError(exc.path, None, "file", f"cannot read the mapping file: {exc.reason}") from None
    return parse_mapping(text, str(path))


def parse_mapping(text: str, source: str) -> ReplayMapping:
    data = parse_toml(text, source, ScenarioError, "mapping")
    r = _Reader(source, text)
    for key in data:
        if key not in TABLES:
            raise r.error(key, f"unknown table{suggest(key, TABLES)}")
        r.table(data[key], key, {"replay": _REPLAY_KEYS, "demand": (*DEMANDS, "motor_speed_rpm", "speed_filter_s"),
                                 "vehicle": _VEHICLE_KEYS, "ambient": _AMBIENT_KEYS, "compare": tuple(COMPARE),
                                 "recorded_pack": _RECORDED_PACK_KEYS, "tolerance": tuple(TOLERANCES),
                                 "checks": _CHECK_KEYS}[key])

    demand = data.get("demand", {})
    kinds = [k for k in DEMANDS if k in demand]
    if len(kinds) != 1:
        raise r.error("demand", f"expected exactly one of {', '.join(DEMANDS)}, found "
                                f"{', '.join(kinds) if kinds else 'none'}")
    kind = kinds[0]
    demand_ref = r.ref(demand[kind], f"demand.{kind}")
    if demand_ref.optional:
        raise r.error(f"demand.{kind}.optional", "the demand drives the replay: it cannot be optional")
    motor = r.ref(demand["motor_speed_rpm"], "demand.motor_speed_rpm") if "motor_speed_rpm" in demand else None
    if kind == "torque_Nm" and motor is None:
        raise r.error("demand.motor_speed_rpm", "missing: required with torque_Nm (power = torque × speed)")
    if kind != "torque_Nm" and motor is not None:
        raise r.error("demand.motor_speed_rpm", "only used with a torque_Nm demand")
    if motor is not None and motor.optional:
        raise r.error("demand.motor_speed_rpm.optional", "part of the demand: it cannot be optional")
    speed_filter = DEFAULT_SPEED_FILTER_S
    if "speed_filter_s" in demand:
        if kind != "speed_mps":
            raise r.error("demand.speed_filter_s", "only used with a speed_mps demand")
        speed_filter = r.number(demand["speed_filter_s"], "demand.speed_filter_s", low=0, high=60)

    vehicle = {k: r.number(v, f"vehicle.{k}", low=0, low_open=k not in ("aux_power_W", "regen_power_max_W"))
               for k, v in data.get("vehicle", {}).items()}
    if vehicle and kind not in ("speed_mps", "torque_Nm"):
        raise r.error("vehicle", f"the vehicle model is only used with a speed_mps or torque_Nm demand, not {kind}")
    if vehicle.get("drivetrain_efficiency", 0.5) > 1:
        raise r.error("vehicle.drivetrain_efficiency", f"expected a number in (0, 1], found "
                                                      f"{vehicle['drivetrain_efficiency']:g}")

    ambient: dict[str, float | Ref] = {}
    for key, value in data.get("ambient", {}).items():
        ambient[key] = (r.number(value, f"ambient.{key}", low=-60, high=120) if not isinstance(value, dict)
                        else r.ref(value, f"ambient.{key}"))
    compare = {key: r.ref(value, f"compare.{key}") for key, value in data.get("compare", {}).items()}

    recorded_pack: dict[str, float] = {}
    for key, value in data.get("recorded_pack", {}).items():
        recorded_pack[key] = (r.integer(value, f"recorded_pack.{key}", low=1) if key == "series_cells"
                              else r.number(value, f"recorded_pack.{key}", low=0, low_open=True))

    head = data.get("replay", {})
    pack = r.string(head.get("pack", "assb60-192s2p"), "replay.pack")
    pack = _check_pack(pack, source, r)
    initial_soc = r.number(head["initial_soc"], "replay.initial_soc", low=0, high=1) if "initial_soc" in head \
        else None
    if initial_soc is None and "soc" not in compare:
        raise r.error("replay.initial_soc", "missing: give the initial SOC (0..1), or map the recorded SOC as "
                                            "[compare] soc to start where the recording starts")
    initial_temp = (r.number(head["initial_temp_C"], "replay.initial_temp_C", low=-60, high=120)
                    if "initial_temp_C" in head else None)
    seed = r.integer(head.get("seed", 0), "replay.seed", low=0)
    name = r.string(head["name"], "replay.name") if "name" in head else None

    checks_table = data.get("checks", {})
    checks = Checks(
        max_gap_s=(r.number(checks_table["max_gap_s"], "checks.max_gap_s", low=0, low_open=True, infinite=True)
                   if "max_gap_s" in checks_table else None),
        allow_incomplete_log=r.boolean(checks_table.get("allow_incomplete_log", False), "checks.allow_incomplete_log"),
        max_decode_failure_fraction=r.number(checks_table.get("max_decode_failure_fraction", 0.0),
                                             "checks.max_decode_failure_fraction", low=0, high=1))

    mapping = ReplayMapping(source, kind, demand_ref, motor, speed_filter, vehicle, ambient, compare, recorded_pack,
                            (), checks, pack, initial_soc, initial_temp, seed, name)
    tolerances = tuple(_tolerance(r, quantity, value, mapping) for quantity, value in data.get("tolerance", {}).items())
    return ReplayMapping(**{**{f.name: getattr(mapping, f.name) for f in fields(mapping)}, "tolerances": tolerances})


def _check_pack(pack: str, source: str, r: _Reader) -> str:
    """A preset name, or a pack TOML (relative to the mapping file); loaded once here so a bad one fails now."""
    from bms import ParameterError, load_pack
    from bms.params import preset_names

    beside = Path(source).parent / pack
    if pack not in preset_names() and not Path(pack).is_absolute() and beside.exists():
        pack = str(beside)
    try:
        load_pack(pack)
    except ParameterError as exc:
        hint = f" ({exc.hint})" if getattr(exc, "hint", None) else ""
        raise r.error("replay.pack", f"expected a pack preset ({', '.join(preset_names())}) or a pack TOML file, "
                                     f"found {pack!r}{hint}") from exc
    return pack


def recorded_quantities(mapping: ReplayMapping) -> set[str]:
    """What the recording holds (directly or as a product) for comparison: compared keys, derived ones."""
    have = set(mapping.compare)
    if mapping.demand_kind in ("current_A", "power_W"):
        have.add(mapping.demand_kind)
    if "current_A" in have and "pack_voltage_V" in have:
        have.add("power_W")
    if "pack_voltage_V" in have and "series_cells" in mapping.recorded_pack:
        have.add("cell_voltage_V")
    if "power_W" in have:
        have.add("energy_kWh")
    if "current_A" in have:
        have.add("charge_Ah")
    if "soc" in have:
        have.add("delta_soc")
    have.add("time_limited_s")
    return have


_NEEDS = {"cell_voltage_V": "[compare] pack_voltage_V and [recorded_pack] series_cells",
          "energy_kWh": "a recorded power: a power_W demand, [compare] power_W, or a current and pack_voltage_V",
          "power_W": "a power_W demand, [compare] power_W, or a current and [compare] pack_voltage_V",
          "charge_Ah": "a recorded current: a current_A demand or [compare] current_A",
          "current_A": "a current_A demand or [compare] current_A", "delta_soc": "[compare] soc"}


def _tolerance(r: _Reader, quantity: str, value: Any, mapping: ReplayMapping) -> Tolerance:
    key = f"tolerance.{quantity}"
    allowed = TOLERANCES[quantity]
    r.table(value, key, allowed)
    if not value:
        raise r.error(key, f"expected at least one of {', '.join(allowed)}")
    if quantity not in recorded_quantities(mapping):
        raise r.error(key, f"nothing to compare: {quantity} needs {_NEEDS.get(quantity, f'[compare] {quantity}')}")
    limits = {k: r.number(v, f"{key}.{k}", low=0) for k, v in value.items()}
    return Tolerance(quantity, limits, r.where.line(key))
