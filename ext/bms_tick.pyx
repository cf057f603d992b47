# The built-in firmware's per-tick bookkeeping and the BMS's 100 ms task, compiled. Readable specification:
# bms/_twin/bms_tick.py (same classes, same signatures, the same results bit for bit: the same operations in
# the same order; Python's min/max of two floats as written there, NaN cases included).
#
# EstimatorFeed: PackEstimator.update around its tick kernel; SlowTask: the numeric part of Bms._slow and the
# publication of the limits; BuiltinTick: one emulator tick with the built-in firmware in one call.
from libc.math cimport exp, fabs, isfinite, isnan, sqrt, NAN, INFINITY

import math

import numpy as np

from bms import _protection as L
from bms._layout import MAIN_POSITIVE, MAIN_NEGATIVE, PRECHARGE as _PRECHARGE
from bms.errors import InputError

include "binding.pxi"

cdef int CURRENT_ZERO_SAMPLES_C = 1000
CURRENT_ZERO_SAMPLES = CURRENT_ZERO_SAMPLES_C
cdef double R_GAS = 8.314462618
cdef double T_REF_K = 298.15
cdef double KELVIN = 273.15
cdef int READY = 3, CHARGING = 4
cdef int C_POS = MAIN_POSITIVE, C_NEG = MAIN_NEGATIVE, C_PRE = _PRECHARGE
cdef int OUT_SLOW_DT = L.OUT_SLOW_DT, OUT_T_MIN = L.OUT_T_MIN, OUT_T_MAX = L.OUT_T_MAX
cdef int OUT_T_MEDIAN = L.OUT_T_MEDIAN
cdef int OUT_V_MIN = L.OUT_V_MIN, OUT_V_MAX = L.OUT_V_MAX, OUT_V_SUM = L.OUT_V_SUM
cdef int OUT_N_VALID_V = L.OUT_N_VALID_V, OUT_N_VALID_T = L.OUT_N_VALID_T
cdef int IN_CORE_MIN = L.IN_CORE_MIN, IN_R_REF = L.IN_R_REF, IN_DIS_REF = L.IN_DIS_REF
cdef int IN_SP_SOC_OK = L.IN_SP_SOC_OK, IN_IMB_SOC_OK = L.IN_IMB_SOC_OK
cdef int IN_OC_ENABLE = L.IN_OC_ENABLE

_min, _max = np.minimum.reduce, np.maximum.reduce


# Python's min(a, b) and max(a, b) of two floats: the first argument unless the second compares past it
cdef inline double pymin(double a, double b) noexcept nogil:
    return b if b < a else a


cdef inline double pymax(double a, double b) noexcept nogil:
    return b if b > a else a


cdef inline double clip01(double x) noexcept nogil:
    return 0.0 if x < 0.0 else (1.0 if x > 1.0 else x)


cdef void extrema_ptr(const double* x, Py_ssize_t n, double* lo, double* hi) noexcept:
    """min and max of n > 0 contiguous values as numpy's reductions give them: NaN if any value is NaN."""
    cdef Py_ssize_t k
    cdef double a = x[0], b = x[0], v
    for k in range(n):
        v = x[k]
        if v != v:
            lo[0] = hi[0] = NAN
            return
        if v < a:
            a = v
        if v > b:
            b = v
    lo[0], hi[0] = a, b


cdef int extrema_c(const double[:] v, double* lo, double* hi) except -1:
    """min and max as numpy's reductions give them: NaN if any value is NaN."""
    cdef Py_ssize_t k, n = v.shape[0]
    cdef double x, a, b
    if n == 0:
        raise ValueError("zero-size array to reduction operation minimum which has no identity")
    a = b = v[0]
    for k in range(n):
        x = v[k]
        if x != x:
            lo[0] = hi[0] = NAN
            return 0
        if x < a:
            a = x
        if x > b:
            b = x
    lo[0], hi[0] = a, b
    return 0


cdef bint _is_f64(object values):
    return isinstance(values, np.ndarray) and values.dtype == np.float64


def extrema(values):
    """``(min, max)`` of a float array (NaN if any value is NaN, as numpy's reductions)."""
    cdef double lo, hi
    if not _is_f64(values):
        return float(_min(values)), float(_max(values))
    extrema_c(values, &lo, &hi)
    return lo, hi


def group_soc(const double[::1] soc, const double[::1] capacity_Ah, int n_parallel):
    """Charge-weighted SOC of each series group: each group's cells added in order (see the twin)."""
    cdef Py_ssize_t n = soc.shape[0], g, k, i
    cdef double charge, capacity
    if n_parallel < 1 or n % n_parallel or capacity_Ah.shape[0] != n:
        raise InputError("group_soc", f"cell arrays of whole groups of {n_parallel}", (n, capacity_Ah.shape[0]))
    out = np.empty(n // n_parallel)
    cdef double[::1] o = out
    for g in range(n // n_parallel):
        i = g * n_parallel
        charge, capacity = soc[i] * capacity_Ah[i], capacity_Ah[i]
        for k in range(1, n_parallel):
            charge = charge + soc[i + k] * capacity_Ah[i + k]
            capacity = capacity + capacity_Ah[i + k]
        o[g] = charge / capacity
    return out


def fill_noise(const unsigned long long[::1] words, const double[::1] levels, double[::1] out):
    """``out`` from the 16-bit slices of ``words`` (least significant first) as indices into ``levels``."""
    cdef Py_ssize_t k, n = words.shape[0]
    cdef unsigned long long w
    if levels.shape[0] != 65536 or out.shape[0] != 4 * n:
        raise InputError("fill_noise", f"65536 levels and {4 * n} outputs", (levels.shape[0], out.shape[0]))
    for k in range(n):
        w = words[k]
        out[4 * k] = levels[w & 0xFFFF]
        out[4 * k + 1] = levels[(w >> 16) & 0xFFFF]
        out[4 * k + 2] = levels[(w >> 32) & 0xFFFF]
        out[4 * k + 3] = levels[(w >> 48) & 0xFFFF]


cdef class Observer:
    """What a recording takes of the truth and of the estimator's belief, in one call (see the twin): the
    elementwise parts here, the sums by numpy's own reduction (the same bits as the properties)."""
    cdef object _owners, _reduce, _group, _charge, _sigma, _est_cap_obj
    cdef double* _soc
    cdef double* _cap
    cdef double* _v
    cdef double* _core
    cdef double* _surface
    cdef double* _gs
    cdef double* _est_cap
    cdef double* _cov
    cdef double* _est_core
    cdef double* _w_group
    cdef double* _w_charge
    cdef double* _w_sigma
    cdef int _ns, _np, _n_core, _n_surface
    cdef bint _has_est

    def __init__(self, plant, int n_parallel, estimator=None):
        self._owners = owners = []
        n = plant.group_voltage_V.size
        if n < 1 or n_parallel < 1 or plant.soc.size != n * n_parallel:
            raise InputError("n_parallel", f"{plant.soc.size} cells in {n} groups", n_parallel)
        self._ns, self._np = n, n_parallel
        self._soc = dptr(plant.soc, n * n_parallel, "soc", owners)
        self._cap = dptr(plant.capacity_Ah, n * n_parallel, "capacity_Ah", owners)
        self._v = dptr(plant.group_voltage_V, n, "group_voltage_V", owners)
        self._core = dptr(plant.temp_core_C, plant.temp_core_C.size, "temp_core_C", owners)
        self._surface = dptr(plant.temp_surface_C, plant.temp_surface_C.size, "temp_surface_C", owners)
        self._n_core, self._n_surface = plant.temp_core_C.size, plant.temp_surface_C.size
        if self._n_core < 1 or self._n_surface < 1:
            raise InputError("temp_core_C", "at least one cell", self._n_core)
        self._has_est = estimator is not None
        if self._has_est:
            s = estimator.state
            self._gs = dptr(estimator.group_soc, n, "group_soc", owners)
            self._est_cap = dptr(s.capacity_cell_Ah, n, "capacity_cell_Ah", owners)
            self._est_cap_obj = s.capacity_cell_Ah
            self._cov = dptr(s.cov[:n], n, "cov", owners)
            self._est_core = dptr(estimator.core_temp_C, n, "core_temp_C", owners)
        # the elementwise results the sums run over: arrays of their own, as the properties' ufunc results
        self._group, self._charge, self._sigma = np.empty(n), np.empty(n), np.empty(n)
        self._w_group = dptr(self._group, n, "group", owners)
        self._w_charge = dptr(self._charge, n, "charge", owners)
        self._w_sigma = dptr(self._sigma, n, "sigma", owners)
        self._reduce = np.add.reduce

    cdef double _max(self, const double* x, Py_ssize_t n) noexcept:
        cdef double lo, hi
        extrema_ptr(x, n, &lo, &hi)
        return hi

    def values(self):
        """(soc_true, soc_estimated, soc_3sigma mean, cell voltage min, max, core max, surface max, estimated
        core max): see the twin."""
        cdef Py_ssize_t g, k, i, n = self._ns, p = self._np
        cdef double charge, capacity, lo, hi
        for g in range(n):
            i = g * p
            charge, capacity = self._soc[i] * self._cap[i], self._cap[i]
            for k in range(1, p):
                charge = charge + self._soc[i + k] * self._cap[i + k]
                capacity = capacity + self._cap[i + k]
            self._w_group[g] = charge / capacity
        reduce = self._reduce
        soc_true = float(reduce(self._group) / n)
        extrema_ptr(self._v, n, &lo, &hi)
        core_max, surface_max = self._max(self._core, self._n_core), self._max(self._surface, self._n_surface)
        if not self._has_est:
            return (soc_true, NAN, NAN, lo, hi, core_max, surface_max, NAN)
        for g in range(n):
            self._w_charge[g] = self._gs[g] * self._est_cap[g]
            self._w_sigma[g] = 3.0 * sqrt(self._cov[g])
        soc_est = float(reduce(self._charge) / reduce(self._est_cap_obj))
        sigma = float(reduce(self._sigma) / n)
        return (soc_true, soc_est, sigma, lo, hi, core_max, surface_max, self._max(self._est_core, n))


cdef class EstimatorFeed:
    """Per-tick bookkeeping of ``PackEstimator`` around its tick and slow kernels (see the twin)."""
    cdef object _tick, _slow, _owners, _next_obj
    cdef double* _fb
    cdef double* _next
    cdef int _v_channel, _t_channel

    cdef double* _v   # the mutable scalar state, in an array the owners hold (a kit snapshot restores it)
    cdef object _state

    @property
    def zero_max_A(self):
        return self._v[0]

    @zero_max_A.setter
    def zero_max_A(self, double value):
        self._v[0] = value

    @property
    def slow_period_s(self):
        return self._v[1]

    @slow_period_s.setter
    def slow_period_s(self, double value):
        self._v[1] = value

    @property
    def current_zero_A(self):
        return self._v[2]

    @current_zero_A.setter
    def current_zero_A(self, double value):
        self._v[2] = value

    @property
    def since_slow_s(self):
        return self._v[3]

    @since_slow_s.setter
    def since_slow_s(self, double value):
        self._v[3] = value

    @property
    def thermal_dt_s(self):
        return self._v[4]

    @thermal_dt_s.setter
    def thermal_dt_s(self, double value):
        self._v[4] = value

    @property
    def zero_n(self):
        return int(self._v[5])

    def __init__(self, tick_kernel, slow_kernel, feedback, double zero_max_A, double slow_period_s):
        self._tick, self._slow = tick_kernel.tick, slow_kernel.update
        self._owners = []
        self._state = np.zeros(8)
        self._v = dptr(self._state, 8, 'state', self._owners)
        self._fb = dptr(feedback, 3, "contactor_feedback", self._owners) if feedback is not None else NULL
        self._v[0], self._v[1] = zero_max_A, slow_period_s
        self._v[2] = 0.0
        self._v[5] = 0
        self._v[3] = 0.0
        self._v[4] = NAN
        self._next = NULL
        self._v_channel = self._t_channel = 0
        self._v[6] = self._v[7] = NAN

    def schedule(self, next_sample_s, int v_channel, int t_channel):
        """The sensor layer's next-sample times (None: every update brings new readings) and the first
        voltage and temperature channel."""
        if next_sample_s is None:
            self._next, self._next_obj = NULL, None
        else:
            n = max(v_channel, t_channel) + 1
            if next_sample_s.size < n:
                raise InputError("next_sample_s", f"at least {n} channels", next_sample_s.size)
            self._next = dptr(next_sample_s, next_sample_s.size, "next_sample_s", self._owners)
            self._next_obj = next_sample_s
        self._v_channel, self._t_channel = v_channel, t_channel

    def update(self, double dt_s, double current_A, bint first=False):
        """One tick: the tick kernel on the zero-corrected current; unless ``first``, the 100 ms count."""
        self._update(dt_s, current_A, first)

    cdef int _update(self, double dt_s, double current_A, bint first) except -1:
        cdef bint new_v = True, new_t = True
        cdef double v_due, t_due
        cdef double* fb = self._fb
        if self._next != NULL:
            v_due, t_due = self._next[self._v_channel], self._next[self._t_channel]
            new_v, new_t = v_due != self._v[6], t_due != self._v[7]
            self._v[6], self._v[7] = v_due, t_due
        if fb != NULL and not (fb[C_NEG] > 0.5 and (fb[C_POS] > 0.5 or fb[C_PRE] > 0.5)):
            if fabs(current_A) <= self._v[0]:  # also False for NaN
                self._v[5] = self._v[5] + 1.0 if self._v[5] + 1.0 < CURRENT_ZERO_SAMPLES_C else CURRENT_ZERO_SAMPLES_C
                self._v[2] += (current_A - self._v[2]) / self._v[5]
        self._tick(dt_s, current_A - self._v[2], new_v, new_t)
        if first:
            return 0
        self._v[3] += dt_s
        if self._v[3] >= self._v[1]:
            self._slow()
            self._v[3] = 0.0
        return 0


cdef int bisect_right(const double* xs, int n, double x) noexcept nogil:
    cdef int lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if x < xs[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef double interp(double x, const double* xs, const double* ys, int n) noexcept nogil:
    """Piecewise-linear table lookup, clamped at the ends."""
    cdef int k
    cdef double x0, x1
    if not x > xs[0]:
        return ys[0] if x == x else NAN
    if x >= xs[n - 1]:
        return ys[n - 1]
    k = bisect_right(xs, n, x)
    x0, x1 = xs[k - 1], xs[k]
    return ys[k - 1] + (x - x0) / (x1 - x0) * (ys[k] - ys[k - 1])


cdef class SlowTask:
    """The numeric part of the built-in BMS's 100 ms task and the publication of its limits (see the twin)."""
    cdef object _owner, _owners, _limits_type, _zero_limits, _ocv, _soc_grid, _interp
    cdef object _gs_obj, _core_obj, _sop_index
    cdef const double[:] _gs
    cdef const double[:] _core
    cdef double* _out
    cdef double* _inp
    cdef double* _reading
    cdef int _i_current, _npar, _ns
    cdef double _capacity_Ah, _charge_max_A, _peak_A, _cont_A, _peak_duration_s, _v_floor, _v_ceiling
    cdef double _arr[6]
    cdef double _rest_A, _rest_s, _lag_s, _charge_margin_K, _t_charge_min, _t_hard_max
    cdef bint _lithium_metal
    cdef double _ccd[4]
    cdef double _r_margin, _r_soc_curvature, _taper_soc, _taper_floor, _peak_recovery_s, _grace_s, _horizon_s
    cdef double _sp_soc_min, _sp_soc_max, _imb_soc_min, _imb_soc_max
    cdef double* _derate_t
    cdef double* _derate_f
    cdef double* _charge_t
    cdef double* _charge_c
    cdef int _n_derate, _n_charge

    cdef double* _v   # the mutable state, in an array the owners hold (a kit snapshot restores it)
    cdef double* _cap
    cdef double* _oc_ref
    cdef double* _key
    cdef double* _factors
    cdef object _state

    @property
    def soc(self):
        return self._v[0]

    @soc.setter
    def soc(self, double value):
        self._v[0] = value

    @property
    def soc_lo(self):
        return self._v[1]

    @soc_lo.setter
    def soc_lo(self, double value):
        self._v[1] = value

    @property
    def soc_hi(self):
        return self._v[2]

    @soc_hi.setter
    def soc_hi(self, double value):
        self._v[2] = value

    @property
    def core_cold_C(self):
        return self._v[3]

    @core_cold_C.setter
    def core_cold_C(self, double value):
        self._v[3] = value

    @property
    def core_hot_C(self):
        return self._v[4]

    @core_hot_C.setter
    def core_hot_C(self, double value):
        self._v[4] = value

    @property
    def current_A(self):
        return self._v[5]

    @current_A.setter
    def current_A(self, double value):
        self._v[5] = value

    @property
    def peak_budget(self):
        return self._v[6]

    @peak_budget.setter
    def peak_budget(self, double value):
        self._v[6] = value

    @property
    def derate_discharge(self):
        return self._v[7]

    @derate_discharge.setter
    def derate_discharge(self, double value):
        self._v[7] = value

    @property
    def derate_charge(self):
        return self._v[8]

    @derate_charge.setter
    def derate_charge(self, double value):
        self._v[8] = value

    def __init__(self, owner, params, config, out, inp, reading, int i_current, limits_type, zero_limits):
        c, cell = config, params.cell
        self._owners = owners = []
        self._owner = owner
        self._state = np.zeros(23)
        self._v = dptr(self._state, 23, "state", owners)
        self._cap, self._oc_ref, self._key, self._factors = self._v + 9, self._v + 14, self._v + 17, self._v + 19
        self._out = dptr(out, L.N_OUT, "out", owners)
        self._inp = dptr(inp, L.N_IN, "inp", owners)
        self._reading = dptr(reading, reading.size, "reading", owners)
        if not 0 <= i_current < reading.size:
            raise InputError("i_current", f"a channel in [0, {reading.size})", i_current)
        self._i_current = i_current
        self._limits_type, self._zero_limits = limits_type, zero_limits
        self._ocv, self._soc_grid = np.array(cell.ocv_V), np.linspace(0.0, 1.0, len(cell.ocv_V))
        self._interp = np.interp
        self._ns, self._npar, self._capacity_Ah = params.n_series, params.n_parallel, params.capacity_Ah
        self._charge_max_A = max(cell.charge_limit_C_rate) * params.capacity_Ah
        self._peak_A = cell.discharge_peak_C_rate * params.capacity_Ah
        self._cont_A = cell.discharge_continuous_C_rate * params.capacity_Ah
        self._peak_duration_s = cell.discharge_peak_duration_s
        self._v_floor = max(cell.voltage_min_V, c.cell_undervoltage_warning_V) + c.voltage_limit_margin_V
        self._v_ceiling = min(cell.voltage_max_V, c.cell_overvoltage_warning_V) - c.voltage_limit_margin_V
        r_x = 1.0 / R_GAS
        arr = (cell.r0_ohm, cell.r0_activation_J_per_mol * r_x,
               cell.r1_ohm * (1.0 - math.exp(-c.limit_horizon_s / cell.tau1_s)), cell.r1_activation_J_per_mol * r_x,
               cell.r2_ohm * (1.0 - math.exp(-c.limit_horizon_s / cell.tau2_s)), cell.r2_activation_J_per_mol * r_x)
        for k in range(6):
            self._arr[k] = arr[k]
        self._rest_A, self._rest_s = c.rest_current_A, c.rest_time_s
        self._lag_s = c.core_temperature_lag_s
        tables = [np.array(v, dtype=float) for v in (c.discharge_derate_temp_C, c.discharge_derate_factor,
                                                      cell.charge_limit_temp_C, cell.charge_limit_C_rate)]
        for name, table in zip(("discharge_derate_factor", "charge_limit_C_rate"), tables[1::2]):
            if table.size < 1:
                raise InputError(name, "a table of at least one value", table.size)
        self._n_derate, self._n_charge = tables[0].size, tables[2].size
        self._derate_t = dptr(tables[0], self._n_derate, "discharge_derate_temp_C", owners)
        self._derate_f = dptr(tables[1], self._n_derate, "discharge_derate_factor", owners)
        self._charge_t = dptr(tables[2], self._n_charge, "charge_limit_temp_C", owners)
        self._charge_c = dptr(tables[3], self._n_charge, "charge_limit_C_rate", owners)
        self._charge_margin_K = c.temperature_charge_margin_K
        self._t_charge_min, self._t_hard_max = cell.temp_charge_min_C, cell.temp_hard_max_C
        self._lithium_metal = bool(cell.lithium_metal)
        ccd = (cell.ccd_25C_mA_per_cm2, cell.ccd_activation_J_per_mol, cell.ccd_safety_factor, cell.electrode_area_cm2)
        for k in range(4):
            self._ccd[k] = ccd[k]
        self._r_margin = c.resistance_margin
        self._r_soc_curvature = cell.resistance_soc_curvature
        self._taper_soc, self._taper_floor = cell.charge_taper_soc, c.charge_taper_floor_C_rate
        self._peak_recovery_s = c.peak_recovery_s
        self._grace_s = c.overcurrent_limit_grace_s
        self._horizon_s = c.limit_horizon_s
        self._sp_soc_min, self._sp_soc_max = c.stack_pressure_soc_min, c.stack_pressure_soc_max
        self._imb_soc_min, self._imb_soc_max = c.cell_imbalance_soc_min, c.cell_imbalance_soc_max
        self._sop_index = None
        self._v[0] = NAN
        self._v[1] = self._v[2] = 0.0
        self._v[3] = self._v[4] = NAN
        self._v[5] = NAN
        self._v[6] = 1.0
        self._v[7] = self._v[8] = 1.0
        for k in range(4):
            self._cap[k] = 0.0
            self._factors[k] = 0.0
        self._v[13] = 0.0
        self._oc_ref[0] = self._oc_ref[1] = 0.0
        self._v[16] = 0.0
        self._gs_obj = self._core_obj = None

    @property
    def capability(self):
        """The limits before gating by state: (discharge A, charge A, discharge W, charge W)."""
        return (self._cap[0], self._cap[1], self._cap[2], self._cap[3])

    # --- the 100 ms task ------------------------------------------------------------------------
    def update(self, double t, est, int state, bint opening):
        """The slow task at ``t`` (see the twin). Returns whether the pack has rested ``rest_time_s``."""
        cdef double* o = self._out
        cdef double dts = o[OUT_SLOW_DT]
        cdef double current = self._reading[self._i_current]
        cdef double soc_lo, soc_hi, mid
        cdef bint rested
        self._v[5] = current
        if fabs(current) < self._rest_A:
            rested = t - self._v[13] >= self._rest_s
        else:
            self._v[13] = t
            rested = False
        if est is not None:
            self._bind_group_soc(est.group_soc)
            extrema_c(self._gs, &soc_lo, &soc_hi)
        else:
            self._update_soc(current, dts, rested)
            soc_lo, soc_hi = self._v[0] - self._v[1], self._v[0] + self._v[2]
        # the stack-pressure regression and the imbalance check only where the OCV is not steep (nan: not judged)
        self._inp[IN_SP_SOC_OK] = 1.0 if self._sp_soc_min <= soc_lo and soc_hi <= self._sp_soc_max else 0.0
        mid = 0.5 * (soc_lo + soc_hi)
        self._inp[IN_IMB_SOC_OK] = 1.0 if self._imb_soc_min <= mid <= self._imb_soc_max else 0.0
        self._update_core(dts, est)
        self._update_limits(current, dts, mid, soc_hi, est, state, opening)
        return rested

    cdef int _bind_group_soc(self, values) except -1:
        if values is self._gs_obj and values is not None:
            return 0
        if _is_f64(values):
            self._gs, self._gs_obj = values, values
        else:  # not a float array: converted every time (its values may change in place)
            self._gs, self._gs_obj = np.asarray(values, dtype=float).reshape(-1), None
        return 0

    cdef double _ocv_inverse(self, double v) except? -1.0:
        return float(self._interp(v, self._ocv, self._soc_grid))

    cdef int _update_soc(self, double current, double dts, bint rested) except -1:
        cdef double* o = self._out
        cdef double n_valid = o[OUT_N_VALID_V], mean
        if n_valid <= 0:
            return 0
        if isnan(self._v[0]) or rested:
            mean = o[OUT_V_SUM] / n_valid
            self._v[0] = self._ocv_inverse(mean)
            self._v[1] = self._v[0] - self._ocv_inverse(o[OUT_V_MIN])
            self._v[2] = self._ocv_inverse(o[OUT_V_MAX]) - self._v[0]
        elif isfinite(current):
            self._v[0] -= current * dts / 3600.0 / self._capacity_Ah
        return 0

    cdef int _update_core(self, double dts, est) except -1:
        cdef double* o = self._out
        cdef double* inp = self._inp
        cdef double t_min = o[OUT_T_MIN], core_hot, t_mean, lo, hi
        core = getattr(est, "core_temp_C", None) if est is not None else None
        if core is not None and len(core):
            if core is not self._core_obj:
                if _is_f64(core):
                    self._core, self._core_obj = core, core
                else:
                    self._core, self._core_obj = np.asarray(core, dtype=float).reshape(-1), None
            extrema_c(self._core, &lo, &hi)
            self._v[3], core_hot = lo, hi
        else:
            if isnan(self._v[3]):
                self._v[3] = t_min
            elif isfinite(t_min):
                self._v[3] += (t_min - self._v[3]) * (1.0 - exp(-dts / self._lag_s))
            core_hot = NAN
        inp[IN_CORE_MIN] = self._v[3] if isfinite(self._v[3]) else NAN
        self._v[4] = core_hot
        t_mean = o[OUT_T_MEDIAN]  # the sensors' median (see the twin), else the mean of the extremes
        if not isfinite(t_mean):
            t_mean = 0.5 * (t_min + o[OUT_T_MAX])
        if isfinite(t_mean):
            inp[IN_R_REF] = self._arr[0] * exp(self._arr[1] * (1.0 / (t_mean + KELVIN) - 1.0 / T_REF_K)) / self._npar
        return 0

    cdef void _temperature_factors(self, double t_lo, double t_hi) noexcept:
        cdef double f_t, t_ch, rate, ccd_A, x, ccd, r_cell
        cdef double* a = self._arr
        if self._v[16] and t_lo == self._key[0] and t_hi == self._key[1]:
            return
        f_t = pymin(interp(t_lo, self._derate_t, self._derate_f, self._n_derate),
                    interp(t_hi, self._derate_t, self._derate_f, self._n_derate))
        t_ch = t_lo - self._charge_margin_K
        if t_ch < self._t_charge_min or t_hi > self._t_hard_max:
            rate = 0.0
        else:
            rate = pymin(interp(t_ch, self._charge_t, self._charge_c, self._n_charge),
                         interp(t_hi, self._charge_t, self._charge_c, self._n_charge))
        ccd_A = INFINITY
        if self._lithium_metal:
            x = 1.0 / (t_ch + KELVIN) - 1.0 / T_REF_K
            ccd = self._ccd[0] * exp(-self._ccd[1] / R_GAS * x)
            ccd_A = self._ccd[2] * ccd * self._ccd[3] * 1e-3 * self._npar
        x = 1.0 / (t_lo + KELVIN) - 1.0 / T_REF_K
        r_cell = (a[0] * exp(a[1] * x) + a[2] * exp(a[3] * x) + a[4] * exp(a[5] * x)) * (1.0 + self._r_margin)
        self._v[16] = 1.0
        self._key[0], self._key[1] = t_lo, t_hi
        self._factors[0], self._factors[1], self._factors[2], self._factors[3] = f_t, rate, ccd_A, r_cell

    cdef bint _sop(self, est, double* dis, double* ch) except -1:
        """The estimator's model-based limits at the horizon nearest ``limit_horizon_s`` (False: none valid)."""
        sop = getattr(est, "sop", None)
        if sop is None:
            return False
        if self._sop_index is None:
            horizons = list(getattr(sop, "horizons_s", ()))
            h = self._horizon_s
            self._sop_index = min(range(len(horizons)), key=lambda k: abs(horizons[k] - h)) if horizons else -1
        if self._sop_index < 0:
            return False
        k = self._sop_index
        d = getattr(sop, "discharge_current_model_A", sop.discharge_current_A)
        c = getattr(sop, "charge_current_model_A", sop.charge_current_A)
        dis[0], ch[0] = float(d[k]), float(c[k])
        return isfinite(dis[0]) and dis[0] >= 0 and isfinite(ch[0]) and ch[0] >= 0

    cdef int _update_limits(self, double current, double dts, double soc, double soc_hi, est, int state,
                            bint opening) except -1:
        cdef double* o = self._out
        cdef double n_valid_v = o[OUT_N_VALID_V], n_valid_t = o[OUT_N_VALID_T]
        cdef double v_min, v_max, v_mean, t_lo, t_hi, f_t, rate, ccd_A, r_cell, i_cell, dis_d, ch_d
        cdef double v_floor, v_ceiling, peak, cont, budget, i_volt, dis, ch, taper, sop_dis, sop_ch, ocv
        cdef double p_dis, p_ch, grace, ref, value, r_fast, r, soc_factor
        cdef int k, npar = self._npar
        if n_valid_v <= 0 or n_valid_t <= 0 or not isfinite(current):
            self._cap[0] = self._cap[1] = self._cap[2] = self._cap[3] = 0.0
            self._publish(state, opening)
            return 0
        v_min, v_max = o[OUT_V_MIN], o[OUT_V_MAX]
        v_mean = o[OUT_V_SUM] / n_valid_v
        t_lo, t_hi = o[OUT_T_MIN], o[OUT_T_MAX]
        if self._v[3] < t_lo:
            t_lo = self._v[3]
        if self._v[4] > t_hi:
            t_hi = self._v[4]
        self._temperature_factors(t_lo, t_hi)
        f_t, rate, ccd_A, r_cell = self._factors[0], self._factors[1], self._factors[2], self._factors[3]
        # beyond a voltage limit the current comes back at the pace of the bulk resistance (see the twin)
        r_fast = self._arr[0] * exp(self._arr[1] * (1.0 / (t_lo + KELVIN) - 1.0 / T_REF_K))
        if soc == soc:
            soc = clip01(soc)
            soc_factor = 1.0 + self._r_soc_curvature * (soc - 0.5) * (soc - 0.5)
            r_cell *= soc_factor
            r_fast *= soc_factor
        i_cell = current / npar
        dis_d, ch_d = self._v[7], self._v[8]
        v_floor, v_ceiling = self._v_floor, self._v_ceiling

        peak, cont = self._peak_A, self._cont_A
        budget = self._v[6]
        if current > cont and peak > cont:
            budget -= (current - cont) / (peak - cont) * dts / self._peak_duration_s
        else:
            budget += dts / self._peak_recovery_s
        self._v[6] = budget = clip01(budget)
        r = r_cell if v_min >= v_floor else r_fast
        i_volt = npar * (v_min + i_cell * r - v_floor) / r
        dis = pymax(0.0, pymin((cont + (peak - cont) * budget) * f_t, i_volt)) * dis_d

        if soc_hi == soc_hi and soc_hi > self._taper_soc and rate > 0 and self._taper_soc < 1:
            taper = rate * (1.0 - soc_hi) / (1.0 - self._taper_soc)
            rate = pymin(rate, pymax(taper, self._taper_floor))
        r = r_cell if v_max <= v_ceiling else r_fast
        i_volt = npar * (v_ceiling - (v_max + i_cell * r)) / r
        ch = pymax(0.0, pymin(pymin(rate * self._capacity_Ah, ccd_A), i_volt)) * ch_d

        if est is not None and self._sop(est, &sop_dis, &sop_ch):
            dis, ch = pymin(dis, sop_dis), pymin(ch, sop_ch)
        dis, ch = pymin(dis, peak), pymin(ch, self._charge_max_A)
        ocv = pymin(pymax(v_mean + i_cell * r_cell, v_floor), v_ceiling)
        p_dis = dis * self._ns * pymax(v_floor, ocv - dis / npar * r_cell) if dis > 0 else 0.0
        p_ch = ch * self._ns * pymin(v_ceiling, ocv + ch / npar * r_cell) if ch > 0 else 0.0
        self._cap[0], self._cap[1], self._cap[2], self._cap[3] = dis, ch, p_dis, p_ch
        lim = self._publish(state, opening)

        grace = self._grace_s
        for k in range(2):
            value = lim[k]
            ref = self._oc_ref[k]
            if value < ref:
                ref = value if grace <= 0 else ref + (value - ref) * (1.0 - exp(-dts / grace))
                self._oc_ref[k] = ref
                self._inp[IN_DIS_REF + k] = ref
        return 0

    # --- publication ------------------------------------------------------------------------------
    def publish(self, int state, bint opening):
        """The limits by state written to the owner (see the twin). Returns the limits."""
        return self._publish(state, opening)

    cdef object _publish(self, int state, bint opening):
        cdef bint closed = state == READY or state == CHARGING
        cdef double value
        cdef int k
        if opening or not closed:
            limits = self._zero_limits
        elif state == READY:
            limits = tuple.__new__(self._limits_type, (self._cap[0], self._cap[1], self._cap[2], self._cap[3]))
        else:
            limits = tuple.__new__(self._limits_type, (0.0, self._cap[1], 0.0, self._cap[3]))
        current = self._owner.limits
        if limits != current:
            self._owner.limits = limits
            for k in range(2):
                value = limits[k]
                if value > self._oc_ref[k]:
                    self._oc_ref[k] = value
                    self._inp[IN_DIS_REF + k] = value
        else:
            limits = current
        self._inp[IN_OC_ENABLE] = 1.0 if (closed and not opening) else 0.0
        if state != CHARGING or opening:
            self._owner.charge_request_A = 0.0
        return limits


cdef class BuiltinTick:
    """One emulator tick with the built-in firmware in one call (see the twin)."""
    cdef object _plant_step, _sensors, _sample, _estimator, _bms, _protection_tick, _owners
    cdef EstimatorFeed _feed
    cdef double* _cursor
    cdef double* _reading
    cdef double _noise_size, _dt_s
    cdef int _n_channels, _i_current
    cdef bint _initialised

    def __init__(self, pack, sensors, estimator, bms, double dt_s):
        self._owners = owners = []
        self._plant_step = pack._kernel.step
        self._sensors = sensors
        s = sensors.state
        self._sample = sensors._kernel.sample
        self._noise_size = s.noise.size
        self._n_channels = s.n_channels
        self._cursor = dptr(s.noise_cursor, 1, "noise_cursor", owners)
        self._reading = dptr(s.reading, s.reading.size, "reading", owners)
        self._i_current = sensors._i_current
        self._estimator = estimator
        feed = getattr(estimator, "_feed", None) if estimator is not None else None
        self._feed = feed if isinstance(feed, EstimatorFeed) else None
        if estimator is not None and feed is not None and self._feed is None:
            raise InputError("estimator", "an estimator built with the compiled kernels", type(feed).__name__)
        self._initialised = False
        self._bms = bms
        self._protection_tick = bms._tick
        self._dt_s = dt_s

    def tick(self, long long ticks, double load_current_A, double coolant_C, double cooling_factor):
        cdef double dt = self._dt_s
        cdef double t = ticks * dt
        cdef EstimatorFeed feed = self._feed
        self._plant_step(dt, load_current_A, coolant_C, cooling_factor)
        if self._cursor[0] + self._n_channels > self._noise_size:
            self._sensors._refill_noise()
        self._sample(t)
        est = self._estimator
        if est is not None:
            if feed is not None and est._initialised and feed._v[4] == dt:
                feed._update(dt, self._reading[self._i_current], False)
            else:
                est.update(t, dt)
        bms = self._bms
        events = self._protection_tick(t, dt)
        if events or bms._busy:
            bms._service(events, t)
        return t
