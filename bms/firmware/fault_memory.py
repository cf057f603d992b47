"""Fault memory of the built-in BMS: the event log, DTCs with freeze frames, clearing (like UDS 0x14)."""
from __future__ import annotations

from .. import _protection as L
from .._layout import CONTACTOR_NAMES
from ..faults import DTC_BASE, Dtc, Event, FaultLevel, Protection
from .part import BmsPart
from .types import BmsState

__all__ = ["FaultMemory"]

_LEVEL_NAMES = [lv.name for lv in FaultLevel]
_PROTECTION_NAMES = [p.name for p in Protection]


class FaultMemory(BmsPart):
    """Events and DTCs of ``Bms`` (a part of it: it works on the BMS's own state)."""

    def _event(self, kind: str, detail: dict, t: float | None = None) -> None:
        events = self.events
        events.append(Event(self._t if t is None else t, kind, detail))
        if len(events) > self.config.event_log_size:
            drop = max(1, self.config.event_log_size // 10)
            del events[:drop]
            self.events_dropped += drop

    def _dtc_raise(self, p: int, level: int, t: float, channel: int, value: float) -> None:
        code = DTC_BASE + p
        for dtc in self.dtcs:
            if dtc.code == code:
                if not dtc.active:
                    dtc.count += 1
                    dtc.active = True
                dtc.last_s = t
                dtc.level = FaultLevel(max(dtc.level, level))
                if level >= FaultLevel.ERROR:
                    dtc.status = "confirmed"
                return
        self.dtcs.append(Dtc(code=code, name=_PROTECTION_NAMES[p], level=FaultLevel(level),
                             status="confirmed" if level >= FaultLevel.ERROR else "pending", first_s=t, last_s=t,
                             freeze_frame=self._freeze_frame(t, p, level, channel, value)))

    def _dtc_passive(self, p: int) -> None:
        code = DTC_BASE + p
        for dtc in self.dtcs:
            if dtc.code == code:
                dtc.active = False
                dtc.last_s = self._t

    def _freeze_frame(self, t, p, level, channel, value) -> dict:
        r, o = self._reading, self._out
        return {"t_s": t, "state": self.state.name, "protection": _PROTECTION_NAMES[p], "level": _LEVEL_NAMES[level],
                "channel": channel, "value": value, "current_A": float(r[self._i_current]),
                "pack_voltage_V": float(r[self._i_pack_V]), "link_voltage_V": float(r[self._i_link_V]),
                "cell_voltage_min_V": float(o[L.OUT_V_MIN]), "cell_voltage_max_V": float(o[L.OUT_V_MAX]),
                "temperature_min_C": float(o[L.OUT_T_MIN]), "temperature_max_C": float(o[L.OUT_T_MAX]),
                "soc": self.soc, "contactors": {n: bool(v) for n, v in zip(CONTACTOR_NAMES, self._command)}}

    def clear_dtcs(self, t_s: float) -> int:
        """Clear the fault memory (like UDS 0x14): stored DTCs whose fault is gone move to ``dtc_history``
        as 'cleared'; a latched fault is released when nothing at ERROR or above is active. Returns how
        many DTCs were cleared."""
        for p in (Protection.PRECHARGE_FAILURE, Protection.CONTACTOR_WELDED):
            if self._ks.ext[p]:
                self._set_ext(p, FaultLevel.NONE, t_s)
        keep: list[Dtc] = []
        cleared: list[Dtc] = []
        for dtc in self.dtcs:
            (keep if dtc.active else cleared).append(dtc)
        for dtc in cleared:
            dtc.status = "cleared"
        self.dtcs = keep
        self.dtc_history.extend(cleared)
        self._event("dtc", {"cleared": [d.name for d in cleared], "kept_active": [d.name for d in keep]}, t_s)
        if self.latched and max(self._levels) < FaultLevel.ERROR:
            self.latched = False
            self._event("fault", {"latch": "released", "reason": "DTCs cleared"}, t_s)
            if self.state == BmsState.FAULT and self._opening is None:
                self._goto(t_s, BmsState.STANDBY, "faults cleared")
        self._run(t_s)
        return len(cleared)
