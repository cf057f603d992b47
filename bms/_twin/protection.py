"""NumPy twin of ext/protection.pyx: the BMS's per-tick and per-cell checks, the readable specification.

Same constructor, ``tick`` and ``balance`` signatures as the compiled ``bms._ext.protection.ProtectionKernel``.

Every tick (cheap, scalar): over-current against the published limits (and short circuit), current
sensor range/offset/stuck, contactor feedback and weld, DC-link/pack mismatch, VCU and charger
deadlines. Every slow period (``IN_SLOW_PERIOD``, default 100 ms), per channel: cell-voltage plausibility
(range, stuck), over/under voltage, imbalance, pack-voltage/cell-sum mismatch, per-group resistance
regression (stack pressure), temperature plausibility (range, disagreement with the median and with the
module's other sensor), over/under temperature in the discharge and (while charging) charge windows,
temperature rise rate. Levels are debounced per channel (see bms/_protection.py); a protection's level is
the highest of its channels; the published level is the higher of the kernel's and the Python side's.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _protection as L
from .._layout import MAIN_NEGATIVE, MAIN_POSITIVE
from ..errors import InputError
from ..faults import N_PROTECTIONS
from ..faults import Protection as P

TOLERANCE_S = 1e-9
FEEDBACK_CLOSED = 0.5


def raw_levels(x, t0, t1, t2):
    """Highest level whose threshold ``x`` is beyond (0: none); NaN is beyond nothing."""
    x = np.asarray(x, dtype=float)
    return np.where(x > t2, 3, np.where(x > t1, 2, np.where(x > t0, 1, 0)))


def debounce(raw, clear_ok, deb, dt, tm, lv):
    """One debounce step for channels ``raw`` (levels now); ``tm`` (n, 4) and ``lv`` (n,) change in place."""
    new = np.zeros(lv.shape, dtype=np.int64)
    for k in range(3):
        beyond = raw > k
        tm[:, k] = np.where(beyond, tm[:, k] + dt, 0.0)
        new = np.where(beyond & (tm[:, k] >= deb[k]), k + 1, new)
    up = new > lv
    clearing = (new < lv) & clear_ok
    tm3 = np.where(clearing, tm[:, 3] + dt, 0.0)
    done = clearing & (tm3 >= deb[3])
    lv[:] = np.where(up | done, new, lv)
    tm[:, 3] = np.where(done, 0.0, tm3)


def debounce_scalar(raw, clear_ok, deb, dt, tm, lv, i):
    """``debounce`` for one channel ``i`` of ``tm``/``lv``."""
    debounce(np.array([raw]), np.array([clear_ok]), deb, dt, tm[i:i + 1], lv[i:i + 1])


def clear_ok_over(x, thr, lv):
    """Back inside the current level's threshold minus the hysteresis."""
    at = thr[np.clip(lv.astype(np.int64) - 1, 0, 2)]
    return x <= at - thr[3]


def first_index(mask):
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else -1


def seq_sum(values):
    """Left-to-right sum (the compiled kernel's order, so both round alike)."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0


class ProtectionKernel:
    """Binds a ProtectionState, the sensor readings and the plant's contactor command and balancing."""

    def __init__(self, state, sensors, plant, pack):
        self.s, self.sensors, self.plant = state, sensors, plant
        ns, nt = state.n_series, state.n_temp
        if ns != pack.n_series:
            raise InputError("n_series", f"{pack.n_series}", ns)
        if sensors.reading.shape != (ns + nt + 6,):
            raise InputError("reading", f"{ns + nt + 6} values", sensors.reading.shape)
        if plant.balancing.shape != (ns,):
            raise InputError("balancing", f"{ns} values", plant.balancing.shape)
        self.ns, self.nt, self.per_module = ns, nt, state.sensors_per_module
        self.i_cur = ns + nt
        self.module = np.arange(nt) // self.per_module

    # --- every tick -----------------------------------------------------------------------------
    def tick(self, t_s, dt_s):
        if not math.isfinite(t_s):
            raise InputError("t_s", "a finite time", t_s)
        if not (math.isfinite(dt_s) and dt_s > 0):
            raise InputError("dt_s", "a finite time step > 0 s", dt_s)
        s, inp, par, r = self.s, self.s.inp, self.s.par, self.sensors.reading
        t, dt = float(t_s), float(dt_s)
        I = float(r[self.i_cur])
        cmd = self.plant.contactor_command != 0
        fb = r[self.i_cur + 3:self.i_cur + 6] > FEEDBACK_CLOSED
        mains_closed = bool(cmd[MAIN_POSITIVE] and cmd[MAIN_NEGATIVE] and fb[MAIN_POSITIVE] and fb[MAIN_NEGATIVE])

        # over-current against the published limits; short circuit whatever the limits
        enabled = inp[L.IN_OC_ENABLE] != 0.0
        for p, x, ref, em in ((P.DISCHARGE_OVERCURRENT, I, inp[L.IN_DIS_REF], par[L.PAR_OC_EM_DIS]),
                              (P.CHARGE_OVERCURRENT, -I, inp[L.IN_CH_REF], par[L.PAR_OC_EM_CH])):
            if enabled:
                t0 = ref * (1.0 + par[L.PAR_OC_WARN]) + par[L.PAR_OC_OFFSET]
                t1 = ref * (1.0 + par[L.PAR_OC_ERR]) + par[L.PAR_OC_OFFSET]
            else:
                t0 = t1 = math.inf
            thr = np.array([t0, t1, em, s.thr[p, 3]])
            self._scalar(p, int(raw_levels(x, t0, t1, em)), self._clear_ok(p, x, thr), dt, 0, x)

        # current sensor: out of range, offset with every contactor open, stuck (judged by the slow task)
        implausible = not (abs(I) <= par[L.PAR_CUR_MAX])
        all_open = not cmd.any() and not fb.any()
        thr = s.thr[P.CURRENT_SENSOR]
        raw = int(raw_levels(abs(I), thr[0], thr[1], thr[2])) if all_open else 0
        if implausible or s.ks[L.KS_CUR_STUCK_T] >= par[L.PAR_STUCK_DEB]:
            raw = 2
        self._scalar(P.CURRENT_SENSOR, raw, raw == 0, dt, 0, I)

        # contactors: commanded closed but open (feedback), commanded open but closed (welded)
        for row, p in ((0, P.CONTACTOR_FEEDBACK), (1, P.CONTACTOR_WELDED)):
            bad = (cmd & ~fb) if row == 0 else (~cmd & fb)
            raw = np.where(bad, 2, 0)
            debounce(raw, raw == 0, s.deb[p], dt, s.tm_contactor[row], s.lv_contactor[row])
        lv_fb, lv_w = s.lv_contactor
        s.own[P.CONTACTOR_FEEDBACK] = lv_fb.max()
        s.worst[P.CONTACTOR_FEEDBACK] = (int(np.argmax(lv_fb)), 0.0)
        welded = 3 if (lv_w[MAIN_POSITIVE] >= 2 and lv_w[MAIN_NEGATIVE] >= 2) else int(lv_w.max())
        s.own[P.CONTACTOR_WELDED] = welded
        s.worst[P.CONTACTOR_WELDED] = (int(np.argmax(lv_w)), 0.0)

        # DC link against the pack with the main contactors closed
        x = abs(float(r[self.i_cur + 2]) - float(r[self.i_cur + 1])) if mains_closed else 0.0
        thr = s.thr[P.LINK_VOLTAGE_MISMATCH]
        self._scalar(P.LINK_VOLTAGE_MISMATCH, int(raw_levels(x, thr[0], thr[1], thr[2])),
                     self._clear_ok(P.LINK_VOLTAGE_MISMATCH, x, thr), dt, 0, x)

        # VCU and charger deadlines
        for p, key in ((P.VCU_TIMEOUT, L.IN_VCU_DEADLINE), (P.CHARGER_TIMEOUT, L.IN_CHARGER_DEADLINE)):
            raw = 2 if t > inp[key] else 0
            self._scalar(p, raw, raw == 0, dt, 0, t - inp[key])

        events = 0
        if t >= inp[L.IN_NEXT_SLOW] - TOLERANCE_S:
            self._slow(t, I, mains_closed)
            nxt = inp[L.IN_NEXT_SLOW] + inp[L.IN_SLOW_PERIOD]
            if nxt <= t + TOLERANCE_S:
                nxt = t + inp[L.IN_SLOW_PERIOD]
            inp[L.IN_NEXT_SLOW] = nxt
            events |= L.EV_SLOW
        merged = np.maximum(s.own, s.ext)
        if (merged != s.level).any():
            s.level[:] = merged
            events |= L.EV_LEVEL
        if t >= inp[L.IN_WAKE]:
            events |= L.EV_WAKE
        return events

    def _clear_ok(self, p, x, thr):
        return bool(clear_ok_over(np.array([x]), thr, self.s.lv_scalar[p:p + 1])[0])

    def _scalar(self, p, raw, clear_ok, dt, channel, value):
        s = self.s
        debounce_scalar(raw, clear_ok, s.deb[p], dt, s.tm_scalar, s.lv_scalar, int(p))
        s.own[p] = s.lv_scalar[p]
        s.worst[p] = (channel, value)

    # --- every slow period ------------------------------------------------------------------------
    def _slow(self, t, I, mains_closed):
        s, par, inp, out, ks = self.s, self.s.par, self.s.inp, self.s.out, self.s.ks
        ns, nt, r = self.ns, self.nt, self.sensors.reading
        dts = t - ks[L.KS_LAST_SLOW] if math.isfinite(ks[L.KS_LAST_SLOW]) else inp[L.IN_SLOW_PERIOD]
        dts = max(dts, 0.0)
        ks[L.KS_LAST_SLOW] = t
        out[L.OUT_SLOW_DT] = dts

        # cell-voltage channels: plausible range, stuck while the current moved
        v = r[:ns].copy()
        implausible = ~((v >= par[L.PAR_CELL_MIN]) & (v <= par[L.PAR_CELL_MAX]))
        changed = v != s.cell_last_V
        evidence = ~changed & (np.abs(I - s.cell_ref_A) > par[L.PAR_STUCK_DI])
        s.cell_stuck_s[:] = np.where(changed, 0.0, np.where(evidence, s.cell_stuck_s + dts, s.cell_stuck_s))
        s.cell_ref_A[:] = np.where(changed, I, s.cell_ref_A)
        s.cell_last_V[:] = np.where(changed, v, s.cell_last_V)
        raw = np.where(implausible | (s.cell_stuck_s >= par[L.PAR_STUCK_DEB]), 2, 0)
        debounce(raw, raw == 0, s.deb[P.CELL_VOLTAGE_SENSOR], dts, s.tm_cell_sensor, s.lv_cell_sensor)
        valid = ~implausible & (s.lv_cell_sensor == 0)
        s.cell_valid[:] = valid
        s.own[P.CELL_VOLTAGE_SENSOR] = s.lv_cell_sensor.max()
        bad = first_index(s.lv_cell_sensor > 0)
        s.worst[P.CELL_VOLTAGE_SENSOR] = (bad, v[bad] if bad >= 0 else math.nan)

        # over- and under-voltage per channel
        for row, p, x in ((0, P.CELL_OVERVOLTAGE, v), (1, P.CELL_UNDERVOLTAGE, -v)):
            thr = s.thr[p]
            debounce(raw_levels(x, thr[0], thr[1], thr[2]), clear_ok_over(x, thr, s.lv_cell[row]), s.deb[p], dts,
                     s.tm_cell[row], s.lv_cell[row])
            s.tm_cell[row][~valid] = 0.0
            s.lv_cell[row][~valid] = 0
            s.own[p] = s.lv_cell[row].max()
        n_valid = int(valid.sum())
        if n_valid:
            vv = np.where(valid, v, np.nan)
            i_min, i_max = int(np.nanargmin(vv)), int(np.nanargmax(vv))
            v_min, v_max, v_sum = v[i_min], v[i_max], seq_sum(v[valid])
        else:
            i_min = i_max = -1
            v_min = v_max = math.nan
            v_sum = 0.0
        s.worst[P.CELL_OVERVOLTAGE] = (i_max, v_max)
        s.worst[P.CELL_UNDERVOLTAGE] = (i_min, v_min)
        out[L.OUT_V_MIN], out[L.OUT_V_MAX], out[L.OUT_V_MIN_IDX], out[L.OUT_V_MAX_IDX] = v_min, v_max, i_min, i_max
        out[L.OUT_V_SUM], out[L.OUT_N_VALID_V] = v_sum, n_valid

        # current sensor stuck: no change although the summed cell voltage moved (main contactors closed)
        if I != ks[L.KS_CUR_LAST]:
            ks[L.KS_CUR_LAST], ks[L.KS_CUR_REF_VSUM], ks[L.KS_CUR_STUCK_T] = I, v_sum, 0.0
        elif mains_closed and n_valid == ns and abs(v_sum - ks[L.KS_CUR_REF_VSUM]) > par[L.PAR_STUCK_DV]:
            ks[L.KS_CUR_STUCK_T] += dts
        ks[L.KS_VSUM] = v_sum

        # imbalance (at rest, where resistance spread does not show) and pack sensor against the cell sum
        if abs(I) <= par[L.PAR_REST_A] and inp[L.IN_IMB_SOC_OK] == 1.0:
            self._slow_scalar(P.CELL_IMBALANCE, v_max - v_min if n_valid >= 2 else 0.0, dts, i_max)
        x = abs(float(r[ns + nt + 1]) - v_sum) if n_valid == ns else 0.0
        self._slow_scalar(P.PACK_VOLTAGE_MISMATCH, x, dts, -1)

        # stack pressure: each group's resistance above the pack mean, from a running regression of its
        # low-passed voltage deviation (from the mean of the valid groups) on the low-passed current and on the
        # charge throughput (the deviations of groups at different SOCs drift apart as the pack (dis)charges)
        if math.isfinite(I) and n_valid >= 2:
            a = 1.0 - math.exp(-dts / par[L.PAR_LP_TAU])
            lam = math.exp(-dts / par[L.PAR_REG_TAU])
            lp_i = I if math.isnan(ks[L.KS_LP_I]) else ks[L.KS_LP_I] + a * (I - ks[L.KS_LP_I])
            ks[L.KS_LP_I] = lp_i
            s.lp_v[:] = np.where(valid, np.where(np.isnan(s.lp_v), v, s.lp_v + a * (v - s.lp_v)), s.lp_v)
            mean = seq_sum(s.lp_v[valid]) / n_valid
            d = s.lp_v - mean
            if inp[L.IN_SP_SOC_OK] != 1.0:   # a group's SOC outside the window: the regression starts again
                for k in (L.KS_REG_MI, L.KS_REG_MII, L.KS_REG_TIME, L.KS_REG_MU, L.KS_REG_MUU, L.KS_REG_MUI):
                    ks[k] = 0.0
                s.reg_mv[:] = s.reg_miv[:] = s.reg_mud[:] = 0.0
                self._slow_temperatures(r[ns:ns + nt].copy(), dts)
                return
            # u of a sample: Ah out of the pack since it; weighted sums normalised by their weights' sum w
            dq = lp_i * dts / 3600.0
            w_old = 1.0 - math.exp(-ks[L.KS_REG_TIME] / par[L.PAR_REG_TAU])
            ks[L.KS_REG_MUU] = lam * (ks[L.KS_REG_MUU] + 2.0 * dq * ks[L.KS_REG_MU] + dq * dq * w_old)
            ks[L.KS_REG_MUI] = lam * (ks[L.KS_REG_MUI] + dq * ks[L.KS_REG_MI])
            ks[L.KS_REG_MU] = lam * (ks[L.KS_REG_MU] + dq * w_old)
            ks[L.KS_REG_MI] = lam * ks[L.KS_REG_MI] + (1.0 - lam) * lp_i
            ks[L.KS_REG_MII] = lam * ks[L.KS_REG_MII] + (1.0 - lam) * (lp_i * lp_i)
            s.reg_mud[:] = np.where(valid, lam * (s.reg_mud + dq * s.reg_mv), s.reg_mud)
            s.reg_mv[:] = np.where(valid, lam * s.reg_mv + (1.0 - lam) * d, s.reg_mv)
            s.reg_miv[:] = np.where(valid, lam * s.reg_miv + (1.0 - lam) * (d * lp_i), s.reg_miv)
            ks[L.KS_REG_TIME] += dts
            w = 1.0 - math.exp(-ks[L.KS_REG_TIME] / par[L.PAR_REG_TAU])
            mi = ks[L.KS_REG_MI] / w
            mu = ks[L.KS_REG_MU] / w
            suu = ks[L.KS_REG_MUU] / w - mu * mu + L.REG_U_RIDGE
            siu = ks[L.KS_REG_MUI] / w - mi * mu
            var = ks[L.KS_REG_MII] / w - mi * mi - siu * siu / suu
            r_ref = inp[L.IN_R_REF]
            if ks[L.KS_REG_TIME] >= par[L.PAR_REG_TAU] and var >= par[L.PAR_REG_MIN_VAR] \
                    and var >= L.REG_MIN_REL_VAR * mi * mi and r_ref > 0.0:
                sid = s.reg_miv / w - mi * s.reg_mv / w
                sud = s.reg_mud / w - mu * s.reg_mv / w
                s.ratio[:] = 1.0 + (-(sid - sud * siu / suu) / var) / r_ref
                thr = s.thr[P.STACK_PRESSURE_LOSS]
                x = s.ratio
                debounce(raw_levels(x, thr[0], thr[1], thr[2]), clear_ok_over(x, thr, s.lv_group),
                         s.deb[P.STACK_PRESSURE_LOSS], dts, s.tm_group, s.lv_group)
                s.tm_group[~valid] = 0.0
                s.lv_group[~valid] = 0
                s.own[P.STACK_PRESSURE_LOSS] = s.lv_group.max()
                i = int(np.nanargmax(np.where(valid, x, np.nan)))
                s.worst[P.STACK_PRESSURE_LOSS] = (i, x[i])
                out[L.OUT_RATIO_MAX], out[L.OUT_RATIO_IDX], out[L.OUT_R_REF] = x[i], i, r_ref

        self._slow_temperatures(r[ns:ns + nt].copy(), dts)

    def _slow_scalar(self, p, x, dts, channel):
        s = self.s
        thr = s.thr[p]
        debounce_scalar(int(raw_levels(x, thr[0], thr[1], thr[2])), self._clear_ok(p, x, thr), s.deb[p], dts,
                        s.tm_scalar, s.lv_scalar, int(p))
        s.own[p] = s.lv_scalar[p]
        s.worst[p] = (channel, x)

    def _slow_temperatures(self, T, dts):
        s, par, inp, out = self.s, self.s.par, self.s.inp, self.s.out
        nt = self.nt
        plausible = (T >= par[L.PAR_TEMP_MIN]) & (T <= par[L.PAR_TEMP_MAX])
        raw = np.where(plausible, 0, 2)
        debounce(raw, raw == 0, s.deb[P.TEMPERATURE_SENSOR], dts, s.tm_temp_sensor, s.lv_temp_sensor)
        valid = plausible & (s.lv_temp_sensor == 0)
        s.temp_valid[:] = valid

        # rise rate, filtered; a step faster than any heat is a sensor's (stuck, contact): the rate restarts
        if dts > 0.0:
            a = 1.0 - math.exp(-dts / par[L.PAR_RATE_TAU])
            rate = (T - s.temp_last_C) / dts
            has_prev = valid & np.isfinite(s.temp_last_C) & (np.abs(rate) <= par[L.PAR_TEMP_JUMP])
            s.temp_rate[:] = np.where(has_prev, s.temp_rate + a * (rate - s.temp_rate), 0.0)
            s.temp_last_C[:] = np.where(valid, T, np.nan)

        # disagreement with the median of the valid sensors and with every valid sensor of the same module
        n_valid = int(valid.sum())
        raw = np.zeros(nt, dtype=np.int64)
        out[L.OUT_T_MEDIAN] = math.nan
        if n_valid >= 3:
            ordered = np.sort(T[valid])
            h = n_valid // 2
            median = ordered[h] if n_valid % 2 else (ordered[h - 1] + ordered[h]) / 2.0
            out[L.OUT_T_MEDIAN] = median
            k = par[L.PAR_DISAGREE_K]
            for i in np.flatnonzero(valid):
                if not abs(T[i] - median) > k:
                    continue
                siblings = valid & (self.module == self.module[i])
                siblings[i] = False
                if all(abs(T[i] - T[j]) > k for j in np.flatnonzero(siblings)):
                    raw[i] = 1
        debounce(raw, raw == 0, s.deb[P.TEMPERATURE_SENSOR], dts, s.tm_temp_disagree, s.lv_temp_disagree)
        lost = np.ones(nt // self.per_module, dtype=bool)
        np.logical_and.at(lost, self.module, s.lv_temp_sensor > 0)
        flagged = (s.lv_temp_sensor > 0) | (s.lv_temp_disagree > 0)
        s.own[P.TEMPERATURE_SENSOR] = 2 if lost.any() else (1 if flagged.any() else 0)
        bad = first_index(flagged)
        s.worst[P.TEMPERATURE_SENSOR] = (bad, T[bad] if bad >= 0 else math.nan)

        # windows (the core estimate is one more channel), rise rate
        core_max, core_min = inp[L.IN_CORE_MAX], inp[L.IN_CORE_MIN]
        hot = np.append(T, core_max)
        cold = np.append(T, core_min)
        charging = inp[L.IN_CHARGING] != 0.0
        for row, p in enumerate(L.TEMP_CHECKS):
            if p == P.THERMAL_EVENT:
                x, ok = np.append(s.temp_rate, 0.0), np.append(valid, False)
            elif p in (P.DISCHARGE_OVERTEMPERATURE, P.CHARGE_OVERTEMPERATURE):
                x, ok = hot, np.append(valid, math.isfinite(core_max))
            else:
                x, ok = -cold, np.append(valid, math.isfinite(core_min))
            if p in (P.CHARGE_OVERTEMPERATURE, P.CHARGE_UNDERTEMPERATURE) and not charging:
                ok = np.zeros(nt + 1, dtype=bool)
            thr = s.thr[p]
            tm, lv = s.tm_temp[row], s.lv_temp[row]
            debounce(raw_levels(x, thr[0], thr[1], thr[2]), clear_ok_over(x, thr, lv), s.deb[p], dts, tm, lv)
            tm[~ok] = 0.0
            lv[~ok] = 0
            s.own[p] = lv.max()
            if ok.any():
                i = int(np.nanargmax(np.where(ok, x, np.nan)))
                s.worst[p] = (i, x[i] if x is hot or p == P.THERMAL_EVENT else cold[i])
            else:
                s.worst[p] = (-1, math.nan)
        if n_valid:
            tv = np.where(valid, T, np.nan)
            i_min, i_max = int(np.nanargmin(tv)), int(np.nanargmax(tv))
            out[L.OUT_T_MIN], out[L.OUT_T_MAX], out[L.OUT_T_MIN_IDX], out[L.OUT_T_MAX_IDX] = \
                T[i_min], T[i_max], i_min, i_max
        else:
            out[L.OUT_T_MIN] = out[L.OUT_T_MAX] = math.nan
            out[L.OUT_T_MIN_IDX] = out[L.OUT_T_MAX_IDX] = -1
        out[L.OUT_N_VALID_T] = n_valid

    # --- balancing ------------------------------------------------------------------------------
    def balance(self, enable, use_soc, start, stop):
        """Passive balancing: bleed each valid group this far above the lowest (SOC or voltage).

        A group already bleeding goes on until it is within ``stop``; nothing bleeds when disabled,
        when fewer than two groups can be judged, above the temperature limit or below the voltage floor.
        Returns the number of groups bleeding.
        """
        s, b = self.s, self.plant.balancing
        v = self.sensors.reading[:self.ns]
        x = s.group_soc if use_soc else v
        ok = (s.cell_valid != 0) & np.isfinite(x) & (v >= s.par[L.PAR_BAL_MIN_V])
        hot = not (s.out[L.OUT_N_VALID_T] > 0 and s.out[L.OUT_T_MAX] <= s.par[L.PAR_BAL_MAX_T])
        if not enable or hot or ok.sum() < 2:
            b[:] = 0
            return 0
        d = x - np.min(x[ok])
        on = ok & ((d > start) | ((b != 0) & (d > stop)))
        b[:] = on
        return int(on.sum())


assert N_PROTECTIONS < 32
