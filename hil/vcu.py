"""A VCU model: the emulated BMS's counterpart when no firmware under test is attached.

It requests drive or charge, waits for the BMS to precharge and close, and keeps every demand within the
limits the BMS publishes (so a cold pack limits regeneration as a real VCU would). In headless runs it
talks to the BMS's request interface directly; on a bus the CAN VCU (``hil.can_vcu``) does the same
through frames.
"""
from __future__ import annotations

from bms.controller import BmsState, StateRequest

from .load import Demand

__all__ = ["VcuModel", "demand_current_A", "requested_current_A", "request_for"]


def requested_current_A(demand: Demand | None, link_voltage_V: float) -> float:
    """Current (> 0 discharging) the driver or charger asks for, before any limit."""
    if demand is None:
        return 0.0
    if demand.mode == "power":
        return demand.value / max(link_voltage_V, 50.0)
    if demand.mode == "current":
        return demand.value
    if demand.mode == "charge":
        return -demand.value
    return 0.0


def demand_current_A(demand: Demand | None, link_voltage_V: float, discharge_limit_A: float,
                     charge_limit_A: float) -> float:
    """The request clamped to the BMS's published limits: what a well-behaved VCU draws."""
    return min(max(requested_current_A(demand, link_voltage_V), -charge_limit_A), discharge_limit_A)


def request_for(demand: Demand | None, bms_state, rearm: bool) -> StateRequest:
    """What the VCU asks for. After a fault the BMS waits for a fresh request, as production BMSs do:
    the VCU sends STANDBY once before asking for drive or charge again."""
    if demand is None or rearm:
        return StateRequest.STANDBY
    return StateRequest.CHARGE if demand.mode == "charge" else StateRequest.DRIVE


def _rearm_after(rearm: bool, bms_state, sent: StateRequest) -> bool:
    if bms_state == _FAULT:
        return True
    return rearm and sent != _STANDBY


# enum members looked up once: an Enum class attribute costs ~0.1 us on Python 3.11
_FAULT, _READY, _CHARGING = BmsState.FAULT, BmsState.READY, BmsState.CHARGING
_STANDBY, _CHARGE = StateRequest.STANDBY, StateRequest.CHARGE


class VcuModel:
    """Direct (headless) VCU: one request per ``period_s``; ``silent`` models a VCU that stopped talking."""

    def __init__(self, bms, period_s: float = 0.01, charger_voltage_V: float = 850.0):
        self.bms = bms
        self.period_s = period_s
        self.charger_voltage_V = charger_voltage_V
        self.silent = False
        self._rearm = False
        self._next_s = 0.0

    def request_for(self, demand: Demand | None) -> StateRequest:
        return request_for(demand, self.bms.state, self._rearm)

    def tick(self, t_s: float, demand: Demand | None, link_voltage_V: float) -> float:
        bms = self.bms
        if not self.silent and t_s >= self._next_s - 1e-9:
            self._next_s = t_s + self.period_s
            request = self.request_for(demand)
            self._rearm = _rearm_after(self._rearm, bms.state, request)
            if request == _CHARGE and demand is not None:
                bms.charger_offer(t_s, max_voltage_V=self.charger_voltage_V, max_current_A=demand.value)
            bms.request(request, t_s)
        state = bms.state
        if demand is None or (state is not _READY and state is not _CHARGING):
            return 0.0
        limits = bms.limits
        return demand_current_A(demand, link_voltage_V, limits.discharge_current_A, limits.charge_current_A)
