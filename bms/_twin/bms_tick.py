"""The built-in firmware's per-tick bookkeeping and the BMS's 100 ms task: the readable specification of
ext/bms_tick.pyx (same classes, same signatures, the same results bit for bit).

``EstimatorFeed``  what ``PackEstimator.update`` does around its tick kernel every tick: which readings are new
                   (the sensor layer's schedule), the current sensor's zero while no current can flow, the
                   100 ms count that starts the slow kernel.
``SlowTask``       the numeric part of the BMS's 100 ms task: rest detection, the SOC and coldest-core fallbacks,
                   temperature factors, the published limits (state of power, tables, voltage limits, peak-current
                   budget, derating), their publication by state and the over-current reference's grace lag.
``BuiltinTick``    one tick of the emulator with the built-in firmware in one call: plant, sensors, estimator,
                   protection kernel; the BMS's Python runs only when the kernel reports an event or a sequence
                   is busy.
``group_soc``      the charge-weighted SOC of each series group (the plant's truth, for the recording).
``fill_noise``     a block of sensor noise from the generator's raw words and the normal's quantile table.
``Observer``       what a recording takes of the truth and the estimator every 100 ms, in one call.
``extrema``        the minimum and maximum of an array as ``numpy.minimum.reduce``/``maximum.reduce`` give them
                   (NaN if any value is NaN).
"""
from __future__ import annotations

import bisect
import math

import numpy as np

from .. import _protection as L
from .._layout import MAIN_NEGATIVE, MAIN_POSITIVE, PRECHARGE

__all__ = ["EstimatorFeed", "SlowTask", "BuiltinTick", "Observer", "extrema", "group_soc", "fill_noise",
           "CURRENT_ZERO_SAMPLES"]

# the current sensor's zero is the running mean of this many readings with no current path, then a moving one
CURRENT_ZERO_SAMPLES = 1000
R_GAS = 8.314462618
T_REF_K = 298.15
KELVIN = 273.15
# BmsState values (bms.firmware.types; the kernels take the state as an int)
INIT, STANDBY, PRECHARGE_STATE, READY, CHARGING, FAULT, SHUTDOWN = range(7)

_min, _max = np.minimum.reduce, np.maximum.reduce


def extrema(values) -> tuple[float, float]:
    """``(min, max)`` of a float array (NaN if any value is NaN, as numpy's reductions)."""
    return float(_min(values)), float(_max(values))


def _interp(x: float, xs: tuple, ys: tuple) -> float:
    """Piecewise-linear table lookup, clamped at the ends."""
    if not x > xs[0]:
        return ys[0] if x == x else math.nan
    if x >= xs[-1]:
        return ys[-1]
    k = bisect.bisect_right(xs, x)
    x0, x1 = xs[k - 1], xs[k]
    return ys[k - 1] + (x - x0) / (x1 - x0) * (ys[k] - ys[k - 1])


def group_soc(soc: np.ndarray, capacity_Ah: np.ndarray, n_parallel: int) -> np.ndarray:
    """Charge-weighted SOC of each series group of ``n_parallel`` cells: the cells' charge and capacity added
    in order, column by column (what ``.sum(1)`` gives for fewer than 8 cells in parallel), then divided."""
    shape = (soc.size // n_parallel, n_parallel)
    charge_Ah, cap_Ah = (soc * capacity_Ah).reshape(shape), capacity_Ah.reshape(shape)
    charge, capacity = charge_Ah[:, 0], cap_Ah[:, 0]
    for k in range(1, n_parallel):
        charge, capacity = charge + charge_Ah[:, k], capacity + cap_Ah[:, k]
    return charge / capacity


def fill_noise(words: np.ndarray, levels: np.ndarray, out: np.ndarray) -> None:
    """``out`` from the little-endian 16-bit slices of the 64-bit ``words`` as indices into ``levels``."""
    levels.take(words.astype("<u8", copy=False).view("<u2"), out=out, mode="wrap")  # every index is in range


class Observer:
    """What a recording takes of the truth and of the estimator's belief, in one call (``values()``):
    ``(soc_true, soc_estimated, soc_3sigma_mean, cell_voltage_min_V, cell_voltage_max_V, temp_core_max_C,
    temp_surface_max_C, temp_core_est_max_C)``, each as ``Pack.soc``, ``PackEstimator.pack_soc``, the mean of
    ``group_soc_3sigma`` and the reductions of the arrays give it (the estimator's three NaN without one).

    ``plant`` is the pack's ``PlantState``; ``estimator`` a ``PackEstimator`` (its state's arrays) or None.
    """

    def __init__(self, plant, n_parallel: int, estimator=None):
        self._plant, self._n_parallel = plant, int(n_parallel)
        self._est = estimator

    def values(self) -> tuple:
        s = self._plant
        group = group_soc(s.soc, s.capacity_Ah, self._n_parallel)
        soc_true = float(np.add.reduce(group) / group.size)
        v_min, v_max = extrema(s.group_voltage_V)
        out = (soc_true, math.nan, math.nan, v_min, v_max, extrema(s.temp_core_C)[1], extrema(s.temp_surface_C)[1],
               math.nan)
        est = self._est
        if est is None:
            return out
        n, cap = group.size, est.state.capacity_cell_Ah
        soc_est = float(np.add.reduce(est.group_soc * cap) / np.add.reduce(cap))
        sigma = 3.0 * np.sqrt(est.state.cov[:n])
        return (out[0], soc_est, float(np.add.reduce(sigma) / sigma.size), *out[3:7], extrema(est.core_temp_C)[1])


class EstimatorFeed:
    """Per-tick bookkeeping of ``PackEstimator`` around its tick and slow kernels.

    ``feedback``: the contactor feedback readings (main+, main-, precharge; None: no zero tracking);
    ``zero_max_A``: a reading beyond this is current that flows, never the zero; ``slow_period_s``: the
    slow kernel runs when this much time has been counted.
    """

    def __init__(self, tick_kernel, slow_kernel, feedback, zero_max_A: float, slow_period_s: float):
        self._tick, self._slow = tick_kernel.tick, slow_kernel.update
        self._feedback = feedback
        self.zero_max_A = float(zero_max_A)
        self.slow_period_s = float(slow_period_s)
        self.current_zero_A = 0.0
        self.zero_n = 0
        self.since_slow_s = 0.0
        self.thermal_dt_s = math.nan       # the tick length the thermal gains were made for (set by the owner)
        self._next = None
        self._v_channel = self._t_channel = 0
        self._last_v_due = self._last_t_due = math.nan

    def schedule(self, next_sample_s, v_channel: int, t_channel: int) -> None:
        """The sensor layer's next-sample times (None: every update brings new readings) and the first
        voltage and temperature channel: a change of their due time means a new sample."""
        self._next = next_sample_s
        self._v_channel, self._t_channel = int(v_channel), int(t_channel)

    def update(self, dt_s: float, current_A: float, first: bool = False) -> None:
        """One tick: the tick kernel on the zero-corrected current; unless ``first``, the 100 ms count."""
        nxt = self._next
        if nxt is None:
            new_v = new_t = True
        else:
            v_due, t_due = float(nxt[self._v_channel]), float(nxt[self._t_channel])
            new_v, new_t = v_due != self._last_v_due, t_due != self._last_t_due
            self._last_v_due, self._last_t_due = v_due, t_due
        fb = self._feedback
        if fb is not None and not (fb[MAIN_NEGATIVE] > 0.5 and (fb[MAIN_POSITIVE] > 0.5 or fb[PRECHARGE] > 0.5)):
            if abs(current_A) <= self.zero_max_A:  # also False for NaN
                self.zero_n = min(self.zero_n + 1, CURRENT_ZERO_SAMPLES)
                self.current_zero_A += (current_A - self.current_zero_A) / self.zero_n
        self._tick(dt_s, current_A - self.current_zero_A, new_v, new_t)
        if first:
            return
        self.since_slow_s += dt_s
        if self.since_slow_s >= self.slow_period_s:
            self._slow()
            self.since_slow_s = 0.0


class SlowTask:
    """The numeric part of the built-in BMS's 100 ms task (``Bms._slow``) and the publication of its limits.

    ``owner`` is the ``Bms``: the task writes its ``limits`` (a ``Limits``, ``zero_limits`` when not closed)
    and zeroes its ``charge_request_A`` outside CHARGING. ``out``/``inp`` are the protection kernel's output
    and input vectors, ``reading`` the sensor readings (``i_current`` the current channel).
    """

    def __init__(self, owner, params, config, out, inp, reading, i_current: int, limits_type, zero_limits):
        c, cell = config, params.cell
        self._owner, self._out, self._inp, self._reading = owner, out, inp, reading
        self._i_current = int(i_current)
        self._limits_type, self._zero_limits = limits_type, zero_limits
        self._ocv, self._soc_grid = np.array(cell.ocv_V), np.linspace(0.0, 1.0, len(cell.ocv_V))
        self._ns, self._npar, self._capacity_Ah = params.n_series, params.n_parallel, params.capacity_Ah
        self._charge_max_A = max(cell.charge_limit_C_rate) * params.capacity_Ah
        self._peak_A = cell.discharge_peak_C_rate * params.capacity_Ah
        self._cont_A = cell.discharge_continuous_C_rate * params.capacity_Ah
        self._peak_duration_s = cell.discharge_peak_duration_s
        self._v_floor = max(cell.voltage_min_V, c.cell_undervoltage_warning_V) + c.voltage_limit_margin_V
        self._v_ceiling = min(cell.voltage_max_V, c.cell_overvoltage_warning_V) - c.voltage_limit_margin_V
        r_x = 1.0 / R_GAS
        self._arrhenius = (cell.r0_ohm, cell.r0_activation_J_per_mol * r_x,
                           cell.r1_ohm * (1.0 - math.exp(-c.limit_horizon_s / cell.tau1_s)),
                           cell.r1_activation_J_per_mol * r_x,
                           cell.r2_ohm * (1.0 - math.exp(-c.limit_horizon_s / cell.tau2_s)),
                           cell.r2_activation_J_per_mol * r_x)
        self._rest_A, self._rest_s = c.rest_current_A, c.rest_time_s
        self._lag_s = c.core_temperature_lag_s
        self._derate_t = tuple(c.discharge_derate_temp_C)
        self._derate_f = tuple(c.discharge_derate_factor)
        self._charge_margin_K = c.temperature_charge_margin_K
        self._charge_t = tuple(cell.charge_limit_temp_C)
        self._charge_c = tuple(cell.charge_limit_C_rate)
        self._t_charge_min, self._t_hard_max = cell.temp_charge_min_C, cell.temp_hard_max_C
        self._lithium_metal = bool(cell.lithium_metal)
        self._ccd = (cell.ccd_25C_mA_per_cm2, cell.ccd_activation_J_per_mol, cell.ccd_safety_factor,
                     cell.electrode_area_cm2)
        self._r_margin = c.resistance_margin
        self._r_soc_curvature = cell.resistance_soc_curvature
        self._taper_soc, self._taper_floor = cell.charge_taper_soc, c.charge_taper_floor_C_rate
        self._peak_recovery_s = c.peak_recovery_s
        self._grace_s = c.overcurrent_limit_grace_s
        self._horizon_s = c.limit_horizon_s
        self._sp_soc = (c.stack_pressure_soc_min, c.stack_pressure_soc_max)
        self._imb_soc = (c.cell_imbalance_soc_min, c.cell_imbalance_soc_max)
        self._sop_index: int | None = None
        # state
        self.soc = math.nan                       # the fallback SOC (no estimator) and its spread
        self.soc_lo = self.soc_hi = 0.0
        self.core_cold_C = self.core_hot_C = math.nan  # comparisons with nan are false: no effect
        self.current_A = math.nan                 # the current read by the last update
        self.peak_budget = 1.0
        self.derate_discharge = self.derate_charge = 1.0   # from the protections at warning level
        self.capability = (0.0, 0.0, 0.0, 0.0)   # limits before gating by state
        self._rest_since = 0.0
        self._oc_ref = [0.0, 0.0]
        self._temp_key: tuple[float, float] | None = None
        self._temp_factors = (0.0, 0.0, 0.0, 0.0)

    # --- the 100 ms task ------------------------------------------------------------------------
    def update(self, t: float, est, state: int, opening: bool) -> bool:
        """The slow task at ``t``: ``est`` the estimator when it is ready (else None), ``state`` the BMS state,
        ``opening`` whether an open sequence runs. Returns whether the pack has rested ``rest_time_s``."""
        o = self._out
        dts = float(o[L.OUT_SLOW_DT])
        current = float(self._reading[self._i_current])
        self.current_A = current
        if abs(current) < self._rest_A:
            rested = t - self._rest_since >= self._rest_s
        else:
            self._rest_since = t
            rested = False
        if est is not None:
            soc_lo, soc_hi = extrema(est.group_soc)
        else:
            self._update_soc(current, dts, rested)
            soc_lo, soc_hi = self.soc - self.soc_lo, self.soc + self.soc_hi
        # the stack-pressure regression and the imbalance check only where the OCV is not steep (nan: not judged)
        self._inp[L.IN_SP_SOC_OK] = 1.0 if self._sp_soc[0] <= soc_lo and soc_hi <= self._sp_soc[1] else 0.0
        mid = 0.5 * (soc_lo + soc_hi)
        self._inp[L.IN_IMB_SOC_OK] = 1.0 if self._imb_soc[0] <= mid <= self._imb_soc[1] else 0.0
        self._update_core(dts, est)
        self._update_limits(current, dts, mid, soc_hi, est, state, opening)
        return rested

    def _ocv_inverse(self, v: float) -> float:
        return float(np.interp(v, self._ocv, self._soc_grid))

    def _update_soc(self, current: float, dts: float, rested: bool) -> None:
        """Without an estimator: a coulomb count anchored on the rested OCV."""
        o = self._out
        n_valid = float(o[L.OUT_N_VALID_V])
        if n_valid <= 0:
            return
        if math.isnan(self.soc) or rested:
            mean = float(o[L.OUT_V_SUM]) / n_valid
            self.soc = self._ocv_inverse(mean)
            self.soc_lo = self.soc - self._ocv_inverse(float(o[L.OUT_V_MIN]))
            self.soc_hi = self._ocv_inverse(float(o[L.OUT_V_MAX])) - self.soc
        elif math.isfinite(current):
            self.soc -= current * dts / 3600.0 / self._capacity_Ah

    def _update_core(self, dts: float, est) -> None:
        """The coldest core temperature: the estimator's, else a first-order lag of the coldest sensor."""
        o, inp = self._out, self._inp
        t_min = float(o[L.OUT_T_MIN])
        core = getattr(est, "core_temp_C", None)
        if core is not None and len(core):
            self.core_cold_C, core_hot = extrema(core)
        else:
            if math.isnan(self.core_cold_C):
                self.core_cold_C = t_min
            elif math.isfinite(t_min):
                self.core_cold_C += (t_min - self.core_cold_C) * (1.0 - math.exp(-dts / self._lag_s))
            core_hot = math.nan
        inp[L.IN_CORE_MIN] = self.core_cold_C if math.isfinite(self.core_cold_C) else math.nan
        self.core_hot_C = core_hot
        # the stack-pressure reference: datasheet R0 of a group at the sensors' median (one stuck or drifting
        # sensor moved the mean of the extremes: 2.5x too low a reference, a false warning), else their mean
        t_ref = float(o[L.OUT_T_MEDIAN])
        if not math.isfinite(t_ref):
            t_ref = 0.5 * (t_min + float(o[L.OUT_T_MAX]))
        if math.isfinite(t_ref):
            r0, e0 = self._arrhenius[:2]
            inp[L.IN_R_REF] = r0 * math.exp(e0 * (1.0 / (t_ref + KELVIN) - 1.0 / T_REF_K)) / self._npar

    def _temperature_factors(self, t_lo: float, t_hi: float) -> tuple[float, float, float, float]:
        """The discharge derating factor, the charge C-rate from the cell's table (zero below the charge
        minimum, with the sensor margin), the lithium-metal CCD limit (A, pack) and the datasheet resistance
        of one cell for the limit horizon at the coldest temperature, with the margin (cached: readings move
        in 0.1 K steps)."""
        key = (t_lo, t_hi)
        if key == self._temp_key:
            return self._temp_factors
        f_t = min(_interp(t_lo, self._derate_t, self._derate_f), _interp(t_hi, self._derate_t, self._derate_f))
        t_ch = t_lo - self._charge_margin_K
        if t_ch < self._t_charge_min or t_hi > self._t_hard_max:
            rate = 0.0
        else:
            rate = min(_interp(t_ch, self._charge_t, self._charge_c), _interp(t_hi, self._charge_t, self._charge_c))
        ccd_A = math.inf
        if self._lithium_metal:
            ccd_25, ccd_e, ccd_safety, area = self._ccd
            x = 1.0 / (t_ch + KELVIN) - 1.0 / T_REF_K
            ccd = ccd_25 * math.exp(-ccd_e / R_GAS * x)
            ccd_A = ccd_safety * ccd * area * 1e-3 * self._npar
        r0, e0, r1, e1, r2, e2 = self._arrhenius
        x = 1.0 / (t_lo + KELVIN) - 1.0 / T_REF_K
        r_cell = (r0 * math.exp(e0 * x) + r1 * math.exp(e1 * x) + r2 * math.exp(e2 * x)) * (1.0 + self._r_margin)
        self._temp_key, self._temp_factors = key, (f_t, rate, ccd_A, r_cell)
        return self._temp_factors

    def _sop(self, est):
        """The estimator's model-based limits at the horizon nearest ``limit_horizon_s`` (None: none valid)."""
        sop = getattr(est, "sop", None)
        if sop is None:
            return None
        if self._sop_index is None:
            horizons = list(getattr(sop, "horizons_s", ()))
            h = self._horizon_s
            self._sop_index = min(range(len(horizons)), key=lambda k: abs(horizons[k] - h)) if horizons else -1
        if self._sop_index < 0:
            return None
        k = self._sop_index
        dis = getattr(sop, "discharge_current_model_A", sop.discharge_current_A)
        ch = getattr(sop, "charge_current_model_A", sop.charge_current_A)
        values = (float(dis[k]), float(ch[k]))
        return values if all(math.isfinite(v) and v >= 0 for v in values) else None

    def _update_limits(self, current: float, dts: float, soc: float, soc_hi: float, est, state: int,
                       opening: bool) -> None:
        """The limits the BMS would publish in READY/CHARGING (``capability``), then published by state."""
        o = self._out.tolist()
        n_valid_v, n_valid_t = o[L.OUT_N_VALID_V], o[L.OUT_N_VALID_T]
        if n_valid_v <= 0 or n_valid_t <= 0 or not math.isfinite(current):
            self.capability = (0.0, 0.0, 0.0, 0.0)
            self.publish(state, opening)
            return
        ns, npar = self._ns, self._npar
        v_min, v_max = o[L.OUT_V_MIN], o[L.OUT_V_MAX]
        v_mean = o[L.OUT_V_SUM] / n_valid_v
        t_lo, t_hi = o[L.OUT_T_MIN], o[L.OUT_T_MAX]
        if self.core_cold_C < t_lo:
            t_lo = self.core_cold_C
        if self.core_hot_C > t_hi:
            t_hi = self.core_hot_C
        f_t, rate, ccd_A, r_cell = self._temperature_factors(t_lo, t_hi)
        # beyond a voltage limit the current comes back at the pace of the bulk resistance (the cell's instant
        # response): the horizon's datasheet resistance with its margin cut too little, and cold cells sank
        # 20-30 mV past the limit while the RC pairs charged (an undervoltage warning with the VCU obeying)
        r0, e0 = self._arrhenius[:2]
        r_fast = r0 * math.exp(e0 * (1.0 / (t_lo + KELVIN) - 1.0 / T_REF_K))
        if soc == soc:
            soc = 0.0 if soc < 0.0 else (1.0 if soc > 1.0 else soc)
            soc_factor = 1.0 + self._r_soc_curvature * (soc - 0.5) * (soc - 0.5)
            r_cell *= soc_factor
            r_fast *= soc_factor
        i_cell = current / npar
        dis_d, ch_d = self.derate_discharge, self.derate_charge
        v_floor, v_ceiling = self._v_floor, self._v_ceiling

        # discharge: peak-current budget, temperature derating, voltage limit
        peak, cont = self._peak_A, self._cont_A
        budget = self.peak_budget
        if current > cont and peak > cont:
            budget -= (current - cont) / (peak - cont) * dts / self._peak_duration_s
        else:
            budget += dts / self._peak_recovery_s
        self.peak_budget = budget = 0.0 if budget < 0.0 else (1.0 if budget > 1.0 else budget)
        r = r_cell if v_min >= v_floor else r_fast
        i_volt = npar * (v_min + i_cell * r - v_floor) / r
        dis = max(0.0, min((cont + (peak - cont) * budget) * f_t, i_volt)) * dis_d

        # charge: temperature table, SOC taper, lithium-metal CCD, voltage limit (the CV phase)
        taper_soc = self._taper_soc
        if soc_hi == soc_hi and soc_hi > taper_soc and rate > 0 and taper_soc < 1:
            taper = rate * (1.0 - soc_hi) / (1.0 - taper_soc)
            rate = min(rate, max(taper, self._taper_floor))
        r = r_cell if v_max <= v_ceiling else r_fast
        i_volt = npar * (v_ceiling - (v_max + i_cell * r)) / r
        ch = max(0.0, min(rate * self._capacity_Ah, ccd_A, i_volt)) * ch_d

        # the estimator's model-based SOP (the BMS applies its own tables and derating), then the power at
        # the pack voltage the limit current would give
        sop = self._sop(est) if est is not None else None
        if sop is not None:
            dis, ch = min(dis, sop[0]), min(ch, sop[1])
        dis, ch = min(dis, peak), min(ch, self._charge_max_A)
        ocv = min(max(v_mean + i_cell * r_cell, v_floor), v_ceiling)
        p_dis = dis * ns * max(v_floor, ocv - dis / npar * r_cell) if dis > 0 else 0.0
        p_ch = ch * ns * min(v_ceiling, ocv + ch / npar * r_cell) if ch > 0 else 0.0
        self.capability = (dis, ch, p_dis, p_ch)
        lim = self.publish(state, opening)

        # the over-current check follows falling limits with a grace lag (rising ones at once)
        grace = self._grace_s
        for k, value in enumerate((lim.discharge_current_A, lim.charge_current_A)):
            ref = self._oc_ref[k]
            if value < ref:
                ref = value if grace <= 0 else ref + (value - ref) * (1.0 - math.exp(-dts / grace))
                self._oc_ref[k] = ref
                self._inp[L.IN_DIS_REF + k] = ref

    # --- publication ------------------------------------------------------------------------------
    def publish(self, state: int, opening: bool):
        """The limits by state (``capability`` in READY, its charge half in CHARGING, zero otherwise and while
        opening) written to the owner; over-current references rise with them at once. Returns the limits."""
        owner, inp = self._owner, self._inp
        closed = state == READY or state == CHARGING
        if opening or not closed:
            limits = self._zero_limits
        else:
            dis, ch, p_dis, p_ch = self.capability
            limits = self._limits_type(dis, ch, p_dis, p_ch) if state == READY else \
                self._limits_type(0.0, ch, 0.0, p_ch)
        if limits != owner.limits:
            owner.limits = limits
            for k, value in enumerate((limits.discharge_current_A, limits.charge_current_A)):
                if value > self._oc_ref[k]:
                    self._oc_ref[k] = value
                    inp[L.IN_DIS_REF + k] = value
        else:
            limits = owner.limits
        inp[L.IN_OC_ENABLE] = 1.0 if (closed and not opening) else 0.0
        if state != CHARGING or opening:
            owner.charge_request_A = 0.0
        return limits


class BuiltinTick:
    """One emulator tick with the built-in firmware: plant step, sensor sample (the noise block refilled
    when it runs out), estimator feed (or the estimator's own update until it is initialised), protection
    kernel, and ``bms._service`` when the kernel reports an event or a sequence is busy.

    ``tick(ticks, load_current_A, coolant_C, cooling_factor)`` runs tick number ``ticks`` (its end time
    ``ticks * dt_s``) and returns that time.
    """

    def __init__(self, pack, sensors, estimator, bms, dt_s: float):
        self._plant_step = pack._kernel.step
        self._sensors = sensors
        self._state = s = sensors.state
        self._sample = sensors._kernel.sample
        self._noise_size = s.noise.size
        self._n_channels = s.n_channels
        self._cursor = s.noise_cursor
        self._reading = s.reading
        self._i_current = sensors._i_current
        self._estimator = estimator
        self._feed = getattr(estimator, "_feed", None) if estimator is not None else None
        self._bms = bms
        self._protection_tick = bms._tick
        self._dt_s = float(dt_s)

    def tick(self, ticks: int, load_current_A: float, coolant_C: float, cooling_factor: float) -> float:
        dt = self._dt_s
        t = ticks * dt
        self._plant_step(dt, load_current_A, coolant_C, cooling_factor)
        if self._cursor[0] + self._n_channels > self._noise_size:
            self._sensors._refill_noise()
        self._sample(t)
        est = self._estimator
        if est is not None:
            feed = self._feed
            if feed is not None and est._initialised and feed.thermal_dt_s == dt:
                feed.update(dt, float(self._reading[self._i_current]))
            else:
                est.update(t, dt)
        bms = self._bms
        events = self._protection_tick(t, dt)
        if events or bms._busy:
            bms._service(events, t)
        return t
