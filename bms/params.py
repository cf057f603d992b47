"""Cell and pack parameters: typed, unit-named, validated, loaded from and saved to TOML.

The presets in ``bms/presets/*.toml`` are the single source of the default values.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from .errors import ParameterError
from .input_files import InputFileError, read_input_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CellParams", "PackParams", "SpreadParams", "SensorParams", "load_cell", "load_pack",
           "save_toml", "preset_names"]


MAX_PARAMETER_BYTES = 4 * 1024 * 1024
MAX_ACTIVATION_J_PER_MOL = 500_000.0

# --- field checks ------------------------------------------------------------------------------
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive(value):
    return "a finite number > 0" if not (_number(value) and math.isfinite(value) and value > 0) else None


def non_negative(value):
    return "a finite number >= 0" if not (_number(value) and math.isfinite(value) and value >= 0) else None


def _at_most(high: float, unit: str, why: str):
    """A check of a non-negative figure with an upper bound: the estimators' likelihoods and the cell spread
    draws overflow or go negative far below a float's range."""
    def check(value):
        if _number(value) and 0 <= value <= high:
            return None
        return f"a number in [0, {high:g}]{unit} ({why})"
    return check


spread_sigma = _at_most(0.5, "", "a relative 1-sigma spread; above it cells of negative capacity are drawn")
cell_voltage_error = _at_most(1.0, " V", "a cell monitor's noise, accuracy and resolution")
temperature_error = _at_most(50.0, " K", "a temperature sensor's noise, accuracy and resolution")
current_error = _at_most(1000.0, " A", "a current sensor's noise and resolution")
pack_voltage_error = _at_most(1000.0, " V", "a pack voltage sensor's noise, accuracy and resolution")


def activation_energy(value):
    # Arrhenius factors exp(Ea/R (1/T - 1/Tref)) overflow a float far above any electrochemical activation
    # energy (tens of kJ/mol): a typo in the unit must not crash a run when the pack cools
    return f"a number in [0, {MAX_ACTIVATION_J_PER_MOL:,.0f}] J/mol" if not (
        _number(value) and 0 <= value <= MAX_ACTIVATION_J_PER_MOL) else None


def finite(value):
    return "a finite number" if not (_number(value) and math.isfinite(value)) else None


def fraction(value):
    return "a number in (0, 1]" if not (_number(value) and 0 < value <= 1) else None


def unit_interval(value):
    return "a number in [0, 1]" if not (_number(value) and 0 <= value <= 1) else None


def positive_int(value):
    return "an integer >= 1" if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1) \
        else None


def boolean(value):
    return "true or false" if not isinstance(value, bool) else None


def _table(value, *, increasing: bool, min_len: int = 2):
    if not isinstance(value, (list, tuple)) or len(value) < min_len:
        return f"a list of at least {min_len} numbers"
    if not all(_number(v) and math.isfinite(v) for v in value):
        return "a list of finite numbers"
    if increasing and any(b <= a for a, b in zip(value, value[1:])):
        return "a strictly increasing list"
    return None


def increasing_table(value):
    return _table(value, increasing=True)


def any_table(value):
    return _table(value, increasing=False)


def non_negative_table(value):
    problem = _table(value, increasing=False)
    if problem is None and min(value) < 0:
        return "a list of numbers >= 0"
    return problem


def _p(check, doc=""):
    return field(metadata={"check": check, "doc": doc})


# --- parameter objects -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CellParams:
    """One cell: equivalent circuit (R0 + two RC pairs + Plett hysteresis), thermal, limits."""
    capacity_Ah: float = _p(positive)
    coulombic_efficiency: float = _p(fraction, "applied to charge current")
    voltage_min_V: float = _p(positive)
    voltage_max_V: float = _p(positive)
    voltage_nominal_V: float = _p(positive)
    ocv_V: tuple = _p(increasing_table, "OCV at uniformly spaced SOC from 0 to 1")
    entropic_mV_per_K: tuple = _p(any_table, "dU/dT at uniformly spaced SOC from 0 to 1")
    hysteresis_instant_V: float = _p(non_negative)
    hysteresis_dynamic_V: float = _p(non_negative)
    hysteresis_rate: float = _p(non_negative)
    r0_ohm: float = _p(positive)
    r0_activation_J_per_mol: float = _p(activation_energy)
    r1_ohm: float = _p(positive)
    tau1_s: float = _p(positive)
    r1_activation_J_per_mol: float = _p(activation_energy)
    r2_ohm: float = _p(positive)
    tau2_s: float = _p(positive)
    r2_activation_J_per_mol: float = _p(activation_energy)
    resistance_soc_curvature: float = _p(non_negative)
    stack_pressure_nominal_MPa: float = _p(positive)
    interfacial_pressure_exponent: float = _p(finite)
    mass_kg: float = _p(positive)
    heat_capacity_core_J_per_K: float = _p(positive)
    heat_capacity_surface_J_per_K: float = _p(positive)
    thermal_resistance_core_surface_K_per_W: float = _p(positive)
    thermal_resistance_surface_coolant_K_per_W: float = _p(positive)
    thermal_resistance_neighbour_K_per_W: float = _p(positive)
    charge_limit_temp_C: tuple = _p(increasing_table)
    charge_limit_C_rate: tuple = _p(non_negative_table)
    charge_taper_soc: float = _p(unit_interval)
    lithium_metal: bool = _p(boolean)
    ccd_25C_mA_per_cm2: float = _p(positive)
    ccd_activation_J_per_mol: float = _p(activation_energy)
    ccd_safety_factor: float = _p(fraction)
    electrode_area_cm2: float = _p(positive)
    discharge_continuous_C_rate: float = _p(positive)
    discharge_peak_C_rate: float = _p(positive)
    discharge_peak_duration_s: float = _p(positive)
    temp_discharge_min_C: float = _p(finite)
    temp_charge_min_C: float = _p(finite)
    temp_derate_start_C: float = _p(finite)
    temp_operating_max_C: float = _p(finite)
    temp_hard_max_C: float = _p(finite)
    temp_abuse_warning_C: float = _p(finite)

    def _cross_checks(self):
        if not self.voltage_min_V < self.voltage_nominal_V < self.voltage_max_V:
            yield "voltage_nominal_V", "voltage_min_V < voltage_nominal_V < voltage_max_V", \
                (self.voltage_min_V, self.voltage_nominal_V, self.voltage_max_V)
        if len(self.charge_limit_C_rate) != len(self.charge_limit_temp_C):
            yield "charge_limit_C_rate", f"{len(self.charge_limit_temp_C)} values, one per " \
                "charge_limit_temp_C", f"{len(self.charge_limit_C_rate)} values"
        if not (self.temp_derate_start_C <= self.temp_operating_max_C <= self.temp_hard_max_C
                <= self.temp_abuse_warning_C):
            yield "temp_operating_max_C", "derate start <= operating max <= hard max <= abuse warning", \
                (self.temp_derate_start_C, self.temp_operating_max_C, self.temp_hard_max_C,
                 self.temp_abuse_warning_C)
        if self.discharge_peak_C_rate < self.discharge_continuous_C_rate:
            yield "discharge_peak_C_rate", ">= discharge_continuous_C_rate", self.discharge_peak_C_rate


@dataclass(frozen=True, kw_only=True)
class SpreadParams:
    """Cell-to-cell manufacturing spread (1 sigma), drawn per cell from the run's generator."""
    capacity_rel_sigma: float = _p(spread_sigma)
    resistance_rel_sigma: float = _p(spread_sigma)
    initial_soc_sigma: float = _p(spread_sigma)


@dataclass(frozen=True, kw_only=True)
class SensorParams:
    """What the BMS's measurement chain adds to the truth."""
    cell_voltage_noise_V: float = _p(cell_voltage_error)
    cell_voltage_accuracy_V: float = _p(cell_voltage_error)
    cell_voltage_lsb_V: float = _p(cell_voltage_error)
    cell_voltage_period_s: float = _p(positive)
    temperature_sensors_per_module: int = _p(positive_int)
    temperature_noise_K: float = _p(temperature_error)
    temperature_accuracy_K: float = _p(temperature_error)
    temperature_lsb_K: float = _p(temperature_error)
    temperature_period_s: float = _p(positive)
    current_noise_A: float = _p(current_error)
    current_offset_A: float = _p(finite)
    current_gain_error: float = _p(finite)
    current_lsb_A: float = _p(current_error)
    current_period_s: float = _p(positive)
    pack_voltage_noise_V: float = _p(pack_voltage_error)
    pack_voltage_accuracy_V: float = _p(pack_voltage_error)
    pack_voltage_lsb_V: float = _p(pack_voltage_error)
    pack_voltage_period_s: float = _p(positive)


@dataclass(frozen=True, kw_only=True)
class PackParams:
    """A pack: cells in ``n_series`` groups of ``n_parallel``, contactor box, DC link, sensors."""
    cell: CellParams
    spread: SpreadParams
    sensors: SensorParams
    name: str = "custom"
    n_series: int = _p(positive_int)
    n_parallel: int = _p(positive_int)
    n_modules: int = _p(positive_int)
    link_capacitance_F: float = _p(positive)
    precharge_resistance_ohm: float = _p(positive)
    main_path_resistance_ohm: float = _p(positive)
    link_bleed_resistance_ohm: float = _p(positive)
    balancing_resistance_ohm: float = _p(positive)

    @property
    def n_cells(self) -> int:
        return self.n_series * self.n_parallel

    @property
    def groups_per_module(self) -> int:
        return self.n_series // self.n_modules

    @property
    def n_temperature_sensors(self) -> int:
        return self.n_modules * self.sensors.temperature_sensors_per_module

    @property
    def capacity_Ah(self) -> float:
        return self.cell.capacity_Ah * self.n_parallel

    def _cross_checks(self):
        if self.n_series % self.n_modules:
            yield "n_modules", f"a divisor of n_series ({self.n_series})", self.n_modules
        if self.n_cells > MAX_CELLS:  # the state arrays are per cell: a typo of n_series must not fill the memory
            yield "n_series", f"n_series x n_parallel <= {MAX_CELLS:,} cells", self.n_cells
        if self.n_temperature_sensors > MAX_CELLS:
            yield "n_modules", f"n_modules x sensors.temperature_sensors_per_module <= {MAX_CELLS:,}", \
                self.n_temperature_sensors

    def replace(self, **changes) -> PackParams:
        """A copy with changes; nested tables as dicts: ``replace(cell={"capacity_Ah": 55})``."""
        return _build_pack(_pack_to_dict(self), changes, source=None, text=None)

    def to_dict(self) -> dict:
        return _pack_to_dict(self)


# --- building, validation, TOML ----------------------------------------------------------------
_SECTIONS = {"cell": CellParams, "spread": SpreadParams, "sensors": SensorParams}
MAX_CELLS = 100_000   # ten times the largest vehicle packs (about 7,000 cylindrical cells)
_PACK_KEYS = [f.name for f in fields(PackParams) if f.name not in (*_SECTIONS, "name")]


def _line_of(text: str | None, section: str, key: str | None) -> int | None:
    """Line (1-based) of ``key`` inside ``[section]`` of a TOML text, for error messages."""
    if not text:
        return None
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
            if key is None and current == section:
                return number
            continue
        if key is not None and current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


def _error(section, key, expected, found, source, text, hint=None):
    line = _line_of(text, section, key)
    return ParameterError(f"{section}.{key}" if key else section, expected, found, source=source, line=line,
                          hint=hint)


def _build(cls, section: str, values: Mapping, source, text):
    known = [f.name for f in fields(cls) if "check" in f.metadata]
    unknown = [k for k in values if k not in known]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, known, n=1)
        raise _error(section, key, "a known key", key, source, text,
                     hint=f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}")
    kwargs = {}
    for f in fields(cls):
        if "check" not in f.metadata:
            continue
        if f.name not in values:
            raise _error(section, f.name, "a value", "nothing", source, text,
                         hint=f"missing key {f.name!r} in [{section}]")
        value = values[f.name]
        if isinstance(value, int) and not isinstance(value, bool) and f.type == "float":
            value = float(value)
        problem = f.metadata["check"](value)
        if problem:
            raise _error(section, f.name, problem, value, source, text)
        kwargs[f.name] = tuple(float(v) for v in value) if isinstance(value, list | tuple) else value
    return kwargs


def _cross_validate(obj, section, source, text):
    for key, expected, found in obj._cross_checks():
        raise _error(section, key, expected, found, source, text)
    return obj


def _merge(base: dict, changes: Mapping) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _build_pack(data: Mapping, changes: Mapping, source, text) -> PackParams:
    data = _merge(dict(data), changes)
    unknown = [k for k in data if k not in ("pack", *_SECTIONS)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], ["pack", *_SECTIONS], n=1)
        raise ParameterError(unknown[0], "one of the tables [pack], [cell], [spread], [sensors]", unknown[0],
                             source=source, hint=f"did you mean [{close[0]}]?" if close else None)
    for section, values in data.items():
        if not isinstance(values, Mapping):
            raise _error(section, None, f"a [{section}] table", values, source, text)
    pack = dict(data.get("pack", {}))
    name = pack.pop("name", "custom")
    cell_values = _resolve_cell(pack.pop("cell", None), data.get("cell", {}), source, text)
    cell = _cross_validate(CellParams(**_build(CellParams, "cell", cell_values, source, text)), "cell",
                           source, text)
    spread = SpreadParams(**_build(SpreadParams, "spread", data.get("spread", {}), source, text))
    sensors = SensorParams(**_build(SensorParams, "sensors", data.get("sensors", {}), source, text))
    pack_fields = _build(PackParams, "pack", pack, source, text)
    return _cross_validate(PackParams(cell=cell, spread=spread, sensors=sensors, name=name, **pack_fields),
                           "pack", source, text)


def _resolve_cell(preset, overrides: Mapping, source, text) -> dict:
    if preset is None:
        return dict(overrides)
    if not isinstance(preset, str):
        raise _error("pack", "cell", "the name of a cell preset", preset, source, text)
    try:
        base = _read_preset(preset, kind="cell")["cell"]
    except ParameterError as exc:
        if exc.key != "preset":
            raise
        raise _error("pack", "cell", exc.expected, preset, source, text, hint=exc.hint) from None
    return {**base, **overrides}


def _plain(obj) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def _pack_to_dict(params: PackParams) -> dict:
    pack = {"name": params.name, **{k: getattr(params, k) for k in _PACK_KEYS}}
    return {"pack": pack, "cell": _plain(params.cell), "spread": _plain(params.spread),
            "sensors": _plain(params.sensors)}


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("bms.presets").iterdir() if p.name.endswith(".toml"))


def _read_text(path_or_name: str | Path) -> tuple[str, str]:
    path = Path(path_or_name)
    if path.suffix == ".toml" or path.exists():
        try:
            return read_input_text(path, what="parameter file", max_bytes=MAX_PARAMETER_BYTES), str(path)
        except InputFileError as exc:
            raise ParameterError("file", "a readable TOML file", str(path), hint=exc.reason) from None
    names = preset_names()
    if str(path_or_name) not in names:
        close = difflib.get_close_matches(str(path_or_name), names, n=1)
        raise ParameterError("preset", f"a TOML file or one of {names}", str(path_or_name),
                             hint=f"did you mean {close[0]!r}?" if close else None)
    resource = resources.files("bms.presets") / f"{path_or_name}.toml"
    return resource.read_text(encoding="utf-8"), f"preset {path_or_name}"


def _parse(text: str, source: str) -> dict:
    return copy.deepcopy(_parse_cached(text, source))


@functools.lru_cache(maxsize=32)
def _parse_cached(text: str, source: str) -> dict:
    """Keyed by the text itself: a preset read again (each member of a sweep) is parsed once per process."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError("file", "valid TOML", str(exc), source=source) from exc
    except RecursionError:  # tomllib recurses once per nesting level
        raise ParameterError("file", "valid TOML", "arrays or tables nested too deeply", source=source) from None


def _read_preset(name: str, kind: str) -> dict:
    text, source = _read_text(name)
    data = _parse(text, source)
    if kind not in data:
        raise ParameterError(kind, f"a [{kind}] table", sorted(data), source=source)
    return data


def load_cell(name_or_path: str | Path = "assb60", overrides: Mapping | None = None) -> CellParams:
    """A cell preset by name (``"assb60"``) or a TOML file with a ``[cell]`` table."""
    text, source = _read_text(name_or_path)
    values = {**_parse(text, source).get("cell", {}), **(overrides or {})}
    return _cross_validate(CellParams(**_build(CellParams, "cell", values, source, text)), "cell",
                           source, text)


def load_pack(name_or_path: str | Path = "assb60-192s2p", overrides: Mapping | None = None) -> PackParams:
    """A pack preset by name (``"assb60-192s2p"``) or a TOML file, with optional nested overrides."""
    text, source = _read_text(name_or_path)
    data = _parse(text, source)
    data.setdefault("pack", {}).setdefault("name", Path(str(name_or_path)).stem)
    return _build_pack(data, overrides or {}, source, text)


def save_toml(params: PackParams | CellParams, path: str | Path) -> Path:
    """Write fully expanded parameters; ``load_pack``/``load_cell`` read them back unchanged."""
    if isinstance(params, CellParams):
        data = {"cell": _plain(params)}
    else:
        data = _pack_to_dict(params)
    path = Path(path)
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path

