# The pack's physics, stepped for all cells at once. Readable specification: bms/_twin/plant.py.
#
# Per cell: OCV(SOC) + entropic term, R0 and two RC pairs, Plett hysteresis, Arrhenius and SOC factors on
# every resistance, per-cell multipliers (spread, stack pressure), optional internal short.
# Per series group: the group current splits among parallel cells by solving the group's linear circuit
# exactly for the step (current held constant over the step), with the balancing bleed as a load.
# Pack: series string, contactors and a DC-link capacitor integrated exactly over the step.
# Thermal: core and surface node per cell, backward Euler, neighbours along the stack explicit.
# Reported: states and terminal voltages at the end of the step, formed from the end-of-step state (SOC,
# RC voltages, hysteresis, temperature) with the current the cells carry through the step; currents and
# heat as the step's means (see bms.plant.PlantState).
#
# Layout for speed: each pass is a flat loop over cells (structure of arrays, selects instead of branches, no
# calls, restrict pointers), which gcc vectorises; the few per-group sums run in loops of their own, in the
# order the twin sums. What the end of a step computes for the terminal voltage (the SOC factor of the
# resistances, OCV with its entropic term, the entropic slope) is what the next step needs at its start: it
# is kept with the SOC and core temperature it was computed from, and recomputed only where those changed
# (an outside write to the state). Rare work (Arrhenius exponentials, expm1 of a large hysteresis rate, a new
# capacity) runs in scalar fix-up loops only when a flag says some cell needs it. Results are the same bits
# as the straightforward form (twin: bms/_twin/plant.py).
from libc.math cimport INFINITY, exp, expm1, fabs, fmax, fmin, isfinite

from bms._layout import (ARRHENIUS_MAX_C, ARRHENIUS_MIN_C, ARRHENIUS_REFRESH_K, HYSTERESIS_SIGN_C_RATE,
                         LINK_VOLTAGE, PACK_VOLTAGE,
                         PACK_CURRENT, PACK_CURRENT_PEAK, N_SCALARS, MAIN_POSITIVE, MAIN_NEGATIVE, PRECHARGE)
from bms.errors import InputError

include "binding.pxi"

cdef extern from *:
    # restrict-qualified pointers: the passes' arrays never overlap, which lets gcc vectorise without
    # run-time alias checks (Cython has no restrict keyword; the C spelling is given as the type's name)
    ctypedef double* dp "double * __restrict__"
    ctypedef double* cdp "const double * __restrict__"

cdef double KELVIN = 273.15
cdef double T_REF_K = 298.15
cdef double R_GAS = 8.314462618
cdef double REFRESH_K = ARRHENIUS_REFRESH_K, T_MIN_C = ARRHENIUS_MIN_C, T_MAX_C = ARRHENIUS_MAX_C
cdef double SIGN_C_RATE = HYSTERESIS_SIGN_C_RATE
cdef int I_LINK = LINK_VOLTAGE, I_PACK_V = PACK_VOLTAGE, I_CURRENT = PACK_CURRENT
cdef int I_PEAK = PACK_CURRENT_PEAK, C_POS = MAIN_POSITIVE, C_NEG = MAIN_NEGATIVE, C_PRE = PRECHARGE


cdef inline double interp_uniform(const double* table, const double* slope, double scale, double last,
                                  double x) noexcept nogil:
    """Piecewise-linear table on a uniform grid over [0, 1] (``scale`` = points - 1, ``last`` = points - 2,
    ``slope[i]`` = ``table[i + 1] - table[i]``); linear extrapolation outside."""
    cdef double pos = x * scale
    cdef Py_ssize_t i = 0
    if pos >= 1.0:  # truncation is floor here; avoids a libm call per lookup (the branch is predictable)
        i = <Py_ssize_t>last if pos >= last else <Py_ssize_t>pos
    return table[i] + (pos - i) * slope[i]


cdef inline double taylor_one_minus_exp_neg(double x) noexcept nogil:
    """1 - exp(-x) for 0 <= x < 1e-3: Taylor series to x^5 (error < x^6/720), multiplications only."""
    return x * (1.0 - x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x * (1.0 / 120.0)))))


cdef inline double one_minus_exp_neg(double x) noexcept nogil:
    """1 - exp(-x) for x >= 0, exact to rounding also for tiny x (hysteresis rate per step)."""
    if x < 1e-3:
        return taylor_one_minus_exp_neg(x)
    return -expm1(-x)


cdef inline void refresh_arrhenius(Py_ssize_t k, double T, double ea0, double ea1, double ea2, double* f0,
                                   double* f1, double* f2, double* t_arr) noexcept nogil:
    """Temperature factors of cell ``k``'s resistances at core temperature ``T``."""
    # the resistance law is evaluated within the model's range, so a runaway cell stays finite
    cdef double x = 1.0 / (fmin(fmax(T, T_MIN_C), T_MAX_C) + KELVIN) - 1.0 / T_REF_K
    f0[k] = exp(ea0 * x)
    f1[k] = exp(ea1 * x)
    f2[k] = exp(ea2 * x)
    t_arr[k] = T


cdef inline double rc_heat_J_ohm(double v0, double i, double r, double k_cross, double k_decay,
                                 double dt) noexcept nogil:
    """Energy dissipated in R of an RC pair over a step with constant current, times R (exact integral).

    With A = i R and B = v0 - A: A^2 dt + 2 A B tau (1 - a) + B^2 tau / 2 (1 - a^2), where the per-step
    constants are k_cross = tau (1 - a) and k_decay = tau / 2 (1 - a^2).
    """
    cdef double A = i * r
    cdef double B = v0 - A
    return A * A * dt + 2.0 * A * B * k_cross + B * B * k_decay


# --- the passes: flat loops over cells, restrict pointers, selects instead of branches --------------------

cdef bint check_cache(Py_ssize_t n, cdp soc, cdp c_soc, cdp t_core, cdp c_temp, cdp cap, cdp cap_seen, cdp t_arr,
                      cdp t_surf, dp ts_old) noexcept nogil:
    """Nonzero if any cell's kept values are stale (its SOC, core temperature or capacity changed since the end
    of the last step, or its Arrhenius factors are off); copies the surfaces' start temperatures."""
    # flags as selects of a double: the form gcc vectorises with SSE2 (an integer OR of comparisons needs SSE4.1)
    cdef double stale = 0.0
    cdef Py_ssize_t k
    cdef double T
    for k in range(n):
        T = t_core[k]
        stale = 1.0 if soc[k] != c_soc[k] else stale
        stale = 1.0 if T != c_temp[k] else stale
        stale = 1.0 if cap[k] != cap_seen[k] else stale
        stale = 1.0 if not (fabs(T - t_arr[k]) <= REFRESH_K) else stale
        ts_old[k] = t_surf[k]
    return stale != 0.0


cdef void step_sources(Py_ssize_t n, double r0_25, double r1_25, double r2_25, double m_dyn, double m0,
                       double a1, double a2, double b1, double b2, cdp sf_a, cdp f0, cdp f1, cdp f2, cdp r0s,
                       cdp r1s, cdp r2s, cdp hyst, cdp hsign, cdp ocv_a, cdp v1, cdp v2, dp e_out, dp y_out,
                       dp r0_out, dp r1_out, dp r2_out, dp hv_out) noexcept nogil:
    """Pass 1: every cell as a Thevenin source over the step (start-of-step resistances, OCV, hysteresis)."""
    cdef Py_ssize_t k
    cdef double sf, r0, r1, r2, hv
    for k in range(n):
        sf = sf_a[k]
        r0 = r0_25 * f0[k] * sf * r0s[k]
        r1 = r1_25 * f1[k] * sf * r1s[k]
        r2 = r2_25 * f2[k] * sf * r2s[k]
        hv = m_dyn * hyst[k] - m0 * hsign[k]
        e_out[k] = ocv_a[k] + hv - a1 * v1[k] - a2 * v2[k]
        y_out[k] = 1.0 / (r0 + r1 * b1 + r2 * b2)
        r0_out[k] = r0
        r1_out[k] = r1
        r2_out[k] = r2
        hv_out[k] = hv


cdef void step_currents(Py_ssize_t n, double dt, double a1, double a2, double b1, double b2, double k1_cross,
                        double k1_decay, double k2_cross, double k2_decay, cdp e_a, cdp y_a, cdp vg_a, cdp r0_a,
                        cdp r1_a, cdp r2_a, cdp hv_a, cdp dudt_a, cdp t_core, cdp g_short, dp v1, dp v2,
                        dp i_cell, dp q_cell) noexcept nogil:
    """Pass 2a: cell currents, their mean heat over the step, RC voltages."""
    cdef Py_ssize_t k
    cdef double v_g, i, r1, r2, x1, x2
    for k in range(n):
        v_g = vg_a[k]
        i = (e_a[k] - v_g) * y_a[k]
        r1 = r1_a[k]
        r2 = r2_a[k]
        x1 = v1[k]
        x2 = v2[k]
        q_cell[k] = (r0_a[k] * i * i
                     + (rc_heat_J_ohm(x1, i, r1, k1_cross, k1_decay, dt) * r2
                        + rc_heat_J_ohm(x2, i, r2, k2_cross, k2_decay, dt) * r1) / (r1 * r2 * dt)
                     - hv_a[k] * i
                     - i * (t_core[k] + KELVIN) * dudt_a[k]
                     + v_g * v_g * g_short[k])
        v1[k] = a1 * x1 + b1 * r1 * i
        v2[k] = a2 * x2 + b2 * r2 * i
        i_cell[k] = i


cdef bint step_charge(Py_ssize_t n, double current, double dt_h, double ce, double gamma, double sig,
                      double n_par, cdp i_cell, cdp cap, cdp inv_cap, dp soc, dp hsign, dp om_out,
                      dp c_soc) noexcept nogil:
    """Pass 2b: SOC, the hysteresis rate over the step and the instantaneous-hysteresis sign; nonzero if some
    cell's rate needs expm1 (the caller then fixes ``om_out`` there)."""
    cdef double large = 0.0
    cdef Py_ssize_t k
    cdef double i, dq, inv_q, z, x, eps
    for k in range(n):
        i = i_cell[k]
        inv_q = inv_cap[k]
        dq = i * dt_h
        dq = dq * ce if i < 0 else dq
        z = soc[k] - dq * inv_q
        soc[k] = z
        c_soc[k] = z  # the key of what pass 4 keeps for the next step
        x = fabs(dq * gamma * inv_q)
        om_out[k] = taylor_one_minus_exp_neg(x)
        large = 1.0 if not (x < 1e-3) else large
        # the instantaneous-hysteresis sign follows the string current, not the small currents that
        # circulate between parallel cells (their sign would flip every tick: a limit cycle)
        eps = sig * cap[k] * n_par
        hsign[k] = 1.0 if current > eps else (-1.0 if current < -eps else hsign[k])
    return large != 0.0


cdef void step_thermal(Py_ssize_t n, double as_, double ac, double acg, double g_cs, double g_nb, double sink,
                       cdp ts_old, cdp q_surf, cdp has_left, cdp has_right, cdp d_a, cdp inv_det, cdp q_cell,
                       cdp t_arr, dp t_core, dp t_surf, dp c_temp, dp stale) noexcept nogil:
    """Pass 3: backward Euler on (core, surface), neighbour surfaces from the start of the step; ``stale``
    is 1 where a cell's Arrhenius factors need refreshing, else 0."""
    cdef Py_ssize_t k
    cdef double rhs_s, rhs_c, left, right, T, w
    for k in range(n):
        rhs_s = as_ * ts_old[k] + sink + q_surf[k]
        left = rhs_s + g_nb * ts_old[k - 1]  # ts_old is padded: both neighbours are always readable
        rhs_s = left if has_left[k] != 0.0 else rhs_s
        right = rhs_s + g_nb * ts_old[k + 1]
        rhs_s = right if has_right[k] != 0.0 else rhs_s
        rhs_c = ac * t_core[k] + q_cell[k]
        w = inv_det[k]
        T = (rhs_c * d_a[k] + g_cs * rhs_s) * w
        t_core[k] = T
        c_temp[k] = T  # the key of what pass 4 keeps for the next step
        t_surf[k] = (g_cs * rhs_c + acg * rhs_s) * w
        stale[k] = 0.0 if fabs(T - t_arr[k]) <= REFRESH_K else 1.0


cdef inline void segment(const double* table, const double* slope, double scale, double last, double x,
                         Py_ssize_t k, dp seg_i, dp seg_lo, dp seg_slope, dp seg_from, dp seg_to) noexcept nogil:
    """Keeps which interval of a table cell ``k``'s look-up at ``x`` falls in (as ``interp_uniform`` picks
    it), with the range of table positions for which that pick holds."""
    cdef double pos = x * scale
    cdef Py_ssize_t i = 0
    if pos >= 1.0:
        i = <Py_ssize_t>last if pos >= last else <Py_ssize_t>pos
    seg_i[k] = i
    seg_lo[k] = table[i]
    seg_slope[k] = slope[i]
    seg_from[k] = i if i > 0 else -INFINITY  # below 1, the first interval (extrapolated)
    seg_to[k] = i + 1 if i < last else INFINITY  # from the last point on, the last interval


cdef bint step_end(Py_ssize_t n, double r0_25, double soc_k, double m_dyn, double m0, double ocv_scale,
                   double dudt_scale, cdp soc, cdp t_core, cdp i_cell, cdp om_a, cdp f0, cdp r0s, cdp hsign,
                   cdp v1, cdp v2, cdp o_i, cdp o_lo, cdp o_slope, cdp o_from, cdp o_to, cdp d_i, cdp d_lo,
                   cdp d_slope, cdp d_from, cdp d_to, dp hyst, dp e_end, dp y_end, dp c_sf, dp c_ocv,
                   dp c_dudt) noexcept nogil:
    """Pass 4: the hysteresis at the end of the step, and each cell's source behind R0 at the end of the
    step. The table look-ups use the interval the cell's last look-up fell in (no gather): nonzero if some
    cell has left its interval (the caller then redoes those cells)."""
    cdef double moved = 0.0
    cdef Py_ssize_t k
    cdef double z, T, i, om, h, a, sf, r0, pos, dudt, ocv
    for k in range(n):
        z = soc[k]
        T = t_core[k]
        i = i_cell[k]
        om = om_a[k]
        h = hyst[k]
        a = (1.0 - om) * h
        h = (a - om) if i > 0 else ((a + om) if i < 0 else h)
        hyst[k] = h
        sf = 1.0 + soc_k * (z - 0.5) * (z - 0.5)
        r0 = r0_25 * f0[k] * sf * r0s[k]
        pos = z * dudt_scale
        moved = 1.0 if not (pos >= d_from[k]) else moved
        moved = 1.0 if not (pos < d_to[k]) else moved
        dudt = d_lo[k] + (pos - d_i[k]) * d_slope[k]
        pos = z * ocv_scale
        moved = 1.0 if not (pos >= o_from[k]) else moved
        moved = 1.0 if not (pos < o_to[k]) else moved
        ocv = o_lo[k] + (pos - o_i[k]) * o_slope[k] + (T - 25.0) * dudt
        # all from the end-of-step state: the RC capacitors and the OCV are sources at that instant, behind
        # R0 carrying the step's current
        e_end[k] = ocv + m_dyn * h - m0 * hsign[k] - v1[k] - v2[k] - r0 * i
        y_end[k] = 1.0 / r0
        c_sf[k] = sf
        c_ocv[k] = ocv
        c_dudt[k] = dudt
    return moved != 0.0


# --- per-group sums, in the order the twin sums; specialised for the usual numbers of parallel cells -------

cdef inline void group_sources(Py_ssize_t ns, Py_ssize_t n_par, double g_bal, const unsigned char* balance,
                               cdp s_e, cdp s_y, cdp g_short, dp e_grp, dp z_grp) noexcept nogil:
    """Each group as one Thevenin source (cells, internal shorts, balancing bleed)."""
    cdef Py_ssize_t g, p, k
    cdef double sum_y, sum_ey, g_tot, y
    for g in range(ns):
        sum_y = 0.0
        sum_ey = 0.0
        g_tot = g_bal if balance[g] else 0.0
        for p in range(n_par):
            k = g * n_par + p
            y = s_y[k]
            sum_y = sum_y + y
            sum_ey = sum_ey + s_e[k] * y
            g_tot = g_tot + g_short[k]
        g_tot = 1.0 / (g_tot + sum_y)
        e_grp[g] = sum_ey * g_tot
        z_grp[g] = g_tot


cdef inline void group_voltages(Py_ssize_t ns, Py_ssize_t n_par, double current, double g_bal,
                                const unsigned char* balance, cdp e_grp, cdp z_grp, dp s_vg,
                                dp s_qsurf) noexcept nogil:
    """Each cell sees its group's voltage over the step, and its share of the balancing bleed's heat."""
    cdef Py_ssize_t g, p, k
    cdef double v_g, q_surf
    for g in range(ns):
        v_g = e_grp[g] - z_grp[g] * current
        q_surf = (v_g * v_g * g_bal / n_par) if balance[g] else 0.0
        for p in range(n_par):
            k = g * n_par + p
            s_vg[k] = v_g
            s_qsurf[k] = q_surf


cdef inline void group_terminals(Py_ssize_t ns, Py_ssize_t n_par, cdp e_end, cdp y_end,
                                 dp v_group) noexcept nogil:
    """Parallel cells: the common voltage at which their sources behind R0 deliver the same total."""
    cdef Py_ssize_t g, p, k
    cdef double sum_y, sum_ey, y
    for g in range(ns):
        sum_y = 0.0
        sum_ey = 0.0
        for p in range(n_par):
            k = g * n_par + p
            y = y_end[k]
            sum_y = sum_y + y
            sum_ey = sum_ey + e_end[k] * y
        v_group[g] = sum_ey / sum_y


cdef void groups_of_sources(Py_ssize_t ns, Py_ssize_t n_par, double g_bal, const unsigned char* balance,
                            cdp s_e, cdp s_y, cdp g_short, dp e_grp, dp z_grp) noexcept nogil:
    # a constant n_par lets gcc unroll the group's cells
    if n_par == 1:
        group_sources(ns, 1, g_bal, balance, s_e, s_y, g_short, e_grp, z_grp)
    elif n_par == 2:
        group_sources(ns, 2, g_bal, balance, s_e, s_y, g_short, e_grp, z_grp)
    elif n_par == 3:
        group_sources(ns, 3, g_bal, balance, s_e, s_y, g_short, e_grp, z_grp)
    elif n_par == 4:
        group_sources(ns, 4, g_bal, balance, s_e, s_y, g_short, e_grp, z_grp)
    else:
        group_sources(ns, n_par, g_bal, balance, s_e, s_y, g_short, e_grp, z_grp)


cdef void groups_to_cells(Py_ssize_t ns, Py_ssize_t n_par, double current, double g_bal,
                          const unsigned char* balance, cdp e_grp, cdp z_grp, dp s_vg, dp s_qsurf) noexcept nogil:
    if n_par == 1:
        group_voltages(ns, 1, current, g_bal, balance, e_grp, z_grp, s_vg, s_qsurf)
    elif n_par == 2:
        group_voltages(ns, 2, current, g_bal, balance, e_grp, z_grp, s_vg, s_qsurf)
    elif n_par == 3:
        group_voltages(ns, 3, current, g_bal, balance, e_grp, z_grp, s_vg, s_qsurf)
    elif n_par == 4:
        group_voltages(ns, 4, current, g_bal, balance, e_grp, z_grp, s_vg, s_qsurf)
    else:
        group_voltages(ns, n_par, current, g_bal, balance, e_grp, z_grp, s_vg, s_qsurf)


cdef void groups_of_terminals(Py_ssize_t ns, Py_ssize_t n_par, cdp e_end, cdp y_end, dp v_group) noexcept nogil:
    if n_par == 1:
        group_terminals(ns, 1, e_end, y_end, v_group)
    elif n_par == 2:
        group_terminals(ns, 2, e_end, y_end, v_group)
    elif n_par == 3:
        group_terminals(ns, 3, e_end, y_end, v_group)
    elif n_par == 4:
        group_terminals(ns, 4, e_end, y_end, v_group)
    else:
        group_terminals(ns, n_par, e_end, y_end, v_group)


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
    # kept from the end of one step for the start of the next, with the SOC and core temperature they were
    # computed from (NaN at first: computed before the first step)
    cdef double* c_soc
    cdef double* c_temp
    cdef double* c_sf
    cdef double* c_ocv
    cdef double* c_dudt
    cdef double* cap_seen
    cdef double* inv_cap
    # per cell and table (OCV, entropic slope): the interval its last look-up fell in, that interval's start
    # value and rise, and the range of table positions it covers (NaN at first: looked up before use)
    cdef double* o_i
    cdef double* o_lo
    cdef double* o_slope
    cdef double* o_from
    cdef double* o_to
    cdef double* d_i
    cdef double* d_lo
    cdef double* d_slope
    cdef double* d_from
    cdef double* d_to
    # thermal constants per cell, rebuilt when the step or the cooling factor changes
    cdef double* has_left
    cdef double* has_right
    cdef int* n_neighbours
    cdef double* th_d
    cdef double* th_inv_det
    cdef double th_dt, th_cooling
    # scratch per cell: the step's sources (pass 1 -> currents), the group voltage and balancing heat per
    # cell, the hysteresis rate, the end-of-step sources (-> group sums), the surfaces' start temperatures
    cdef double* s_e
    cdef double* s_y
    cdef double* s_r0
    cdef double* s_r1
    cdef double* s_r2
    cdef double* s_hv
    cdef double* s_vg
    cdef double* s_qsurf
    cdef double* s_om
    cdef double* s_e_end
    cdef double* s_y_end
    cdef double* ts_old
    cdef double* s_stale
    cdef double* e_grp
    cdef double* z_grp
    # cell constants
    cdef double* ocv
    cdef double* dudt
    cdef double* ocv_slope
    cdef double* dudt_slope
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
        nan = float("nan")
        # NaN keys: computed before the first step
        self.c_soc = dptr(np.full(n, nan), n, "scratch", owners)
        self.c_temp = dptr(np.full(n, nan), n, "scratch", owners)
        cdef double** unset[10]
        unset[:] = [&self.o_i, &self.o_lo, &self.o_slope, &self.o_from, &self.o_to, &self.d_i, &self.d_lo,
                    &self.d_slope, &self.d_from, &self.d_to]
        for field in range(10):
            unset[field][0] = dptr(np.full(n, nan), n, "scratch", owners)
        cdef double** zeroed[16]
        zeroed[:] = [&self.c_sf, &self.c_ocv, &self.c_dudt, &self.cap_seen, &self.inv_cap, &self.th_d,
                     &self.th_inv_det, &self.s_e, &self.s_y, &self.s_r0, &self.s_r1, &self.s_r2, &self.s_hv,
                     &self.s_vg, &self.s_qsurf, &self.s_om]
        for field in range(16):
            zeroed[field][0] = dptr(np.zeros(n), n, "scratch", owners)
        self.s_e_end = dptr(np.zeros(n), n, "scratch", owners)
        self.s_y_end = dptr(np.zeros(n), n, "scratch", owners)
        self.ts_old = dptr(np.zeros(n + 2), n + 2, "scratch", owners) + 1  # padded: neighbours always readable
        self.s_stale = dptr(np.zeros(n), n, "scratch", owners)
        self.e_grp = dptr(np.zeros(ns), ns, "scratch", owners)
        self.z_grp = dptr(np.zeros(ns), ns, "scratch", owners)
        position = np.arange(n) % self.cells_per_module
        left = (position != 0).astype(np.float64)
        right = (position != self.cells_per_module - 1).astype(np.float64)
        self.has_left = dptr(left, n, "scratch", owners)
        self.has_right = dptr(right, n, "scratch", owners)
        neighbours = (left + right).astype(np.intc)
        owners.append(neighbours)
        cdef int[::1] nb_view = neighbours
        self.n_neighbours = &nb_view[0]
        self.th_dt = self.th_cooling = nan
        ocv = np.array(cell.ocv_V, dtype=np.float64)
        dudt = np.array(cell.entropic_mV_per_K, dtype=np.float64) * 1e-3
        self.n_ocv = ocv.shape[0]
        self.n_dudt = dudt.shape[0]
        self.ocv = dptr(ocv, self.n_ocv, "cell.ocv_V", owners)
        self.dudt = dptr(dudt, self.n_dudt, "cell.entropic_mV_per_K", owners)
        # each interval's rise, the same subtraction the look-up would make (one load less per look-up)
        self.ocv_slope = dptr(np.diff(ocv), self.n_ocv - 1, "cell.ocv_V", owners)
        self.dudt_slope = dptr(np.diff(dudt), self.n_dudt - 1, "cell.entropic_mV_per_K", owners)
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
        """Advance the pack by ``dt_s`` with the load drawing ``load_current_A`` from the DC link.

        Afterwards the state describes the end of the step (which instant each array describes:
        ``bms.plant.PlantState``).
        """
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
        cdef Py_ssize_t g, p, k, n = self.n_cells, ns = self.n_series, n_par = self.n_parallel
        cdef double ocv_scale = self.n_ocv - 1, ocv_last = self.n_ocv - 2
        cdef double dudt_scale = self.n_dudt - 1, dudt_last = self.n_dudt - 2
        cdef double* soc = self.soc
        cdef double* t_core = self.t_core
        cdef double* s_y = self.s_y
        cdef double* s_e = self.s_e
        cdef double* g_short = self.g_short
        cdef double* e_grp = self.e_grp
        cdef double* z_grp = self.z_grp
        cdef unsigned char* balance = self.balance
        cdef double g_bal = self.g_bal, tau1 = self.tau1, tau2 = self.tau2
        cdef double a1 = exp(-dt / tau1), a2 = exp(-dt / tau2)
        cdef double b1 = 1.0 - a1, b2 = 1.0 - a2
        cdef double y, sum_y, sum_ey, g_tot, v_g, e_pack = 0.0, z_pack = 0.0, q_surf
        if check_cache(n, soc, self.c_soc, t_core, self.c_temp, self.cap, self.cap_seen, self.t_arr,
                       self.t_surf, self.ts_old):
            self._refresh(ocv_scale, ocv_last, dudt_scale, dudt_last)
        # pass 1: every cell as a Thevenin source over the step; groups reduced to one source each
        step_sources(n, self.r0_25, self.r1_25, self.r2_25, self.m_dyn, self.m0, a1, a2, b1, b2, self.c_sf,
                     self.f0, self.f1, self.f2, self.r0s, self.r1s, self.r2s, self.hyst, self.hsign, self.c_ocv,
                     self.v1, self.v2, s_e, s_y, self.s_r0, self.s_r1, self.s_r2, self.s_hv)
        groups_of_sources(ns, n_par, g_bal, balance, s_e, s_y, g_short, e_grp, z_grp)
        for g in range(ns):
            e_pack = e_pack + e_grp[g]
            z_pack = z_pack + z_grp[g]

        cdef double current = self._link(dt, load_A, e_pack, z_pack)

        # each cell sees its group's voltage over the step, and its share of the balancing bleed's heat
        cdef double* s_vg = self.s_vg
        cdef double* s_qsurf = self.s_qsurf
        groups_to_cells(ns, n_par, current, g_bal, balance, e_grp, z_grp, s_vg, s_qsurf)

        # pass 2: cell currents, electrical states, heat
        cdef double dt_h = dt / 3600.0
        cdef double k1_cross = tau1 * b1, k1_decay = tau1 * 0.5 * (1.0 - a1 * a1)
        cdef double k2_cross = tau2 * b2, k2_decay = tau2 * 0.5 * (1.0 - a2 * a2)
        step_currents(n, dt, a1, a2, b1, b2, k1_cross, k1_decay, k2_cross, k2_decay, s_e, s_y, s_vg, self.s_r0,
                      self.s_r1, self.s_r2, self.s_hv, self.c_dudt, t_core, g_short, self.v1, self.v2,
                      self.i_cell, self.q_cell)
        if step_charge(n, current, dt_h, self.ce, self.gamma, SIGN_C_RATE, <double>n_par, self.i_cell, self.cap,
                       self.inv_cap, soc, self.hsign, self.s_om, self.c_soc):
            self._large_hysteresis_rates(dt_h)

        # pass 3: thermal, backward Euler on (core, surface) with neighbour surfaces from the previous step
        cdef double ac = self.c_core / dt, as_ = self.c_surf / dt, g_cs = self.g_cs
        cdef double g_sc = self.g_sc * cooling
        if dt != self.th_dt or cooling != self.th_cooling:
            self._thermal_constants(dt, cooling, ac, as_, g_sc)
        step_thermal(n, as_, ac, ac + g_cs, g_cs, self.g_nb, g_sc * coolant_C, self.ts_old, s_qsurf, self.has_left,
                     self.has_right, self.th_d, self.th_inv_det, self.q_cell, self.t_arr, t_core, self.t_surf, self.c_temp,
                     self.s_stale)

        # pass 4: end-of-step hysteresis and terminal voltages; parallel cells: the common voltage at which
        # these sources behind R0 deliver the same total
        self._refresh_arrhenius()
        cdef double* e_end = self.s_e_end
        cdef double* y_end = self.s_y_end
        if step_end(n, self.r0_25, self.soc_k, self.m_dyn, self.m0, ocv_scale, dudt_scale, soc, t_core,
                    self.i_cell, self.s_om, self.f0, self.r0s, self.hsign, self.v1, self.v2, self.o_i, self.o_lo,
                    self.o_slope, self.o_from, self.o_to, self.d_i, self.d_lo, self.d_slope, self.d_from,
                    self.d_to, self.hyst, e_end, y_end, self.c_sf, self.c_ocv, self.c_dudt):
            self._new_segments(ocv_scale, ocv_last, dudt_scale, dudt_last)
        cdef double v_pack = 0.0
        cdef double* v_group = self.v_group
        groups_of_terminals(ns, n_par, e_end, y_end, v_group)
        for g in range(ns):
            v_pack = v_pack + v_group[g]
        self.scalars[I_PACK_V] = v_pack

    cdef void _refresh(self, double ocv_scale, double ocv_last, double dudt_scale,
                       double dudt_last) noexcept nogil:
        """The kept start-of-step values of the cells whose SOC, core temperature or capacity changed since
        the end of the last step (an outside write, or the first step), and stale Arrhenius factors."""
        cdef Py_ssize_t k
        cdef double T, z, dudt, soc_k = self.soc_k
        for k in range(self.n_cells):
            T = self.t_core[k]
            z = self.soc[k]
            if not (fabs(T - self.t_arr[k]) <= REFRESH_K):
                refresh_arrhenius(k, T, self.ea0, self.ea1, self.ea2, self.f0, self.f1, self.f2, self.t_arr)
            if z != self.c_soc[k] or T != self.c_temp[k]:
                self.c_sf[k] = 1.0 + soc_k * (z - 0.5) * (z - 0.5)
                dudt = interp_uniform(self.dudt, self.dudt_slope, dudt_scale, dudt_last, z)
                self.c_dudt[k] = dudt
                self.c_ocv[k] = interp_uniform(self.ocv, self.ocv_slope, ocv_scale, ocv_last, z) + (T - 25.0) * dudt
                self.c_soc[k] = z
                self.c_temp[k] = T
            if self.cap[k] != self.cap_seen[k]:  # capacities change rarely (fade); divide only then
                self.cap_seen[k] = self.cap[k]
                self.inv_cap[k] = 1.0 / self.cap[k]

    cdef void _large_hysteresis_rates(self, double dt_h) noexcept nogil:
        """expm1 where a cell's hysteresis rate per step is beyond the Taylor series' range."""
        cdef Py_ssize_t k
        cdef double i, dq, x
        for k in range(self.n_cells):
            i = self.i_cell[k]
            dq = i * dt_h
            if i < 0:
                dq = dq * self.ce
            x = fabs(dq * self.gamma * self.inv_cap[k])
            if not (x < 1e-3):
                self.s_om[k] = one_minus_exp_neg(x)

    cdef void _refresh_arrhenius(self) noexcept nogil:
        """Arrhenius factors where the core temperature has moved (every few seconds per cell): the thermal
        pass marked those cells; four marks are summed at a time (exact: zeros and ones)."""
        cdef Py_ssize_t k, j, n = self.n_cells
        cdef double* stale = self.s_stale
        for k in range(0, n - n % 4, 4):
            if stale[k] + stale[k + 1] + stale[k + 2] + stale[k + 3] != 0.0:
                for j in range(k, k + 4):
                    if stale[j] != 0.0:
                        refresh_arrhenius(j, self.t_core[j], self.ea0, self.ea1, self.ea2, self.f0, self.f1,
                                          self.f2, self.t_arr)
        for j in range(n - n % 4, n):
            if stale[j] != 0.0:
                refresh_arrhenius(j, self.t_core[j], self.ea0, self.ea1, self.ea2, self.f0, self.f1, self.f2,
                                  self.t_arr)

    cdef void _new_segments(self, double ocv_scale, double ocv_last, double dudt_scale,
                            double dudt_last) noexcept nogil:
        """Pass 4 again for the cells whose SOC left the table interval of their last look-up."""
        cdef Py_ssize_t k
        cdef double z, pos, dudt, ocv, r0
        for k in range(self.n_cells):
            z = self.soc[k]
            pos = z * dudt_scale
            if pos >= self.d_from[k] and pos < self.d_to[k]:
                pos = z * ocv_scale
                if pos >= self.o_from[k] and pos < self.o_to[k]:
                    continue
            segment(self.dudt, self.dudt_slope, dudt_scale, dudt_last, z, k, self.d_i, self.d_lo,
                    self.d_slope, self.d_from, self.d_to)
            segment(self.ocv, self.ocv_slope, ocv_scale, ocv_last, z, k, self.o_i, self.o_lo, self.o_slope,
                    self.o_from, self.o_to)
            # what step_end computes, now in the right intervals (the same expressions, so the same bits
            # as a look-up from scratch)
            dudt = self.d_lo[k] + (z * dudt_scale - self.d_i[k]) * self.d_slope[k]
            ocv = self.o_lo[k] + (z * ocv_scale - self.o_i[k]) * self.o_slope[k] + (self.t_core[k] - 25.0) * dudt
            r0 = self.r0_25 * self.f0[k] * self.c_sf[k] * self.r0s[k]
            self.s_e_end[k] = (ocv + self.m_dyn * self.hyst[k] - self.m0 * self.hsign[k] - self.v1[k] - self.v2[k]
                               - r0 * self.i_cell[k])
            self.c_ocv[k] = ocv
            self.c_dudt[k] = dudt

    cdef void _thermal_constants(self, double dt, double cooling, double ac, double as_,
                                 double g_sc) noexcept nogil:
        """The 2x2 thermal system of a cell differs only by its number of neighbours (0, 1 or 2)."""
        cdef double d_nb[3]
        cdef double inv_det_nb[3]
        cdef int n_nb
        cdef Py_ssize_t k
        for n_nb in range(3):
            d_nb[n_nb] = as_ + self.g_cs + g_sc + self.g_nb * n_nb
            inv_det_nb[n_nb] = 1.0 / ((ac + self.g_cs) * d_nb[n_nb] - self.g_cs * self.g_cs)
        for k in range(self.n_cells):
            self.th_d[k] = d_nb[self.n_neighbours[k]]
            self.th_inv_det[k] = inv_det_nb[self.n_neighbours[k]]
        self.th_dt = dt
        self.th_cooling = cooling

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
