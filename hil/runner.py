"""Runs a scenario: the emulated pack and BMS in the loop with a VCU, faults on a timeline, a recording,
expectations and reports. Modes: ``headless`` (no bus, fastest); ``lockstep`` and ``paced`` put the BMS's
CAN node and a CAN VCU on a python-can bus (see ``hil.can_loop``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bms import Drift, Offset, OpenWire, ParameterError, Stuck, load_config, load_pack
from bms.emulator import Emulator

from .expectations import Recording, Verdict, evaluate
from .load import LoadProgram
from .report import summarise, write_reports
from .scenario import SIGNALS, Scenario, ScenarioError, parse_condition
from .vcu import VcuModel, requested_current_A

__all__ = ["RunResult", "run_scenario", "RECORD_PERIOD_S"]

RECORD_PERIOD_S = 0.1
CAN_FAULTS = ("can_corrupt", "bus_off")
_min, _max = np.minimum.reduce, np.maximum.reduce
_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


@dataclass
class RunResult:
    scenario: Scenario
    recording: Recording
    verdicts: list[Verdict]
    summary: dict
    reports: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.summary["passed"]


def _temperature_source(spec):
    """``(constant, None)`` for a constant temperature, ``(None, f(t_s))`` for a [[time_s, temp_C], …]
    profile (its arrays built once, so the per-tick call is cheap)."""
    if not isinstance(spec, list):
        return float(spec), None
    times, temps = (np.asarray(a, dtype=float) for a in zip(*spec))
    interp = np.interp
    return None, lambda t_s: float(interp(t_s, times, temps))


def _start_temperature(spec) -> float:
    constant, profile = _temperature_source(spec)
    return constant if profile is None else profile(0.0)


class _FaultTimeline:
    """Applies each fault at its time or when its condition first holds, and clears it when told to."""

    def __init__(self, scenario: Scenario, emulator: Emulator, vcu, can=None):
        self.pending = list(scenario.faults)
        self.active: list[tuple[float, object]] = []
        self.emulator, self.vcu, self.can = emulator, vcu, can
        self.injections: dict[str, float] = {}
        self.cooling_factor = 1.0
        for fault in scenario.faults:
            if fault.kind in CAN_FAULTS and can is None:
                raise ScenarioError(scenario.source, fault.line, f"{fault.name}",
                                    "CAN faults need a bus: run in lockstep or paced mode (--mode lockstep)")

    def due(self, t_s: float, latest: dict[str, float]) -> None:
        for fault in list(self.pending):
            if fault.at_s is not None:
                fire = t_s >= fault.at_s - 1e-9
            else:
                signal, op, value = parse_condition(fault.when)
                fire = bool(_OPS[op](latest.get(signal, math.nan), value))
            if fire:
                self.pending.remove(fault)
                self._apply(fault, t_s, on=True)
                self.injections[fault.name] = t_s
                if fault.clear_at_s is not None:
                    self.active.append((fault.clear_at_s, fault))
        for clear_s, fault in list(self.active):
            if t_s >= clear_s - 1e-9:
                self.active.remove((clear_s, fault))
                self._apply(fault, t_s, on=False)
                self.injections[f"{fault.name}:cleared"] = t_s

    def _apply(self, fault, t_s: float, on: bool) -> None:
        e, o = self.emulator, fault.options
        if fault.kind == "sensor":
            index = o.get("index", 0)
            if not on:
                e.sensors.clear(o["sensor"], index)
                return
            kind = {"open_wire": OpenWire(), "stuck": Stuck(o.get("value", 0.0)),
                    "drift": Drift(o.get("value", 0.0)), "offset": Offset(o.get("value", 0.0))}[o["fault"]]
            e.sensors.inject(o["sensor"], index, kind, t_s=t_s)
        elif fault.kind == "internal_short":
            e.pack.set_internal_short(o["cell"], o["resistance_ohm"] if on else None)
        elif fault.kind == "stack_pressure":
            cells = o.get("cells", "all")
            target = slice(None) if cells == "all" else np.asarray(cells, dtype=int)
            nominal = e.pack.params.cell.stack_pressure_nominal_MPa
            e.pack.set_stack_pressure(o["pressure_MPa"] if on else nominal, target)
        elif fault.kind == "contactor_weld":
            e.pack.weld_contactor(o["contactor"], on)
        elif fault.kind == "coolant_loss":
            self.cooling_factor = o.get("cooling_factor", 0.0) if on else 1.0
        elif fault.kind == "vcu_silence":
            self.vcu.silent = on
        elif fault.kind in CAN_FAULTS:
            self.can.fault(fault.kind, o, on, t_s)


class _Recorder:
    def __init__(self, n_max: int):
        self.n = 0
        self.time_s = np.zeros(n_max)
        self.signals = {name: np.zeros(n_max) for name in SIGNALS}

    def add(self, t_s: float, values: dict[str, float]) -> None:
        if self.n == self.time_s.size:  # grow (charge steps may run longer than planned)
            self.time_s = np.concatenate([self.time_s, np.zeros(self.time_s.size)])
            self.signals = {k: np.concatenate([v, np.zeros(v.size)]) for k, v in self.signals.items()}
        self.time_s[self.n] = t_s
        for name, value in values.items():
            self.signals[name][self.n] = value
        self.n += 1

    def trimmed(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return self.time_s[:self.n].copy(), {k: v[:self.n].copy() for k, v in self.signals.items()}


def _snapshot(e: Emulator, demand_A: float, speed: float) -> dict[str, float]:
    pack, est, bms = e.pack, e.estimator, e.bms
    s = pack.state
    limits = bms.limits
    soc_est = est.pack_soc if est is not None else math.nan
    sigma = float(np.mean(est.group_soc_3sigma)) if est is not None else math.nan
    core_est = float(_max(est.core_temp_C)) if est is not None else math.nan  # ufunc reductions: what
    closed = pack.contactors_closed                                           # .max() computes, less overhead
    level = max((int(d.level) for d in bms.dtcs if d.status != "cleared"), default=0)
    v = s.group_voltage_V
    return {
        "soc_true": pack.soc, "soc_estimated": soc_est, "soc_3sigma": sigma,
        "cell_voltage_min_V": float(_min(v)), "cell_voltage_max_V": float(_max(v)),
        "temp_core_max_C": float(_max(s.temp_core_C)), "temp_core_est_max_C": core_est,
        "temp_surface_max_C": float(_max(s.temp_surface_C)), "current_A": pack.current_A,
        "current_demand_A": demand_A, "discharge_limit_A": limits.discharge_current_A,
        "charge_limit_A": limits.charge_current_A, "pack_voltage_V": pack.pack_voltage_V,
        "link_voltage_V": pack.link_voltage_V, "speed_mps": speed, "state": int(bms.state),
        "contactors_closed": float(closed["main_positive"] and closed["main_negative"]),
        "fault_level": float(level),
        "derating": float(bms.warning_flags != 0),  # a protection at warning level derates the limits
    }


def build_emulator(scenario: Scenario) -> Emulator:
    params = load_pack(scenario.pack, overrides=scenario.pack_overrides)
    config = None
    if scenario.bms_overrides:
        try:
            config = load_config(overrides=scenario.bms_overrides)
        except ParameterError as exc:
            raise ScenarioError(scenario.source, None, f"bms.{exc.key}", f"expected {exc.expected}, found "
                                f"{exc.found!r}" + (f" ({exc.hint})" if exc.hint else "")) from exc
    return Emulator(params, seed=scenario.seed, initial_soc=scenario.initial_soc,
                    temp_C=_start_temperature(scenario.ambient_C), dt_s=scenario.dt_s, config=config)


def run_scenario(scenario: Scenario, *, out_dir: str | Path | None = None, mode: str = "headless",
                 progress: bool = False, plots: bool = True, max_sim_s: float | None = None,
                 can_options: dict | None = None) -> RunResult:
    """Run ``scenario`` to the end of its steps (or ``max_sim_s``); write reports into ``out_dir``."""
    emulator = build_emulator(scenario)
    program = LoadProgram(scenario)
    dt = scenario.dt_s
    planned = program.planned_duration_s()
    if max_sim_s is not None:
        planned = min(planned, max_sim_s)
    can = None
    if mode != "headless":
        from .can_loop import CanLoop
        can = CanLoop(emulator, mode=mode, **(can_options or {}))
    vcu = can.vcu if can is not None else VcuModel(emulator.bms, period_s=0.01)
    faults = _FaultTimeline(scenario, emulator, vcu, can)
    record_every = max(1, int(round(RECORD_PERIOD_S / dt)))
    recorder = _Recorder(int(planned / dt / record_every) + 2)
    events: list[tuple[float, str, str]] = []
    seen_events = 0
    latest: dict[str, float] = {}
    complete, stop_reason = True, ""
    bar = _progress_bar(planned) if progress else None
    start = time.perf_counter()
    tick = 0
    # the per-tick path, kept lean: everything looked up once, the recording every record_every ticks
    pack, estimator = emulator.pack, emulator.estimator
    soc_source = (lambda: estimator.pack_soc) if estimator is not None else (lambda: pack.soc)
    next_demand = program.next_for
    coolant_C, coolant_at = _temperature_source(scenario.coolant_C if scenario.coolant_C is not None
                                                else scenario.ambient_C)
    vcu_tick = vcu.tick
    step = can.tick if can is not None else None
    emulator_tick = emulator.tick
    end_tick = None
    if max_sim_s is not None:  # the first tick with tick * dt >= max_sim_s - 1e-9, as a float comparison
        end_tick = max(0, int(math.ceil((max_sim_s - 1e-9) / dt)) - 2)
        while end_tick * dt < max_sim_s - 1e-9:
            end_tick += 1
    until_record = record_every  # ticks until the next recording
    try:
        while True:
            if tick == end_tick:
                break
            t = tick * dt
            demand = next_demand(soc_source)
            if demand is None:
                break
            if until_record == record_every and (faults.pending or faults.active):
                faults.due(t, latest)
            link_V = pack.link_voltage_V
            current = vcu_tick(t, demand, link_V)
            coolant = coolant_C if coolant_at is None else coolant_at(t)
            if step is None:
                emulator_tick(current, coolant_C=coolant, cooling_factor=faults.cooling_factor)
            else:
                step(current, coolant, faults.cooling_factor)
            tick += 1
            until_record -= 1
            if until_record == 0:
                until_record = record_every
                latest = _snapshot(emulator, requested_current_A(demand, link_V), demand.speed_mps)
                recorder.add(emulator.t_s, latest)
                seen_events = _collect_events(emulator, events, seen_events)
                if bar is not None and tick % (record_every * 50) == 0:
                    bar.update(emulator.t_s)
    except KeyboardInterrupt:
        complete, stop_reason = False, f"interrupted (Ctrl-C) at t = {tick * dt:.2f} s"
    except Exception as exc:  # a vanished adapter, a bus-off: keep what was recorded, say why
        if can is None or not can.is_stop_error(exc):
            raise
        complete, stop_reason = False, f"{exc} (at t = {tick * dt:.2f} s)"
    finally:
        if bar is not None:
            bar.close()
        cycle_times = can.close() if can is not None else None
    wall = time.perf_counter() - start
    _collect_events(emulator, events, seen_events)
    t_rec, signals = recorder.trimmed()
    recording = Recording(t_rec, signals, events, faults.injections, cycle_times, complete, stop_reason)
    verdicts = evaluate(scenario.expectations, recording)
    capacity_kWh = emulator.pack.params.capacity_Ah * emulator.pack.params.n_series * \
        emulator.pack.params.cell.voltage_nominal_V / 1000.0
    summary = summarise(recording, verdicts, scenario=scenario.name, dt_s=dt, wall_s=wall, capacity_kWh=capacity_kWh)
    summary["mode"] = mode
    reports = write_reports(Path(out_dir), recording, verdicts, summary, source=scenario.source, plots=plots) \
        if out_dir is not None else {}
    return RunResult(scenario, recording, verdicts, summary, reports)


def event_name(kind: str, detail: dict) -> str:
    """A BMS event as a name expectations can match: ``state:FAULT``, ``contactor:main_positive:open``,
    ``fault:cell_overtemp:ERROR``, ``precharge:complete`` …"""
    if kind == "state":
        return f"state:{detail.get('to')}"
    if kind == "contactor":
        return f"contactor:{detail.get('name')}:{'closed' if detail.get('closed') else 'open'}"
    if kind == "fault" and "protection" in detail and "latch" not in detail:
        return f"fault:{detail['protection']}:{detail.get('level')}"
    if kind == "fault" and "latch" in detail:
        return f"fault:latch:{detail['latch']}"
    if kind == "precharge":
        return f"precharge:{detail.get('result', detail.get('step', ''))}"
    return kind


def _collect_events(emulator: Emulator, events: list, seen: int) -> int:
    """Copies the BMS's new events; ``seen`` counts every event ever seen (the BMS drops old ones)."""
    bms = emulator.bms
    new = bms.events[max(0, seen - bms.events_dropped):]
    for event in new:
        detail = event.detail if isinstance(event.detail, dict) else {"detail": event.detail}
        text = ", ".join(f"{k}={v}" for k, v in detail.items())
        events.append((float(event.t_s), event_name(event.kind, detail), text))
    return seen + len(new)


class _progress_bar:
    """A rich progress bar over simulated time."""

    def __init__(self, total_s: float):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn("[bold]simulating"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f} s"), TimeElapsedColumn(),
                                 TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task("run", total=total_s)
        self.progress.start()

    def update(self, t_s: float) -> None:
        self.progress.update(self.task, completed=t_s)

    def close(self) -> None:
        self.progress.stop()
