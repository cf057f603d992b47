# The BMS's estimators, compiled. Readable specification and test oracle: bms/_twin/estimators.py.
#
# TickKernel.tick  every BMS tick, every series group: voltage-input checks, extended Kalman filter on
#                  (SOC, v_rc1, v_rc2, hysteresis, channel bias) in Joseph form, heat, thermal observer.
# SlowKernel.update at a slower rate: resistance and capacity tracking, state of power, state of energy.
# Arrays over groups are structures of arrays: element k of group g at [k * n + g].
from libc.math cimport INFINITY, exp, expm1, fabs, floor, isfinite, sqrt

import bms._est_layout as L
from bms._est_layout import COV_INDEX, EST_ARRHENIUS_REFRESH_K, SOP_HORIZONS_S
cdef int N_COV = L.N_COV, N_HORIZONS = L.N_HORIZONS, N_SCALARS = L.N_SCALARS, N_SOP = L.N_SOP
cdef int N_THERMAL = L.N_THERMAL, N_TUNING = L.N_TUNING, N_X = L.N_X, S_ACC_IDT = L.S_ACC_IDT
cdef int S_ACC_IMAX = L.S_ACC_IMAX, S_ACC_Q = L.S_ACC_Q, S_ACC_T = L.S_ACC_T, S_AH = L.S_AH
cdef int S_CURRENT = L.S_CURRENT, S_CURRENT_VALID = L.S_CURRENT_VALID
cdef int S_ENERGY_KWH = L.S_ENERGY_KWH, S_ENERGY_USABLE_KWH = L.S_ENERGY_USABLE_KWH
cdef int S_GATED = L.S_GATED, S_REST_S = L.S_REST_S
cdef int S_SLOW_PREV_I = L.S_SLOW_PREV_I, S_SLOW_PREV_SET = L.S_SLOW_PREV_SET, S_SOP_NEXT = L.S_SOP_NEXT
cdef int S_TICKS = L.S_TICKS, SOP_CHARGE_A = L.SOP_CHARGE_A
cdef int SOP_CHARGE_GROUP = L.SOP_CHARGE_GROUP, SOP_CHARGE_MODEL_A = L.SOP_CHARGE_MODEL_A
cdef int SOP_CHARGE_W = L.SOP_CHARGE_W, SOP_DISCHARGE_A = L.SOP_DISCHARGE_A
cdef int SOP_DISCHARGE_GROUP = L.SOP_DISCHARGE_GROUP, SOP_DISCHARGE_MODEL_A = L.SOP_DISCHARGE_MODEL_A
cdef int SOP_DISCHARGE_W = L.SOP_DISCHARGE_W, SOP_NEWTON_ITERATIONS = L.SOP_NEWTON_ITERATIONS
cdef int TH_K_COOLANT = L.TH_K_COOLANT, TH_K_CORE = L.TH_K_CORE
cdef int TH_K_SURFACE = L.TH_K_SURFACE, TU_CAP_FORGET = L.TU_CAP_FORGET
cdef int TU_CAP_PRIOR_REL = L.TU_CAP_PRIOR_REL, TU_CORR_S = L.TU_CORR_S
cdef int TU_REOPEN = L.TU_REOPEN, TU_BIAS_MAX = L.TU_BIAS_MAX, TU_R_MIN_DI = L.TU_R_MIN_DI
cdef int TU_SOP_R_K = L.TU_SOP_R_K, TU_SOP_R_SIGMA = L.TU_SOP_R_SIGMA
cdef int TU_GATE = L.TU_GATE, TU_GATE_ABS = L.TU_GATE_ABS
cdef int TU_MIN_DSOC = L.TU_MIN_DSOC, TU_P_FLOOR = L.TU_P_FLOOR
cdef int TU_QB_RATE = L.TU_QB_RATE, TU_QH = L.TU_QH, TU_QV_RATE = L.TU_QV_RATE, TU_QZ_RATE = L.TU_QZ_RATE
cdef int TU_QZ_THROUGHPUT = L.TU_QZ_THROUGHPUT, TU_R_MAX = L.TU_R_MAX
cdef int TU_R_MIN = L.TU_R_MIN, TU_R_Q_RATE = L.TU_R_Q_RATE
cdef int TU_R_SIG = L.TU_R_SIG, TU_REST_C_RATE = L.TU_REST_C_RATE
cdef int TU_SETTLE_S = L.TU_SETTLE_S, TU_SIG_CORR = L.TU_SIG_CORR
cdef int TU_SIG_I = L.TU_SIG_I, TU_SIG_MODEL = L.TU_SIG_MODEL
cdef int TU_SIG_RC_REL = L.TU_SIG_RC_REL, TU_SIG_V = L.TU_SIG_V
cdef int TU_SIGN_TAU = L.TU_SIGN_TAU, S_SIGN_I = L.S_SIGN_I
cdef int TU_SIGN_BAND = L.TU_SIGN_BAND, TU_SOE_C_RATE = L.TU_SOE_C_RATE
cdef int TU_SOP_HEAT_J_PER_K = L.TU_SOP_HEAT_J_PER_K, TU_SOP_REFINE = L.TU_SOP_REFINE
cdef int TU_SOP_TEMP_FRACTION = L.TU_SOP_TEMP_FRACTION, TU_STUCK_SAMPLES = L.TU_STUCK_SAMPLES
cdef int TU_STUCK_V = L.TU_STUCK_V, TU_T_GATE_K = L.TU_T_GATE_K
cdef int TU_T_HI = L.TU_T_HI, TU_T_LO = L.TU_T_LO, TU_V_HI = L.TU_V_HI, TU_V_LO = L.TU_V_LO
from bms._layout import HYSTERESIS_SIGN_C_RATE
from bms.errors import InputError

include "binding.pxi"

cdef double KELVIN = 273.15
cdef double MAX_RISE_K = L.SOP_MAX_RISE_K
cdef double T_REF_K = 298.15
cdef double R_GAS = 8.314462618
cdef double REFRESH_K = EST_ARRHENIUS_REFRESH_K
cdef double R_P00_MAX = L.EST_R_SOC_SIGMA_MAX * L.EST_R_SOC_SIGMA_MAX
cdef double IEKF_DSOC = L.EST_IEKF_DSOC
cdef int IEKF_ITERATIONS = L.EST_IEKF_ITERATIONS
cdef double SIGN_C_RATE = HYSTERESIS_SIGN_C_RATE
cdef int NX = N_X, NCOV = N_COV, NH = N_HORIZONS, NEWTON = SOP_NEWTON_ITERATIONS
cdef int WARM = L.SOP_WARM_ITERATIONS
# packed covariance indices (row-major upper triangle, see bms._est_layout.COV_INDEX)
cdef int C00 = COV_INDEX[0][0], C01 = COV_INDEX[0][1], C02 = COV_INDEX[0][2], C03 = COV_INDEX[0][3]
cdef int C04 = COV_INDEX[0][4], C11 = COV_INDEX[1][1], C12 = COV_INDEX[1][2], C13 = COV_INDEX[1][3]
cdef int C14 = COV_INDEX[1][4], C22 = COV_INDEX[2][2], C23 = COV_INDEX[2][3], C24 = COV_INDEX[2][4]
cdef int C33 = COV_INDEX[3][3], C34 = COV_INDEX[3][4], C44 = COV_INDEX[4][4]
cdef double HORIZON[3]
HORIZON[0] = SOP_HORIZONS_S[0]
HORIZON[1] = SOP_HORIZONS_S[1]
HORIZON[2] = SOP_HORIZONS_S[2]


cdef inline double interp_uniform(const double* table, int n, double x) noexcept nogil:
    """Piecewise-linear table on a uniform grid over [0, 1]; linear extrapolation outside."""
    cdef double pos = x * (n - 1)
    cdef int i = 0
    if pos >= 1.0:
        i = n - 2 if pos >= n - 2 else <int>pos
    return table[i] + (pos - i) * (table[i + 1] - table[i])


cdef inline double interp_slope(const double* table, int n, double x, double* slope) noexcept nogil:
    """Value of ``interp_uniform`` and its slope d(table)/dx."""
    cdef double pos = x * (n - 1)
    cdef int i = 0
    if pos >= 1.0:
        i = n - 2 if pos >= n - 2 else <int>pos
    cdef double d = table[i + 1] - table[i]
    slope[0] = d * (n - 1)
    return table[i] + (pos - i) * d


cdef inline double interp_table(const double* xs, const double* ys, int n, double x) noexcept nogil:
    """Piecewise-linear table on an increasing grid, held constant outside (numpy.interp)."""
    cdef int k
    if x <= xs[0]:
        return ys[0]
    if x >= xs[n - 1]:
        return ys[n - 1]
    for k in range(n - 1):
        if x < xs[k + 1]:
            return ys[k] + (x - xs[k]) * (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k])
    return ys[n - 1]


cdef inline double ocv_energy(const double* ocv, const double* cum, int n, double x) noexcept nogil:
    """Integral of the piecewise-linear OCV from SOC 0 to x (clamped to [0, 1])."""
    if x < 0.0:
        x = 0.0
    elif x > 1.0:
        x = 1.0
    cdef double pos = x * (n - 1)
    cdef int i = <int>floor(pos)
    if i > n - 2:
        i = n - 2
    if i < 0:
        i = 0
    cdef double f = pos - i
    return cum[i] + (ocv[i] + 0.5 * f * (ocv[i + 1] - ocv[i])) * f / (n - 1)


cdef inline double one_minus_exp_neg(double x) noexcept nogil:
    """1 - exp(-x) for x >= 0, exact to rounding also for tiny x (hysteresis decay per tick)."""
    if x < 1e-3:
        return x * (1.0 - x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x * (1.0 / 120.0)))))
    return -expm1(-x)


cdef inline double exp_rise(double y) noexcept nogil:
    """exp(y) for the modest |y| of an SOP horizon's temperature rise (|y| < 2: relative error < 1e-4):
    Taylor series of exp(y / 8), squared three times."""
    cdef double u = 0.125 * y
    cdef double p = 1.0 + u * (1.0 + u * (0.5 + u * (1.0 / 6.0 + u * (1.0 / 24.0))))
    p = p * p
    p = p * p
    return p * p


cdef inline double dmin(double a, double b) noexcept nogil:
    return a if a < b else b


cdef inline double dmax(double a, double b) noexcept nogil:
    return a if a > b else b








cdef struct CellC:
    # nominal cell constants (the BMS's own parameters, no spread) and tables
    int n_series, n_parallel, n_ocv, n_dudt, n_chg
    double* ocv
    double* dudt
    double* ocv_cum
    double* chg_t
    double* chg_c
    double m0, m_dyn, gamma, ce, r0_25, r1_25, r2_25, tau1, tau2, ea0, ea1, ea2, soc_k
    double c_core, c_surf, g_cs, g_sc, cap_rated, v_min, v_max, taper_soc, ccd_A, ea_ccd
    double dis_cont, dis_peak, peak_s, t_dis_min, t_chg_min, t_derate, t_opmax
    bint li_metal


cdef int fill_cell(CellC* c, object cell, object pack, list owners) except -1:
    import numpy as np
    c.n_series, c.n_parallel = pack.n_series, pack.n_parallel
    ocv = np.array(cell.ocv_V, dtype=np.float64)
    dudt = np.array(cell.entropic_mV_per_K, dtype=np.float64) * 1e-3
    seg = 0.5 * (ocv[1:] + ocv[:-1]) / (ocv.shape[0] - 1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    chg_t = np.array(cell.charge_limit_temp_C, dtype=np.float64)
    chg_c = np.array(cell.charge_limit_C_rate, dtype=np.float64)
    c.n_ocv, c.n_dudt, c.n_chg = ocv.shape[0], dudt.shape[0], chg_t.shape[0]
    if chg_c.shape[0] != c.n_chg:
        raise InputError("cell.charge_limit_C_rate", f"{c.n_chg} values", chg_c.shape[0])
    c.ocv = dptr(ocv, c.n_ocv, "cell.ocv_V", owners)
    c.dudt = dptr(dudt, c.n_dudt, "cell.entropic_mV_per_K", owners)
    c.ocv_cum = dptr(cum, c.n_ocv, "ocv energy", owners)
    c.chg_t = dptr(chg_t, c.n_chg, "cell.charge_limit_temp_C", owners)
    c.chg_c = dptr(chg_c, c.n_chg, "cell.charge_limit_C_rate", owners)
    c.m0, c.m_dyn, c.gamma = cell.hysteresis_instant_V, cell.hysteresis_dynamic_V, cell.hysteresis_rate
    c.ce = cell.coulombic_efficiency
    c.r0_25, c.r1_25, c.r2_25 = cell.r0_ohm, cell.r1_ohm, cell.r2_ohm
    c.tau1, c.tau2 = cell.tau1_s, cell.tau2_s
    c.ea0 = cell.r0_activation_J_per_mol / R_GAS
    c.ea1 = cell.r1_activation_J_per_mol / R_GAS
    c.ea2 = cell.r2_activation_J_per_mol / R_GAS
    c.soc_k = cell.resistance_soc_curvature
    c.c_core, c.c_surf = cell.heat_capacity_core_J_per_K, cell.heat_capacity_surface_J_per_K
    c.g_cs = 1.0 / cell.thermal_resistance_core_surface_K_per_W
    c.g_sc = 1.0 / cell.thermal_resistance_surface_coolant_K_per_W
    c.cap_rated = cell.capacity_Ah
    c.v_min, c.v_max = cell.voltage_min_V, cell.voltage_max_V
    c.taper_soc = cell.charge_taper_soc
    c.li_metal = bool(cell.lithium_metal)
    c.ccd_A = cell.ccd_safety_factor * cell.ccd_25C_mA_per_cm2 * cell.electrode_area_cm2 * 1e-3
    c.ea_ccd = cell.ccd_activation_J_per_mol / R_GAS
    c.dis_cont, c.dis_peak = cell.discharge_continuous_C_rate, cell.discharge_peak_C_rate
    c.peak_s = cell.discharge_peak_duration_s
    c.t_dis_min, c.t_chg_min = cell.temp_discharge_min_C, cell.temp_charge_min_C
    c.t_derate, c.t_opmax = cell.temp_derate_start_C, cell.temp_operating_max_C
    return 0


cdef class TickKernel:
    """SOC filter, input validity and core temperature of every series group; ``tick`` once per BMS tick."""
    cdef object _owners
    cdef CellC c
    cdef int n, nt
    cdef double* volt
    cdef double* temp
    cdef double* x
    cdef double* cov
    cdef double* hsign
    cdef double* vsign
    cdef double* cap
    cdef double* rscale
    cdef double* f0
    cdef double* f1
    cdef double* f2
    cdef double* t_arr
    cdef double* t_core
    cdef double* t_surf
    cdef double* t_cool
    cdef double* heat
    cdef double* innov_out
    cdef double* v_last
    cdef double* stuck_i
    cdef double* stuck_n
    cdef double* gate_n
    cdef double* w_interp
    cdef unsigned char* valid
    cdef long long* group_sensor
    cdef long long* ia
    cdef long long* ib
    cdef double* t_offset
    cdef unsigned char* t_valid
    cdef double* tu
    cdef double* sc
    cdef double* th

    def __init__(self, state, cell, pack, cell_voltage_V, temperature_C):
        owners = []
        fill_cell(&self.c, cell, pack, owners)
        cdef int n = pack.n_series
        cdef int nt = state.sensor_group.shape[0]
        self.n, self.nt = n, nt
        self.volt = dptr(cell_voltage_V, n, "cell_voltage_V", owners)
        self.temp = dptr(temperature_C, nt, "temperature_C", owners)
        s = state
        self.x = dptr(s.x, NX * n, "x", owners)
        self.cov = dptr(s.cov, NCOV * n, "cov", owners)
        self.hsign = dptr(s.hysteresis_sign, n, "hysteresis_sign", owners)
        self.vsign = dptr(s.voltage_sign, n, "voltage_sign", owners)
        self.cap = dptr(s.capacity_cell_Ah, n, "capacity_cell_Ah", owners)
        self.rscale = dptr(s.resistance_scale, n, "resistance_scale", owners)
        self.f0 = dptr(s.arrhenius_r0, n, "arrhenius_r0", owners)
        self.f1 = dptr(s.arrhenius_r1, n, "arrhenius_r1", owners)
        self.f2 = dptr(s.arrhenius_r2, n, "arrhenius_r2", owners)
        self.t_arr = dptr(s.arrhenius_temp_C, n, "arrhenius_temp_C", owners)
        self.t_core = dptr(s.temp_core_C, n, "temp_core_C", owners)
        self.t_surf = dptr(s.temp_surface_C, n, "temp_surface_C", owners)
        self.t_cool = dptr(s.temp_coolant_C, n, "temp_coolant_C", owners)
        self.heat = dptr(s.heat_W, n, "heat_W", owners)
        self.innov_out = dptr(s.innovation_V, n, "innovation_V", owners)
        self.v_last = dptr(s.voltage_last_V, n, "voltage_last_V", owners)
        self.stuck_i = dptr(s.stuck_current_A, n, "stuck_current_A", owners)
        self.stuck_n = dptr(s.stuck_count, n, "stuck_count", owners)
        self.gate_n = dptr(s.gate_count, n, "gate_count", owners)
        self.w_interp = dptr(s.interp_weight, n, "interp_weight", owners)
        self.valid = uptr(s.valid, n, "valid", owners)
        self.group_sensor = lptr(s.group_sensor, n, "group_sensor", owners)
        self.ia = lptr(s.interp_a, n, "interp_a", owners)
        self.ib = lptr(s.interp_b, n, "interp_b", owners)
        self.t_offset = dptr(s.temperature_offset_K, nt, "temperature_offset_K", owners)
        self.t_valid = uptr(s.temperature_valid, nt, "temperature_valid", owners)
        self.tu = dptr(s.tuning, N_TUNING, "tuning", owners)
        self.sc = dptr(s.scalars, N_SCALARS, "scalars", owners)
        self.th = dptr(s.thermal, N_THERMAL, "thermal", owners)
        self._owners = owners
        cdef int g
        for g in range(n):
            if not (-1 <= self.group_sensor[g] < nt and 0 <= self.ia[g] < n and 0 <= self.ib[g] < n):
                raise InputError("sensor layout", "sensor and group indices in range", g)

    def tick(self, double dt_s, double current_A, bint new_voltage=True, bint new_temperature=True):
        """One BMS tick of ``dt_s`` with the measured pack current ``current_A`` (NaN: not usable)."""
        if not (isfinite(dt_s) and dt_s > 0):
            raise InputError("dt_s", "a finite time step > 0 s", dt_s)
        with nogil:
            self._tick(dt_s, current_A, new_voltage, new_temperature)

    cdef void _tick(self, double dt, double current, bint new_v, bint new_t) noexcept nogil:
        cdef CellC* c = &self.c
        cdef int n = self.n, g, k, n_ocv = c.n_ocv, n_dudt = c.n_dudt
        cdef double* x = self.x
        cdef double* P = self.cov
        cdef double* hsign = self.hsign
        cdef double* vsign = self.vsign
        cdef double* cap = self.cap
        cdef double* rscale = self.rscale
        cdef double* f0 = self.f0
        cdef double* f1 = self.f1
        cdef double* f2 = self.f2
        cdef double* t_arr = self.t_arr
        cdef double* t_core = self.t_core
        cdef double* t_surf = self.t_surf
        cdef double* t_cool = self.t_cool
        cdef double* heat = self.heat
        cdef double* innov_out = self.innov_out
        cdef double* v_last = self.v_last
        cdef double* stuck_i = self.stuck_i
        cdef double* stuck_n = self.stuck_n
        cdef double* w_interp = self.w_interp
        cdef double* volt = self.volt
        cdef double* temp = self.temp
        cdef double* t_offset = self.t_offset
        cdef unsigned char* t_valid = self.t_valid
        cdef unsigned char* valid = self.valid
        cdef long long* group_sensor = self.group_sensor
        cdef long long* ia = self.ia
        cdef long long* ib = self.ib
        cdef double* tu = self.tu
        cdef double* sc = self.sc
        cdef double* ocv_t = c.ocv
        cdef double* dudt_t = c.dudt
        cdef bint cur_ok = isfinite(current) and fabs(current) < 1e5
        cdef double i = current / c.n_parallel if cur_ok else 0.0
        sc[S_CURRENT] = i
        sc[S_CURRENT_VALID] = 1.0 if cur_ok else 0.0
        # the current that decides the instantaneous-hysteresis sign, low-passed (see the twin)
        cdef double lp_a = one_minus_exp_neg(dt / tu[TU_SIGN_TAU]) if tu[TU_SIGN_TAU] > 0 else 1.0
        if cur_ok:
            sc[S_SIGN_I] = sc[S_SIGN_I] + lp_a * (i - sc[S_SIGN_I])
        cdef double i_sign = sc[S_SIGN_I]
        cdef double ai_sign = fabs(i_sign)
        cdef double dt_h = dt / 3600.0
        cdef double a1 = exp(-dt / c.tau1), a2 = exp(-dt / c.tau2)
        cdef double b1 = 1.0 - a1, b2 = 1.0 - a2
        # an RC pair's error from a resistance off by sig_rc: stationary variance (sig_rc r i)^2
        cdef double w1 = sqrt(one_minus_exp_neg(2.0 * dt / c.tau1))
        cdef double w2 = sqrt(one_minus_exp_neg(2.0 * dt / c.tau2))
        cdef double dq = i * dt_h
        if i < 0:
            dq = dq * c.ce
        cdef double ai = fabs(i)
        cdef double sgn = 1.0 if i > 0 else (-1.0 if i < 0 else 0.0)
        # tuning into locals
        cdef double sig_i = tu[TU_SIG_I], qz_rate = tu[TU_QZ_RATE] * dt, qz_thr = tu[TU_QZ_THROUGHPUT]
        cdef double sig_rc = tu[TU_SIG_RC_REL], qv = tu[TU_QV_RATE] * dt, qh = tu[TU_QH], qb = tu[TU_QB_RATE] * dt
        cdef double v_lo = tu[TU_V_LO], v_hi = tu[TU_V_HI], stuck_samples = tu[TU_STUCK_SAMPLES]
        cdef double stuck_v = tu[TU_STUCK_V], sig_v2 = tu[TU_SIG_V] * tu[TU_SIG_V]
        cdef double corr = tu[TU_CORR_S] / dt, sig_corr2 = tu[TU_SIG_CORR] * tu[TU_SIG_CORR]
        cdef double sig_model = tu[TU_SIG_MODEL], gate2 = tu[TU_GATE] * tu[TU_GATE]
        cdef double gate_abs2 = tu[TU_GATE_ABS] * tu[TU_GATE_ABS], floor_p = tu[TU_P_FLOOR]
        cdef double band = tu[TU_SIGN_BAND], lp_noise = 4.0 * tu[TU_SIG_I] * sqrt(lp_a / (2.0 - lp_a))
        cdef double inv_2band = 1.0 / (2.0 * band)
        cdef double band_now = tu[TU_SIGN_BAND] + 4.0 * tu[TU_SIG_I]
        cdef double m0 = c.m0, m_dyn = c.m_dyn, gamma = c.gamma, soc_k = c.soc_k
        cdef double r0_25 = c.r0_25, r1_25 = c.r1_25, r2_25 = c.r2_25
        cdef double ea0 = c.ea0, ea1 = c.ea1, ea2 = c.ea2
        # thermal constants
        cdef double ac = c.c_core / dt, as_ = c.c_surf / dt, g_cs = c.g_cs, g_sc = c.g_sc
        cdef double d_s = as_ + g_cs + g_sc
        cdef double inv_det = 1.0 / ((ac + g_cs) * d_s - g_cs * g_cs)
        cdef double k_core = self.th[TH_K_CORE], k_surf = self.th[TH_K_SURFACE], k_cool = self.th[TH_K_COOLANT]
        cdef double t_lo = tu[TU_T_LO], t_hi = tu[TU_T_HI], t_gate = tu[TU_T_GATE_K]
        cdef double T, xk, z, v1, v2, h, b, sf, r0, r1, r2, inv_q, dz, om, ah, hs, eps, p_cross, zone
        cdef double p00, p01, p02, p03, p04, p11, p12, p13, p14, p22, p23, p24, p33, p34, p44
        cdef double v, T25, ocv, slope, dudt, dslope, H0, y_pred, model, Rm, innov, u0, u1, u2, u3, u4
        cdef double S, inv_s, K0, K1, K2, K3, K4, q_heat, rhs_c, rhs_s, tc, ts, e, y
        cdef double g_prior, e_it, z_it, o_it, sl_it, d_it, ds_it, h_it
        cdef int it
        cdef bint plausible, same, stuck, use, gated_now
        cdef double* gate_n = self.gate_n
        cdef double reopen_n = tu[TU_REOPEN], b_max = tu[TU_BIAS_MAX]
        cdef long long j
        cdef int gated = 0

        # coolant of the groups without a sensor, from the sensor groups (before this tick's correction)
        for g in range(n):
            if group_sensor[g] < 0:
                t_cool[g] = w_interp[g] * t_cool[ia[g]] + (1.0 - w_interp[g]) * t_cool[ib[g]]

        for g in range(n):
            T = t_core[g]
            if not (fabs(T - t_arr[g]) <= REFRESH_K):
                xk = 1.0 / (T + KELVIN) - 1.0 / T_REF_K
                f0[g] = exp(ea0 * xk)
                f1[g] = exp(ea1 * xk)
                f2[g] = exp(ea2 * xk)
                t_arr[g] = T
            # --- predict
            z = x[g]
            v1 = x[n + g]
            v2 = x[2 * n + g]
            h = x[3 * n + g]
            b = x[4 * n + g]
            sf = (1.0 + soc_k * (z - 0.5) * (z - 0.5)) * rscale[g]
            r0 = r0_25 * f0[g] * sf
            r1 = r1_25 * f1[g] * sf
            r2 = r2_25 * f2[g] * sf
            inv_q = 1.0 / cap[g]
            dz = dq * inv_q
            om = one_minus_exp_neg(fabs(dz * gamma))
            ah = 1.0 - om
            z = z - dz
            h = ah * h - sgn * om
            v1 = a1 * v1 + b1 * r1 * i
            v2 = a2 * v2 + b2 * r2 * i
            hs = hsign[g]
            eps = SIGN_C_RATE * cap[g]
            p_cross = dmin(dmax((ai_sign - (eps - band) - lp_noise) * inv_2band, 0.0), 1.0)
            if i_sign > 0:
                hsign[g] = dmax(hs, 2.0 * p_cross - 1.0)
            elif i_sign < 0:
                hsign[g] = dmin(hs, 1.0 - 2.0 * p_cross)
            if i > eps + band_now:
                hsign[g] = 1.0
            elif i < -(eps + band_now):
                hsign[g] = -1.0
            zone = 1.0 - hs * hs  # variance of the sign this tick's voltage has

            p00 = P[C00 * n + g]
            p01 = P[C01 * n + g] * a1
            p02 = P[C02 * n + g] * a2
            p03 = P[C03 * n + g] * ah
            p04 = P[C04 * n + g]
            p11 = P[C11 * n + g] * (a1 * a1)
            p12 = P[C12 * n + g] * (a1 * a2)
            p13 = P[C13 * n + g] * (a1 * ah)
            p14 = P[C14 * n + g] * a1
            p22 = P[C22 * n + g] * (a2 * a2)
            p23 = P[C23 * n + g] * (a2 * ah)
            p24 = P[C24 * n + g] * a2
            p33 = P[C33 * n + g] * (ah * ah)
            p34 = P[C34 * n + g] * ah
            p44 = P[C44 * n + g]
            p00 = p00 + (sig_i * dt_h * inv_q) * (sig_i * dt_h * inv_q) + qz_rate + qz_thr * fabs(dz)
            p11 = p11 + (sig_rc * w1 * r1 * ai) * (sig_rc * w1 * r1 * ai) + qv
            p22 = p22 + (sig_rc * w2 * r2 * ai) * (sig_rc * w2 * r2 * ai) + qv
            p33 = p33 + qh * om
            p44 = p44 + qb

            T25 = T - 25.0
            dudt = interp_slope(dudt_t, n_dudt, z, &dslope)
            if new_v:
                vsign[g] = hs  # the sign this sample has (the slow kernel's resistance steps)
                # --- inputs: plausible, not stuck
                v = volt[g]
                plausible = isfinite(v) and v >= v_lo and v <= v_hi
                same = v == v_last[g]
                if same:
                    stuck_n[g] = stuck_n[g] + 1.0
                else:
                    stuck_n[g] = 0.0
                    stuck_i[g] = i
                    v_last[g] = v
                stuck = same and ((stuck_samples > 0 and stuck_n[g] >= stuck_samples)
                                  or fabs(i - stuck_i[g]) * r0 >= stuck_v)
                valid[g] = 1 if (plausible and not stuck) else 0
                use = valid[g] != 0 and cur_ok
                if use:
                    # --- measurement update (Joseph form), gated
                    ocv = interp_slope(ocv_t, n_ocv, z, &slope)
                    H0 = slope + T25 * dslope
                    y_pred = ocv + T25 * dudt + m_dyn * h - m0 * hs - v1 - v2 - r0 * i + b
                    model = sig_model * (r0 * ai + fabs(v1) + fabs(v2))
                    Rm = sig_v2 + corr * (sig_corr2 + model * model + m0 * m0 * zone)
                    innov = v - y_pred
                    # u = P H, H = (H0, -1, -1, m_dyn, 1)
                    u0 = p00 * H0 - p01 - p02 + p03 * m_dyn + p04
                    u1 = p01 * H0 - p11 - p12 + p13 * m_dyn + p14
                    u2 = p02 * H0 - p12 - p22 + p23 * m_dyn + p24
                    u3 = p03 * H0 - p13 - p23 + p33 * m_dyn + p34
                    u4 = p04 * H0 - p14 - p24 + p34 * m_dyn + p44
                    S = H0 * u0 - u1 - u2 + m_dyn * u3 + u4 + Rm
                    if innov * innov > gate2 * S + gate_abs2:
                        gate_n[g] = gate_n[g] + 1.0
                        if gate_n[g] >= reopen_n:
                            # a discrepancy that persists: the state is wrong, re-open the SOC variance
                            gate_n[g] = 0.0
                            p00 = p00 + (innov / H0) * (innov / H0)
                            p01 = 0.0
                            p02 = 0.0
                            p03 = 0.0
                            p04 = 0.0
                            u0 = p00 * H0 - p01 - p02 + p03 * m_dyn + p04
                            u1 = p01 * H0 - p11 - p12 + p13 * m_dyn + p14
                            u2 = p02 * H0 - p12 - p22 + p23 * m_dyn + p24
                            u3 = p03 * H0 - p13 - p23 + p33 * m_dyn + p34
                            u4 = p04 * H0 - p14 - p24 + p34 * m_dyn + p44
                            S = H0 * u0 - u1 - u2 + m_dyn * u3 + u4 + Rm
                            gated_now = False
                        else:
                            gated_now = True
                            gated = gated + 1
                    else:
                        gate_n[g] = 0.0
                        gated_now = False
                    if not gated_now:
                        innov_out[g] = innov
                        if fabs(u0 / S * innov) > IEKF_DSOC:
                            # an SOC correction across a bend of the OCV: iterate the linearisation at
                            # the updated SOC (iterated EKF; see the twin)
                            g_prior = ocv + T25 * dudt
                            e_it = innov
                            for it in range(IEKF_ITERATIONS):
                                z_it = dmin(dmax(z + u0 / S * e_it, 0.0), 1.0)
                                o_it = interp_slope(ocv_t, n_ocv, z_it, &sl_it)
                                d_it = interp_slope(dudt_t, n_dudt, z_it, &ds_it)
                                h_it = sl_it + T25 * ds_it
                                e_it = innov - (o_it + T25 * d_it - g_prior - h_it * (z_it - z))
                                u0 = p00 * h_it - p01 - p02 + p03 * m_dyn + p04
                                u1 = p01 * h_it - p11 - p12 + p13 * m_dyn + p14
                                u2 = p02 * h_it - p12 - p22 + p23 * m_dyn + p24
                                u3 = p03 * h_it - p13 - p23 + p33 * m_dyn + p34
                                u4 = p04 * h_it - p14 - p24 + p34 * m_dyn + p44
                                S = h_it * u0 - u1 - u2 + m_dyn * u3 + u4 + Rm
                            innov = e_it
                        inv_s = 1.0 / S
                        K0 = u0 * inv_s
                        K1 = u1 * inv_s
                        K2 = u2 * inv_s
                        K3 = u3 * inv_s
                        K4 = u4 * inv_s
                        z = z + K0 * innov
                        v1 = v1 + K1 * innov
                        v2 = v2 + K2 * innov
                        h = h + K3 * innov
                        b = b + K4 * innov
                        # Joseph form (I - K H) P (I - K H)' + K R K' = P - K u' - u K' + S K K'
                        p00 = p00 - K0 * u0 - u0 * K0 + S * K0 * K0
                        p01 = p01 - K0 * u1 - u0 * K1 + S * K0 * K1
                        p02 = p02 - K0 * u2 - u0 * K2 + S * K0 * K2
                        p03 = p03 - K0 * u3 - u0 * K3 + S * K0 * K3
                        p04 = p04 - K0 * u4 - u0 * K4 + S * K0 * K4
                        p11 = p11 - K1 * u1 - u1 * K1 + S * K1 * K1
                        p12 = p12 - K1 * u2 - u1 * K2 + S * K1 * K2
                        p13 = p13 - K1 * u3 - u1 * K3 + S * K1 * K3
                        p14 = p14 - K1 * u4 - u1 * K4 + S * K1 * K4
                        p22 = p22 - K2 * u2 - u2 * K2 + S * K2 * K2
                        p23 = p23 - K2 * u3 - u2 * K3 + S * K2 * K3
                        p24 = p24 - K2 * u4 - u2 * K4 + S * K2 * K4
                        p33 = p33 - K3 * u3 - u3 * K3 + S * K3 * K3
                        p34 = p34 - K3 * u4 - u3 * K4 + S * K3 * K4
                        p44 = p44 - K4 * u4 - u4 * K4 + S * K4 * K4
            P[C00 * n + g] = dmax(p00, floor_p)
            P[C01 * n + g] = p01
            P[C02 * n + g] = p02
            P[C03 * n + g] = p03
            P[C04 * n + g] = p04
            P[C11 * n + g] = dmax(p11, floor_p)
            P[C12 * n + g] = p12
            P[C13 * n + g] = p13
            P[C14 * n + g] = p14
            P[C22 * n + g] = dmax(p22, floor_p)
            P[C23 * n + g] = p23
            P[C24 * n + g] = p24
            P[C33 * n + g] = dmax(p33, floor_p)
            P[C34 * n + g] = p34
            P[C44 * n + g] = dmax(p44, floor_p)
            z = dmin(dmax(z, 0.0), 1.0)
            h = dmin(dmax(h, -1.0), 1.0)
            x[g] = z
            x[n + g] = v1
            x[2 * n + g] = v2
            x[3 * n + g] = h
            x[4 * n + g] = dmin(dmax(b, -b_max), b_max)

            # --- heat per cell from the filter's states (entropic slope at the predicted SOC)
            q_heat = i * (v1 + v2 + r0 * i - (m_dyn * h - m0 * hsign[g])) - i * (T + KELVIN) * dudt
            heat[g] = q_heat

            # --- thermal observer: backward Euler on (core, surface), coolant held
            rhs_c = ac * t_core[g] + q_heat
            rhs_s = as_ * t_surf[g] + g_sc * t_cool[g]
            tc = (rhs_c * d_s + g_cs * rhs_s) * inv_det
            ts = (g_cs * rhs_c + (ac + g_cs) * rhs_s) * inv_det
            j = group_sensor[g]
            if new_t and j >= 0:
                y = temp[j]
                if isfinite(y) and y >= t_lo and y <= t_hi:
                    t_valid[j] = 1
                    e = y - t_offset[j] - ts
                    if not (fabs(e) <= t_gate):
                        e = 0.0
                    tc = tc + k_core * e
                    ts = ts + k_surf * e
                    t_cool[g] = t_cool[g] + k_cool * e
                else:
                    t_valid[j] = 0
            t_core[g] = tc
            t_surf[g] = ts

        sc[S_GATED] = sc[S_GATED] + gated
        sc[S_ACC_T] = sc[S_ACC_T] + dt
        sc[S_ACC_Q] = sc[S_ACC_Q] + dq
        sc[S_ACC_IDT] = sc[S_ACC_IDT] + i * dt
        sc[S_ACC_IMAX] = dmax(sc[S_ACC_IMAX], ai)
        sc[S_TICKS] = sc[S_TICKS] + 1.0


cdef class SlowKernel:
    """Resistance and capacity tracking, state of power and of energy; ``update`` at a slower rate."""
    cdef object _owners
    cdef CellC c
    cdef int n
    cdef object s
    cdef double* volt
    cdef double* x
    cdef double* cov
    cdef double* hsign
    cdef double* cap
    cdef double* rscale
    cdef double* rvar
    cdef double* f0
    cdef double* f1
    cdef double* f2
    cdef double* t_core
    cdef double* t_surf
    cdef unsigned char* valid
    cdef double* slow_v
    cdef double* slow_m
    cdef double* slow_v1
    cdef double* slow_v2
    cdef double* slow_r0i
    cdef unsigned char* slow_set
    cdef double* sum_w
    cdef double* sum_wq
    cdef double* anchor_soc
    cdef double* anchor_var
    cdef double* anchor_ah
    cdef unsigned char* anchor_set
    cdef double* pend_q
    cdef double* pend_w
    cdef unsigned char* pend_set
    cdef double* pend_soc
    cdef double* pend_var
    cdef double* pend_ah
    cdef unsigned char* pend_anchor_set
    cdef double* tu
    cdef double* sc
    cdef double* sop
    # scratch per group
    cdef double* m_sol
    cdef double* rate_dis
    cdef double* rate_chg
    cdef double* v0s
    cdef double* dv0s
    cdef double* warm
    cdef double e1h, e2h, g1h, g2h

    def __init__(self, state, cell, pack, cell_voltage_V):
        import numpy as np
        owners = []
        fill_cell(&self.c, cell, pack, owners)
        cdef int n = pack.n_series
        self.n = n
        s = state
        self.volt = dptr(cell_voltage_V, n, "cell_voltage_V", owners)
        self.x = dptr(s.x, NX * n, "x", owners)
        self.cov = dptr(s.cov, NCOV * n, "cov", owners)
        self.hsign = dptr(s.voltage_sign, n, "voltage_sign", owners)  # the sign of the last sample
        self.cap = dptr(s.capacity_cell_Ah, n, "capacity_cell_Ah", owners)
        self.rscale = dptr(s.resistance_scale, n, "resistance_scale", owners)
        self.rvar = dptr(s.resistance_var, n, "resistance_var", owners)
        self.f0 = dptr(s.arrhenius_r0, n, "arrhenius_r0", owners)
        self.f1 = dptr(s.arrhenius_r1, n, "arrhenius_r1", owners)
        self.f2 = dptr(s.arrhenius_r2, n, "arrhenius_r2", owners)
        self.t_core = dptr(s.temp_core_C, n, "temp_core_C", owners)
        self.t_surf = dptr(s.temp_surface_C, n, "temp_surface_C", owners)
        self.valid = uptr(s.valid, n, "valid", owners)
        self.slow_v = dptr(s.slow_voltage_V, n, "slow_voltage_V", owners)
        self.slow_m = dptr(s.slow_model_V, n, "slow_model_V", owners)
        self.slow_v1 = dptr(s.slow_v1_V, n, "slow_v1_V", owners)
        self.slow_v2 = dptr(s.slow_v2_V, n, "slow_v2_V", owners)
        self.slow_r0i = dptr(s.slow_r0i_V, n, "slow_r0i_V", owners)
        self.slow_set = uptr(s.slow_set, n, "slow_set", owners)
        self.sum_w = dptr(s.capacity_sum_w, n, "capacity_sum_w", owners)
        self.sum_wq = dptr(s.capacity_sum_wq, n, "capacity_sum_wq", owners)
        self.anchor_soc = dptr(s.anchor_soc, n, "anchor_soc", owners)
        self.anchor_var = dptr(s.anchor_var, n, "anchor_var", owners)
        self.anchor_ah = dptr(s.anchor_ah, n, "anchor_ah", owners)
        self.anchor_set = uptr(s.anchor_set, n, "anchor_set", owners)
        self.pend_q = dptr(s.pending_q_Ah, n, "pending_q_Ah", owners)
        self.pend_w = dptr(s.pending_w, n, "pending_w", owners)
        self.pend_set = uptr(s.pending_set, n, "pending_set", owners)
        self.pend_soc = dptr(s.pending_anchor_soc, n, "pending_anchor_soc", owners)
        self.pend_var = dptr(s.pending_anchor_var, n, "pending_anchor_var", owners)
        self.pend_ah = dptr(s.pending_anchor_ah, n, "pending_anchor_ah", owners)
        self.pend_anchor_set = uptr(s.pending_anchor_set, n, "pending_anchor_set", owners)
        self.tu = dptr(s.tuning, N_TUNING, "tuning", owners)
        self.sc = dptr(s.scalars, N_SCALARS, "scalars", owners)
        self.sop = dptr(s.sop, N_SOP * N_HORIZONS, "sop", owners)
        self.m_sol = dptr(np.zeros(n), n, "scratch", owners)
        self.rate_dis = dptr(np.zeros(n), n, "scratch", owners)
        self.rate_chg = dptr(np.zeros(n), n, "scratch", owners)
        self.v0s = dptr(np.zeros(n), n, "scratch", owners)
        self.dv0s = dptr(np.zeros(n), n, "scratch", owners)
        self.warm = dptr(s.sop_solution, 2 * NH * n, "sop_solution", owners)
        self._owners = owners

    def update(self):
        """Resistance, capacity, state of power and of energy from what the ticks accumulated."""
        with nogil:
            self._update()

    cdef void _update(self) noexcept nogil:
        cdef CellC* c = &self.c
        cdef int n = self.n, g
        cdef double* tu = self.tu
        cdef double* sc = self.sc
        cdef double* x = self.x
        cdef double elapsed = sc[S_ACC_T]
        if not elapsed > 0:
            return
        cdef double i_now = sc[S_CURRENT]
        cdef bint cur_ok = sc[S_CURRENT_VALID] > 0
        cdef double i_mean = sc[S_ACC_IDT] / elapsed
        cdef bint was_settled = sc[S_REST_S] >= tu[TU_SETTLE_S]
        if sc[S_ACC_IMAX] <= tu[TU_REST_C_RATE] * c.cap_rated:
            sc[S_REST_S] = sc[S_REST_S] + elapsed
        else:
            sc[S_REST_S] = 0.0
        cdef bint settled = sc[S_REST_S] >= tu[TU_SETTLE_S]
        cdef bint leaving = was_settled and not settled
        sc[S_AH] = sc[S_AH] + sc[S_ACC_Q]
        # only a current step well above the sensor noise says anything about the resistance
        cdef bint prev_ok = sc[S_SLOW_PREV_SET] > 0 and fabs(i_now - sc[S_SLOW_PREV_I]) >= tu[TU_R_MIN_DI]
        cdef double sig_i2 = 2.0 * tu[TU_SIG_I] * tu[TU_SIG_I]
        cdef double e1 = exp(-elapsed / c.tau1), e2 = exp(-elapsed / c.tau2)
        cdef double r_q = tu[TU_R_Q_RATE] * elapsed, r_sig2 = tu[TU_R_SIG] * tu[TU_R_SIG]
        cdef double r_min = tu[TU_R_MIN], r_max = tu[TU_R_MAX], lam = tu[TU_CAP_FORGET]
        cdef double min_dsoc = tu[TU_MIN_DSOC], ah_now
        cdef double z, v1, v2, h, T25, sf, r0n, r1, r2, m_now, rs, y, phi, Pr, Sr, Kr, e, v
        cdef double pzz, dsoc, ah, q_i, var, lam_g, pw
        cdef double w0 = 1.0 / ((tu[TU_CAP_PRIOR_REL] * c.cap_rated) * (tu[TU_CAP_PRIOR_REL] * c.cap_rated))
        cdef bint ok, use
        for g in range(n):
            z = x[g]
            v1 = x[n + g]
            v2 = x[2 * n + g]
            h = x[3 * n + g]
            T25 = self.t_core[g] - 25.0
            sf = 1.0 + c.soc_k * (z - 0.5) * (z - 0.5)
            r0n = c.r0_25 * self.f0[g] * sf
            ok = self.valid[g] != 0
            # --- resistance: voltage step against current step, RC relaxation from the model
            m_now = (interp_uniform(c.ocv, c.n_ocv, z) + T25 * interp_uniform(c.dudt, c.n_dudt, z)
                     + c.m_dyn * h - c.m0 * self.hsign[g])
            rs = self.rscale[g]
            r1 = c.r1_25 * self.f1[g] * sf * rs
            r2 = c.r2_25 * self.f2[g] * sf * rs
            use = ok and self.slow_set[g] != 0 and cur_ok and prev_ok
            v = self.volt[g]
            y = ((v - self.slow_v[g]) - (m_now - self.slow_m[g]) + (1.0 - e1) * (r1 * i_mean - self.slow_v1[g])
                 + (1.0 - e2) * (r2 * i_mean - self.slow_v2[g]))
            phi = -(r0n * i_now - self.slow_r0i[g])
            Pr = self.rvar[g] + r_q
            Sr = phi * phi * Pr + r_sig2 + (rs * r0n) * (rs * r0n) * sig_i2
            Kr = Pr * phi / Sr
            e = y - phi * rs
            use = use and (e * e <= 16.0 * Sr) and self.cov[C00 * n + g] <= R_P00_MAX
            if use:
                self.rscale[g] = dmin(dmax(rs + Kr * e, r_min), r_max)
                self.rvar[g] = (1.0 - Kr * phi) * Pr
            else:
                self.rvar[g] = Pr
            if ok:
                self.slow_v[g] = v
            self.slow_m[g] = m_now
            self.slow_v1[g] = v1
            self.slow_v2[g] = v2
            self.slow_r0i[g] = r0n * i_now
            self.slow_set[g] = 1 if (ok and cur_ok) else 0

            # --- capacity: charge throughput over SOC change between rested anchors
            pzz = self.cov[C00 * n + g]
            if settled and ok:
                dsoc = self.anchor_soc[g] - z
                ah = sc[S_AH] - self.anchor_ah[g]
                if self.anchor_set[g] != 0 and fabs(dsoc) >= min_dsoc:
                    q_i = ah / dsoc
                    var = q_i * q_i * (self.anchor_var[g] + pzz) / (dsoc * dsoc)
                    self.pend_q[g] = q_i
                    self.pend_w[g] = 1.0 / var
                    self.pend_set[g] = 1
                self.pend_soc[g] = z
                self.pend_var[g] = pzz
                self.pend_ah[g] = sc[S_AH]
                self.pend_anchor_set[g] = 1
            if leaving:
                if self.pend_set[g] != 0:
                    self.sum_w[g] = lam * self.sum_w[g] + self.pend_w[g]
                    self.sum_wq[g] = lam * self.sum_wq[g] + self.pend_w[g] * self.pend_q[g]
                if self.pend_anchor_set[g] != 0:
                    self.anchor_soc[g] = self.pend_soc[g]
                    self.anchor_var[g] = self.pend_var[g]
                    self.anchor_ah[g] = self.pend_ah[g]
                    self.anchor_set[g] = 1
                self.pend_set[g] = 0
                self.pend_anchor_set[g] = 0
            if self.pend_set[g] != 0:
                lam_g = lam
                pw = self.pend_w[g]
            else:
                lam_g = 1.0
                pw = 0.0
            self.cap[g] = (w0 * c.cap_rated + lam_g * self.sum_wq[g] + pw * self.pend_q[g]) \
                / (w0 + lam_g * self.sum_w[g] + pw)
        sc[S_SLOW_PREV_I] = i_now
        sc[S_SLOW_PREV_SET] = 1.0 if cur_ok else 0.0
        self._power()
        self._energy()
        sc[S_ACC_T] = 0.0
        sc[S_ACC_Q] = 0.0
        sc[S_ACC_IDT] = 0.0
        sc[S_ACC_IMAX] = 0.0

    # --- state of power ---------------------------------------------------------------------------
    cdef double _v_end(self, int g, double i, double horizon, bint heated, double* dv) noexcept nogil:
        """Voltage of group g's cell at the end of ``horizon`` at constant cell current i, and d/di."""
        cdef CellC* c = &self.c
        cdef int n = self.n
        cdef double z = self.x[g], v1 = self.x[n + g], v2 = self.x[2 * n + g], h = self.x[3 * n + g]
        cdef double T = self.t_core[g]
        # each group's resistance with a margin for what the tracker does not know (cell spread)
        cdef double margin = 1.0 + self.tu[TU_SOP_R_K] * dmin(sqrt(self.rvar[g]), self.tu[TU_SOP_R_SIGMA])
        cdef double sf = (1.0 + c.soc_k * (z - 0.5) * (z - 0.5)) * self.rscale[g] * margin
        cdef double f0 = self.f0[g], f1 = self.f1[g], f2 = self.f2[g]
        cdef double r_h, rise, t_end, t_rc, x_end, x_rc
        if heated:
            # heat over the horizon at constant current from rest: R0 all along, the RC pairs as they charge
            r_h = (c.r0_25 * f0 * horizon + c.r1_25 * f1 * self.g1h + c.r2_25 * f2 * self.g2h) * sf
            rise = dmin(i * i * r_h / self.tu[TU_SOP_HEAT_J_PER_K], MAX_RISE_K)
            t_end = T + rise
            t_rc = T + self.tu[TU_SOP_TEMP_FRACTION] * rise
            x_end = 1.0 / (t_end + KELVIN) - 1.0 / (T + KELVIN)
            x_rc = 1.0 / (t_rc + KELVIN) - 1.0 / (T + KELVIN)
            f0 = f0 * exp_rise(c.ea0 * x_end)
            f1 = f1 * exp_rise(c.ea1 * x_rc)
            f2 = f2 * exp_rise(c.ea2 * x_rc)
        cdef double r0 = c.r0_25 * f0 * sf, r1 = c.r1_25 * f1 * sf, r2 = c.r2_25 * f2 * sf
        cdef double e1 = self.e1h, e2 = self.e2h  # exp(-horizon / tau), set by _power per horizon
        cdef double kq = (c.ce if i < 0 else 1.0) * horizon / 3600.0 / self.cap[g]
        cdef double slope
        cdef double ocv = interp_slope(c.ocv, c.n_ocv, z - i * kq, &slope)
        cdef double sgn = -1.0 if i < 0 else 1.0
        cdef double decay = exp(-c.gamma * fabs(i) * kq)
        cdef double h_end = h * decay - sgn * (1.0 - decay)
        cdef double dh = -c.gamma * kq * sgn * (h + sgn) * decay
        dv[0] = -slope * kq + c.m_dyn * dh - (1.0 - e1) * r1 - (1.0 - e2) * r2 - r0
        return (ocv + (T - 25.0) * interp_uniform(c.dudt, c.n_dudt, z) + c.m_dyn * h_end - c.m0 * sgn
                - (e1 * v1 + (1.0 - e1) * r1 * i) - (e2 * v2 + (1.0 - e2) * r2 * i) - r0 * i)

    cdef double _solve(self, int g, double direction, double horizon, bint heated, double v0, double dv0,
                       double* warm) noexcept nogil:
        """Magnitude of the constant cell current that brings group g to its voltage limit at the horizon.
        ``v0``, ``dv0``: the end voltage at zero current and its slope; ``warm``: the previous solution
        (0: none), updated."""
        cdef CellC* c = &self.c
        cdef double target = c.v_min if direction > 0 else c.v_max
        cdef double cap = 20.0 * c.cap_rated, m = warm[0], dv, v, f
        cdef double f0 = direction * (v0 - target)
        cdef int k, iters = WARM
        if not f0 > 0:
            warm[0] = 0.0
            return 0.0
        if not m > 0:
            m = dmin(dmax(-f0 / dmin(dv0, -1e-9), 0.0), cap)
            iters = NEWTON - 1
        for k in range(iters):
            v = self._v_end(g, m * direction, horizon, heated, &dv)
            f = direction * (v - target)
            m = dmin(dmax(m - f / dmin(dv, -1e-9), 0.0), cap)
        warm[0] = m
        return m

    cdef void _power(self) noexcept nogil:
        cdef CellC* c = &self.c
        cdef int n = self.n, g, hz, k, r, pos, group, n_ref
        cdef double* sop = self.sop
        cdef double* m = self.m_sol
        cdef double t_lo, t_hi, hot, taper, chg, ccd, z, horizon, dis_c, direction, limit, model, rmin
        cdef double v_sum, dv
        cdef int refine = <int>self.tu[TU_SOP_REFINE]
        cdef bint heated = refine > 0
        cdef int i_tot, i_mod, i_grp, i_pow, d, h_first = 0, h_last = NH
        cdef int nxt = <int>self.sc[S_SOP_NEXT]
        # the horizons take turns, one per update; all of them when asked (S_SOP_NEXT < 0)
        if self.sc[S_SOP_NEXT] >= 0 and nxt < NH:
            h_first, h_last = nxt, nxt + 1
            self.sc[S_SOP_NEXT] = (nxt + 1) % NH
        else:
            self.sc[S_SOP_NEXT] = 0.0
        cdef double span = dmax(c.t_opmax - c.t_derate, 1e-9), tspan = dmax(1.0 - c.taper_soc, 1e-9)
        for hz in range(h_first, h_last):
            horizon = HORIZON[hz]
            self.e1h = exp(-horizon / c.tau1)
            self.e2h = exp(-horizon / c.tau2)
            self.g1h = horizon - 2.0 * c.tau1 * (1.0 - self.e1h) + 0.5 * c.tau1 * (1.0 - self.e1h * self.e1h)
            self.g2h = horizon - 2.0 * c.tau2 * (1.0 - self.e2h) + 0.5 * c.tau2 * (1.0 - self.e2h * self.e2h)
            if horizon <= c.peak_s:
                dis_c = c.dis_peak
            else:
                dis_c = dmax(c.dis_cont, c.dis_peak * sqrt(c.peak_s / horizon))
            for g in range(n):
                t_lo = dmin(self.t_core[g], self.t_surf[g])
                t_hi = dmax(self.t_core[g], self.t_surf[g])
                if t_hi <= c.t_derate:
                    hot = 1.0
                else:
                    hot = dmax(0.0, (c.t_opmax - t_hi) / span)
                if t_hi >= c.t_opmax:
                    hot = 0.0
                z = self.x[g]
                taper = 1.0 if z <= c.taper_soc else dmax(0.0, (1.0 - z) / tspan)
                chg = interp_table(c.chg_t, c.chg_c, c.n_chg, t_lo) * c.cap_rated * taper * hot
                if t_lo < c.t_chg_min:
                    chg = 0.0
                if c.li_metal:
                    ccd = c.ccd_A * exp(-c.ea_ccd * (1.0 / (t_lo + KELVIN) - 1.0 / T_REF_K))
                    chg = dmin(chg, ccd)
                self.rate_chg[g] = chg
                self.rate_dis[g] = 0.0 if t_lo < c.t_dis_min else dis_c * c.cap_rated * hot
                # end voltage at zero current, and its slope: where both directions' solves begin
                self.v0s[g] = self._v_end(g, 0.0, horizon, False, &self.dv0s[g])
            for d in range(2):
                if d == 0:
                    direction, i_tot, i_mod, i_grp, i_pow = 1.0, SOP_DISCHARGE_A, SOP_DISCHARGE_MODEL_A, \
                        SOP_DISCHARGE_GROUP, SOP_DISCHARGE_W
                else:
                    direction, i_tot, i_mod, i_grp, i_pow = -1.0, SOP_CHARGE_A, SOP_CHARGE_MODEL_A, \
                        SOP_CHARGE_GROUP, SOP_CHARGE_W
                for g in range(n):
                    m[g] = self._solve(g, direction, horizon, heated, self.v0s[g], self.dv0s[g],
                                       &self.warm[(d * NH + hz) * n + g])
                group = 0
                rmin = self.rate_dis[0] if d == 0 else self.rate_chg[0]
                for g in range(n):
                    if m[g] < m[group]:
                        group = g
                    if d == 0:
                        rmin = dmin(rmin, self.rate_dis[g])
                    else:
                        rmin = dmin(rmin, self.rate_chg[g])
                model = m[group]
                limit = dmin(model, rmin)
                v_sum = 0.0
                for g in range(n):
                    v_sum = v_sum + self._v_end(g, direction * limit, horizon, False, &dv)
                sop[i_mod * NH + hz] = model * c.n_parallel
                sop[i_grp * NH + hz] = group
                sop[i_tot * NH + hz] = limit * c.n_parallel
                sop[i_pow * NH + hz] = limit * c.n_parallel * dmax(v_sum, 0.0)

    # --- state of energy --------------------------------------------------------------------------
    cdef void _energy(self) noexcept nogil:
        cdef CellC* c = &self.c
        cdef int n = self.n, g
        cdef double total = 0.0, usable = 0.0, avail = 0.0, r_dc = 0.0, z, zc, e_now, sf
        for g in range(n):
            z = self.x[g]
            zc = dmin(dmax(z, 0.0), 1.0)
            if g == 0 or zc * self.cap[g] < avail:
                avail = zc * self.cap[g]
        for g in range(n):
            z = self.x[g]
            e_now = ocv_energy(c.ocv, c.ocv_cum, c.n_ocv, z)
            total = total + e_now * self.cap[g]
            usable = usable + (e_now - ocv_energy(c.ocv, c.ocv_cum, c.n_ocv, z - avail / self.cap[g])) * self.cap[g]
            sf = (1.0 + c.soc_k * (z - 0.5) * (z - 0.5)) * self.rscale[g]
            r_dc = r_dc + (c.r0_25 * self.f0[g] + c.r1_25 * self.f1[g] + c.r2_25 * self.f2[g]) * sf
        total = total * c.n_parallel
        usable = usable * c.n_parallel
        cdef double losses = r_dc * self.tu[TU_SOE_C_RATE] * c.cap_rated * avail * c.n_parallel
        self.sc[S_ENERGY_KWH] = total * 1e-3
        self.sc[S_ENERGY_USABLE_KWH] = dmax(usable - losses, 0.0) * 1e-3
