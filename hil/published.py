"""What an external BMS firmware publishes, in the recording's terms: its limits, SOC (and its 3-sigma bound, where it
publishes one), state and fault, decoded by its own DBC (``bms.fil.FrameView``); its fault and state changes as
events at the time their frame arrived; and the main contactors' openings and closings, tick by tick.

The built-in BMS records these from its own objects (``hil.runner._snapshot`` and its event log); for a foreign BMS
the recording reads them here, so a property (``hil.properties``) checks the firmware's own word, not nothing.
"""
from __future__ import annotations

import math

from bms.controller import BmsState

__all__ = ["published_values", "PublishedEvents", "ContactorWatch"]

_NO_FAULT = ("NONE", "0", "nan", "OK", "NO_FAULT")
_ERROR = 2.0   # FaultLevel.ERROR: a fault a BMS publishes is a confirmed one (it latches and reacts)


def _state_number(name: str) -> float:
    """The BmsState number of a published state (a value-table name such as "FAULT", or a number)."""
    if name in BmsState.__members__:
        return float(BmsState[name])
    try:
        return float(name)
    except ValueError:
        return -1.0


def _faulted(view) -> bool:
    fault = str(view.values.get("fault", math.nan))
    dtcs = view.number("dtc_count")
    return fault not in _NO_FAULT or (dtcs == dtcs and dtcs > 0)


def published_values(view) -> dict[str, float]:
    """The recording's BMS quantities from ``view``: NaN where the firmware has not said (yet)."""
    soc_pct, sigma_pct = view.number("soc_pct"), view.number("soc_3sigma_pct")
    return {"discharge_limit_A": view.number("discharge_limit_A"), "charge_limit_A": view.number("charge_limit_A"),
            "soc_estimated": soc_pct / 100.0, "soc_3sigma": sigma_pct / 100.0,
            "state": _state_number(str(view.values.get("state", "nan"))),
            "fault_level": _ERROR if _faulted(view) else 0.0}


class PublishedEvents:
    """Events from each frame the view decodes: ``state:NAME`` when the published state changes, and
    ``fault:NAME:ERROR`` when a fault (or a DTC count above 0) is published where there was none."""

    def __init__(self):
        self.events: list[tuple[float, str, str]] = []
        self._state = self._fault = None

    def after_frame(self, view, t_s: float) -> None:
        values = view.values
        state, fault = values.get("state"), values.get("fault")
        if state == self._state and fault == self._fault:
            return
        if state != self._state and str(state) != "nan":
            self.events.append((t_s, f"state:{state}", "published by the firmware"))
        faulted = _faulted(view)
        if faulted and (self._fault is None or str(self._fault) in _NO_FAULT or fault != self._fault):
            name = str(fault) if str(fault) not in _NO_FAULT else "dtc"
            self.events.append((t_s, f"fault:{name}:ERROR", "published by the firmware"))
        self._state, self._fault = state, fault

    def take(self) -> list[tuple[float, str, str]]:
        out, self.events = self.events, []
        return out


class ContactorWatch:
    """``contactor:NAME:open|closed`` events at the tick the plant's main contactors change (the built-in BMS's own
    contactor events carry its command times; an external BMS's commands are seen here)."""

    NAMES = ("main_positive", "main_negative")

    def __init__(self, pack):
        self._closed = pack.state.contactor_closed
        self._last = self._closed.tobytes()
        self.events: list[tuple[float, str, str]] = []

    def tick(self, t_s: float) -> None:
        now = self._closed.tobytes()
        if now != self._last:
            for k, name in enumerate(self.NAMES):
                if now[k] != self._last[k]:
                    self.events.append((t_s, f"contactor:{name}:{'closed' if now[k] else 'open'}", "plant"))
            self._last = now

    def take(self) -> list[tuple[float, str, str]]:
        out, self.events = self.events, []
        return out
