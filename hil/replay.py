"""Replay of a recorded test drive: a python-can log, the recording vehicle's DBC and a mapping file.

The recorded demand (pack current, DC power, motor torque and speed, or vehicle speed) drives the emulated
pack through the emulated BMS's limits, closed loop; recorded BMS signals, if mapped, are compared side by
side with what the emulated BMS reports.

Mapping file (TOML)::

    [demand]                      # exactly one of current_A, power_W, torque_Nm (+ motor_speed_rpm), speed_mps
    current_A = { message = "HV_BATT", signal = "PackCurrent", scale = 1.0 }
    [ambient]
    temp_C = { message = "ENV", signal = "AmbientTemp" }
    [compare]                     # recorded BMS signals: soc (0..1), pack_voltage_V, current_A, temp_max_C
    soc = { message = "BMS_STATE", signal = "SOC", scale = 0.01 }
    [replay]
    pack = "assb60-192s2p"
    initial_soc = 0.8
    seed = 0
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.errors import BmsError

from .scenario import Scenario, ScenarioError, Step, _suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ReplayError", "ReplayMapping", "load_mapping", "read_recording", "replay_scenario", "compare"]

DEMANDS = ("current_A", "power_W", "torque_Nm", "speed_mps")
COMPARE = {"soc": "soc_estimated", "pack_voltage_V": "pack_voltage_V", "current_A": "current_A",
           "temp_max_C": "temp_core_est_max_C"}
SIGNAL_KEYS = {"message", "signal", "scale", "offset"}


class ReplayError(BmsError, ValueError):
    """A log, DBC or mapping cannot be used for a replay; says which file and what."""


@dataclass(frozen=True)
class SignalRef:
    message: str
    signal: str
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class ReplayMapping:
    source: str
    demand_kind: str
    demand: SignalRef
    motor_speed: SignalRef | None
    ambient: SignalRef | None
    compare: dict[str, SignalRef]
    pack: str = "assb60-192s2p"
    initial_soc: float = 0.8
    seed: int = 0


def _ref(value, source, key) -> SignalRef:
    if not isinstance(value, dict) or not {"message", "signal"} <= set(value):
        raise ScenarioError(source, None, key, "expected { message = \"NAME\", signal = \"NAME\", scale = …, offset = … }")
    unknown = set(value) - SIGNAL_KEYS
    if unknown:
        raise ScenarioError(source, None, f"{key}.{sorted(unknown)[0]}", f"unknown key{_suggest(sorted(unknown)[0], SIGNAL_KEYS)}")
    return SignalRef(str(value["message"]), str(value["signal"]), float(value.get("scale", 1.0)),
                     float(value.get("offset", 0.0)))


def load_mapping(path: str | Path) -> ReplayMapping:
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReplayError(f"{source}: cannot read the mapping file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ReplayError(f"{source}: not valid TOML: {exc}") from exc
    for key in data:
        if key not in ("demand", "ambient", "compare", "replay"):
            raise ScenarioError(source, None, key, f"unknown table{_suggest(key, ['demand', 'ambient', 'compare', 'replay'])}")
    demand = data.get("demand", {})
    kinds = [k for k in demand if k in DEMANDS]
    for key in demand:
        if key not in (*DEMANDS, "motor_speed_rpm"):
            raise ScenarioError(source, None, f"demand.{key}", f"unknown demand{_suggest(key, DEMANDS)}")
    if len(kinds) != 1:
        raise ScenarioError(source, None, "demand", f"expected exactly one of {', '.join(DEMANDS)}, found {kinds}")
    kind = kinds[0]
    motor = _ref(demand["motor_speed_rpm"], source, "demand.motor_speed_rpm") if "motor_speed_rpm" in demand else None
    if kind == "torque_Nm" and motor is None:
        raise ScenarioError(source, None, "demand.motor_speed_rpm", "required with torque_Nm")
    compare = {}
    for key, value in data.get("compare", {}).items():
        if key not in COMPARE:
            raise ScenarioError(source, None, f"compare.{key}", f"unknown quantity{_suggest(key, COMPARE)}")
        compare[key] = _ref(value, source, f"compare.{key}")
    ambient = data.get("ambient", {})
    head = data.get("replay", {})
    return ReplayMapping(source, kind, _ref(demand[kind], source, f"demand.{kind}"), motor,
                         _ref(ambient["temp_C"], source, "ambient.temp_C") if "temp_C" in ambient else None,
                         compare, head.get("pack", "assb60-192s2p"), float(head.get("initial_soc", 0.8)),
                         int(head.get("seed", 0)))


def read_recording(log_path: str | Path, dbc_path: str | Path, mapping: ReplayMapping) -> dict[str, tuple]:
    """Every mapped signal as (time_s from the log's start, value) arrays, decoded by cantools."""
    import can
    import cantools

    try:
        db = cantools.database.load_file(str(dbc_path))
    except Exception as exc:  # cantools raises several kinds for a bad DBC
        raise ReplayError(f"{dbc_path}: cannot load the DBC: {exc}") from exc
    refs = {"demand": mapping.demand}
    if mapping.motor_speed:
        refs["motor_speed_rpm"] = mapping.motor_speed
    if mapping.ambient:
        refs["ambient_C"] = mapping.ambient
    refs.update({f"compare:{k}": v for k, v in mapping.compare.items()})
    by_id: dict[int, list] = {}
    for key, ref in refs.items():
        try:
            message = db.get_message_by_name(ref.message)
        except KeyError:
            names = [m.name for m in db.messages]
            raise ReplayError(f"{mapping.source}: {key}: message {ref.message!r} is not in {dbc_path}"
                              f"{_suggest(ref.message, names)}") from None
        if ref.signal not in [s.name for s in message.signals]:
            raise ReplayError(f"{mapping.source}: {key}: signal {ref.signal!r} is not in message {ref.message}"
                              f"{_suggest(ref.signal, [s.name for s in message.signals])}")
        by_id.setdefault(message.frame_id, []).append((key, ref, message))
    series: dict[str, tuple[list, list]] = {key: ([], []) for key in refs}
    t0 = None
    try:
        reader = can.LogReader(str(log_path))
    except Exception as exc:
        raise ReplayError(f"{log_path}: cannot open the log: {exc}") from exc
    count = 0
    try:
        for msg in reader:
            count += 1
            if msg.is_error_frame or msg.is_remote_frame or msg.arbitration_id not in by_id:
                continue
            if t0 is None:
                t0 = msg.timestamp
            for key, ref, message in by_id[msg.arbitration_id]:
                try:
                    value = message.decode(bytes(msg.data), decode_choices=False)[ref.signal]
                except Exception:
                    continue  # a frame that does not decode (wrong length) is skipped, as a logger would
                series[key][0].append(msg.timestamp - t0)
                series[key][1].append(float(value) * ref.scale + ref.offset)
    except Exception as exc:
        raise ReplayError(f"{log_path}: the log is corrupt after {count} frames: {exc}") from exc
    finally:
        stop = getattr(reader, "stop", None)
        if stop:
            stop()
    if not series["demand"][0]:
        raise ReplayError(f"{log_path}: no frame of {mapping.demand.message} (the mapped demand) in the log")
    out = {}
    for key, (times, values) in series.items():
        t, v = np.asarray(times), np.asarray(values)
        if t.size and not np.all(np.isfinite(v)):
            bad = int(np.argmax(~np.isfinite(v)))
            raise ReplayError(f"{log_path}: {key} is not finite at t = {t[bad]:.3f} s")
        out[key] = (t, v)
    return out


def replay_scenario(recorded: dict[str, tuple], mapping: ReplayMapping, name: str, dt_s: float = 0.01) -> Scenario:
    """A scenario whose one step follows the recorded demand."""
    t, v = recorded["demand"]
    kind = mapping.demand_kind
    if kind == "torque_Nm":
        ts, rpm = recorded["motor_speed_rpm"]
        v = v * np.interp(t, ts, rpm) * 2 * math.pi / 60.0  # mechanical power, W
        kind = "power_W"
    options = {"time_s": t, "values": v, "quantity": kind}
    ambient = 25.0
    if "ambient_C" in recorded and recorded["ambient_C"][0].size:
        ta, va = recorded["ambient_C"]
        ambient = [[float(a), float(b)] for a, b in zip(ta, va)] if ta.size > 1 else float(va[0])
    return Scenario(name=name, source=mapping.source, pack=mapping.pack, seed=mapping.seed,
                    initial_soc=mapping.initial_soc, dt_s=dt_s, ambient_C=ambient,
                    steps=(Step("profile", options),))


def compare(recorded: dict[str, tuple], recording) -> dict:
    """Recorded BMS signals against the emulated BMS, at the recording's time base."""
    out = {}
    for key, ours in COMPARE.items():
        series = recorded.get(f"compare:{key}")
        if not series or not series[0].size:
            continue
        theirs = np.interp(recording.time_s, *series)
        diff = recording.signals[ours] - theirs
        out[key] = {"rms": float(np.sqrt(np.mean(diff ** 2))), "max_abs": float(np.max(np.abs(diff))),
                    "recorded_start": float(theirs[0]), "recorded_end": float(theirs[-1]),
                    "emulated_start": float(recording.signals[ours][0]),
                    "emulated_end": float(recording.signals[ours][-1])}
        recording.signals[f"recorded_{key}"] = theirs
    limited = np.abs(recording.signals["current_demand_A"] - recording.signals["current_A"]) > 1.0
    dts = np.diff(recording.time_s, prepend=recording.time_s[0]) if recording.time_s.size else recording.time_s
    out["time_limited_s"] = float(np.sum(dts[limited]))
    return out

