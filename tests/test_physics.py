"""The plant against physics: conservation laws, circuit laws, Arrhenius, and an independent 2-RC model."""
import math

import numpy as np
import pytest
from conftest import close_contactors, single_cell_params

from bms import Pack, load_pack
from hil.cycles import load_cycle
from hil.vehicle import Vehicle, power_profile

R_GAS = 8.314462618
ISOTHERMAL = {"heat_capacity_core_J_per_K": 1e12, "heat_capacity_surface_J_per_K": 1e12}


def ocv_of(cell, soc, temp_C=25.0):
    grid = np.linspace(0.0, 1.0, len(cell.ocv_V))
    dudt = np.interp(soc, np.linspace(0, 1, len(cell.entropic_mV_per_K)), cell.entropic_mV_per_K) * 1e-3
    return np.interp(soc, grid, cell.ocv_V) + (temp_C - 25.0) * dudt


def udds_cell_current(dt_s):
    """Cell current (A, > 0 discharging) of one cell of the 192s2p pack on UDDS at nominal voltage."""
    power, _ = power_profile(load_cycle("udds"), Vehicle(), dt_s)
    return power / (192 * 3.65) / 2


def test_charge_is_conserved_in_every_cell():
    pack = Pack("assb60-192s2p", initial_soc=0.5, seed=11)
    close_contactors(pack)
    soc0 = pack.state.soc.copy()
    ce = pack.params.cell.coulombic_efficiency
    throughput_Ah = np.zeros(pack.params.n_cells)
    rng = np.random.default_rng(5)
    for current in rng.uniform(-200, 250, 400):
        pack.state.balancing[:] = rng.integers(0, 2, pack.params.n_series)
        pack.step(0.5, current)
        i = pack.state.cell_current_A
        throughput_Ah += np.where(i < 0, ce * i, i) * 0.5 / 3600
    np.testing.assert_allclose((soc0 - pack.state.soc) * pack.state.capacity_Ah, throughput_Ah,
                               rtol=1e-9, atol=1e-12)


def test_energy_balance_electrical_out_equals_ocv_energy_minus_heat():
    params = single_cell_params(**ISOTHERMAL)
    cell = params.cell
    pack = Pack(params, initial_soc=0.8)
    close_contactors(pack)
    s = pack.state
    dt = 0.1
    e_out = e_ocv = heat = 0.0
    for current in udds_cell_current(dt):
        soc, temp = s.soc[0], s.temp_core_C[0]
        pack.step(dt, current)
        i = s.cell_current_A[0]
        e_out += s.group_voltage_V[0] * i * dt
        e_ocv += ocv_of(cell, soc, temp) * i * dt
        dudt = np.interp(soc, np.linspace(0, 1, len(cell.entropic_mV_per_K)), cell.entropic_mV_per_K) * 1e-3
        reversible = -i * (temp + 273.15) * dudt
        heat += (s.cell_heat_W[0] - reversible) * dt
    # what the RC capacitors still store at the end is not heat yet
    sf = 1 + cell.resistance_soc_curvature * (s.soc[0] - 0.5) ** 2
    stored = sum(0.5 * tau / (r * sf) * v ** 2 for tau, r, v in
                 ((cell.tau1_s, cell.r1_ohm, s.v_rc1_V[0]), (cell.tau2_s, cell.r2_ohm, s.v_rc2_V[0])))
    assert heat > 0.01 * abs(e_out) / 100  # a real loss, not nothing
    assert e_out == pytest.approx(e_ocv - heat - stored, rel=1e-4)


def test_rc_pairs_reach_their_steady_state():
    params = single_cell_params(capacity_Ah=1e7, hysteresis_instant_V=0.0, hysteresis_dynamic_V=0.0,
                                **ISOTHERMAL)
    cell = params.cell
    pack = Pack(params, initial_soc=0.5)
    close_contactors(pack)
    for _ in range(2000):  # 12 tau2
        pack.step(0.72, 100.0)
    s = pack.state
    assert s.v_rc1_V[0] == pytest.approx(100.0 * cell.r1_ohm, rel=1e-6)
    assert s.v_rc2_V[0] == pytest.approx(100.0 * cell.r2_ohm, rel=1e-5)
    r_total = cell.r0_ohm + cell.r1_ohm + cell.r2_ohm
    assert s.group_voltage_V[0] == pytest.approx(ocv_of(cell, s.soc[0]) - 100.0 * r_total, abs=1e-6)


NO_SPREAD = {"capacity_rel_sigma": 0.0, "resistance_rel_sigma": 0.0, "initial_soc_sigma": 0.0}


def test_thermal_equilibrium_with_coolant_at_rest():
    # without spread no current flows between parallel cells, so nothing heats or cools them
    params = load_pack().replace(spread=NO_SPREAD)
    pack = Pack(params, initial_soc=0.5, temp_C=40.0)
    for _ in range(500):  # 20 thermal time constants
        pack.step(10.0, 0.0, coolant_C=20.0)
    np.testing.assert_allclose(pack.state.temp_core_C, 20.0, atol=1e-3)
    np.testing.assert_allclose(pack.state.temp_surface_C, 20.0, atol=1e-3)
    # and at equilibrium nothing moves
    pack = Pack(params, initial_soc=0.5, temp_C=20.0)
    pack.step(1.0, 0.0, coolant_C=20.0)
    np.testing.assert_allclose(pack.state.temp_core_C, 20.0, atol=1e-12)


def test_heat_flows_from_core_to_coolant():
    pack = Pack("assb60-192s2p", initial_soc=0.9, temp_C=25.0)
    close_contactors(pack)
    for _ in range(600):
        pack.step(1.0, 240.0, coolant_C=25.0)
    s = pack.state
    assert np.all(s.temp_core_C > s.temp_surface_C) and np.all(s.temp_surface_C > 25.0)


def test_parallel_currents_sum_to_group_current_and_resistive_cell_carries_less():
    params = single_cell_params().replace(pack={"n_parallel": 3})
    pack = Pack(params, initial_soc=0.6)
    pack.state.r0_scale[0] = 2.0
    pack.state.r1_scale[0] = 2.0
    pack.state.r2_scale[0] = 2.0
    close_contactors(pack)
    for _ in range(100):
        pack.step(0.1, 150.0)
        i = pack.state.cell_current_A
        assert i.sum() == pytest.approx(pack.current_A, rel=1e-12)
        assert i[0] < i[1] and i[0] < i[2]
    pack.state.balancing[0] = 1
    pack.step(0.1, 150.0)
    bleed = pack.state.group_voltage_V[0] / params.balancing_resistance_ohm
    # the bleed flows at the group's voltage during the step, which the end-of-step one differs from by
    # the step's OCV drift (here < 1 mV)
    assert pack.state.cell_current_A.sum() - pack.current_A == pytest.approx(bleed, rel=3e-4)


def test_hot_cell_carries_more():
    params = single_cell_params().replace(pack={"n_parallel": 2})
    pack = Pack(params, initial_soc=0.6)
    pack.state.temp_core_C[0] = 45.0
    close_contactors(pack)
    pack.step(0.1, 100.0)
    assert pack.state.cell_current_A[0] > 1.2 * pack.state.cell_current_A[1]


def test_precharge_follows_the_rc_law():
    pack = Pack("assb60-192s2p", initial_soc=0.5)
    p = pack.params
    pack.command_contactors(main_negative=True, precharge=True)
    dt, times, link = 0.002, [], []
    for k in range(1, 151):
        pack.step(dt, 0.0)
        times.append(k * dt)
        link.append(pack.link_voltage_V)
    emf = pack.pack_voltage_V  # the precharge current at the end is tiny: terminal ≈ open-circuit
    g = 1 / (p.precharge_resistance_ohm + 0.0)
    tau = p.link_capacitance_F / (g + 1 / p.link_bleed_resistance_ohm)
    v_inf = emf * g / (g + 1 / p.link_bleed_resistance_ohm)
    expected = v_inf * (1 - np.exp(-np.array(times) / tau))
    np.testing.assert_allclose(link, expected, rtol=2e-3, atol=0.5)
    # closing onto the charged link: small inrush; onto an empty link: a large one
    pack.command_contactors(main_positive=True)
    pack.step(dt, 0.0)
    small = abs(pack.peak_current_A)
    empty = Pack("assb60-192s2p", initial_soc=0.5)
    empty.command_contactors(main_negative=True, main_positive=True)
    empty.step(dt, 0.0)
    assert empty.peak_current_A > 1000.0 and empty.peak_current_A > 20 * small


def test_open_contactors_carry_no_current():
    pack = Pack("assb60-192s2p", initial_soc=0.5)
    pack.step(0.01, 300.0)
    assert pack.current_A == 0.0
    # parallel cells at different SOC still equalise among themselves, but no group leaks charge
    group_sum = pack.state.cell_current_A.reshape(pack.params.n_series, -1).sum(axis=1)
    np.testing.assert_allclose(group_sum, 0.0, atol=1e-9)


def _instant_resistance(temp_C):
    # without the instantaneous hysteresis, which steps with the sign of the current like an R0 drop would
    params = single_cell_params(hysteresis_instant_V=0.0, **ISOTHERMAL)
    pack = Pack(params, initial_soc=0.5, temp_C=temp_C)
    close_contactors(pack)
    pack.step(1e-4, 0.0)
    v0 = pack.state.group_voltage_V[0]
    pack.step(1e-4, 50.0)
    return (v0 - pack.state.group_voltage_V[0]) / pack.state.cell_current_A[0], params.cell


def _dc_resistance(temp_C):
    params = single_cell_params(capacity_Ah=1e7, hysteresis_instant_V=0.0, hysteresis_dynamic_V=0.0,
                                **ISOTHERMAL)
    pack = Pack(params, initial_soc=0.5, temp_C=temp_C)
    close_contactors(pack)
    v0 = pack.state.group_voltage_V[0]
    for _ in range(2000):
        pack.step(0.72, 10.0)
    return (v0 - pack.state.group_voltage_V[0]) / 10.0


@pytest.mark.parametrize("temp_C", [-20.0, 60.0])
def test_resistance_follows_arrhenius(temp_C):
    r_ref, cell = _instant_resistance(25.0)
    r_t, _ = _instant_resistance(temp_C)
    law = math.exp(cell.r0_activation_J_per_mol / R_GAS * (1 / (temp_C + 273.15) - 1 / 298.15))
    assert r_t / r_ref == pytest.approx(law, rel=2e-3)


def test_total_dc_resistance_ratios_match_the_reference():
    # shared/reference/assb60-cell.md: ≈ 17x at -20 degC and ≈ 0.22x at 60 degC
    r25 = _dc_resistance(25.0)
    assert _dc_resistance(-20.0) / r25 == pytest.approx(17.0, rel=0.1)
    assert _dc_resistance(60.0) / r25 == pytest.approx(0.22, rel=0.1)


def test_stack_pressure_loss_raises_interfacial_resistance():
    pack = Pack(single_cell_params(), initial_soc=0.5)
    before = pack.state.r1_scale[0]
    pack.set_stack_pressure(1.25)  # a quarter of nominal: R1 doubles with exponent -0.5
    assert pack.state.r1_scale[0] == pytest.approx(2.0 * before)


def test_internal_short_drains_the_cell_at_rest():
    params = single_cell_params().replace(pack={"n_parallel": 2})
    pack = Pack(params, initial_soc=0.6)
    pack.set_internal_short(0, 1.0)
    soc0 = pack.state.soc.copy()
    for _ in range(360):
        pack.step(10.0, 0.0)
    drained = soc0 - pack.state.soc
    assert np.all(drained > 0)  # the healthy neighbour feeds the short too
    assert pack.state.temp_core_C[0] > pack.state.temp_core_C[1] > 25.0


def reference_2rc(cell, current_A, dt_s, soc0):
    """A plain, separately written 2-RC + Plett hysteresis cell at 25 degC (zero-order-hold currents);
    the terminal voltage at the end of each step, from the end-of-step state."""
    soc, v1, v2, h, s = soc0, 0.0, 0.0, 0.0, 0.0
    a1, a2 = math.exp(-dt_s / cell.tau1_s), math.exp(-dt_s / cell.tau2_s)
    ocv_grid = np.linspace(0, 1, len(cell.ocv_V))
    factor = lambda soc: 1 + cell.resistance_soc_curvature * (soc - 0.5) ** 2  # noqa: E731
    out = []
    for i in current_A:
        r1, r2 = cell.r1_ohm * factor(soc), cell.r2_ohm * factor(soc)  # frozen over the step
        v1 = a1 * v1 + (1 - a1) * r1 * i
        v2 = a2 * v2 + (1 - a2) * r2 * i
        eta = cell.coulombic_efficiency if i < 0 else 1.0
        soc -= eta * i * dt_s / 3600 / cell.capacity_Ah
        decay = math.exp(-abs(eta * i * cell.hysteresis_rate * dt_s / 3600 / cell.capacity_Ah))
        h = decay * h - (1 - decay) * np.sign(i)
        if abs(i) > 0.01 * cell.capacity_Ah:
            s = np.sign(i)
        out.append(float(np.interp(soc, ocv_grid, cell.ocv_V)) + cell.hysteresis_dynamic_V * h
                   - cell.hysteresis_instant_V * s - v1 - v2 - cell.r0_ohm * factor(soc) * i)
    return np.array(out)


def test_single_cell_on_udds_matches_an_independent_2rc_model():
    params = single_cell_params(**ISOTHERMAL)
    pack = Pack(params, initial_soc=0.7)
    close_contactors(pack)
    dt = 0.1
    current = udds_cell_current(dt)
    soc0 = pack.state.soc[0]
    voltage = []
    for i in current:
        pack.step(dt, i)
        voltage.append(pack.state.group_voltage_V[0])
    reference = reference_2rc(params.cell, current, dt, soc0)
    assert np.ptp(reference) > 0.05  # the profile really excites the model
    assert np.max(np.abs(np.array(voltage) - reference)) < 1e-3


# Currents that cross SOC breakpoints of the OCV table, reverse (hysteresis flips) and rest.
LARGE_STEP_LOADS_A = (60.0, 60.0, 60.0, 120.0, 120.0, -40.0, -40.0, -90.0, 0.0, 0.0, 150.0, 150.0)


def _cell_ode(cell, current_A):
    """The same 2-RC + Plett cell as a continuous-time ODE, isothermal at 25 degC (state: SOC, v1, v2, h)."""
    eta = cell.coulombic_efficiency if current_A < 0 else 1.0
    dsoc_dt = -eta * current_A / 3600 / cell.capacity_Ah
    sf = lambda soc: 1 + cell.resistance_soc_curvature * (soc - 0.5) ** 2  # noqa: E731

    def rhs(_t, y):
        soc, v1, v2, h = y
        return [dsoc_dt, (cell.r1_ohm * sf(soc) * current_A - v1) / cell.tau1_s,
                (cell.r2_ohm * sf(soc) * current_A - v2) / cell.tau2_s,
                -abs(dsoc_dt) * cell.hysteresis_rate * (h + np.sign(current_A))]
    return rhs, sf


def _terminal_V(cell, sf, y, sign, current_A):
    soc, v1, v2, h = y
    return (float(np.interp(soc, np.linspace(0, 1, len(cell.ocv_V)), cell.ocv_V)) + cell.hysteresis_dynamic_V * h
            - cell.hysteresis_instant_V * sign - v1 - v2 - cell.r0_ohm * sf(soc) * current_A)


@pytest.mark.parametrize(("dt_s", "max_error_V"), [(1.0, 1e-5), (10.0, 3e-4)])
def test_terminal_voltage_at_large_steps_matches_solve_ivp_as_closely_as_the_states(dt_s, max_error_V):
    # the reported voltage is the end-of-step one: at 1 s steps it once mixed end-of-step RC voltages with
    # start-of-step OCV, R0 and hysteresis (0.13 mV at 1C, 11 mV where the current reverses)
    solve_ivp = pytest.importorskip("scipy.integrate", reason="scipy (test extra): the independent solver").solve_ivp
    params = single_cell_params(**ISOTHERMAL)
    cell = params.cell
    pack = Pack(params, initial_soc=0.7)
    close_contactors(pack)
    s = pack.state
    y = [s.soc[0], s.v_rc1_V[0], s.v_rc2_V[0], s.hysteresis[0]]
    for load_A in LARGE_STEP_LOADS_A:
        pack.step(dt_s, load_A)
        i = s.cell_current_A[0]  # the load, plus the link's few microamps
        assert i == pytest.approx(load_A, abs=1e-3)
        rhs, sf = _cell_ode(cell, i)
        y = solve_ivp(rhs, (0.0, dt_s), y, method="DOP853", rtol=1e-12, atol=1e-15).y[:, -1]
        # the states differ by the step's frozen resistances only; the voltage may differ by no more
        ocv_slope = np.max(np.abs(np.diff(cell.ocv_V))) * (len(cell.ocv_V) - 1)
        state_V = (ocv_slope * abs(s.soc[0] - y[0]) + abs(s.v_rc1_V[0] - y[1]) + abs(s.v_rc2_V[0] - y[2])
                   + cell.hysteresis_dynamic_V * abs(s.hysteresis[0] - y[3]))
        error_V = abs(pack.pack_voltage_V - _terminal_V(cell, sf, y, s.hysteresis_sign[0], i))
        assert error_V <= state_V + 1e-7
        assert error_V <= max_error_V
    assert s.soc[0] < 0.7 - 2e-3 * dt_s  # the drive really moved the cell


def test_terminal_voltage_at_large_steps_is_exact_for_constant_resistances():
    # with resistances that depend on neither SOC nor temperature, zero-order-hold currents have a closed
    # form: every state and the end-of-step voltage must match it to rounding, whatever the step
    params = single_cell_params(resistance_soc_curvature=0.0, **ISOTHERMAL)
    cell = params.cell
    ocv_grid = np.linspace(0, 1, len(cell.ocv_V))
    for dt_s in (1.0, 30.0, 300.0):
        pack = Pack(params, initial_soc=0.8)
        close_contactors(pack)
        s = pack.state
        soc, v1, v2, h = s.soc[0], s.v_rc1_V[0], s.v_rc2_V[0], s.hysteresis[0]
        for load_A in LARGE_STEP_LOADS_A:
            pack.step(dt_s, load_A)
            i = s.cell_current_A[0]
            eta = cell.coulombic_efficiency if i < 0 else 1.0
            soc = soc - eta * i * dt_s / 3600 / cell.capacity_Ah
            v1 = cell.r1_ohm * i + (v1 - cell.r1_ohm * i) * math.exp(-dt_s / cell.tau1_s)
            v2 = cell.r2_ohm * i + (v2 - cell.r2_ohm * i) * math.exp(-dt_s / cell.tau2_s)
            h = -np.sign(i) + (h + np.sign(i)) * math.exp(-abs(eta * i) * dt_s / 3600 / cell.capacity_Ah
                                                          * cell.hysteresis_rate)
            expected_V = (float(np.interp(soc, ocv_grid, cell.ocv_V)) + cell.hysteresis_dynamic_V * h
                          - cell.hysteresis_instant_V * s.hysteresis_sign[0] - v1 - v2 - cell.r0_ohm * i)
            assert s.soc[0] == pytest.approx(soc, abs=1e-12)
            assert s.group_voltage_V[0] == pytest.approx(expected_V, abs=1e-9)
            assert pack.pack_voltage_V == pytest.approx(expected_V, abs=1e-9)


def test_parallel_group_voltage_is_the_common_voltage_of_its_cells_at_the_end_of_the_step():
    params = single_cell_params(**ISOTHERMAL).replace(pack={"n_parallel": 3})
    cell = params.cell
    pack = Pack(params, initial_soc=0.6)
    s = pack.state
    s.soc[:] = [0.55, 0.6, 0.65]
    s.r0_scale[:] = [1.0, 1.5, 0.8]
    close_contactors(pack)
    pack.step(5.0, 150.0)
    sf = 1 + cell.resistance_soc_curvature * (s.soc - 0.5) ** 2
    r0 = cell.r0_ohm * sf * s.r0_scale
    source_V = (np.interp(s.soc, np.linspace(0, 1, len(cell.ocv_V)), cell.ocv_V)
                + cell.hysteresis_dynamic_V * s.hysteresis - cell.hysteresis_instant_V * s.hysteresis_sign
                - s.v_rc1_V - s.v_rc2_V)
    # at that voltage the end-of-step sources behind R0 deliver the group's current (Kirchhoff)
    delivered_A = np.sum((source_V - s.group_voltage_V[0]) / r0)
    assert delivered_A == pytest.approx(s.cell_current_A.sum(), rel=1e-9)
    assert np.ptp(s.cell_current_A) > 5.0  # the cells really differ
