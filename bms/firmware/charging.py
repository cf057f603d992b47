"""Charge control of the built-in BMS: the charger's offer, the charge request, the end of charge."""
from __future__ import annotations

import math

from .. import _protection as L
from ..errors import InputError
from .part import BmsPart
from .types import BmsState, StateRequest

__all__ = ["ChargeControl"]


class ChargeControl(BmsPart):
    """The charging part of ``Bms``."""

    def charger_offer(self, t_s: float, *, max_voltage_V: float, max_current_A: float,
                      connected: bool = True) -> None:
        """What the charger offers (its maximum voltage and current); ``connected=False`` when unplugged."""
        for key, value in (("max_voltage_V", max_voltage_V), ("max_current_A", max_current_A)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(key, "a finite number >= 0", value)
        was = self._charger["connected"]
        self._charger = {"connected": bool(connected), "max_voltage_V": float(max_voltage_V),
                         "max_current_A": float(max_current_A), "t_s": t_s}
        if bool(connected) != was:
            self._event("charge", {"charger": "connected" if connected else "disconnected",
                                   "max_voltage_V": max_voltage_V, "max_current_A": max_current_A}, t_s)
        if self.state == BmsState.CHARGING:
            self._inp[L.IN_CHARGER_DEADLINE] = t_s + self.config.charger_timeout_s
            if not connected:
                self._leave_to(t_s, BmsState.STANDBY, "charger disconnected")
                self._run(t_s)

    def _charge_control(self, t: float, current: float) -> None:
        c, ch = self.config, self._charger
        lim = self.limits.charge_current_A
        if not ch["connected"]:
            self._leave_to(t, BmsState.STANDBY, "charger disconnected")
            return
        self.charge_request_A = min(lim, ch["max_current_A"]) if not self.charge_complete else 0.0
        self.charge_request_V = min(ch["max_voltage_V"], c.charge_end_cell_V * self.params.n_series)
        v_max = float(self._out[L.OUT_V_MAX])
        if v_max >= c.charge_end_cell_V and -current <= c.charge_end_current_A:
            if self._charge_end_since is None:
                self._charge_end_since = t
            elif t - self._charge_end_since >= c.charge_end_debounce_s:
                self.charge_complete = True
                self.charge_request_A = 0.0
                self._mode = StateRequest.NONE
                self._event("charge", {"result": "complete", "cell_voltage_max_V": v_max, "soc": self.soc}, t)
                self._leave_to(t, BmsState.STANDBY, "charge complete")
        else:
            self._charge_end_since = None

    def _charge_permitted(self) -> tuple[bool, str]:
        if not self._charger["connected"]:
            return False, "no charger connected"
        if self._capability[1] <= 0.0:
            return False, "charging not allowed now (temperature, voltage or SOC)"
        return True, ""
