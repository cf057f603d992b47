"""NumPy twin of ext/estimators.pyx: the BMS's estimators, readable specification and test oracle.

Two kernels with the same constructors and methods as the compiled ``bms._ext.estimators``:

``TickKernel.tick(dt_s, current_A, new_voltage, new_temperature)`` runs every BMS tick for every series
group: validity checks of the cell-voltage inputs, an extended Kalman filter on SOC, the two RC voltages,
the hysteresis state and the channel's voltage bias (covariance in Joseph form), the heat each group
generates, and a two-node thermal observer (core, surface, plus the coolant temperature at each sensor)
corrected by the surface sensors with steady-state Kalman gains.

``SlowKernel.update()`` runs at a slower rate (the BMS chooses, e.g. every 100 ms): resistance tracking
(a scalar Kalman filter on the resistance scale from voltage and current steps), capacity tracking
(weighted samples of charge throughput over SOC change between rested anchors), state of power over the
horizons in ``SOP_HORIZONS_S`` and state of energy.

Everything the filter knows comes from the sensor readings it is bound to and from nominal cell
parameters; nothing reads the plant. Conventions: current > 0 discharges; the models run per cell
(the group current split evenly over ``n_parallel`` cells), temperatures in degC, kelvin inside formulas.
"""
from __future__ import annotations

import math

import numpy as np

from .._est_layout import (
    COV_INDEX,
    EST_ARRHENIUS_REFRESH_K,
    EST_IEKF_DSOC,
    EST_IEKF_ITERATIONS,
    EST_R_SOC_SIGMA_MAX,
    N_COV,
    N_HORIZONS,
    N_SOP,
    N_X,
    S_ACC_IDT,
    S_ACC_IMAX,
    S_ACC_Q,
    S_ACC_SIGN_ZONE,
    S_ACC_T,
    S_AH,
    S_CURRENT,
    S_CURRENT_VALID,
    S_ENERGY_KWH,
    S_ENERGY_USABLE_KWH,
    S_GATED,
    S_REST_S,
    S_SIGN_I,
    S_SIGN_ZONE_NOW,
    S_SLOW_PREV_I,
    S_SLOW_PREV_SET,
    S_SOP_NEXT,
    S_TICKS,
    SOP_BISECTIONS,
    SOP_CHARGE_A,
    SOP_CHARGE_GROUP,
    SOP_CHARGE_MODEL_A,
    SOP_CHARGE_W,
    SOP_DISCHARGE_A,
    SOP_DISCHARGE_GROUP,
    SOP_DISCHARGE_MODEL_A,
    SOP_DISCHARGE_W,
    SOP_HORIZONS_S,
    SOP_MAX_RISE_K,
    TH_K_COOLANT,
    TH_K_CORE,
    TH_K_SURFACE,
    TU_BIAS_MAX,
    TU_CAP_FORGET,
    TU_CAP_PRIOR_REL,
    TU_CORR_S,
    TU_GATE,
    TU_GATE_ABS,
    TU_MIN_DSOC,
    TU_P_FLOOR,
    TU_QB_RATE,
    TU_QH,
    TU_QV_RATE,
    TU_QZ_RATE,
    TU_QZ_THROUGHPUT,
    TU_R_MAX,
    TU_R_MIN,
    TU_R_MIN_DI,
    TU_R_Q_RATE,
    TU_R_SIG,
    TU_REOPEN,
    TU_REST_C_RATE,
    TU_SETTLE_S,
    TU_SIG_CORR,
    TU_SIG_I,
    TU_SIG_MODEL,
    TU_SIG_RC_REL,
    TU_SIG_V,
    TU_SIGN_BAND,
    TU_SIGN_TAU,
    TU_SOE_C_RATE,
    TU_SOP_HEAT_J_PER_K,
    TU_SOP_R_K,
    TU_SOP_R_SIGMA,
    TU_SOP_REFINE,
    TU_SOP_TEMP_FRACTION,
    TU_STUCK_SAMPLES,
    TU_STUCK_V,
    TU_T_GATE_K,
    TU_T_HI,
    TU_T_LO,
    TU_V_HI,
    TU_V_LO,
    X_BIAS,
    X_HYST,
    X_SOC,
    X_V1,
    X_V2,
)
from .._layout import HYSTERESIS_SIGN_C_RATE
from ..errors import InputError

KELVIN = 273.15
T_REF_K = 298.15
R_GAS = 8.314462618
C = COV_INDEX


def interp_uniform(table, x):
    """Piecewise-linear table on a uniform grid over [0, 1]; linear extrapolation outside."""
    n = table.shape[0]
    pos = np.asarray(x, dtype=float) * (n - 1)
    i = np.clip(np.floor(pos), 0, n - 2)
    i = np.where(np.isnan(i), 0, i).astype(np.intp)
    return table[i] + (pos - i) * (table[i + 1] - table[i])


def interp_slope(table, x):
    """Value and slope d(table)/dx of ``interp_uniform``."""
    n = table.shape[0]
    pos = np.asarray(x, dtype=float) * (n - 1)
    i = np.clip(np.floor(pos), 0, n - 2)
    i = np.where(np.isnan(i), 0, i).astype(np.intp)
    d = table[i + 1] - table[i]
    return table[i] + (pos - i) * d, d * (n - 1)


def interp_table(xs, ys, x):
    """Piecewise-linear table on any increasing grid, held constant outside (numpy.interp)."""
    return np.interp(x, xs, ys)


def ocv_energy_table(ocv):
    """Cumulative integral of OCV over SOC at the grid points (V per unit SOC, i.e. Wh per Ah)."""
    n = ocv.shape[0]
    seg = 0.5 * (ocv[1:] + ocv[:-1]) / (n - 1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def ocv_energy(ocv, cum, x):
    """Integral of the (piecewise-linear) OCV from SOC 0 to ``x`` in [0, 1]."""
    n = ocv.shape[0]
    x = np.clip(x, 0.0, 1.0)
    pos = x * (n - 1)
    i = np.clip(np.floor(pos), 0, n - 2).astype(np.intp)
    f = pos - i
    return cum[i] + (ocv[i] + 0.5 * f * (ocv[i + 1] - ocv[i])) * f / (n - 1)


def exp_rise(y):
    """exp(y) for the modest |y| of an SOP horizon's temperature rise (|y| < 2: relative error < 1e-4):
    Taylor series of exp(y / 8), squared three times (no exp in the bisection steps)."""
    u = 0.125 * y
    p = 1.0 + u * (1.0 + u * (0.5 + u * (1.0 / 6.0 + u * (1.0 / 24.0))))
    p = p * p
    p = p * p
    return p * p


def one_minus_exp_neg(x):
    return -np.expm1(-x)


def check_tick_inputs(dt_s):
    if not (math.isfinite(dt_s) and dt_s > 0):
        raise InputError("dt_s", "a finite time step > 0 s", dt_s)


class _CellConstants:
    """Nominal cell constants the estimators use (the BMS's own parameters, no spread)."""

    def __init__(self, cell, pack):
        self.n_series, self.n_parallel = pack.n_series, pack.n_parallel
        self.ocv = np.array(cell.ocv_V, dtype=np.float64)
        self.dudt = np.array(cell.entropic_mV_per_K, dtype=np.float64) * 1e-3
        self.ocv_cum = ocv_energy_table(self.ocv)
        self.m0, self.m_dyn, self.gamma = cell.hysteresis_instant_V, cell.hysteresis_dynamic_V, cell.hysteresis_rate
        self.ce = cell.coulombic_efficiency
        self.r0_25, self.r1_25, self.r2_25 = cell.r0_ohm, cell.r1_ohm, cell.r2_ohm
        self.tau1, self.tau2 = cell.tau1_s, cell.tau2_s
        self.ea0 = cell.r0_activation_J_per_mol / R_GAS
        self.ea1 = cell.r1_activation_J_per_mol / R_GAS
        self.ea2 = cell.r2_activation_J_per_mol / R_GAS
        self.soc_k = cell.resistance_soc_curvature
        self.c_core, self.c_surf = cell.heat_capacity_core_J_per_K, cell.heat_capacity_surface_J_per_K
        self.g_cs = 1.0 / cell.thermal_resistance_core_surface_K_per_W
        self.g_sc = 1.0 / cell.thermal_resistance_surface_coolant_K_per_W
        self.cap_rated = cell.capacity_Ah
        self.v_min, self.v_max = cell.voltage_min_V, cell.voltage_max_V
        self.chg_t = np.array(cell.charge_limit_temp_C, dtype=np.float64)
        self.chg_c = np.array(cell.charge_limit_C_rate, dtype=np.float64)
        self.taper_soc = cell.charge_taper_soc
        self.li_metal = bool(cell.lithium_metal)
        self.ccd_A = cell.ccd_safety_factor * cell.ccd_25C_mA_per_cm2 * cell.electrode_area_cm2 * 1e-3
        self.ea_ccd = cell.ccd_activation_J_per_mol / R_GAS
        self.dis_cont, self.dis_peak = cell.discharge_continuous_C_rate, cell.discharge_peak_C_rate
        self.peak_s = cell.discharge_peak_duration_s
        self.t_dis_min, self.t_chg_min = cell.temp_discharge_min_C, cell.temp_charge_min_C
        self.t_derate, self.t_opmax = cell.temp_derate_start_C, cell.temp_operating_max_C


class TickKernel:
    """SOC filter, input validity and core temperature of every series group; ``tick`` once per BMS tick.

    Bound to an ``EstimatorState`` and to the sensor layer's reading arrays ``cell_voltage_V`` (one per
    series group) and ``temperature_C`` (one per sensor).
    """

    def __init__(self, state, cell, pack, cell_voltage_V, temperature_C):
        self.s, self.c = state, _CellConstants(cell, pack)
        n, nt = pack.n_series, state.sensor_group.shape[0]
        if cell_voltage_V.shape != (n,):
            raise InputError("cell_voltage_V", f"{n} values", cell_voltage_V.shape)
        if temperature_C.shape != (nt,):
            raise InputError("temperature_C", f"{nt} values", temperature_C.shape)
        self.volt, self.temp = cell_voltage_V, temperature_C
        self.n = n
        self.sensor_groups = state.group_sensor >= 0
        self.plain_groups = ~self.sensor_groups

    def tick(self, dt_s, current_A, new_voltage=True, new_temperature=True):
        check_tick_inputs(dt_s)
        s, c, n = self.s, self.c, self.n
        tu, sc = s.tuning, s.scalars
        dt = float(dt_s)
        current_A = float(current_A)
        cur_ok = math.isfinite(current_A) and abs(current_A) < 1e5
        i = current_A / c.n_parallel if cur_ok else 0.0
        sc[S_CURRENT] = i
        sc[S_CURRENT_VALID] = 1.0 if cur_ok else 0.0
        # the current that decides the instantaneous-hysteresis sign, low-passed over TU_SIGN_TAU: the
        # plant's sign follows the true current, and single samples' noise tails would cross the band
        lp_a = one_minus_exp_neg(dt / tu[TU_SIGN_TAU]) if tu[TU_SIGN_TAU] > 0 else 1.0
        if cur_ok:
            sc[S_SIGN_I] = sc[S_SIGN_I] + lp_a * (i - sc[S_SIGN_I])
        i_sign = float(sc[S_SIGN_I])
        ai_sign = abs(i_sign)
        dt_h = dt / 3600.0
        a1, a2 = math.exp(-dt / c.tau1), math.exp(-dt / c.tau2)
        b1, b2 = 1.0 - a1, 1.0 - a2
        dq = i * dt_h
        if i < 0:
            dq = dq * c.ce
        x = s.x.reshape(N_X, n)
        P = s.cov.reshape(N_COV, n)

        # --- temperature factors of the resistances, refreshed where the core estimate moved
        T = s.temp_core_C.copy()
        stale = ~(np.abs(T - s.arrhenius_temp_C) <= EST_ARRHENIUS_REFRESH_K)
        if stale.any():
            xk = 1.0 / (T[stale] + KELVIN) - 1.0 / T_REF_K
            s.arrhenius_r0[stale] = np.exp(c.ea0 * xk)
            s.arrhenius_r1[stale] = np.exp(c.ea1 * xk)
            s.arrhenius_r2[stale] = np.exp(c.ea2 * xk)
            s.arrhenius_temp_C[stale] = T[stale]

        # --- predict
        z, v1, v2, h, b = (x[k].copy() for k in range(N_X))
        sf = (1.0 + c.soc_k * (z - 0.5) * (z - 0.5)) * s.resistance_scale
        r0 = c.r0_25 * s.arrhenius_r0 * sf
        r1 = c.r1_25 * s.arrhenius_r1 * sf
        r2 = c.r2_25 * s.arrhenius_r2 * sf
        inv_q = 1.0 / s.capacity_cell_Ah
        dz = dq * inv_q
        om = one_minus_exp_neg(np.abs(dz * c.gamma))
        ah = 1.0 - om
        sgn = 1.0 if i > 0 else (-1.0 if i < 0 else 0.0)
        ai = abs(i)
        z = z - dz
        h = ah * h - sgn * om
        v1 = a1 * v1 + b1 * r1 * i
        v2 = a2 * v2 + b2 * r2 * i
        # Instantaneous hysteresis: its sign follows the string current above 1 % C (as the plant). Within
        # +-band of that threshold the measured current cannot tell whether the plant's sign flipped
        # (sensor offset, noise, gain): the sign is kept as an expected value in [-1, 1], moved toward +-1
        # to the chance that the current crossed, and the variance of the sign, 1 - sign^2, times M0^2 is
        # added to the measurement noise. This tick's voltage is the plant's at the end of the tick: it has
        # the sign after the tick's current.
        hs = s.hysteresis_sign.copy()
        eps = HYSTERESIS_SIGN_C_RATE * s.capacity_cell_Ah
        # the persistent current errors (offset, gain) make the band; the low-passed current's noise (one
        # sample per tick) only counts beyond 4 sigma: the largest chance seen over a long rest near the
        # threshold would otherwise be a far tail of the noise, not a crossing
        band = tu[TU_SIGN_BAND]
        lp_noise = 4.0 * tu[TU_SIG_I] * math.sqrt(lp_a / (2.0 - lp_a))
        p_cross = np.minimum(np.maximum((ai_sign - (eps - band) - lp_noise) * (1.0 / (2.0 * band)), 0.0), 1.0)
        # the current error is mostly persistent (offset, gain): the chance that the plant's sign has
        # flipped is the largest crossing chance seen, not a sum over ticks
        s.hysteresis_sign[:] = np.where(i_sign > 0, np.maximum(hs, 2.0 * p_cross - 1.0),
                                        np.where(i_sign < 0, np.minimum(hs, 1.0 - 2.0 * p_cross), hs))
        # a current beyond the band even as a single sample has crossed, whatever the low-passed one says
        band_now = tu[TU_SIGN_BAND] + 4.0 * tu[TU_SIG_I]
        s.hysteresis_sign[:] = np.where(i > eps + band_now, 1.0,
                                        np.where(i < -(eps + band_now), -1.0, s.hysteresis_sign))
        hs = s.hysteresis_sign.copy()  # the sign after this tick's current
        zone = 1.0 - hs * hs  # the variance of the sign this tick's voltage has

        A = (1.0, a1, a2, ah, 1.0)
        for p in range(N_X):
            for q in range(p, N_X):
                P[C[p][q]] *= A[p] * A[q]
        P[C[0][0]] += (tu[TU_SIG_I] * dt_h * inv_q) ** 2 + tu[TU_QZ_RATE] * dt + tu[TU_QZ_THROUGHPUT] * np.abs(dz)
        # an RC pair's error from a resistance off by TU_SIG_RC_REL (a first-order lag of the error of its
        # input): per tick the variance that keeps (TU_SIG_RC_REL * r * i)^2 at a constant current
        w1 = math.sqrt(one_minus_exp_neg(2.0 * dt / c.tau1))
        w2 = math.sqrt(one_minus_exp_neg(2.0 * dt / c.tau2))
        P[C[1][1]] += (tu[TU_SIG_RC_REL] * w1 * r1 * ai) ** 2 + tu[TU_QV_RATE] * dt
        P[C[2][2]] += (tu[TU_SIG_RC_REL] * w2 * r2 * ai) ** 2 + tu[TU_QV_RATE] * dt
        P[C[3][3]] += tu[TU_QH] * om
        P[C[4][4]] += tu[TU_QB_RATE] * dt

        # --- inputs: plausible, not stuck
        T25 = T - 25.0
        dudt, dslope = interp_slope(c.dudt, z)
        if new_voltage:
            s.voltage_sign[:] = hs  # the sign this sample has (the slow kernel's resistance steps)
            v = self.volt.astype(np.float64)
            plausible = np.isfinite(v) & (v >= tu[TU_V_LO]) & (v <= tu[TU_V_HI])
            same = v == s.voltage_last_V
            s.stuck_count[:] = np.where(same, s.stuck_count + 1.0, 0.0)
            s.stuck_current_A[:] = np.where(same, s.stuck_current_A, i)
            s.voltage_last_V[:] = np.where(same, s.voltage_last_V, v)
            stuck = same & (((tu[TU_STUCK_SAMPLES] > 0) & (s.stuck_count >= tu[TU_STUCK_SAMPLES]))
                            | (np.abs(i - s.stuck_current_A) * r0 >= tu[TU_STUCK_V]))
            s.valid[:] = plausible & ~stuck
            use = s.valid.astype(bool) & cur_ok

            # --- measurement update (Joseph form), gated
            ocv, slope = interp_slope(c.ocv, z)
            H = (slope + T25 * dslope, -1.0, -1.0, c.m_dyn, 1.0)
            y_pred = ocv + T25 * dudt + c.m_dyn * h - c.m0 * hs - v1 - v2 - r0 * i + b
            # white sensor noise, plus model errors that persist for TU_CORR_S (so weighted as fewer samples)
            # the overpotential is off by the model's own error and by what the resistance tracker does not
            # know yet: its relative variance, at most that of a group against the nominal cell
            # (TU_SIG_RC_REL: the spread's worst group, and Arrhenius off by the core-temperature error).
            # Until the tracker has learnt a group (the spread is 3.5 % per group, 15 % for the odd one; the
            # cold's overpotentials are 5-15 times the warm ones) a filter that took the scale as exact read
            # the difference as SOC (1.6-2 % at -10 degC); so the voltage under load counts for less until then
            over = r0 * ai + np.abs(v1) + np.abs(v2)
            rel_var = np.minimum(s.resistance_var / (s.resistance_scale * s.resistance_scale),
                                 tu[TU_SIG_RC_REL] ** 2)
            model2 = (tu[TU_SIG_MODEL] ** 2 + rel_var) * over * over
            Rm = tu[TU_SIG_V] ** 2 + (tu[TU_CORR_S] / dt) * (tu[TU_SIG_CORR] ** 2 + model2 + c.m0 * c.m0 * zone)
            innov = np.where(use, v - y_pred, 0.0)
            u = [sum(P[C[p][q]] * H[q] for q in range(N_X)) for p in range(N_X)]
            S = sum(H[p] * u[p] for p in range(N_X)) + Rm
            gated = use & (innov * innov > tu[TU_GATE] * tu[TU_GATE] * S + tu[TU_GATE_ABS] * tu[TU_GATE_ABS])
            s.gate_count[:] = np.where(gated, s.gate_count + 1.0, np.where(use, 0.0, s.gate_count))
            # a discrepancy that persists means the state is wrong, not the sensor: re-open the SOC variance
            reopen = gated & (s.gate_count >= tu[TU_REOPEN])
            if reopen.any():
                h0 = np.where(reopen, H[0], 1.0)
                P[C[0][0]] = np.where(reopen, P[C[0][0]] + (innov / h0) ** 2, P[C[0][0]])
                for q in range(1, N_X):  # and forget what SOC was correlated with (stays positive definite)
                    P[C[0][q]] = np.where(reopen, 0.0, P[C[0][q]])
                s.gate_count[:] = np.where(reopen, 0.0, s.gate_count)
                u = [sum(P[C[p][q]] * H[q] for q in range(N_X)) for p in range(N_X)]
                S = sum(H[p] * u[p] for p in range(N_X)) + Rm
            gated = gated & ~reopen
            use = use & ~gated
            s.scalars[S_GATED] += float(gated.sum())
            s.innovation_V[:] = np.where(use, innov, s.innovation_V)
            # an SOC correction that reaches across a bend of the OCV (a gross initial error, SOC near
            # empty): linearised at the prior, SOC moves too little and the posterior variance, from the
            # wrong slope, then believes it; iterate the linearisation at the updated SOC (iterated EKF)
            big = use & (np.abs(u[0] / S * innov) > EST_IEKF_DSOC)
            if big.any():
                g_prior = ocv + T25 * dudt
                h_it, u_it, s_it, e_it = H[0], u, S, innov
                for _ in range(EST_IEKF_ITERATIONS):
                    z_it = np.minimum(np.maximum(z + u_it[0] / s_it * e_it, 0.0), 1.0)
                    o_it, sl_it = interp_slope(c.ocv, z_it)
                    d_it, ds_it = interp_slope(c.dudt, z_it)
                    h_it = sl_it + T25 * ds_it
                    e_it = innov - (o_it + T25 * d_it - g_prior - h_it * (z_it - z))
                    H_it = (h_it, -1.0, -1.0, c.m_dyn, 1.0)
                    u_it = [sum(P[C[p][q]] * H_it[q] for q in range(N_X)) for p in range(N_X)]
                    s_it = sum(H_it[p] * u_it[p] for p in range(N_X)) + Rm
                u = [np.where(big, u_it[p], u[p]) for p in range(N_X)]
                S = np.where(big, s_it, S)
                innov = np.where(big, e_it, innov)
            inv_s = np.where(use, 1.0 / S, 0.0)
            K = [u[p] * inv_s for p in range(N_X)]
            z = z + K[0] * innov
            v1 = v1 + K[1] * innov
            v2 = v2 + K[2] * innov
            h = h + K[3] * innov
            b = b + K[4] * innov
            Su = np.where(use, S, 0.0)
            new = {}
            for p in range(N_X):
                for q in range(p, N_X):
                    new[C[p][q]] = P[C[p][q]] - K[p] * u[q] - u[p] * K[q] + Su * K[p] * K[q]
            for k, value in new.items():
                P[k] = value
        floor = tu[TU_P_FLOOR]
        for p in range(N_X):
            P[C[p][p]] = np.maximum(P[C[p][p]], floor)
        x[X_SOC] = np.minimum(np.maximum(z, 0.0), 1.0)
        x[X_V1] = v1
        x[X_V2] = v2
        x[X_HYST] = np.minimum(np.maximum(h, -1.0), 1.0)
        x[X_BIAS] = np.minimum(np.maximum(b, -tu[TU_BIAS_MAX]), tu[TU_BIAS_MAX])

        # --- heat per cell from the filter's states (overpotentials times the current, entropic slope at
        # the predicted SOC)
        hv = c.m_dyn * x[X_HYST] - c.m0 * s.hysteresis_sign
        q_heat = i * (x[X_V1] + x[X_V2] + r0 * i - hv) - i * (T + KELVIN) * dudt
        s.heat_W[:] = q_heat

        # --- thermal observer: coolant at plain groups interpolated from the sensor groups
        tc, ts, tl = s.temp_core_C, s.temp_surface_C, s.temp_coolant_C
        pg = self.plain_groups
        tl[pg] = s.interp_weight[pg] * tl[s.interp_a[pg]] + (1.0 - s.interp_weight[pg]) * tl[s.interp_b[pg]]
        ac, as_ = c.c_core / dt, c.c_surf / dt
        d = as_ + c.g_cs + c.g_sc
        inv_det = 1.0 / ((ac + c.g_cs) * d - c.g_cs * c.g_cs)
        rhs_c = ac * tc + q_heat
        rhs_s = as_ * ts + c.g_sc * tl
        tc_new = (rhs_c * d + c.g_cs * rhs_s) * inv_det
        ts_new = (c.g_cs * rhs_c + (ac + c.g_cs) * rhs_s) * inv_det
        tc[:] = tc_new
        ts[:] = ts_new
        if new_temperature:
            sg = self.sensor_groups
            j = s.group_sensor[sg]
            y = self.temp[j].astype(np.float64)
            ok = np.isfinite(y) & (y >= tu[TU_T_LO]) & (y <= tu[TU_T_HI])
            s.temperature_valid[j] = ok
            e = np.where(ok, y - s.temperature_offset_K[j] - ts[sg], 0.0)
            e = np.where(np.abs(e) <= tu[TU_T_GATE_K], e, 0.0)
            th = s.thermal
            tc[sg] += th[TH_K_CORE] * e
            ts[sg] += th[TH_K_SURFACE] * e
            tl[sg] += th[TH_K_COOLANT] * e

        # --- what the slow kernel integrates
        sc[S_ACC_T] += dt
        sc[S_ACC_Q] += dq
        sc[S_ACC_IDT] += i * dt
        sc[S_ACC_IMAX] = max(sc[S_ACC_IMAX], ai)
        # Near the sign threshold the plant's instantaneous-hysteresis sign may flip at another tick than the
        # estimate's (its current is the true one; the estimate decides on a low-passed, offset reading): a
        # voltage step across such a tick holds up to 2 M0 that is no resistance, and at cold, against the
        # 1 A steps a drive makes in 100 ms, that reads as tens of percent. The slow kernel takes no
        # resistance step over an interval with such a tick, nor from a sample taken at one.
        eps_lo = 0.9 * HYSTERESIS_SIGN_C_RATE * c.cap_rated - band_now
        eps_hi = 1.1 * HYSTERESIS_SIGN_C_RATE * c.cap_rated + band_now
        sc[S_SIGN_ZONE_NOW] = 1.0 if (eps_lo <= ai <= eps_hi or eps_lo <= ai_sign <= eps_hi) else 0.0
        sc[S_ACC_SIGN_ZONE] = max(sc[S_ACC_SIGN_ZONE], sc[S_SIGN_ZONE_NOW])
        sc[S_TICKS] += 1.0


class SlowKernel:
    """Resistance and capacity tracking, state of power and of energy; ``update`` at a slower rate."""

    def __init__(self, state, cell, pack, cell_voltage_V):
        self.s, self.c = state, _CellConstants(cell, pack)
        n = pack.n_series
        if cell_voltage_V.shape != (n,):
            raise InputError("cell_voltage_V", f"{n} values", cell_voltage_V.shape)
        self.volt = cell_voltage_V
        self.n = n

    def update(self):
        s, c, n = self.s, self.c, self.n
        tu, sc = s.tuning, s.scalars
        elapsed = sc[S_ACC_T]
        if not elapsed > 0:
            return
        x = s.x.reshape(N_X, n)
        P = s.cov.reshape(N_COV, n)
        i_now = sc[S_CURRENT]
        cur_ok = sc[S_CURRENT_VALID] > 0
        i_mean = sc[S_ACC_IDT] / elapsed
        was_settled = sc[S_REST_S] >= tu[TU_SETTLE_S]
        if sc[S_ACC_IMAX] <= tu[TU_REST_C_RATE] * c.cap_rated:
            sc[S_REST_S] += elapsed
        else:
            sc[S_REST_S] = 0.0
        settled = sc[S_REST_S] >= tu[TU_SETTLE_S]
        leaving = was_settled and not settled
        sc[S_AH] += sc[S_ACC_Q]

        z, v1, v2, h = x[X_SOC], x[X_V1], x[X_V2], x[X_HYST]
        T = s.temp_core_C
        T25 = T - 25.0
        sf = 1.0 + c.soc_k * (z - 0.5) * (z - 0.5)
        r0n = c.r0_25 * s.arrhenius_r0 * sf
        valid = s.valid.astype(bool)

        # --- resistance: voltage step against current step, RC relaxation from the model
        # the model voltage with the instantaneous-hysteresis sign the last sample had (a step that flips it
        # would otherwise read 2 M0 as resistance)
        m_now = interp_uniform(c.ocv, z) + T25 * interp_uniform(c.dudt, z) + c.m_dyn * h - c.m0 * s.voltage_sign
        rs = s.resistance_scale
        e1, e2 = math.exp(-elapsed / c.tau1), math.exp(-elapsed / c.tau2)
        r1 = c.r1_25 * s.arrhenius_r1 * sf * rs
        r2 = c.r2_25 * s.arrhenius_r2 * sf * rs
        # only a current step well above the sensor noise says anything about the resistance
        excited = abs(i_now - sc[S_SLOW_PREV_I]) >= tu[TU_R_MIN_DI] and sc[S_ACC_SIGN_ZONE] == 0
        use = valid & (s.slow_set > 0) & cur_ok & (sc[S_SLOW_PREV_SET] > 0) & excited
        v = self.volt.astype(np.float64)
        y = (v - s.slow_voltage_V) - (m_now - s.slow_model_V) + (1.0 - e1) * (r1 * i_mean - s.slow_v1_V) \
            + (1.0 - e2) * (r2 * i_mean - s.slow_v2_V)
        phi = -(r0n * i_now - s.slow_r0i_V)
        Pr = s.resistance_var + tu[TU_R_Q_RATE] * elapsed
        # the regressor carries the current noise of two samples too
        Sr = phi * phi * Pr + tu[TU_R_SIG] * tu[TU_R_SIG] + 2.0 * (rs * r0n * tu[TU_SIG_I]) ** 2
        Kr = Pr * phi / Sr
        e = y - phi * rs
        use = use & (e * e <= 16.0 * Sr) & (P[C[0][0]] <= EST_R_SOC_SIGMA_MAX * EST_R_SOC_SIGMA_MAX)
        s.resistance_scale[:] = np.where(use, np.minimum(np.maximum(rs + Kr * e, tu[TU_R_MIN]), tu[TU_R_MAX]), rs)
        s.resistance_var[:] = np.where(use, (1.0 - Kr * phi) * Pr, Pr)
        s.slow_voltage_V[:] = np.where(valid, v, s.slow_voltage_V)
        s.slow_model_V[:] = m_now
        s.slow_v1_V[:] = v1
        s.slow_v2_V[:] = v2
        s.slow_r0i_V[:] = r0n * i_now
        s.slow_set[:] = valid & cur_ok
        sc[S_SLOW_PREV_I] = i_now
        sc[S_SLOW_PREV_SET] = 1.0 if cur_ok else 0.0

        # --- capacity: charge throughput over SOC change between rested anchors
        pzz = P[C[0][0]]
        if settled:
            take = valid
            dsoc = s.anchor_soc - z
            ah = sc[S_AH] - s.anchor_ah
            sample = take & (s.anchor_set > 0) & (np.abs(dsoc) >= tu[TU_MIN_DSOC])
            safe = np.where(sample, dsoc, 1.0)
            q_i = ah / safe
            var = q_i * q_i * (s.anchor_var + pzz) / (safe * safe)
            s.pending_q_Ah[:] = np.where(sample, q_i, s.pending_q_Ah)
            s.pending_w[:] = np.where(sample, 1.0 / np.where(sample, var, 1.0), s.pending_w)
            s.pending_set[:] = np.where(sample, 1, s.pending_set)
            s.pending_anchor_soc[:] = np.where(take, z, s.pending_anchor_soc)
            s.pending_anchor_var[:] = np.where(take, pzz, s.pending_anchor_var)
            s.pending_anchor_ah[:] = np.where(take, sc[S_AH], s.pending_anchor_ah)
            s.pending_anchor_set[:] = np.where(take, 1, s.pending_anchor_set)
        if leaving:
            pend = s.pending_set > 0
            lam = tu[TU_CAP_FORGET]
            s.capacity_sum_w[:] = np.where(pend, lam * s.capacity_sum_w + s.pending_w, s.capacity_sum_w)
            s.capacity_sum_wq[:] = np.where(pend, lam * s.capacity_sum_wq + s.pending_w * s.pending_q_Ah,
                                            s.capacity_sum_wq)
            anc = s.pending_anchor_set > 0
            s.anchor_soc[:] = np.where(anc, s.pending_anchor_soc, s.anchor_soc)
            s.anchor_var[:] = np.where(anc, s.pending_anchor_var, s.anchor_var)
            s.anchor_ah[:] = np.where(anc, s.pending_anchor_ah, s.anchor_ah)
            s.anchor_set[:] = np.where(anc, 1, s.anchor_set)
            s.pending_set[:] = 0
            s.pending_anchor_set[:] = 0
        w0 = 1.0 / (tu[TU_CAP_PRIOR_REL] * c.cap_rated) ** 2
        pend = s.pending_set > 0
        lam = np.where(pend, tu[TU_CAP_FORGET], 1.0)
        pw = np.where(pend, s.pending_w, 0.0)
        s.capacity_cell_Ah[:] = (w0 * c.cap_rated + lam * s.capacity_sum_wq + pw * s.pending_q_Ah) \
            / (w0 + lam * s.capacity_sum_w + pw)

        self._power()
        self._energy()
        sc[S_ACC_T] = 0.0
        sc[S_ACC_Q] = 0.0
        sc[S_ACC_IDT] = 0.0
        sc[S_ACC_IMAX] = 0.0
        sc[S_ACC_SIGN_ZONE] = sc[S_SIGN_ZONE_NOW]  # this sample starts the next step

    # --- state of power ---------------------------------------------------------------------------
    def _v_end(self, m, direction, horizon, heated):
        """Voltage of every cell at the end of ``horizon`` s at the constant cell current ``direction * m``
        (array, m >= 0), with the hysteresis sign and charge efficiency of ``direction`` also at m = 0, the
        temperature held, or raised by the horizon's heat when ``heated``."""
        s, c, n = self.s, self.c, self.n
        x = s.x.reshape(N_X, n)
        z, v1, v2, h = x[X_SOC], x[X_V1], x[X_V2], x[X_HYST]
        T = s.temp_core_C
        tu = s.tuning
        i = direction * m
        # each group's resistance with a margin for what the tracker does not know (cell spread)
        margin = 1.0 + tu[TU_SOP_R_K] * np.minimum(np.sqrt(s.resistance_var), tu[TU_SOP_R_SIGMA])
        sf = (1.0 + c.soc_k * (z - 0.5) * (z - 0.5)) * s.resistance_scale * margin
        f0, f1, f2 = s.arrhenius_r0, s.arrhenius_r1, s.arrhenius_r2
        e1, e2 = math.exp(-horizon / c.tau1), math.exp(-horizon / c.tau2)
        if heated:
            # heat over the horizon at constant current from rest: R0 all along, the RC pairs as they charge
            g1 = horizon - 2.0 * c.tau1 * (1.0 - e1) + 0.5 * c.tau1 * (1.0 - e1 * e1)
            g2 = horizon - 2.0 * c.tau2 * (1.0 - e2) + 0.5 * c.tau2 * (1.0 - e2 * e2)
            r_h = (c.r0_25 * f0 * horizon + c.r1_25 * f1 * g1 + c.r2_25 * f2 * g2) * sf
            rise = np.minimum(i * i * r_h / tu[TU_SOP_HEAT_J_PER_K], SOP_MAX_RISE_K)
            frac = s.tuning[TU_SOP_TEMP_FRACTION]
            t_end = T + rise
            t_rc = T + frac * rise
            x_end = 1.0 / (t_end + KELVIN) - 1.0 / (T + KELVIN)
            x_rc = 1.0 / (t_rc + KELVIN) - 1.0 / (T + KELVIN)
            f0 = f0 * exp_rise(c.ea0 * x_end)
            f1 = f1 * exp_rise(c.ea1 * x_rc)
            f2 = f2 * exp_rise(c.ea2 * x_rc)
        r0, r1, r2 = c.r0_25 * f0 * sf, c.r1_25 * f1 * sf, c.r2_25 * f2 * sf
        kq = (c.ce if direction < 0 else 1.0) * horizon / 3600.0 / s.capacity_cell_Ah
        sgn = -1.0 if direction < 0 else 1.0
        decay = np.exp(-c.gamma * m * kq)
        h_end = h * decay - sgn * (1.0 - decay)
        return (interp_uniform(c.ocv, z - i * kq) + (T - 25.0) * interp_uniform(c.dudt, z) + c.m_dyn * h_end
                - c.m0 * sgn - (e1 * v1 + (1.0 - e1) * r1 * i) - (e2 * v2 + (1.0 - e2) * r2 * i) - r0 * i)

    def _grid(self, k):
        """The current of grid point ``k`` (A per cell): 20C * k / 2^SOP_BISECTIONS."""
        return (20.0 * self.c.cap_rated) * (np.asarray(k, dtype=np.float64) * (1.0 / (1 << SOP_BISECTIONS)))

    def _solve(self, direction, horizon, heated):
        """Every group's model limit as a grid index: the current magnitude at which its end voltage reaches
        the limit, f(m) = direction * (v_end - limit) = 0. 0 when a group is at its limit already (f(0) <= 0),
        the top of the grid (20C) when it never gets there, else the last k of the bisection with f > 0.
        A function of each group's state alone (no warm start), so solving fewer groups (the compiled
        kernel skips those proven to lie above the smallest) finds the same smallest solution."""
        c, n = self.c, self.n
        target = c.v_min if direction > 0 else c.v_max
        top = 1 << SOP_BISECTIONS

        def positive(k):
            return direction * (self._v_end(self._grid(k), direction, horizon, heated) - target) > 0

        at_limit = ~positive(np.zeros(n, dtype=np.int64))
        never = positive(np.full(n, top, dtype=np.int64))
        lo, hi = np.zeros(n, dtype=np.int64), np.full(n, top, dtype=np.int64)
        for _ in range(SOP_BISECTIONS):
            mid = (lo + hi) // 2
            up = positive(mid)
            lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
        return np.where(at_limit, 0, np.where(never, top, lo))

    def _power(self):
        s, c, n = self.s, self.c, self.n
        tu = s.tuning
        x = s.x.reshape(N_X, n)
        z = x[X_SOC]
        sop = s.sop.reshape(N_SOP, N_HORIZONS)
        t_lo = np.minimum(s.temp_core_C, s.temp_surface_C)
        t_hi = np.maximum(s.temp_core_C, s.temp_surface_C)
        hot = np.where(t_hi <= c.t_derate, 1.0,
                       np.maximum(0.0, (c.t_opmax - t_hi) / max(c.t_opmax - c.t_derate, 1e-9)))
        hot = np.where(t_hi >= c.t_opmax, 0.0, hot)
        taper = np.where(z <= c.taper_soc, 1.0, np.maximum(0.0, (1.0 - z) / max(1.0 - c.taper_soc, 1e-9)))
        chg_rate = interp_table(c.chg_t, c.chg_c, t_lo) * c.cap_rated * taper * hot
        chg_rate = np.where(t_lo < c.t_chg_min, 0.0, chg_rate)
        if c.li_metal:
            ccd = c.ccd_A * np.exp(-c.ea_ccd * (1.0 / (t_lo + KELVIN) - 1.0 / T_REF_K))
            chg_rate = np.minimum(chg_rate, ccd)
        heated = tu[TU_SOP_REFINE] >= 1
        # the horizons take turns, one per update; all of them when asked (S_SOP_NEXT < 0)
        nxt = s.scalars[S_SOP_NEXT]
        if nxt >= 0 and int(nxt) < N_HORIZONS:
            horizons = [int(nxt)]
            s.scalars[S_SOP_NEXT] = (int(nxt) + 1) % N_HORIZONS
        else:
            horizons = range(N_HORIZONS)
            s.scalars[S_SOP_NEXT] = 0.0
        for hz in horizons:
            horizon = SOP_HORIZONS_S[hz]
            if horizon <= c.peak_s:
                dis_c = c.dis_peak
            else:
                dis_c = max(c.dis_cont, c.dis_peak * math.sqrt(c.peak_s / horizon))
            dis_rate = np.where(t_lo < c.t_dis_min, 0.0, dis_c * c.cap_rated * hot)
            for direction, rate, i_tot, i_mod, i_grp, i_pow in (
                    (1, dis_rate, SOP_DISCHARGE_A, SOP_DISCHARGE_MODEL_A, SOP_DISCHARGE_GROUP, SOP_DISCHARGE_W),
                    (-1, chg_rate, SOP_CHARGE_A, SOP_CHARGE_MODEL_A, SOP_CHARGE_GROUP, SOP_CHARGE_W)):
                k = self._solve(direction, horizon, heated)
                group = int(np.argmin(k))  # the first on ties
                model = float(self._grid(k[group]))
                limit = min(model, float(rate.min()))
                v = self._v_end(np.full(n, limit), direction, horizon, False)
                sop[i_mod, hz] = model * c.n_parallel
                sop[i_grp, hz] = group
                sop[i_tot, hz] = limit * c.n_parallel
                sop[i_pow, hz] = limit * c.n_parallel * max(float(v.sum()), 0.0)

    # --- state of energy --------------------------------------------------------------------------
    def _energy(self):
        s, c, n = self.s, self.c, self.n
        x = s.x.reshape(N_X, n)
        z = x[X_SOC]
        cap = s.capacity_cell_Ah
        e_now = ocv_energy(c.ocv, c.ocv_cum, z)
        total = float((e_now * cap).sum()) * c.n_parallel
        avail = float((np.clip(z, 0.0, 1.0) * cap).min())
        span = avail / cap
        usable = float(((e_now - ocv_energy(c.ocv, c.ocv_cum, z - span)) * cap).sum()) * c.n_parallel
        sf = (1.0 + c.soc_k * (z - 0.5) * (z - 0.5)) * s.resistance_scale
        r_dc = (c.r0_25 * s.arrhenius_r0 + c.r1_25 * s.arrhenius_r1 + c.r2_25 * s.arrhenius_r2) * sf
        losses = float(r_dc.sum()) * s.tuning[TU_SOE_C_RATE] * c.cap_rated * avail * c.n_parallel
        s.scalars[S_ENERGY_KWH] = total * 1e-3
        s.scalars[S_ENERGY_USABLE_KWH] = max(usable - losses, 0.0) * 1e-3
