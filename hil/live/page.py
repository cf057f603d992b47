"""The live page: one Bokeh document per browser session, fed from the telemetry ring by a periodic callback.

What it shows: the cell heat-maps in the pack's physical layout (modules x series groups, balancing marked;
modules x cells for temperature), SOC truth against the estimate with its 3 sigma band, current against
the limits, core against surface temperature, the state and contactor timeline with events, the DTC table
with decoded ISO 14229 status bits, CAN health, simulated against wall time; and the bench control (arm,
then confirm). The callback reads the ring, never the loop's objects, and skips its update while the
browser has not taken the last one (``_backlogged``): a tab that stops reading costs nothing.
"""
from __future__ import annotations

import html
import json
import math
import time
from typing import Any

from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, FixedTicker, HoverTool, LinearColorMapper, Range1d
from bokeh.models.widgets import Button, DataTable, Div, PasswordInput, Select, TableColumn, TextInput
from bokeh.palettes import Inferno256, Viridis256
from bokeh.plotting import figure

from .control import ControlError

__all__ = ["build_page", "FAULT_EXAMPLES", "STATE_CODES"]

UPDATE_MS = 500   # the page's refresh: enough for a person, light for a loaded machine's browser
ROLLOVER = 3000      # time-series points kept per session (a longer run scrolls)
ARM_TIMEOUT_S = 30.0   # default: an armed request not confirmed within this wall time is dropped
STATE_CODES = {"INIT": 0, "STANDBY": 1, "PRECHARGE": 2, "READY": 3, "CHARGING": 4, "FAULT": 5, "SHUTDOWN": 6,
               "EXTERNAL": -1}
_CONTACTORS = ("main_positive", "main_negative", "precharge")

# one example per fault kind of the scenario vocabulary, prefilled in the options field
FAULT_EXAMPLES = {
    "sensor": {"sensor": "cell_voltage", "index": 17, "fault": "open_wire"},
    "internal_short": {"cell": 40, "resistance_ohm": 5.0},
    "stack_pressure": {"pressure_MPa": 1.0, "cells": "all"},
    "contactor_weld": {"contactor": "main_positive"},
    "coolant_loss": {"cooling_factor": 0.0},
    "vcu_silence": {},
    "can_corrupt": {"what": "crc"},
    "bus_off": {},
    "isotp": {"fault": "drop_cf", "index": 2, "side": "ecu"},
    "uds_pending": {"duration_s": 5.0},
}

_TS_COLUMNS = ("t_s", "wall_s", "realtime_factor", "soc_true", "soc_estimated", "soc_lo", "soc_hi", "current_A",
               "discharge_limit_A", "charge_limit_neg_A", "temp_core_max_C", "temp_surface_max_C",
               "temp_core_est_max_C", "state_code", "mp", "mn", "pc")


def _nan(x):
    return float("nan") if x is None else x


def _ts_row(s: dict) -> dict:
    est, sigma = s["soc_estimated"], s["soc_3sigma"]
    closed = s["contactors_closed"]
    return {"t_s": s["t_s"], "wall_s": s["wall_s"], "realtime_factor": s["realtime_factor"],
            "soc_true": s["soc_true"], "soc_estimated": est, "soc_lo": est - sigma, "soc_hi": est + sigma,
            "current_A": s["current_A"], "discharge_limit_A": s["discharge_limit_A"],
            "charge_limit_neg_A": -s["charge_limit_A"], "temp_core_max_C": s["temp_core_max_C"],
            "temp_surface_max_C": s["temp_surface_max_C"], "temp_core_est_max_C": s["temp_core_est_max_C"],
            "state_code": STATE_CODES.get(s["state"], -1),
            "mp": 8 + 0.6 * closed["main_positive"], "mn": 9 + 0.6 * closed["main_negative"],
            "pc": 10 + 0.6 * closed["precharge"]}


def _backlogged(doc) -> bool:
    """Whether the browser has not yet taken the last update (its websocket still has a write pending).
    Bokeh keeps no bound on what it queues for a client that stops reading, so the page does."""
    try:
        session = doc.session_context._session  # bokeh.server.session.ServerSession
        for connection in session._subscribed_connections:
            handler = connection._socket
            ws = handler.ws_connection
            if handler.write_lock.locked() or (ws is not None and ws.stream.writing()):
                return True
    except AttributeError:
        return False
    return False


def build_page(doc, session) -> None:
    t = session.telemetry
    control = session.control
    lay = t.layout
    n_mod, gpm, npar = lay["n_modules"], lay["groups_per_module"], lay["n_parallel"]
    n_series = lay["n_series"]
    name = session.info.get("scenario", "bms-emu")
    doc.title = f"bms-emu live: {name}"

    # --- heat-maps in the physical layout ---------------------------------------------------------
    groups = ColumnDataSource({"x": [g % gpm for g in range(n_series)], "y": [g // gpm for g in range(n_series)],
                               "group": list(range(n_series)), "v_mV": [0.0] * n_series,
                               "v_meas_mV": [0.0] * n_series, "bal": [0.0] * n_series})
    vmap = LinearColorMapper(palette=Viridis256, low=3000, high=4300)
    fv = figure(title="Series-group voltage (truth), balancing marked x", height=260, width=560,
                x_range=Range1d(start=-0.5, end=gpm - 0.5), y_range=Range1d(start=n_mod - 0.5, end=-0.5),
                tools="hover,save", x_axis_label="group in module", y_axis_label="module", name="heatmap_voltage")
    fv.rect("x", "y", 0.95, 0.95, source=groups, fill_color={"field": "v_mV", "transform": vmap}, line_color=None)
    fv.scatter("x", "y", source=groups, marker="x", size=9, line_color="white", line_alpha="bal", line_width=2)
    fv_hover = fv.select_one({"type": HoverTool})
    assert isinstance(fv_hover, HoverTool)   # tools="hover,save" made exactly one
    fv_hover.tooltips = [("group", "@group"), ("truth", "@v_mV{0.0} mV"),
                         ("measured", "@v_meas_mV{0.0} mV"), ("balancing", "@bal")]
    n_cells_mod = gpm * npar
    n_cells = n_series * npar
    cells = ColumnDataSource({"x": [(c // npar) % gpm * npar + c % npar for c in range(n_cells)],
                              "y": [(c // npar) // gpm for c in range(n_cells)], "cell": list(range(n_cells)),
                              "surface_C": [0.0] * n_cells, "core_C": [0.0] * n_cells})
    tmap = LinearColorMapper(palette=Inferno256, low=15, high=45)
    ft = figure(title="Cell surface temperature", height=260, width=560,
                x_range=Range1d(start=-0.5, end=n_cells_mod - 0.5),
                y_range=Range1d(start=n_mod - 0.5, end=-0.5), tools="hover,save", x_axis_label="cell in module",
                y_axis_label="module", name="heatmap_temperature")
    ft.rect("x", "y", 0.95, 0.95, source=cells, fill_color={"field": "surface_C", "transform": tmap},
            line_color=None)
    ft_hover = ft.select_one({"type": HoverTool})
    assert isinstance(ft_hover, HoverTool)   # tools="hover,save" made exactly one
    ft_hover.tooltips = [("cell", "@cell"), ("surface", "@surface_C{0.00} degC"), ("core", "@core_C{0.00} degC")]

    # --- time series -------------------------------------------------------------------------------
    ts = ColumnDataSource({k: [] for k in _TS_COLUMNS}, name="timeseries")
    common: dict[str, Any] = {"height": 220, "width": 560, "tools": "xpan,xwheel_zoom,box_zoom,reset,save",
              "x_axis_label": "simulated time (s)"}
    fs = figure(title="SOC: truth and estimate (band: 3 sigma)", **common)
    fs.varea("t_s", "soc_lo", "soc_hi", source=ts, fill_alpha=0.25, fill_color="orange")
    fs.line("t_s", "soc_true", source=ts, legend_label="truth", color="black")
    fs.line("t_s", "soc_estimated", source=ts, legend_label="estimate", color="orange")
    fi = figure(title="Current and the published limits (A, > 0 discharging)", x_range=fs.x_range, **common)
    fi.line("t_s", "current_A", source=ts, legend_label="current", color="navy")
    fi.line("t_s", "discharge_limit_A", source=ts, legend_label="discharge limit", color="red", line_dash="dashed")
    fi.line("t_s", "charge_limit_neg_A", source=ts, legend_label="-charge limit", color="green", line_dash="dashed")
    fT = figure(title="Temperature: core against surface (hottest cell, degC)", x_range=fs.x_range, **common)
    fT.line("t_s", "temp_core_max_C", source=ts, legend_label="core (truth)", color="firebrick")
    fT.line("t_s", "temp_surface_max_C", source=ts, legend_label="surface (truth)", color="darkorange")
    fT.line("t_s", "temp_core_est_max_C", source=ts, legend_label="core (BMS estimate)", color="purple",
            line_dash="dotted")
    events = ColumnDataSource({"t_s": [], "name": [], "detail": [], "y": []}, name="events")
    fe = figure(title="State, contactors (raised: closed) and events", x_range=fs.x_range,
                y_range=Range1d(start=-1.5, end=11.5),
                **{**common, "height": 260})
    fe.step("t_s", "state_code", source=ts, mode="after", color="navy")
    for key, color in (("mp", "red"), ("mn", "blue"), ("pc", "gray")):
        fe.step("t_s", key, source=ts, mode="after", color=color)
    ev = fe.scatter("t_s", "y", source=events, marker="inverted_triangle", size=9, color="crimson")
    fe.add_tools(HoverTool(renderers=[ev], tooltips=[("t", "@t_s{0.00} s"), ("event", "@name"),
                                                     ("", "@detail")]))
    fe.yaxis.ticker = FixedTicker(ticks=[*range(7), 8, 9, 10])
    fe.yaxis.major_label_overrides = {**{v: k for k, v in STATE_CODES.items() if v >= 0},
                                      8: "main+", 9: "main-", 10: "precharge"}
    fw = figure(title="Wall time against simulated time", height=220, width=560, tools="box_zoom,reset,save",
                x_axis_label="simulated time (s)", y_axis_label="wall time (s)")
    fw.line("t_s", "wall_s", source=ts, color="black", legend_label="this run")
    fw.line("t_s", "t_s", source=ts, color="gray", line_dash="dashed", legend_label="real time")
    fw.legend.location = "top_left"

    # --- tables ------------------------------------------------------------------------------------
    dtcs = ColumnDataSource({k: [] for k in ("dtc", "name", "status", "bits", "level", "occurrences", "first_s",
                                             "last_s")}, name="dtcs")
    dtc_table = DataTable(source=dtcs, name="dtc_table", width=1120, height=160, index_position=None, columns=[
        TableColumn(field="dtc", title="DTC", width=90), TableColumn(field="name", title="protection", width=190),
        TableColumn(field="status", title="status", width=60), TableColumn(field="bits", title="status bits",
                                                                           width=480),
        TableColumn(field="level", title="level", width=40), TableColumn(field="occurrences", title="count",
                                                                         width=40),
        TableColumn(field="first_s", title="first (s)", width=70), TableColumn(field="last_s", title="last (s)",
                                                                               width=70)])
    recent = ColumnDataSource({"t_s": [], "name": [], "detail": []}, name="recent_events")   # newest first
    event_table = DataTable(source=recent, name="event_table", width=560, height=200, index_position=None,
                            columns=[TableColumn(field="t_s", title="t (s)", width=60),
                                     TableColumn(field="name", title="event", width=220),
                                     TableColumn(field="detail", title="detail", width=280)])
    status = Div(text="waiting for the first snapshot ...", name="status", width=1120)
    can_div = Div(text="", name="can_health", width=560)

    # --- bench control -----------------------------------------------------------------------------
    request = doc.session_context.request if doc.session_context is not None else None
    token_arg = ""
    if request is not None and "token" in (request.arguments or {}):
        token_arg = request.arguments["token"][0].decode(errors="replace")
    kind_options: list[str | None] = list(FAULT_EXAMPLES)
    kind = Select(title="fault kind", value="sensor", options=kind_options, name="fault_kind")
    options = TextInput(title="options (JSON, scenario keys)", value=json.dumps(FAULT_EXAMPLES["sensor"]),
                        width=420, name="fault_options")
    fault_name = TextInput(title="name (optional)", value="", width=160, name="fault_name")
    token = PasswordInput(title="control token (printed at start)", value=token_arg, width=260, name="token")
    arm = Button(label="Arm injection", button_type="warning", name="arm")
    active_options: list[str | None] = [""]
    active = Select(title="active bench injections", value="", options=active_options, name="active")
    arm_clear = Button(label="Arm clear", button_type="warning", name="arm_clear")
    confirm = Button(label="Confirm", button_type="danger", disabled=True, name="confirm")
    cancel = Button(label="Cancel", disabled=True, name="cancel")
    control_status = Div(text="nothing armed", name="control_status", width=1120)
    armed: dict = {"command": None, "at": 0.0}
    arm_timeout_s = float(session.info.get("arm_timeout_s", ARM_TIMEOUT_S))

    def on_kind(attr, old, new):
        options.value = json.dumps(FAULT_EXAMPLES.get(new, {}))
    kind.on_change("value", on_kind)

    def set_armed(command, text):
        armed["command"], armed["at"] = command, time.monotonic()
        confirm.disabled = cancel.disabled = command is None
        control_status.text = text

    def arm_body(body):
        try:
            command = control.command(body, source="page")
        except ControlError as exc:
            set_armed(None, f"<b style='color:#b00'>refused:</b> {html.escape(str(exc))}")
            return
        what = json.dumps(command.describe().get("fault") or {"clear": command.name or "all"})
        set_armed(command, f"<b>ARMED</b> {command.action} {html.escape(what)}: press Confirm within "
                           f"{arm_timeout_s:.0f} s")

    def on_arm():
        try:
            opts = json.loads(options.value or "{}")
        except ValueError as exc:
            set_armed(None, f"<b style='color:#b00'>options:</b> not JSON: {html.escape(str(exc))}")
            return
        body = {"action": "inject", "fault": {"kind": kind.value, **(opts if isinstance(opts, dict) else {})}}
        if fault_name.value.strip():
            body["name"] = fault_name.value.strip()
        arm_body(body)
    arm.on_click(on_arm)

    def on_arm_clear():
        arm_body({"action": "clear", **({"name": active.value} if active.value else {})})
    arm_clear.on_click(on_arm_clear)

    def on_cancel():
        set_armed(None, "disarmed")
    cancel.on_click(on_cancel)

    def show_result(future):
        try:
            entries = future.result()
        except ControlError as exc:
            control_status.text = f"<b style='color:#b00'>failed:</b> {html.escape(str(exc))}"
            return
        control_status.text = "<b style='color:green'>applied</b> " + html.escape(
            "; ".join(f"{e['action']} {e.get('fault', {}).get('name', e.get('name', ''))} at t = {e['t_s']:.2f} s"
                      for e in entries))

    def on_confirm():
        command = armed["command"]
        if command is None:
            return
        if time.monotonic() - armed["at"] > arm_timeout_s:
            set_armed(None, "the arming expired: arm again")
            return
        set_armed(None, "sent ...")
        if not control.check_token(token.value):
            control.write_audit({**command.describe(), "result": "refused",
                                 "reason": "wrong token" if token.value else "missing token"})
            control_status.text = "<b style='color:#b00'>refused:</b> wrong or missing control token"
            return
        try:
            future = control.submit(command)
        except ControlError as exc:
            control_status.text = f"<b style='color:#b00'>refused:</b> {html.escape(str(exc))}"
            return
        future.add_done_callback(lambda f: doc.add_next_tick_callback(lambda: show_result(f)))
    confirm.on_click(on_confirm)

    # --- the periodic update -----------------------------------------------------------------------
    cursors = {"samples": max(0, t.samples.pushed - ROLLOVER), "events": 0, "skipped": 0}

    def update():
        if _backlogged(doc):
            cursors["skipped"] += 1
            return
        items, cursors["samples"], _ = t.samples.since(cursors["samples"], limit=ROLLOVER)
        new_events, cursors["events"], _ = t.events.since(cursors["events"], limit=500)
        if new_events:
            events.stream({"t_s": [e["t_s"] for e in new_events], "name": [e["name"] for e in new_events],
                           "detail": [e["detail"] for e in new_events], "y": [7.0] * len(new_events)},
                          rollover=500)
            n = min(len(events.data["t_s"]), 200)
            recent.data = {k: list(reversed(events.data[k][-n:])) for k in ("t_s", "name", "detail")}
        names = [""] + list(control.active)
        if active.options != names:
            active.options = names
        if not items:
            return
        rows = [_ts_row(s) for s in items]
        ts.stream({k: [r[k] for r in rows] for k in _TS_COLUMNS}, rollover=ROLLOVER)
        s = items[-1]
        v = s["group_voltage_V"] * 1000.0
        groups.data.update(v_mV=v.tolist(), v_meas_mV=(s["cell_voltage_measured_V"] * 1000.0).tolist(),
                           bal=s["balancing"].astype(float).tolist())
        vmap.low, vmap.high = float(v.min()) - 1.0, float(v.max()) + 1.0
        surface = s["temp_surface_C"]
        cells.data.update(surface_C=surface.tolist(), core_C=s["temp_core_C"].tolist())
        tmap.low, tmap.high = float(surface.min()) - 0.5, float(surface.max()) + 0.5
        rows_dtc = s["dtcs"]
        if rows_dtc != cursors.get("dtcs"):   # a table re-renders whole: only when it changed
            cursors["dtcs"] = rows_dtc
            dtcs.data = {"dtc": [d["dtc"] for d in rows_dtc], "name": [d["name"] for d in rows_dtc],
                         "status": [d["status"] for d in rows_dtc],
                         "bits": [", ".join(d["bits"]) for d in rows_dtc], "level": [d["level"] for d in rows_dtc],
                         "occurrences": [d["occurrences"] for d in rows_dtc],
                         "first_s": [_nan(d["first_s"]) for d in rows_dtc],
                         "last_s": [_nan(d["last_s"]) for d in rows_dtc]}
        can = s["can"]
        can_div.text = ("<b>CAN health</b><br>" + ", ".join(f"{k} {v}" for k, v in can.items())) if can else \
            "<b>CAN health</b><br>no bus (headless run)"
        rtf = s["realtime_factor"]
        status.text = (f"<b>{html.escape(name)}</b> t = <span id='t_s'>{s['t_s']:.1f}</span> s simulated, "
                       f"{s['wall_s']:.1f} s wall ({'' if math.isnan(rtf) else f'{rtf:.2f}x'} real time, lag "
                       f"{s['lag_ms']:.1f} ms); state <b>{s['state']}</b>; SOC {s['soc_true']:.4f} (estimate "
                       f"{s['soc_estimated']:.4f} +/- {s['soc_3sigma']:.4f}); {s['current_A']:.1f} A; "
                       f"{s['pack_voltage_V']:.1f} V; {len(rows_dtc)} DTC; {s['balancing_groups']} groups balancing; "
                       f"stream: {t.samples.pushed} snapshots, {t.samples.overwritten} dropped, page skipped "
                       f"{cursors['skipped']} updates")

    doc.add_periodic_callback(update, UPDATE_MS)
    controls = column(Div(text="<b>Bench control</b>: arm, then confirm (every request is in the audit log)"),
                      row(kind, options, fault_name, token), row(arm, active, arm_clear, confirm, cancel),
                      control_status)
    doc.add_root(column(status, controls, row(fv, ft), row(fs, fi), row(fT, fe), row(fw, column(can_div,
                                                                                                 event_table)),
                        dtc_table))
    update()
