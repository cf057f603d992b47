# The pack's physics, stepped for all cells at once. Readable specification: bms/_twin/plant.py.
#
# Per cell: OCV(SOC) + entropic term, R0 and two RC pairs, Plett hysteresis, Arrhenius and SOC factors on
# every resistance, per-cell multipliers (spread, stack pressure), optional internal short.
# Per series group: the group current splits among parallel cells by solving the group's linear circuit
# exactly for the step (current held constant over the step), with the balancing bleed as a load.
# Pack: series string, contactors and a DC-link capacitor integrated exactly over the step.
# Thermal: core and surface node per cell, backward Euler, neighbours along the stack explicit.
from libc.math cimport exp, expm1, fabs, fmax, fmin, isfinite

from bms._layout import (ARRHENIUS_MAX_C, ARRHENIUS_MIN_C, ARRHENIUS_REFRESH_K, HYSTERESIS_SIGN_C_RATE,
                         LINK_VOLTAGE, PACK_VOLTAGE,
                         PACK_CURRENT, PACK_CURRENT_PEAK, N_SCALARS, MAIN_POSITIVE, MAIN_NEGATIVE, PRECHARGE)
from bms.errors import InputError

include "binding.pxi"

cdef double KELVIN = 273.15
cdef double T_REF_K = 298.15
cdef double R_GAS = 8.314462618
cdef double REFRESH_K = ARRHENIUS_REFRESH_K, T_MIN_C = ARRHENIUS_MIN_C, T_MAX_C = ARRHENIUS_MAX_C
cdef double SIGN_C_RATE = HYSTERESIS_SIGN_C_RATE
cdef int I_LINK = LINK_VOLTAGE, I_PACK_V = PACK_VOLTAGE, I_CURRENT = PACK_CURRENT
cdef int I_PEAK = PACK_CURRENT_PEAK, C_POS = MAIN_POSITIVE, C_NEG = MAIN_NEGATIVE, C_PRE = PRECHARGE


cdef inline double interp_uniform(const double* table, double scale, double last, double x) noexcept nogil:
    """Piecewise-linear table on a uniform grid over [0, 1] (``scale`` = points - 1, ``last`` = points - 2);
    linear extrapolation outside."""
    cdef double pos = x * scale
    cdef int i = 0
    if pos >= 1.0:  # truncation is floor here; avoids a libm call per lookup
        i = <int>last if pos >= last else <int>pos
    return table[i] + (pos - i) * (table[i + 1] - table[i])


cdef inline double one_minus_exp_neg(double x) noexcept nogil:
    """1 - exp(-x) for x >= 0, exact to rounding also for tiny x (hysteresis rate per step)."""
    if x < 1e-3:
        # Taylor series to x^5 (error < x^6/720); multiplications only, no division in the hot loop
        return x * (1.0 - x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x * (1.0 / 120.0)))))
    return -expm1(-x)


cdef inline double rc_heat_J_ohm(double v0, double i, double r, double k_cross, double k_decay,
                                 double dt) noexcept nogil:
    """Energy dissipated in R of an RC pair over a step with constant current, times R (exact integral).

    With A = i R and B = v0 - A: A^2 dt + 2 A B tau (1 - a) + B^2 tau / 2 (1 - a^2), where the per-step
    constants are k_cross = tau (1 - a) and k_decay = tau / 2 (1 - a^2).
    """
    cdef double A = i * r
    cdef double B = v0 - A
    return A * A * dt + 2.0 * A * B * k_cross + B * B * k_decay






cdef class PlantKernel:
    """Binds to a PlantState's arrays once; ``step`` advances them in place."""
    # arrays kept alive while the raw pointers below are in use
    cdef object _state, _owners
    cdef int n_series, n_parallel, n_cells, cells_per_module, n_ocv, n_dudt
    # per cell
    cdef double* soc
    cdef double* v1
    cdef double* v2
    cdef double* hyst
    cdef double* hsign
    cdef double* t_core
    cdef double* t_surf
    cdef double* i_cell
    cdef double* q_cell
    cdef double* cap
    cdef double* r0s
    cdef double* r1s
    cdef double* r2s
    cdef double* g_short
    cdef double* f0
    cdef double* f1
    cdef double* f2
    cdef double* t_arr
    # per group
    cdef double *v_group
    cdef unsigned char *balance
    # pack
    cdef double *scalars
    cdef unsigned char* cmd
    cdef unsigned char* welded
    cdef unsigned char* closed
    # scratch per cell
    cdef double* e_cell
    cdef double* z_cell
    cdef double* r0_now
    cdef double* r1_now
    cdef double* r2_now
    cdef double* dudt_now
    cdef double* cap_seen
    cdef double* inv_cap
    cdef double* hv_now
    cdef double* t_surf_old
    cdef double* e_grp
    cdef double* z_grp
    # cell constants
    cdef double* ocv
    cdef double* dudt
    cdef double m0, m_dyn, gamma, ce, r0_25, r1_25, r2_25, tau1, tau2, ea0, ea1, ea2, soc_k
    cdef double c_core, c_surf, g_cs, g_sc, g_nb
    # pack constants
    cdef double c_link, r_pre, r_path, g_bleed, g_bal

    def __init__(self, state, cell, pack):
        import numpy as np
        self._state = state
        owners = []
        cdef int n = pack.n_series * pack.n_parallel, ns = pack.n_series
        self.n_series = ns
        self.n_parallel = pack.n_parallel
        self.n_cells = n
        self.cells_per_module = n // pack.n_modules
        s = state
        self.soc = dptr(s.soc, n, "soc", owners)
        self.v1 = dptr(s.v_rc1_V, n, "v_rc1_V", owners)
        self.v2 = dptr(s.v_rc2_V, n, "v_rc2_V", owners)
        self.hyst = dptr(s.hysteresis, n, "hysteresis", owners)
        self.hsign = dptr(s.hysteresis_sign, n, "hysteresis_sign", owners)
        self.t_core = dptr(s.temp_core_C, n, "temp_core_C", owners)
        self.t_surf = dptr(s.temp_surface_C, n, "temp_surface_C", owners)
        self.i_cell = dptr(s.cell_current_A, n, "cell_current_A", owners)
        self.q_cell = dptr(s.cell_heat_W, n, "cell_heat_W", owners)
        self.cap = dptr(s.capacity_Ah, n, "capacity_Ah", owners)
        self.r0s = dptr(s.r0_scale, n, "r0_scale", owners)
        self.r1s = dptr(s.r1_scale, n, "r1_scale", owners)
        self.r2s = dptr(s.r2_scale, n, "r2_scale", owners)
        self.g_short = dptr(s.short_conductance_S, n, "short_conductance_S", owners)
        self.f0 = dptr(s.arrhenius_r0, n, "arrhenius_r0", owners)
        self.f1 = dptr(s.arrhenius_r1, n, "arrhenius_r1", owners)
        self.f2 = dptr(s.arrhenius_r2, n, "arrhenius_r2", owners)
        self.t_arr = dptr(s.arrhenius_temp_C, n, "arrhenius_temp_C", owners)
        self.v_group = dptr(s.group_voltage_V, ns, "group_voltage_V", owners)
        self.balance = uptr(s.balancing, ns, "balancing", owners)
        self.scalars = dptr(s.scalars, N_SCALARS, "scalars", owners)
        self.cmd = uptr(s.contactor_command, 3, "contactor_command", owners)
        self.welded = uptr(s.contactor_welded, 3, "contactor_welded", owners)
        self.closed = uptr(s.contactor_closed, 3, "contactor_closed", owners)
        self.e_cell = dptr(np.zeros(n), n, "scratch", owners)
        self.z_cell = dptr(np.zeros(n), n, "scratch", owners)
        self.r0_now = dptr(np.zeros(n), n, "scratch", owners)
        self.r1_now = dptr(np.zeros(n), n, "scratch", owners)
        self.r2_now = dptr(np.zeros(n), n, "scratch", owners)
        self.t_surf_old = dptr(np.zeros(n), n, "scratch", owners)
        self.dudt_now = dptr(np.zeros(n), n, "scratch", owners)
        self.cap_seen = dptr(np.zeros(n), n, "scratch", owners)
        self.inv_cap = dptr(np.zeros(n), n, "scratch", owners)
        self.hv_now = dptr(np.zeros(n), n, "scratch", owners)
        self.e_grp = dptr(np.zeros(ns), ns, "scratch", owners)
        self.z_grp = dptr(np.zeros(ns), ns, "scratch", owners)
        ocv = np.array(cell.ocv_V, dtype=np.float64)
        dudt = np.array(cell.entropic_mV_per_K, dtype=np.float64) * 1e-3
        self.n_ocv = ocv.shape[0]
        self.n_dudt = dudt.shape[0]
        self.ocv = dptr(ocv, self.n_ocv, "cell.ocv_V", owners)
        self.dudt = dptr(dudt, self.n_dudt, "cell.entropic_mV_per_K", owners)
        self._owners = owners
        self.m0 = cell.hysteresis_instant_V
        self.m_dyn = cell.hysteresis_dynamic_V
        self.gamma = cell.hysteresis_rate
        self.ce = cell.coulombic_efficiency
        self.r0_25, self.r1_25, self.r2_25 = cell.r0_ohm, cell.r1_ohm, cell.r2_ohm
        self.tau1, self.tau2 = cell.tau1_s, cell.tau2_s
        self.ea0 = cell.r0_activation_J_per_mol / R_GAS
        self.ea1 = cell.r1_activation_J_per_mol / R_GAS
        self.ea2 = cell.r2_activation_J_per_mol / R_GAS
        self.soc_k = cell.resistance_soc_curvature
        self.c_core = cell.heat_capacity_core_J_per_K
        self.c_surf = cell.heat_capacity_surface_J_per_K
        self.g_cs = 1.0 / cell.thermal_resistance_core_surface_K_per_W
        self.g_sc = 1.0 / cell.thermal_resistance_surface_coolant_K_per_W
        self.g_nb = 1.0 / cell.thermal_resistance_neighbour_K_per_W
        self.c_link = pack.link_capacitance_F
        self.r_pre = pack.precharge_resistance_ohm
        self.r_path = pack.main_path_resistance_ohm
        self.g_bleed = 1.0 / pack.link_bleed_resistance_ohm
        self.g_bal = 1.0 / pack.balancing_resistance_ohm

    def step(self, double dt_s, double load_current_A, double coolant_C, double cooling_factor=1.0):
        """Advance the pack by ``dt_s`` with the load drawing ``load_current_A`` from the DC link."""
        if not (isfinite(dt_s) and dt_s > 0):
            raise InputError("dt_s", "a finite time step > 0 s", dt_s)
        if not isfinite(load_current_A):
            raise InputError("load_current_A", "a finite current", load_current_A)
        if not (isfinite(coolant_C) and -100.0 < coolant_C < 300.0):
            raise InputError("coolant_C", "a finite temperature in (-100, 300) degC", coolant_C)
        if not (isfinite(cooling_factor) and cooling_factor >= 0):
            raise InputError("cooling_factor", "a finite factor >= 0", cooling_factor)
        with nogil:
            self._step(dt_s, load_current_A, coolant_C, cooling_factor)

    cdef void _step(self, double dt, double load_A, double coolant_C, double cooling) noexcept nogil:
        # Everything the loops touch is copied into locals first: stores through the state pointers
        # could otherwise alias this object's fields and force the compiler to reload them.
        cdef Py_ssize_t g, p, k, ns = self.n_series, n_par = self.n_parallel, cpm = self.cells_per_module
        cdef double ocv_scale = self.n_ocv - 1, ocv_last = self.n_ocv - 2
        cdef double dudt_scale = self.n_dudt - 1, dudt_last = self.n_dudt - 2
        cdef Py_ssize_t pos_in_module
        cdef double* soc = self.soc
        cdef double* v1 = self.v1
        cdef double* v2 = self.v2
        cdef double* hyst = self.hyst
        cdef double* hsign = self.hsign
        cdef double* t_core = self.t_core
        cdef double* t_surf = self.t_surf
        cdef double* cap = self.cap
        cdef double* g_short = self.g_short
        cdef double* f0 = self.f0
        cdef double* f1 = self.f1
        cdef double* f2 = self.f2
        cdef double* t_arr = self.t_arr
        cdef double* r0s = self.r0s
        cdef double* r1s = self.r1s
        cdef double* r2s = self.r2s
        cdef double* e_cell = self.e_cell
        cdef double* y_cell = self.z_cell
        cdef double* r0_now = self.r0_now
        cdef double* r1_now = self.r1_now
        cdef double* r2_now = self.r2_now
        cdef double* dudt_now = self.dudt_now
        cdef double* hv_now = self.hv_now
        cdef double* ts_old = self.t_surf_old
        cdef double* e_grp = self.e_grp
        cdef double* z_grp = self.z_grp
        cdef double* ocv_t = self.ocv
        cdef double* dudt_t = self.dudt
        cdef double* i_cell = self.i_cell
        cdef double* q_cell = self.q_cell
        cdef double* v_group = self.v_group
        cdef unsigned char *balance = self.balance
        cdef double m0 = self.m0, m_dyn = self.m_dyn, gamma = self.gamma, ce = self.ce
        cdef double r0_25 = self.r0_25, r1_25 = self.r1_25, r2_25 = self.r2_25, tau1 = self.tau1
        cdef double tau2 = self.tau2, ea0 = self.ea0, ea1 = self.ea1, ea2 = self.ea2, soc_k = self.soc_k
        cdef double g_bal = self.g_bal, g_nb = self.g_nb, g_cs = self.g_cs, g_sc = self.g_sc * cooling
        cdef double a1 = exp(-dt / tau1), a2 = exp(-dt / tau2)
        cdef double b1 = 1.0 - a1, b2 = 1.0 - a2
        cdef double T, z, x, sf, r0, r1, r2, dudt, hv, E, y, sum_y, sum_ey, g_tot, v_g, i, dq, om
        cdef double e_pack = 0.0, z_pack = 0.0
        # pass 1: every cell as a Thevenin source over the step; groups reduced to one source each
        for g in range(ns):
            sum_y = 0.0
            sum_ey = 0.0
            g_tot = g_bal if balance[g] else 0.0
            for p in range(n_par):
                k = g * n_par + p
                T = t_core[k]
                if not (fabs(T - t_arr[k]) <= REFRESH_K):
                    # the resistance law is evaluated within the model's range, so a runaway cell stays finite
                    x = 1.0 / (fmin(fmax(T, T_MIN_C), T_MAX_C) + KELVIN) - 1.0 / T_REF_K
                    f0[k] = exp(ea0 * x)
                    f1[k] = exp(ea1 * x)
                    f2[k] = exp(ea2 * x)
                    t_arr[k] = T
                z = soc[k]
                sf = 1.0 + soc_k * (z - 0.5) * (z - 0.5)
                r0 = r0_25 * f0[k] * sf * r0s[k]
                r1 = r1_25 * f1[k] * sf * r1s[k]
                r2 = r2_25 * f2[k] * sf * r2s[k]
                dudt = interp_uniform(dudt_t, dudt_scale, dudt_last, z)
                hv = m_dyn * hyst[k] - m0 * hsign[k]
                E = interp_uniform(ocv_t, ocv_scale, ocv_last, z) + (T - 25.0) * dudt + hv - a1 * v1[k] - a2 * v2[k]
                y = 1.0 / (r0 + r1 * b1 + r2 * b2)
                e_cell[k] = E
                y_cell[k] = y
                r0_now[k] = r0
                r1_now[k] = r1
                r2_now[k] = r2
                dudt_now[k] = dudt
                hv_now[k] = hv
                ts_old[k] = t_surf[k]
                sum_y = sum_y + y
                sum_ey = sum_ey + E * y
                g_tot = g_tot + g_short[k]
            g_tot = 1.0 / (g_tot + sum_y)
            e_grp[g] = sum_ey * g_tot
            z_grp[g] = g_tot
            e_pack = e_pack + e_grp[g]
            z_pack = z_pack + z_grp[g]

        cdef double current = self._link(dt, load_A, e_pack, z_pack)

        # pass 2: cell currents, electrical states, heat
        cdef double v_pack = 0.0, i_sign_eps, q_core, q_surf, inv_q
        cdef double ac = self.c_core / dt, as_ = self.c_surf / dt
        cdef double rhs_c, rhs_s, tc, ts
        cdef double* cap_seen = self.cap_seen
        cdef double* inv_cap = self.inv_cap
        # the 2x2 thermal system of a cell differs only by its number of neighbours (0, 1 or 2)
        cdef double d_nb[3]
        cdef double inv_det_nb[3]
        cdef int n_nb
        for n_nb in range(3):
            d_nb[n_nb] = as_ + g_cs + g_sc + g_nb * n_nb
            inv_det_nb[n_nb] = 1.0 / ((ac + g_cs) * d_nb[n_nb] - g_cs * g_cs)
        cdef double sig = SIGN_C_RATE, dt_h = dt / 3600.0
        cdef double k1_cross = tau1 * b1, k1_decay = tau1 * 0.5 * (1.0 - a1 * a1)
        cdef double k2_cross = tau2 * b2, k2_decay = tau2 * 0.5 * (1.0 - a2 * a2)
        pos_in_module = 0
        for g in range(ns):
            v_g = e_grp[g] - z_grp[g] * current
            v_group[g] = v_g
            v_pack = v_pack + v_g
            for p in range(n_par):
                k = g * n_par + p
                i = (e_cell[k] - v_g) * y_cell[k]
                T = t_core[k]
                z = soc[k]
                r0 = r0_now[k]
                r1 = r1_now[k]
                r2 = r2_now[k]
                hv = hv_now[k]
                dudt = dudt_now[k]
                q_core = (r0 * i * i
                          + (rc_heat_J_ohm(v1[k], i, r1, k1_cross, k1_decay, dt) * r2
                             + rc_heat_J_ohm(v2[k], i, r2, k2_cross, k2_decay, dt) * r1) / (r1 * r2 * dt)
                          - hv * i
                          - i * (T + KELVIN) * dudt
                          + v_g * v_g * g_short[k])
                v1[k] = a1 * v1[k] + b1 * r1 * i
                v2[k] = a2 * v2[k] + b2 * r2 * i
                if cap[k] != cap_seen[k]:  # capacities change rarely (fade); divide only then
                    cap_seen[k] = cap[k]
                    inv_cap[k] = 1.0 / cap[k]
                inv_q = inv_cap[k]
                dq = i * dt_h
                if i < 0:
                    dq = dq * ce
                soc[k] = z - dq * inv_q
                om = one_minus_exp_neg(fabs(dq * gamma * inv_q))
                if i > 0:
                    hyst[k] = (1.0 - om) * hyst[k] - om
                elif i < 0:
                    hyst[k] = (1.0 - om) * hyst[k] + om
                # the instantaneous-hysteresis sign follows the string current, not the small currents that
                # circulate between parallel cells (their sign would flip every tick: a limit cycle)
                i_sign_eps = sig * cap[k] * n_par
                if current > i_sign_eps:
                    hsign[k] = 1.0
                elif current < -i_sign_eps:
                    hsign[k] = -1.0
                i_cell[k] = i
                q_cell[k] = q_core

        # pass 3: thermal, backward Euler on (core, surface) with neighbour surfaces from the previous step
        # (a loop of its own: short dependency chains let the CPU overlap several cells)
        for g in range(ns):
            v_g = v_group[g]
            q_surf = (v_g * v_g * g_bal / n_par) if balance[g] else 0.0
            for p in range(n_par):
                k = g * n_par + p
                rhs_s = as_ * ts_old[k] + g_sc * coolant_C + q_surf
                n_nb = 0
                if pos_in_module > 0:
                    n_nb = 1
                    rhs_s = rhs_s + g_nb * ts_old[k - 1]
                if pos_in_module < cpm - 1:
                    n_nb = n_nb + 1
                    rhs_s = rhs_s + g_nb * ts_old[k + 1]
                    pos_in_module = pos_in_module + 1
                else:
                    pos_in_module = 0
                rhs_c = ac * t_core[k] + q_cell[k]
                t_core[k] = (rhs_c * d_nb[n_nb] + g_cs * rhs_s) * inv_det_nb[n_nb]
                t_surf[k] = (g_cs * rhs_c + (ac + g_cs) * rhs_s) * inv_det_nb[n_nb]
        self.scalars[I_PACK_V] = v_pack

    cdef double _link(self, double dt, double load_A, double e_pack, double z_pack) noexcept nogil:
        """Contactors and DC link, exact for the step; returns the mean string current."""
        cdef int c
        for c in range(3):
            self.closed[c] = 1 if (self.cmd[c] or self.welded[c]) else 0
        cdef bint neg = self.closed[C_NEG], pos = self.closed[C_POS], pre = self.closed[C_PRE]
        cdef double g_path = 0.0, r_path
        if neg and (pos or pre):
            if pos and pre:
                r_path = self.r_path * self.r_pre / (self.r_path + self.r_pre)
            elif pos:
                r_path = self.r_path
            else:
                r_path = self.r_pre
            g_path = 1.0 / (z_pack + r_path)
        # the load (inverter, charger) only draws through closed main contactors
        if not (pos and neg):
            load_A = 0.0
        cdef double g_all = g_path + self.g_bleed
        cdef double v0 = self.scalars[I_LINK]
        cdef double v_inf = (g_path * e_pack - load_A) / g_all
        cdef double r = dt * g_all / self.c_link
        cdef double decay = exp(-r)
        cdef double mean_factor = one_minus_exp_neg(r) / r
        cdef double v_end = v_inf + (v0 - v_inf) * decay
        cdef double v_mean = v_inf + (v0 - v_inf) * mean_factor
        cdef double i_start = g_path * (e_pack - v0), i_end = g_path * (e_pack - v_end)
        cdef double current = g_path * (e_pack - v_mean)
        self.scalars[I_LINK] = v_end
        self.scalars[I_CURRENT] = current
        self.scalars[I_PEAK] = i_start if fabs(i_start) >= fabs(i_end) else i_end
        return current
