"""Reports of a run: JUnit XML (one test case per expectation), a JSON summary, PNG plots and one HTML page."""
from __future__ import annotations

import base64
import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .expectations import Recording, Verdict

__all__ = ["summarise", "write_reports"]

STATE_NAMES = ("INIT", "STANDBY", "PRECHARGE", "READY", "CHARGING", "FAULT", "SHUTDOWN")  # bms.BmsState order
LEVEL_NAMES = ("none", "warning", "error", "emergency")                                   # bms.FaultLevel order


def summarise(recording: Recording, verdicts: list[Verdict], *, scenario: str, dt_s: float, wall_s: float,
              capacity_kWh: float) -> dict:
    r, s = recording, recording.signals
    t = r.time_s
    dts = np.diff(t, prepend=t[0]) if t.size else t
    power_W = s["pack_voltage_V"] * s["current_A"]
    energy_out_kWh = float(np.sum(np.clip(power_W, 0, None) * dts) / 3.6e6)
    energy_in_kWh = float(np.sum(np.clip(-power_W, 0, None) * dts) / 3.6e6)
    distance_km = float(np.sum(s["speed_mps"] * dts) / 1000.0)
    net_kWh = energy_out_kWh - energy_in_kWh
    consumption = 100.0 * net_kWh / distance_km if distance_km > 0.1 else None
    soc_err = (s["soc_estimated"] - s["soc_true"]) * 100.0
    temp_err = s["temp_core_est_max_C"] - s["temp_core_max_C"]
    simulated = float(t[-1] - t[0]) if t.size else 0.0
    return {
        "scenario": scenario,
        "complete": recording.complete,
        "stop_reason": recording.stop_reason,
        "passed": all(v.passed for v in verdicts) and recording.complete,
        "expectations": {"total": len(verdicts), "failed": sum(not v.passed for v in verdicts)},
        "simulated_s": simulated,
        "wall_s": wall_s,
        "realtime_factor": simulated / wall_s if wall_s > 0 else None,
        "distance_km": distance_km,
        "energy_out_kWh": energy_out_kWh,
        "energy_in_kWh": energy_in_kWh,
        "consumption_kWh_per_100km": consumption,
        "range_estimate_km": (capacity_kWh / consumption * 100.0) if consumption and consumption > 0 else None,
        "soc_start": float(s["soc_true"][0]) if t.size else None,
        "soc_end": float(s["soc_true"][-1]) if t.size else None,
        "soc_error_rms_pct": float(np.sqrt(np.mean(soc_err ** 2))) if t.size else None,
        "soc_error_max_pct": float(np.max(np.abs(soc_err))) if t.size else None,
        "core_temp_error_rms_K": float(np.sqrt(np.mean(temp_err ** 2))) if t.size else None,
        "core_temp_error_max_K": float(np.max(np.abs(temp_err))) if t.size else None,
        "temp_core_max_C": float(np.max(s["temp_core_max_C"])) if t.size else None,
        "cell_voltage_min_V": float(np.min(s["cell_voltage_min_V"])) if t.size else None,
        "cell_voltage_max_V": float(np.max(s["cell_voltage_max_V"])) if t.size else None,
        "time_in_derating_s": float(np.sum(dts[s["derating"] > 0])) if t.size else 0.0,
        "faults": [{"t_s": round(ev_t, 3), "event": name, "detail": detail} for ev_t, name, detail in r.events
                   if name.startswith(("dtc:", "fault:", "state:FAULT"))],
        "injections": r.injections,
        "cycle_times": r.cycle_times,
        "verdicts": [{"name": v.name, "kind": v.kind, "passed": v.passed, "message": v.message, "t_s": v.t_s,
                      "line": v.line} for v in verdicts],
    }


def write_junit(path: Path, scenario: str, source: str, verdicts: list[Verdict], recording: Recording,
                wall_s: float) -> None:
    failures = sum(not v.passed for v in verdicts) + (0 if recording.complete else 1)
    suite = ET.Element("testsuite", name=scenario, tests=str(len(verdicts) + (0 if recording.complete else 1)),
                       failures=str(failures), errors="0", time=f"{wall_s:.3f}")
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=scenario, name=v.name, file=source,
                             **({"line": str(v.line)} if v.line else {}))
        if not v.passed:
            where = f" at t = {v.t_s:.3f} s" if v.t_s is not None else ""
            ET.SubElement(case, "failure", message=f"{v.name}{where}: {v.message}").text = v.message
        else:
            ET.SubElement(case, "system-out").text = v.message
    if not recording.complete:
        case = ET.SubElement(suite, "testcase", classname=scenario, name="run completed")
        ET.SubElement(case, "failure", message=f"the run stopped early: {recording.stop_reason}")
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def write_plots(folder: Path, recording: Recording) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, s = recording, recording.signals
    t = r.time_s
    paths = []

    def save(fig, name):
        path = folder / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(t, 100 * (s["soc_estimated"] - s["soc_3sigma"]), 100 * (s["soc_estimated"] + s["soc_3sigma"]),
                    color="tab:blue", alpha=0.2, label="estimate ±3σ")
    ax.plot(t, 100 * s["soc_true"], color="black", lw=1.2, label="true (plant)")
    ax.plot(t, 100 * s["soc_estimated"], color="tab:blue", lw=1.0, label="estimated (BMS)")
    ax.set(xlabel="time (s)", ylabel="SOC (%)", title="State of charge: truth against the BMS estimate")
    ax.legend(loc="best")
    save(fig, "soc.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(t, s["cell_voltage_min_V"], s["cell_voltage_max_V"], color="tab:purple", alpha=0.3,
                    label="min … max series group")
    ax.plot(t, s["cell_voltage_min_V"], color="tab:purple", lw=0.8)
    ax.plot(t, s["cell_voltage_max_V"], color="tab:purple", lw=0.8)
    ax.set(xlabel="time (s)", ylabel="cell voltage (V)", title="Cell voltage spread")
    ax.legend(loc="best")
    save(fig, "cell_voltage.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, s["temp_core_max_C"], color="tab:red", label="hottest core (plant)")
    ax.plot(t, s["temp_core_est_max_C"], color="tab:orange", ls="--", label="hottest core (BMS estimate)")
    ax.plot(t, s["temp_surface_max_C"], color="tab:green", label="hottest surface (plant)")
    ax.set(xlabel="time (s)", ylabel="temperature (°C)", title="Temperatures: core against surface")
    ax.legend(loc="best")
    save(fig, "temperatures.png")

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, s["current_demand_A"], color="0.6", lw=0.8, label="demand")
    ax.plot(t, s["current_A"], color="tab:blue", lw=1.0, label="pack current")
    ax.plot(t, s["discharge_limit_A"], color="tab:red", lw=1.0, label="discharge limit")
    ax.plot(t, -s["charge_limit_A"], color="tab:green", lw=1.0, label="charge limit")
    ax.set(xlabel="time (s)", ylabel="current (A, > 0 discharging)", title="Current against the published limits")
    ax.legend(loc="best")
    save(fig, "current_limits.png")

    fig, ax = plt.subplots(figsize=(10, 3.4))
    ax.step(t, s["state"], where="post", color="tab:blue", label="BMS state")
    ax.set_yticks(range(len(STATE_NAMES)), STATE_NAMES)
    level = ax.twinx()
    level.step(t, s["fault_level"], where="post", color="tab:red", label="fault level")
    level.set_yticks(range(len(LEVEL_NAMES)), LEVEL_NAMES, color="tab:red")
    level.set_ylim(-0.3, len(LEVEL_NAMES) - 0.7)
    for ev_t, name, _ in r.events:
        if not name.startswith("state:"):
            ax.axvline(ev_t, color="0.8", lw=0.6)
    for name, ev_t in r.injections.items():
        ax.axvline(ev_t, color="tab:red", ls="--", lw=1.0)
        ax.annotate(name, (ev_t, len(STATE_NAMES) - 1), fontsize=7, rotation=90, va="top")
    ax.set(xlabel="time (s)", title="State (blue), fault level (red), BMS events (grey), fault injections (dashed)")
    save(fig, "events.png")
    return paths


def write_html(path: Path, summary: dict, plots: list[Path]) -> None:
    rows = "".join(
        f"<tr class={'pass' if v['passed'] else 'fail'}><td>{'PASS' if v['passed'] else 'FAIL'}</td>"
        f"<td>{html.escape(v['name'])}</td><td>{html.escape(v['message'])}</td></tr>" for v in summary["verdicts"])
    figures = "".join(
        f"<figure><img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        f"</figure>" for p in plots)
    keys = ["complete", "stop_reason", "simulated_s", "realtime_factor", "distance_km", "energy_out_kWh",
            "energy_in_kWh", "consumption_kWh_per_100km", "range_estimate_km", "soc_start", "soc_end",
            "soc_error_rms_pct", "soc_error_max_pct", "core_temp_error_rms_K", "temp_core_max_C",
            "cell_voltage_min_V", "cell_voltage_max_V", "time_in_derating_s"]
    facts = "".join(f"<tr><th>{k}</th><td>{html.escape(_short(summary.get(k)))}</td></tr>" for k in keys)
    faults = "".join(f"<li>{f['t_s']:.3f} s: {html.escape(f['event'])} {html.escape(f['detail'])}</li>"
                     for f in summary["faults"]) or "<li>none</li>"
    verdict = "PASSED" if summary["passed"] else ("INCOMPLETE" if not summary["complete"] else "FAILED")
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(summary['scenario'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} .pass td:first-child{{color:green}}
.fail td:first-child{{color:#b00;font-weight:bold}} td,th{{padding:2px 8px;text-align:left;vertical-align:top}}
img{{max-width:100%}} h1 span{{font-size:60%;padding:2px 8px;border-radius:4px;background:{'#cfc' if summary['passed'] else '#fcc'}}}</style>
</head><body><h1>{html.escape(summary['scenario'])} <span>{verdict}</span></h1>
<h2>Expectations</h2><table>{rows or '<tr><td>none</td></tr>'}</table>
<h2>Summary</h2><table>{facts}</table><h2>Faults and trouble codes</h2><ul>{faults}</ul>
<h2>Plots</h2>{figures}</body></html>""", encoding="utf-8")


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_reports(folder: Path, recording: Recording, verdicts: list[Verdict], summary: dict, *, source: str,
                  plots: bool = True) -> dict[str, Path]:
    """Write every report into ``folder``; returns their paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"junit": folder / "junit.xml", "summary": folder / "summary.json"}
    write_junit(out["junit"], summary["scenario"], source, verdicts, recording, summary["wall_s"] or 0.0)
    out["summary"].write_text(json.dumps(summary, indent=2, default=_json_default) + "\n", encoding="utf-8")
    np.savez_compressed(folder / "recording.npz", time_s=recording.time_s, **recording.signals)
    out["recording"] = folder / "recording.npz"
    if plots and recording.time_s.size > 1:
        pngs = write_plots(folder, recording)
        out["html"] = folder / "report.html"
        write_html(out["html"], summary, pngs)
    return out


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
