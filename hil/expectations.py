"""Expectations checked against a run's recording: bounds, events after triggers, accuracy, cycle times."""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np

from .scenario import Expectation

__all__ = ["Recording", "Verdict", "current_sensor_faults", "evaluate"]


@dataclass
class Recording:
    """What a run recorded: signals on a common time base, events, and the times faults were injected."""
    time_s: np.ndarray
    signals: dict[str, np.ndarray]
    events: list[tuple[float, str, str]]       # (t_s, name, detail), e.g. (12.3, "state:FAULT", "reason=…")
    injections: dict[str, float]               # fault name -> injection time
    cycle_times: dict[str, dict] | None = None  # CAN message -> statistics (lockstep/paced runs)
    complete: bool = True                      # False when the run stopped early (Ctrl-C, bus error)
    stop_reason: str = ""
    stop_cause: str = ""                       # why incomplete: signal, bus, log, max_sim_s, nothing_simulated ...
    current_sensor_faults: list[tuple[float, float]] = field(default_factory=list)  # (from, to) injected on purpose


def current_sensor_faults(faults, injections: dict[str, float]) -> list[tuple[float, float]]:
    """(injected, cleared or inf) of every injected fault of the current sensor: the BMS's measured current is
    wrong then, and what it does with it (a coulomb count, a controlled open waiting for the current to fall)
    follows the reading, not the truth."""
    out = []
    for f in faults:
        if f.kind == "sensor" and f.options.get("sensor") == "current" and f.name in injections:
            out.append((injections[f.name], injections.get(f"{f.name}:cleared", math.inf)))
    return sorted(out)


@dataclass
class Verdict:
    name: str
    kind: str
    passed: bool
    message: str
    t_s: float | None = None   # simulated time the verdict refers to (first violation, event time)
    line: int | None = None


def evaluate(expectations, recording: Recording) -> list[Verdict]:
    return [_CHECKS[e.kind](e, recording) for e in expectations]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _ends(r: Recording) -> str:
    """Where the recording ends, said beside a verdict that found too few samples."""
    end = f"t = {r.time_s[-1]:.2f} s" if r.time_s.size else "before its first sample"
    return f" (the recording ends at {end}{'' if r.complete else ': the run is incomplete'})"


def _bound(e: Expectation, r: Recording) -> Verdict:
    o = e.options
    signal = r.signals[o["signal"]]
    window = (r.time_s >= o.get("from_s", -math.inf)) & (r.time_s <= o.get("to_s", math.inf))
    if o.get("at_end"):
        window = np.arange(r.time_s.size) == r.time_s.size - 1
    if not window.any():
        return Verdict(e.name, e.kind, False, f"no samples of {o['signal']} in the window "
                       f"[{_fmt(o.get('from_s', 0.0))}, {_fmt(o.get('to_s', math.inf))}] s{_ends(r)}", None, e.line)
    values, times = signal[window], r.time_s[window]
    low, high = o.get("min", -math.inf), o.get("max", math.inf)
    bad = ~((values >= low) & (values <= high))  # NaN is a violation too
    if bad.any():
        k = int(np.argmax(bad))
        return Verdict(e.name, e.kind, False,
                       f"{o['signal']} = {_fmt(values[k])} outside [{_fmt(low)}, {_fmt(high)}] "
                       f"at t = {times[k]:.2f} s ({int(bad.sum())} of {bad.size} samples)", float(times[k]), e.line)
    return Verdict(e.name, e.kind, True, f"{o['signal']} within [{_fmt(low)}, {_fmt(high)}]: "
                   f"min {_fmt(np.min(values))}, max {_fmt(np.max(values))}", None, e.line)


def _trigger_time(trigger: str, r: Recording) -> float | None:
    if trigger.startswith("inject:"):
        return r.injections.get(trigger[len("inject:"):])
    if trigger in ("start", ""):
        return float(r.time_s[0]) if r.time_s.size else 0.0
    for t, name, _ in r.events:
        if fnmatch.fnmatchcase(name, trigger):
            return t
    return None


def _event(e: Expectation, r: Recording) -> Verdict:
    o = e.options
    trigger = o.get("after", "start")
    t0 = _trigger_time(trigger, r)
    if t0 is None:
        return Verdict(e.name, e.kind, False, f"the trigger {trigger!r} never happened", None, e.line)
    within = o.get("within_s", math.inf)
    matches = [(t, name, detail) for t, name, detail in r.events
               if fnmatch.fnmatchcase(name, o["event"]) and t >= t0 - 1e-9
               and ("level" not in o or o["level"].lower() in detail.lower())]
    if o.get("absent", False):
        inside = [m for m in matches if m[0] <= t0 + within]
        if inside:
            t, name, detail = inside[0]
            return Verdict(e.name, e.kind, False, f"{name} happened at t = {t:.3f} s ({detail})", t, e.line)
        return Verdict(e.name, e.kind, True, f"no {o['event']} after {trigger}", None, e.line)
    if not matches:
        return Verdict(e.name, e.kind, False, f"{o['event']} never happened after {trigger} (t = {t0:.3f} s)"
                       f"{_ends(r) if not r.complete else ''}", t0, e.line)
    t, name, detail = matches[0]
    if t - t0 > within + 1e-9:
        return Verdict(e.name, e.kind, False, f"{name} at t = {t:.3f} s, {t - t0:.3f} s after {trigger}: later than "
                       f"{within} s", t, e.line)
    return Verdict(e.name, e.kind, True, f"{name} at t = {t:.3f} s, {t - t0:.3f} s after {trigger}", t, e.line)


def _accuracy(e: Expectation, r: Recording) -> Verdict:
    o = e.options
    pairs = {"soc": ("soc_estimated", "soc_true", 100.0, "%"),
             "core_temp": ("temp_core_est_max_C", "temp_core_max_C", 1.0, "K")}
    est, true, scale, unit = pairs[o["quantity"]]
    keep = r.time_s >= o.get("after_s", 0.0)
    error = (r.signals[est][keep] - r.signals[true][keep]) * scale
    if error.size == 0:
        return Verdict(e.name, e.kind, False, f"no samples after after_s = {_fmt(o.get('after_s', 0.0))} s{_ends(r)}",
                       None, e.line)
    rms, worst = float(np.sqrt(np.mean(error ** 2))), float(np.max(np.abs(error)))
    k = int(np.argmax(np.abs(error)))
    text = f"{o['quantity']} error rms {rms:.3f} {unit}, max {worst:.3f} {unit} at t = {r.time_s[keep][k]:.1f} s"
    ok = rms <= o.get("rms_max", math.inf) * scale and worst <= o.get("max_abs", math.inf) * scale
    if not np.isfinite(error).all():
        ok, text = False, f"{o['quantity']} estimate is not finite"
    limits = ", ".join(f"{k} {v * scale:g} {unit}" for k, v in o.items() if k in ("rms_max", "max_abs"))
    return Verdict(e.name, e.kind, ok, f"{text} (limits: {limits})", None if ok else float(r.time_s[keep][k]), e.line)


def _cycle_time(e: Expectation, r: Recording) -> Verdict:
    o = e.options
    if not r.cycle_times:
        return Verdict(e.name, e.kind, False, "no CAN traffic was recorded (run in lockstep or paced mode)",
                       None, e.line)
    limit = o.get("max_deviation_ms", 1.0)
    names = [o["message"]] if "message" in o else sorted(r.cycle_times)
    worst_name, worst = None, -1.0
    for name in names:
        stats = r.cycle_times.get(name)
        if stats is None:
            return Verdict(e.name, e.kind, False, f"message {name!r} was never sent", None, e.line)
        if stats["max_deviation_ms"] > worst:
            worst_name, worst = name, stats["max_deviation_ms"]
    ok = worst <= limit
    return Verdict(e.name, e.kind, ok, f"worst cycle-time deviation {worst:.3f} ms ({worst_name}), limit {limit} ms",
                   None, e.line)


def _dtc(e: Expectation, r: Recording) -> Verdict:
    """A DTC's status after a trigger, from the diagnostic server's ``dtc:...`` and operation-cycle events:
    ``status`` (a status bit, or ``cleared``) within ``within_cycles`` operation cycles and/or ``within_s``."""
    from bms.diag import DTC_DEFINITIONS, STATUS_BITS, dtc_display, parse_dtc
    from bms.faults import Protection
    o = e.options
    code = DTC_DEFINITIONS[Protection[o["dtc"]]].code if o["dtc"] in Protection.__members__ else parse_dtc(o["dtc"])
    name = dtc_display(code)
    trigger = o.get("after", "start")
    t0 = _trigger_time(trigger, r)
    if t0 is None:
        return Verdict(e.name, e.kind, False, f"the trigger {trigger!r} never happened", None, e.line)
    wanted = o["status"]
    cycles = [t for t, n, _ in r.events if n.startswith("diag:operation_cycle:") and t > t0 + 1e-9]

    def holds(n: str, status: int) -> bool:
        if wanted == "cleared":
            return n.endswith(":cleared") or not status & 0x2F
        return bool(status & STATUS_BITS[wanted])
    hit, current = None, None   # the first time at or after the trigger the status holds
    for t, n, detail in r.events:
        if not n.startswith(f"dtc:{name}:"):
            continue
        status = _status_of(detail)
        if status is None:
            continue
        if t < t0 - 1e-9:
            current = (n, status)
            continue
        if current is not None and holds(*current):
            hit = (t0, current[0], current[1])
            break
        current = None
        if holds(n, status):
            hit = (t, n, status)
            break
    if hit is None and current is not None and holds(*current):
        hit = (t0, current[0], current[1])
    within_c, within_s = o.get("within_cycles"), o.get("within_s", math.inf)
    if o.get("absent", False):
        if hit is None or hit[0] - t0 > within_s or (within_c is not None and _count(cycles, hit[0]) > within_c):
            return Verdict(e.name, e.kind, True, f"{name} never {wanted} after {trigger}", None, e.line)
        return Verdict(e.name, e.kind, False, f"{name} {wanted} at t = {hit[0]:.3f} s (status 0x{hit[2]:02X})",
                       hit[0], e.line)
    if hit is None:
        return Verdict(e.name, e.kind, False, f"{name} ({o['dtc']}) never {wanted} after {trigger} "
                       f"(t = {t0:.3f} s)", t0, e.line)
    t, n, status = hit
    used = _count(cycles, t)
    text = f"{name} {wanted} at t = {t:.3f} s (status 0x{status:02X}), {t - t0:.3f} s and {used} operation " \
           f"cycle(s) after {trigger}"
    if t - t0 > within_s + 1e-9:
        return Verdict(e.name, e.kind, False, f"{text}: later than {within_s} s", t, e.line)
    if within_c is not None and used > within_c:
        return Verdict(e.name, e.kind, False, f"{text}: more than {within_c}", t, e.line)
    return Verdict(e.name, e.kind, True, text, t, e.line)


def _status_of(detail: str) -> int | None:
    for part in detail.split(","):
        key, _, value = part.strip().partition("=")
        if key == "status":
            try:
                return int(value, 16)
            except ValueError:
                return None
    return None


def _count(cycles: list[float], t: float) -> int:
    """Operation cycles started after the trigger and up to ``t``."""
    return sum(1 for c in cycles if c <= t + 1e-9)


def _property(e: Expectation, r: Recording) -> Verdict:
    from .properties import check_property
    passed, message, t_s = check_property(e.options["property"], r, e.options)
    return Verdict(e.name, e.kind, passed, message, t_s, e.line)


_CHECKS = {"bound": _bound, "event": _event, "accuracy": _accuracy, "cycle_time": _cycle_time, "dtc": _dtc,
           "property": _property}
