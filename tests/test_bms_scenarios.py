"""The emulated BMS in the closed loop: scenarios a VCU or charger firmware would meet.

Every assertion message says what happened at which simulated time (``story`` prints the BMS's events).
"""
import numpy as np
import pytest

from bms import load_pack
from bms.config import BmsConfig
from bms.controller import BmsState, FaultLevel, StateRequest
from bms.emulator import Emulator
from bms.faults import Protection
from bms.sensors import OpenWire, Stuck
from hil.cycles import load_cycle
from hil.vehicle import Vehicle, power_profile


def story(bms, kinds=("state", "fault", "contactor", "request", "precharge", "charge"), last=25) -> str:
    lines = [f"  t={e.t_s:9.2f} s  {e.kind:9s} {e.detail}" for e in bms.events if e.kind in kinds]
    return "BMS events:\n" + "\n".join(lines[-last:])


def run(emu, seconds, load=lambda emu: 0.0, vcu=True, until=None, **tick):
    """Tick for ``seconds``; the VCU (if ``vcu``) talks every 100 ms; ``load(emu)`` is the current demand."""
    bms = emu.bms
    for _ in range(int(round(seconds / emu.dt_s))):
        if vcu and emu.ticks % 10 == 0:
            bms.vcu_alive(emu.t_s)
        emu.tick(load(emu), **{k: (v(emu) if callable(v) else v) for k, v in tick.items()})
        if until is not None and until(emu):
            return True
    return False


def start_driving(emu):
    run(emu, 0.5)
    emu.bms.request(StateRequest.DRIVE, emu.t_s)
    run(emu, 1.0)
    assert emu.bms.state == BmsState.READY, f"not READY 1 s after DRIVE at t={emu.t_s:.2f} s\n{story(emu.bms)}"


def dtc(bms, protection):
    return next((d for d in bms.dtcs if d.code == 0x1A00 + protection), None)


def first_event(bms, kind, **match):
    return next((e for e in bms.events if e.kind == kind and all(e.detail.get(k) == v for k, v in match.items())),
                None)


SMALL = dict(pack={"n_series": 16, "n_modules": 1})


@pytest.mark.parametrize("estimator", [None, "auto"])
def test_cold_start_discharge_derated_charge_refused(estimator):
    emu = Emulator(seed=4, initial_soc=0.6, temp_C=-20.0, estimator=estimator)
    bms, cell, capacity = emu.bms, emu.params.cell, emu.params.capacity_Ah
    start_driving(emu)
    run(emu, 2.0)
    lim = bms.limits
    assert 0 < lim.discharge_current_A < 0.5 * cell.discharge_continuous_C_rate * capacity, \
        f"at t={emu.t_s:.1f} s, -20 degC: discharge limit {lim.discharge_current_A:.1f} A, expected allowed " \
        f"but derated\n{story(bms)}"
    assert lim.discharge_power_W > 0 and lim.charge_current_A == 0 and lim.charge_power_W == 0, lim
    # the VCU may drive within the limit; regen stays forbidden
    assert not run(emu, 20.0, load=lambda e: e.limited(200.0), until=lambda e: e.bms.state != BmsState.READY), \
        f"left READY at t={emu.t_s:.1f} s while driving within the limits\n{story(bms)}"
    assert emu.pack.current_A > 0 and bms.limits.charge_current_A == 0
    assert bms.levels["DISCHARGE_UNDERTEMPERATURE"] <= FaultLevel.WARNING
    # charging is refused below 0 degC, with a charger offering plenty
    bms.charger_offer(emu.t_s, max_voltage_V=820.0, max_current_A=200.0)
    bms.request(StateRequest.CHARGE, emu.t_s)
    run(emu, 2.0, load=lambda e: -e.bms.charge_request_A)
    refused = first_event(bms, "request", request="CHARGE", accepted=False)
    assert refused is not None and bms.state != BmsState.CHARGING, story(bms)
    assert bms.charge_request_A == 0 and bms.limits.charge_current_A == 0
    assert emu.pack.current_A >= -0.5, f"charge current {emu.pack.current_A:.2f} A flows at -20 degC"


def test_overtemperature_during_us06_derates_then_opens_in_a_controlled_way():
    emu = Emulator(seed=5, initial_soc=0.8, temp_C=50.0, estimator=None)
    bms = emu.bms
    power, _ = power_profile(load_cycle("us06"), Vehicle(), emu.dt_s)
    start_driving(emu)
    k = 0
    peak_before_warning = derated = None

    def demand(e):
        return power[min(k, len(power) - 1)] / max(e.sensors.link_voltage_V, 1.0)

    # the coolant loop fails and heats up at 0.2 K/s; a compliant VCU follows the published limits
    while k < len(power) and not (bms.state == BmsState.FAULT and bms.contactors_open):
        run(emu, emu.dt_s, load=lambda e: e.limited(demand(e)), coolant_C=lambda e: 50.0 + 0.2 * e.t_s)
        k += 1
        level = bms.levels["DISCHARGE_OVERTEMPERATURE"]
        if level == FaultLevel.NONE:
            peak_before_warning = bms.limits.discharge_current_A
        elif level == FaultLevel.WARNING and bms.limits.discharge_current_A < 0.8 * peak_before_warning:
            derated = derated or emu.t_s
    warning = first_event(bms, "fault", protection="DISCHARGE_OVERTEMPERATURE", level="WARNING")
    error = first_event(bms, "fault", protection="DISCHARGE_OVERTEMPERATURE", level="ERROR")
    assert warning and error and warning.t_s < error.t_s, story(bms)
    assert derated is not None and derated < error.t_s, \
        f"no derating between the warning at {warning.t_s:.1f} s and the error at {error.t_s:.1f} s\n{story(bms)}"
    assert bms.state == BmsState.FAULT and bms.contactors_open, story(bms)
    opened = [e for e in bms.events if e.kind == "contactor" and e.detail["name"] == "main_positive"
              and not e.detail["closed"]]
    assert opened and abs(opened[-1].detail["current_A"]) <= bms.config.open_current_threshold_A, \
        f"main+ opened under load: {opened[-1] if opened else None}\n{story(bms)}"
    assert "under load" not in opened[-1].detail["reason"]
    d = dtc(bms, Protection.DISCHARGE_OVERTEMPERATURE)
    assert d.status == "confirmed" and d.level == FaultLevel.ERROR and d.freeze_frame["temperature_max_C"] >= 55


def test_open_wire_is_confirmed_within_its_debounce_and_opens_the_contactors():
    emu = Emulator(load_pack().replace(**SMALL), seed=6, initial_soc=0.5, estimator=None)
    bms, c = emu.bms, emu.bms.config
    start_driving(emu)
    run(emu, 2.0, load=lambda e: e.limited(80.0))
    t_inject = emu.t_s
    emu.sensors.inject("cell_voltage", 7, OpenWire(), t_s=t_inject)
    run(emu, 3.0, load=lambda e: e.limited(80.0))
    d = dtc(bms, Protection.CELL_VOLTAGE_SENSOR)
    bound = c.cell_voltage_sensor_debounce_s + c.protection_period_s + 2 * emu.dt_s
    assert d is not None, f"no CELL_VOLTAGE_SENSOR DTC after an open wire at t={t_inject:.2f} s\n{story(bms)}"
    assert d.level == FaultLevel.ERROR and d.status == "confirmed" and d.freeze_frame["channel"] == 7, d
    assert d.first_s - t_inject <= bound, \
        f"open wire at t={t_inject:.2f} s confirmed at t={d.first_s:.2f} s, later than {bound:.2f} s\n{story(bms)}"
    assert dtc(bms, Protection.CELL_UNDERVOLTAGE) is None, f"an open wire read as undervoltage\n{story(bms)}"
    assert bms.state == BmsState.FAULT and bms.contactors_open, story(bms)
    # the wire reconnected: the fault clears, the BMS recovers to STANDBY, the DTC stays stored until cleared
    emu.sensors.clear("cell_voltage", 7)
    run(emu, c.protection_clear_s + c.fault_recovery_s + 1.0)
    assert bms.state == BmsState.STANDBY and not dtc(bms, Protection.CELL_VOLTAGE_SENSOR).active, story(bms)
    assert bms.clear_dtcs(emu.t_s) >= 1 and dtc(bms, Protection.CELL_VOLTAGE_SENSOR) is None
    assert bms.dtc_history[-1].status == "cleared"


def test_stuck_cell_voltage_is_found_when_the_current_moves():
    emu = Emulator(load_pack().replace(**SMALL), seed=7, initial_soc=0.5, estimator=None)
    bms = emu.bms
    start_driving(emu)
    emu.sensors.inject("cell_voltage", 3, Stuck(3.70), t_s=emu.t_s)
    run(emu, 6.0, load=lambda e: e.limited(150.0 if int(e.t_s) % 2 else 20.0))
    d = dtc(bms, Protection.CELL_VOLTAGE_SENSOR)
    assert d is not None and d.freeze_frame["channel"] == 3, story(bms)


@pytest.mark.parametrize("keep_drawing", [False, True])
def test_vcu_silence_faults_and_opens_within_the_configured_time(keep_drawing):
    emu = Emulator(load_pack().replace(**SMALL), seed=8, initial_soc=0.5, estimator=None)
    bms, c = emu.bms, emu.bms.config
    start_driving(emu)
    run(emu, 2.0, load=lambda e: e.limited(60.0))
    t_silent = emu.t_s - emu.t_s % 0.1  # the last vcu_alive
    # the VCU falls silent; the inverter either follows the limits (drops to 0) or keeps drawing 60 A
    load = (lambda e: 60.0) if keep_drawing else (lambda e: e.limited(60.0))
    run(emu, 5.0, load=load, vcu=False, until=lambda e: e.bms.contactors_open)
    bound = t_silent + c.vcu_timeout_s + c.open_delay_max_s + c.contactor_close_time_s + 3 * emu.dt_s
    fault = first_event(bms, "fault", protection="VCU_TIMEOUT", level="ERROR")
    assert fault is not None and fault.t_s <= t_silent + c.vcu_timeout_s + 2 * emu.dt_s, story(bms)
    assert bms.contactors_open and emu.t_s <= bound, \
        f"VCU silent since t={t_silent:.2f} s; contactors open at t={emu.t_s:.2f} s (bound {bound:.2f} s)\n" \
        f"{story(bms)}"
    assert bms.state == BmsState.FAULT and not bms.latched
    opened = first_event(bms, "contactor", name="main_positive", closed=False)
    assert ("under load" in opened.detail["reason"]) == keep_drawing, opened
    # the VCU comes back: the fault clears; it must send STANDBY before DRIVE closes again
    run(emu, c.fault_recovery_s + 0.5)
    assert bms.state == BmsState.STANDBY, story(bms)
    bms.request(StateRequest.DRIVE, emu.t_s)
    bms.request(StateRequest.STANDBY, emu.t_s)
    bms.request(StateRequest.DRIVE, emu.t_s)
    run(emu, 1.0)
    assert bms.state == BmsState.READY, story(bms)


@pytest.mark.parametrize("estimator", [None, "auto"])
def test_balancing_narrows_a_two_percent_soc_spread_during_a_long_rest(estimator):
    emu = Emulator(load_pack().replace(**SMALL), seed=9, initial_soc=0.5, dt_s=1.0, estimator=estimator)
    offsets = np.linspace(-0.01, 0.01, 16)
    np.random.default_rng(1).shuffle(offsets)
    emu.pack.state.soc[:] = np.repeat(0.5 + offsets, 2)   # the test's setup of the truth, before any tick
    spread0 = np.ptp(emu.pack.group_soc)
    heat = 0.0
    for _hour in range(12):
        for _ in range(3600):
            emu.tick(0.0)
            heat += float(emu.pack.state.balancing.sum())
    spread = np.ptp(emu.pack.group_soc)
    assert emu.bms.state == BmsState.STANDBY, story(emu.bms)
    assert spread < 0.75 * spread0, \
        f"SOC spread {100 * spread0:.2f} % -> {100 * spread:.2f} % after 12 h of rest ({heat:.0f} group-seconds " \
        f"of bleeding)\n{story(emu.bms, kinds=('balancing', 'state', 'fault'))}"
    assert first_event(emu.bms, "balancing", active=True) is not None


def test_latched_emergency_keeps_the_contactors_open_until_cleared():
    emu = Emulator(load_pack().replace(**SMALL), seed=10, initial_soc=0.5, estimator=None)
    bms = emu.bms
    start_driving(emu)
    emu.sensors.inject("temperature", 0, Stuck(85.0), t_s=emu.t_s)  # beyond the hard max: emergency
    run(emu, 3.0, load=lambda e: 100.0)
    assert bms.state == BmsState.FAULT and bms.latched and bms.contactors_open, story(bms)
    opened = first_event(bms, "contactor", name="main_positive", closed=False)
    assert abs(opened.detail["current_A"]) > 50, "an emergency opens at once, whatever the current"
    bms.request(StateRequest.STANDBY, emu.t_s)
    bms.request(StateRequest.DRIVE, emu.t_s)
    run(emu, 2.0)
    assert bms.contactors_open and bms.state == BmsState.FAULT
    assert bms.clear_dtcs(emu.t_s) == 0 and bms.latched, "cleared while the sensor still reads 85 degC"
    emu.sensors.clear()
    run(emu, 4.0)
    bms.clear_dtcs(emu.t_s)
    assert not bms.latched and bms.state == BmsState.STANDBY, story(bms)


def test_charging_follows_the_charger_and_ends_at_full():
    params = load_pack().replace(**SMALL)
    emu = Emulator(params, seed=11, initial_soc=0.97, temp_C=25.0, estimator=None)
    bms = emu.bms
    run(emu, 0.5)
    bms.charger_offer(emu.t_s, max_voltage_V=16 * 4.25, max_current_A=60.0)
    bms.request(StateRequest.CHARGE, emu.t_s)
    charger = {"t": emu.t_s}

    def charger_current(e):
        if e.t_s - charger["t"] >= 0.1:
            e.bms.charger_offer(e.t_s, max_voltage_V=16 * 4.25, max_current_A=60.0)
            charger["t"] = e.t_s
        return -e.bms.charge_request_A

    done = run(emu, 1800.0, load=charger_current, until=lambda e: e.bms.charge_complete and e.bms.contactors_open)
    assert done, f"charge not complete after 30 min: {bms.cell_voltage_max_V:.3f} V\n{story(bms)}"
    assert bms.state == BmsState.STANDBY and emu.pack.state.group_voltage_V.max() < 4.25
    assert first_event(bms, "state", to="CHARGING") is not None
    assert not any(d.level >= FaultLevel.WARNING and d.name == "CELL_OVERVOLTAGE" for d in bms.dtcs), story(bms)


def test_precharge_failure_retries_then_latches():
    params = load_pack().replace(pack={"n_series": 16, "n_modules": 1, "precharge_resistance_ohm": 4000.0})
    emu = Emulator(params, seed=12, estimator=None)   # tau = 6 s: the link never makes it in 1 s
    bms, c = emu.bms, emu.bms.config
    run(emu, 0.5)
    bms.request(StateRequest.DRIVE, emu.t_s)
    run(emu, c.precharge_max_attempts * (c.precharge_timeout_s + c.precharge_retry_delay_s) + 1.0)
    assert bms.precharge_attempts == c.precharge_max_attempts, story(bms)
    assert bms.state == BmsState.FAULT and bms.latched and bms.contactors_open, story(bms)
    assert dtc(bms, Protection.PRECHARGE_FAILURE).level == FaultLevel.ERROR
    assert not emu.pack.state.contactor_command[0], "main+ closed without a completed precharge"


def test_welded_main_positive_is_found_before_precharge():
    emu = Emulator(load_pack().replace(**SMALL), seed=13, estimator=None)
    emu.pack.weld_contactor("main_positive")
    bms = emu.bms
    run(emu, 0.5)
    assert dtc(bms, Protection.CONTACTOR_WELDED) is not None and bms.state == BmsState.FAULT, story(bms)
    assert bms.latched
    bms.request(StateRequest.DRIVE, emu.t_s)
    run(emu, 1.0)
    assert not emu.pack.state.contactor_command.any(), "the BMS commanded a contactor with main+ welded"


def test_stack_pressure_loss_is_detected_and_derates():
    params = load_pack().replace(**SMALL)
    emu = Emulator(params, seed=14, initial_soc=0.6, estimator=None,
                   config=BmsConfig(stack_pressure_window_s=60.0, stack_pressure_debounce_s=[10.0, 120.0, 120.0]))
    bms = emu.bms
    emu.pack.set_stack_pressure(0.2, cells=slice(10, 12))   # group 5 loses its compression (R1 x 5)
    start_driving(emu)
    power, _ = power_profile(load_cycle("udds"), Vehicle(), emu.dt_s)
    k = [0]

    def load(e):
        k[0] += 1
        return e.limited(power[k[0] % len(power)] / max(e.sensors.link_voltage_V, 1.0) * 12.0)  # 16s of 192s

    found = run(emu, 300.0, load=load, until=lambda e: e.bms.levels["STACK_PRESSURE_LOSS"] >= FaultLevel.WARNING)
    assert found, f"no stack-pressure warning after {emu.t_s:.0f} s (worst ratio " \
                  f"{bms._ks.out[11]:.2f})\n{story(bms)}"
    d = dtc(bms, Protection.STACK_PRESSURE_LOSS)
    assert d.freeze_frame["channel"] == 5, d
    assert bms.state == BmsState.READY
    before = bms.limits.discharge_current_A
    run(emu, 0.3, load=load)
    assert bms.limits.discharge_current_A <= bms.config.stack_pressure_derate * emu.params.capacity_Ah * \
        emu.params.cell.discharge_peak_C_rate + 1e-9, (before, bms.limits)


@pytest.mark.parametrize("temp_C", [12.0, 25.0])
def test_a_healthy_pack_in_a_fast_charge_raises_no_stack_pressure_warning(temp_C):
    """A DC fast charge is one current step, then a constant current for minutes; the groups' deviations drift
    apart meanwhile (their start SOCs differ, and so do their OCV slopes). The regression once took the time before
    its first sample for a rest with no deviation, and at 12 degC a healthy group read 1.5-1.6 (warning 1.4):
    the charge ran at half its limit for the rest of the session."""
    from hil.runner import run_scenario
    from hil.scenario import parse_scenario
    text = f"""
[scenario]
name = "cool-fast-charge"
seed = 1183754126982098012
initial_soc = 0.1
[ambient]
temp_C = {temp_C}
[[step]]
kind = "rest"
duration_s = 5.0
[[step]]
kind = "charge"
method = "dcfc"
target_soc = 0.8
max_current_A = 240.0
max_duration_s = 400.0
"""
    result = run_scenario(parse_scenario(text, "cool-fast-charge"), plots=False)
    charging = result.recording.signals["current_A"] < -5.0
    assert charging.sum() * 0.1 > 300.0, "the pack hardly charged: the test no longer looks at a charge"
    stack = [f for f in result.summary["faults"] if "STACK_PRESSURE" in f["event"]]
    assert not stack, f"stack-pressure warning on a healthy pack charging at {temp_C} degC: {stack}"


def test_a_stuck_temperature_sensor_in_a_cold_pack_raises_no_stack_pressure_warning():
    """The stack-pressure reference resistance is the datasheet R0 at the sensors' temperature. Taken at the mean of
    the coldest and the hottest sensor, one sensor stuck at 25 degC in a pack at -12 degC put it 2.5x too low, and a
    healthy group read 1.62 (warning 1.4) after 140 s of US06 (found by a sweep of the sensor-faults scenario)."""
    from hil.runner import run_scenario
    from hil.scenario import parse_scenario
    text = """
[scenario]
name = "cold-stuck-sensor"
seed = 4
initial_soc = 0.8
[ambient]
temp_C = -12.4
[[step]]
kind = "drive"
cycle = "us06"
[[fault]]
kind = "sensor"
sensor = "temperature"
index = 5
fault = "stuck"
value = 25.0
at_s = 30.0
"""
    result = run_scenario(parse_scenario(text, "cold-stuck-sensor"), plots=False)
    events = [f["event"] for f in result.summary["faults"]]
    assert "fault:TEMPERATURE_SENSOR:WARNING" in events, "the stuck sensor is no longer seen: the test looks at nothing"
    stack = [f for f in result.summary["faults"] if "STACK_PRESSURE" in f["event"]]
    assert not stack, f"stack-pressure warning caused by a stuck temperature sensor: {stack}"


def test_lithium_metal_cell_charges_within_its_critical_current_density():
    params = load_pack().replace(pack={"n_series": 16, "n_modules": 1}, cell={"lithium_metal": True})
    emu = Emulator(params, seed=15, initial_soc=0.5, temp_C=25.0, estimator=None)
    start_driving(emu)
    run(emu, 1.0)
    cell = params.cell
    ccd_A = cell.ccd_safety_factor * cell.ccd_25C_mA_per_cm2 * cell.electrode_area_cm2 * 1e-3 * params.n_parallel
    lim = emu.bms.limits
    assert 0 < lim.charge_current_A <= ccd_A * 1.05, f"{lim} against a CCD limit of {ccd_A:.1f} A at ~25 degC"
    assert lim.discharge_current_A > 10 * lim.charge_current_A


def test_charger_silence_and_comm_faults():
    emu = Emulator(load_pack().replace(**SMALL), seed=16, initial_soc=0.5, estimator=None)
    bms, c = emu.bms, emu.bms.config
    run(emu, 0.5)
    bms.comm_fault("VCU_Command", True, emu.t_s)
    assert bms.warning_flags & (1 << Protection.COMM_FAULT) and dtc(bms, Protection.COMM_FAULT).status == "pending"
    bms.comm_fault("VCU_Command", False, emu.t_s)
    assert not bms.warning_flags & (1 << Protection.COMM_FAULT) and not dtc(bms, Protection.COMM_FAULT).active
    bms.charger_offer(emu.t_s, max_voltage_V=68.0, max_current_A=30.0)
    bms.request(StateRequest.CHARGE, emu.t_s)
    run(emu, 1.0, load=lambda e: -e.bms.charge_request_A)
    assert bms.state == BmsState.CHARGING and bms.charge_request_A > 0, story(bms)
    t_last = emu.t_s - emu.t_s % 1e-9
    bms.charger_offer(t_last, max_voltage_V=68.0, max_current_A=30.0)   # ... then the charger falls silent
    run(emu, c.charger_timeout_s + c.open_delay_max_s + 0.5, load=lambda e: -e.bms.charge_request_A)
    fault = first_event(bms, "fault", protection="CHARGER_TIMEOUT", level="ERROR")
    assert fault is not None and fault.t_s <= t_last + c.charger_timeout_s + 2 * emu.dt_s, story(bms)
    assert bms.state == BmsState.FAULT and bms.contactors_open and bms.charge_request_A == 0, story(bms)


def test_the_event_log_is_bounded():
    emu = Emulator(load_pack().replace(**SMALL), seed=17, estimator=None, config=BmsConfig(event_log_size=50))
    for k in range(200):
        emu.bms.comm_fault("X", k % 2 == 0, emu.t_s)
    assert len(emu.bms.events) <= 50 and emu.bms.events_dropped >= 150


def test_a_healthy_pack_derated_to_empty_raises_no_stack_pressure_or_imbalance_warning():
    """Constant power from 12 % SOC: the BMS derates the discharge to nothing near empty, and the current tapers
    over minutes. Down there the OCV is 4-13x steeper than at mid SOC: the groups' deviations grow faster than in
    proportion to the charge, which the stack-pressure regression once read as resistance (a healthy group at 1.6,
    a warning at 310 s), and the pack's start spread (0.5 % SOC rms) rests 0.23 V apart (an imbalance warning at
    619 s). Both are judged only inside their SOC windows (``stack_pressure_soc_min``, ``cell_imbalance_soc_min``)."""
    from hil.runner import run_scenario
    from hil.scenario import parse_scenario
    text = """
[scenario]
name = "run-empty"
seed = 6
initial_soc = 0.12
[ambient]
temp_C = 25.0
[[step]]
kind = "power"
power_W = 120000.0
duration_s = 700.0
"""
    result = run_scenario(parse_scenario(text, "run-empty"), plots=False)
    signals = result.recording.signals
    assert signals["current_A"][-1] < 0.1 * signals["current_A"].max(), "the BMS no longer derates near empty"
    assert result.summary["soc_end"] < 0.06
    assert signals["cell_voltage_max_V"][-1] - signals["cell_voltage_min_V"][-1] > 0.15, \
        "the rest spread near empty no longer exceeds the imbalance warning: the test looks at nothing"
    warnings = [f for f in result.summary["faults"] if "STACK_PRESSURE" in f["event"] or "IMBALANCE" in f["event"]]
    assert not warnings, f"warnings on a healthy pack run to empty: {warnings}"


@pytest.mark.parametrize("kernels", ["compiled", "numpy"])
def test_the_stack_pressure_regression_restarts_outside_its_soc_window(kernels):
    """The BMS's slow task tells the protection kernel whether every group's SOC estimate is inside the windows
    (stack pressure, imbalance); outside it the regression's moments and time are zeroed (kernel and twin alike),
    inside they accumulate."""
    from bms import _kernels
    from bms import _protection as L
    params = load_pack().replace(**SMALL)
    config = BmsConfig(stack_pressure_soc_min=0.3, stack_pressure_soc_max=0.45, cell_imbalance_soc_min=0.3,
                       cell_imbalance_soc_max=0.45)
    for soc, inside in ((0.5, False), (0.4, True), (0.25, False)):
        emu = Emulator(params, seed=3, initial_soc=soc, kernels=_kernels.load(kernels), config=config)
        start_driving(emu)
        run(emu, 5.0, load=lambda e: e.limited(20.0))
        state = emu.bms._ks
        assert state.inp[L.IN_SP_SOC_OK] == state.inp[L.IN_IMB_SOC_OK] == float(inside), soc
        if inside:
            assert state.ks[L.KS_REG_TIME] > 4.0 and state.reg_mv.any(), soc
        else:
            assert state.ks[L.KS_REG_TIME] == 0.0 and not state.reg_mv.any() and not state.reg_miv.any(), soc


@pytest.mark.parametrize("pack_soc, warned", [(0.3, True), (0.2, True), (0.08, False)])
def test_an_imbalanced_group_is_found_at_rest_inside_the_soc_window(pack_soc, warned):
    """A group 18 % of SOC below the others rests 0.24 V below them at a pack SOC of 30 % (0.78 V at 20 %): a
    warning. The window (``cell_imbalance_soc_min``) is on the middle of the groups' SOCs, so a group far below the
    others is judged; with the pack's SOCs around 4 % they are not (a healthy pack's spread shows there)."""
    params = load_pack().replace(**SMALL)
    emu = Emulator(params, seed=4, initial_soc=pack_soc, estimator=None)
    emu.pack.state.soc[10:12] = max(pack_soc - 0.18, 0.0)   # group 5 (cells 10 and 11)
    found = run(emu, 30.0, until=lambda e: e.bms.levels["CELL_IMBALANCE"] >= FaultLevel.WARNING)
    assert found == warned, f"t = {emu.t_s:.1f} s\n{story(emu.bms)}"
    assert (dtc(emu.bms, Protection.CELL_IMBALANCE) is not None) == warned, story(emu.bms)


def test_a_vcu_obeying_the_limits_keeps_a_cold_pack_clear_of_the_undervoltage_warning():
    """US06 at -15 degC with the VCU at the published discharge limit (found by a sweep over ambient and SOC):
    the limit's voltage feedback came back with the horizon's datasheet resistance (35 mOhm a cell with its margin,
    several times the cells' instant response), the RC pairs charged faster than it cut, and the weakest cell sat
    20-30 mV below the limit's floor (2.82 V) for over a second: a CELL_UNDERVOLTAGE warning at 59.7 s. Below the
    floor the limit now comes back at the bulk resistance's pace."""
    from hil.runner import run_scenario
    from hil.scenario import parse_scenario
    text = """
[scenario]
name = "cold-us06-at-the-limit"
seed = 7822334803416343369
initial_soc = 0.8654
[ambient]
temp_C = -15.27
[pack_overrides.spread]
capacity_rel_sigma = 0.02515
[[step]]
kind = "drive"
cycle = "us06"
"""
    result = run_scenario(parse_scenario(text, "cold-us06-at-the-limit"), plots=False, max_sim_s=75.0)
    signals = result.recording.signals
    limited = signals["current_demand_A"] - signals["current_A"] > 5.0
    assert limited.sum() * 0.1 > 5.0, "the VCU hardly met the limit: the test no longer looks at the voltage limit"
    assert signals["cell_voltage_min_V"].min() >= 2.80
    warnings = [f for f in result.summary["faults"] if "UNDERVOLTAGE" in f["event"]]
    assert not warnings, f"undervoltage with the VCU obeying the limits: {warnings}"


@pytest.mark.parametrize("offset_A", [0.0, -40.0, 40.0])
def test_a_current_offset_that_appears_while_driving_is_found_against_the_cells(offset_A):
    """A shunt that starts to read 40 A off in the middle of a drive (the contactors closed: the zero check with
    them open cannot see it) is found from the SOC filter's common correction: CURRENT_SENSOR at WARNING and its
    DTC within a window, the error's sign right. The same drive without it raises nothing (a healthy pack's
    estimate stays below a few amperes)."""
    from bms.sensors import Offset
    power, _ = power_profile(load_cycle("wltc"), Vehicle(), 0.01)
    emu = Emulator(load_pack(), seed=7, initial_soc=0.8)
    start_driving(emu)
    drive = lambda emu: power[emu.ticks % len(power)] / (3.7 * 192)  # noqa: E731
    run(emu, 950.0, drive)   # the estimator settled (600 s) and one window judged (300 s)
    assert np.isfinite(emu.bms.current_error_A) and abs(emu.bms.current_error_A) < 3.0
    if offset_A:
        emu.sensors.inject("current", 0, Offset(offset_A), emu.t_s)
    injected_s = emu.t_s
    run(emu, 250.0, drive)
    warned = first_event(emu.bms, "fault", protection="CURRENT_SENSOR", level="WARNING")
    if not offset_A:
        assert warned is None and dtc(emu.bms, Protection.CURRENT_SENSOR) is None, story(emu.bms)
        assert abs(emu.bms.current_error_A) < 3.0
        run(emu, 400.0, drive)   # leaks are judged at rest only: while driving, never
        assert np.isnan(emu.bms.group_leak_A).all() and dtc(emu.bms, Protection.INTERNAL_SHORT) is None
        return
    assert warned is not None, f"no CURRENT_SENSOR warning; estimate {emu.bms.current_error_A:.1f} A\n{story(emu.bms)}"
    assert injected_s < warned.t_s < injected_s + 200.0
    assert np.sign(warned.detail["value"]) == np.sign(offset_A)
    assert dtc(emu.bms, Protection.CURRENT_SENSOR) is not None
    assert emu.bms.state == BmsState.READY   # a warning: the drive goes on


def test_a_soft_internal_short_is_found_as_the_group_that_loses_charge_of_its_own():
    """2 ohm across one cell of a parked pack (contactors closed, no current: about 2 A through the short): that
    group's SOC filter is corrected downward more than the others', and INTERNAL_SHORT is warned on it, with its
    DTC, once the leak estimate is judged (600 s settle, then 900 s of samples at rest); the other groups read
    well under 1 A."""
    emu = Emulator(load_pack(), seed=11, initial_soc=0.8)
    start_driving(emu)
    emu.pack.set_internal_short(100, 2.0)   # cell 100 is in series group 50 (cells numbered group by group)
    run(emu, 1600.0)
    warned = first_event(emu.bms, "fault", protection="INTERNAL_SHORT", level="WARNING")
    assert warned is not None, f"leaks {np.sort(emu.bms.group_leak_A)[-3:]}\n{story(emu.bms)}"
    assert warned.detail["channel"] == 50 and warned.detail["value"] > 2.5
    others = np.delete(emu.bms.group_leak_A, 50)
    assert np.max(np.abs(others)) < 1.0
    assert dtc(emu.bms, Protection.INTERNAL_SHORT) is not None and emu.bms.state == BmsState.READY
