"""A BMS's safety properties as checks of a run's recording: ``kind = "property"`` expectations.

The testing kit checks them during a property test; a failing example exported as a scenario carries them as
``[[expect]]`` entries, so ``bms-emu run`` fails on the same samples. They work on the runner's 100 ms recording
and its events (timed to the tick). For an external BMS firmware the recording holds what it publishes on its own
frames (``hil.published``: limits, SOC, state, fault); a property about a quantity the firmware does not publish
holds vacuously and says so.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["PROPERTIES", "check_property"]

_FAULT = 5            # BmsState.FAULT
_ERROR = 2            # FaultLevel.ERROR


def _runs(bad: np.ndarray, t: np.ndarray, grace_s: float) -> int | None:
    """Index of the first sample at which ``bad`` has held for longer than ``grace_s`` (None: never)."""
    start = None
    for k in np.flatnonzero(bad).tolist():
        if start is None or not bad[k - 1] or k == 0:
            start = k
        if t[k] - t[start] >= grace_s - 1e-9:
            return k
    return None


def _window_max(values: np.ndarray, t: np.ndarray, span_s: float) -> np.ndarray:
    """The largest value over the last ``span_s`` at each sample (a limit a VCU may still be following)."""
    out = values.copy()
    for k in range(values.size):
        lo = int(np.searchsorted(t, t[k] - span_s - 1e-9))
        out[k] = np.max(values[lo:k + 1])
    return out


def current_within_limits(r, tolerance_A: float = 5.0, grace_s: float = 0.2, **_):
    """While the main contactors are closed the pack current stays within the published discharge and charge limits
    (beyond ``tolerance_A``); a falling limit may be followed within ``grace_s``. (The precharge current, which no
    VCU draws, flows before they close.)"""
    t, s = r.time_s, r.signals
    dis, ch = s["discharge_limit_A"], s["charge_limit_A"]
    if not np.isfinite(dis).any():
        return True, "no published limits in the recording (an external BMS firmware): not checked", None
    dis, ch = _window_max(np.nan_to_num(dis), t, grace_s), _window_max(np.nan_to_num(ch), t, grace_s)
    current = s["current_A"]
    over = np.maximum(current - dis, -current - ch)
    bad = (over > tolerance_A) & (s["contactors_closed"] > 0.5)
    if bad.any():
        k = int(np.argmax(bad))
        side = "discharge" if current[k] > 0 else "charge"
        return False, (f"pack current {current[k]:.1f} A beyond the published {side} limit "
                       f"{(dis if current[k] > 0 else ch)[k]:.1f} A by {over[k]:.1f} A (tolerance {tolerance_A:g} A, "
                       f"limits followed within {grace_s:g} s) at t = {t[k]:.2f} s; {int(bad.sum())} of {bad.size} "
                       "samples"), float(t[k])
    closed = over[s["contactors_closed"] > 0.5]
    worst = float(np.max(closed)) if closed.size else -math.inf
    return True, f"within the published limits (closest {-worst:.1f} A inside)", None


_MAINS = ("contactor:main_positive:", "contactor:main_negative:")


def _mains_at(changes: list, t0: float) -> tuple[bool, float | None]:
    """(both main contactors closed just after ``t0``, the time they first open after it) from contactor events."""
    state = {"main_positive": False, "main_negative": False}
    k = 0
    while k < len(changes) and changes[k][0] <= t0 + 1e-9:
        _, which, what = changes[k][1].split(":")
        state[which] = what == "closed"
        k += 1
    if not all(state.values()):
        return False, None
    for t_s, name in changes[k:]:
        if name.endswith(":open"):
            return True, t_s
    return True, None


def _in_windows(t0: float, windows) -> bool:
    return any(start - 1e-9 <= t0 <= end + 1e-9 for start, end in windows)


def contactors_open_on_error(r, reaction_s: float = 0.1, open_delay_s: float = 1.0, **_):
    """Within ``reaction_s`` of a fault confirmed at ERROR or EMERGENCY level the main contactors are open (a welded
    contactor, injected on purpose, is excused). While a current-sensor fault is injected, a controlled open may wait
    ``open_delay_s`` more for a current the BMS still reads (the built-in BMS's ``open_delay_max_s``). Timed by events
    where the recording has contactor events (the built-in BMS's commands, an external BMS's contactors seen tick by
    tick): to the tick; else on the 100 ms samples (the first sample after the reaction time)."""
    t, closed = r.time_s, r.signals["contactors_closed"]
    if any("contactor_weld" in name for name in r.injections):
        return True, "a contactor was welded on purpose: not checked", None
    changes = sorted((t_s, name) for t_s, name, _ in r.events if name.startswith(_MAINS))
    end_s = float(t[-1]) if t.size else 0.0
    for t0, name, _detail in r.events:
        if not (name.startswith("fault:") and name.endswith((":ERROR", ":EMERGENCY"))):
            continue
        allowed_s = reaction_s + (open_delay_s if _in_windows(t0, r.current_sensor_faults) else 0.0)
        if t0 + allowed_s > end_s + 1e-9:
            continue  # the recording ends before the reaction time is up
        if changes:
            was_closed, opened_s = _mains_at(changes, t0)
            if was_closed and (opened_s is None or opened_s > t0 + allowed_s + 1e-9):
                when = (f"they opened at t = {opened_s:.3f} s, {(opened_s - t0) * 1e3:.0f} ms later"
                        if opened_s is not None else f"still closed at the end (t = {end_s:.2f} s)")
                return False, (f"{name} at t = {t0:.3f} s: {when} (reaction time {allowed_s * 1e3:g} ms)"), \
                    float(t0 + allowed_s)
            continue
        k = int(np.argmax(t > t0 + allowed_s + 1e-9))
        if closed[k] > 0.5:
            return False, (f"{name} at t = {t0:.3f} s, contactors still closed at t = {t[k]:.2f} s (reaction time "
                           f"{allowed_s * 1e3:g} ms)"), float(t[k])
    timing = "to the tick (contactor events)" if changes else "on 100 ms samples"
    return True, f"every confirmed error opened the contactors in time ({timing})", None


def no_charge_below_0C(r, tolerance_A: float = 1.0, grace_s: float = 0.2, **_):  # noqa: N802 - unit in the name
    """No charge current (beyond ``tolerance_A``, longer than ``grace_s``) while any cell is below 0 degC as the BMS
    sees it: the coldest of its plausible temperature sensor readings (``temp_min_C``; an open sensor's -50 degC is
    none) below 0."""
    t, s = r.time_s, r.signals
    cold = s["temp_min_C"]
    bad = (cold < 0.0) & (s["current_A"] < -tolerance_A)
    k = _runs(bad, t, grace_s)
    if k is not None:
        return False, (f"charging at {-s['current_A'][k]:.1f} A with the coldest temperature sensor at "
                       f"{cold[k]:.1f} degC at t = {t[k]:.2f} s"), float(t[k])
    return True, "no charging below 0 degC (coldest sensor reading)", None


def soc_within_3sigma(r, margin: float = 0.005, bound_if_unpublished: float = 0.05, **_):
    """The BMS's SOC estimate is within its own 3-sigma bound of the truth (plus ``margin``); a BMS that publishes
    no bound (an external firmware without ``soc_3sigma_pct``) is held to ``bound_if_unpublished``. From the first
    injected current-sensor fault on, the estimate follows a reading that is wrong on purpose: not checked then."""
    s, t = r.signals, r.time_s
    est, true, sigma = s["soc_estimated"], s["soc_true"], s["soc_3sigma"]
    known = np.isfinite(est)
    if not known.any():
        return True, "no SOC estimate in the recording: not checked", None
    after = ""
    if r.current_sensor_faults:
        known &= t < r.current_sensor_faults[0][0]
        after = f" (not checked from t = {r.current_sensor_faults[0][0]:.2f} s: a current-sensor fault)"
    unpublished = known & ~np.isfinite(sigma)
    sigma = np.where(unpublished, bound_if_unpublished, sigma)
    error = np.abs(est - true)
    bad = known & ~(error <= sigma + margin)
    if bad.any():
        k = int(np.argmax(bad))
        return False, (f"SOC estimate {est[k]:.4f} vs true {true[k]:.4f}: error {error[k]:.4f} beyond 3 sigma "
                       f"{sigma[k]:.4f} + {margin:g} at t = {t[k]:.2f} s"), float(t[k])
    worst = float(np.max(error[known])) if known.any() else 0.0
    return True, f"SOC error at most {worst:.4f} inside 3 sigma{after}", None


def dtc_for_every_reaction(r, **_):
    """Whenever the BMS is in FAULT, a DTC at ERROR level or above says why."""
    s, t = r.signals, r.time_s
    bad = (s["state"] == _FAULT) & (s["fault_level"] < _ERROR)
    if bad.any():
        k = int(np.argmax(bad))
        return False, f"BMS in FAULT without a DTC at ERROR level at t = {t[k]:.2f} s", float(t[k])
    return True, "every FAULT has its DTC", None


PROPERTIES = {f.__name__: f for f in (current_within_limits, contactors_open_on_error, no_charge_below_0C,
                                      soc_within_3sigma, dtc_for_every_reaction)}
OPTIONS = ("tolerance_A", "grace_s", "reaction_s", "open_delay_s", "margin", "bound_if_unpublished")


def check_property(name: str, recording, options: dict) -> tuple[bool, str, float | None]:
    """(passed, message, time of the first violation) of property ``name`` on ``recording``."""
    return PROPERTIES[name](recording, **{k: v for k, v in options.items() if k in OPTIONS})
