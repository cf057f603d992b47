"""Reports of a run: JUnit XML (one test case per expectation), a JSON summary, PNG plots and one HTML page.

Every file is written to a temporary name beside it and renamed into place, so a report is either the
previous one, absent, or whole (never a half-written ``recording.npz``). ``summary.json`` is written last:
a run's verdict exists only once everything before it was written. An error while writing any report
(disk full) or a stop signal before the summary marks the run incomplete, so it never reads as passed.
"""
from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from .expectations import Recording, Verdict
from .stopping import describe_stop

__all__ = ["summarise", "write_reports", "mark_incomplete", "clear_reports", "write_text_atomic", "REPORT_FILES"]

STATE_NAMES = ("INIT", "STANDBY", "PRECHARGE", "READY", "CHARGING", "FAULT", "SHUTDOWN")  # bms.BmsState order
LEVEL_NAMES = ("none", "warning", "error", "emergency")                                   # bms.FaultLevel order
_CHARGING = STATE_NAMES.index("CHARGING")
# the files that carry a verdict or the run's data: removed before a run starts, so a run that is killed
# (SIGKILL, power loss) never leaves an earlier run's summary in its place
REPORT_FILES = ("summary.json", "junit.xml", "report.html", "recording.npz")


def summarise(recording: Recording, verdicts: list[Verdict], *, scenario: str, dt_s: float, wall_s: float,
              capacity_kWh: float, simulated_s: float | None = None,
              usable_energy_end_kWh: float | None = None) -> dict:
    """The run's figures and verdict. ``simulated_s``: the simulated time the run covered (default: the
    recording's span); ``usable_energy_end_kWh``: the BMS's estimate of the energy it can still deliver at
    the end, from which the remaining range follows."""
    r, s = recording, recording.signals
    t = r.time_s
    dts = np.diff(t, prepend=t[0]) if t.size else t
    power_W = s["pack_voltage_V"] * s["current_A"]
    energy_out_kWh = float(np.sum(np.clip(power_W, 0, None) * dts) / 3.6e6)
    power_in_W = np.clip(-power_W, 0, None)
    energy_in_kWh = float(np.sum(power_in_W * dts) / 3.6e6)
    # a charger's energy is no part of what driving consumed (regeneration is)
    energy_charged_kWh = float(np.sum(power_in_W * dts * (s["state"] == _CHARGING)) / 3.6e6)
    distance_km = float(np.sum(s["speed_mps"] * dts) / 1000.0)
    net_kWh = energy_out_kWh - (energy_in_kWh - energy_charged_kWh)
    consumption = 100.0 * net_kWh / distance_km if distance_km > 0.1 else None
    soc_err = (s["soc_estimated"] - s["soc_true"]) * 100.0
    temp_err = s["temp_core_est_max_C"] - s["temp_core_max_C"]
    if simulated_s is None:
        simulated_s = float(t[-1] - t[0]) if t.size else 0.0
    per_km = consumption / 100.0 if consumption and consumption > 0 else None
    remaining = usable_energy_end_kWh if usable_energy_end_kWh is not None and np.isfinite(usable_energy_end_kWh) \
        else None
    return {
        "scenario": scenario,
        "complete": recording.complete,
        "truncated": recording.stop_cause == "max_sim_s",
        "stop_reason": recording.stop_reason,
        "incomplete_cause": recording.stop_cause or None,
        "passed": all(v.passed for v in verdicts) and recording.complete,
        "expectations": {"total": len(verdicts), "failed": sum(not v.passed for v in verdicts)},
        "simulated_s": float(simulated_s),
        "wall_s": wall_s,
        "realtime_factor": simulated_s / wall_s if wall_s > 0 and simulated_s > 0 else None,
        "distance_km": distance_km,
        "energy_out_kWh": energy_out_kWh,
        "energy_in_kWh": energy_in_kWh,
        "energy_charged_kWh": energy_charged_kWh,
        "consumption_kWh_per_100km": consumption,
        # what is left: the BMS's usable energy at the end over this run's consumption; and what a full
        # pack (nominal energy) would give at that consumption
        "range_remaining_km": remaining / per_km if per_km and remaining is not None else None,
        "range_full_pack_km": capacity_kWh / per_km if per_km else None,
        "usable_energy_end_kWh": remaining,
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
                   if name.startswith(("dtc:", "fault:", "state:FAULT", "bench:"))],
        "injections": r.injections,
        "cycle_times": r.cycle_times,
        "verdicts": [{"name": v.name, "kind": v.kind, "passed": v.passed, "message": v.message, "t_s": v.t_s,
                      "line": v.line} for v in verdicts],
    }


def mark_incomplete(summary: dict, recording: Recording, cause: str, reason: str) -> None:
    """The run did not do all it was asked (or its reports are not all there): never passed. The first
    cause stays the cause; later reasons are added to the stop reason."""
    if recording.complete:
        recording.complete, recording.stop_cause, recording.stop_reason = False, cause, reason
    elif reason not in recording.stop_reason:
        recording.stop_reason = f"{recording.stop_reason}; {reason}" if recording.stop_reason else reason
        recording.stop_cause = recording.stop_cause or cause
    summary.update(complete=False, passed=False, stop_reason=recording.stop_reason,
                   incomplete_cause=recording.stop_cause, truncated=recording.stop_cause == "max_sim_s")


def clear_reports(folder: Path) -> None:
    """Remove an earlier run's verdict files from ``folder`` (before a run writes its own)."""
    for name in REPORT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()


def write_junit(path: Path, scenario: str, source: str, verdicts: list[Verdict], recording: Recording,
                wall_s: float, properties: dict | None = None) -> None:
    failures = sum(not v.passed for v in verdicts) + (0 if recording.complete else 1)
    suite = ET.Element("testsuite", name=scenario, tests=str(len(verdicts) + (0 if recording.complete else 1)),
                       failures=str(failures), errors="0", time=f"{wall_s:.3f}")
    if properties:
        props = ET.SubElement(suite, "properties")
        for name, value in properties.items():
            ET.SubElement(props, "property", name=name, value=_short(value))
    for v in verdicts:
        attributes = {"classname": scenario, "name": v.name, "file": source}
        if v.line:
            attributes["line"] = str(v.line)
        case = ET.SubElement(suite, "testcase", attributes)
        if not v.passed:
            where = f" at t = {v.t_s:.3f} s" if v.t_s is not None else ""
            ET.SubElement(case, "failure", message=f"{v.name}{where}: {v.message}").text = v.message
        else:
            ET.SubElement(case, "system-out").text = v.message
    if not recording.complete:
        case = ET.SubElement(suite, "testcase", classname=scenario, name="run completed")
        ET.SubElement(case, "failure", message=f"the run is incomplete: {recording.stop_reason}")
    _atomic(path, lambda f: ET.ElementTree(suite).write(f, encoding="utf-8", xml_declaration=True))


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
        try:
            _atomic(path, lambda f: fig.savefig(f, dpi=110, format="png"))
        finally:
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
    keys = ["complete", "truncated", "stop_reason", "simulated_s", "wall_s", "realtime_factor", "distance_km",
            "energy_out_kWh", "energy_in_kWh", "energy_charged_kWh", "consumption_kWh_per_100km",
            "usable_energy_end_kWh", "range_remaining_km", "range_full_pack_km", "soc_start", "soc_end",
            "soc_error_rms_pct", "soc_error_max_pct", "core_temp_error_rms_K", "temp_core_max_C", "cell_voltage_min_V",
            "cell_voltage_max_V", "time_in_derating_s"]
    facts = _rows((k, summary.get(k)) for k in keys)
    inputs = _rows((k, v) for k, v in (summary.get("inputs") or {}).items())
    faults = "".join(f"<li>{f['t_s']:.3f} s: {html.escape(f['event'])} {html.escape(f['detail'])}</li>"
                     for f in summary["faults"]) or "<li>none</li>"
    cycle = summary.get("cycle_times") or {}
    cycle_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{c.get('frames', '')}</td><td>{_short(c.get('mean_interval_ms'))}</td>"
        f"<td>{_short(c.get('p99_deviation_ms'))}</td><td>{_short(c.get('max_deviation_ms'))}</td></tr>"
        for name, c in sorted(cycle.items()))
    cycle_table = (f"<table><tr><th>message</th><th>frames</th><th>mean interval ms</th><th>p99 |dev| ms</th>"
                   f"<th>max |dev| ms</th></tr>{cycle_rows}</table>") if cycle_rows else "<p>no CAN bus in this run</p>"
    logs = "".join(f"<li><a href='{html.escape(_href(log, path.parent))}'>{html.escape(str(log))}</a></li>"
                   for log in summary.get("logs") or []) or "<li>none (headless run)</li>"
    bench = summary.get("bench_control")
    bench_html = "" if bench is None else "<h2>Bench control (audit log)</h2><ul>" + ("".join(
        f"<li>{html.escape(str(e.get('wall_time', '')))}: t = {_short(e.get('t_s', ''))} s, {html.escape(e['result'])} "
        f"{html.escape(str(e.get('action', '')))} ({html.escape(str(e.get('source', '')))}) "
        f"{html.escape(json.dumps(e.get('fault') or e.get('name') or e.get('request')))}"
        f"{' - ' + html.escape(e['reason']) if e.get('reason') else ''}</li>" for e in bench) or "<li>none</li>") \
        + "</ul>"
    interactive = (f"<p><a href='{html.escape(summary['interactive_plots'])}'>Interactive plots</a> (zoomable, one "
                   "file, works offline)</p>") if summary.get("interactive_plots") else ""
    verdict = "PASSED" if summary["passed"] else ("INCOMPLETE" if not summary["complete"] else "FAILED")
    version = html.escape(str(summary.get("version", "")))
    write_text_atomic(path, f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(summary['scenario'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} .pass td:first-child{{color:green}}
.fail td:first-child{{color:#b00;font-weight:bold}} td,th{{padding:2px 8px;text-align:left;vertical-align:top}}
img{{max-width:100%}} h1 span{{font-size:60%;padding:2px 8px;border-radius:4px;background:{'#cfc' if summary['passed'] else '#fcc'}}}</style>
</head><body><h1>{html.escape(summary['scenario'])} <span>{verdict}</span></h1>
<p>{html.escape(summary.get('stop_reason') or '')}</p>
<h2>Expectations</h2><table>{rows or '<tr><td>none</td></tr>'}</table>
<h2>Inputs</h2><table>{inputs}</table>
<h2>Summary</h2><table>{facts}</table><h2>Faults and trouble codes</h2><ul>{faults}</ul>{bench_html}
<h2>Cycle times (sent by the BMS)</h2>{cycle_table}
<h2>Bus logs</h2><ul>{logs}</ul>
<h2>Plots</h2>{interactive}{figures}
<p><small>assb-bms-emulator {version}</small></p></body></html>""")


def _rows(items) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_short(v))}</td></tr>" for k, v in items)


def _href(log: str, folder: Path) -> str:
    """A link to a log: relative where it lies inside the report's folder, else a file URL."""
    path = Path(log)
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_uri()


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _atomic(path: Path, write) -> None:
    """``write(binary file)`` into a temporary file beside ``path``, synced, then renamed onto ``path``; on
    any error the temporary file is removed and ``path`` is left as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    _atomic(path, lambda f: f.write(data))


def write_reports(folder: Path, recording: Recording, verdicts: list[Verdict], summary: dict, *, source: str,
                  plots: bool = True, stop=None) -> dict[str, Path]:
    """Write every report into ``folder``; returns the paths written, by kind.

    Order: the recording, the plots, the HTML page and JUnit, and the summary last. ``stop`` (a
    ``hil.stopping.StopRequest``, a ``threading.Event``) is asked before the verdict
    files are written and again before the summary: a stop signal while reporting marks the run incomplete.
    An error writing any file is kept in ``summary["report_errors"]`` and marks the run incomplete; when the
    summary itself cannot be written, a JUnit file that would claim more is removed. ``summary`` and
    ``recording`` are updated in place.
    """
    out: dict[str, Path] = {}
    errors: list[str] = []
    said = [0]  # errors already in the stop reason

    def failed(what: str, exc: BaseException) -> None:
        if f"{what}: {exc}" not in errors:
            errors.append(f"{what}: {exc}")

    def attempt(kind: str, path: Path, write) -> None:
        try:
            write(path)
            out[kind] = path
        except Exception as exc:  # noqa: BLE001 - disk full, permissions ...: kept, and the run is incomplete
            failed(path.name, exc)

    def settle() -> tuple:
        if len(errors) > said[0]:
            mark_incomplete(summary, recording, "reports", "writing the reports failed: "
                            + "; ".join(errors[said[0]:]))
            said[0] = len(errors)
        if stop is not None and stop.is_set() and recording.stop_cause != "signal":
            mark_incomplete(summary, recording, "signal", f"{describe_stop(stop)} while the reports were written "
                            f"(the run had simulated {summary['simulated_s']:.2f} s)")
        summary["report_errors"] = list(errors)
        return recording.complete, recording.stop_reason

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        failed(str(folder), exc)
        settle()
        return out
    arrays: dict[str, Any] = {"time_s": recording.time_s, **recording.signals}
    attempt("recording", folder / "recording.npz", lambda p: _atomic(p, lambda f: np.savez_compressed(f, **arrays)))
    pngs: list[Path] = []
    if plots and recording.time_s.size > 1:
        try:
            pngs = write_plots(folder, recording)
        except Exception as exc:  # noqa: BLE001
            failed("plots", exc)

    if pngs and _interactive_available():  # zoomable plots in one offline file (the live extra: Bokeh)
        def interactive(p: Path) -> None:
            from .live.report_plots import write_interactive
            write_interactive(p, recording.time_s, recording.signals, recording.events, recording.injections,
                              summary["scenario"])
        attempt("interactive", folder / "report-interactive.html", interactive)
        if "interactive" in out:
            summary["interactive_plots"] = "report-interactive.html"

    def verdict_files() -> None:
        if pngs:
            attempt("html", folder / "report.html", lambda p: write_html(p, summary, pngs))
        properties = {k: v for k, v in (summary.get("inputs") or {}).items() if not isinstance(v, (list, dict))}
        properties["version"] = summary.get("version", "")
        attempt("junit", folder / "junit.xml", lambda p: write_junit(p, summary["scenario"], source, verdicts,
                                                                     recording, summary["wall_s"] or 0.0, properties))

    state = settle()
    for _ in range(3):  # a stop or a new error while they were written: the verdict files say so too
        verdict_files()
        state, before = settle(), state
        if state == before:
            break
    try:
        write_text_atomic(folder / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
        out["summary"] = folder / "summary.json"
    except Exception as exc:  # noqa: BLE001
        failed("summary.json", exc)
        settle()
        # without a summary nothing may claim a verdict: the verdict files say incomplete, or go
        written = {kind: out.pop(kind) for kind in ("junit", "html") if kind in out}
        verdict_files()
        for kind, path in written.items():
            if kind not in out:
                with contextlib.suppress(OSError):
                    path.unlink()
    return {k: out[k] for k in ("junit", "summary", "recording", "html", "interactive") if k in out}


def _interactive_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("bokeh") is not None


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
