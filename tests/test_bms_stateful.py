"""A hypothesis rule-based state machine over the closed loop (plant + sensors + BMS).

Random VCU requests, drives (compliant or not), sensor faults, welds, charger and CAN events; at every tick:

* main+ never closes without a completed precharge (the DC link's truth near the pack's);
* in a latched fault no contactor is commanded closed;
* the published limits never exceed the cell's physical limits, and are zero outside READY/CHARGING;
* the BMS never requests (or allows) charge while a cell is below 0 degC;
* every fault injected long enough to pass its debounce shows as its DTC at its level.
"""
import math
import os

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from bms import load_pack
from bms._layout import MAIN_NEGATIVE, MAIN_POSITIVE, PRECHARGE
from bms._protection import IN_VCU_DEADLINE
from bms.controller import BmsState, FaultLevel, StateRequest
from bms.emulator import Emulator
from bms.faults import Protection as P
from bms.sensors import Offset, OpenWire, Stuck

PARAMS = load_pack().replace(pack={"n_series": 16, "n_modules": 2})
N_TEMP = PARAMS.n_temperature_sensors

# (kind, fault) -> (protection, level) that must follow within its debounce; None: no promise
FAULTS = {
    ("cell_voltage", OpenWire()): (P.CELL_VOLTAGE_SENSOR, FaultLevel.ERROR),
    ("cell_voltage", Stuck(0.0)): (P.CELL_VOLTAGE_SENSOR, FaultLevel.ERROR),
    ("cell_voltage", Stuck(5.0)): (P.CELL_VOLTAGE_SENSOR, FaultLevel.ERROR),
    ("cell_voltage", Stuck(3.7)): None,
    ("cell_voltage", Offset(0.05)): None,
    ("temperature", OpenWire()): (P.TEMPERATURE_SENSOR, FaultLevel.WARNING),
    ("temperature", Stuck(200.0)): (P.TEMPERATURE_SENSOR, FaultLevel.WARNING),
    ("temperature", Stuck(85.0)): (P.DISCHARGE_OVERTEMPERATURE, FaultLevel.EMERGENCY),
    ("temperature", Offset(25.0)): None,
    ("temperature", Offset(-25.0)): None,
    ("current", Stuck(3000.0)): (P.CURRENT_SENSOR, FaultLevel.ERROR),
    ("current", Offset(30.0)): None,
    ("current", OpenWire()): None,
    ("pack_voltage", Offset(-30.0)): None,
    ("link_voltage", Offset(40.0)): None,
    ("link_voltage", OpenWire()): None,
    ("contactor_feedback", OpenWire()): None,
}
FAULT_KEYS = list(FAULTS)


def _deadline(bms, emu, kind, fault):
    """How long after injection the promised DTC must exist (debounce, sample period, task period, margin)."""
    c, sp = bms.config, emu.params.sensors
    slack = c.protection_period_s + 3 * emu.dt_s
    if kind == "cell_voltage":
        return c.cell_voltage_sensor_debounce_s + sp.cell_voltage_period_s + slack
    if kind == "temperature" and isinstance(fault, Stuck) and fault.value == 85.0:
        return c.discharge_overtemp_debounce_s[2] + sp.temperature_period_s + slack
    if kind == "temperature":
        return c.temperature_sensor_debounce_s + sp.temperature_period_s + slack
    if kind == "current":
        return c.current_sensor_debounce_s[1] + sp.current_period_s + slack
    raise AssertionError(kind)


class ClosedLoop(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2 ** 16), soc=st.floats(0.05, 0.98),
                temp=st.sampled_from([-25.0, -5.0, 1.0, 25.0, 25.0, 25.0, 50.0]),
                mode=st.sampled_from([StateRequest.NONE, StateRequest.DRIVE, StateRequest.DRIVE, StateRequest.CHARGE]))
    def start(self, seed, soc, temp, mode):
        self.emu = Emulator(PARAMS, seed=seed, initial_soc=soc, temp_C=temp, estimator=None)
        self.bms = self.emu.bms
        self.injected = None          # (kind, index, fault, t_s)
        self.vcu_talks = True
        self.vcu_heard = False
        self.charger = None           # (max_current_A, last offer t)
        self.coolant, self.cooling = temp, 1.0
        self.prev_cmd = self.emu.pack.state.contactor_command.copy()
        self.log = [f"start seed={seed} soc={soc:.3f} temp={temp} {mode.name}"]
        self.drive(0.5, 0.0, True)
        if mode == StateRequest.CHARGE:
            self.charger_plug(True, 100.0)
        if mode != StateRequest.NONE:
            self.request(mode)
            self.drive(1.0, 50.0, True)

    @rule(then=st.sampled_from([StateRequest.DRIVE, StateRequest.CHARGE]))
    def rearm(self, then):
        """What a VCU does after a fault: STANDBY, then ask again."""
        self.request(StateRequest.STANDBY)
        self.request(then)

    # --- rules -----------------------------------------------------------------------------------
    @rule(req=st.sampled_from(list(StateRequest)))
    def request(self, req):
        self.log.append(f"t={self.emu.t_s:.2f} request {req.name}")
        self.bms.request(req, self.emu.t_s)
        self.vcu_heard = True
        self.check()

    @rule(seconds=st.floats(0.05, 3.0), demand=st.floats(-300.0, 600.0), compliant=st.booleans())
    def drive(self, seconds, demand, compliant):
        self.log.append(f"t={self.emu.t_s:.2f} drive {seconds:.2f} s at {demand:.0f} A compliant={compliant}")
        emu, bms = self.emu, self.bms
        for _ in range(int(seconds / emu.dt_s) + 1):
            if self.vcu_talks and emu.ticks % 10 == 0:
                bms.vcu_alive(emu.t_s)
                self.vcu_heard = True
            if self.charger is not None and emu.t_s - self.charger[1] >= 0.1:
                bms.charger_offer(emu.t_s, max_voltage_V=16 * 4.25, max_current_A=self.charger[0])
                self.charger = (self.charger[0], emu.t_s)
            if bms.state == BmsState.CHARGING and self.charger is not None:
                load = -bms.charge_request_A
            else:
                load = emu.limited(demand) if compliant else demand
            emu.tick(load, self.coolant, self.cooling)
            self.check()

    @rule(key=st.sampled_from(FAULT_KEYS + ["weld"]), index=st.integers(0, 15))
    def inject(self, key, index):
        if key == "weld":
            name = ["main_positive", "main_negative", "precharge"][index % 3]
            self.emu.pack.weld_contactor(name)
            self.log.append(f"t={self.emu.t_s:.2f} weld {name}")
            return
        kind, fault = key
        count = {"cell_voltage": 16, "temperature": N_TEMP, "contactor_feedback": 3}.get(kind, 1)
        index %= count
        self.emu.sensors.clear()
        self.emu.sensors.inject(kind, index, fault, t_s=self.emu.t_s)
        self.injected = (kind, index, fault, self.emu.t_s)
        self.log.append(f"t={self.emu.t_s:.2f} inject {kind}[{index}] {fault}")

    @rule()
    def clear_sensor_faults(self):
        self.emu.sensors.clear()
        self.injected = None
        self.log.append(f"t={self.emu.t_s:.2f} clear sensor faults")

    @rule(talks=st.booleans())
    def vcu(self, talks):
        self.vcu_talks = talks
        self.log.append(f"t={self.emu.t_s:.2f} VCU talks={talks}")

    @rule(connected=st.booleans(), current=st.floats(0.0, 300.0))
    def charger_plug(self, connected, current):
        self.charger = (current, self.emu.t_s) if connected else None
        self.bms.charger_offer(self.emu.t_s, max_voltage_V=16 * 4.25 if connected else 0.0,
                               max_current_A=current if connected else 0.0, connected=connected)
        self.log.append(f"t={self.emu.t_s:.2f} charger connected={connected} {current:.0f} A")
        self.check()

    @rule(source=st.sampled_from(["VCU_Command", "CHG_Status"]), active=st.booleans())
    def comm(self, source, active):
        self.bms.comm_fault(source, active, self.emu.t_s)
        self.check()

    @rule()
    def clear_dtcs(self):
        self.log.append(f"t={self.emu.t_s:.2f} clear DTCs -> {self.bms.clear_dtcs(self.emu.t_s)}")
        self.check()

    @rule(coolant=st.floats(-30.0, 75.0), cooling=st.floats(0.0, 1.0))
    def environment(self, coolant, cooling):
        self.coolant, self.cooling = coolant, cooling
        self.log.append(f"t={self.emu.t_s:.2f} coolant {coolant:.1f} degC x{cooling:.2f}")

    # --- invariants, at every tick ---------------------------------------------------------------
    def fail(self, message):
        events = "\n".join(f"  t={e.t_s:8.2f} {e.kind:9s} {e.detail}" for e in self.bms.events[-15:])
        steps = "\n".join(self.log[-15:])
        raise AssertionError(f"t={self.emu.t_s:.2f} s, state {self.bms.state.name}: {message}\n"
                             f"steps:\n{steps}\nBMS events:\n{events}")

    def check(self):
        emu, bms, s = self.emu, self.bms, self.emu.pack.state
        cmd, cell, params = s.contactor_command, PARAMS.cell, PARAMS
        if cmd[MAIN_POSITIVE] and not self.prev_cmd[MAIN_POSITIVE]:
            if not (self.prev_cmd[PRECHARGE] and self.prev_cmd[MAIN_NEGATIVE]):
                self.fail("main+ closed without the precharge path closed before it")
            if emu.pack.link_voltage_V < 0.9 * emu.pack.pack_voltage_V:
                self.fail(f"main+ closed with the DC link at {emu.pack.link_voltage_V:.1f} V of "
                          f"{emu.pack.pack_voltage_V:.1f} V")
        if bms.latched and (cmd & ~self.prev_cmd).any():
            self.fail(f"a contactor closed while latched: {self.prev_cmd} -> {cmd}")
        if bms.state in (BmsState.INIT, BmsState.STANDBY, BmsState.SHUTDOWN) and cmd.any():
            self.fail(f"contactors commanded {cmd} in {bms.state.name}")
        self.prev_cmd = cmd.copy()

        lim = bms.limits
        values = (lim.discharge_current_A, lim.charge_current_A, lim.discharge_power_W, lim.charge_power_W)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            self.fail(f"limits not finite and >= 0: {lim}")
        dis_max = cell.discharge_peak_C_rate * params.capacity_Ah
        ch_max = max(cell.charge_limit_C_rate) * params.capacity_Ah
        v_max = cell.voltage_max_V * params.n_series
        if lim.discharge_current_A > dis_max + 1e-9 or lim.charge_current_A > ch_max + 1e-9:
            self.fail(f"limits above the cell's physical limits ({dis_max} A, {ch_max} A): {lim}")
        if lim.discharge_power_W > lim.discharge_current_A * v_max + 1e-6 or \
                lim.charge_power_W > lim.charge_current_A * v_max + 1e-6:
            self.fail(f"power limits inconsistent with the current limits: {lim}")
        if bms.state not in (BmsState.READY, BmsState.CHARGING) and any(values):
            self.fail(f"limits published in {bms.state.name}: {lim}")
        if bms.state == BmsState.CHARGING and lim.discharge_current_A:
            self.fail("discharge limit while CHARGING")

        coldest = min(s.temp_core_C.min(), s.temp_surface_C.min())
        if coldest < cell.temp_charge_min_C and (bms.charge_request_A > 0 or lim.charge_current_A > 0):
            self.fail(f"charge requested/allowed with a cell at {coldest:.2f} degC: request "
                      f"{bms.charge_request_A:.1f} A, limit {lim.charge_current_A:.1f} A")

        if bms.warning_flags & bms.error_flags:
            self.fail(f"a protection both warning and error: {bms.warning_flags:#x} {bms.error_flags:#x}")

        if self.injected is not None:
            kind, index, fault, t0 = self.injected
            promise = FAULTS[(kind, fault)]
            if kind == "temperature":   # a channel still flagged by an earlier fault is trusted only once it heals
                healed = [e.t_s for e in bms.events if e.kind == "fault" and
                          e.detail.get("protection") == "TEMPERATURE_SENSOR" and e.detail.get("level") == "NONE"]
                t0 = max([t0, *healed])
            if promise is not None and emu.t_s - t0 > _deadline(bms, emu, kind, fault):
                protection, level = promise
                found = [d for d in bms.dtcs if d.code == 0x1A00 + protection and d.level >= level]
                if not found:
                    self.fail(f"{kind}[{index}] {fault} injected at t={t0:.2f} s: no {protection.name} DTC at "
                              f"{level.name} or above; DTCs {[(d.name, d.level.name) for d in bms.dtcs]}")
        vcu_deadline = bms._inp[IN_VCU_DEADLINE]
        if self.vcu_heard and bms.state != BmsState.SHUTDOWN and emu.t_s > vcu_deadline + 2 * emu.dt_s:
            if not any(d.code == 0x1A00 + P.VCU_TIMEOUT and d.level >= FaultLevel.ERROR for d in bms.dtcs):
                self.fail(f"VCU silent since {vcu_deadline - bms.config.vcu_timeout_s:.2f} s: no VCU_TIMEOUT DTC")

    def teardown(self):
        if hasattr(self, "bms"):
            for state in sorted({e.detail["to"] for e in self.bms.events if e.kind == "state"}):
                event(f"visited {state}")
            for d in self.bms.dtcs:
                event(f"DTC {d.name} {d.level.name}")

    @invariant()
    def flags_match_levels(self):
        if not hasattr(self, "bms"):
            return
        levels = self.bms.levels
        warning = sum(1 << p for p in P if levels[p.name] == FaultLevel.WARNING)
        error = sum(1 << p for p in P if levels[p.name] >= FaultLevel.ERROR)
        assert (self.bms.warning_flags, self.bms.error_flags) == (warning, error)


ClosedLoop.TestCase.settings = settings(max_examples=int(os.environ.get("BMS_STATEFUL_EXAMPLES", 150)),
                                        stateful_step_count=40, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
TestClosedLoop = ClosedLoop.TestCase
