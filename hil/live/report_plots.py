"""Interactive plots of a finished run: one HTML file with BokehJS inline, so it opens offline from anywhere.

The same recording the PNG plots draw (``recording.npz``: 10 Hz signals), on linked, zoomable time axes:
SOC truth against the estimate with 3 sigma, current against the limits, cell voltage extremes, core
against surface temperature, state, contactors and fault level with every event and injection (hover for
its name and detail). ``bms-emu view OUT_DIR`` writes it for a run folder and opens it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_interactive", "interactive_from_folder"]

_STATE_NAMES = ("INIT", "STANDBY", "PRECHARGE", "READY", "CHARGING", "FAULT", "SHUTDOWN")


def _document(time_s: np.ndarray, signals: dict, events: list, injections: dict, title: str):
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, FixedTicker, HoverTool
    from bokeh.models.annotations import Span
    from bokeh.plotting import figure

    s = {k: np.asarray(v, dtype=float) for k, v in signals.items()}
    est, sigma = s.get("soc_estimated", np.full_like(time_s, np.nan)), s.get("soc_3sigma", np.zeros_like(time_s))
    data = {"t_s": time_s, **s, "soc_lo": est - sigma, "soc_hi": est + sigma,
            "charge_limit_neg_A": -s.get("charge_limit_A", np.full_like(time_s, np.nan))}
    source = ColumnDataSource(data)
    tools = "xpan,xwheel_zoom,box_zoom,reset,save,crosshair"
    common: dict[str, Any] = {"height": 260, "sizing_mode": "stretch_width", "tools": tools,
                              "x_axis_label": "simulated time (s)"}
    figs = []
    f = figure(title=f"{title}: SOC, truth and estimate (band: 3 sigma)", **common)
    f.varea("t_s", "soc_lo", "soc_hi", source=source, fill_color="orange", fill_alpha=0.25)
    f.line("t_s", "soc_true", source=source, color="black", legend_label="truth")
    f.line("t_s", "soc_estimated", source=source, color="orange", legend_label="estimate")
    figs.append(f)
    x_range = f.x_range

    def linked(title_):
        fig = figure(title=title_, x_range=x_range, **common)
        figs.append(fig)
        return fig
    f = linked("Current and the published limits (A, > 0 discharging)")
    f.line("t_s", "current_A", source=source, color="navy", legend_label="current")
    f.line("t_s", "current_demand_A", source=source, color="lightsteelblue", legend_label="demand")
    f.line("t_s", "discharge_limit_A", source=source, color="red", line_dash="dashed", legend_label="discharge limit")
    f.line("t_s", "charge_limit_neg_A", source=source, color="green", line_dash="dashed", legend_label="-charge limit")
    f = linked("Cell voltage, lowest and highest group (V)")
    f.line("t_s", "cell_voltage_min_V", source=source, color="blue", legend_label="min")
    f.line("t_s", "cell_voltage_max_V", source=source, color="red", legend_label="max")
    f = linked("Temperature, hottest cell (degC): core against surface")
    f.line("t_s", "temp_core_max_C", source=source, color="firebrick", legend_label="core (truth)")
    f.line("t_s", "temp_surface_max_C", source=source, color="darkorange", legend_label="surface (truth)")
    f.line("t_s", "temp_core_est_max_C", source=source, color="purple", line_dash="dotted",
           legend_label="core (BMS estimate)")
    f = linked("State, contactors closed, fault level; events (hover) and injections (dashed)")
    f.step("t_s", "state", source=source, mode="after", color="navy", legend_label="state")
    contactors = s.get("contactors_closed", np.zeros_like(time_s)) * 0.6 + 8.0
    fault = s.get("fault_level", np.zeros_like(time_s)) * 0.5 + 9.0
    f.step(time_s, contactors, mode="after", color="red", legend_label="main contactors closed")
    f.step(time_s, fault, mode="after", color="crimson", legend_label="fault level")
    ev = ColumnDataSource({"t_s": [e[0] for e in events], "name": [e[1] for e in events],
                           "detail": [e[2] for e in events], "y": [7.0] * len(events)})
    marks = f.scatter("t_s", "y", source=ev, marker="inverted_triangle", size=8, color="gray")
    f.add_tools(HoverTool(renderers=[marks], tooltips=[("t", "@t_s{0.000} s"), ("event", "@name"),
                                                       ("", "@detail")]))
    for name, t in injections.items():
        f.add_layout(Span(location=float(t), dimension="height", line_dash="dashed",
                          line_color="green" if name.endswith(":cleared") else "crimson"))
    f.yaxis.ticker = FixedTicker(ticks=[*range(7), 8, 9])
    f.yaxis.major_label_overrides = {**dict(enumerate(_STATE_NAMES)), 8: "contactors", 9: "fault"}
    for fig in figs:
        fig.legend.click_policy = "hide"
        fig.legend.location = "top_left"
    return column(*figs, sizing_mode="stretch_width")


def write_interactive(path: Path, time_s, signals: dict, events: list, injections: dict, title: str) -> Path:
    """Write the interactive page of one recording to ``path`` (BokehJS inline: one self-contained file)."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    from ..report import write_text_atomic
    layout = _document(np.asarray(time_s, dtype=float), signals, list(events), dict(injections), title)
    write_text_atomic(Path(path), file_html(layout, INLINE, title=f"{title}: interactive plots"))
    return Path(path)


def interactive_from_folder(folder: str | Path) -> Path:
    """``report-interactive.html`` for a run folder, from its ``recording.npz`` and ``summary.json`` (the
    events and injections)."""
    from ..scenario import ScenarioError
    folder = Path(folder)
    npz, summary_path = folder / "recording.npz", folder / "summary.json"
    if not npz.is_file():
        raise ScenarioError(str(folder), None, "recording.npz", "not found: not a run's output folder "
                            "(bms-emu run --out FOLDER writes one)")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    time_s = arrays.pop("time_s")
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    events = [(f["t_s"], f["event"], f.get("detail", "")) for f in summary.get("faults", [])]
    return write_interactive(folder / "report-interactive.html", time_s, arrays, events,
                             summary.get("injections", {}), summary.get("scenario", folder.name))
