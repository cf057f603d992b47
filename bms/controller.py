"""The emulated BMS: state machine, contactors and precharge, protections, limits, balancing, fault memory.

The BMS reads only the sensor layer and the estimator's outputs, and acts on the plant only through the
contactor commands (``Pack.command_contactors``) and the balancing bleed command (``pack.state.balancing``).
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

import bisect
import enum
import math
from typing import NamedTuple

import numpy as np

from . import _protection as L
from ._layout import CONTACTOR_NAMES
from .config import BmsConfig
from .errors import InputError
from .faults import DTC_BASE, N_PROTECTIONS, PROTECTIONS, Dtc, Event, FaultLevel, Protection
from .params import PackParams

__all__ = ["Bms", "BmsState", "StateRequest", "FaultLevel", "Limits", "Protection", "Dtc", "Event"]

R_GAS = 8.314462618
T_REF_K = 298.15
KELVIN = 273.15


def _interp(x: float, xs: tuple, ys: tuple) -> float:
    """Piecewise-linear table lookup, clamped at the ends (scalar; cheaper than numpy.interp here)."""
    if not x > xs[0]:
        return ys[0] if x == x else math.nan
    if x >= xs[-1]:
        return ys[-1]
    k = bisect.bisect_right(xs, x)
    x0, x1 = xs[k - 1], xs[k]
    return ys[k - 1] + (x - x0) / (x1 - x0) * (ys[k] - ys[k - 1])


class BmsState(enum.IntEnum):
    INIT = 0
    STANDBY = 1
    PRECHARGE = 2
    READY = 3
    CHARGING = 4
    FAULT = 5
    SHUTDOWN = 6


class StateRequest(enum.IntEnum):
    NONE = 0
    STANDBY = 1
    DRIVE = 2
    CHARGE = 3
    SHUTDOWN = 4


class Limits(NamedTuple):
    """What the VCU (and charger) must respect: positive magnitudes at the pack terminals."""
    discharge_current_A: float = 0.0
    charge_current_A: float = 0.0
    discharge_power_W: float = 0.0
    charge_power_W: float = 0.0


ZERO_LIMITS = Limits()
_LEVEL_NAMES = [lv.name for lv in FaultLevel]
_PROTECTION_NAMES = [p.name for p in Protection]
_CLOSED_STATES = (BmsState.READY, BmsState.CHARGING)


class Bms:
    """The emulated BMS on top of a pack's sensor layer (see the module docstring for the states).

    ``step(t_s, dt_s)`` once per tick after the sensors (and the estimator) have been updated.

    ``estimator`` (optional) is read every slow period: ``group_soc`` and ``core_temp_C`` (arrays),
    ``sop`` with ``horizons_s`` and per-horizon arrays ``discharge_current_model_A``/``charge_current_model_A``
    (or ``discharge_current_A``/``charge_current_A``), ``input_valid`` (per group), ``pack_soc``. Without it
    the BMS uses the cell's own tables, a datasheet resistance for the voltage limit, a voltage-anchored
    coulomb count for SOC and a first-order lag of the coldest sensor for the coldest core.
    """

    def __init__(self, params: PackParams, sensors, pack, *, config: BmsConfig | None = None, estimator=None,
                 kernels=None):
        self.params, self.sensors, self.pack, self.estimator = params, sensors, pack, estimator
        self.config = c = config if config is not None else BmsConfig()
        if not isinstance(c, BmsConfig):
            raise InputError("config", "a BmsConfig", type(c).__name__)
        self.kernels = kernels or pack.kernels
        ns = params.n_series
        nt = len(sensors.temperature_C)
        self._ks = ks = L.ProtectionState(ns, nt, params.sensors.temperature_sensors_per_module, c,
                                          params.capacity_Ah)
        self._kernel = self.kernels.protection.ProtectionKernel(ks, sensors.state, pack.state, params)
        self._tick = self._kernel.tick
        self._inp, self._out, self._level = ks.inp, ks.out, ks.level
        self._reading = sensors.state.reading
        self._i_current = sensors.channel("current")
        self._i_pack_V = sensors.channel("pack_voltage")
        self._i_link_V = sensors.channel("link_voltage")
        self._command = pack.state.contactor_command
        self._cell = cell = params.cell
        self._soc_grid = np.linspace(0.0, 1.0, len(cell.ocv_V))
        self._ocv = np.array(cell.ocv_V)
        self._charge_max_A = max(cell.charge_limit_C_rate) * params.capacity_Ah
        self._discharge_peak_A = cell.discharge_peak_C_rate * params.capacity_Ah
        self._discharge_cont_A = cell.discharge_continuous_C_rate * params.capacity_Ah
        self._sop_index = None
        self._precharge_min_s = c.precharge_min_tau * params.precharge_resistance_ohm * params.link_capacitance_F
        self._ns, self._npar, self._capacity_Ah = params.n_series, params.n_parallel, params.capacity_Ah
        self._v_floor = max(cell.voltage_min_V, c.cell_undervoltage_warning_V) + c.voltage_limit_margin_V
        self._v_ceiling = min(cell.voltage_max_V, c.cell_overvoltage_warning_V) - c.voltage_limit_margin_V
        self._temp_key = self._temp_factors = None
        self._derate = [(self._factor(PROTECTIONS[p].derate_discharge), self._factor(PROTECTIONS[p].derate_charge))
                        for p in Protection]
        r_x = 1.0 / R_GAS
        self._arrhenius = (cell.r0_ohm, cell.r0_activation_J_per_mol * r_x,
                           cell.r1_ohm * (1.0 - math.exp(-c.limit_horizon_s / cell.tau1_s)),
                           cell.r1_activation_J_per_mol * r_x,
                           cell.r2_ohm * (1.0 - math.exp(-c.limit_horizon_s / cell.tau2_s)),
                           cell.r2_activation_J_per_mol * r_x)

        # public state
        self.state = BmsState.INIT
        self.latched = False
        self.limits = ZERO_LIMITS
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
        self._capability = (0.0, 0.0, 0.0, 0.0)   # limits before gating by state
        self._peak_budget = 1.0
        self._oc_ref = [0.0, 0.0]
        self._soc = math.nan
        self._soc_lo = self._soc_hi = 0.0
        self._rest_since = 0.0
        self._core_cold = self._core_hot = math.nan   # comparisons with nan are false: no effect
        self._next_balance = 0.0
        self._charge_end_since = None
        self._derate_now = (1.0, 1.0)
        self._event("state", {"from": None, "to": "INIT", "reason": "power on"})

    # --- the tick ----------------------------------------------------------------------------------
    def step(self, t_s: float, dt_s: float) -> None:
        """One BMS tick at simulated time ``t_s`` (after the sensors sampled it)."""
        events = self._tick(t_s, dt_s)
        if events or self._busy:
            self._service(events, t_s)

    def _service(self, events: int, t: float) -> None:
        self._t = t
        if events & L.EV_LEVEL:
            self._on_levels(t)
        if events & L.EV_SLOW:
            self._slow(t)
        self._run(t)

    # --- commands ----------------------------------------------------------------------------------
    def request(self, state: StateRequest, t_s: float) -> None:
        """A VCU command (also counts as the VCU being alive). Only a change of request acts."""
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
            elif st in (BmsState.PRECHARGE, *_CLOSED_STATES):
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
        if self.state != BmsState.SHUTDOWN:
            self._inp[L.IN_VCU_DEADLINE] = t_s + self.config.vcu_timeout_s

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

    def comm_fault(self, source: str, active: bool, t_s: float) -> None:
        """The CAN node reports a message timeout or counter/CRC errors on ``source`` (or their end)."""
        before = bool(self._comm_sources)
        (self._comm_sources.add if active else self._comm_sources.discard)(str(source))
        self._event("comm", {"source": str(source), "active": bool(active)}, t_s)
        if bool(self._comm_sources) != before:
            self._set_ext(Protection.COMM_FAULT, FaultLevel.WARNING if self._comm_sources else FaultLevel.NONE,
                          t_s)

    def clear_dtcs(self, t_s: float) -> int:
        """Clear the fault memory (like UDS 0x14): stored DTCs whose fault is gone move to ``dtc_history``
        as 'cleared'; a latched fault is released when nothing at ERROR or above is active. Returns how
        many DTCs were cleared."""
        for p in (Protection.PRECHARGE_FAILURE, Protection.CONTACTOR_WELDED):
            if self._ks.ext[p]:
                self._set_ext(p, FaultLevel.NONE, t_s)
        keep, cleared = [], []
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

    # --- readings the BMS holds (from its last slow task; valid channels only) ------------------------
    @property
    def fault_level(self) -> FaultLevel:
        return FaultLevel(max(self._levels))

    @property
    def balancing(self) -> np.ndarray:
        """The BMS's bleed command per series group (the array the plant reads)."""
        return self.pack.state.balancing

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
        return self._soc

    @property
    def soc_min(self) -> float:
        if self._estimator_ready():
            return float(self.estimator.soc_min)
        return self._soc - self._soc_lo

    @property
    def soc_max(self) -> float:
        if self._estimator_ready():
            return float(self.estimator.soc_max)
        return self._soc + self._soc_hi

    # --- fault levels, DTCs, reactions -------------------------------------------------------------
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
        self._react(t)

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

    def _react(self, t: float) -> None:
        levels = self._levels
        worst = max(levels)
        dis = ch = 1.0
        for p, lv in enumerate(levels):
            if lv == FaultLevel.WARNING:
                d, c = self._derate[p]
                dis, ch = min(dis, d), min(ch, c)
        self._derate_now = (dis, ch)
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
            elif st in (BmsState.INIT, BmsState.STANDBY, *_CLOSED_STATES):
                self._leave_to(t, BmsState.FAULT, self._fault_reason)
            elif self._opening is not None:
                self._opening["target"] = BmsState.FAULT
        self._publish_limits()

    # --- state machine ----------------------------------------------------------------------------
    def _event(self, kind: str, detail: dict, t: float | None = None) -> None:
        events = self.events
        events.append(Event(self._t if t is None else t, kind, detail))
        if len(events) > self.config.event_log_size:
            drop = max(1, self.config.event_log_size // 10)
            del events[:drop]
            self.events_dropped += drop

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

    def _leave_to(self, t: float, target: BmsState, reason: str) -> None:
        """Controlled open (if anything is closed), then ``target``; FAULT is entered at once."""
        self._seq = None
        if target == BmsState.FAULT:
            self._goto(t, BmsState.FAULT, reason)
        if self.contactors_open:
            self._opening = None
            self._goto(t, target, reason)
            return
        if self._opening is None or target == BmsState.FAULT:
            self._opening = {"target": target, "reason": reason, "t0": t, "phase": "wait", "t_phase": t}
        self._publish_limits()

    def _command_contactors(self, t: float, reason: str, **commands) -> None:
        current = float(self._reading[self._i_current])
        for name, closed in commands.items():
            index = CONTACTOR_NAMES.index(name)
            if bool(self._command[index]) != closed:
                self.pack.command_contactors(**{name: closed})
                self._event("contactor", {"name": name, "closed": closed, "reason": reason, "current_A": current}, t)

    def _open_now(self, t: float, reason: str) -> None:
        self._opening = None
        self._command_contactors(t, reason, main_positive=False, precharge=False, main_negative=False)

    def _run(self, t: float) -> None:
        st = self.state
        if self._opening is not None:
            self._run_opening(t)
        elif st == BmsState.INIT:
            if self._init_t0 is None:
                self._init_t0 = t
            if t - self._init_t0 >= self.config.init_time_s:
                if self.latched or max(self._levels) >= FaultLevel.ERROR:
                    self._goto(t, BmsState.FAULT, f"self-check: {self._fault_reason or 'fault latched'}")
                else:
                    self._goto(t, BmsState.STANDBY, "self-check passed")
        elif st == BmsState.PRECHARGE:
            self._run_precharge(t)
        if self.state == BmsState.STANDBY and self._opening is None:
            self._fulfil(t)
        self._busy = self.state in (BmsState.INIT, BmsState.PRECHARGE) or self._opening is not None

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

    def _charge_permitted(self) -> tuple[bool, str]:
        if not self._charger["connected"]:
            return False, "no charger connected"
        if self._capability[1] <= 0.0:
            return False, "charging not allowed now (temperature, voltage or SOC)"
        return True, ""

    def _pack_reference_V(self) -> float:
        """The pack voltage the DC link must reach: the higher of the pack sensor and the cell sum."""
        o = self._out
        n_valid = o[L.OUT_N_VALID_V]
        cells = o[L.OUT_V_SUM] * self.params.n_series / n_valid if n_valid > 0 else 0.0
        return max(float(self._reading[self._i_pack_V]), float(cells))

    def _run_precharge(self, t: float) -> None:
        seq, c = self._seq, self.config
        if seq is None:
            return
        phase, elapsed = seq["phase"], t - seq["t_phase"]
        link = float(self._reading[self._i_link_V])
        if phase == "start":
            self.precharge_attempts += 1
            seq.update(phase="negative", t_phase=t, link0=link)
            self._event("precharge", {"attempt": self.precharge_attempts, "step": "main_negative"}, t)
            self._command_contactors(t, "precharge", main_negative=True)
        elif phase == "negative" and elapsed >= c.contactor_close_time_s:
            ref = self._pack_reference_V()
            if seq["link0"] < c.weld_check_fraction * ref <= link:
                self._open_now(t, "weld test failed")
                self._ks.worst[Protection.CONTACTOR_WELDED] = (0, link)
                self._set_ext(Protection.CONTACTOR_WELDED, FaultLevel.ERROR, t)
                return
            seq.update(phase="precharge", t_phase=t)
            self._command_contactors(t, "precharge", precharge=True)
        elif phase == "precharge":
            ref = self._pack_reference_V()
            current = abs(float(self._reading[self._i_current]))
            if (ref > 0 and link >= c.precharge_fraction * ref and current <= c.precharge_end_current_A
                    and elapsed >= self._precharge_min_s):
                self._event("precharge", {"attempt": self.precharge_attempts, "result": "complete",
                                          "duration_s": elapsed, "link_voltage_V": link, "pack_voltage_V": ref}, t)
                seq.update(phase="positive", t_phase=t)
                self._command_contactors(t, "precharge complete", main_positive=True)
            elif elapsed >= c.precharge_timeout_s:
                self._open_now(t, "precharge timeout")
                self._event("precharge", {"attempt": self.precharge_attempts, "result": "timeout",
                                          "link_voltage_V": link, "pack_voltage_V": ref}, t)
                if self.precharge_attempts >= c.precharge_max_attempts:
                    self._seq = None
                    self._ks.worst[Protection.PRECHARGE_FAILURE] = (self.precharge_attempts, link)
                    self._set_ext(Protection.PRECHARGE_FAILURE, FaultLevel.ERROR, t)
                    return
                seq.update(phase="retry", t_phase=t)
        elif phase == "retry" and elapsed >= c.precharge_retry_delay_s:
            seq.update(phase="start", t_phase=t)
            self._run_precharge(t)
        elif phase == "positive" and elapsed >= c.contactor_close_time_s:
            self._command_contactors(t, "precharge done", precharge=False)
            self._seq = None
            self._goto(t, seq["target"], "precharge complete")

    def _run_opening(self, t: float) -> None:
        op, c = self._opening, self.config
        if op["phase"] == "wait":
            current = float(self._reading[self._i_current])
            waited = t - op["t0"]
            if abs(current) <= c.open_current_threshold_A or waited >= c.open_delay_max_s:
                reason = op["reason"] if abs(current) <= c.open_current_threshold_A else \
                    f"{op['reason']} (opened under load after {waited:.2f} s)"
                self._command_contactors(t, reason, main_positive=False, precharge=False)
                op.update(phase="negative", t_phase=t)
        elif t - op["t_phase"] >= c.contactor_close_time_s:
            self._command_contactors(t, op["reason"], main_negative=False)
            self._opening = None
            self._goto(t, op["target"], op["reason"])

    # --- the slow task: limits, SOC fallback, charge control, balancing, timers ----------------------
    def _slow(self, t: float) -> None:
        c, o, st = self.config, self._out, self.state
        dts = float(o[L.OUT_SLOW_DT])
        current = float(self._reading[self._i_current])
        if abs(current) < c.rest_current_A:
            rested = t - self._rest_since >= c.rest_time_s
        else:
            self._rest_since = t
            rested = False
        est = self.estimator if self._estimator_ready() else None
        if est is not None:
            group_soc = est.group_soc
            soc_lo, soc_hi = float(group_soc.min()), float(group_soc.max())
        else:
            self._update_soc(current, dts, rested)
            soc_lo, soc_hi = self._soc - self._soc_lo, self._soc + self._soc_hi
        self._update_core(dts, est)
        self._update_limits(t, current, dts, 0.5 * (soc_lo + soc_hi), soc_hi)
        if st == BmsState.CHARGING and self._opening is None:
            self._charge_control(t, current)
        if st == BmsState.FAULT and not self.latched and self._opening is None:
            if max(self._levels) < FaultLevel.ERROR:
                if self._quiet_since is None:
                    self._quiet_since = t
                elif t - self._quiet_since >= c.fault_recovery_s:
                    self._goto(t, BmsState.STANDBY, "fault recovered")
        for dtc in self.dtcs:
            if dtc.active and dtc.status == "pending" and t - dtc.first_s >= c.dtc_confirm_s:
                dtc.status = "confirmed"
        if t >= self._next_balance:
            self._next_balance = t + c.balancing_period_s
            self._balance(t, rested)

    def _estimator_ready(self) -> bool:
        est = self.estimator
        return est is not None and bool(getattr(est, "initialised", True))

    def _ocv_inverse(self, v: float) -> float:
        return float(np.interp(v, self._ocv, self._soc_grid))

    def _update_soc(self, current: float, dts: float, rested: bool) -> None:
        o = self._out
        n_valid = o[L.OUT_N_VALID_V]
        if n_valid <= 0:
            return
        if math.isnan(self._soc) or rested:
            mean = float(o[L.OUT_V_SUM]) / n_valid
            self._soc = self._ocv_inverse(mean)
            self._soc_lo = self._soc - self._ocv_inverse(float(o[L.OUT_V_MIN]))
            self._soc_hi = self._ocv_inverse(float(o[L.OUT_V_MAX])) - self._soc
        elif math.isfinite(current):
            self._soc -= current * dts / 3600.0 / self.params.capacity_Ah

    def _update_core(self, dts: float, est) -> None:
        """The coldest core temperature: the estimator's, else a first-order lag of the coldest sensor."""
        o, inp = self._out, self._inp
        t_min = float(o[L.OUT_T_MIN])
        core = getattr(est, "core_temp_C", None)
        if core is not None and len(core):
            self._core_cold = float(core.min())
            core_hot = float(core.max())
        else:
            if math.isnan(self._core_cold):
                self._core_cold = t_min
            elif math.isfinite(t_min):
                self._core_cold += (t_min - self._core_cold) * (1.0 - math.exp(-dts / self.config.core_temperature_lag_s))
            core_hot = math.nan
        inp[L.IN_CORE_MIN] = self._core_cold if math.isfinite(self._core_cold) else math.nan
        self._core_hot = core_hot
        # the stack-pressure reference: datasheet R0 of a group at the mean sensor temperature
        t_mean = 0.5 * (t_min + float(o[L.OUT_T_MAX]))
        if math.isfinite(t_mean):
            r0, e0 = self._arrhenius[:2]
            inp[L.IN_R_REF] = r0 * math.exp(e0 * (1.0 / (t_mean + KELVIN) - 1.0 / T_REF_K)) / self.params.n_parallel

    def _temperature_factors(self, t_lo: float, t_hi: float) -> tuple:
        """What the limits take from the temperatures (cached: readings move in 0.1 K steps).

        Returns the discharge derating factor, the charge C-rate from the cell's table (zero below the charge
        minimum, with the sensor margin), the lithium-metal CCD limit (A, pack) and the datasheet resistance of
        one cell for the limit horizon at the coldest temperature, with the margin.
        """
        key = (t_lo, t_hi)
        if key == self._temp_key:
            return self._temp_factors
        c, cell = self.config, self._cell
        f_t = min(_interp(t_lo, c.discharge_derate_temp_C, c.discharge_derate_factor),
                  _interp(t_hi, c.discharge_derate_temp_C, c.discharge_derate_factor))
        t_ch = t_lo - c.temperature_charge_margin_K
        if t_ch < cell.temp_charge_min_C or t_hi > cell.temp_hard_max_C:
            rate = 0.0
        else:
            rate = min(_interp(t_ch, cell.charge_limit_temp_C, cell.charge_limit_C_rate),
                       _interp(t_hi, cell.charge_limit_temp_C, cell.charge_limit_C_rate))
        ccd_A = math.inf
        if cell.lithium_metal:
            x = 1.0 / (t_ch + KELVIN) - 1.0 / T_REF_K
            ccd = cell.ccd_25C_mA_per_cm2 * math.exp(-cell.ccd_activation_J_per_mol / R_GAS * x)
            ccd_A = cell.ccd_safety_factor * ccd * cell.electrode_area_cm2 * 1e-3 * self.params.n_parallel
        r0, e0, r1, e1, r2, e2 = self._arrhenius
        x = 1.0 / (t_lo + KELVIN) - 1.0 / T_REF_K
        r_cell = (r0 * math.exp(e0 * x) + r1 * math.exp(e1 * x) + r2 * math.exp(e2 * x)) * (1.0 + c.resistance_margin)
        self._temp_key, self._temp_factors = key, (f_t, rate, ccd_A, r_cell)
        return self._temp_factors

    def _sop(self):
        if not self._estimator_ready():
            return None
        sop = getattr(self.estimator, "sop", None)
        if sop is None:
            return None
        if self._sop_index is None:
            horizons = list(getattr(sop, "horizons_s", ()))
            h = self.config.limit_horizon_s
            self._sop_index = min(range(len(horizons)), key=lambda k: abs(horizons[k] - h)) if horizons else -1
        if self._sop_index < 0:
            return None
        k = self._sop_index
        dis = getattr(sop, "discharge_current_model_A", sop.discharge_current_A)
        ch = getattr(sop, "charge_current_model_A", sop.charge_current_A)
        values = (float(dis[k]), float(ch[k]))
        return values if all(math.isfinite(v) and v >= 0 for v in values) else None

    def _update_limits(self, t: float, current: float, dts: float, soc: float, soc_hi: float) -> None:
        """The limits the BMS would publish in READY/CHARGING (``_capability``), then published by state."""
        o = self._out.tolist()
        n_valid_v, n_valid_t = o[L.OUT_N_VALID_V], o[L.OUT_N_VALID_T]
        if n_valid_v <= 0 or n_valid_t <= 0 or not math.isfinite(current):
            self._capability = (0.0, 0.0, 0.0, 0.0)
            self._publish_limits()
            return
        ns, npar, cell = self._ns, self._npar, self._cell
        v_min, v_max = o[L.OUT_V_MIN], o[L.OUT_V_MAX]
        v_mean = o[L.OUT_V_SUM] / n_valid_v
        t_lo, t_hi = o[L.OUT_T_MIN], o[L.OUT_T_MAX]
        if self._core_cold < t_lo:
            t_lo = self._core_cold
        if self._core_hot > t_hi:
            t_hi = self._core_hot
        f_t, rate, ccd_A, r_cell = self._temperature_factors(t_lo, t_hi)
        if soc == soc:
            soc = 0.0 if soc < 0.0 else (1.0 if soc > 1.0 else soc)
            r_cell *= 1.0 + cell.resistance_soc_curvature * (soc - 0.5) * (soc - 0.5)
        i_cell = current / npar
        dis_d, ch_d = self._derate_now
        v_floor, v_ceiling = self._v_floor, self._v_ceiling

        # discharge: peak-current budget, temperature derating, voltage limit
        peak, cont = self._discharge_peak_A, self._discharge_cont_A
        budget = self._peak_budget
        if current > cont and peak > cont:
            budget -= (current - cont) / (peak - cont) * dts / cell.discharge_peak_duration_s
        else:
            budget += dts / self.config.peak_recovery_s
        self._peak_budget = budget = 0.0 if budget < 0.0 else (1.0 if budget > 1.0 else budget)
        i_volt = npar * (v_min + i_cell * r_cell - v_floor) / r_cell
        dis = max(0.0, min((cont + (peak - cont) * budget) * f_t, i_volt)) * dis_d

        # charge: temperature table, SOC taper, lithium-metal CCD, voltage limit (the CV phase)
        if soc_hi == soc_hi and soc_hi > cell.charge_taper_soc and rate > 0 and cell.charge_taper_soc < 1:
            taper = rate * (1.0 - soc_hi) / (1.0 - cell.charge_taper_soc)
            rate = min(rate, max(taper, self.config.charge_taper_floor_C_rate))
        i_volt = npar * (v_ceiling - (v_max + i_cell * r_cell)) / r_cell
        ch = max(0.0, min(rate * self._capacity_Ah, ccd_A, i_volt)) * ch_d

        # the estimator's model-based SOP (the BMS applies its own tables and derating), then the power at
        # the pack voltage the limit current would give
        sop = self._sop()
        if sop is not None:
            dis, ch = min(dis, sop[0]), min(ch, sop[1])
        dis, ch = min(dis, peak), min(ch, self._charge_max_A)
        ocv = min(max(v_mean + i_cell * r_cell, v_floor), v_ceiling)
        p_dis = dis * ns * max(v_floor, ocv - dis / npar * r_cell) if dis > 0 else 0.0
        p_ch = ch * ns * min(v_ceiling, ocv + ch / npar * r_cell) if ch > 0 else 0.0
        self._capability = (dis, ch, p_dis, p_ch)
        self._publish_limits()

        # the over-current check follows falling limits with a grace lag (rising ones at once)
        lim, grace = self.limits, self.config.overcurrent_limit_grace_s
        for k, value in enumerate((lim.discharge_current_A, lim.charge_current_A)):
            ref = self._oc_ref[k]
            if value < ref:
                ref = value if grace <= 0 else ref + (value - ref) * (1.0 - math.exp(-dts / grace))
                self._oc_ref[k] = ref
                self._inp[L.IN_DIS_REF + k] = ref

    def _publish_limits(self) -> None:
        st = self.state
        if self._opening is not None or st not in _CLOSED_STATES:
            limits = ZERO_LIMITS
        else:
            dis, ch, p_dis, p_ch = self._capability
            limits = Limits(dis, ch, p_dis, p_ch) if st == BmsState.READY else Limits(0.0, ch, 0.0, p_ch)
        if limits != self.limits:
            self.limits = limits
            for k, value in enumerate((limits.discharge_current_A, limits.charge_current_A)):
                if value > self._oc_ref[k]:
                    self._oc_ref[k] = value
                    self._inp[L.IN_DIS_REF + k] = value
        self._inp[L.IN_OC_ENABLE] = 1.0 if (st in _CLOSED_STATES and self._opening is None) else 0.0
        if st != BmsState.CHARGING or self._opening is not None:
            self.charge_request_A = 0.0

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

    def _balance(self, t: float, rested: bool) -> None:
        c, st = self.config, self.state
        allowed = (c.balancing_enabled and st in (BmsState.STANDBY, BmsState.READY, BmsState.CHARGING)
                   and max(self._levels) < FaultLevel.ERROR and (rested or st == BmsState.CHARGING))
        use_soc = False
        est = self.estimator
        if allowed and self._estimator_ready() and getattr(est, "group_soc", None) is not None:
            soc = self._ks.group_soc
            soc[:] = est.group_soc
            valid = getattr(est, "input_valid", None)
            if valid is not None:
                soc[~np.asarray(valid, dtype=bool)] = np.nan
            use_soc = True
        if use_soc:
            count = self._kernel.balance(allowed, True, c.balancing_start_soc, c.balancing_stop_soc)
        else:
            count = self._kernel.balance(allowed, False, c.balancing_start_V, c.balancing_stop_V)
        if (count > 0) != (self.balancing_groups > 0):
            self._event("balancing", {"active": count > 0, "groups": count, "by": "soc" if use_soc else "voltage"},
                        t)
        self.balancing_groups = count

    def _factor(self, value: float | str) -> float:
        """A derating factor, or the configuration value it names."""
        return float(getattr(self.config, value) if isinstance(value, str) else value)

    def __repr__(self):
        return (f"Bms(state={self.state.name}, latched={self.latched}, fault_level={self.fault_level.name}, "
                f"limits={self.limits})")
