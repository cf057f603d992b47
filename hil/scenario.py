"""Scenarios in TOML: pack, initial state, ambient, steps, a fault timeline and expectations.

Every problem is reported with the file, line and key, what was expected and what was found, and the
nearest valid name where a name was misspelt.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bms.errors import BmsError
from bms.input_files import parse_toml, suggest

__all__ = ["Scenario", "Step", "FaultAction", "Expectation", "ScenarioError", "load_scenario",
           "builtin_scenarios", "STEP_KINDS", "FAULT_KINDS", "EXPECT_KINDS", "SIGNALS", "DIAG_KEYS"]


class ScenarioError(BmsError, ValueError):
    """A scenario file is malformed: names the file, line and key."""

    def __init__(self, source: str, line: int | None, key: str, message: str):
        self.source, self.line, self.key, self.detail = source, line, key, message
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {message}")


# --- vocabulary ---------------------------------------------------------------------------------
# kind -> key -> the type (or types) its value must have
TableSpec = dict[str, "type | tuple[type, ...]"]
STEP_KINDS: dict[str, TableSpec] = {
    "drive": {"cycle": str, "repeat": int, "vehicle": dict},
    "current": {"current_A": float, "duration_s": float},
    "power": {"power_W": float, "duration_s": float},
    "rest": {"duration_s": float},
    "charge": {"method": str, "target_soc": float, "max_current_A": float, "max_duration_s": float},
}
STEP_REQUIRED = {"drive": {"cycle"}, "current": {"current_A", "duration_s"}, "power": {"power_W", "duration_s"},
                 "rest": {"duration_s"}, "charge": {"target_soc"}}
CHARGE_METHODS = ("cccv", "dcfc")

FAULT_KINDS: dict[str, TableSpec] = {
    "sensor": {"sensor": str, "index": (int, str), "fault": str, "value": float},
    "internal_short": {"cell": int, "resistance_ohm": float},
    "stack_pressure": {"pressure_MPa": float, "cells": (str, list)},
    "contactor_weld": {"contactor": str},
    "coolant_loss": {"cooling_factor": float},
    "vcu_silence": {},
    "can_corrupt": {"what": str},            # the VCU's frames: "counter" or "crc" fails the BMS's checks
    "bus_off": {"recovery_s": float},       # off the bus this long, then back; without: the bus is gone
    "isotp": {"fault": str, "index": int, "delay_s": float, "side": str},
    "uds_pending": {"duration_s": float, "interval_s": float, "service": int},
}
FAULT_COMMON: TableSpec = {"at_s": float, "when": str, "clear_at_s": float, "name": str}
FAULT_REQUIRED = {"sensor": {"sensor", "fault"}, "internal_short": {"cell", "resistance_ohm"},
                  "stack_pressure": {"pressure_MPa"}, "contactor_weld": {"contactor"}, "can_corrupt": {"what"},
                  "isotp": {"fault"}}
SENSOR_FAULTS = ("open_wire", "stuck", "drift", "offset")
CORRUPTIONS = ("counter", "crc")
ISOTP_FAULTS = ("drop_cf", "reorder_cf", "wrong_sn", "late_fc")
ISOTP_SIDES = ("ecu", "tester")

EXPECT_KINDS = {
    "bound": {"signal": str, "min": float, "max": float, "from_s": float, "to_s": float, "at_end": bool},
    "event": {"event": str, "after": str, "within_s": float, "level": str, "absent": bool},
    "accuracy": {"quantity": str, "rms_max": float, "max_abs": float, "after_s": float},
    "cycle_time": {"max_deviation_ms": float, "message": str},
    "dtc": {"dtc": str, "status": str, "after": str, "within_cycles": int, "within_s": float, "absent": bool},
    # a safety property of hil.properties (what the testing kit checks; its counterexamples carry them)
    "property": {"property": str, "tolerance_A": float, "grace_s": float, "reaction_s": float, "open_delay_s": float,
                 "margin": float, "bound_if_unpublished": float},
}
EXPECT_COMMON = {"name": str}
EXPECT_REQUIRED = {"bound": {"signal"}, "event": {"event"}, "accuracy": {"quantity"}, "cycle_time": set(),
                   "dtc": {"dtc", "status"}, "property": {"property"}}
DTC_STATUSES = ("test_failed", "test_failed_this_operation_cycle", "pending", "confirmed",
                "test_not_completed_since_last_clear", "test_failed_since_last_clear",
                "test_not_completed_this_operation_cycle", "warning_indicator_requested", "cleared")

# [[diag]]: the scenario's diagnostic tester (hil.diag_tester), one UDS request per entry
DIAG_KEYS = {"at_s": float, "request": str, "name": str, "session": str, "level": int, "key": str, "mask": int,
             "did": int, "group": int, "reset_type": int, "routine": int, "control": int, "data": str,
             "payload": str}
DIAG_NEEDS = {"read_did": {"did"}, "routine": {"routine"}, "raw": {"payload"}}
DIAG_INT_MAX = {"did": 0xFFFF, "routine": 0xFFFF, "group": 0xFFFFFF, "level": 0xFF, "mask": 0xFF, "reset_type": 0xFF,
                "control": 0xFF}

# signals recorded by the runner, usable in bounds, conditions and plots
SIGNALS = ("soc_true", "soc_estimated", "soc_3sigma", "cell_voltage_min_V", "cell_voltage_max_V",
           "temp_core_max_C", "temp_core_est_max_C", "temp_surface_max_C", "current_A", "current_demand_A",
           "discharge_limit_A", "charge_limit_A", "pack_voltage_V", "link_voltage_V", "speed_mps", "state",
           "contactors_closed", "fault_level", "derating", "temp_min_C")
ACCURACY_QUANTITIES = ("soc", "core_temp")


@dataclass(frozen=True)
class Step:
    kind: str
    options: dict
    line: int | None = None


@dataclass(frozen=True)
class FaultAction:
    kind: str
    options: dict
    at_s: float | None = None
    when: str | None = None        # a condition on a recorded signal: "soc_true < 0.5"
    clear_at_s: float | None = None
    name: str = ""
    line: int | None = None


@dataclass(frozen=True)
class Expectation:
    kind: str
    options: dict
    name: str
    line: int | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str
    description: str = ""
    pack: str = "assb60-192s2p"
    pack_overrides: dict = field(default_factory=dict)
    bms_overrides: dict = field(default_factory=dict)
    seed: int = 0
    mode: str | None = None             # the run mode this scenario needs (None: the caller's choice)
    initial_soc: float = 0.9
    dt_s: float = 0.01
    ambient_C: float | list = 25.0      # constant or [[time_s, temp_C], ...]
    coolant_C: float | list | None = None  # None: follows ambient
    steps: tuple[Step, ...] = ()
    faults: tuple[FaultAction, ...] = ()
    expectations: tuple[Expectation, ...] = ()
    firmware: Any = None                # bms.fil.FirmwareSpec of an external firmware (None: built-in)
    diag: tuple = ()                    # hil.diag_tester.DiagRequest, in file order
    frames: tuple = ()                  # hil.frames.FrameInjection ([[frame]]), in file order
    initial_temp_C: float | None = None  # the pack's start temperature (None: the ambient's at t = 0)


# --- loading ------------------------------------------------------------------------------------
_TOP = {"scenario", "pack_overrides", "bms", "ambient", "step", "fault", "expect", "diag", "firmware", "frame"}
_FRAME_KEYS = {"at_s": float, "message": str, "signals": dict, "e2e": str, "name": str}
_SCENARIO_KEYS = {"name": str, "description": str, "pack": str, "seed": int, "initial_soc": float, "dt_s": float,
                  "mode": str, "max_ticks": int}
DT_RANGE_S = (0.001, 0.1)          # as bms-emu replay --dt: the BMS task runs every tick
MAX_TICKS = 10_000_000             # 27.8 h at the default 10 ms tick (about 1 GB of memory); [scenario] max_ticks
MAX_TICKS_CEILING = 1_000_000_000  # ... raises it, up to this
MODES = ("headless", "lockstep", "paced")
_AMBIENT_KEYS = {"temp_C": (float, list), "coolant_C": (float, list)}


MAX_SCENARIO_BYTES = 8 * 1024 * 1024


class _Locator:
    """Finds the line of a key in a TOML text, also inside the n-th ``[[table]]``."""

    def __init__(self, text: str):
        self.lines = text.splitlines()

    def line(self, table: str | None, key: str | None = None, index: int = 0) -> int | None:
        seen, inside = -1, table is None
        for number, line in enumerate(self.lines, 1):
            header = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?", line)
            if header and not re.match(r"\s*\w+\s*=", line):
                name = header.group(1)
                if name == table:
                    seen += 1
                    inside = seen == index
                    if inside and key is None:
                        return number
                else:
                    inside = False
                continue
            if inside and key is not None and re.match(rf"\s*{re.escape(key)}\s*=", line):
                return number
        return None


def _check_type(value: Any, kind, source, line, key):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = False
    for k in kinds:
        if k is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ScenarioError(source, line, key, f"expected a finite number, found {value!r}")
            ok = True
        elif k is int and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        elif k not in (float, int) and isinstance(value, k):
            ok = True
    if not ok:
        names = " or ".join({float: "a number", int: "an integer", str: "a string", list: "a list",
                             dict: "a table", bool: "true or false"}[k] for k in kinds)
        raise ScenarioError(source, line, key, f"expected {names}, found {value!r}")
    return float(value) if kinds[0] is float and not isinstance(value, (list, str)) else value


def _check_table(values: dict, allowed: dict, required, source, loc, table, index, prefix):
    for key in values:
        if key not in allowed:
            raise ScenarioError(source, loc.line(table, key, index), f"{prefix}.{key}",
                                f"unknown key{suggest(key, allowed)}")
    missing = sorted(set(required) - set(values))
    if missing:  # all of them at once: a table written from scratch often lacks several
        more = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ScenarioError(source, loc.line(table, None, index), f"{prefix}.{missing[0]}",
                            f"missing (required for this kind){more}")
    return {key: _check_type(value, allowed[key], source, loc.line(table, key, index), f"{prefix}.{key}")
            for key, value in values.items()}


def _profile(value, source, line, key):
    if isinstance(value, list):
        if len(value) < 1 or not all(isinstance(p, list) and len(p) == 2 for p in value):
            raise ScenarioError(source, line, key, "expected a number or a list of [time_s, temp_C] pairs")
        times = [p[0] for p in value]
        for t, temp in value:
            _check_type(t, float, source, line, key)
            _check_type(temp, float, source, line, key)
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ScenarioError(source, line, key, "profile times must increase")
        return [[float(t), float(v)] for t, v in value]
    return value


def _kind(entry: dict, kinds, source, loc, table, index) -> str:
    if not isinstance(entry, dict):
        raise ScenarioError(source, loc.line(table, None, index), f"{table}[{index}]",
                            f"expected a [[{table}]] table, found {entry!r}")
    kind = entry.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ScenarioError(source, loc.line(table, "kind", index), f"{table}[{index}].kind",
                            f"expected a string, one of {', '.join(kinds)}; found {kind!r}")
    if kind is None:
        raise ScenarioError(source, loc.line(table, None, index), f"{table}[{index}].kind",
                            f"missing; expected one of {', '.join(kinds)}")
    if kind not in kinds:
        raise ScenarioError(source, loc.line(table, "kind", index), f"{table}[{index}].kind",
                            f"unknown kind {kind!r}{suggest(str(kind), kinds)}")
    return kind


def parse_scenario(text: str, source: str) -> Scenario:
    data = parse_toml(text, source, ScenarioError, "scenario")
    loc = _Locator(text)
    for key in data:
        if key not in _TOP:
            raise ScenarioError(source, loc.line(key) or loc.line(None, key), key,
                                f"unknown table{suggest(key, _TOP)}")
        is_array = key in ("step", "fault", "expect", "diag", "frame")
        if not isinstance(data[key], list if is_array else dict):
            raise ScenarioError(source, loc.line(key) or loc.line(None, key), key,
                                f"expected {f'[[{key}]] tables' if is_array else f'a [{key}] table'}, "
                                f"found {type(data[key]).__name__} {data[key]!r:.40}")
    head = _check_table(data.get("scenario", {}), _SCENARIO_KEYS, set(), source, loc, "scenario", 0, "scenario")
    ambient = _check_table(data.get("ambient", {}), _AMBIENT_KEYS, set(), source, loc, "ambient", 0, "ambient")
    for key in ambient:
        ambient[key] = _profile(ambient[key], source, loc.line("ambient", key), f"ambient.{key}")
    if not 0.0 <= head.get("initial_soc", 0.9) <= 1.0:
        raise ScenarioError(source, loc.line("scenario", "initial_soc"), "scenario.initial_soc",
                            f"expected a number in [0, 1], found {head['initial_soc']}")
    if head.get("mode", "lockstep") not in MODES:
        raise ScenarioError(source, loc.line("scenario", "mode"), "scenario.mode",
                            f"unknown mode {head['mode']!r}{suggest(head['mode'], MODES)}")
    if not DT_RANGE_S[0] <= head.get("dt_s", 0.01) <= DT_RANGE_S[1]:
        raise ScenarioError(source, loc.line("scenario", "dt_s"), "scenario.dt_s",
                            f"expected a tick of {DT_RANGE_S[0]:g} ... {DT_RANGE_S[1]:g} s, found {head['dt_s']:g}")
    if head.get("seed", 0) < 0:
        raise ScenarioError(source, loc.line("scenario", "seed"), "scenario.seed",
                            f"expected an integer >= 0 (the run's random seed), found {head['seed']}")
    if not 1 <= head.get("max_ticks", MAX_TICKS) <= MAX_TICKS_CEILING:
        raise ScenarioError(source, loc.line("scenario", "max_ticks"), "scenario.max_ticks",
                            f"expected 1 ... {MAX_TICKS_CEILING:,} ticks, found {head['max_ticks']:,}")

    steps = []
    for n, entry in enumerate(data.get("step", [])):
        kind = _kind(entry, STEP_KINDS, source, loc, "step", n)
        options = _check_table({k: v for k, v in entry.items() if k != "kind"}, STEP_KINDS[kind],
                               STEP_REQUIRED[kind], source, loc, "step", n, f"step[{n}]")
        for key in ("duration_s", "max_duration_s", "repeat"):
            if key in options and options[key] <= 0:
                raise ScenarioError(source, loc.line("step", key, n), f"step[{n}].{key}",
                                    f"expected a value > 0, found {options[key]}")
        if kind == "charge":
            if options.get("method", "cccv") not in CHARGE_METHODS:
                raise ScenarioError(source, loc.line("step", "method", n), f"step[{n}].method",
                                    f"unknown method {options['method']!r}"
                                    f"{suggest(options['method'], CHARGE_METHODS)}")
            if not 0 < options["target_soc"] <= 1:
                raise ScenarioError(source, loc.line("step", "target_soc", n), f"step[{n}].target_soc",
                                    f"expected a number in (0, 1], found {options['target_soc']}")
        if kind == "drive":
            _check_cycle(options["cycle"], source, loc.line("step", "cycle", n), f"step[{n}].cycle")
        if kind == "charge" and options.get("max_current_A", 1.0) <= 0:
            raise ScenarioError(source, loc.line("step", "max_current_A", n), f"step[{n}].max_current_A",
                                f"expected a current > 0 A, found {options['max_current_A']}")
        steps.append(Step(kind, options, loc.line("step", None, n)))
    if not steps:
        raise ScenarioError(source, None, "step", "a scenario needs at least one [[step]]")

    faults = []
    for n, entry in enumerate(data.get("fault", [])):
        kind, options, common = _fault_entry(entry, n, source, loc)
        faults.append(FaultAction(kind, options, common.get("at_s"), common.get("when"), common.get("clear_at_s"),
                                  common.get("name", f"fault[{n}]:{kind}"), loc.line("fault", None, n)))

    expectations = []
    for n, entry in enumerate(data.get("expect", [])):
        kind = _kind(entry, EXPECT_KINDS, source, loc, "expect", n)
        allowed = {**EXPECT_KINDS[kind], **EXPECT_COMMON}
        options = _check_table({k: v for k, v in entry.items() if k != "kind"}, allowed, EXPECT_REQUIRED[kind],
                               source, loc, "expect", n, f"expect[{n}]")
        name = options.pop("name", f"expect[{n}]:{kind}")
        if kind == "bound":
            if options["signal"] not in SIGNALS:
                raise ScenarioError(source, loc.line("expect", "signal", n), f"expect[{n}].signal",
                                    _unknown_signal(options['signal']))
            if "min" not in options and "max" not in options:
                raise ScenarioError(source, loc.line("expect", None, n), f"expect[{n}]", "a bound needs min or max")
        if kind == "dtc":
            _check_dtc_expectation(options, source, loc, n)
        if kind == "property":
            from .properties import PROPERTIES
            if options["property"] not in PROPERTIES:
                raise ScenarioError(source, loc.line("expect", "property", n), f"expect[{n}].property",
                                    f"unknown property {options['property']!r}"
                                    f"{suggest(options['property'], PROPERTIES)}")
        if kind == "accuracy" and options["quantity"] not in ACCURACY_QUANTITIES:
            raise ScenarioError(source, loc.line("expect", "quantity", n), f"expect[{n}].quantity",
                                f"unknown quantity {options['quantity']!r}"
                                f"{suggest(options['quantity'], ACCURACY_QUANTITIES)}")
        expectations.append(Expectation(kind, options, name, loc.line("expect", None, n)))

    firmware = _parse_firmware(data.get("firmware"), source, loc) if "firmware" in data else None
    diag = _diag_requests(data.get("diag", []), source, loc)
    frames = _frame_injections(data.get("frame", []), source, loc)
    from .scenario_checks import check_expectation_values
    for n, expectation in enumerate(expectations):
        check_expectation_values(expectation, n, faults, source, loc)
    for fault in faults:
        if fault.kind == "isotp" and fault.options.get("side") == "tester" and not diag:
            raise ScenarioError(source, fault.line, f"{fault.name}.side",
                                "a tester-side ISO-TP fault needs the scenario's tester: add [[diag]] requests")
    bms_overrides = data.get("bms", {})
    if not isinstance(bms_overrides, dict):
        raise ScenarioError(source, loc.line("bms"), "bms", "expected a table")
    scenario = Scenario(
                    name=head.get("name", Path(source).stem), source=source, description=head.get("description", ""),
                    pack=_pack_path(head.get("pack", "assb60-192s2p"), source),
                    pack_overrides=data.get("pack_overrides", {}),
                    bms_overrides=bms_overrides, seed=head.get("seed", 0), mode=head.get("mode"),
                    initial_soc=head.get("initial_soc", 0.9), dt_s=head.get("dt_s", 0.01),
                    ambient_C=ambient.get("temp_C", 25.0), coolant_C=ambient.get("coolant_C"),
                    steps=tuple(steps), faults=tuple(faults), expectations=tuple(expectations), diag=diag,
                    firmware=firmware, frames=frames)
    from .scenario_checks import check_scenario  # the whole scenario against its pack, cycles and budget
    check_scenario(scenario, loc, head.get("max_ticks", MAX_TICKS))
    return scenario


def _fault_entry(entry, n: int, source, loc) -> tuple[str, dict, dict]:
    """The kind, options and timing (``at_s``, ``when``, ``clear_at_s``, ``name``) of the n-th ``[[fault]]``,
    checked: keys, types, required keys and the values each kind takes."""
    kind = _kind(entry, FAULT_KINDS, source, loc, "fault", n)
    allowed = {**FAULT_KINDS[kind], **FAULT_COMMON}
    options = _check_table({k: v for k, v in entry.items() if k != "kind"}, allowed,
                           FAULT_REQUIRED.get(kind, set()), source, loc, "fault", n, f"fault[{n}]")
    common = {k: options.pop(k) for k in list(options) if k in FAULT_COMMON}
    if ("at_s" in common) == ("when" in common):
        raise ScenarioError(source, loc.line("fault", None, n), f"fault[{n}]",
                            "give exactly one of at_s (a time) or when (a condition)")
    if "when" in common:
        _check_condition(common["when"], source, loc.line("fault", "when", n), f"fault[{n}].when")
    for key in ("at_s", "clear_at_s"):
        if common.get(key, 0.0) < 0:
            raise ScenarioError(source, loc.line("fault", key, n), f"fault[{n}].{key}",
                                f"expected a time >= 0 s, found {common[key]}")
    if "clear_at_s" in common and common["clear_at_s"] <= common.get("at_s", -1.0):
        raise ScenarioError(source, loc.line("fault", "clear_at_s", n), f"fault[{n}].clear_at_s",
                            f"expected a time after at_s = {common['at_s']} s, found {common['clear_at_s']}")
    if kind == "can_corrupt" and options["what"] not in CORRUPTIONS:
        raise ScenarioError(source, loc.line("fault", "what", n), f"fault[{n}].what",
                            f"unknown corruption {options['what']!r}{suggest(options['what'], CORRUPTIONS)}")
    if kind == "sensor" and options["fault"] not in SENSOR_FAULTS:
        raise ScenarioError(source, loc.line("fault", "fault", n), f"fault[{n}].fault",
                            f"unknown sensor fault {options['fault']!r}{suggest(options['fault'], SENSOR_FAULTS)}")
    if kind == "isotp":
        for key, names in (("fault", ISOTP_FAULTS), ("side", ISOTP_SIDES)):
            if key in options and options[key] not in names:
                raise ScenarioError(source, loc.line("fault", key, n), f"fault[{n}].{key}",
                                    f"unknown {key} {options[key]!r}{suggest(str(options[key]), names)}")
        if options.get("index", 1) < 1 or options.get("delay_s", 1.0) <= 0:
            raise ScenarioError(source, loc.line("fault", None, n), f"fault[{n}]",
                                "index must be >= 1 (the consecutive frame's number) and delay_s > 0")
    if kind == "uds_pending" and (options.get("duration_s", 1.0) <= 0 or options.get("interval_s", 1.0) <= 0
                                  or not 0 <= options.get("service", 0) <= 0xFF):
        raise ScenarioError(source, loc.line("fault", None, n), f"fault[{n}]",
                            "duration_s and interval_s must be > 0, service a service ID 0..0xFF")
    if kind == "bus_off" and not 0 < options.get("recovery_s", 1.0) < math.inf:
        raise ScenarioError(source, loc.line("fault", "recovery_s", n), f"fault[{n}].recovery_s",
                            f"expected a time > 0 s, found {options['recovery_s']}")
    if kind == "sensor" and options["fault"] in ("stuck", "drift", "offset") and "value" not in options:
        raise ScenarioError(source, loc.line("fault", None, n), f"fault[{n}].value",
                            f"missing (required for a {options['fault']} fault)")
    return kind, options, common


def _check_dtc_expectation(options: dict, source, loc, n: int) -> None:
    from bms.diag import parse_dtc
    from bms.faults import Protection
    dtc = options["dtc"]
    if dtc not in Protection.__members__:
        try:
            parse_dtc(dtc)
        except (ValueError, IndexError):
            raise ScenarioError(source, loc.line("expect", "dtc", n), f"expect[{n}].dtc",
                                f"expected a protection name (e.g. CELL_OVERVOLTAGE) or a DTC (P1A00-17, 0x1A0017), "
                                f"found {dtc!r}{suggest(dtc, Protection.__members__)}") from None
    if options["status"] not in DTC_STATUSES:
        raise ScenarioError(source, loc.line("expect", "status", n), f"expect[{n}].status",
                            f"unknown status {options['status']!r}{suggest(options['status'], DTC_STATUSES)}")
    if options.get("within_cycles", 0) < 0 or options.get("within_s", 1.0) <= 0:
        raise ScenarioError(source, loc.line("expect", None, n), f"expect[{n}]",
                            "within_cycles must be >= 0 and within_s > 0")


def _diag_requests(entries, source, loc) -> tuple:
    from .diag_tester import DIAG_REQUESTS, DiagRequest
    if not isinstance(entries, list):
        raise ScenarioError(source, loc.line("diag"), "diag", "expected [[diag]] tables")
    out = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ScenarioError(source, loc.line("diag", None, n), f"diag[{n}]", "expected a table")
        options = _check_table(entry, DIAG_KEYS, {"at_s", "request"}, source, loc, "diag", n, f"diag[{n}]")
        request = options.pop("request")
        if request not in DIAG_REQUESTS:
            raise ScenarioError(source, loc.line("diag", "request", n), f"diag[{n}].request",
                                f"unknown request {request!r}{suggest(request, DIAG_REQUESTS)}")
        for key in sorted(DIAG_NEEDS.get(request, ())):
            if key not in options:
                raise ScenarioError(source, loc.line("diag", None, n), f"diag[{n}].{key}",
                                    f"missing (required for request = {request!r})")
        if options.get("session", "extended") not in ("default", "extended"):
            raise ScenarioError(source, loc.line("diag", "session", n), f"diag[{n}].session",
                                f"expected default or extended, found {options['session']!r}")
        for key in ("payload", "key", "data"):
            if key in options:
                try:
                    if not bytes.fromhex(options[key]) and key == "payload":
                        raise ValueError
                except ValueError:
                    raise ScenarioError(source, loc.line("diag", key, n), f"diag[{n}].{key}", "expected "
                                        f"hexadecimal bytes such as '22F190', found {options[key]!r}") from None
        for key, high in DIAG_INT_MAX.items():
            if key in options and not 0 <= options[key] <= high:
                raise ScenarioError(source, loc.line("diag", key, n), f"diag[{n}].{key}",
                                    f"expected 0 ... 0x{high:X}, found {options[key]:#x}")
        if options["at_s"] < 0:
            raise ScenarioError(source, loc.line("diag", "at_s", n), f"diag[{n}].at_s",
                                f"expected a time >= 0 s, found {options['at_s']}")
        at_s = options.pop("at_s")
        name = options.pop("name", f"diag[{n}]:{request}")
        out.append(DiagRequest(at_s, request, options, name, loc.line("diag", None, n)))
    return tuple(out)


def _frame_injections(entries, source, loc) -> tuple:
    """``[[frame]]``: a message of the built-in DBC by signal names, sent at ``at_s`` (lockstep and paced runs)."""
    if not entries:
        return ()
    from bms.can import Codec

    from .frames import E2E_CHOICES, FrameInjection, field_overflow
    codec = Codec()
    out = []
    for n, entry in enumerate(entries):
        where = f"frame[{n}]"
        if not isinstance(entry, dict):
            raise ScenarioError(source, loc.line("frame", None, n), where, "expected a table")
        options = _check_table(entry, _FRAME_KEYS, {"at_s", "message"}, source, loc, "frame", n, where)
        name = options["message"]
        if name not in codec.messages:
            raise ScenarioError(source, loc.line("frame", "message", n), f"{where}.message",
                                f"no message {name!r} in {codec.path}{suggest(name, codec.messages)}")
        message = codec[name]
        if not (math.isfinite(options["at_s"]) and options["at_s"] >= 0):
            raise ScenarioError(source, loc.line("frame", "at_s", n), f"{where}.at_s",
                                f"expected a time >= 0 s, found {options['at_s']}")
        e2e = options.get("e2e", "valid")
        if e2e not in E2E_CHOICES:
            raise ScenarioError(source, loc.line("frame", "e2e", n), f"{where}.e2e",
                                f"unknown choice {e2e!r}{suggest(e2e, E2E_CHOICES, list_all=False)}; expected one of "
                                f"{', '.join(E2E_CHOICES)}")
        if "e2e" in options and message.e2e is None:
            raise ScenarioError(source, loc.line("frame", "e2e", n), f"{where}.e2e",
                                f"{name} carries no alive counter and CRC")
        signals = options.get("signals", {})
        own = (message.e2e.counter_signal, message.e2e.crc_signal) if message.e2e is not None else ()
        for signal, value in signals.items():
            if signal not in message.signals:
                raise ScenarioError(source, loc.line("frame", None, n), f"{where}.signals.{signal}",
                                    f"no signal {signal!r} in {name}{suggest(signal, message.signals)}")
            if signal in own:
                raise ScenarioError(source, loc.line("frame", None, n), f"{where}.signals.{signal}",
                                    "the alive counter and CRC are set by e2e = \"valid\" | \"wrong_counter\" | "
                                    "\"wrong_crc\", not by value")
            line = loc.line("frame", "signals", n) or loc.line("frame", None, n)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ScenarioError(source, line, f"{where}.signals.{signal}",
                                    f"expected a finite number, found {value!r}")
            # sent as asked where the field holds it, inside the DBC's range or not (a bad value the BMS counts)
            why = field_overflow(message, signal, value)
            if why:
                raise ScenarioError(source, line, f"{where}.signals.{signal}", why)
        out.append(FrameInjection(options["at_s"], name, dict(signals), e2e, options.get("name", f"{where}:{name}"),
                                  loc.line("frame", None, n)))
    return tuple(out)


_FIRMWARE_KEYS: dict = {"role": str, "kind": str, "path": str, "config": str, "timeout_s": float, "dbc": str,
                  "mapping": dict, "signals": dict, "differential": dict}
_DIFFERENTIAL_KEYS: dict = {"contactor_s": float, "soc": float, "limit_A": float, "fault_s": float}
FIRMWARE_ROLES = ("bms", "vcu")
FIRMWARE_SIGNALS = ("state", "ready", "soc_pct", "discharge_limit_A", "charge_limit_A", "fault", "soc_3sigma_pct",
                    "dtc_count")


def _parse_firmware(table, source, loc):
    """The ``[firmware]`` table: which firmware sits in which slot (paths resolved beside the scenario)."""
    from bms.fil.loader import KINDS, FirmwareSpec
    if not isinstance(table, dict):
        raise ScenarioError(source, loc.line("firmware"), "firmware", "expected a table")
    values = _check_table(table, _FIRMWARE_KEYS, {"role", "kind"}, source, loc, "firmware", 0, "firmware")
    line = loc.line("firmware")
    for key, options in (("role", FIRMWARE_ROLES), ("kind", KINDS)):
        if values[key] not in options:
            raise ScenarioError(source, loc.line("firmware", key), f"firmware.{key}",
                                f"unknown {key} {values[key]!r}{suggest(values[key], options)}")
    kind = values["kind"]
    if kind != "builtin" and not values.get("path"):
        raise ScenarioError(source, line, "firmware.path", f"missing (required for kind = {kind!r})")
    if kind == "fmu" and values["role"] != "vcu":
        raise ScenarioError(source, loc.line("firmware", "kind"), "firmware.kind",
                            "an FMU goes into the VCU slot (role = 'vcu')")
    if values.get("timeout_s", 5.0) <= 0:
        raise ScenarioError(source, loc.line("firmware", "timeout_s"), "firmware.timeout_s",
                            f"expected a deadline > 0 s, found {values['timeout_s']}")
    here = Path(source).parent if source and Path(source).exists() else Path.cwd()

    def beside(text: str) -> str:
        path = Path(text).expanduser()
        return str(path if path.is_absolute() else here / path)

    for key in ("path", "dbc"):
        if values.get(key):
            if key == "path" and kind == "process":  # a command line: its program beside the scenario if there
                first, _, rest = values[key].partition(" ")
                program = beside(first) if (here / first).exists() else first
                values[key] = f"{program} {rest}".strip()
                continue
            values[key] = beside(values[key])
            if not Path(values[key]).is_file():
                what = "not a regular file (a directory, a device or a pipe)" if Path(values[key]).exists() \
                    else "no such file"
                raise ScenarioError(source, loc.line("firmware", key), f"firmware.{key}", f"{what}: {values[key]}")
    signals = values.pop("signals", {})
    for name, ref in signals.items():
        if name not in FIRMWARE_SIGNALS:
            raise ScenarioError(source, loc.line("firmware.signals", name), f"firmware.signals.{name}",
                                f"unknown quantity{suggest(name, FIRMWARE_SIGNALS)}")
        if name != "ready" and not (isinstance(ref, str) and ref.count(".") == 1):
            raise ScenarioError(source, loc.line("firmware.signals", name), f"firmware.signals.{name}",
                                f"expected 'Message.Signal' of the firmware's DBC, found {ref!r}")
    if signals and not values.get("dbc"):
        raise ScenarioError(source, line, "firmware.dbc", "missing (firmware.signals name signals of its DBC)")
    differential = values.pop("differential", None)
    if differential is not None:
        if values["role"] != "bms" or kind == "builtin":
            raise ScenarioError(source, loc.line("firmware.differential"), "firmware.differential",
                                "a differential run puts an external BMS firmware beside the built-in one "
                                "(role = 'bms', kind = library or process)")
        differential = _check_table(differential, _DIFFERENTIAL_KEYS, set(), source, loc, "firmware.differential",
                                    0, "firmware.differential")
    mapping = values.pop("mapping", {})
    return FirmwareSpec(**values, mapping=mapping, signals=signals, differential=differential)


def load_firmware(path: str | Path):
    """The ``[firmware]`` table of a TOML file (a file of that table alone, or a scenario): a team's firmware
    described once (its DBC and signals too) and put under any scenario (``bms-emu run --firmware FILE.toml``,
    the kit's ``--bms-firmware``). Paths resolve beside the file."""
    path = Path(path)
    text = _read_text(path, "firmware file")
    data = parse_toml(text, str(path), ScenarioError, "firmware file")
    if "firmware" not in data:
        raise ScenarioError(str(path), None, "firmware", f"no [firmware] table{suggest('firmware', list(data))}")
    return _parse_firmware(data["firmware"], str(path), _Locator(text))


def beside(text: str, source: str) -> Path:
    """A path a scenario names: absolute as written, else beside the scenario file (never the working folder)."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    return (Path(source).parent if source else Path.cwd()) / path


def cycle_path(cycle: str, source: str) -> Path | None:
    """The CSV file a drive step's ``cycle`` names (None: a built-in cycle)."""
    from .cycles import builtin_cycles
    return None if cycle.lower() in builtin_cycles() else beside(cycle, source)


def _check_cycle(cycle: str, source, line, key):
    from .cycles import builtin_cycles
    path = cycle_path(cycle, source)
    if path is not None and not path.exists():
        raise ScenarioError(source, line, key, f"no built-in cycle or file {cycle!r} (a CSV file is looked for "
                            f"beside the scenario: {path}){suggest(cycle.lower(), builtin_cycles())}")


def _pack_path(pack: str, source: str) -> str:
    """A preset name as it is; a pack TOML file (``.toml`` or a path) beside the scenario."""
    if pack.endswith(".toml") or "/" in pack or "\\" in pack:
        return str(beside(pack, source))
    return pack


_CONDITION = re.compile(r"^\s*(\w+)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def _unknown_signal(name: str) -> str:
    hint = suggest(name, SIGNALS, list_all=False)
    return f"unknown signal {name!r}{hint}{' The' if hint else '; the'} recorded signals: {', '.join(SIGNALS)}"


def _check_condition(text: str, source, line, key):
    match = _CONDITION.match(text)
    if not match:
        raise ScenarioError(source, line, key, f"expected 'SIGNAL < NUMBER' (or <=, >, >=) with a finite number "
                            f"such as 0.5 or 1e-3, found {text!r}")
    if match.group(1) not in SIGNALS:
        raise ScenarioError(source, line, key, _unknown_signal(match.group(1)))


def parse_condition(text: str) -> tuple[str, str, float]:
    match = _CONDITION.match(text)
    if match is None:  # conditions are checked when the scenario is read; this is a caller's mistake
        raise ValueError(f"not a condition: {text!r}")
    signal, op, value = match.groups()
    return signal, op, float(value)


def builtin_scenarios() -> dict[str, str]:
    """Name → file name of the example scenarios shipped with the package."""
    folder = resources.files("hil") / "scenarios"
    return {p.name[:-5]: p.name for p in folder.iterdir() if p.name.endswith(".toml")}


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name or a TOML file."""
    path = Path(name_or_path)
    builtins = builtin_scenarios()
    if str(name_or_path) in builtins:
        resource = resources.files("hil") / "scenarios" / builtins[str(name_or_path)]
        return parse_scenario(resource.read_text(encoding="utf-8"), str(resource))
    if not path.exists():
        raise ScenarioError(str(path), None, "scenario", f"no such file or built-in scenario"
                            f"{suggest(str(name_or_path), builtins)}")
    return parse_scenario(_read_text(path, "scenario file"), str(path))


def _read_text(path: Path, what: str) -> str:
    """A scenario's (or firmware file's) text; a file that cannot be read as one is a ScenarioError."""
    from bms.input_files import InputFileError, read_input_text
    try:
        return read_input_text(path, what=what, max_bytes=MAX_SCENARIO_BYTES)
    except InputFileError as exc:
        raise ScenarioError(exc.path, None, "file", exc.reason) from None
