"""The plant against physics: conservation laws, circuit laws, Arrhenius, and an independent 2-RC model."""
import math

import numpy as np
import pytest

from bms import Pack, load_pack
from hil.cycles import load_cycle
from hil.vehicle import Vehicle, power_profile

from conftest import close_contactors, single_cell_params

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
    assert pack.state.cell_current_A.sum() == pytest.approx(pack.current_A + bleed, rel=1e-12)


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
    params = single_cell_params(**ISOTHERMAL)
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
    """A plain, separately written 2-RC + Plett hysteresis cell at 25 degC (zero-order-hold currents)."""
    soc, v1, v2, h, s = soc0, 0.0, 0.0, 0.0, 0.0
    a1, a2 = math.exp(-dt_s / cell.tau1_s), math.exp(-dt_s / cell.tau2_s)
    ocv_grid = np.linspace(0, 1, len(cell.ocv_V))
    out = []
    for i in current_A:
        factor = 1 + cell.resistance_soc_curvature * (soc - 0.5) ** 2
        r0, r1, r2 = cell.r0_ohm * factor, cell.r1_ohm * factor, cell.r2_ohm * factor
        v1 = a1 * v1 + (1 - a1) * r1 * i
        v2 = a2 * v2 + (1 - a2) * r2 * i
        out.append(float(np.interp(soc, ocv_grid, cell.ocv_V)) + cell.hysteresis_dynamic_V * h
                   - cell.hysteresis_instant_V * s - v1 - v2 - r0 * i)
        eta = cell.coulombic_efficiency if i < 0 else 1.0
        soc -= eta * i * dt_s / 3600 / cell.capacity_Ah
        decay = math.exp(-abs(eta * i * cell.hysteresis_rate * dt_s / 3600 / cell.capacity_Ah))
        h = decay * h - (1 - decay) * np.sign(i)
        if abs(i) > 0.01 * cell.capacity_Ah:
            s = np.sign(i)
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
