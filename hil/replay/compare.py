"""The recorded drive against the emulated one: signal by signal where the packs are alike, and energy,
charge, power and ΔSOC side by side, which mean something when the recorded pack differs from the emulated
one (voltage per cell then, and the pack voltage flagged as another pack's). Tolerances from the mapping
turn into verdicts, one JUnit test case each, beside one per check of the recording itself."""
from __future__ import annotations

import math

import numpy as np

from ..expectations import Recording, Verdict
from .mapping import COMPARE, ReplayMapping
from .recording import RecordedDrive

__all__ = ["compare", "verdicts", "recorded_series", "LIMITED_THRESHOLD_A", "DIFFERENT_PACK_RATIO"]

LIMITED_THRESHOLD_A = 1.0     # delivered current this far below the demand: the BMS's limits bit
DIFFERENT_PACK_RATIO = 0.15   # recorded and emulated pack voltages this far apart: another pack


def _held_at(t: np.ndarray, v: np.ndarray, at: np.ndarray) -> np.ndarray:
    return v[np.clip(np.searchsorted(t, at, side="right") - 1, 0, None)]


def _product_held(a, b):
    (ta, va), (tb, vb) = a, b
    start = max(ta[0], tb[0])
    times = np.unique(np.concatenate([ta, tb]))
    times = times[times >= start]
    return times, _held_at(ta, va, times) * _held_at(tb, vb, times)


def recorded_series(drive: RecordedDrive, mapping: ReplayMapping) -> dict[str, tuple]:
    """What the recording says of each comparable quantity: (time_s, value, where it comes from, the mapped
    signals it is made of)."""
    out: dict[str, tuple] = {}

    def have(key):
        series = drive.get(key)
        return series if series is not None and series[0].size else None

    refs = mapping.refs()
    for key in COMPARE:
        if (s := have(f"compare.{key}")) is not None:
            ref = refs[f"compare.{key}"]
            out[key] = (*s, f"compare.{key} ({ref.describe()})", [leaf.key for leaf in ref.leaves()])
    demand = mapping.demand_kind
    if demand in ("current_A", "power_W") and demand not in out and (s := have(f"demand.{demand}")) is not None:
        out[demand] = (*s, f"demand.{demand} ({mapping.demand.describe()})",
                       [leaf.key for leaf in mapping.demand.leaves()])
    if "power_W" not in out and "current_A" in out and "pack_voltage_V" in out:
        out["power_W"] = (*_product_held(out["current_A"][:2], out["pack_voltage_V"][:2]),
                          "recorded current × recorded pack voltage", out["current_A"][3] + out["pack_voltage_V"][3])
    cells = mapping.recorded_pack.get("series_cells")
    if cells and "pack_voltage_V" in out:
        t, v, _, leaves = out["pack_voltage_V"]
        out["cell_voltage_V"] = (t, v / cells, f"recorded pack voltage / {int(cells)} series cells", leaves)
    return out


def _emulated(recording: Recording, n_series: int) -> dict[str, np.ndarray]:
    s = recording.signals
    out = {key: s[ours] for key, ours in COMPARE.items() if ours in s}
    out["power_W"] = s["pack_voltage_V"] * s["current_A"]
    out["cell_voltage_V"] = s["pack_voltage_V"] / n_series
    return out


def _valid(t_rec: np.ndarray, at: np.ndarray, threshold: float) -> np.ndarray:
    """Recording times inside the recorded series' span and not inside one of its gaps."""
    index = np.searchsorted(t_rec, at, side="right") - 1
    inside = (index >= 0) & (at <= t_rec[-1] + threshold)
    since = at - t_rec[np.clip(index, 0, None)]
    return inside & (since <= threshold)


def _threshold(drive: RecordedDrive, source_keys: list[str]) -> float:
    values = [drive.signals[k]["gap_threshold_s"] for k in source_keys
              if k in drive.signals and drive.signals[k].get("gap_threshold_s") is not None]
    return max(values) if values else math.inf


def _integral(t: np.ndarray, v: np.ndarray, start: float, end: float) -> float:
    """∫ v dt over [start, end] of a held (zero-order) signal."""
    if not t.size or end <= start:
        return 0.0
    edges = np.clip(np.concatenate([t, [end]]), start, end)
    return float(np.sum(v * np.diff(edges)))  # a sample before ``start`` counts from ``start`` on


def compare(drive: RecordedDrive, recording: Recording, mapping: ReplayMapping, *, n_series: int,
            capacity_Ah: float) -> dict:
    """Signal-by-signal statistics and side-by-side totals (JSON-ready)."""
    recorded = recorded_series(drive, mapping)
    emulated = _emulated(recording, n_series)
    t = recording.time_s
    signals: dict[str, dict] = {}
    for key, (tr, vr, source, leaves) in recorded.items():
        if key not in emulated or not t.size:
            continue
        mask = _valid(tr, t, _threshold(drive, leaves))
        entry: dict = {"recorded": source, "emulated": "pack_voltage_V × current_A" if key == "power_W" else
                       f"{COMPARE.get(key, 'pack_voltage_V / series cells')}", "samples": int(mask.sum())}
        if mask.any():
            theirs = _held_at(tr, vr, t[mask])
            ours = emulated[key][mask]
            diff = ours - theirs
            worst = int(np.argmax(np.abs(diff)))
            entry.update(rms=float(np.sqrt(np.mean(diff ** 2))), max_abs=float(np.abs(diff[worst])),
                         max_abs_at_s=float(t[mask][worst]), mean_recorded=float(np.mean(theirs)),
                         mean_emulated=float(np.mean(ours)), recorded_start=float(theirs[0]),
                         recorded_end=float(theirs[-1]), emulated_start=float(ours[0]), emulated_end=float(ours[-1]))
        signals[key] = entry
    voltage = signals.get("pack_voltage_V")
    cells = mapping.recorded_pack.get("series_cells")
    if voltage and "mean_recorded" in voltage:
        ratio = voltage["mean_recorded"] / voltage["mean_emulated"] if voltage["mean_emulated"] else math.inf
        voltage["recorded_to_emulated_ratio"] = ratio
        different = (cells is not None and cells != n_series) or abs(ratio - 1.0) > DIFFERENT_PACK_RATIO
        voltage["different_pack"] = bool(different)
        if different:
            voltage["note"] = (f"the recorded pack is another pack (voltage {ratio:.2f} × the emulated"
                               + (f", {int(cells)} series cells against {n_series}" if cells else "") + "): compare "
                               + ("cell_voltage_V" if cells else "per cell: give [recorded_pack] series_cells"))
    return {"signals": signals, "totals": _totals(recorded, recording, capacity_Ah, mapping),
            "time_limited_s": _time_limited(recording)}


def _time_limited(recording: Recording) -> float:
    s = recording.signals
    t = recording.time_s
    if not t.size:
        return 0.0
    limited = np.abs(s["current_demand_A"] - s["current_A"]) > LIMITED_THRESHOLD_A
    dts = np.diff(t, prepend=t[0])
    return float(np.sum(dts[limited]))


def _totals(recorded: dict, recording: Recording, capacity_Ah: float, mapping: ReplayMapping) -> dict:
    """Energy, charge, peak power and ΔSOC, recorded beside emulated, over the span the recording covers."""
    t, s = recording.time_s, recording.signals
    if not t.size:
        return {}
    edges = np.concatenate([t, [t[-1] + (t[-1] - t[-2] if t.size > 1 else 0.0)]])
    spans = [recorded[k][0] for k in ("power_W", "current_A", "soc") if k in recorded]
    start = max(0.0, min(float(x[0]) for x in spans)) if spans else 0.0
    end = min(float(edges[-1]), max(float(x[-1]) for x in spans)) if spans else float(edges[-1])
    power = s["pack_voltage_V"] * s["current_A"]
    out: dict = {"window_s": [start, end]}
    if "power_W" in recorded:
        tr, vr, source, _ = recorded["power_W"]
        out["energy_kWh"] = {"recorded": _integral(tr, vr, start, end) / 3.6e6,
                             "emulated": _integral(edges[:-1], power, start, end) / 3.6e6, "recorded_from": source}
        out["energy_out_kWh"] = {"recorded": _integral(tr, np.clip(vr, 0, None), start, end) / 3.6e6,
                                 "emulated": _integral(edges[:-1], np.clip(power, 0, None), start, end) / 3.6e6}
        out["energy_in_kWh"] = {"recorded": _integral(tr, np.clip(-vr, 0, None), start, end) / 3.6e6,
                                "emulated": _integral(edges[:-1], np.clip(-power, 0, None), start, end) / 3.6e6}
        window = (t >= start) & (t <= end)
        out["peak_discharge_kW"] = {"recorded": float(np.max(vr, initial=0.0)) / 1e3,
                                    "emulated": float(np.max(power[window], initial=0.0)) / 1e3}
        out["peak_regen_kW"] = {"recorded": float(-np.min(vr, initial=0.0)) / 1e3,
                                "emulated": float(-np.min(power[window], initial=0.0)) / 1e3}
    if "current_A" in recorded:
        tr, vr, source, _ = recorded["current_A"]
        out["charge_Ah"] = {"recorded": _integral(tr, vr, start, end) / 3600.0,
                            "emulated": _integral(edges[:-1], s["current_A"], start, end) / 3600.0,
                            "recorded_from": source}
    if "soc" in recorded:
        tr, vr, _, _ = recorded["soc"]
        at = (_held_at(tr, vr, np.array([start, end])))
        k0, k1 = int(np.searchsorted(t, start)), min(int(np.searchsorted(t, end)), t.size - 1)
        out["delta_soc"] = {"recorded": float(at[1] - at[0]),
                            "emulated": float(s["soc_estimated"][k1] - s["soc_estimated"][k0]),
                            "emulated_true": float(s["soc_true"][k1] - s["soc_true"][k0])}
    if "charge_Ah" in out:  # what each pack's ΔSOC would be for the charge that flowed
        expected = {"emulated_pack": -out["charge_Ah"]["emulated"] / capacity_Ah}
        recorded_capacity = mapping.recorded_pack.get("capacity_Ah")
        if recorded_capacity:
            expected["recorded_pack"] = -out["charge_Ah"]["recorded"] / recorded_capacity
        out["delta_soc_from_charge"] = expected
    for entry in out.values():
        if isinstance(entry, dict) and "recorded" in entry and "emulated" in entry:
            entry["difference"] = entry["emulated"] - entry["recorded"]
    return out


# --- verdicts -----------------------------------------------------------------------------------
def verdicts(drive: RecordedDrive, comparison: dict, mapping: ReplayMapping) -> list[Verdict]:
    """One verdict per check of the recording, one per tolerance in the mapping."""
    out = [Verdict(f"recording {f.check}: {f.subject}", "replay-recording", not f.fails,
                   f.message, None, f.line) for f in drive.findings]
    for tol in mapping.tolerances:
        out.append(_tolerance_verdict(tol, comparison))
    return out


def _tolerance_verdict(tol, comparison: dict) -> Verdict:
    name, q = f"tolerance {tol.quantity}", tol.quantity
    if q == "time_limited_s":
        value = comparison["time_limited_s"]
        ok = value <= tol.limits["max"]
        return Verdict(name, "replay-tolerance", ok, f"the BMS limited the recorded demand for {value:.2f} s "
                       f"(max {tol.limits['max']:g} s)", None, tol.line)
    if q in comparison["totals"]:
        entry = comparison["totals"][q]
        rec, emu = entry["recorded"], entry["emulated"]
        parts, ok = [], True
        for key, limit in tol.limits.items():
            measured = abs(emu - rec) if key == "max_abs" else (abs(emu - rec) / abs(rec) if rec else math.inf)
            ok &= measured <= limit
            parts.append(f"{key} {measured:.4g} (limit {limit:g})")
        return Verdict(name, "replay-tolerance", bool(ok), f"emulated {emu:.4g} against recorded {rec:.4g}: "
                       + ", ".join(parts), None, tol.line)
    entry = comparison["signals"].get(q)
    if not entry or "rms" not in entry:
        return Verdict(name, "replay-tolerance", False, f"no recorded samples of {q} to compare", None, tol.line)
    if entry.get("different_pack"):
        return Verdict(name, "replay-tolerance", False, f"not comparable: {entry['note']}", None, tol.line)
    parts, ok = [], True
    for key, limit in tol.limits.items():
        measured = entry["rms"] if key == "rms_max" else entry["max_abs"]
        ok &= measured <= limit
        parts.append(f"{'rms' if key == 'rms_max' else 'max |error|'} {measured:.4g} (limit {limit:g})")
    where = f"; the largest at t = {entry['max_abs_at_s']:.1f} s" if not ok else ""
    return Verdict(name, "replay-tolerance", bool(ok), f"emulated against recorded ({entry['samples']} samples): "
                   + ", ".join(parts) + where, None, tol.line)
