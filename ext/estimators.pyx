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
cdef int S_SIGN_ZONE_NOW = L.S_SIGN_ZONE_NOW, S_ACC_SIGN_ZONE = L.S_ACC_SIGN_ZONE
cdef int S_TICKS = L.S_TICKS, SOP_CHARGE_A = L.SOP_CHARGE_A
cdef int SOP_CHARGE_GROUP = L.SOP_CHARGE_GROUP, SOP_CHARGE_MODEL_A = L.SOP_CHARGE_MODEL_A
cdef int SOP_CHARGE_W = L.SOP_CHARGE_W, SOP_DISCHARGE_A = L.SOP_DISCHARGE_A
cdef int SOP_DISCHARGE_GROUP = L.SOP_DISCHARGE_GROUP, SOP_DISCHARGE_MODEL_A = L.SOP_DISCHARGE_MODEL_A
cdef int SOP_DISCHARGE_W = L.SOP_DISCHARGE_W
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
cdef int NX = N_X, NCOV = N_COV, NH = N_HORIZONS
cdef int SOP_GRID_TOP = 1 << L.SOP_BISECTIONS
cdef double SOP_GRID_STEP = 1.0 / SOP_GRID_TOP
cdef double SOP_PROOF_MARGIN_V = L.SOP_PROOF_MARGIN_V
# packed covariance indices (row-major upper triangle, see bms._est_layout.COV_INDEX)
cdef int C00 = COV_INDEX[0][0], C01 = COV_INDEX[0][1], C02 = COV_INDEX[0][2], C03 = COV_INDEX[0][3]
cdef int C04 = COV_INDEX[0][4], C11 = COV_INDEX[1][1], C12 = COV_INDEX[1][2], C13 = COV_INDEX[1][3]
cdef int C14 = COV_INDEX[1][4], C22 = COV_INDEX[2][2], C23 = COV_INDEX[2][3], C24 = COV_INDEX[2][4]
cdef int C33 = COV_INDEX[3][3], C34 = COV_INDEX[3][4], C44 = COV_INDEX[4][4]
# the vectorised pass (est_tick_vector) addresses the packed covariance as rows 0..14 in this order
if [C00, C01, C02, C03, C04, C11, C12, C13, C14, C22, C23, C24, C33, C34, C44] != list(range(15)):
    raise ImportError("bms._est_layout.COV_INDEX is not the packed row-major upper triangle")
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


# --- the tick's vectorised pass (C with GCC vector types: EST_W groups per instruction) ---------------
# Every series group on the common path: a new voltage sample, no re-opened variance, no iterated update.
# The pass is the scalar loop of TickKernel._tick with each branch a lane select: the same operations in
# the same order on the same values, so the same bits in the default build (a test runs both on the same
# inputs; with FMA contraction, BMS_MARCH=native, they agree within rounding). What has no vector form is
# done lane by lane inside it: the table look-ups (no gather in SSE2), the rare exp/expm1 (Arrhenius refresh,
# fast hysteresis decay). The sensors' temperature corrections (indirect indices) stay in the scalar loop
# after it; a group that needs the rare paths (re-opened variance, iterated update) or is left over past
# the last full vector gets flag 2 and keeps its state here untouched: the scalar loop does it.
cdef extern from *:
    """
    #include <float.h>
    #include <string.h>
    #if defined(__AVX__)
    #define EST_W 4
    #else
    #define EST_W 2
    #endif
    #if defined(__FMA__)
    #define EST_FMA 1
    #else
    #define EST_FMA 0
    #endif
    typedef double est_vd __attribute__((vector_size(8 * EST_W)));
    typedef long long est_vl __attribute__((vector_size(8 * EST_W)));
    typedef struct {
        double i, ai, sgn, dq, dt_h, a1, a2, b1, b2, w1, w2, i_sign, ai_sign, sig_i, qz_rate, qz_thr, sig_rc,
               qv, qh, qb, v_lo, v_hi, stuck_samples, stuck_v, sig_v2, corr, sig_corr2, sig_model2, gate2,
               gate_abs2, floor_p, band, lp_noise, inv_2band, band_now, m0, m_dyn, soc_k, r0_25, r1_25, r2_25,
               ac, as_, g_cs, g_sc, d_s, inv_det, reopen_n, b_max, sign_c_rate, iekf_dsoc, kelvin, gamma, ea0, ea1,
               ea2, refresh_k, t_ref_k;
        const double *ocv_t, *dudt_t;
        int cur_ok, n_ocv, n_dudt;
    } est_tick_k;
    typedef struct {
        double *x, *P, *hsign, *vsign, *cap, *rscale, *rvar, *f0, *f1, *f2, *t_core, *t_surf, *t_cool, *heat,
               *innov_out, *v_last, *stuck_i, *stuck_n, *gate_n, *volt, *t_arr, *flag;
        unsigned char* valid;
    } est_tick_arrays;

    static inline est_vd est_ld(const double* p) { est_vd v; memcpy(&v, p, sizeof v); return v; }
    static inline void est_st(double* p, est_vd v) { memcpy(p, &v, sizeof v); }
    static inline est_vd est_bc(double a) { est_vd v; for (int l = 0; l < EST_W; l++) v[l] = a; return v; }
    static inline est_vl est_mask(int c) { est_vl v = {0}; return v - (long long)(c != 0); }
    /* m ? a : b lane by lane (m all ones or zero): exactly one of the two values, as the scalar ternary */
    static inline est_vd est_sel(est_vl m, est_vd a, est_vd b) {
        return (est_vd)((est_vl)b ^ (((est_vl)a ^ (est_vl)b) & m));
    }
    static inline int est_any(est_vl m) { long long r = 0; for (int l = 0; l < EST_W; l++) r |= m[l]; return r != 0; }
    static inline int est_all(est_vl m) { long long r = -1; for (int l = 0; l < EST_W; l++) r &= m[l]; return r != 0; }
    /* the Kalman update of the state and the Joseph form of the covariance, and what a group stores: as
       lists, applied plainly when every lane takes them, lane by lane when only some do */
    #define EST_UPDATES(K) K(z, z + K0 * innov) K(v1, v1 + K1 * innov) K(v2, v2 + K2 * innov) \
        K(h, h + K3 * innov) K(b, b + K4 * innov) \
        K(p00, p00 - K0 * u0 - u0 * K0 + S * K0 * K0) K(p01, p01 - K0 * u1 - u0 * K1 + S * K0 * K1) \
        K(p02, p02 - K0 * u2 - u0 * K2 + S * K0 * K2) K(p03, p03 - K0 * u3 - u0 * K3 + S * K0 * K3) \
        K(p04, p04 - K0 * u4 - u0 * K4 + S * K0 * K4) K(p11, p11 - K1 * u1 - u1 * K1 + S * K1 * K1) \
        K(p12, p12 - K1 * u2 - u1 * K2 + S * K1 * K2) K(p13, p13 - K1 * u3 - u1 * K3 + S * K1 * K3) \
        K(p14, p14 - K1 * u4 - u1 * K4 + S * K1 * K4) K(p22, p22 - K2 * u2 - u2 * K2 + S * K2 * K2) \
        K(p23, p23 - K2 * u3 - u2 * K3 + S * K2 * K3) K(p24, p24 - K2 * u4 - u2 * K4 + S * K2 * K4) \
        K(p33, p33 - K3 * u3 - u3 * K3 + S * K3 * K3) K(p34, p34 - K3 * u4 - u3 * K4 + S * K3 * K4) \
        K(p44, p44 - K4 * u4 - u4 * K4 + S * K4 * K4)
    #define EST_SET(var, expr) var = (expr);
    #define EST_SET_APPLY(var, expr) var = est_sel(apply, (expr), var);
    #define EST_STORES(K) K(P + g, est_vmax(p00, floor_p)) K(P + n + g, p01) K(P + 2 * n + g, p02) \
        K(P + 3 * n + g, p03) K(P + 4 * n + g, p04) K(P + 5 * n + g, est_vmax(p11, floor_p)) \
        K(P + 6 * n + g, p12) K(P + 7 * n + g, p13) K(P + 8 * n + g, p14) \
        K(P + 9 * n + g, est_vmax(p22, floor_p)) K(P + 10 * n + g, p23) K(P + 11 * n + g, p24) \
        K(P + 12 * n + g, est_vmax(p33, floor_p)) K(P + 13 * n + g, p34) \
        K(P + 14 * n + g, est_vmax(p44, floor_p)) K(x0 + g, z) K(x1 + g, v1) K(x2 + g, v2) \
        K(x3 + g, h) K(x4 + g, b) K(ap->hsign + g, hs) K(ap->vsign + g, hs) \
        K(ap->stuck_n + g, sn) K(ap->stuck_i + g, si) K(ap->v_last + g, vl) \
        K(ap->gate_n + g, gn) K(ap->heat + g, q_heat) K(ap->t_core + g, tc) K(ap->t_surf + g, ts)
    #define EST_STORE(dst, new) est_st(dst, new);
    /* a kept lane re-reads what it had from memory (not yet overwritten): fewer values live in registers */
    #define EST_STORE_KEEP(dst, new) est_st(dst, est_sel(slow, est_ld(dst), new));
    #if defined(__x86_64__) || defined(__i386__)
    #include <immintrin.h>
    /* MINPD/MAXPD are the scalar ternaries lane by lane (dmin: a < b ? a : b, NaN and signed zeros alike) */
    #if EST_W == 4
    static inline est_vd est_vmin(est_vd a, est_vd b) { return (est_vd)_mm256_min_pd((__m256d)a, (__m256d)b); }
    static inline est_vd est_vmax(est_vd a, est_vd b) { return (est_vd)_mm256_max_pd((__m256d)a, (__m256d)b); }
    #else
    static inline est_vd est_vmin(est_vd a, est_vd b) { return (est_vd)_mm_min_pd((__m128d)a, (__m128d)b); }
    static inline est_vd est_vmax(est_vd a, est_vd b) { return (est_vd)_mm_max_pd((__m128d)a, (__m128d)b); }
    #endif
    #else
    static inline est_vd est_vmin(est_vd a, est_vd b) { return est_sel(a < b, a, b); }   /* dmin */
    static inline est_vd est_vmax(est_vd a, est_vd b) { return est_sel(a > b, a, b); }   /* dmax */
    #endif
    static inline est_vd est_vabs(est_vd a) {   /* fabs: the sign bit cleared */
        est_vl m; for (int l = 0; l < EST_W; l++) m[l] = 0x7fffffffffffffffLL;
        return (est_vd)((est_vl)a & m);
    }

    /* interp_slope lane by lane: the index and the two table values per lane (no gather in SSE2), the rest
       as vectors with the scalar function's operations */
    static inline est_vd est_interp_slope(const double* table, int n, est_vd x, est_vd* slope) {
        est_vd pos = x * (n - 1), lo, hi, fi;
        for (int l = 0; l < EST_W; l++) {
            int i = 0;
            if (pos[l] >= 1.0) i = pos[l] >= n - 2 ? n - 2 : (int)pos[l];
            lo[l] = table[i];
            hi[l] = table[i + 1];
            fi[l] = i;
        }
        est_vd d = hi - lo;
        *slope = d * (n - 1);
        return lo + (pos - fi) * d;
    }

    static int est_tick_vector(int n, const est_tick_k* kp, const est_tick_arrays* ap) {
        const est_tick_k k = *kp;
        double* x0 = ap->x;
        double* x1 = ap->x + n;
        double* x2 = ap->x + 2 * n;
        double* x3 = ap->x + 3 * n;
        double* x4 = ap->x + 4 * n;
        double* P = ap->P;
        const est_vd zero = est_bc(0.0), one = est_bc(1.0), m_one = est_bc(-1.0), floor_p = est_bc(k.floor_p);
        const est_vd sig_rc2 = est_bc(k.sig_rc * k.sig_rc), b_max = est_bc(k.b_max), m_b_max = est_bc(-k.b_max);
        const est_vl pos_sign = est_mask(k.i_sign > 0), neg_sign = est_mask(k.i_sign < 0);
        const est_vl cur_ok = est_mask(k.cur_ok), by_count = est_mask(k.stuck_samples > 0);
        const double i = k.i, ai = k.ai, m0 = k.m0, m_dyn = k.m_dyn;
        int gated = 0, g, l, full = n - n % EST_W;
        for (g = 0; g < full; g += EST_W) {
            const est_vd T = est_ld(ap->t_core + g), ts0 = est_ld(ap->t_surf + g);
            /* temperature factors of the resistances, refreshed where the core estimate moved (exp, rare) */
            est_vl stale = ~(est_vabs(T - est_ld(ap->t_arr + g)) <= k.refresh_k);
            if (est_any(stale)) {
                for (l = 0; l < EST_W; l++) {
                    if (!stale[l]) continue;
                    double xk = 1.0 / (T[l] + k.kelvin) - 1.0 / k.t_ref_k;
                    ap->f0[g + l] = exp(k.ea0 * xk);
                    ap->f1[g + l] = exp(k.ea1 * xk);
                    ap->f2[g + l] = exp(k.ea2 * xk);
                    ap->t_arr[g + l] = T[l];
                }
            }
            const est_vd z0 = est_ld(x0 + g), v10 = est_ld(x1 + g), v20 = est_ld(x2 + g), h0 = est_ld(x3 + g);
            const est_vd b0 = est_ld(x4 + g), capv = est_ld(ap->cap + g), rs = est_ld(ap->rscale + g);
            est_vd z = z0, v1 = v10, v2 = v20, h = h0, b = b0;
            /* predict */
            est_vd sf = (1.0 + k.soc_k * (z - 0.5) * (z - 0.5)) * rs;
            est_vd r0 = k.r0_25 * est_ld(ap->f0 + g) * sf;
            est_vd r1 = k.r1_25 * est_ld(ap->f1 + g) * sf;
            est_vd r2 = k.r2_25 * est_ld(ap->f2 + g) * sf;
            est_vd inv_q = 1.0 / capv;
            est_vd dz = k.dq * inv_q;
            /* one_minus_exp_neg: the series below 1e-3, expm1 lane by lane above (rare) */
            est_vd xo = est_vabs(dz * k.gamma);
            est_vd om = xo * (1.0 - xo * (0.5 - xo * (1.0 / 6.0 - xo * (1.0 / 24.0 - xo * (1.0 / 120.0)))));
            est_vl big = ~(xo < 1e-3);
            if (est_any(big)) for (l = 0; l < EST_W; l++) if (big[l]) om[l] = -expm1(-xo[l]);
            est_vd ah = 1.0 - om;
            z = z - dz;
            h = ah * h - k.sgn * om;
            v1 = k.a1 * v1 + k.b1 * r1 * i;
            v2 = k.a2 * v2 + k.b2 * r2 * i;
            const est_vd hs0 = est_ld(ap->hsign + g);
            est_vd hs = hs0;
            est_vd eps = k.sign_c_rate * capv;
            est_vd p_cross = est_vmin(est_vmax((k.ai_sign - (eps - k.band) - k.lp_noise) * k.inv_2band, zero), one);
            hs = est_sel(pos_sign, est_vmax(hs, 2.0 * p_cross - 1.0),
                         est_sel(neg_sign, est_vmin(hs, 1.0 - 2.0 * p_cross), hs));
            est_vd thr = eps + k.band_now;
            hs = est_sel(est_bc(i) > thr, one, est_sel(est_bc(i) < -thr, m_one, hs));
            est_vd zone = 1.0 - hs * hs;
            const est_vd q00 = est_ld(P + g), q01 = est_ld(P + n + g), q02 = est_ld(P + 2 * n + g);
            const est_vd q03 = est_ld(P + 3 * n + g), q04 = est_ld(P + 4 * n + g), q11 = est_ld(P + 5 * n + g);
            const est_vd q12 = est_ld(P + 6 * n + g), q13 = est_ld(P + 7 * n + g), q14 = est_ld(P + 8 * n + g);
            const est_vd q22 = est_ld(P + 9 * n + g), q23 = est_ld(P + 10 * n + g), q24 = est_ld(P + 11 * n + g);
            const est_vd q33 = est_ld(P + 12 * n + g), q34 = est_ld(P + 13 * n + g), q44 = est_ld(P + 14 * n + g);
            est_vd p00 = q00;
            est_vd p01 = q01 * k.a1;
            est_vd p02 = q02 * k.a2;
            est_vd p03 = q03 * ah;
            est_vd p04 = q04;
            est_vd p11 = q11 * (k.a1 * k.a1);
            est_vd p12 = q12 * (k.a1 * k.a2);
            est_vd p13 = q13 * (k.a1 * ah);
            est_vd p14 = q14 * k.a1;
            est_vd p22 = q22 * (k.a2 * k.a2);
            est_vd p23 = q23 * (k.a2 * ah);
            est_vd p24 = q24 * k.a2;
            est_vd p33 = q33 * (ah * ah);
            est_vd p34 = q34 * ah;
            est_vd p44 = q44;
            p00 = p00 + (k.sig_i * k.dt_h * inv_q) * (k.sig_i * k.dt_h * inv_q) + k.qz_rate + k.qz_thr * est_vabs(dz);
            p11 = p11 + (k.sig_rc * k.w1 * r1 * ai) * (k.sig_rc * k.w1 * r1 * ai) + k.qv;
            p22 = p22 + (k.sig_rc * k.w2 * r2 * ai) * (k.sig_rc * k.w2 * r2 * ai) + k.qv;
            p33 = p33 + k.qh * om;
            p44 = p44 + k.qb;
            est_vd T25 = T - 25.0;
            est_vd dslope, slope;
            est_vd dudt = est_interp_slope(k.dudt_t, k.n_dudt, z, &dslope);
            /* inputs: plausible, not stuck */
            est_vd v = est_ld(ap->volt + g);
            est_vl plausible = (est_vabs(v) <= DBL_MAX) & (v >= k.v_lo) & (v <= k.v_hi);
            const est_vd vl0 = est_ld(ap->v_last + g), sn0 = est_ld(ap->stuck_n + g), si0 = est_ld(ap->stuck_i + g);
            est_vl same = v == vl0;
            est_vd sn = est_sel(same, sn0 + 1.0, zero);
            est_vd si = est_sel(same, si0, est_bc(i));
            est_vd vl = est_sel(same, vl0, v);
            est_vl stuck = same & ((by_count & (sn >= k.stuck_samples)) | (est_vabs(i - si) * r0 >= k.stuck_v));
            est_vl valid = plausible & ~stuck;
            est_vl use = valid & cur_ok;
            /* measurement update (Joseph form), gated */
            est_vd ocv = est_interp_slope(k.ocv_t, k.n_ocv, z, &slope);
            est_vd H0 = slope + T25 * dslope;
            est_vd y_pred = ocv + T25 * dudt + m_dyn * h - m0 * hs - v1 - v2 - r0 * i + b;
            est_vd model = r0 * ai + est_vabs(v1) + est_vabs(v2);
            model = (k.sig_model2 + est_vmin(est_ld(ap->rvar + g) / (rs * rs), sig_rc2)) * model * model;
            est_vd Rm = k.sig_v2 + k.corr * (k.sig_corr2 + model + m0 * m0 * zone);
            est_vd innov = v - y_pred;
            est_vd u0 = p00 * H0 - p01 - p02 + p03 * m_dyn + p04;
            est_vd u1 = p01 * H0 - p11 - p12 + p13 * m_dyn + p14;
            est_vd u2 = p02 * H0 - p12 - p22 + p23 * m_dyn + p24;
            est_vd u3 = p03 * H0 - p13 - p23 + p33 * m_dyn + p34;
            est_vd u4 = p04 * H0 - p14 - p24 + p34 * m_dyn + p44;
            est_vd S = H0 * u0 - u1 - u2 + m_dyn * u3 + u4 + Rm;
            est_vl gate = innov * innov > k.gate2 * S + k.gate_abs2;
            const est_vd gn0 = est_ld(ap->gate_n + g);
            est_vd gn = est_sel(use, est_sel(gate, gn0 + 1.0, zero), gn0);
            est_vl reopen = use & gate & (gn >= k.reopen_n);
            est_vl apply = use & ~gate;
            est_vl slow = reopen | (apply & (est_vabs(u0 / S * innov) > k.iekf_dsoc));
            apply = apply & ~slow;
            est_vl now_gated = use & gate & ~reopen;
            for (l = 0; l < EST_W; l++) gated += now_gated[l] != 0;
            est_vd inv_s = 1.0 / S;
            est_vd K0 = u0 * inv_s, K1 = u1 * inv_s, K2 = u2 * inv_s, K3 = u3 * inv_s, K4 = u4 * inv_s;
            if (est_all(apply)) {
                EST_UPDATES(EST_SET)
            } else if (est_any(apply)) {
                EST_UPDATES(EST_SET_APPLY)
            }
            z = est_vmin(est_vmax(z, zero), one);
            h = est_vmin(est_vmax(h, m_one), one);
            b = est_vmin(est_vmax(b, m_b_max), b_max);
            /* heat per cell; thermal observer: backward Euler on (core, surface), coolant held */
            est_vd q_heat = i * (v1 + v2 + r0 * i - (m_dyn * h - m0 * hs)) - i * (T + k.kelvin) * dudt;
            est_vd rhs_c = k.ac * T + q_heat;
            est_vd rhs_s = k.as_ * ts0 + k.g_sc * est_ld(ap->t_cool + g);
            est_vd tc = (rhs_c * k.d_s + k.g_cs * rhs_s) * k.inv_det;
            est_vd ts = (k.g_cs * rhs_c + (k.ac + k.g_cs) * rhs_s) * k.inv_det;
            /* a group for the scalar loop keeps everything it had */
            if (est_any(slow)) {
                EST_STORES(EST_STORE_KEEP)
            } else {
                EST_STORES(EST_STORE)
            }
            est_st(ap->innov_out + g, est_sel(apply, innov, est_ld(ap->innov_out + g)));
            est_st(ap->flag + g, est_sel(slow, est_bc(2.0), est_sel(valid, one, zero)));
            for (l = 0; l < EST_W; l++) if (!slow[l]) ap->valid[g + l] = valid[l] != 0;
        }
        for (g = full; g < n; g++) ap->flag[g] = 2.0;
        return gated;
    }
    """
    int EST_W, EST_FMA
    ctypedef struct est_tick_k:
        double i, ai, sgn, dq, dt_h, a1, a2, b1, b2, w1, w2, i_sign, ai_sign, sig_i, qz_rate, qz_thr, sig_rc
        double qv, qh, qb, v_lo, v_hi, stuck_samples, stuck_v, sig_v2, corr, sig_corr2, sig_model2, gate2
        double gate_abs2, floor_p, band, lp_noise, inv_2band, band_now, m0, m_dyn, soc_k, r0_25, r1_25, r2_25
        double ac, as_, g_cs, g_sc, d_s, inv_det, reopen_n, b_max, sign_c_rate, iekf_dsoc, kelvin, gamma, ea0, ea1
        double ea2, refresh_k, t_ref_k
        const double* ocv_t
        const double* dudt_t
        int cur_ok, n_ocv, n_dudt
    ctypedef struct est_tick_arrays:
        double* x
        double* P
        double* hsign
        double* vsign
        double* cap
        double* rscale
        double* rvar
        double* f0
        double* f1
        double* f2
        double* t_core
        double* t_surf
        double* t_cool
        double* heat
        double* innov_out
        double* v_last
        double* stuck_i
        double* stuck_n
        double* gate_n
        double* volt
        double* t_arr
        double* flag
        unsigned char* valid
    int est_tick_vector(int n, const est_tick_k* k, const est_tick_arrays* a) noexcept nogil

# groups per vector instruction of the tick's vectorised pass, and whether it contracts a * b + c (FMA)
VECTOR_WIDTH = EST_W
FMA_CONTRACTION = bool(EST_FMA)


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
    cdef double* rvar_t
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
    # each group's flag from the vectorised pass (read by the scalar loop after it), the pass's pointers
    cdef double* s_flag
    cdef est_tick_arrays arrays
    # False: every group through the scalar loop (the reference the vectorised pass must equal; tests)
    cdef public bint vectorise

    def __init__(self, state, cell, pack, cell_voltage_V, temperature_C):
        import numpy as np
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
        self.rvar_t = dptr(s.resistance_var, n, "resistance_var", owners)
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
        self.s_flag = dptr(np.zeros(n), n, "scratch", owners)
        cdef est_tick_arrays* a = &self.arrays
        a.x, a.P, a.hsign, a.vsign, a.cap, a.rscale = self.x, self.cov, self.hsign, self.vsign, self.cap, self.rscale
        a.rvar, a.f0, a.f1, a.f2, a.t_core, a.t_surf = self.rvar_t, self.f0, self.f1, self.f2, self.t_core, self.t_surf
        a.t_cool, a.heat, a.innov_out, a.v_last, a.stuck_i = self.t_cool, self.heat, self.innov_out, self.v_last, \
            self.stuck_i
        a.stuck_n, a.gate_n, a.volt, a.t_arr = self.stuck_n, self.gate_n, self.volt, self.t_arr
        a.flag, a.valid = self.s_flag, self.valid
        self.vectorise = True
        self._owners = owners
        cdef int g
        for g in range(n):
            if not (-1 <= self.group_sensor[g] < nt and 0 <= self.ia[g] < n and 0 <= self.ib[g] < n):
                raise InputError("sensor layout", "sensor and group indices in range", g)

    def vector_flags(self):
        """Each group's flag from the last vectorised pass: 1 valid, 0 invalid, 2 left to the scalar loop."""
        import numpy as np
        return np.array([self.s_flag[g] for g in range(self.n)])

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
        cdef double* rvar = self.rvar_t
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
        cdef double sig_model2 = tu[TU_SIG_MODEL] * tu[TU_SIG_MODEL], gate2 = tu[TU_GATE] * tu[TU_GATE]
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

        # on the common path (a new voltage sample) the groups run through the vectorised pass; the scalar
        # loop below then only does what that pass cannot: the sensor groups' temperature corrections and the
        # rare paths of the flagged groups (flag 2)
        cdef bint vec = new_v and self.vectorise
        cdef double* flag = self.s_flag
        cdef est_tick_k kc
        if vec:
            kc.i, kc.ai, kc.sgn, kc.dq, kc.dt_h, kc.a1, kc.a2, kc.b1, kc.b2 = i, ai, sgn, dq, dt_h, a1, a2, b1, b2
            kc.w1, kc.w2, kc.i_sign, kc.ai_sign, kc.sig_i, kc.qz_rate = w1, w2, i_sign, ai_sign, sig_i, qz_rate
            kc.qz_thr, kc.sig_rc, kc.qv, kc.qh, kc.qb, kc.v_lo, kc.v_hi = qz_thr, sig_rc, qv, qh, qb, v_lo, v_hi
            kc.stuck_samples, kc.stuck_v, kc.sig_v2, kc.corr = stuck_samples, stuck_v, sig_v2, corr
            kc.sig_corr2, kc.sig_model2, kc.gate2, kc.gate_abs2 = sig_corr2, sig_model2, gate2, gate_abs2
            kc.floor_p, kc.band, kc.lp_noise, kc.inv_2band, kc.band_now = floor_p, band, lp_noise, inv_2band, band_now
            kc.m0, kc.m_dyn, kc.soc_k, kc.r0_25, kc.r1_25, kc.r2_25 = m0, m_dyn, soc_k, r0_25, r1_25, r2_25
            kc.ac, kc.as_, kc.g_cs, kc.g_sc, kc.d_s, kc.inv_det = ac, as_, g_cs, g_sc, d_s, inv_det
            kc.reopen_n, kc.b_max, kc.sign_c_rate, kc.iekf_dsoc = reopen_n, b_max, SIGN_C_RATE, IEKF_DSOC
            kc.kelvin, kc.cur_ok = KELVIN, cur_ok
            kc.gamma, kc.ea0, kc.ea1, kc.ea2, kc.refresh_k, kc.t_ref_k = gamma, ea0, ea1, ea2, REFRESH_K, T_REF_K
            kc.ocv_t, kc.n_ocv, kc.dudt_t, kc.n_dudt = ocv_t, n_ocv, dudt_t, n_dudt
            gated = est_tick_vector(n, &kc, &self.arrays)

        for g in range(n):
            if vec and flag[g] != 2.0:
                if not (new_t and group_sensor[g] >= 0):
                    continue  # nothing left to do for this group
                tc = t_core[g]
                ts = t_surf[g]
            else:
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
                # the plant reports the voltage at the end of the tick, with the sign this tick's current left
                hs = hsign[g]
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
                        # the overpotential is off by the model's error and by what the resistance tracker does
                        # not know yet (its relative variance; see the twin)
                        model = r0 * ai + fabs(v1) + fabs(v2)
                        model = (sig_model2 + dmin(rvar[g] / (rscale[g] * rscale[g]), sig_rc * sig_rc)) * model * model
                        Rm = sig_v2 + corr * (sig_corr2 + model + m0 * m0 * zone)
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
        # near the sign threshold the plant's instantaneous-hysteresis sign may flip at another tick than the
        # estimate's: a voltage step across such a tick holds up to 2 M0 that is no resistance (see the twin)
        cdef double eps_lo = 0.9 * SIGN_C_RATE * c.cap_rated - band_now
        cdef double eps_hi = 1.1 * SIGN_C_RATE * c.cap_rated + band_now
        sc[S_SIGN_ZONE_NOW] = 1.0 if ((eps_lo <= ai <= eps_hi) or (eps_lo <= ai_sign <= eps_hi)) else 0.0
        sc[S_ACC_SIGN_ZONE] = dmax(sc[S_ACC_SIGN_ZONE], sc[S_SIGN_ZONE_NOW])
        sc[S_TICKS] = sc[S_TICKS] + 1.0


cdef extern from *:
    """
    /* The state-of-power search's per-group functions on EST_W groups at once: SlowKernel._v_dir and the proof
       of _positive_up_to with the scalar code's operations in its order (the same bits lane by lane, no FMA
       in the default builds); the lookups and exp() lane by lane. */
    typedef struct {
        const double *z, *v1, *v2, *h, *t_core, *rvar, *rscale, *f0, *f1, *f2, *cap, *ocv, *dudt;
        int n_ocv, n_dudt, provable;
        double soc_k, r0_25, r1_25, r2_25, ea0, ea1, ea2, gamma, m_dyn, m0, kelvin, r_k, r_sigma, heat_j_per_k,
               temp_fraction, max_rise, e1, e2, g1, g2, horizon, direction, sgn, kq_num, target, margin_v;
    } est_sop_k;

    static inline est_vd est_interp_value(const double* table, int n, est_vd x) {   /* interp_uniform */
        est_vd unused;
        return est_interp_slope(table, n, x, &unused);
    }
    static inline est_vd est_exp_rise(est_vd y) {   /* exp_rise */
        est_vd u = 0.125 * y;
        est_vd p = 1.0 + u * (1.0 + u * (0.5 + u * (1.0 / 6.0 + u * (1.0 / 24.0))));
        p = p * p;
        p = p * p;
        return p * p;
    }
    static inline est_vd est_vsqrt(est_vd a) {
    #if (defined(__x86_64__) || defined(__i386__)) && EST_W == 4
        return (est_vd)_mm256_sqrt_pd((__m256d)a);
    #elif defined(__x86_64__) || defined(__i386__)
        return (est_vd)_mm_sqrt_pd((__m128d)a);
    #else
        for (int l = 0; l < EST_W; l++) a[l] = sqrt(a[l]);
        return a;
    #endif
    }
    static inline est_vd est_sop_sf(const est_sop_k* k, int g, est_vd z) {
        est_vd margin = 1.0 + k->r_k * est_vmin(est_vsqrt(est_ld(k->rvar + g)), est_bc(k->r_sigma));
        return (1.0 + k->soc_k * (z - 0.5) * (z - 0.5)) * est_ld(k->rscale + g) * margin;
    }
    /* _v_dir of groups g .. g + EST_W - 1 at the current direction * m; monotone (heated only) as a mask */
    static est_vd est_sop_v_end(const est_sop_k* k, int g, est_vd m, int heated, est_vl* monotone) {
        est_vd i = k->direction * m;
        est_vd z = est_ld(k->z + g), v1 = est_ld(k->v1 + g), v2 = est_ld(k->v2 + g), h = est_ld(k->h + g);
        est_vd T = est_ld(k->t_core + g);
        est_vd sf = est_sop_sf(k, g, z);
        est_vd f0 = est_ld(k->f0 + g), f1 = est_ld(k->f1 + g), f2 = est_ld(k->f2 + g);
        if (heated) {
            est_vd r_h = (k->r0_25 * f0 * k->horizon + k->r1_25 * f1 * k->g1 + k->r2_25 * f2 * k->g2) * sf;
            est_vd rise = est_vmin(i * i * r_h / k->heat_j_per_k, est_bc(k->max_rise));
            est_vd t_end = T + rise, t_rc = T + k->temp_fraction * rise;
            est_vd x_end = 1.0 / (t_end + k->kelvin) - 1.0 / (T + k->kelvin);
            est_vd x_rc = 1.0 / (t_rc + k->kelvin) - 1.0 / (T + k->kelvin);
            est_vd tk2 = (T + k->kelvin) * (T + k->kelvin);
            *monotone = (2.0 * k->ea0 * rise <= tk2) & (2.0 * k->ea1 * k->temp_fraction * rise <= tk2)
                & (2.0 * k->ea2 * k->temp_fraction * rise <= tk2) & (k->ea0 * x_end >= -8.0)
                & (k->ea1 * x_rc >= -8.0) & (k->ea2 * x_rc >= -8.0);
            f0 = f0 * est_exp_rise(k->ea0 * x_end);
            f1 = f1 * est_exp_rise(k->ea1 * x_rc);
            f2 = f2 * est_exp_rise(k->ea2 * x_rc);
        }
        est_vd r0 = k->r0_25 * f0 * sf, r1 = k->r1_25 * f1 * sf, r2 = k->r2_25 * f2 * sf;
        est_vd kq = k->kq_num / est_ld(k->cap + g);
        est_vd arg = -k->gamma * m * kq, decay;
        for (int l = 0; l < EST_W; l++) decay[l] = exp(arg[l]);
        est_vd h_end = h * decay - k->sgn * (1.0 - decay);
        return (est_interp_value(k->ocv, k->n_ocv, z - i * kq) + (T - 25.0) * est_interp_value(k->dudt, k->n_dudt, z)
                + k->m_dyn * h_end - k->m0 * k->sgn
                - (k->e1 * v1 + (1.0 - k->e1) * r1 * i) - (k->e2 * v2 + (1.0 - k->e2) * r2 * i) - r0 * i);
    }
    /* _positive_up_to(g + lane, grid index of a) lane by lane, as a bit mask */
    static int est_sop_positive(const est_sop_k* k, int g, double a, int heated) {
        if (!k->provable) return 0;
        est_vd z = est_ld(k->z + g), h = est_ld(k->h + g), T = est_ld(k->t_core + g);
        est_vd sf = est_sop_sf(k, g, z);
        est_vl pre = (est_ld(k->cap + g) > 0.0) & (sf > 0.0) & (h >= -1.0) & (h <= 1.0) & (T + k->kelvin > 0.0)
            & (est_ld(k->f0 + g) >= 0.0) & (est_ld(k->f1 + g) >= 0.0) & (est_ld(k->f2 + g) >= 0.0)
            & (est_vabs(est_ld(k->v1 + g)) <= DBL_MAX) & (est_vabs(est_ld(k->v2 + g)) <= DBL_MAX)
            & (est_vabs(z) <= DBL_MAX);
        if (!est_any(pre)) return 0;
        est_vl proven = est_mask(0), monotone;
        if (heated) {
            est_vd v = est_sop_v_end(k, g, est_bc(a), 1, &monotone);
            proven = pre & (k->direction * (v - k->target) > k->margin_v) & monotone;
        }
        est_vl open = pre & ~proven;
        if (est_any(open))
            proven = proven | (open & (k->direction * (est_sop_v_end(k, g, est_bc(a), 0, &monotone) - k->target)
                                       > k->margin_v));
        int bits = 0;
        for (int l = 0; l < EST_W; l++) if (proven[l]) bits |= 1 << l;
        return bits;
    }
    /* the sum over groups 0 .. full - 1 of _v_dir (unheated) at direction * m, added in group order */
    static double est_sop_v_sum(const est_sop_k* k, int full, double m) {
        double total = 0.0;
        est_vl unused;
        for (int g = 0; g < full; g += EST_W) {
            est_vd v = est_sop_v_end(k, g, est_bc(m), 0, &unused);
            for (int l = 0; l < EST_W; l++) total = total + v[l];
        }
        return total;
    }
    """
    ctypedef struct est_sop_k:
        const double* z
        const double* v1
        const double* v2
        const double* h
        const double* t_core
        const double* rvar
        const double* rscale
        const double* f0
        const double* f1
        const double* f2
        const double* cap
        const double* ocv
        const double* dudt
        int n_ocv, n_dudt, provable
        double soc_k, r0_25, r1_25, r2_25, ea0, ea1, ea2, gamma, m_dyn, m0, kelvin, r_k, r_sigma, heat_j_per_k
        double temp_fraction, max_rise, e1, e2, g1, g2, horizon, direction, sgn, kq_num, target, margin_v
    int est_sop_positive(const est_sop_k* k, int g, double a, int heated) noexcept nogil
    double est_sop_v_sum(const est_sop_k* k, int full, double m) noexcept nogil


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
    cdef double* rate_dis
    cdef double* rate_chg
    cdef double e1h, e2h, g1h, g2h
    # the parameters keep every group's f(m) non-increasing (see _positive_up_to)
    cdef bint sop_provable
    # False: solve every group (the brute force the search must equal; tests)
    cdef public bint sop_prune
    # the vector pass's view of one direction and horizon, and its last block of proofs (first group, grid
    # index, one bit per group proven)
    cdef est_sop_k sk
    cdef int blk_g, blk_k, blk_bits

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
        self.rate_dis = dptr(np.zeros(n), n, "scratch", owners)
        self.rate_chg = dptr(np.zeros(n), n, "scratch", owners)
        ocv = np.array(cell.ocv_V, dtype=np.float64)
        cc = self.c
        self.sop_provable = bool(np.all(np.diff(ocv) >= 0)) and min(
            cc.m_dyn, cc.gamma, cc.r0_25, cc.r1_25, cc.r2_25, cc.ea0, cc.ea1, cc.ea2) >= 0 and min(
            cc.ce, cc.tau1, cc.tau2) > 0
        self.sop_prune = True
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
        cdef bint prev_ok = (sc[S_SLOW_PREV_SET] > 0 and fabs(i_now - sc[S_SLOW_PREV_I]) >= tu[TU_R_MIN_DI]
                             and sc[S_ACC_SIGN_ZONE] == 0)
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
        sc[S_ACC_SIGN_ZONE] = sc[S_SIGN_ZONE_NOW]  # this sample starts the next step

    # --- state of power ---------------------------------------------------------------------------
    # A group's model limit is the current magnitude m >= 0 at which its end voltage reaches the limit,
    # f(m) = d (V(d m) - target) = 0, found by bisection on the grid m_k = cap k / 2^SOP_BISECTIONS (see the
    # twin: a function of the group's state alone). Only the groups that can limit are solved: a group is
    # skipped when f > 0 is proven on all of [0, a] (a = the best solution so far, or the grid point above
    # it where the group would win a tie), because then no bisection step of its own can land in [0, a]
    # and its solution is >= a. The proof (_positive_up_to) is one evaluation at a: f is non-increasing in
    # m when the OCV table is non-decreasing, the hysteresis and resistances are >= 0 (parameters), the
    # state is in range (per group) and each heated resistive drop R_k(m) m is non-decreasing on [0, a];
    # the latter holds when 2 Ea_k phi_k rise(a) <= T_K^2 (d/dm [m P(y(m))] >= 0 with P'/P <= 1 for the
    # series exp_rise). Where that fails, the unheated f bounds the heated one from below (heating lowers
    # every resistance: P <= 1) and is itself non-increasing. SOP_PROOF_MARGIN_V covers rounding.
    cdef double _v_dir(self, int g, double m, double direction, double horizon, bint heated,
                       bint* monotone) noexcept nogil:
        """End voltage of group g's cell after ``horizon`` at the constant cell current ``direction * m``
        (m >= 0), with the hysteresis sign and charge efficiency of ``direction`` also at m = 0.
        ``monotone`` (may be NULL): whether every heated resistive drop is non-decreasing on [0, m]."""
        cdef CellC* c = &self.c
        cdef int n = self.n
        cdef double i = direction * m
        cdef double z = self.x[g], v1 = self.x[n + g], v2 = self.x[2 * n + g], h = self.x[3 * n + g]
        cdef double T = self.t_core[g]
        # each group's resistance with a margin for what the tracker does not know (cell spread)
        cdef double margin = 1.0 + self.tu[TU_SOP_R_K] * dmin(sqrt(self.rvar[g]), self.tu[TU_SOP_R_SIGMA])
        cdef double sf = (1.0 + c.soc_k * (z - 0.5) * (z - 0.5)) * self.rscale[g] * margin
        cdef double f0 = self.f0[g], f1 = self.f1[g], f2 = self.f2[g]
        cdef double r_h, rise, t_end, t_rc, x_end, x_rc, tk2, frac
        if heated:
            # heat over the horizon at constant current from rest: R0 all along, the RC pairs as they charge
            r_h = (c.r0_25 * f0 * horizon + c.r1_25 * f1 * self.g1h + c.r2_25 * f2 * self.g2h) * sf
            rise = dmin(i * i * r_h / self.tu[TU_SOP_HEAT_J_PER_K], MAX_RISE_K)
            frac = self.tu[TU_SOP_TEMP_FRACTION]
            t_end = T + rise
            t_rc = T + frac * rise
            x_end = 1.0 / (t_end + KELVIN) - 1.0 / (T + KELVIN)
            x_rc = 1.0 / (t_rc + KELVIN) - 1.0 / (T + KELVIN)
            if monotone != NULL:
                tk2 = (T + KELVIN) * (T + KELVIN)
                monotone[0] = (2.0 * c.ea0 * rise <= tk2 and 2.0 * c.ea1 * frac * rise <= tk2
                               and 2.0 * c.ea2 * frac * rise <= tk2 and c.ea0 * x_end >= -8.0
                               and c.ea1 * x_rc >= -8.0 and c.ea2 * x_rc >= -8.0)
            f0 = f0 * exp_rise(c.ea0 * x_end)
            f1 = f1 * exp_rise(c.ea1 * x_rc)
            f2 = f2 * exp_rise(c.ea2 * x_rc)
        elif monotone != NULL:
            monotone[0] = True
        cdef double r0 = c.r0_25 * f0 * sf, r1 = c.r1_25 * f1 * sf, r2 = c.r2_25 * f2 * sf
        cdef double e1 = self.e1h, e2 = self.e2h  # exp(-horizon / tau), set by _power per horizon
        cdef double kq = (c.ce if direction < 0 else 1.0) * horizon / 3600.0 / self.cap[g]
        cdef double sgn = -1.0 if direction < 0 else 1.0
        cdef double decay = exp(-c.gamma * m * kq)
        cdef double h_end = h * decay - sgn * (1.0 - decay)
        return (interp_uniform(c.ocv, c.n_ocv, z - i * kq) + (T - 25.0) * interp_uniform(c.dudt, c.n_dudt, z)
                + c.m_dyn * h_end - c.m0 * sgn
                - (e1 * v1 + (1.0 - e1) * r1 * i) - (e2 * v2 + (1.0 - e2) * r2 * i) - r0 * i)

    cdef inline double _grid(self, int k) noexcept nogil:
        return (20.0 * self.c.cap_rated) * (k * SOP_GRID_STEP)

    cdef int _solve(self, int g, double direction, double horizon, bint heated) noexcept nogil:
        """Group g's model limit as a grid index k (current ``_grid(k)``): 0 when the group is at its limit
        already, the top of the grid (20C) when it never gets there, else the bisection's last k with f > 0."""
        cdef double target = self.c.v_min if direction > 0 else self.c.v_max
        cdef int lo = 0, hi = SOP_GRID_TOP, mid
        if not direction * (self._v_dir(g, 0.0, direction, horizon, heated, NULL) - target) > 0:
            return 0
        if direction * (self._v_dir(g, self._grid(hi), direction, horizon, heated, NULL) - target) > 0:
            return hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if direction * (self._v_dir(g, self._grid(mid), direction, horizon, heated, NULL) - target) > 0:
                lo = mid
            else:
                hi = mid
        return lo

    cdef bint _positive_up_to(self, int g, int k, double direction, double horizon, bint heated) noexcept nogil:
        """True when f > 0 is proven on all of [0, _grid(k)] for group g (then its solution is >= k)."""
        cdef CellC* c = &self.c
        cdef int n = self.n
        cdef double z = self.x[g], h = self.x[3 * n + g], T = self.t_core[g]
        cdef double target = c.v_min if direction > 0 else c.v_max, a = self._grid(k)
        cdef double margin = 1.0 + self.tu[TU_SOP_R_K] * dmin(sqrt(self.rvar[g]), self.tu[TU_SOP_R_SIGMA])
        cdef double sf = (1.0 + c.soc_k * (z - 0.5) * (z - 0.5)) * self.rscale[g] * margin
        cdef bint monotone
        # the state must keep f non-increasing: capacity and resistance factors > 0, hysteresis in [-1, 1]
        if not (self.sop_provable and self.tu[TU_SOP_HEAT_J_PER_K] > 0 and self.tu[TU_SOP_TEMP_FRACTION] >= 0
                and self.cap[g] > 0 and sf > 0 and -1.0 <= h <= 1.0 and T + KELVIN > 0
                and self.f0[g] >= 0 and self.f1[g] >= 0 and self.f2[g] >= 0 and isfinite(self.x[n + g])
                and isfinite(self.x[2 * n + g]) and isfinite(z)):
            return False
        if heated:
            if direction * (self._v_dir(g, a, direction, horizon, True, &monotone) - target) > SOP_PROOF_MARGIN_V \
                    and monotone:
                return True
        return direction * (self._v_dir(g, a, direction, horizon, False, NULL) - target) > SOP_PROOF_MARGIN_V

    cdef void _sop_setup(self, double direction, double horizon) noexcept nogil:
        """The vector pass's constants for one direction and horizon (after _power set e1h ... g2h)."""
        cdef CellC* c = &self.c
        cdef est_sop_k* k = &self.sk
        cdef int n = self.n
        k.z, k.v1, k.v2, k.h = self.x, self.x + n, self.x + 2 * n, self.x + 3 * n
        k.t_core, k.rvar, k.rscale, k.cap = self.t_core, self.rvar, self.rscale, self.cap
        k.f0, k.f1, k.f2, k.ocv, k.dudt, k.n_ocv, k.n_dudt = self.f0, self.f1, self.f2, c.ocv, c.dudt, c.n_ocv, c.n_dudt
        k.provable = self.sop_provable and self.tu[TU_SOP_HEAT_J_PER_K] > 0 and self.tu[TU_SOP_TEMP_FRACTION] >= 0
        k.soc_k, k.r0_25, k.r1_25, k.r2_25 = c.soc_k, c.r0_25, c.r1_25, c.r2_25
        k.ea0, k.ea1, k.ea2, k.gamma, k.m_dyn, k.m0, k.kelvin = c.ea0, c.ea1, c.ea2, c.gamma, c.m_dyn, c.m0, KELVIN
        k.r_k, k.r_sigma = self.tu[TU_SOP_R_K], self.tu[TU_SOP_R_SIGMA]
        k.heat_j_per_k, k.temp_fraction = self.tu[TU_SOP_HEAT_J_PER_K], self.tu[TU_SOP_TEMP_FRACTION]
        k.max_rise, k.e1, k.e2, k.g1, k.g2, k.horizon = MAX_RISE_K, self.e1h, self.e2h, self.g1h, self.g2h, horizon
        k.direction, k.sgn = direction, (-1.0 if direction < 0 else 1.0)
        k.kq_num = (c.ce if direction < 0 else 1.0) * horizon / 3600.0
        k.target, k.margin_v = (c.v_min if direction > 0 else c.v_max), SOP_PROOF_MARGIN_V
        self.blk_g, self.blk_k, self.blk_bits = -EST_W, -1, 0

    cdef bint _proven(self, int g, int k, double direction, double horizon, bint heated) noexcept nogil:
        """_positive_up_to(g, k) from a block of EST_W proofs at once. A proof at a grid index >= k holds at k
        (f > 0 on a larger [0, a]); the block is proven anew when that does not answer."""
        cdef int lane = g - self.blk_g
        if 0 <= lane < EST_W:
            if (self.blk_bits >> lane) & 1 and self.blk_k >= k:
                return True
            if not (self.blk_bits >> lane) & 1 and self.blk_k == k:
                return False
        if g + EST_W > self.n:
            return self._positive_up_to(g, k, direction, horizon, heated)
        self.blk_g, self.blk_k = g, k
        self.blk_bits = est_sop_positive(&self.sk, g, self._grid(k), heated)
        return self.blk_bits & 1

    cdef int _limiting_group(self, double direction, double horizon, bint heated, int candidate,
                             int* k_best) noexcept nogil:
        """The group with the smallest solution (the first on ties) and that solution's grid index, solving
        the candidate (the last limiting group) and then only the groups not proven to lie above."""
        cdef int n = self.n, g, k, best = candidate, kb
        self._sop_setup(direction, horizon)
        kb = self._solve(candidate, direction, horizon, heated) if self.sop_prune else SOP_GRID_TOP + 1
        if not self.sop_prune:
            best = n
        for g in range(n):
            if g == candidate and self.sop_prune:
                continue
            if self.sop_prune:
                if g > best:
                    # must lie strictly below: skipped when proven >= the best
                    if kb == 0 or self._proven(g, kb, direction, horizon, heated):
                        continue
                elif kb == SOP_GRID_TOP:
                    # wins the tie at the top of the grid when proven to reach it
                    if self._proven(g, kb, direction, horizon, heated):
                        best = g
                        continue
                elif self._proven(g, kb + 1, direction, horizon, heated):
                    continue  # proven above the best, where a tie would have made it the best
            k = self._solve(g, direction, horizon, heated)
            if k < kb or (k == kb and g < best):
                kb, best = k, g
        k_best[0] = kb
        return best

    cdef void _power(self) noexcept nogil:
        cdef CellC* c = &self.c
        cdef int n = self.n, g, hz, group, kb, last
        cdef double* sop = self.sop
        cdef double t_lo, t_hi, hot, taper, chg, ccd, z, horizon, dis_c, direction, limit, model, rmin
        cdef double v_sum
        cdef int refine = <int>self.tu[TU_SOP_REFINE]
        cdef bint heated = refine > 0
        cdef int i_tot, i_mod, i_grp, i_pow, d, h_first = 0, h_last = NH, full
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
            for d in range(2):
                if d == 0:
                    direction, i_tot, i_mod, i_grp, i_pow = 1.0, SOP_DISCHARGE_A, SOP_DISCHARGE_MODEL_A, \
                        SOP_DISCHARGE_GROUP, SOP_DISCHARGE_W
                else:
                    direction, i_tot, i_mod, i_grp, i_pow = -1.0, SOP_CHARGE_A, SOP_CHARGE_MODEL_A, \
                        SOP_CHARGE_GROUP, SOP_CHARGE_W
                last = <int>sop[i_grp * NH + hz] if 0 <= sop[i_grp * NH + hz] < n else 0
                group = self._limiting_group(direction, horizon, heated, last, &kb)
                model = self._grid(kb)
                rmin = self.rate_dis[0] if d == 0 else self.rate_chg[0]
                for g in range(n):
                    if d == 0:
                        rmin = dmin(rmin, self.rate_dis[g])
                    else:
                        rmin = dmin(rmin, self.rate_chg[g])
                limit = dmin(model, rmin)
                full = n - n % EST_W   # the vector pass (set up by _limiting_group), then the groups left over
                v_sum = est_sop_v_sum(&self.sk, full, limit)
                for g in range(full, n):
                    v_sum = v_sum + self._v_dir(g, limit, direction, horizon, False, NULL)
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
