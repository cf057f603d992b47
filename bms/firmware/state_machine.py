"""The emulated BMS: state machine, contactors and precharge, protections, limits, balancing, fault memory.

The BMS reads only the sensor layer's readings and the estimator's outputs, and acts on the plant only through
its outputs in the firmware slot (``bms.fil``): the contactor commands and the balancing bleed switches
(``actuators.contactor_command`` and ``actuators.balancing``; by default the plant's command registers).
Per-cell work (plausibility, limits, debounce) runs in the compiled protection kernel (``KERNELS.protection``);
this module reacts to what the kernel reports, so a quiet tick costs one kernel call.

States (``BmsState``) and what the BMS does in each:

INIT       contactors open, limits zero; self-checks for ``init_time_s`` (every sensor sampled and
           plausible, no contactor feedback closed, no ERROR); then STANDBY, or FAULT.
STANDBY    contactors open, limits zero; balancing at rest; a DRIVE or CHARGE request starts the
           precharge when nothing at ERROR or above is active and no fault is latched (CHARGE also needs
           a connected charger and a cell temperature that allows charging, else it is refused and waits).
PRECHARGE  main- closes alone (a DC link that jumps to the pack voltage means main+ is welded), then the
           precharge relay; when the link reaches ``precharge_fraction`` of the pack voltage (the higher of
           the pack sensor and the cell sum), the precharge current has fallen and at least
           ``precharge_min_tau`` nominal time constants have passed (so no single faulty reading can end
           it early), main+ closes, then the precharge relay opens -> READY or CHARGING.
           A timeout opens everything and retries after a delay, up to ``precharge_max_attempts``; then
           PRECHARGE_FAILURE (latched).
READY      main contactors closed; limits published (SOP, cell tables, temperature and warning derating,
           voltage limit, peak-current budget); over-current checked against them.
CHARGING   as READY, discharge limit zero; the charge request follows the charge limit and the charger's
           offer; the charge ends (controlled open -> STANDBY) at ``charge_end_cell_V`` with the current
           tapered, or when the charger goes away.
FAULT      an ERROR opens in a controlled way (limits zero, wait for the current to fall below
           ``open_current_threshold_A`` for at most ``open_delay_max_s``, then main+ and precharge, then
           main-); an EMERGENCY opens at once. Recoverable faults return to STANDBY ``fault_recovery_s``
           after they clear; latched faults stay until ``clear_dtcs`` with the condition gone.
SHUTDOWN   contactors open (controlled), no balancing, no VCU monitoring; any STANDBY/DRIVE/CHARGE request
           wakes the BMS (INIT).

Requests are edge-triggered: a VCU repeating the same request only keeps itself alive. After a fault, a
completed charge or a refused close, the VCU must send another request (e.g. STANDBY) before it asks again.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _protection as L
from ..config import BmsConfig
from ..errors import InputError
from ..faults import N_PROTECTIONS, PROTECTIONS, Dtc, Event, FaultLevel, Protection
from ..params import PackParams
from .balancing import Balancing
from .charge_checks import ChargeChecks
from .charging import ChargeControl
from .contactors import ContactorSequences
from .fault_memory import FaultMemory
from .limits import LimitsTask
from .types import CLOSED_STATES, ZERO_LIMITS, BmsState, Limits, StateRequest

__all__ = ["Bms"]

_LEVEL_NAMES = [lv.name for lv in FaultLevel]
_PROTECTION_NAMES = [p.name for p in Protection]
# what the per-tick and 100 ms paths compare with, as module constants (an enum member's lookup costs more)
_INIT, _PRECHARGE, _STANDBY, _CHARGING, _FAULT, _SHUTDOWN = (BmsState.INIT, BmsState.PRECHARGE, BmsState.STANDBY,
                                                             BmsState.CHARGING, BmsState.FAULT, BmsState.SHUTDOWN)
_REQUEST_NONE, _ERROR = StateRequest.NONE, FaultLevel.ERROR
_EV_LEVEL, _EV_SLOW, _IN_VCU_DEADLINE = L.EV_LEVEL, L.EV_SLOW, L.IN_VCU_DEADLINE


class Bms(FaultMemory, LimitsTask, ChargeControl, Balancing, ContactorSequences, ChargeChecks):
    """The emulated BMS on top of a pack's sensor layer (see the module docstring for the states).

    ``step(t_s, dt_s)`` once per tick after the sensors (and the estimator) have been updated.

    ``estimator`` (optional) is read every slow period: ``group_soc`` and ``core_temp_C`` (arrays),
    ``sop`` with ``horizons_s`` and per-horizon arrays ``discharge_current_model_A``/``charge_current_model_A``
    (or ``discharge_current_A``/``charge_current_A``), ``input_valid`` (per group), ``pack_soc``. Without it
    the BMS uses the cell's own tables, a datasheet resistance for the voltage limit, a voltage-anchored
    coulomb count for SOC and a first-order lag of the coldest sensor for the coldest core.
    """

    def __init__(self, params: PackParams, sensors, pack, *, config: BmsConfig | None = None, estimator=None,
                 kernels=None, actuators=None):
        self.params, self.sensors, self.pack, self.estimator = params, sensors, pack, estimator
        # the outputs: ``contactor_command`` (3) and ``balancing`` (one per group) uint8 arrays
        self.actuators = actuators = actuators if actuators is not None else pack.state
        self.config = c = config if config is not None else BmsConfig()
        if not isinstance(c, BmsConfig):
            raise InputError("config", "a BmsConfig", type(c).__name__)
        self.kernels = kernels or pack.kernels
        ns = params.n_series
        nt = len(sensors.temperature_C)
        self._ks = ks = L.ProtectionState(ns, nt, params.sensors.temperature_sensors_per_module, c,
                                          params.capacity_Ah)
        self._kernel = self.kernels.protection.ProtectionKernel(ks, sensors.state, actuators, params)
        self._tick = self._kernel.tick
        self._inp, self._out, self._level = ks.inp, ks.out, ks.level
        self._reading = sensors.state.reading
        self._i_current = sensors.channel("current")
        self._i_pack_V = sensors.channel("pack_voltage")
        self._i_link_V = sensors.channel("link_voltage")
        self._command = actuators.contactor_command
        self._vcu_timeout_s = c.vcu_timeout_s
        self._precharge_min_s = c.precharge_min_tau * params.precharge_resistance_ohm * params.link_capacitance_F
        self._derate = [(self._factor(PROTECTIONS[p].derate_discharge), self._factor(PROTECTIONS[p].derate_charge))
                        for p in Protection]
        # the 100 ms task's numbers (SOC and core fallbacks, limits and their publication), compiled
        self.limits = ZERO_LIMITS
        self._task = task = self.kernels.bms_tick.SlowTask(self, params, c, ks.out, ks.inp, self._reading,
                                                           self._i_current, Limits, ZERO_LIMITS)
        self._slow_task = task.update

        # public state
        self.state = BmsState.INIT
        self.latched = False
        self.dtcs: list[Dtc] = []            # fault memory: active and stored DTCs
        self.dtc_history: list[Dtc] = []     # DTCs removed by clear_dtcs (status 'cleared')
        self.events: list[Event] = []
        self.events_dropped = 0
        self.warning_flags = 0
        self.error_flags = 0
        self.precharge_attempts = 0
        self.charge_request_A = 0.0
        self.charge_request_V = 0.0
        self.charge_complete = False
        self.balancing_groups = 0

        # private state
        self._t = 0.0
        self._levels = [0] * N_PROTECTIONS
        self._worst = FaultLevel.NONE   # max(self._levels) as the enum, kept with it (read every tick on CAN)
        self._busy = True
        self._mode = StateRequest.NONE
        self._last_request = StateRequest.NONE
        self._refused = None
        self._seq = None          # precharge sequence
        self._opening = None      # open sequence
        self._init_t0 = None
        self._quiet_since = None
        self._charger = {"connected": False, "max_voltage_V": 0.0, "max_current_A": 0.0, "t_s": -math.inf}
        self._comm_sources: set[str] = set()
        self._fault_reason = ""
        self._next_balance = 0.0
        self._charge_end_since = None
        self._charge_checks_setup()
        self._event("state", {"from": None, "to": "INIT", "reason": "power on"})

    def step(self, t_s: float, dt_s: float) -> None:
        """One BMS tick at simulated time ``t_s`` (after the sensors sampled it)."""
        events = self._tick(t_s, dt_s)
        if events or self._busy:
            self._service(events, t_s)

    def _service(self, events: int, t: float) -> None:
        self._t = t
        if events & _EV_LEVEL:
            self._on_levels(t)
        if events & _EV_SLOW:
            self._slow(t)
        self._run(t)

    def request(self, state: StateRequest, t_s: float) -> None:
        """A VCU command (also counts as the VCU being alive). Only a change of request acts."""
        if state == self._last_request and state != _REQUEST_NONE:  # the VCU's 10 ms repeat: alive
            if self.state != _SHUTDOWN:
                self._inp[_IN_VCU_DEADLINE] = t_s + self._vcu_timeout_s
            return
        try:
            req = StateRequest(state)
        except ValueError:
            raise InputError("state", f"one of {[r.name for r in StateRequest]}", state) from None
        self.vcu_alive(t_s)
        if req == StateRequest.NONE or req == self._last_request:
            return
        self._last_request = req
        self._refused = None
        st = self.state
        accepted, reason = True, ""
        if req == StateRequest.SHUTDOWN:
            self._mode = req
            if st != BmsState.SHUTDOWN:
                self._leave_to(t_s, BmsState.SHUTDOWN, "shutdown requested")
        elif req == StateRequest.STANDBY:
            self._mode = req
            if st == BmsState.SHUTDOWN:
                self._wake(t_s)
            elif st in (BmsState.PRECHARGE, *CLOSED_STATES):
                self._leave_to(t_s, BmsState.STANDBY, "standby requested")
        else:
            self._mode = req
            if st == BmsState.SHUTDOWN:
                self._wake(t_s)
            elif st == BmsState.FAULT:
                self._mode = StateRequest.NONE
                accepted, reason = False, f"fault: {self._fault_reason}"
            elif req == StateRequest.DRIVE and st == BmsState.CHARGING:
                self._goto(t_s, BmsState.READY, "drive requested")
            elif req == StateRequest.CHARGE and st == BmsState.READY:
                ok, why = self._charge_permitted()
                if ok:
                    self._goto(t_s, BmsState.CHARGING, "charge requested")
                else:
                    accepted, reason = False, why
            elif st == BmsState.PRECHARGE and self._seq is not None:
                self._seq["target"] = BmsState.READY if req == StateRequest.DRIVE else BmsState.CHARGING
        self._event("request", {"request": req.name, "accepted": accepted, "reason": reason}, t_s)
        self._run(t_s)

    def vcu_alive(self, t_s: float) -> None:
        """The VCU was heard at ``t_s``: the VCU timeout restarts."""
        if self.state != _SHUTDOWN:
            self._inp[_IN_VCU_DEADLINE] = t_s + self._vcu_timeout_s

    def comm_fault(self, source: str, active: bool, t_s: float) -> None:
        """The CAN node reports a message timeout or counter/CRC errors on ``source`` (or their end)."""
        before = bool(self._comm_sources)
        (self._comm_sources.add if active else self._comm_sources.discard)(str(source))
        self._event("comm", {"source": str(source), "active": bool(active)}, t_s)
        if bool(self._comm_sources) != before:
            self._set_ext(Protection.COMM_FAULT, FaultLevel.WARNING if self._comm_sources else FaultLevel.NONE,
                          t_s)

    @property
    def fault_level(self) -> FaultLevel:
        return self._worst

    @property
    def balancing(self) -> np.ndarray:
        """The BMS's bleed command per series group (its output the plant reads)."""
        return self.actuators.balancing

    @property
    def contactors_open(self) -> bool:
        """Every contactor commanded open."""
        return not self._command.any()

    @property
    def levels(self) -> dict[str, FaultLevel]:
        """Every protection's present level."""
        return {p.name: FaultLevel(self._levels[p]) for p in Protection}

    def _out_value(self, index):
        return float(self._out[index])

    cell_voltage_min_V = property(lambda self: self._out_value(L.OUT_V_MIN))

    cell_voltage_max_V = property(lambda self: self._out_value(L.OUT_V_MAX))

    temperature_min_C = property(lambda self: self._out_value(L.OUT_T_MIN))

    temperature_max_C = property(lambda self: self._out_value(L.OUT_T_MAX))

    @property
    def soc(self) -> float:
        """The BMS's pack SOC: the estimator's, or its own voltage-anchored coulomb count."""
        if self._estimator_ready():
            return float(self.estimator.pack_soc)
        return self._task.soc

    @property
    def soc_min(self) -> float:
        if self._estimator_ready():
            return float(self.estimator.soc_min)
        return self._task.soc - self._task.soc_lo

    @property
    def soc_max(self) -> float:
        if self._estimator_ready():
            return float(self.estimator.soc_max)
        return self._task.soc + self._task.soc_hi

    def _set_ext(self, p: Protection, level: FaultLevel, t: float) -> None:
        """A level the Python side decides (precharge failure, weld test, comm faults): applied now."""
        ks = self._ks
        ks.ext[p] = level
        ks.level[p] = max(ks.own[p], ks.ext[p])
        if int(ks.level[p]) != self._levels[p]:
            self._on_levels(t)
            self._run(t)

    def _on_levels(self, t: float) -> None:
        levels = self._level.tolist()
        old = self._levels
        worst_ch = self._ks.worst
        for p in range(N_PROTECTIONS):
            new, before = levels[p], old[p]
            if new == before:
                continue
            name = _PROTECTION_NAMES[p]
            channel, value = worst_ch[p].tolist()
            self._event("fault", {"protection": name, "level": _LEVEL_NAMES[new], "from_level": _LEVEL_NAMES[before],
                                  "channel": int(channel), "value": value}, t)
            bit = 1 << p
            self.warning_flags = (self.warning_flags | bit) if new == 1 else (self.warning_flags & ~bit)
            self.error_flags = (self.error_flags | bit) if new >= 2 else (self.error_flags & ~bit)
            if new > before:
                self._dtc_raise(p, new, t, int(channel), value)
            if new == 0:
                self._dtc_passive(p)
            if new >= PROTECTIONS[Protection(p)].latch_level and not self.latched:
                self.latched = True
                self._event("fault", {"latch": "set", "protection": name, "level": _LEVEL_NAMES[new]}, t)
        self._levels = levels
        self._worst = FaultLevel(max(levels))
        self._react(t)

    def _react(self, t: float) -> None:
        levels = self._levels
        worst = max(levels)
        dis = ch = 1.0
        for p, lv in enumerate(levels):
            if lv == FaultLevel.WARNING:
                d, c = self._derate[p]
                dis, ch = min(dis, d), min(ch, c)
        self._task.derate_discharge, self._task.derate_charge = dis, ch
        if worst >= FaultLevel.ERROR:
            self._quiet_since = None
            self._fault_reason = ", ".join(_PROTECTION_NAMES[p] for p, lv in enumerate(levels) if lv == worst)
        st = self.state
        if st == BmsState.SHUTDOWN and self._opening is None:
            return
        if worst >= FaultLevel.EMERGENCY:
            self._open_now(t, f"emergency: {self._fault_reason}")
            self._seq = None
            if st != BmsState.FAULT:
                self._goto(t, BmsState.FAULT, self._fault_reason)
        elif worst >= FaultLevel.ERROR:
            if st == BmsState.PRECHARGE:
                self._open_now(t, f"precharge aborted: {self._fault_reason}")
                self._seq = None
                self._goto(t, BmsState.FAULT, self._fault_reason)
            elif st in (BmsState.INIT, BmsState.STANDBY, *CLOSED_STATES):
                self._leave_to(t, BmsState.FAULT, self._fault_reason)
            elif self._opening is not None:
                self._opening["target"] = BmsState.FAULT
        self._publish_limits()

    def _goto(self, t: float, new: BmsState, reason: str) -> None:
        old = self.state
        if new == old:
            return
        self.state = new
        self._event("state", {"from": old.name, "to": new.name, "reason": reason}, t)
        inp = self._inp
        if old == BmsState.CHARGING:
            inp[L.IN_CHARGER_DEADLINE] = math.inf
            self.charge_request_A = 0.0
        inp[L.IN_CHARGING] = 1.0 if new == BmsState.CHARGING else 0.0
        if new == BmsState.CHARGING:
            self.charge_complete = False
            self._charge_end_since = None
            inp[L.IN_CHARGER_DEADLINE] = self._charger["t_s"] + self.config.charger_timeout_s
        if new == BmsState.INIT:
            self._init_t0 = t
        if new == BmsState.FAULT:
            self._quiet_since = None
            self._mode = StateRequest.NONE
        if new == BmsState.SHUTDOWN:
            inp[L.IN_VCU_DEADLINE] = math.inf
            self._kernel.balance(False, False, 0.0, 0.0)
        self._publish_limits()

    def _wake(self, t: float) -> None:
        self._goto(t, BmsState.INIT, "wake-up request")

    def _run(self, t: float) -> None:
        st = self.state
        if self._opening is not None:
            self._run_opening(t)
        elif st == _INIT:
            if self._init_t0 is None:
                self._init_t0 = t
            if t - self._init_t0 >= self.config.init_time_s:
                if self.latched or max(self._levels) >= _ERROR:
                    self._goto(t, BmsState.FAULT, f"self-check: {self._fault_reason or 'fault latched'}")
                else:
                    self._goto(t, _STANDBY, "self-check passed")
        elif st == _PRECHARGE:
            self._run_precharge(t)
        if self.state == _STANDBY and self._opening is None:
            self._fulfil(t)
        st = self.state
        self._busy = st == _INIT or st == _PRECHARGE or self._opening is not None

    def _fulfil(self, t: float) -> None:
        mode = self._mode
        if mode not in (StateRequest.DRIVE, StateRequest.CHARGE):
            return
        if self.latched or max(self._levels) >= FaultLevel.ERROR:
            return
        if mode == StateRequest.CHARGE:
            ok, why = self._charge_permitted()
            if not ok:
                if self._refused != why:
                    self._refused = why
                    self._event("request", {"request": "CHARGE", "accepted": False, "reason": why}, t)
                return
        self._refused = None
        target = BmsState.READY if mode == StateRequest.DRIVE else BmsState.CHARGING
        self.precharge_attempts = 0
        self._seq = {"phase": "start", "t_phase": t, "target": target}
        self._goto(t, BmsState.PRECHARGE, f"{mode.name.lower()} requested")
        self._run_precharge(t)
        self._busy = True

    def _slow(self, t: float) -> None:
        """The 100 ms task: its numbers in the compiled ``SlowTask``, the sequences it starts here."""
        c, st = self.config, self.state
        rested = self._slow_task(t, self.estimator if self._estimator_ready() else None, st,
                                 self._opening is not None)
        if st == _CHARGING and self._opening is None:
            self._charge_control(t, self._task.current_A)
        if st == _FAULT and not self.latched and self._opening is None:
            if max(self._levels) < _ERROR:
                if self._quiet_since is None:
                    self._quiet_since = t
                elif t - self._quiet_since >= c.fault_recovery_s:
                    self._goto(t, _STANDBY, "fault recovered")
        for dtc in self.dtcs:
            if dtc.active and dtc.status == "pending" and t - dtc.first_s >= c.dtc_confirm_s:
                dtc.status = "confirmed"
        if t >= self._next_balance:
            self._next_balance = t + c.balancing_period_s
            self._balance(t, rested)
        self._check_charge(t, rested)

    def __repr__(self):
        return (f"Bms(state={self.state.name}, latched={self.latched}, fault_level={self.fault_level.name}, "
                f"limits={self.limits})")
