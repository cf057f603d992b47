"""The CAN face of bench control: a decoded ``HIL_FaultControl`` frame as a bench request.

The DBC (``bms.can._dbcgen``) holds the message: the fault kind as multiplexer, the action, a slot that
names the injection (``can<slot>:<kind>``), the 16-bit control key, and per kind the parameters a
scenario's ``[[fault]]`` table would carry. The request then takes the same path as an API request.
"""
from __future__ import annotations

from bms.can._dbcgen import CONTACTORS, FAULT_CONTROL_KINDS, SENSOR_CHANNELS, SENSOR_FAULT_MODES

from .control import ControlError

__all__ = ["request_from_frame", "FrameControl", "frame_values"]

_KINDS = dict(FAULT_CONTROL_KINDS)
_CODES = {name: code for code, name in FAULT_CONTROL_KINDS}
_ISOTP_FAULTS = ("drop_cf", "reorder_cf", "wrong_sn", "late_fc")


def _options(kind: str, v: dict) -> dict:
    if kind == "sensor":
        fault = dict(SENSOR_FAULT_MODES)[int(v["SensorFault"])]
        out = {"sensor": dict(SENSOR_CHANNELS).get(int(v["SensorChannel"]), f"channel {v['SensorChannel']}"),
               "index": int(v["SensorIndex"]), "fault": fault}
        if fault != "open_wire":
            out["value"] = float(v["SensorValue"])
        return out
    if kind == "internal_short":
        return {"cell": int(v["ShortCell"]), "resistance_ohm": float(v["ShortResistance"])}
    if kind == "stack_pressure":
        return {"pressure_MPa": float(v["StackPressure"]), "cells": "all"}
    if kind == "contactor_weld":
        return {"contactor": dict(CONTACTORS).get(int(v["WeldContactor"]), str(v["WeldContactor"]))}
    if kind == "coolant_loss":
        return {"cooling_factor": float(v["FaultCoolingFactor"])}
    if kind == "can_corrupt":
        return {"what": ("counter", "crc")[int(v["CorruptWhat"])]}
    if kind == "isotp":
        out = {"fault": _ISOTP_FAULTS[int(v["IsotpFault"])], "side": ("ecu", "tester")[int(v["IsotpSide"])],
               "index": int(v["IsotpIndex"])}
        if float(v["IsotpDelay"]) > 0:
            out["delay_s"] = float(v["IsotpDelay"])
        return out
    if kind == "uds_pending":
        pending: dict = {}
        if float(v["PendingDuration"]) > 0:
            pending["duration_s"] = float(v["PendingDuration"])
        if int(v["PendingService"]):
            pending["service"] = int(v["PendingService"])
        return pending
    return {}   # vcu_silence, bus_off


def request_from_frame(values: dict) -> dict:
    """The API request body a decoded frame stands for (raw values, as the node decodes them)."""
    kind = _KINDS.get(int(values["FaultKind"]))
    if kind is None:
        raise ControlError(f"HIL_FaultControl.FaultKind: unknown kind {values['FaultKind']}; expected one of "
                           f"{', '.join(f'{c} {n}' for c, n in FAULT_CONTROL_KINDS)}")
    name = f"can{int(values['Slot'])}:{kind}"
    if int(values["Action"]) == 1:
        return {"action": "clear", "name": name}
    return {"action": "inject", "name": name, "fault": {"kind": kind, **_options(kind, values)}}


def frame_values(request: dict, key: int, slot: int = 0) -> dict:
    """The signal values of a ``HIL_FaultControl`` frame for an inject or clear request (the inverse of
    ``request_from_frame``; what a bench script over CAN sends)."""
    fault = request.get("fault", {})
    kind = fault.get("kind") or request["name"].split(":", 1)[1]
    out = {"FaultKind": _CODES[kind], "Action": 0 if request["action"] == "inject" else 1, "Slot": slot,
           "ControlKey": key}
    out.update(_signals(kind, fault))
    return out


def _signals(kind: str, f: dict) -> dict:
    if kind == "sensor":
        return {"SensorChannel": {n: c for c, n in SENSOR_CHANNELS}[f.get("sensor", "cell_voltage")],
                "SensorFault": {n: c for c, n in SENSOR_FAULT_MODES}[f.get("fault", "open_wire")],
                "SensorIndex": f.get("index", 0), "SensorValue": f.get("value", 0.0)}
    if kind == "internal_short":
        return {"ShortCell": f.get("cell", 0), "ShortResistance": f.get("resistance_ohm", 0.0)}
    if kind == "stack_pressure":
        return {"StackPressure": f.get("pressure_MPa", 0.0)}
    if kind == "contactor_weld":
        return {"WeldContactor": {n: c for c, n in CONTACTORS}[f.get("contactor", "main_positive")]}
    if kind == "coolant_loss":
        return {"FaultCoolingFactor": f.get("cooling_factor", 0.0)}
    if kind == "can_corrupt":
        return {"CorruptWhat": ("counter", "crc").index(f.get("what", "crc"))}
    if kind == "isotp":
        return {"IsotpFault": _ISOTP_FAULTS.index(f.get("fault", "drop_cf")),
                "IsotpSide": ("ecu", "tester").index(f.get("side", "ecu")), "IsotpIndex": f.get("index", 1),
                "IsotpDelay": f.get("delay_s", 0.0)}
    if kind == "uds_pending":
        return {"PendingDuration": f.get("duration_s", 0.0), "PendingService": f.get("service", 0)}
    return {}


class FrameControl:
    """The node's ``on_fault_control`` hook: checks the key, turns the frame into a request and submits it
    (the loop thread receives the frame; the command is applied at the next recording tick)."""

    def __init__(self, control):
        self.control = control

    def refused(self, why: str, t_s: float) -> None:
        """A HIL_FaultControl frame the node could not decode (wrong DLC, CRC or counter, an unknown kind)."""
        self.control.write_audit({"source": "can", "t_s": t_s, "result": "refused", "reason": why})

    def __call__(self, values: dict, t_s: float) -> None:
        control = self.control
        if int(values.get("ControlKey", -1)) != control.can_key:
            control.write_audit({"source": "can", "t_s": t_s, "result": "refused",
                                 "reason": f"wrong ControlKey 0x{int(values.get('ControlKey', 0)):04X}",
                                 "request": {k: values[k] for k in ("FaultKind", "Action", "Slot") if k in values}})
            return
        try:
            body = request_from_frame(values)
        except ControlError as exc:
            control.write_audit({"source": "can", "t_s": t_s, "result": "refused", "reason": str(exc)})
            return
        try:
            control.submit(control.command(body, source="can"))
        except ControlError:
            return   # refused and audited by the control
