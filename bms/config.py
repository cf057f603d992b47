"""The BMS configuration: thresholds, debounce times, timeouts, derating and balancing, validated.

Defaults are for the solid-state preset (``assb60`` cells, 192s2p); every value can be overridden in a
TOML file with a ``[bms]`` table (``load_config``) or with ``BmsConfig.replace``. Protection thresholds
come in three levels (``*_warning_*``, ``*_error_*``, ``*_emergency_*``; ``inf``/``-inf`` disables a
level) with a debounce triple ``*_debounce_s = [warning, error, emergency]``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ParameterError
from .params import (
    _line_of,
    _number,
    boolean,
    fraction,
    increasing_table,
    non_negative,
    positive,
    positive_int,
    unit_interval,
)

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["BmsConfig", "load_config", "THRESHOLD_GROUPS"]

INF = math.inf


# --- field checks (in the style of bms.params) -------------------------------------------------
def threshold(value):
    return "a number (inf or -inf disables the level)" if not (_number(value) and not math.isnan(value)) \
        else None


def debounce_triple(value):
    if not (isinstance(value, (list, tuple)) and len(value) == 3):
        return "a list of 3 debounce times in s (warning, error, emergency)"
    if not all(_number(v) and math.isfinite(v) and v >= 0 for v in value):
        return "3 finite debounce times >= 0 s (warning, error, emergency)"
    return None


def factor_table(value):
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        return "a list of at least 2 factors"
    if not all(_number(v) and 0 <= v <= 1 for v in value):
        return "a list of factors in [0, 1]"
    return None


def _c(default, check, doc=""):
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata={"check": check, "doc": doc})


# prefix, unit suffix, True when a larger value is more severe
THRESHOLD_GROUPS = (
    ("cell_overvoltage", "V", True), ("cell_undervoltage", "V", False), ("cell_imbalance", "V", True),
    ("discharge_overtemp", "C", True), ("discharge_undertemp", "C", False),
    ("charge_overtemp", "C", True), ("charge_undertemp", "C", False),
    ("link_mismatch", "V", True), ("pack_mismatch", "V", True),
    ("stack_pressure", "ratio", True), ("thermal_rise", "K_per_s", True),
)


@dataclass(frozen=True, kw_only=True)
class BmsConfig:
    """Every threshold, debounce time and timeout of the emulated BMS (units in the names)."""
    # --- task timing ---------------------------------------------------------------------------
    protection_period_s: float = _c(0.1, positive, "per-cell checks, limits and timers run this often")
    init_time_s: float = _c(0.3, non_negative, "self-checks in INIT before STANDBY")
    protection_clear_s: float = _c(1.0, non_negative, "a level falls after its condition is back inside "
                                   "(with hysteresis) this long")
    fault_recovery_s: float = _c(2.0, non_negative, "FAULT -> STANDBY this long after a recoverable fault")
    dtc_confirm_s: float = _c(5.0, non_negative, "a warning present this long confirms its DTC")
    event_log_size: int = _c(10000, positive_int, "oldest events are dropped beyond this")
    # --- cell voltage ---------------------------------------------------------------------------
    cell_overvoltage_warning_V: float = _c(4.22, threshold)
    cell_overvoltage_error_V: float = _c(4.25, threshold, "the cell's voltage_max_V")
    cell_overvoltage_emergency_V: float = _c(4.30, threshold, "sulfide electrolytes oxidise above ~4.3 V")
    cell_overvoltage_debounce_s: tuple = _c([1.0, 1.0, 0.2], debounce_triple)
    cell_undervoltage_warning_V: float = _c(2.80, threshold)
    cell_undervoltage_error_V: float = _c(2.50, threshold, "the cell's voltage_min_V")
    cell_undervoltage_emergency_V: float = _c(2.20, threshold)
    cell_undervoltage_debounce_s: tuple = _c([1.0, 2.0, 1.0], debounce_triple)
    cell_voltage_hysteresis_V: float = _c(0.02, non_negative)
    cell_imbalance_warning_V: float = _c(0.15, threshold)
    cell_imbalance_error_V: float = _c(0.50, threshold)
    cell_imbalance_emergency_V: float = _c(INF, threshold)
    cell_imbalance_debounce_s: tuple = _c([10.0, 10.0, 10.0], debounce_triple)
    cell_imbalance_soc_min: float = _c(0.10, unit_interval, "judged (at rest) only while the pack's SOC (the middle "
                                       "of its groups' estimates) lies in [min, max]: below 10 % the OCV is 4-13x "
                                       "steeper than at mid SOC, and a healthy pack's start spread (0.5 % SOC rms) "
                                       "rests 0.23 V apart at 4.5 %")
    cell_imbalance_soc_max: float = _c(1.0, unit_interval)
    cell_voltage_plausible_min_V: float = _c(0.5, non_negative, "below: open wire, not a cell voltage")
    cell_voltage_plausible_max_V: float = _c(4.9, positive, "above: sensor fault (the monitor reads to 5 V)")
    cell_voltage_sensor_debounce_s: float = _c(0.2, non_negative)
    sensor_stuck_current_delta_A: float = _c(20.0, positive, "a cell reading that does not move while the "
                                             "current moved this much is stuck")
    sensor_stuck_voltage_delta_V: float = _c(2.0, positive, "a current reading that does not move while the "
                                             "summed cell voltage moved this much is stuck")
    sensor_stuck_debounce_s: float = _c(2.0, non_negative)
    # --- temperature ----------------------------------------------------------------------------
    discharge_overtemp_warning_C: float = _c(55.0, threshold, "derate start")
    discharge_overtemp_error_C: float = _c(70.0, threshold, "operating max")
    discharge_overtemp_emergency_C: float = _c(80.0, threshold, "hard max")
    discharge_overtemp_debounce_s: tuple = _c([2.0, 2.0, 1.0], debounce_triple)
    discharge_undertemp_warning_C: float = _c(-20.0, threshold, "cell discharge min: derate")
    discharge_undertemp_error_C: float = _c(-25.0, threshold)
    discharge_undertemp_emergency_C: float = _c(-INF, threshold)
    discharge_undertemp_debounce_s: tuple = _c([2.0, 2.0, 2.0], debounce_triple)
    charge_overtemp_warning_C: float = _c(55.0, threshold)
    charge_overtemp_error_C: float = _c(65.0, threshold)
    charge_overtemp_emergency_C: float = _c(80.0, threshold)
    charge_overtemp_debounce_s: tuple = _c([2.0, 2.0, 1.0], debounce_triple)
    charge_undertemp_warning_C: float = _c(2.0, threshold, "stop the charge request before 0 degC")
    charge_undertemp_error_C: float = _c(0.0, threshold, "no charging below 0 degC (plating, dendrites)")
    charge_undertemp_emergency_C: float = _c(-10.0, threshold)
    charge_undertemp_debounce_s: tuple = _c([1.0, 1.0, 1.0], debounce_triple)
    temperature_hysteresis_K: float = _c(2.0, non_negative)
    temperature_charge_margin_K: float = _c(1.5, non_negative, "charge allowed only this far above "
                                            "the cell's temp_charge_min_C (sensor accuracy)")
    temperature_plausible_min_C: float = _c(-45.0, threshold, "an open sensor reads -50 degC")
    temperature_plausible_max_C: float = _c(190.0, threshold)
    temperature_sensor_debounce_s: float = _c(0.5, non_negative)
    temperature_disagreement_K: float = _c(20.0, positive, "from the median and from the module's other sensor")
    temperature_disagreement_debounce_s: float = _c(5.0, non_negative)
    temperature_jump_K_per_s: float = _c(50.0, positive, "a reading that moves faster between two samples "
                                         "is a sensor step (stuck, intermittent contact), not heat: the rise "
                                         "rate starts again from it")
    thermal_rise_warning_K_per_s: float = _c(0.5, threshold)
    thermal_rise_error_K_per_s: float = _c(1.0, threshold)
    thermal_rise_emergency_K_per_s: float = _c(2.0, threshold, "sulfide exotherm onset 160-200 degC")
    thermal_rise_debounce_s: tuple = _c([5.0, 3.0, 2.0], debounce_triple)
    thermal_rise_filter_s: float = _c(2.0, positive)
    core_temperature_lag_s: float = _c(108.0, positive, "without an estimator: core lags the surface "
                                       "(core heat capacity x core-surface resistance)")
    # --- current --------------------------------------------------------------------------------
    overcurrent_warning_margin: float = _c(0.05, non_negative, "fraction over the published limit")
    overcurrent_error_margin: float = _c(0.25, non_negative, "fraction over the published limit")
    overcurrent_offset_A: float = _c(5.0, non_negative, "added to both margins")
    overcurrent_hysteresis_A: float = _c(5.0, non_negative)
    overcurrent_debounce_s: tuple = _c([1.0, 2.0, 0.02], debounce_triple)
    overcurrent_limit_grace_s: float = _c(0.5, non_negative, "a falling limit is enforced with this lag")
    discharge_overcurrent_emergency_C_rate: float = _c(6.0, positive, "short circuit, whatever the limits")
    charge_overcurrent_emergency_C_rate: float = _c(4.0, positive)
    current_plausible_max_A: float = _c(2900.0, positive, "the shunt reads to 3000 A")
    current_offset_warning_A: float = _c(3.0, positive, "current read with every contactor open")
    current_offset_error_A: float = _c(20.0, positive)
    current_sensor_debounce_s: tuple = _c([2.0, 0.5, 0.5], debounce_triple)
    # while current flows: the current error the SOC filter's common correction implies (bms/firmware/
    # charge_checks.py); a healthy pack stays below 3 A, a 40 A offset reads 30 A and more
    current_plausibility_warning_A: float = _c(15.0, positive, "inf disables the check")
    current_plausibility_window_s: float = _c(300.0, positive, "the correction is averaged over this long")
    current_plausibility_settle_s: float = _c(600.0, non_negative,
                                              "no samples this long after the estimator starts (its SOC converges)")
    # a group's own correction against the median's, as a charge it loses (bms/firmware/charge_checks.py):
    # a healthy pack's groups stay below 1 A
    internal_short_warning_A: float = _c(2.5, positive, "inf disables the check")
    internal_short_tau_s: float = _c(900.0, positive, "time constant of the leak estimate's average")
    internal_short_rest_s: float = _c(300.0, non_negative, "judged only this long after the pack counts as rested "
                                      "(rest_time_s): capacity errors leak in with current, relaxation after it")
    # --- voltage plausibility ---------------------------------------------------------------------
    link_mismatch_warning_V: float = _c(10.0, threshold)
    link_mismatch_error_V: float = _c(25.0, threshold)
    link_mismatch_emergency_V: float = _c(INF, threshold)
    link_mismatch_debounce_s: tuple = _c([0.2, 0.5, 0.5], debounce_triple)
    pack_mismatch_warning_V: float = _c(10.0, threshold)
    pack_mismatch_error_V: float = _c(25.0, threshold)
    pack_mismatch_emergency_V: float = _c(INF, threshold)
    pack_mismatch_debounce_s: tuple = _c([1.0, 1.0, 1.0], debounce_triple)
    voltage_mismatch_hysteresis_V: float = _c(2.0, non_negative)
    # --- stack pressure: 1 + (a group's resistance over the pack mean, from a running regression of the
    #     low-passed voltage deviations on the low-passed current and the charge throughput, each moment
    #     normalised by its weights) / datasheet R0 of a group ----------------------------------------------
    stack_pressure_warning_ratio: float = _c(1.4, threshold, "healthy 192s2p packs stay below ~1.3 (UDDS "
                                             "0-40 degC 1.12-1.19, DC fast charge 25-35 degC 1.20-1.29)")
    stack_pressure_error_ratio: float = _c(2.5, threshold)
    stack_pressure_emergency_ratio: float = _c(INF, threshold)
    stack_pressure_debounce_s: tuple = _c([20.0, 20.0, 20.0], debounce_triple)
    stack_pressure_hysteresis: float = _c(0.05, non_negative)
    stack_pressure_window_s: float = _c(120.0, positive, "forgetting time of the regression")
    stack_pressure_filter_s: float = _c(10.0, positive, "low-pass before the regression: weights the "
                                        "interfacial (tau1) resistance in")
    stack_pressure_min_current_A: float = _c(10.0, positive, "rms current variation needed to judge")
    stack_pressure_soc_min: float = _c(0.10, unit_interval, "judged only while every group's SOC estimate lies in "
                                       "[min, max]: below 10 % the OCV is 4-13x steeper than at mid SOC and the "
                                       "deviations of groups of different capacity outgrow the throughput term "
                                       "(healthy groups read 1.45 in a US06 and 1.6 in a derated constant-power "
                                       "discharge near empty, 1.11-1.14 in a US06 at 10-15 %)")
    stack_pressure_soc_max: float = _c(1.0, unit_interval, "(a US06 from 99.5 % read at most 1.19); the "
                                       "regression restarts on each entry into the window")
    stack_pressure_derate: float = _c(0.5, unit_interval)
    # --- contactors and precharge -----------------------------------------------------------------
    precharge_fraction: float = _c(0.95, fraction, "of the pack voltage on the DC link")
    precharge_end_current_A: float = _c(2.0, positive, "and the precharge current fallen below this")
    precharge_min_tau: float = _c(3.0, non_negative, "the precharge relay stays closed at least this many "
                                  "nominal time constants (precharge resistor x DC-link capacitance), so a "
                                  "faulty link or current reading cannot end the precharge early")
    precharge_timeout_s: float = _c(1.0, positive)
    precharge_retry_delay_s: float = _c(2.0, non_negative, "lets the precharge resistor cool")
    precharge_max_attempts: int = _c(3, positive_int)
    contactor_close_time_s: float = _c(0.05, positive, "between the steps of a close or open sequence")
    contactor_feedback_timeout_s: float = _c(0.1, positive)
    weld_check_fraction: float = _c(0.5, fraction, "link rise with only main- closed means main+ welded")
    open_current_threshold_A: float = _c(10.0, positive, "a controlled open waits for this")
    open_delay_max_s: float = _c(1.0, non_negative, "then opens anyway")
    # --- communication ---------------------------------------------------------------------------
    vcu_timeout_s: float = _c(0.5, positive)
    charger_timeout_s: float = _c(1.0, positive)
    # --- limits ----------------------------------------------------------------------------------
    voltage_limit_margin_V: float = _c(0.02, non_negative, "the voltage limit keeps the cells this far inside "
                                       "the under/overvoltage warning thresholds")
    resistance_margin: float = _c(0.2, non_negative, "on the datasheet resistance in the voltage limit")
    limit_horizon_s: float = _c(10.0, positive, "resistance horizon of the voltage limit; SOP horizon used")
    discharge_derate_temp_C: tuple = _c([-25.0, -20.0, 0.0, 10.0, 55.0, 65.0, 70.0, 80.0], increasing_table)
    discharge_derate_factor: tuple = _c([0.0, 0.3, 0.6, 1.0, 1.0, 0.5, 0.2, 0.0], factor_table)
    charge_taper_floor_C_rate: float = _c(0.05, non_negative, "charge C-rate at full SOC")
    peak_recovery_s: float = _c(60.0, positive, "the peak-current budget refills in this time")
    temperature_sensor_derate: float = _c(0.5, unit_interval)
    cell_undervoltage_derate: float = _c(0.5, unit_interval)
    rest_current_A: float = _c(2.0, positive, "|current| below this is rest")
    rest_time_s: float = _c(60.0, non_negative, "rest this long re-anchors the voltage-based SOC")
    # --- charging --------------------------------------------------------------------------------
    charge_end_cell_V: float = _c(4.19, positive, "below the voltage limit's ceiling, which the CV phase "
                                  "approaches")
    charge_end_current_A: float = _c(6.0, positive)
    charge_end_debounce_s: float = _c(5.0, non_negative)
    # --- balancing -------------------------------------------------------------------------------
    balancing_enabled: bool = _c(True, boolean)
    balancing_period_s: float = _c(5.0, positive)
    balancing_start_soc: float = _c(0.003, unit_interval, "bleed groups this far above the lowest")
    balancing_stop_soc: float = _c(0.001, unit_interval)
    balancing_start_V: float = _c(0.003, non_negative, "without SOC: voltage above the lowest, at rest")
    balancing_stop_V: float = _c(0.001, non_negative)
    balancing_max_temp_C: float = _c(55.0, threshold)
    balancing_min_cell_V: float = _c(3.0, non_negative)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and f.type == "float":
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
                value = getattr(self, f.name)
            problem = f.metadata["check"](value)
            if problem:
                raise ParameterError(f"bms.{f.name}", problem, value)
        for key, expected, found, hint in self._cross_checks():
            raise ParameterError(f"bms.{key}", expected, found, hint=hint)

    def _cross_checks(self):
        for prefix, unit, up in THRESHOLD_GROUPS:
            names = [f"{prefix}_{level}_{unit}" for level in ("warning", "error", "emergency")]
            values = [getattr(self, n) for n in names]
            for (lo_name, lo), (hi_name, hi) in zip(zip(names, values), zip(names[1:], values[1:])):
                if (lo > hi) if up else (lo < hi):
                    relation = "<=" if up else ">="
                    yield (lo_name, f"{relation} {hi_name} ({hi})", lo,
                           f"{lo_name.rsplit('_', 2)[-2]} threshold beyond the {hi_name.rsplit('_', 2)[-2]} "
                           "threshold")
        if self.overcurrent_warning_margin > self.overcurrent_error_margin:
            yield ("overcurrent_warning_margin", f"<= overcurrent_error_margin ({self.overcurrent_error_margin})",
                   self.overcurrent_warning_margin, "warning threshold beyond the error threshold")
        if self.current_offset_warning_A > self.current_offset_error_A:
            yield ("current_offset_warning_A", f"<= current_offset_error_A ({self.current_offset_error_A})",
                   self.current_offset_warning_A, "warning threshold beyond the error threshold")
        if not self.cell_voltage_plausible_min_V < self.cell_voltage_plausible_max_V:
            yield ("cell_voltage_plausible_min_V", f"< cell_voltage_plausible_max_V "
                   f"({self.cell_voltage_plausible_max_V})", self.cell_voltage_plausible_min_V, None)
        if not self.temperature_plausible_min_C < self.temperature_plausible_max_C:
            yield ("temperature_plausible_min_C", f"< temperature_plausible_max_C "
                   f"({self.temperature_plausible_max_C})", self.temperature_plausible_min_C, None)
        if len(self.discharge_derate_factor) != len(self.discharge_derate_temp_C):
            yield ("discharge_derate_factor", f"{len(self.discharge_derate_temp_C)} values, one per "
                   "discharge_derate_temp_C", f"{len(self.discharge_derate_factor)} values", None)
        if self.balancing_stop_soc > self.balancing_start_soc:
            yield ("balancing_stop_soc", f"<= balancing_start_soc ({self.balancing_start_soc})",
                   self.balancing_stop_soc, None)
        if self.balancing_stop_V > self.balancing_start_V:
            yield ("balancing_stop_V", f"<= balancing_start_V ({self.balancing_start_V})", self.balancing_stop_V,
                   None)
        ceiling = self.cell_overvoltage_warning_V - self.voltage_limit_margin_V
        if not self.charge_end_cell_V < ceiling:
            yield ("charge_end_cell_V", f"< cell_overvoltage_warning_V - voltage_limit_margin_V ({ceiling:.4g})",
                   self.charge_end_cell_V, "the charge current tapers towards that ceiling and would never end")

    def replace(self, **changes) -> BmsConfig:
        """A validated copy with some values changed; unknown keys are named with the nearest known one."""
        _check_keys(changes, source=None, text=None)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str | None = None,
                  text: str | None = None) -> BmsConfig:
        """The defaults with ``values`` over them, validated; errors name ``source`` (and the line in
        ``text``, the TOML it came from, when given)."""
        return _from_mapping(dict(values), source, text)

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def docs(cls) -> dict[str, str]:
        return {f.name: f.metadata["doc"] for f in fields(cls)}


def _check_keys(values: Mapping, source, text) -> None:
    known = [f.name for f in fields(BmsConfig)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ParameterError(f"bms.{key}", "a known key", key, source=source, line=_line_of(text, "bms", key),
                                 hint=f"did you mean {close[0]!r}?" if close else "see BmsConfig for the keys")


def _from_mapping(values: Mapping, source, text) -> BmsConfig:
    _check_keys(values, source, text)
    try:
        return BmsConfig(**values)
    except ParameterError as exc:
        key = exc.key.split(".", 1)[1]
        raise ParameterError(exc.key, exc.expected, exc.found, source=source, line=_line_of(text, "bms", key),
                             hint=exc.hint) from None


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> BmsConfig:
    """The defaults, or a TOML file's ``[bms]`` table over them, with optional overrides; validated."""
    if path is None:
        return _from_mapping(dict(overrides or {}), None, None)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError("file", "a readable TOML file", str(path), hint=exc.strerror) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError("file", "valid TOML", str(exc), source=str(path)) from exc
    if "bms" not in data or not isinstance(data["bms"], dict):
        raise ParameterError("bms", "a [bms] table", sorted(data), source=str(path))
    return _from_mapping({**data["bms"], **(overrides or {})}, str(path), text)
