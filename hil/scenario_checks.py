"""A parsed scenario checked whole before its first tick, so no run fails hours in on what its file said.

What ``hil.scenario`` cannot see in one table alone: the pack (and its overrides) the faults aim at, the
BMS configuration, the drive cycles and the vehicle of each drive step, the triggers and windows of the
expectations, and a budget of ticks that keeps a run within time and memory.
"""
from __future__ import annotations

import math
from dataclasses import fields

from bms.errors import BmsError, ParameterError
from bms.input_files import suggest

from .scenario import (
    MAX_TICKS,
    MAX_TICKS_CEILING,
    Expectation,
    FaultAction,
    Scenario,
    ScenarioError,
    _fault_entry,
    _Locator,
    cycle_path,
)

__all__ = ["check_scenario", "check_fault", "check_expectation_values", "check_event_names", "check_diagnostics",
           "event_pattern_error", "TEMP_RANGE_C", "DIAGNOSTIC_FAULTS"]

DIAGNOSTIC_FAULTS = ("isotp", "uds_pending")   # faults of the built-in BMS's UDS server and its ISO-TP link
TEMP_RANGE_C = (-60.0, 120.0)   # what the emulator accepts for ambient and coolant (bms.emulator)
CONTACTORS = ("main_positive", "main_negative", "precharge")
SINGLE_CHANNELS = ("current", "pack_voltage", "link_voltage")
TRIGGERED = ("event", "dtc")    # expectations with an ``after`` trigger
# the first word of every event name a run records: the BMS's (hil.runner.event_name), the UDS server's and
# DTCs, the scenario's tester (uds:), [[frame]] injections, the live bench control, a firmware's published ones
EVENT_FAMILIES = ("state", "contactor", "fault", "precharge", "charge", "balancing", "dtc", "request", "comm",
                  "diag", "uds", "frame", "bench")


def check_scenario(scenario: Scenario, loc, max_ticks: int = MAX_TICKS) -> None:
    source = scenario.source
    params = _pack(scenario, loc)
    _bms_config(scenario, loc)
    _ambient(scenario, loc)
    for n, fault in enumerate(scenario.faults):
        _fault_target(fault, n, params, source, loc)
    if scenario.firmware is not None:
        _firmware(scenario.firmware, source, loc)
    planned_s = 0.0
    for n, step in enumerate(scenario.steps):
        planned_s += _step_duration_s(step, n, scenario, loc)
    _within_the_steps(scenario, planned_s, loc)
    ticks = planned_s / scenario.dt_s
    if ticks > max_ticks:
        hours = max_ticks * scenario.dt_s / 3600.0
        raise ScenarioError(source, loc.line("step", None, 0), "step",
                            f"the steps ask for {planned_s:,.0f} s of simulated time, {ticks:,.0f} ticks of dt_s = "
                            f"{scenario.dt_s:g} s: more than the {max_ticks:,} ticks ({hours:,.1f} h) a scenario may "
                            f"run (time and memory grow with the ticks; for a longer run set [scenario] max_ticks, "
                            f"up to {MAX_TICKS_CEILING:,})")


def _within_the_steps(scenario: Scenario, planned_s: float, loc) -> None:
    """A fault, a request or a window that starts after the last step never happens: refused, not silently
    skipped. ``planned_s`` counts charge steps with their time limit, so this is a bound that never refuses
    what a run could reach."""
    source, end = scenario.source, f"the end of the steps (t = {planned_s:g} s)"
    names = set()
    for n, fault in enumerate(scenario.faults):
        if fault.name in names:
            raise ScenarioError(source, loc.line("fault", "name", n) or fault.line, f"fault[{n}].name",
                                f"a second fault named {fault.name!r}: triggers name faults, so names are unique")
        names.add(fault.name)
        if fault.at_s is not None and fault.at_s >= planned_s:
            raise ScenarioError(source, loc.line("fault", "at_s", n), f"fault[{n}].at_s",
                                f"at {fault.at_s:g} s, at or after {end}: it would never be injected")
    for n, request in enumerate(scenario.diag):
        if request.at_s >= planned_s:
            raise ScenarioError(source, loc.line("diag", "at_s", n), f"diag[{n}].at_s",
                                f"at {request.at_s:g} s, at or after {end}: it would never be sent")
    for n, e in enumerate(scenario.expectations):
        for key in ("from_s", "after_s"):
            if e.options.get(key, 0.0) >= planned_s:
                raise ScenarioError(source, loc.line("expect", key, n), f"expect[{n}].{key}",
                                    f"{e.options[key]:g} s, at or after {end}: no sample could ever be checked")


def _pack(scenario: Scenario, loc):
    from bms.params import load_pack
    source, overrides = scenario.source, scenario.pack_overrides
    try:
        return load_pack(scenario.pack, overrides=overrides)
    except ParameterError as exc:
        section, _, key = exc.key.partition(".")
        if exc.key in ("file", "preset") and exc.source is None:
            raise ScenarioError(source, loc.line("scenario", "pack"), "scenario.pack", str(exc)) from None
        if section in overrides and (not key or isinstance(overrides[section], dict) and key in overrides[section]):
            line = (loc.line(f"pack_overrides.{section}", key) or loc.line("pack_overrides", section)
                    or loc.line("pack_overrides"))
            raise ScenarioError(source, line, f"pack_overrides.{exc.key}", f"expected {exc.expected}, found "
                                f"{exc.found!r}" + (f" ({exc.hint})" if exc.hint else "")) from None
        if overrides:   # a cross-check the overrides broke, against the pack's own values
            raise ScenarioError(source, loc.line("pack_overrides"), "pack_overrides",
                                f"the pack with these overrides is not valid: {exc}") from None
        raise


def _bms_config(scenario: Scenario, loc) -> None:
    from bms.config import load_config
    if not scenario.bms_overrides:
        return
    try:
        load_config(overrides=scenario.bms_overrides)
    except ParameterError as exc:
        key = exc.key.removeprefix("bms.")
        raise ScenarioError(scenario.source, loc.line("bms", key) or loc.line("bms"), f"bms.{key}",
                            f"expected {exc.expected}, found {exc.found!r}" + (f" ({exc.hint})" if exc.hint else "")
                            ) from None


def _ambient(scenario: Scenario, loc) -> None:
    low, high = TEMP_RANGE_C
    for key, spec in (("temp_C", scenario.ambient_C), ("coolant_C", scenario.coolant_C)):
        values = [] if spec is None else [p[1] for p in spec] if isinstance(spec, list) else [spec]
        for value in values:
            if not low < value < high:
                raise ScenarioError(scenario.source, loc.line("ambient", key), f"ambient.{key}",
                                    f"expected a temperature in ({low:g}, {high:g}) degC, found {value:g}")


def check_fault(kind: str, options: dict, params) -> dict:
    """A fault injected outside a scenario file (``Bench.inject``), checked as a ``[[fault]]`` table is for the pack
    ``params``: keys, types, values and the cell, channel or contactor it names. Returns the options as the
    scenario parser converts them; raises ``ScenarioError`` (source ``inject``, key ``fault[0].<option>``)."""
    loc = _Locator("")
    kind, checked, _ = _fault_entry({"kind": kind, **options, "at_s": 0.0}, 0, "inject", loc)
    _fault_target(FaultAction(kind, checked, 0.0), 0, params, "inject", loc)
    return checked


def _fault_target(fault: FaultAction, n: int, params, source, loc) -> None:
    """The cell, sensor channel or contactor a fault names exists in the pack; its values are in range."""
    o, where = fault.options, f"fault[{n}]"

    def error(key, message):
        return ScenarioError(source, loc.line("fault", key, n) or fault.line, f"{where}.{key}", message)

    if fault.kind == "sensor":
        from bms.sensors import SENSOR_KINDS
        kind = o["sensor"]
        if kind not in SENSOR_KINDS:
            raise error("sensor", f"unknown sensor {kind!r}{suggest(kind, SENSOR_KINDS)}")
        counts = {"cell_voltage": params.n_series, "temperature": params.n_temperature_sensors,
                  "contactor_feedback": len(CONTACTORS), **dict.fromkeys(SINGLE_CHANNELS, 1)}
        index = o.get("index", 0)
        if kind == "contactor_feedback" and isinstance(index, str):
            if index not in CONTACTORS:
                raise error("index", f"unknown contactor {index!r}{suggest(index, CONTACTORS)}")
        elif not isinstance(index, int) or not 0 <= index < counts[kind]:
            raise error("index", f"expected a {kind} channel 0 ... {counts[kind] - 1} of pack {params.name} "
                                 f"({params.n_series}s{params.n_parallel}p, {params.n_temperature_sensors} temperature "
                                 f"sensors), found {index!r}")
    elif fault.kind == "internal_short":
        if not 0 <= o["cell"] < params.n_cells:
            raise error("cell", f"expected a cell 0 ... {params.n_cells - 1} of pack {params.name}, found {o['cell']}")
        if not o["resistance_ohm"] > 0:
            raise error("resistance_ohm", f"expected a resistance > 0 ohm, found {o['resistance_ohm']}")
    elif fault.kind == "stack_pressure":
        if not o["pressure_MPa"] > 0:
            raise error("pressure_MPa", f"expected a pressure > 0 MPa, found {o['pressure_MPa']}")
        cells = o.get("cells", "all")
        if cells != "all" and not (isinstance(cells, list) and cells and all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < params.n_cells for c in cells)):
            raise error("cells", f"expected \"all\" or a list of cells 0 ... {params.n_cells - 1}, found {cells!r}")
    elif fault.kind == "contactor_weld" and o["contactor"] not in CONTACTORS:
        raise error("contactor", f"unknown contactor {o['contactor']!r}{suggest(o['contactor'], CONTACTORS)}")
    elif fault.kind == "coolant_loss" and not 0 <= o.get("cooling_factor", 0.0) <= 1:
        raise error("cooling_factor", f"expected a factor in [0, 1] of the coolant's heat transfer, found "
                                      f"{o['cooling_factor']}")


def _firmware(spec, source, loc) -> None:
    """The firmware's program is there, its DBC reads and has the signals ``[firmware.signals]`` names."""
    import shlex
    import shutil
    if spec.kind == "process":
        try:
            program = shlex.split(spec.path)[0]
        except (ValueError, IndexError):
            raise ScenarioError(source, loc.line("firmware", "path"), "firmware.path",
                                f"expected a command line, found {spec.path!r}") from None
        if shutil.which(program) is None:
            raise ScenarioError(source, loc.line("firmware", "path"), "firmware.path",
                                f"no such program (or not executable): {program}")
    if spec.dbc and spec.signals:
        from bms.fil.view import FrameView
        try:
            FrameView(spec.dbc, spec.signals)
        except BmsError as exc:
            bad = [k for k in spec.signals if f"firmware.signals.{k})" in str(exc)]
            line = loc.line("firmware.signals", bad[0]) if bad else loc.line("firmware", "dbc")
            key = f"firmware.signals.{bad[0]}" if bad else "firmware.dbc"
            raise ScenarioError(source, line, key, str(exc)) from None


def _step_duration_s(step, n: int, scenario: Scenario, loc) -> float:
    """The simulated time a step asks for (a charge step: its time limit); a drive step's cycle is read and its
    vehicle checked here."""
    from .load import DEFAULT_CHARGE_DURATION_S
    o = step.options
    if step.kind == "drive":
        _vehicle(o.get("vehicle", {}), n, scenario.source, loc)
        cycle = _cycle(o["cycle"], n, scenario, loc)
        return cycle.repeated_duration_s(o.get("repeat", 1))
    key = "max_duration_s" if step.kind == "charge" else "duration_s"
    duration_s = o.get(key, DEFAULT_CHARGE_DURATION_S)
    if duration_s < scenario.dt_s:
        raise ScenarioError(scenario.source, loc.line("step", key, n), f"step[{n}].{key}",
                            f"{duration_s:g} s is shorter than one tick (dt_s = {scenario.dt_s:g} s)")
    return duration_s


def _cycle(name: str, n: int, scenario: Scenario, loc):
    from .cycles import load_cycle
    path = cycle_path(name, scenario.source)
    try:
        return load_cycle(name if path is None else path)
    except BmsError as exc:
        raise ScenarioError(scenario.source, loc.line("step", "cycle", n), f"step[{n}].cycle", str(exc)) from None


def _vehicle(values: dict, n: int, source, loc) -> None:
    from .vehicle import Vehicle
    known = [f.name for f in fields(Vehicle)]
    for key, value in values.items():
        where = (source, loc.line("step", "vehicle", n), f"step[{n}].vehicle.{key}")
        if key not in known:
            raise ScenarioError(*where, f"unknown key{suggest(key, known)}")
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            raise ScenarioError(*where, f"expected a finite number, found {value!r}")
        low, low_open, high = {"drivetrain_efficiency": (0.0, True, 1.0), "rotating_mass_factor": (1.0, False, 2.0),
                               "aux_power_W": (0.0, False, math.inf),
                               "regen_power_max_W": (0.0, False, math.inf)}.get(key, (0.0, True, math.inf))
        if value < low or (low_open and value == low) or value > high:
            bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
            raise ScenarioError(*where, f"expected a number {bound}, found {value!r}")


def check_expectation_values(e: Expectation, n: int, faults, source, loc) -> None:
    """Windows, limits and triggers of one expectation that can never hold are refused, not failed later."""
    o = e.options

    def error(key, message):
        return ScenarioError(source, loc.line("expect", key, n) or e.line, f"expect[{n}].{key}", message)

    for key in ("within_s", "max_deviation_ms"):
        if key in o and not o[key] > 0:
            raise error(key, f"expected a value > 0, found {o[key]}")
    for key in ("rms_max", "max_abs", "after_s", "from_s"):
        if key in o and not o[key] >= 0:
            raise error(key, f"expected a value >= 0, found {o[key]}")
    if e.kind == "bound" and o.get("min", -math.inf) > o.get("max", math.inf):
        raise error("max", f"expected max >= min = {o['min']:g}, found {o['max']:g}")
    if e.kind == "bound" and o.get("from_s", 0.0) > o.get("to_s", math.inf):
        raise error("to_s", f"expected to_s >= from_s = {o.get('from_s', 0.0):g}, found {o['to_s']:g}")
    if e.kind == "event" and o.get("level") is not None:
        from bms.faults import FaultLevel
        levels = [level.name for level in FaultLevel if level.name != "NONE"]
        if o["level"].upper() not in levels:
            raise error("level", f"unknown fault level {o['level']!r}{suggest(o['level'].upper(), levels)}")
    trigger = o.get("after", "start")
    fault_names = {f.name for f in faults} | {f"{f.name}:cleared" for f in faults if f.clear_at_s is not None}
    if e.kind in TRIGGERED and trigger in fault_names:
        raise error("after", f"{trigger!r} is a fault's name, and 'after' takes an event: the fault's "
                             f"injection is 'inject:{trigger}'")
    for key in _pattern_keys(e.kind):
        why = event_pattern_error(o.get(key, "start"), builtin_bms=False)
        if why:
            raise error(key, why)
    if e.kind in TRIGGERED and trigger.startswith("inject:"):
        names = sorted(fault_names)
        wanted = trigger[len("inject:"):]
        if wanted not in names:
            raise error("after", f"no fault named {wanted!r} in the scenario"
                                 + (suggest(wanted, names) if names else " (it has no [[fault]])"))
    if e.kind == "cycle_time" and "message" in o:
        from bms.can import load_dbc
        messages = [m.name for m in load_dbc().messages]
        if o["message"] not in messages:
            raise error("message", f"the BMS sends no message {o['message']!r}{suggest(o['message'], messages)}")


def _pattern_keys(kind: str) -> tuple[str, ...]:
    """The keys of an expectation that hold event patterns."""
    return ("event", "after") if kind == "event" else ("after",) if kind in TRIGGERED else ()


def event_pattern_error(pattern: str, *, builtin_bms: bool) -> str | None:
    """Why an event pattern (``event`` or ``after``) can match no event of a run, or None: a family no event has
    (``warning:*`` passed as absent); inside the families with fixed names, ``fault:PROTECTION:LEVEL`` and
    ``state:STATE`` (names of the built-in BMS, checked only with it: a firmware publishes its own) and
    ``contactor:NAME:open|closed`` (the plant's)."""
    from bms.controller import BmsState
    from bms.faults import FaultLevel, Protection

    family, _, rest = pattern.partition(":")
    if family not in (*EVENT_FAMILIES, "inject", "start", "") and not any(c in family for c in "*?["):
        return (f"no event family {family!r}{suggest(family, EVENT_FAMILIES)} (a trigger may also be "
                f"inject:NAME or start)")
    parts = rest.split(":") if rest else []
    fixed = [not any(c in part for c in "*?[") for part in parts]
    if family == "fault" and parts and fixed[0] and parts[0] != "latch":
        if len(parts) == 1:
            return f"a fault event is named fault:PROTECTION:LEVEL: {pattern + ':*'!r} matches it at any level"
        protections = [p.name for p in Protection]
        if builtin_bms and parts[0] not in protections:
            return f"the built-in BMS has no protection {parts[0]!r}{suggest(parts[0], protections)}"
        levels = [level.name for level in FaultLevel]
        if fixed[1] and parts[1] not in levels:
            return f"unknown fault level {parts[1]!r} in {pattern!r}{suggest(parts[1], levels)}"
    if family == "state" and builtin_bms and len(parts) == 1 and fixed[0]:
        states = [state.name for state in BmsState]
        if parts[0] not in states:
            return f"the built-in BMS has no state {parts[0]!r}{suggest(parts[0], states)}"
    if family == "contactor" and parts and fixed[0]:
        if parts[0] not in CONTACTORS:
            return f"no contactor {parts[0]!r}{suggest(parts[0], CONTACTORS)}"
        if len(parts) == 1 or (fixed[1] and parts[1] not in ("open", "closed")):
            return f"a contactor event is named contactor:NAME:open or contactor:NAME:closed, not {pattern!r}"
    return None


def check_event_names(scenario: Scenario, *, builtin_bms: bool) -> None:
    """The event patterns of the expectations against the BMS of the run (known only when it starts: a
    ``--firmware`` on the command line replaces the scenario's)."""
    for n, e in enumerate(scenario.expectations):
        for key in _pattern_keys(e.kind):
            why = event_pattern_error(e.options.get(key, "start"), builtin_bms=builtin_bms)
            if why:
                raise ScenarioError(scenario.source, e.line, f"expect[{n}].{key}", why)


def check_diagnostics(scenario: Scenario, *, builtin_bms: bool) -> None:
    """With a BMS firmware in the slot there is no UDS server (it is the built-in BMS's): ``[[diag]]`` requests,
    ``isotp`` and ``uds_pending`` faults and ``dtc`` expectations would have nothing to act on or to read."""
    if builtin_bms:
        return
    why = "needs the built-in BMS's UDS server; the BMS firmware in the slot has none"
    for n, request in enumerate(scenario.diag):
        raise ScenarioError(scenario.source, request.line, f"diag[{n}]",
                            f"a [[diag]] request ({request.request}) {why}")
    for n, fault in enumerate(scenario.faults):
        if fault.kind in DIAGNOSTIC_FAULTS:
            raise ScenarioError(scenario.source, fault.line, f"fault[{n}]", f"a {fault.kind} fault {why}")
    for n, e in enumerate(scenario.expectations):
        if e.kind == "dtc":
            raise ScenarioError(scenario.source, e.line, f"expect[{n}]", f"a dtc expectation {why}")
