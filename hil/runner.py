"""Runs a scenario: the emulated pack and BMS in the loop with a VCU, faults on a timeline, a recording,
expectations and reports. Modes: ``headless`` (no bus, fastest); ``lockstep`` and ``paced`` put the BMS's
CAN node and a CAN VCU on a python-can bus (see ``hil.can_loop``).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bms import Drift, Offset, OpenWire, ParameterError, Stuck, load_config, load_pack
from bms._layout import LINK_VOLTAGE, MAIN_NEGATIVE, MAIN_POSITIVE, PACK_CURRENT, PACK_VOLTAGE
from bms.can.logs import LogError
from bms.config import BmsConfig
from bms.emulator import Emulator
from bms.fil.loader import FirmwareSpec
from bms.sensors import SensorFault

from . import progress as _progress
from .expectations import Recording, Verdict, current_sensor_faults, evaluate
from .firmware_run import FirmwareRun
from .load import DEFAULT_CHARGE_DURATION_S, LoadProgram
from .published import ContactorWatch, published_values
from .report import clear_reports, mark_incomplete, summarise, write_reports
from .run_info import package_version, scenario_inputs
from .scenario import SIGNALS, FaultAction, Scenario, ScenarioError, parse_condition
from .scenario_checks import check_diagnostics, check_event_names
from .stopping import describe_stop
from .vcu import VcuModel, requested_current_A

__all__ = ["RunResult", "run_scenario", "RECORD_PERIOD_S"]

RECORD_PERIOD_S = 0.1
CAN_FAULTS = ("can_corrupt", "bus_off", "isotp", "uds_pending")
_sum, _fmin = np.add.reduce, np.fmin.reduce
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
        self.active: list[tuple[float, FaultAction]] = []
        self.emulator, self.vcu, self.can = emulator, vcu, can
        self.injections: dict[str, float] = {}
        self.cooling_factor = 1.0
        self.bus_off: tuple[str, float] | None = None  # (name, t_s) of a bus-off for good, which ends the run
        for fault in scenario.faults:
            if fault.kind in CAN_FAULTS and can is None:
                raise ScenarioError(scenario.source, fault.line, f"{fault.name}",
                                    "CAN and diagnostic faults need a bus: run in lockstep or paced mode "
                                    "(--mode lockstep)")

    def due(self, t_s: float, latest: dict[str, float]) -> None:
        for fault in list(self.pending):
            if fault.at_s is not None:
                fire = t_s >= fault.at_s - 1e-9
            else:
                assert fault.when is not None  # a fault without at_s has a condition (checked on load)
                signal, op, value = parse_condition(fault.when)
                fire = bool(_OPS[op](latest.get(signal, math.nan), value))
            if fire:
                self.pending.remove(fault)
                self._apply(fault, t_s, on=True)
                self.injections[fault.name] = t_s
                if fault.clear_at_s is not None:
                    self.active.append((fault.clear_at_s, fault))
                elif fault.kind == "bus_off" and "recovery_s" in fault.options:
                    self.active.append((t_s + fault.options["recovery_s"], fault))
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
            kinds: dict[str, SensorFault] = {"open_wire": OpenWire(), "stuck": Stuck(o.get("value", 0.0)),
                                             "drift": Drift(o.get("value", 0.0)), "offset": Offset(o.get("value", 0.0))}
            kind = kinds[o["fault"]]
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
        elif fault.kind == "bus_off" and (fault.clear_at_s is not None or "recovery_s" in o):
            self.can.node.off_bus = on   # bus-off with recovery: deaf and silent, then back; the run goes on
        elif fault.kind in CAN_FAULTS:
            if fault.kind == "bus_off" and on:
                self.bus_off = (fault.name, t_s)
            self.can.fault(fault.kind, o, on, t_s)

    def explain_bus_failure(self, failure: str) -> str:
        """A bus failure in the words of the injected bus-off that caused it (the node's bus was shut down:
        its next send or receive fails), else as it was."""
        if self.bus_off is None:
            return failure
        name, t_s = self.bus_off
        return f"bus-off injected ({name!r} at t = {t_s:.2f} s): the BMS left the bus ({failure})"


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


def _mean(values) -> float:
    """np.mean without its Python wrapper (the same sum, the same bits)."""
    a = np.asarray(values)
    return float(_sum(a) / a.size)


def _snapshot(e: Emulator, demand_A: float, speed: float, view=None, limits=None) -> dict[str, float]:
    """``view``: an external BMS firmware's published values (``bms.fil.FrameView``), recorded in place of the
    built-in BMS's. ``limits``: the built-in BMS's limits in force while this tick's current flowed (those it
    published by the tick before, which the VCU read): the current is recorded beside what it had to obey."""
    pack, bms = e.pack, e.bms
    scalars = pack.state.scalars
    if bms is None:  # an external BMS firmware: what it says is on the bus, the recording keeps the physics
        bms = _NO_BMS
    if limits is None:
        limits = bms.limits
    # the truth's and the estimator's values in one compiled call (the properties' and reductions' bits)
    soc_true, soc_est, sigma, v_min, v_max, core_max, surface_max, core_est = e.observe()
    closed = pack.state.contactor_closed
    level = max((int(d.level) for d in bms.dtcs if d.status != "cleared"), default=0)
    out = {
        "soc_true": soc_true, "soc_estimated": soc_est, "soc_3sigma": sigma,
        "cell_voltage_min_V": v_min, "cell_voltage_max_V": v_max,
        "temp_core_max_C": core_max, "temp_core_est_max_C": core_est,
        "temp_surface_max_C": surface_max, "current_A": scalars.item(PACK_CURRENT),
        "current_demand_A": demand_A, "discharge_limit_A": limits.discharge_current_A,
        "charge_limit_A": limits.charge_current_A, "pack_voltage_V": scalars.item(PACK_VOLTAGE),
        "link_voltage_V": scalars.item(LINK_VOLTAGE), "speed_mps": speed, "state": int(bms.state),
        "contactors_closed": float(bool(closed[MAIN_POSITIVE]) and bool(closed[MAIN_NEGATIVE])),
        "fault_level": float(level),
        "derating": float(bms.warning_flags != 0),  # a protection at warning level derates the limits
        "temp_min_C": _coldest_plausible(e.sensors.temperature_C, e.bms),  # the coldest the BMS measures
    }
    if view is not None and e.bms is None:
        out.update(published_values(view))
    return out


_PLAUSIBLE_MIN_C = BmsConfig().temperature_plausible_min_C


def _coldest_plausible(readings, bms) -> float:
    """The coldest temperature reading that can be one: an open sensor reads -50 degC, below the plausible range
    (``temperature_plausible_min_C``), and a BMS rightly charges on its other sensors (nan: no such reading)."""
    floor = bms.config.temperature_plausible_min_C if bms is not None else _PLAUSIBLE_MIN_C
    a = np.asarray(readings)
    coldest = float(_fmin(a))
    if coldest >= floor:   # the common case: every reading plausible
        return coldest
    kept = a[a >= floor]
    return float(_fmin(kept)) if kept.size else math.nan


class _NoBms:
    """What the recording reads of a BMS when an external firmware is the BMS (not known here)."""
    limits = type("Limits", (), {"discharge_current_A": math.nan, "charge_current_A": math.nan})()
    dtcs: list = []
    state = -1
    warning_flags = 0
    events: list = []
    events_dropped = 0


_NO_BMS = _NoBms()


def differential_verdicts(report: dict) -> list[Verdict]:
    """One verdict per compared quantity of a differential run, its tolerance the expectation."""
    tol = report["tolerances"]
    out = []
    c = report["contactors"]
    out.append(Verdict("differential:contactor_timing", "differential", c["passed"],
                       f"worst difference {c['worst_difference_s']:.3f} s over {len(c['changes'])} changes "
                       f"(tolerance {tol['contactor_s']} s)"))
    f = report["faults"]
    out.append(Verdict("differential:fault_reaction", "differential", f["passed"],
                       f"built-in {f['builtin_s']} s ({f['builtin_dtcs'] or 'no fault'}), external {f['external_s']} "
                       f"s ({f['external_fault'] or 'no fault'}) (tolerance {tol['fault_s']} s)",
                       f["builtin_s"] if f["builtin_s"] is not None else f["external_s"]))
    lim = report["limits"]
    out.append(Verdict("differential:limits", "differential", lim["passed"],
                       f"worst {lim['worst_difference']} A over {lim['samples_compared']} samples "
                       f"(tolerance {tol['limit_A']} A)"))
    soc = report["soc"]
    out.append(Verdict("differential:soc", "differential", soc["passed"],
                       f"worst {soc['worst_difference']:+.4f} over {soc['samples_compared']} samples "
                       f"(tolerance {tol['soc']})", soc["worst_at_s"]))
    return out


def build_emulator(scenario: Scenario, firmware=None) -> Emulator:
    params = load_pack(scenario.pack, overrides=scenario.pack_overrides)
    config = None
    if scenario.bms_overrides:
        try:
            config = load_config(overrides=scenario.bms_overrides)
        except ParameterError as exc:
            raise ScenarioError(scenario.source, None, f"bms.{exc.key.removeprefix('bms.')}",
                                f"expected {exc.expected}, found {exc.found!r}"
                                + (f" ({exc.hint})" if exc.hint else "")) from exc
    return Emulator(params, seed=scenario.seed, initial_soc=scenario.initial_soc,
                    temp_C=_start_temperature(scenario.ambient_C) if scenario.initial_temp_C is None
                    else scenario.initial_temp_C, dt_s=scenario.dt_s, config=config, firmware=firmware)


def run_scenario(scenario: Scenario, *, out_dir: str | Path | None = None, mode: str = "headless",
                 progress=False, plots: bool = True, max_sim_s: float | None = None,
                 can_options: dict | None = None, stop=None, checks=None,
                 firmware: FirmwareSpec | None = None, live=None) -> RunResult:
    """Run ``scenario`` to the end of its steps (or ``max_sim_s``); write reports into ``out_dir``.

    ``stop``: anything with ``is_set()`` (a ``hil.stopping.StopRequest``, a ``threading.Event``), looked at
    once per tick; when set, the run ends at that tick and its reports say so. Ctrl-C (KeyboardInterrupt)
    ends it the same way. ``progress``: True for a progress bar on the terminal, or an object with
    ``start(total_s)``, ``update(t_s)`` and ``close(t_s)`` (``hil.progress.StatusLines``).
    ``checks(recording)``, if given, returns more verdicts (a replay's comparison with its recording): they
    count as the scenario's own, and are made before any report is written.

    A run is complete only when it simulated every step the scenario asks for; one that stopped early, was
    cut short by ``max_sim_s``, simulated nothing, or whose logs or reports could not be written, is
    incomplete and never passes (``summary["incomplete_cause"]`` says which). ``firmware`` (default: the
    scenario's ``[firmware]``) puts an external firmware into a slot; one that fails stops the run (cause
    "firmware").
    ``live``: a ``hil.live.LiveSession`` (telemetry stream, bench control, web server), ticked at every
    recording tick; its bench injections go through the fault timeline and into the reports.
    """
    if out_dir is not None:
        with contextlib.suppress(OSError):  # an earlier run's verdict never stands in for this one's
            clear_reports(Path(out_dir))
    fw_run = FirmwareRun(firmware if firmware is not None else scenario.firmware, mode)
    check_event_names(scenario, builtin_bms=not fw_run.drives_bms)
    check_diagnostics(scenario, builtin_bms=not fw_run.drives_bms)
    try:
        emulator = build_emulator(scenario, fw_run.bms_firmware())
        fw_run.attach(emulator)
    except BaseException:
        fw_run.close()
        raise
    program = LoadProgram(scenario, emulator.bms)
    dt = scenario.dt_s
    asked_s = program.planned_duration_s()
    planned = asked_s if max_sim_s is None else min(asked_s, max_sim_s)
    can = None
    if mode == "headless" and (scenario.diag or any(e.kind == "dtc" for e in scenario.expectations)):
        first = scenario.diag[0].line if scenario.diag else next(e.line for e in scenario.expectations
                                                                 if e.kind == "dtc")
        raise ScenarioError(scenario.source, first, "diag", "diagnostics ([[diag]] requests, dtc expectations) "
                            "need the BMS on a bus: run in lockstep or paced mode (--mode lockstep)")
    if scenario.frames:
        from .frames import frames_refused
        why = frames_refused(mode, can_options or {})
        if why:
            raise ScenarioError(scenario.source, scenario.frames[0].line, "frame", why)
    if mode != "headless":
        from .can_loop import CanLoop
        try:
            can = CanLoop(emulator, mode=mode, vcu_firmware=fw_run.vcu_firmware, bms_messages=fw_run.bms_messages(),
                          diag_requests=scenario.diag, frames=scenario.frames, **(can_options or {}))
        except BaseException:
            fw_run.close()
            raise
    vcu = can.vcu if can is not None else VcuModel(emulator.bms, period_s=0.01)
    faults = _FaultTimeline(scenario, emulator, vcu, can)
    record_every = max(1, int(round(RECORD_PERIOD_S / dt)))
    recorder = _Recorder(int(min(planned, 1e9) / dt / record_every) + 2)
    events: list[tuple[float, str, str]] = []
    seen_events = 0
    latest: dict[str, float] = {}
    cause, stop_reason = "", ""
    firmware_failure = None
    bar = (_progress.ProgressBar() if progress is True else progress) or None
    if bar is not None:
        bar.start(planned)
    start = time.perf_counter()
    tick = 0
    # the per-tick path, kept lean: everything looked up once, the recording every record_every ticks
    pack, estimator, bms = emulator.pack, emulator.estimator, emulator.bms
    in_force = None
    plant_scalars = pack.state.scalars
    soc_source = (lambda: estimator.pack_soc) if estimator is not None else (lambda: pack.soc)
    next_demand = program.next_for
    coolant_C, coolant_at = _temperature_source(scenario.coolant_C if scenario.coolant_C is not None
                                                else scenario.ambient_C)
    vcu_tick = vcu.tick
    step = can.tick if can is not None else None
    injector = can.injector if can is not None else None
    emulator_tick = emulator.tick
    stop_requested = stop.is_set if stop is not None else (lambda: False)
    end_tick = None
    if max_sim_s is not None:  # the first tick with tick * dt >= max_sim_s - 1e-9, as a float comparison
        end_tick = max(0, int(math.ceil((max_sim_s - 1e-9) / dt)) - 2)
        while end_tick * dt < max_sim_s - 1e-9:
            end_tick += 1
    until_record = record_every  # ticks until the next recording
    view = fw_run.view if emulator.bms is None else None   # an external BMS: its published values are recorded
    watch = ContactorWatch(pack) if emulator.bms is None else None
    live_tick = None
    if live is not None:
        live.attach(emulator, node=can.node if can is not None else None, timeline=faults, events=events,
                    info={"scenario": scenario.name, "mode": mode, "planned_s": planned})
        try:
            live.start()
        except BaseException:
            _close_quietly(can)
            fw_run.close()
            raise
        live_tick = live.tick
    try:
        while True:
            if stop_requested():
                cause, stop_reason = "signal", f"{describe_stop(stop)} at t = {tick * dt:.2f} s"
                break
            if tick == end_tick:
                if next_demand(soc_source) is not None:  # steps left: the run is cut short
                    cause = "max_sim_s"
                    stop_reason = (f"truncated at max_sim_s = {max_sim_s:g} s (t = {tick * dt:.2f} s of the "
                                   f"{asked_s:.0f} s its steps ask for)")
                break
            t = tick * dt
            demand = next_demand(soc_source)
            if demand is None:
                break
            if until_record == record_every and (faults.pending or faults.active):
                faults.due(t, latest)
            if injector is not None and injector.pending:  # before the VCU's frame of this tick, as a tester's
                events += injector.due(t)
            link_V = plant_scalars.item(LINK_VOLTAGE)  # pack.link_voltage_V without its property
            if until_record == 1 and bms is not None:
                in_force = bms.limits  # what this tick's current obeys, recorded beside it
            current = vcu_tick(t, demand, link_V)
            coolant = coolant_C if coolant_at is None else coolant_at(t)
            if step is None:
                emulator_tick(current, coolant_C=coolant, cooling_factor=faults.cooling_factor)
            else:
                step(current, coolant, faults.cooling_factor)
            tick += 1
            if watch is not None:
                watch.tick(emulator.t_s)
            until_record -= 1
            if until_record == 0:
                until_record = record_every
                latest = _snapshot(emulator, requested_current_A(demand, link_V), demand.speed_mps, view, in_force)
                recorder.add(emulator.t_s, latest)
                seen_events = _collect_events(emulator, events, seen_events)
                if can is not None:
                    events += can.new_events()
                if watch is not None:
                    events += watch.take() + fw_run.published_events()
                if live_tick is not None:
                    live_tick(emulator.t_s, latest["current_demand_A"])
                if bar is not None and tick % (record_every * 50) == 0:
                    bar.update(emulator.t_s)
    except KeyboardInterrupt:
        cause, stop_reason = "interrupted", f"interrupted (Ctrl-C) at t = {tick * dt:.2f} s"
    except LogError as exc:  # the disk filled up under the bus log: stop, and still write the reports
        cause, stop_reason = "log", f"the bus log could not be written: {exc} (at t = {tick * dt:.2f} s)"
    except Exception as exc:  # a vanished adapter, a bus-off: keep what was recorded, say why
        if can is None or not can.is_stop_error(exc):
            _close_quietly(can)
            fw_run.close()
            raise
        firmware_failure = fw_run.failure(exc)
        cause = "firmware" if firmware_failure is not None else "bus"
        timed = firmware_failure is not None and firmware_failure["t_s"] is not None   # its message says when
        stop_reason = str(exc) if timed else \
            f"{faults.explain_bus_failure(str(exc)) if cause == 'bus' else exc} (at t = {tick * dt:.2f} s)"
    except BaseException:
        _close_quietly(can)
        fw_run.close()
        raise
    finally:
        if bar is not None:
            bar.close(tick * dt)
    cycle_times, log_paths = None, []
    if can is not None:
        try:
            cycle_times, log_error = _close(can)
        finally:
            fw_run.close()
        log_paths = list(can.node.log_paths)
        if log_error is not None and cause != "log":
            cause = cause or "log"
            stop_reason = "; ".join(filter(None, (stop_reason, f"the bus log could not be written: {log_error}")))
    simulated_s = tick * dt
    if not cause and tick == 0:
        cause, stop_reason = "nothing_simulated", (f"nothing was simulated: the steps ask for {asked_s:g} s, "
                                                   f"which at dt_s = {dt:g} s is no tick")
    elif not cause and simulated_s < _required_s(asked_s, scenario) - len(scenario.steps) * dt - 1e-6:
        cause, stop_reason = "short", (f"simulated {simulated_s:g} s of the {_required_s(asked_s, scenario):g} s "
                                       f"its steps ask for (dt_s = {dt:g} s)")
    wall = time.perf_counter() - start
    if live is not None:  # no bench command after the last tick
        live.control.close(stop_reason or "finished")
    _collect_events(emulator, events, seen_events)
    if can is not None:
        events += can.new_events()
    if watch is not None:
        events += watch.take() + fw_run.published_events()
    events.sort(key=lambda e: e[0])  # the BMS's and the diagnostic layer's events in time order
    t_rec, signals = recorder.trimmed()
    recording = Recording(t_rec, signals, events, faults.injections, cycle_times, not cause, stop_reason, cause,
                          current_sensor_faults(scenario.faults, faults.injections))
    verdicts = evaluate(scenario.expectations, recording)
    if checks is not None:
        verdicts += checks(recording)
    params = emulator.pack.params
    capacity_kWh = params.capacity_Ah * params.n_series * params.cell.voltage_nominal_V / 1000.0
    usable = getattr(estimator, "energy_usable_kWh", None) if tick else None
    summary = summarise(recording, verdicts, scenario=scenario.name, dt_s=dt, wall_s=wall, capacity_kWh=capacity_kWh,
                        simulated_s=simulated_s, usable_energy_end_kWh=usable)
    summary["mode"] = mode
    summary["version"] = package_version()
    summary["inputs"] = scenario_inputs(scenario, mode=mode, max_sim_s=max_sim_s)
    summary["logs"] = log_paths
    summary["faults_not_injected"] = [  # a condition that never held is no error, but worth a word
        {"name": f.name, "line": f.line, "why": f"its condition {f.when!r} never held" if f.at_s is None
         else f"at_s = {f.at_s:g} s was not reached (the run ended at {simulated_s:.1f} s)"} for f in faults.pending]
    if live is not None:
        summary["bench_control"] = list(live.control.audit)
        live.finished(verdicts)
    if can is not None and can.report is not None:  # every frame counted: bad ones, own ones heard back ...
        summary["can"] = {"counters": dict(can.report.counters), "last_rx_error": can.report.last_rx_error,
                          "vcu_bad_frames": getattr(can.vcu, "bad_frames", 0)}
    summary["firmware"] = fw_run.summary(emulator)
    if firmware_failure is not None:
        summary["firmware_failure"] = firmware_failure
    if fw_run.differential is not None:
        summary["differential"] = diff = fw_run.differential.report()
        verdicts += differential_verdicts(diff)
        summary["passed"] = summary["passed"] and diff["passed"]
        summary["expectations"] = {"total": len(verdicts), "failed": sum(not v.passed for v in verdicts)}
    if stop is not None and stop.is_set() and recording.stop_cause != "signal":
        # the stop came after the last tick, before the reports: the run did not end as asked either
        mark_incomplete(summary, recording, "signal", f"{describe_stop(stop)} after the last tick (t = "
                        f"{simulated_s:.2f} s)")
    reports = write_reports(Path(out_dir), recording, verdicts, summary, source=scenario.source, plots=plots,
                            stop=stop) if out_dir is not None else {}
    return RunResult(scenario, recording, verdicts, summary, reports)


def _required_s(planned_s: float, scenario: Scenario) -> float:
    """Simulated time the steps need at least: all of ``planned_s`` but the charge steps' time limits
    (a charge step ends at its target SOC)."""
    return planned_s - sum(s.options.get("max_duration_s", DEFAULT_CHARGE_DURATION_S) for s in scenario.steps
                           if s.kind == "charge")


def _close(can) -> tuple[dict | None, BaseException | None]:
    """Close the bus side (logs flushed); a log that could not be written is returned, not raised."""
    try:
        return can.close(), None
    except LogError as exc:
        try:
            return can.close(), exc  # closed now: the second call returns the statistics
        except LogError:
            return None, exc


def _close_quietly(can) -> None:
    if can is not None:
        with contextlib.suppress(Exception):
            can.close()


def event_name(kind: str, detail: dict) -> str:
    """A BMS event as a name expectations can match: ``state:FAULT``, ``contactor:main_positive:open``,
    ``fault:CELL_OVERVOLTAGE:ERROR``, ``precharge:complete`` …"""
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
    bms = emulator.bms or _NO_BMS
    new = bms.events[max(0, seen - bms.events_dropped):]
    for event in new:
        detail = event.detail if isinstance(event.detail, dict) else {"detail": event.detail}
        text = ", ".join(f"{k}={v}" for k, v in detail.items())
        events.append((float(event.t_s), event_name(event.kind, detail), text))
    return seen + len(new)
