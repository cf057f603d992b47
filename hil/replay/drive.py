"""From a recorded drive to a scenario: the recorded demand as a load profile, the recorded start as the
emulated pack's start (SOC, temperature), the recorded ambient as the scenario's."""
from __future__ import annotations

import math

import numpy as np

from ..scenario import Scenario, ScenarioError, Step
from ..vehicle import Vehicle
from .mapping import ReplayMapping
from .recording import RecordedDrive, ReplayError

__all__ = ["replay_scenario", "smooth", "RPM_TO_RAD_PER_S"]

RPM_TO_RAD_PER_S = 2 * math.pi / 60.0
DEFAULT_AMBIENT_C = 25.0
MIN_TICKS = 10              # a demand shorter than this is no drive


def smooth(values: np.ndarray, dt_s: float, sigma_s: float) -> np.ndarray:
    """A zero-phase Gaussian filter of width ``sigma_s`` over a uniform grid (edges mirrored): a speed
    quantised to 0.01 km/h differentiates into accelerations of the vehicle, not of the quantisation."""
    if sigma_s <= 0 or values.size < 3:
        return values
    half = min(int(math.ceil(4 * sigma_s / dt_s)), values.size - 1)
    if half < 1:
        return values
    x = np.arange(-half, half + 1) * dt_s
    kernel = np.exp(-0.5 * (x / sigma_s) ** 2)
    kernel /= kernel.sum()
    padded = np.concatenate([values[half:0:-1], values, values[-2:-half - 2:-1]])
    return np.convolve(padded, kernel, mode="valid")


def _held(t: np.ndarray, v: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return v[np.clip(np.searchsorted(t, grid, side="right") - 1, 0, None)]


def _demand_profile(drive: RecordedDrive, mapping: ReplayMapping, dt_s: float) -> dict:
    """The load profile step's options: a current or DC power (> 0 discharging), with speed when known."""
    kind = mapping.demand_kind
    t, v = drive[f"demand.{kind}"]
    if kind in ("current_A", "power_W"):
        return {"time_s": t, "values": v, "quantity": kind}
    vehicle = Vehicle(**mapping.vehicle)
    if kind == "torque_Nm":  # shaft power from torque and speed, each held at its latest value
        ts, rpm = drive["demand.motor_speed_rpm"]
        times = np.unique(np.concatenate([t, ts[ts >= t[0]]]))
        shaft_W = _held(t, v, times) * _held(ts, rpm, times) * RPM_TO_RAD_PER_S
        return {"time_s": times, "values": vehicle.dc_power_W(shaft_W), "quantity": "power_W"}
    # vehicle speed: onto the tick grid, filtered, then the vehicle model's DC power
    grid = np.arange(0.0, t[-1], dt_s) if t[-1] > 0 else np.zeros(1)
    speed = smooth(np.interp(grid, t, v), dt_s, mapping.speed_filter_s)
    accel = np.gradient(speed, dt_s) if speed.size > 1 else np.zeros_like(speed)
    return {"time_s": grid, "values": vehicle.battery_power_W(speed, accel), "quantity": "power_W",
            "speed_mps": speed}


def _first(drive: RecordedDrive, key: str):
    series = drive.get(key)
    if series is None or not series[0].size:
        return None
    return float(series[1][0]), float(series[0][0])


def _ambient(drive: RecordedDrive, mapping: ReplayMapping, key: str, inputs: dict):
    spec = mapping.ambient.get(key)
    if spec is None:
        return None
    if isinstance(spec, float):
        inputs[f"ambient_{key}"] = {"value": spec, "source": "mapping"}
        return spec
    t, v = drive[f"ambient.{key}"]
    if not t.size:  # reported as a finding (missing); optional ones run at the default
        inputs[f"ambient_{key}"] = {"value": DEFAULT_AMBIENT_C, "source": f"default: ambient.{key} never appeared"}
        return DEFAULT_AMBIENT_C
    keep = np.ones(t.size, dtype=bool)  # a profile of the changes only (a 10 ms signal would be huge)
    keep[1:-1] = (v[1:-1] != v[:-2]) | (v[1:-1] != v[2:])
    inputs[f"ambient_{key}"] = {"value": float(v[0]), "source": f"recorded ambient.{key} (profile of {t.size} "
                                                                 f"samples, {v.min():.1f} … {v.max():.1f} °C)"}
    if t.size == 1 or v.min() == v.max():
        return float(v[0])
    profile = [[float(a), float(b)] for a, b in zip(t[keep], v[keep])]
    if profile[0][0] > 0:
        profile.insert(0, [0.0, profile[0][1]])
    return profile


def replay_scenario(drive: RecordedDrive, mapping: ReplayMapping, name: str | None = None,
                    dt_s: float = 0.01) -> tuple[Scenario, dict]:
    """The scenario that replays ``drive``, and where each of its inputs came from."""
    t_demand = drive[f"demand.{mapping.demand_kind}"][0]
    if t_demand[-1] < MIN_TICKS * dt_s:
        raise ReplayError(f"{drive.log}: nothing to replay: the demand ({mapping.demand.describe()}) has "
                          f"{t_demand.size} sample(s) over {t_demand[-1]:.3f} s from the log's start; a replay "
                          f"needs at least {MIN_TICKS} ticks ({MIN_TICKS * dt_s:g} s)")
    inputs: dict = {}
    if mapping.initial_soc is not None:
        soc = mapping.initial_soc
        inputs["initial_soc"] = {"value": soc, "source": "mapping: replay.initial_soc"}
    else:
        first = _first(drive, "compare.soc")
        if first is None:
            ref = mapping.compare["soc"]
            raise ScenarioError(mapping.source, ref.line, "replay.initial_soc",
                                "missing, and the recorded SOC (compare.soc) never appeared to start from")
        soc, at = first
        if not 0.0 <= soc <= 1.0:
            ref = mapping.compare["soc"]
            raise ScenarioError(mapping.source, ref.line, "compare.soc.scale",
                                f"the first recorded SOC is {soc:g}, expected 0 … 1 (a percentage needs "
                                f"scale = 0.01)")
        inputs["initial_soc"] = {"value": soc, "source": f"recorded compare.soc at t = {at:.2f} s"}
    temp = mapping.initial_temp_C
    if temp is not None:
        inputs["initial_temp_C"] = {"value": temp, "source": "mapping: replay.initial_temp_C"}
    elif (first := _first(drive, "compare.temp_max_C")) is not None:
        temp = first[0]
        inputs["initial_temp_C"] = {"value": temp, "source": f"recorded compare.temp_max_C at t = {first[1]:.2f} s"}
    ambient = _ambient(drive, mapping, "temp_C", inputs)
    if ambient is None:
        ambient = DEFAULT_AMBIENT_C
        inputs["ambient_temp_C"] = {"value": ambient, "source": "default (no [ambient] temp_C in the mapping)"}
    coolant = _ambient(drive, mapping, "coolant_C", inputs)
    if temp is None:
        inputs["initial_temp_C"] = {"value": ambient if isinstance(ambient, float) else ambient[0][1],
                                    "source": "the ambient's start"}
    profile = _demand_profile(drive, mapping, dt_s)
    inputs["demand"] = {"quantity": mapping.demand_kind, "signal": mapping.demand.describe(),
                        "samples": int(drive[f"demand.{mapping.demand_kind}"][0].size),
                        "duration_s": float(profile["time_s"][-1])}
    if mapping.demand_kind == "speed_mps":
        inputs["demand"]["speed_filter_s"] = mapping.speed_filter_s
    scenario = Scenario(name=name or mapping.name or "replay", source=mapping.source, pack=mapping.pack,
                        seed=mapping.seed, initial_soc=soc, dt_s=dt_s, ambient_C=ambient, coolant_C=coolant,
                        steps=(Step("profile", profile),), initial_temp_C=temp)
    return scenario, inputs
