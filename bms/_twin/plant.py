"""NumPy twin of ext/plant.pyx: the readable specification of the pack physics and the test oracle.

Same constructor and ``step`` signature as the compiled ``bms._ext.plant.PlantKernel``.

Conventions: current > 0 discharges; temperatures in degC at the interface, kelvin inside formulas.
Within a step the current is held constant: RC pairs, the DC link and the heat dissipated in each
resistor are integrated exactly; SOC, hysteresis and temperature-dependent parameters are taken at
the start of the step for the solve. What is reported afterwards describes one instant, the end of the
step: states, and terminal voltages formed from the end-of-step state (OCV at the end SOC and core
temperature, end hysteresis and RC voltages, R0 at the end SOC and temperature) with the current the
cells carried through the step. Currents and heat are the step's means (see bms.plant.PlantState).
"""
from __future__ import annotations

import math

import numpy as np

from .._layout import (
    ARRHENIUS_MAX_C,
    ARRHENIUS_MIN_C,
    ARRHENIUS_REFRESH_K,
    HYSTERESIS_SIGN_C_RATE,
    LINK_VOLTAGE,
    MAIN_NEGATIVE,
    MAIN_POSITIVE,
    PACK_CURRENT,
    PACK_CURRENT_PEAK,
    PACK_VOLTAGE,
    PRECHARGE,
)
from ..errors import InputError

KELVIN = 273.15
T_REF_K = 298.15
R_GAS = 8.314462618


def interp_uniform(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Piecewise-linear table on a uniform grid over [0, 1]; linear extrapolation outside."""
    n = table.shape[0]
    pos = x * (n - 1)
    i = np.clip(np.floor(pos), 0, n - 2)
    i = np.where(np.isnan(i), 0, i).astype(np.intp)
    return table[i] + (pos - i) * (table[i + 1] - table[i])


def one_minus_exp_neg(x):
    return -np.expm1(-x)


def rc_heat_W(v0, i, r, tau, a, dt):
    """Mean power dissipated in R of an RC pair over a step with constant current (exact integral)."""
    A = i * r
    B = v0 - A
    return (A * A * dt + 2.0 * A * B * tau * (1.0 - a) + B * B * tau * 0.5 * (1.0 - a * a)) / (r * dt)


def check_step_inputs(dt_s, load_current_A, coolant_C, cooling_factor):
    if not (math.isfinite(dt_s) and dt_s > 0):
        raise InputError("dt_s", "a finite time step > 0 s", dt_s)
    if not math.isfinite(load_current_A):
        raise InputError("load_current_A", "a finite current", load_current_A)
    if not (math.isfinite(coolant_C) and -100.0 < coolant_C < 300.0):
        raise InputError("coolant_C", "a finite temperature in (-100, 300) degC", coolant_C)
    if not (math.isfinite(cooling_factor) and cooling_factor >= 0):
        raise InputError("cooling_factor", "a finite factor >= 0", cooling_factor)


class PlantKernel:
    """Binds to a PlantState's arrays; ``step`` advances them in place."""

    def __init__(self, state, cell, pack):
        self.s = state
        self.n_series, self.n_parallel = pack.n_series, pack.n_parallel
        n = self.n_series * self.n_parallel
        for name in ("soc", "v_rc1_V", "v_rc2_V", "hysteresis", "hysteresis_sign", "temp_core_C",
                     "temp_surface_C", "cell_current_A", "cell_heat_W", "capacity_Ah", "r0_scale",
                     "r1_scale", "r2_scale", "short_conductance_S", "arrhenius_r0", "arrhenius_r1",
                     "arrhenius_r2", "arrhenius_temp_C"):
            if getattr(state, name).shape != (n,):
                raise InputError(name, f"{n} values", getattr(state, name).shape)
        self.ocv = np.array(cell.ocv_V, dtype=np.float64)
        self.dudt = np.array(cell.entropic_mV_per_K, dtype=np.float64) * 1e-3
        self.cell = cell
        self.ea = [cell.r0_activation_J_per_mol / R_GAS, cell.r1_activation_J_per_mol / R_GAS,
                   cell.r2_activation_J_per_mol / R_GAS]
        position = np.arange(n) % (n // pack.n_modules)
        self.has_left = position != 0
        self.has_right = position != (n // pack.n_modules) - 1
        self.pack = pack

    def step(self, dt_s, load_current_A, coolant_C, cooling_factor=1.0):
        check_step_inputs(dt_s, load_current_A, coolant_C, cooling_factor)
        s, c, pk = self.s, self.cell, self.pack
        dt = float(dt_s)
        shape = (self.n_series, self.n_parallel)
        a1, a2 = math.exp(-dt / c.tau1_s), math.exp(-dt / c.tau2_s)
        b1, b2 = 1.0 - a1, 1.0 - a2

        # temperature factors: refreshed at the end of every step, so here only after outside changes
        T = s.temp_core_C.copy()
        self._refresh_arrhenius(T)
        z = s.soc.copy()
        sf = 1.0 + c.resistance_soc_curvature * (z - 0.5) * (z - 0.5)
        r0 = c.r0_ohm * s.arrhenius_r0 * sf * s.r0_scale
        r1 = c.r1_ohm * s.arrhenius_r1 * sf * s.r1_scale
        r2 = c.r2_ohm * s.arrhenius_r2 * sf * s.r2_scale
        dudt = interp_uniform(self.dudt, z)
        ocv = interp_uniform(self.ocv, z) + (T - 25.0) * dudt
        hv = c.hysteresis_dynamic_V * s.hysteresis - c.hysteresis_instant_V * s.hysteresis_sign
        E = ocv + hv - a1 * s.v_rc1_V - a2 * s.v_rc2_V
        Z = r0 + r1 * b1 + r2 * b2

        # each parallel group as one Thevenin source (cells, internal shorts, balancing bleed)
        g_bal = np.where(s.balancing.astype(bool), 1.0 / pk.balancing_resistance_ohm, 0.0)
        y = 1.0 / Z
        g_tot = g_bal + s.short_conductance_S.reshape(shape).sum(axis=1) + y.reshape(shape).sum(axis=1)
        e_grp = (E * y).reshape(shape).sum(axis=1) / g_tot
        z_grp = 1.0 / g_tot
        current = self._link(dt, float(load_current_A), float(e_grp.sum()), float(z_grp.sum()))

        v_g = e_grp - z_grp * current
        v_cell = np.repeat(v_g, self.n_parallel)
        i = (E - v_cell) / Z
        q_core = (r0 * i * i + rc_heat_W(s.v_rc1_V, i, r1, c.tau1_s, a1, dt)
                  + rc_heat_W(s.v_rc2_V, i, r2, c.tau2_s, a2, dt)
                  - hv * i - i * (T + KELVIN) * dudt + v_cell * v_cell * s.short_conductance_S)
        q_surf = np.repeat(v_g * v_g * g_bal / self.n_parallel, self.n_parallel)

        s.v_rc1_V[:] = a1 * s.v_rc1_V + b1 * r1 * i
        s.v_rc2_V[:] = a2 * s.v_rc2_V + b2 * r2 * i
        dq = i * dt / 3600.0
        dq = np.where(i < 0, dq * c.coulombic_efficiency, dq)
        s.soc[:] = z - dq / s.capacity_Ah
        om = one_minus_exp_neg(np.abs(dq * c.hysteresis_rate / s.capacity_Ah))
        s.hysteresis[:] = (1.0 - om) * s.hysteresis - np.sign(i) * om
        # the sign follows the string current, not currents circulating between parallel cells
        eps = HYSTERESIS_SIGN_C_RATE * s.capacity_Ah * self.n_parallel
        s.hysteresis_sign[:] = np.where(current > eps, 1.0, np.where(current < -eps, -1.0, s.hysteresis_sign))
        s.cell_current_A[:] = i
        s.cell_heat_W[:] = q_core

        # thermal: backward Euler on (core, surface); neighbour surfaces from the previous step
        ac, as_ = c.heat_capacity_core_J_per_K / dt, c.heat_capacity_surface_J_per_K / dt
        g_cs = 1.0 / c.thermal_resistance_core_surface_K_per_W
        g_sc = cooling_factor / c.thermal_resistance_surface_coolant_K_per_W
        g_nb = 1.0 / c.thermal_resistance_neighbour_K_per_W
        ts_old = s.temp_surface_C.copy()
        left = np.where(self.has_left, np.roll(ts_old, 1), 0.0)
        right = np.where(self.has_right, np.roll(ts_old, -1), 0.0)
        n_nb = self.has_left.astype(float) + self.has_right.astype(float)
        rhs_s = as_ * ts_old + g_sc * coolant_C + q_surf + g_nb * left * self.has_left \
            + g_nb * right * self.has_right
        d = as_ + g_cs + g_sc + g_nb * n_nb
        rhs_c = ac * T + q_core
        det = (ac + g_cs) * d - g_cs * g_cs
        s.temp_core_C[:] = (rhs_c * d + g_cs * rhs_s) / det
        s.temp_surface_C[:] = (g_cs * rhs_c + (ac + g_cs) * rhs_s) / det

        # end-of-step terminal voltages, all from the end-of-step state: the RC capacitors and the OCV are
        # sources at that instant, behind R0 carrying the step's current
        T_end = s.temp_core_C
        self._refresh_arrhenius(T_end)
        z = s.soc
        r0 = c.r0_ohm * s.arrhenius_r0 * (1.0 + c.resistance_soc_curvature * (z - 0.5) * (z - 0.5)) * s.r0_scale
        hv = c.hysteresis_dynamic_V * s.hysteresis - c.hysteresis_instant_V * s.hysteresis_sign
        v_cell_end = (interp_uniform(self.ocv, z) + (T_end - 25.0) * interp_uniform(self.dudt, z) + hv
                      - s.v_rc1_V - s.v_rc2_V - r0 * i)
        # parallel cells: the common voltage at which these sources behind R0 deliver the same total current
        y = 1.0 / r0
        v_g_end = (v_cell_end * y).reshape(shape).sum(axis=1) / y.reshape(shape).sum(axis=1)
        s.group_voltage_V[:] = v_g_end
        s.scalars[PACK_VOLTAGE] = v_g_end.sum()

    def _refresh_arrhenius(self, T):
        """Temperature factors of the resistances, refreshed only where the core temperature has moved."""
        s = self.s
        stale = ~(np.abs(T - s.arrhenius_temp_C) <= ARRHENIUS_REFRESH_K)
        if stale.any():
            # the resistance law is evaluated within the model's range, so a runaway cell stays finite
            x = 1.0 / (np.clip(T[stale], ARRHENIUS_MIN_C, ARRHENIUS_MAX_C) + KELVIN) - 1.0 / T_REF_K
            s.arrhenius_r0[stale] = np.exp(self.ea[0] * x)
            s.arrhenius_r1[stale] = np.exp(self.ea[1] * x)
            s.arrhenius_r2[stale] = np.exp(self.ea[2] * x)
            s.arrhenius_temp_C[stale] = T[stale]

    def _link(self, dt, load_A, e_pack, z_pack):
        """Contactors and DC link, exact for the step; returns the mean string current."""
        s, pk = self.s, self.pack
        s.contactor_closed[:] = (s.contactor_command | s.contactor_welded) != 0
        closed = s.contactor_closed.astype(bool)
        neg, pos, pre = closed[MAIN_NEGATIVE], closed[MAIN_POSITIVE], closed[PRECHARGE]
        g_path = 0.0
        if neg and (pos or pre):
            if pos and pre:
                r_path = pk.main_path_resistance_ohm * pk.precharge_resistance_ohm / (
                    pk.main_path_resistance_ohm + pk.precharge_resistance_ohm)
            elif pos:
                r_path = pk.main_path_resistance_ohm
            else:
                r_path = pk.precharge_resistance_ohm
            g_path = 1.0 / (z_pack + r_path)
        if not (pos and neg):
            load_A = 0.0  # the load only draws through closed main contactors
        g_all = g_path + 1.0 / pk.link_bleed_resistance_ohm
        v0 = s.scalars[LINK_VOLTAGE]
        v_inf = (g_path * e_pack - load_A) / g_all
        r = dt * g_all / pk.link_capacitance_F
        v_end = v_inf + (v0 - v_inf) * math.exp(-r)
        v_mean = v_inf + (v0 - v_inf) * (-math.expm1(-r) / r)
        i_start, i_end = g_path * (e_pack - v0), g_path * (e_pack - v_end)
        current = g_path * (e_pack - v_mean)
        s.scalars[LINK_VOLTAGE] = v_end
        s.scalars[PACK_CURRENT] = current
        s.scalars[PACK_CURRENT_PEAK] = i_start if abs(i_start) >= abs(i_end) else i_end
        return current
