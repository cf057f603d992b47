"""Scenarios in TOML: pack, initial state, ambient, steps, a fault timeline and expectations.

Every problem is reported with the file, line and key, what was expected and what was found, and the
nearest valid name where a name was misspelt.
"""
from __future__ import annotations

import difflib
import math
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bms.errors import BmsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Scenario", "Step", "FaultAction", "Expectation", "ScenarioError", "load_scenario",
           "builtin_scenarios", "STEP_KINDS", "FAULT_KINDS", "EXPECT_KINDS", "SIGNALS"]


class ScenarioError(BmsError, ValueError):
    """A scenario file is malformed: names the file, line and key."""

    def __init__(self, source: str, line: int | None, key: str, message: str):
        self.source, self.line, self.key = source, line, key
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {key}: {message}")


# --- vocabulary ---------------------------------------------------------------------------------
STEP_KINDS = {
    "drive": {"cycle": str, "repeat": int, "vehicle": dict},
    "current": {"current_A": float, "duration_s": float},
    "power": {"power_W": float, "duration_s": float},
    "rest": {"duration_s": float},
    "charge": {"method": str, "target_soc": float, "max_current_A": float, "max_duration_s": float},
}
STEP_REQUIRED = {"drive": {"cycle"}, "current": {"current_A", "duration_s"}, "power": {"power_W", "duration_s"},
                 "rest": {"duration_s"}, "charge": {"target_soc"}}
CHARGE_METHODS = ("cccv", "dcfc")

FAULT_KINDS = {
    "sensor": {"sensor": str, "index": (int, str), "fault": str, "value": float},
    "internal_short": {"cell": int, "resistance_ohm": float},
    "stack_pressure": {"pressure_MPa": float, "cells": (str, list)},
    "contactor_weld": {"contactor": str},
    "coolant_loss": {"cooling_factor": float},
    "vcu_silence": {},
    "can_corrupt": {"what": str, "message": str},
    "bus_off": {},
}
FAULT_COMMON = {"at_s": float, "when": str, "clear_at_s": float, "name": str}
FAULT_REQUIRED = {"sensor": {"sensor", "fault"}, "internal_short": {"cell", "resistance_ohm"},
                  "stack_pressure": {"pressure_MPa"}, "contactor_weld": {"contactor"}, "can_corrupt": {"what"}}
SENSOR_FAULTS = ("open_wire", "stuck", "drift", "offset")

EXPECT_KINDS = {
    "bound": {"signal": str, "min": float, "max": float, "from_s": float, "to_s": float, "at_end": bool},
    "event": {"event": str, "after": str, "within_s": float, "level": str, "absent": bool},
    "accuracy": {"quantity": str, "rms_max": float, "max_abs": float, "after_s": float},
    "cycle_time": {"max_deviation_ms": float, "message": str},
}
EXPECT_COMMON = {"name": str}
EXPECT_REQUIRED = {"bound": {"signal"}, "event": {"event"}, "accuracy": {"quantity"}, "cycle_time": set()}

# signals recorded by the runner, usable in bounds, conditions and plots
SIGNALS = ("soc_true", "soc_estimated", "soc_3sigma", "cell_voltage_min_V", "cell_voltage_max_V",
           "temp_core_max_C", "temp_core_est_max_C", "temp_surface_max_C", "current_A", "current_demand_A",
           "discharge_limit_A", "charge_limit_A", "pack_voltage_V", "link_voltage_V", "speed_mps", "state",
           "contactors_closed", "fault_level", "derating")
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


# --- loading ------------------------------------------------------------------------------------
_TOP = {"scenario", "pack_overrides", "bms", "ambient", "step", "fault", "expect"}
_SCENARIO_KEYS = {"name": str, "description": str, "pack": str, "seed": int, "initial_soc": float, "dt_s": float,
                  "mode": str}
MODES = ("headless", "lockstep", "paced")
_AMBIENT_KEYS = {"temp_C": (float, list), "coolant_C": (float, list)}


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


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(sorted(options))}"


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
                                f"unknown key{_suggest(key, allowed)}")
    for key in sorted(required):
        if key not in values:
            raise ScenarioError(source, loc.line(table, None, index), f"{prefix}.{key}",
                                "missing (required for this kind)")
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
    kind = entry.get("kind")
    if kind is None:
        raise ScenarioError(source, loc.line(table, None, index), f"{table}[{index}].kind",
                            f"missing; expected one of {', '.join(kinds)}")
    if kind not in kinds:
        raise ScenarioError(source, loc.line(table, "kind", index), f"{table}[{index}].kind",
                            f"unknown kind {kind!r}{_suggest(str(kind), kinds)}")
    return kind


def parse_scenario(text: str, source: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ScenarioError(source, int(match.group(1)) if match else None, "file",
                            f"not valid TOML: {exc}") from exc
    loc = _Locator(text)
    for key in data:
        if key not in _TOP:
            raise ScenarioError(source, loc.line(key) or loc.line(None, key), key,
                                f"unknown table{_suggest(key, _TOP)}")
    head = _check_table(data.get("scenario", {}), _SCENARIO_KEYS, set(), source, loc, "scenario", 0, "scenario")
    ambient = _check_table(data.get("ambient", {}), _AMBIENT_KEYS, set(), source, loc, "ambient", 0, "ambient")
    for key in ambient:
        ambient[key] = _profile(ambient[key], source, loc.line("ambient", key), f"ambient.{key}")
    if not 0.0 <= head.get("initial_soc", 0.9) <= 1.0:
        raise ScenarioError(source, loc.line("scenario", "initial_soc"), "scenario.initial_soc",
                            f"expected a number in [0, 1], found {head['initial_soc']}")
    if head.get("mode", "lockstep") not in MODES:
        raise ScenarioError(source, loc.line("scenario", "mode"), "scenario.mode",
                            f"unknown mode {head['mode']!r}{_suggest(head['mode'], MODES)}")
    if head.get("dt_s", 0.01) <= 0:
        raise ScenarioError(source, loc.line("scenario", "dt_s"), "scenario.dt_s",
                            f"expected a tick > 0 s, found {head['dt_s']}")

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
                                    f"unknown method {options['method']!r}{_suggest(options['method'], CHARGE_METHODS)}")
            if not 0 < options["target_soc"] <= 1:
                raise ScenarioError(source, loc.line("step", "target_soc", n), f"step[{n}].target_soc",
                                    f"expected a number in (0, 1], found {options['target_soc']}")
        if kind == "drive":
            _check_cycle(options["cycle"], source, loc.line("step", "cycle", n), f"step[{n}].cycle")
        steps.append(Step(kind, options, loc.line("step", None, n)))
    if not steps:
        raise ScenarioError(source, None, "step", "a scenario needs at least one [[step]]")

    faults = []
    for n, entry in enumerate(data.get("fault", [])):
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
        if kind == "sensor" and options["fault"] not in SENSOR_FAULTS:
            raise ScenarioError(source, loc.line("fault", "fault", n), f"fault[{n}].fault",
                                f"unknown sensor fault {options['fault']!r}{_suggest(options['fault'], SENSOR_FAULTS)}")
        if kind == "sensor" and options["fault"] in ("stuck", "drift", "offset") and "value" not in options:
            raise ScenarioError(source, loc.line("fault", None, n), f"fault[{n}].value",
                                f"missing (required for a {options['fault']} fault)")
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
                                    f"unknown signal {options['signal']!r}{_suggest(options['signal'], SIGNALS)}")
            if "min" not in options and "max" not in options:
                raise ScenarioError(source, loc.line("expect", None, n), f"expect[{n}]", "a bound needs min or max")
        if kind == "accuracy" and options["quantity"] not in ACCURACY_QUANTITIES:
            raise ScenarioError(source, loc.line("expect", "quantity", n), f"expect[{n}].quantity",
                                f"unknown quantity {options['quantity']!r}"
                                f"{_suggest(options['quantity'], ACCURACY_QUANTITIES)}")
        expectations.append(Expectation(kind, options, name, loc.line("expect", None, n)))

    bms_overrides = data.get("bms", {})
    if not isinstance(bms_overrides, dict):
        raise ScenarioError(source, loc.line("bms"), "bms", "expected a table")
    return Scenario(name=head.get("name", Path(source).stem), source=source, description=head.get("description", ""),
                    pack=head.get("pack", "assb60-192s2p"), pack_overrides=data.get("pack_overrides", {}),
                    bms_overrides=bms_overrides, seed=head.get("seed", 0), mode=head.get("mode"),
                    initial_soc=head.get("initial_soc", 0.9), dt_s=head.get("dt_s", 0.01),
                    ambient_C=ambient.get("temp_C", 25.0), coolant_C=ambient.get("coolant_C"),
                    steps=tuple(steps), faults=tuple(faults), expectations=tuple(expectations))


def _check_cycle(cycle: str, source, line, key):
    from .cycles import builtin_cycles
    if cycle.lower() in builtin_cycles():
        return
    path = Path(cycle)
    if not path.is_absolute() and source and Path(source).exists():
        path = Path(source).parent / path
    if not path.exists():
        raise ScenarioError(source, line, key, f"no built-in cycle or file {cycle!r}{_suggest(cycle.lower(), builtin_cycles())}")


_CONDITION = re.compile(r"^\s*(\w+)\s*(<=|>=|<|>)\s*(-?[0-9.eE+-]+)\s*$")


def _check_condition(text: str, source, line, key):
    match = _CONDITION.match(text)
    if not match:
        raise ScenarioError(source, line, key, f"expected 'SIGNAL < NUMBER' (or <=, >, >=), found {text!r}")
    if match.group(1) not in SIGNALS:
        raise ScenarioError(source, line, key, f"unknown signal {match.group(1)!r}{_suggest(match.group(1), SIGNALS)}")


def parse_condition(text: str) -> tuple[str, str, float]:
    signal, op, value = _CONDITION.match(text).groups()
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
                            f"{_suggest(str(name_or_path), builtins)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, "file", f"cannot be read: {exc}") from exc
    return parse_scenario(text, str(path))
