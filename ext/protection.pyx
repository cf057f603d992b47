# The BMS's per-tick and per-cell checks with per-channel debounce. Readable specification:
# bms/_twin/protection.py (same class, same signatures, same results); layout: bms/_protection.py.
#
# Every tick (scalar): over-current and short circuit, current sensor, contactor feedback and weld,
# DC-link mismatch, VCU and charger deadlines. Every slow period: cell-voltage channels (plausibility,
# stuck, over/under voltage), imbalance, pack mismatch, stack-pressure regression, temperature sensors
# (plausibility, disagreement, windows, rise rate). The Python side only reacts to the events returned.
from libc.math cimport exp, fabs, isfinite, NAN, INFINITY

from bms import _protection as L
from bms._layout import MAIN_POSITIVE, MAIN_NEGATIVE
from bms.errors import InputError

include "binding.pxi"
from bms.faults import Protection as P, N_PROTECTIONS

cdef double TOLERANCE_S = 1e-9
cdef double FEEDBACK_CLOSED = 0.5
cdef int NP = N_PROTECTIONS
cdef int C_POS = MAIN_POSITIVE, C_NEG = MAIN_NEGATIVE
cdef int EV_LEVEL = L.EV_LEVEL, EV_SLOW = L.EV_SLOW, EV_WAKE = L.EV_WAKE
# protections
cdef int P_OV = P.CELL_OVERVOLTAGE, P_UV = P.CELL_UNDERVOLTAGE
cdef int P_OC_D = P.DISCHARGE_OVERCURRENT, P_OC_C = P.CHARGE_OVERCURRENT
cdef int P_LINK = P.LINK_VOLTAGE_MISMATCH, P_PACK = P.PACK_VOLTAGE_MISMATCH
cdef int P_CVS = P.CELL_VOLTAGE_SENSOR, P_TS = P.TEMPERATURE_SENSOR, P_CS = P.CURRENT_SENSOR
cdef int P_FB = P.CONTACTOR_FEEDBACK, P_WELD = P.CONTACTOR_WELDED
cdef int P_VCU = P.VCU_TIMEOUT, P_CHG = P.CHARGER_TIMEOUT
cdef int P_SP = P.STACK_PRESSURE_LOSS, P_IMB = P.CELL_IMBALANCE, P_TE = P.THERMAL_EVENT
cdef int P_OT_D = P.DISCHARGE_OVERTEMPERATURE, P_UT_D = P.DISCHARGE_UNDERTEMPERATURE
cdef int P_OT_C = P.CHARGE_OVERTEMPERATURE, P_UT_C = P.CHARGE_UNDERTEMPERATURE
cdef int N_TEMP_CHECKS = L.N_TEMP_CHECKS
cdef int[5] TEMP_P
for _i, _p in enumerate(L.TEMP_CHECKS):
    TEMP_P[_i] = _p
# inputs, parameters, kernel scalars, outputs
cdef int IN_DIS_REF = L.IN_DIS_REF, IN_CH_REF = L.IN_CH_REF, IN_OC_ENABLE = L.IN_OC_ENABLE
cdef int IN_CHARGING = L.IN_CHARGING, IN_VCU_DEADLINE = L.IN_VCU_DEADLINE
cdef int IN_CHARGER_DEADLINE = L.IN_CHARGER_DEADLINE, IN_WAKE = L.IN_WAKE, IN_NEXT_SLOW = L.IN_NEXT_SLOW
cdef int IN_SLOW_PERIOD = L.IN_SLOW_PERIOD, IN_CORE_MAX = L.IN_CORE_MAX, IN_CORE_MIN = L.IN_CORE_MIN
cdef int PAR_CELL_MIN = L.PAR_CELL_MIN, PAR_CELL_MAX = L.PAR_CELL_MAX, PAR_STUCK_DI = L.PAR_STUCK_DI
cdef int PAR_STUCK_DV = L.PAR_STUCK_DV, PAR_STUCK_DEB = L.PAR_STUCK_DEB, PAR_TEMP_MIN = L.PAR_TEMP_MIN
cdef int PAR_TEMP_MAX = L.PAR_TEMP_MAX, PAR_DISAGREE_K = L.PAR_DISAGREE_K, PAR_RATE_TAU = L.PAR_RATE_TAU
cdef int PAR_TEMP_JUMP = L.PAR_TEMP_JUMP
cdef int PAR_CUR_MAX = L.PAR_CUR_MAX, PAR_OC_WARN = L.PAR_OC_WARN, PAR_OC_ERR = L.PAR_OC_ERR
cdef int PAR_OC_OFFSET = L.PAR_OC_OFFSET, PAR_OC_EM_DIS = L.PAR_OC_EM_DIS, PAR_OC_EM_CH = L.PAR_OC_EM_CH
cdef int PAR_REG_TAU = L.PAR_REG_TAU, PAR_REG_MIN_VAR = L.PAR_REG_MIN_VAR
cdef int PAR_BAL_MAX_T = L.PAR_BAL_MAX_T, PAR_BAL_MIN_V = L.PAR_BAL_MIN_V, PAR_REST_A = L.PAR_REST_A
cdef int KS_LAST_SLOW = L.KS_LAST_SLOW, KS_CUR_LAST = L.KS_CUR_LAST, KS_CUR_REF_VSUM = L.KS_CUR_REF_VSUM
cdef int KS_CUR_STUCK_T = L.KS_CUR_STUCK_T, KS_REG_MI = L.KS_REG_MI, KS_REG_MII = L.KS_REG_MII
cdef int KS_REG_TIME = L.KS_REG_TIME, KS_VSUM = L.KS_VSUM
cdef int OUT_V_MIN = L.OUT_V_MIN, OUT_V_MAX = L.OUT_V_MAX, OUT_V_MIN_IDX = L.OUT_V_MIN_IDX
cdef int OUT_V_MAX_IDX = L.OUT_V_MAX_IDX, OUT_V_SUM = L.OUT_V_SUM, OUT_N_VALID_V = L.OUT_N_VALID_V
cdef int OUT_T_MIN = L.OUT_T_MIN, OUT_T_MAX = L.OUT_T_MAX, OUT_T_MIN_IDX = L.OUT_T_MIN_IDX
cdef int OUT_T_MAX_IDX = L.OUT_T_MAX_IDX, OUT_N_VALID_T = L.OUT_N_VALID_T, OUT_RATIO_MAX = L.OUT_RATIO_MAX
cdef int OUT_RATIO_IDX = L.OUT_RATIO_IDX, OUT_R_REF = L.OUT_R_REF, OUT_SLOW_DT = L.OUT_SLOW_DT
cdef int OUT_T_MEDIAN = L.OUT_T_MEDIAN
cdef int IN_R_REF = L.IN_R_REF, PAR_LP_TAU = L.PAR_LP_TAU, KS_LP_I = L.KS_LP_I, IN_SP_SOC_OK = L.IN_SP_SOC_OK
cdef int IN_IMB_SOC_OK = L.IN_IMB_SOC_OK
cdef int KS_REG_MU = L.KS_REG_MU, KS_REG_MUU = L.KS_REG_MUU, KS_REG_MUI = L.KS_REG_MUI
cdef double REG_U_RIDGE = L.REG_U_RIDGE, REG_MIN_REL_VAR = L.REG_MIN_REL_VAR


cdef inline int raw3(double x, double t0, double t1, double t2) noexcept nogil:
    """Highest level whose threshold x is beyond (0: none); NaN is beyond nothing."""
    if x > t2:
        return 3
    if x > t1:
        return 2
    if x > t0:
        return 1
    return 0


cdef inline bint clear_ok(double x, const double* thr, int lv) noexcept nogil:
    """Back inside the current level's threshold minus the hysteresis (thr[3])."""
    cdef int k = lv - 1
    if k < 0:
        k = 0
    elif k > 2:
        k = 2
    return x <= thr[k] - thr[3]


cdef inline int debounce(int raw, bint clear, const double* deb, double dt, double* tm,
                         unsigned char* lv) noexcept nogil:
    """One debounce step of one channel: timers tm[0..2] per level, tm[3] clear timer; returns the level."""
    cdef int k, new = 0, cur = lv[0]
    if raw == 0 and cur == 0:
        if tm[0] != 0.0 or tm[1] != 0.0 or tm[2] != 0.0 or tm[3] != 0.0:
            tm[0] = 0.0
            tm[1] = 0.0
            tm[2] = 0.0
            tm[3] = 0.0
        return 0
    for k in range(3):
        if raw > k:
            tm[k] = tm[k] + dt
            if tm[k] >= deb[k]:
                new = k + 1
        else:
            tm[k] = 0.0
    if new > cur:
        lv[0] = <unsigned char>new
        tm[3] = 0.0
    elif new < cur and clear:
        tm[3] = tm[3] + dt
        if tm[3] >= deb[3]:
            lv[0] = <unsigned char>new
            tm[3] = 0.0
    else:
        tm[3] = 0.0
    return lv[0]


cdef inline void reset4(double* tm, unsigned char* lv) noexcept nogil:
    tm[0] = 0.0
    tm[1] = 0.0
    tm[2] = 0.0
    tm[3] = 0.0
    lv[0] = 0






cdef class ProtectionKernel:
    """Binds a ProtectionState, the sensor readings and the plant's contactor command and balancing."""
    cdef object _owners
    cdef int ns, nt, per_module, i_cur
    cdef double* reading
    cdef unsigned char* cmd
    cdef unsigned char* balancing
    cdef double* thr
    cdef double* deb
    cdef double* par
    cdef double* inp
    cdef double* ks
    cdef double* out
    cdef unsigned char* level
    cdef unsigned char* own
    cdef unsigned char* ext
    cdef double* worst
    cdef double* tm_scalar
    cdef unsigned char* lv_scalar
    cdef double* tm_cell
    cdef unsigned char* lv_cell
    cdef double* tm_cell_sensor
    cdef unsigned char* lv_cell_sensor
    cdef double* cell_last_V
    cdef double* cell_ref_A
    cdef double* cell_stuck_s
    cdef unsigned char* cell_valid
    cdef double* tm_temp
    cdef unsigned char* lv_temp
    cdef double* tm_temp_sensor
    cdef unsigned char* lv_temp_sensor
    cdef double* tm_temp_disagree
    cdef unsigned char* lv_temp_disagree
    cdef unsigned char* temp_valid
    cdef double* temp_last_C
    cdef double* temp_rate
    cdef double* tm_contactor
    cdef unsigned char* lv_contactor
    cdef double* tm_group
    cdef unsigned char* lv_group
    cdef double* lp_v
    cdef double* reg_mv
    cdef double* reg_miv
    cdef double* reg_mud
    cdef double* ratio
    cdef double* group_soc
    cdef double* scratch

    def __init__(self, state, sensors, plant, pack):
        cdef int ns = state.n_series, nt = state.n_temp
        if ns != pack.n_series:
            raise InputError("n_series", f"{pack.n_series}", ns)
        owners = []
        s = state
        self.ns, self.nt, self.per_module = ns, nt, state.sensors_per_module
        self.i_cur = ns + nt
        self.reading = dptr(sensors.reading, ns + nt + 6, "reading", owners)
        self.cmd = uptr(plant.contactor_command, 3, "contactor_command", owners)
        self.balancing = uptr(plant.balancing, ns, "balancing", owners)
        self.thr = dptr(s.thr, NP * 4, "thr", owners)
        self.deb = dptr(s.deb, NP * 4, "deb", owners)
        self.par = dptr(s.par, L.N_PAR, "par", owners)
        self.inp = dptr(s.inp, L.N_IN, "inp", owners)
        self.ks = dptr(s.ks, L.N_KS, "ks", owners)
        self.out = dptr(s.out, L.N_OUT, "out", owners)
        self.level = uptr(s.level, NP, "level", owners)
        self.own = uptr(s.own, NP, "own", owners)
        self.ext = uptr(s.ext, NP, "ext", owners)
        self.worst = dptr(s.worst, NP * 2, "worst", owners)
        self.tm_scalar = dptr(s.tm_scalar, NP * 4, "tm_scalar", owners)
        self.lv_scalar = uptr(s.lv_scalar, NP, "lv_scalar", owners)
        self.tm_cell = dptr(s.tm_cell, 2 * ns * 4, "tm_cell", owners)
        self.lv_cell = uptr(s.lv_cell, 2 * ns, "lv_cell", owners)
        self.tm_cell_sensor = dptr(s.tm_cell_sensor, ns * 4, "tm_cell_sensor", owners)
        self.lv_cell_sensor = uptr(s.lv_cell_sensor, ns, "lv_cell_sensor", owners)
        self.cell_last_V = dptr(s.cell_last_V, ns, "cell_last_V", owners)
        self.cell_ref_A = dptr(s.cell_ref_A, ns, "cell_ref_A", owners)
        self.cell_stuck_s = dptr(s.cell_stuck_s, ns, "cell_stuck_s", owners)
        self.cell_valid = uptr(s.cell_valid, ns, "cell_valid", owners)
        self.tm_temp = dptr(s.tm_temp, N_TEMP_CHECKS * (nt + 1) * 4, "tm_temp", owners)
        self.lv_temp = uptr(s.lv_temp, N_TEMP_CHECKS * (nt + 1), "lv_temp", owners)
        self.tm_temp_sensor = dptr(s.tm_temp_sensor, nt * 4, "tm_temp_sensor", owners)
        self.lv_temp_sensor = uptr(s.lv_temp_sensor, nt, "lv_temp_sensor", owners)
        self.tm_temp_disagree = dptr(s.tm_temp_disagree, nt * 4, "tm_temp_disagree", owners)
        self.lv_temp_disagree = uptr(s.lv_temp_disagree, nt, "lv_temp_disagree", owners)
        self.temp_valid = uptr(s.temp_valid, nt, "temp_valid", owners)
        self.temp_last_C = dptr(s.temp_last_C, nt, "temp_last_C", owners)
        self.temp_rate = dptr(s.temp_rate, nt, "temp_rate", owners)
        self.tm_contactor = dptr(s.tm_contactor, 2 * 3 * 4, "tm_contactor", owners)
        self.lv_contactor = uptr(s.lv_contactor, 6, "lv_contactor", owners)
        self.tm_group = dptr(s.tm_group, ns * 4, "tm_group", owners)
        self.lv_group = uptr(s.lv_group, ns, "lv_group", owners)
        self.lp_v = dptr(s.lp_v, ns, "lp_v", owners)
        self.reg_mv = dptr(s.reg_mv, ns, "reg_mv", owners)
        self.reg_miv = dptr(s.reg_miv, ns, "reg_miv", owners)
        self.reg_mud = dptr(s.reg_mud, ns, "reg_mud", owners)
        self.ratio = dptr(s.ratio, ns, "ratio", owners)
        self.group_soc = dptr(s.group_soc, ns, "group_soc", owners)
        self.scratch = dptr(s.scratch, (ns if ns > nt else nt) + 1, "scratch", owners)
        self._owners = owners

    def tick(self, double t_s, double dt_s):
        """Run the checks due at simulated time ``t_s``; returns the events (EV_* bits) for the Python side.

        The work per tick is a few scalar comparisons, cheaper than releasing the GIL would be; the
        per-channel work of the slow task runs in the same nogil function.
        """
        if not isfinite(t_s):
            raise InputError("t_s", "a finite time", t_s)
        if not (isfinite(dt_s) and dt_s > 0):
            raise InputError("dt_s", "a finite time step > 0 s", dt_s)
        return self._tick(t_s, dt_s)

    cdef int _scalar(self, int p, int raw, bint clear, double dt, double channel, double value) noexcept nogil:
        cdef int lv = debounce(raw, clear, self.deb + 4 * p, dt, self.tm_scalar + 4 * p, self.lv_scalar + p)
        self.own[p] = <unsigned char>lv
        self.worst[2 * p] = channel
        self.worst[2 * p + 1] = value
        return lv

    cdef int _tick(self, double t, double dt) noexcept nogil:
        cdef double* r = self.reading
        cdef double* inp = self.inp
        cdef double* par = self.par
        cdef double* thr
        cdef unsigned char* cmd = self.cmd
        cdef int ic = self.i_cur, c, k, raw, events = 0, lv
        cdef double I = r[ic], x, t0, t1, ref, nxt
        cdef bint fb[3]
        cdef bint enabled, all_open, mains_closed, bad
        for c in range(3):
            fb[c] = r[ic + 3 + c] > FEEDBACK_CLOSED
        mains_closed = cmd[C_POS] != 0 and cmd[C_NEG] != 0 and fb[C_POS] and fb[C_NEG]

        # over-current against the published limits; short circuit whatever the limits
        enabled = inp[IN_OC_ENABLE] != 0.0
        cdef double lim[4]
        for k in range(2):
            if k == 0:
                x, ref, lim[2] = I, inp[IN_DIS_REF], par[PAR_OC_EM_DIS]
                c = P_OC_D
            else:
                x, ref, lim[2] = -I, inp[IN_CH_REF], par[PAR_OC_EM_CH]
                c = P_OC_C
            if enabled:
                lim[0] = ref * (1.0 + par[PAR_OC_WARN]) + par[PAR_OC_OFFSET]
                lim[1] = ref * (1.0 + par[PAR_OC_ERR]) + par[PAR_OC_OFFSET]
            else:
                lim[0] = INFINITY
                lim[1] = INFINITY
            lim[3] = self.thr[4 * c + 3]
            self._scalar(c, raw3(x, lim[0], lim[1], lim[2]), clear_ok(x, lim, self.lv_scalar[c]), dt, 0.0, x)

        # current sensor: out of range, offset with every contactor open, stuck (judged by the slow task)
        all_open = cmd[0] == 0 and cmd[1] == 0 and cmd[2] == 0 and not fb[0] and not fb[1] and not fb[2]
        thr = self.thr + 4 * P_CS
        raw = raw3(fabs(I), thr[0], thr[1], thr[2]) if all_open else 0
        if not (fabs(I) <= par[PAR_CUR_MAX]) or self.ks[KS_CUR_STUCK_T] >= par[PAR_STUCK_DEB]:
            raw = 2
        self._scalar(P_CS, raw, raw == 0, dt, 0.0, I)

        # contactors: commanded closed but open (feedback), commanded open but closed (welded)
        cdef int lv_fb = 0, lv_w = 0, i_fb = 0, i_w = 0
        for c in range(3):
            bad = cmd[c] != 0 and not fb[c]
            raw = 2 if bad else 0
            lv = debounce(raw, raw == 0, self.deb + 4 * P_FB, dt, self.tm_contactor + 4 * c, self.lv_contactor + c)
            if lv > lv_fb:
                lv_fb, i_fb = lv, c
            bad = cmd[c] == 0 and fb[c]
            raw = 2 if bad else 0
            lv = debounce(raw, raw == 0, self.deb + 4 * P_WELD, dt, self.tm_contactor + 12 + 4 * c,
                          self.lv_contactor + 3 + c)
            if lv > lv_w:
                lv_w, i_w = lv, c
        self.own[P_FB] = <unsigned char>lv_fb
        self.worst[2 * P_FB] = i_fb
        self.worst[2 * P_FB + 1] = 0.0
        if self.lv_contactor[3 + C_POS] >= 2 and self.lv_contactor[3 + C_NEG] >= 2:
            lv_w = 3
        self.own[P_WELD] = <unsigned char>lv_w
        self.worst[2 * P_WELD] = i_w
        self.worst[2 * P_WELD + 1] = 0.0

        # DC link against the pack with the main contactors closed
        x = fabs(r[ic + 2] - r[ic + 1]) if mains_closed else 0.0
        thr = self.thr + 4 * P_LINK
        self._scalar(P_LINK, raw3(x, thr[0], thr[1], thr[2]), clear_ok(x, thr, self.lv_scalar[P_LINK]), dt, 0.0, x)

        # VCU and charger deadlines
        raw = 2 if t > inp[IN_VCU_DEADLINE] else 0
        self._scalar(P_VCU, raw, raw == 0, dt, 0.0, t - inp[IN_VCU_DEADLINE])
        raw = 2 if t > inp[IN_CHARGER_DEADLINE] else 0
        self._scalar(P_CHG, raw, raw == 0, dt, 0.0, t - inp[IN_CHARGER_DEADLINE])

        if t >= inp[IN_NEXT_SLOW] - TOLERANCE_S:
            self._slow(t, I, mains_closed)
            nxt = inp[IN_NEXT_SLOW] + inp[IN_SLOW_PERIOD]
            if nxt <= t + TOLERANCE_S:
                nxt = t + inp[IN_SLOW_PERIOD]
            inp[IN_NEXT_SLOW] = nxt
            events = events | EV_SLOW
        cdef unsigned char* level = self.level
        cdef unsigned char* own = self.own
        cdef unsigned char* ext = self.ext
        cdef unsigned char m
        for k in range(NP):
            m = own[k] if own[k] > ext[k] else ext[k]
            if m != level[k]:
                level[k] = m
                events = events | EV_LEVEL
        if t >= inp[IN_WAKE]:
            events = events | EV_WAKE
        return events

    cdef void _slow_scalar(self, int p, double x, double dts, double channel) noexcept nogil:
        cdef double* thr = self.thr + 4 * p
        self._scalar(p, raw3(x, thr[0], thr[1], thr[2]), clear_ok(x, thr, self.lv_scalar[p]), dts, channel, x)

    cdef void _slow(self, double t, double I, bint mains_closed) noexcept nogil:
        cdef int ns = self.ns, nt = self.nt, c, k, row, lv, n_valid = 0, i_min = -1, i_max = -1, bad = -1
        cdef double* r = self.reading
        cdef double* par = self.par
        cdef double* ks = self.ks
        cdef double* out = self.out
        cdef double* thr
        cdef double* deb
        cdef double* tm
        cdef unsigned char* lvp
        cdef double dts, v, x, v_min = NAN, v_max = NAN, v_sum = 0.0
        cdef double pl_min = par[PAR_CELL_MIN], pl_max = par[PAR_CELL_MAX], di = par[PAR_STUCK_DI]
        cdef double stuck_deb = par[PAR_STUCK_DEB]
        cdef double* last_v = self.cell_last_V
        cdef double* ref_a = self.cell_ref_A
        cdef double* stuck = self.cell_stuck_s
        cdef unsigned char* valid = self.cell_valid
        cdef double* tm_cs = self.tm_cell_sensor
        cdef unsigned char* lv_cs = self.lv_cell_sensor
        cdef double* tm_ov = self.tm_cell
        cdef double* tm_uv = self.tm_cell + 4 * ns
        cdef unsigned char* lv_ov = self.lv_cell
        cdef unsigned char* lv_uv = self.lv_cell + ns
        cdef double* thr_ov = self.thr + 4 * P_OV
        cdef double* thr_uv = self.thr + 4 * P_UV
        cdef double* deb_ov = self.deb + 4 * P_OV
        cdef double* deb_uv = self.deb + 4 * P_UV
        cdef double* deb_cs = self.deb + 4 * P_CVS
        cdef int own_ov = 0, own_uv = 0, own_cs = 0, raw
        cdef bint implausible, changed, ok

        if isfinite(ks[KS_LAST_SLOW]):
            dts = t - ks[KS_LAST_SLOW]
        else:
            dts = self.inp[IN_SLOW_PERIOD]
        if dts < 0.0:
            dts = 0.0
        ks[KS_LAST_SLOW] = t
        out[OUT_SLOW_DT] = dts

        # cell-voltage channels: plausible range, stuck while the current moved, over/under voltage
        for c in range(ns):
            v = r[c]
            implausible = not (v >= pl_min and v <= pl_max)
            changed = v != last_v[c]
            if changed:
                stuck[c] = 0.0
                ref_a[c] = I
                last_v[c] = v
            elif fabs(I - ref_a[c]) > di:
                stuck[c] = stuck[c] + dts
            raw = 2 if (implausible or stuck[c] >= stuck_deb) else 0
            lv = debounce(raw, raw == 0, deb_cs, dts, tm_cs + 4 * c, lv_cs + c)
            if lv > own_cs:
                own_cs = lv
            if lv > 0 and bad < 0:
                bad = c
            if implausible or lv != 0:
                valid[c] = 0
                reset4(tm_ov + 4 * c, lv_ov + c)
                reset4(tm_uv + 4 * c, lv_uv + c)
                continue
            valid[c] = 1
            lv = debounce(raw3(v, thr_ov[0], thr_ov[1], thr_ov[2]), clear_ok(v, thr_ov, lv_ov[c]), deb_ov, dts,
                          tm_ov + 4 * c, lv_ov + c)
            if lv > own_ov:
                own_ov = lv
            lv = debounce(raw3(-v, thr_uv[0], thr_uv[1], thr_uv[2]), clear_ok(-v, thr_uv, lv_uv[c]), deb_uv, dts,
                          tm_uv + 4 * c, lv_uv + c)
            if lv > own_uv:
                own_uv = lv
            if n_valid == 0:
                v_min = v
                v_max = v
                i_min = c
                i_max = c
            else:
                if v < v_min:
                    v_min, i_min = v, c
                if v > v_max:
                    v_max, i_max = v, c
            v_sum = v_sum + v
            n_valid = n_valid + 1
        self.own[P_CVS] = <unsigned char>own_cs
        self.worst[2 * P_CVS] = bad
        self.worst[2 * P_CVS + 1] = r[bad] if bad >= 0 else NAN
        self.own[P_OV] = <unsigned char>own_ov
        self.own[P_UV] = <unsigned char>own_uv
        self.worst[2 * P_OV] = i_max
        self.worst[2 * P_OV + 1] = v_max
        self.worst[2 * P_UV] = i_min
        self.worst[2 * P_UV + 1] = v_min
        out[OUT_V_MIN] = v_min
        out[OUT_V_MAX] = v_max
        out[OUT_V_MIN_IDX] = i_min
        out[OUT_V_MAX_IDX] = i_max
        out[OUT_V_SUM] = v_sum
        out[OUT_N_VALID_V] = n_valid

        # current sensor stuck: no change although the summed cell voltage moved (main contactors closed)
        if I != ks[KS_CUR_LAST]:
            ks[KS_CUR_LAST] = I
            ks[KS_CUR_REF_VSUM] = v_sum
            ks[KS_CUR_STUCK_T] = 0.0
        elif mains_closed and n_valid == ns and fabs(v_sum - ks[KS_CUR_REF_VSUM]) > par[PAR_STUCK_DV]:
            ks[KS_CUR_STUCK_T] = ks[KS_CUR_STUCK_T] + dts
        ks[KS_VSUM] = v_sum

        # imbalance (at rest, where resistance spread does not show) and pack sensor against the cell sum
        if fabs(I) <= par[PAR_REST_A] and self.inp[IN_IMB_SOC_OK] == 1.0:
            self._slow_scalar(P_IMB, v_max - v_min if n_valid >= 2 else 0.0, dts, i_max)
        self._slow_scalar(P_PACK, fabs(r[ns + nt + 1] - v_sum) if n_valid == ns else 0.0, dts, -1)

        # stack pressure: each group's resistance above the pack mean, from a running regression of its
        # low-passed voltage deviation (from the mean of the valid groups) on the low-passed current and on the
        # charge throughput: the deviations of groups at different SOCs drift apart as the pack charges or
        # discharges (their OCV slopes differ), and in a long charge that drift follows the current's one step
        cdef double lam, a, w, w_old, mi, mu, var, suu, siu, sid, sud, mean, lp_i, d, dq
        cdef double r_ref = self.inp[IN_R_REF], best = 0.0
        cdef int own_sp = 0, i_best = -1
        cdef bint sp_soc_ok
        cdef double* mv = self.reg_mv
        cdef double* miv = self.reg_miv
        cdef double* mud = self.reg_mud
        cdef double* ratio = self.ratio
        cdef double* lp_v = self.lp_v
        if isfinite(I) and n_valid >= 2:
            sp_soc_ok = self.inp[IN_SP_SOC_OK] == 1.0
            a = 1.0 - exp(-dts / par[PAR_LP_TAU])
            lam = exp(-dts / par[PAR_REG_TAU])
            lp_i = I if ks[KS_LP_I] != ks[KS_LP_I] else ks[KS_LP_I] + a * (I - ks[KS_LP_I])
            ks[KS_LP_I] = lp_i
            mean = 0.0
            for c in range(ns):
                if valid[c]:
                    if lp_v[c] != lp_v[c]:
                        lp_v[c] = r[c]
                    else:
                        lp_v[c] = lp_v[c] + a * (r[c] - lp_v[c])
                    mean = mean + lp_v[c]
            mean = mean / n_valid
            if not sp_soc_ok:  # a group's SOC outside the window: the regression starts again on entry
                ks[KS_REG_MI] = ks[KS_REG_MII] = ks[KS_REG_TIME] = 0.0
                ks[KS_REG_MU] = ks[KS_REG_MUU] = ks[KS_REG_MUI] = 0.0
                for c in range(ns):
                    mv[c] = miv[c] = mud[c] = 0.0
                self._slow_temperatures(dts)
                return
            # u of a sample: Ah out of the pack since it; every past sample's u grows by this step's dq. The
            # moments are weighted sums whose weights add up to w < 1 early on: normalised by w, they are the
            # window's own (unnormalised, they counted a phantom rest with no deviation before the first sample)
            dq = lp_i * dts / 3600.0
            w_old = 1.0 - exp(-ks[KS_REG_TIME] / par[PAR_REG_TAU])
            ks[KS_REG_MUU] = lam * (ks[KS_REG_MUU] + 2.0 * dq * ks[KS_REG_MU] + dq * dq * w_old)
            ks[KS_REG_MUI] = lam * (ks[KS_REG_MUI] + dq * ks[KS_REG_MI])
            ks[KS_REG_MU] = lam * (ks[KS_REG_MU] + dq * w_old)
            ks[KS_REG_MI] = lam * ks[KS_REG_MI] + (1.0 - lam) * lp_i
            ks[KS_REG_MII] = lam * ks[KS_REG_MII] + (1.0 - lam) * (lp_i * lp_i)
            for c in range(ns):
                if valid[c]:
                    d = lp_v[c] - mean
                    mud[c] = lam * (mud[c] + dq * mv[c])
                    mv[c] = lam * mv[c] + (1.0 - lam) * d
                    miv[c] = lam * miv[c] + (1.0 - lam) * (d * lp_i)
            ks[KS_REG_TIME] = ks[KS_REG_TIME] + dts
            w = 1.0 - exp(-ks[KS_REG_TIME] / par[PAR_REG_TAU])
            mi = ks[KS_REG_MI] / w
            mu = ks[KS_REG_MU] / w
            suu = ks[KS_REG_MUU] / w - mu * mu + REG_U_RIDGE
            siu = ks[KS_REG_MUI] / w - mi * mu
            var = ks[KS_REG_MII] / w - mi * mi - siu * siu / suu  # the current's variation the throughput leaves
            if ks[KS_REG_TIME] >= par[PAR_REG_TAU] and var >= par[PAR_REG_MIN_VAR] and var >= REG_MIN_REL_VAR * mi * mi \
                    and r_ref > 0.0:
                thr = self.thr + 4 * P_SP
                deb = self.deb + 4 * P_SP
                for c in range(ns):
                    sid = miv[c] / w - mi * mv[c] / w
                    sud = mud[c] / w - mu * mv[c] / w
                    x = 1.0 + (-(sid - sud * siu / suu) / var) / r_ref
                    ratio[c] = x
                    if not valid[c]:
                        reset4(self.tm_group + 4 * c, self.lv_group + c)
                        continue
                    lv = debounce(raw3(x, thr[0], thr[1], thr[2]), clear_ok(x, thr, self.lv_group[c]), deb, dts,
                                  self.tm_group + 4 * c, self.lv_group + c)
                    if lv > own_sp:
                        own_sp = lv
                    if i_best < 0 or x > best:
                        best, i_best = x, c
                self.own[P_SP] = <unsigned char>own_sp
                self.worst[2 * P_SP] = i_best
                self.worst[2 * P_SP + 1] = best
                out[OUT_RATIO_MAX] = best
                out[OUT_RATIO_IDX] = i_best
                out[OUT_R_REF] = r_ref

        self._slow_temperatures(dts)

    cdef void _slow_temperatures(self, double dts) noexcept nogil:
        cdef int ns = self.ns, nt = self.nt, per = self.per_module, s, j, k, row, p, lv, raw, m, n_valid = 0
        cdef int own, best_i, i_min = -1, i_max = -1, bad = -1, lost_any = 0, flagged_any = 0
        cdef double* T = self.reading + ns
        cdef double* par = self.par
        cdef double* inp = self.inp
        cdef double* out = self.out
        cdef double* thr
        cdef double* deb_ts = self.deb + 4 * P_TS
        cdef unsigned char* valid = self.temp_valid
        cdef double* last = self.temp_last_C
        cdef double* rate = self.temp_rate
        cdef double* sorted_T = self.scratch
        cdef double x, a, median, kd = par[PAR_DISAGREE_K], t_min = NAN, t_max = NAN, best, value
        cdef double core_max = inp[IN_CORE_MAX], core_min = inp[IN_CORE_MIN]
        cdef bint plausible, flag, ok, charging = inp[IN_CHARGING] != 0.0, lost

        for s in range(nt):
            plausible = T[s] >= par[PAR_TEMP_MIN] and T[s] <= par[PAR_TEMP_MAX]
            raw = 0 if plausible else 2
            lv = debounce(raw, raw == 0, deb_ts, dts, self.tm_temp_sensor + 4 * s, self.lv_temp_sensor + s)
            valid[s] = 1 if (plausible and lv == 0) else 0

        # rise rate, filtered; a step faster than any heat is a sensor's (stuck, contact): the rate restarts
        if dts > 0.0:
            a = 1.0 - exp(-dts / par[PAR_RATE_TAU])
            for s in range(nt):
                x = (T[s] - last[s]) / dts
                if valid[s] and isfinite(last[s]) and fabs(x) <= par[PAR_TEMP_JUMP]:
                    rate[s] = rate[s] + a * (x - rate[s])
                else:
                    rate[s] = 0.0
                last[s] = T[s] if valid[s] else NAN

        # disagreement with the median of the valid sensors and with every valid sensor of the same module
        for s in range(nt):
            if valid[s]:
                x = T[s]
                j = n_valid
                while j > 0 and sorted_T[j - 1] > x:
                    sorted_T[j] = sorted_T[j - 1]
                    j = j - 1
                sorted_T[j] = x
                n_valid = n_valid + 1
        median = NAN
        if n_valid >= 3:
            j = n_valid // 2
            median = sorted_T[j] if n_valid % 2 else (sorted_T[j - 1] + sorted_T[j]) / 2.0
        for s in range(nt):
            raw = 0
            if n_valid >= 3 and valid[s] and fabs(T[s] - median) > kd:
                flag = True
                m = (s // per) * per
                for j in range(m, m + per):
                    if j != s and valid[j] and not (fabs(T[s] - T[j]) > kd):
                        flag = False
                raw = 1 if flag else 0
            debounce(raw, raw == 0, deb_ts, dts, self.tm_temp_disagree + 4 * s, self.lv_temp_disagree + s)
            if (self.lv_temp_sensor[s] > 0 or self.lv_temp_disagree[s] > 0):
                flagged_any = 1
                if bad < 0:
                    bad = s
        for m in range(nt // per):
            lost = True
            for j in range(m * per, m * per + per):
                if self.lv_temp_sensor[j] == 0:
                    lost = False
            if lost:
                lost_any = 1
        self.own[P_TS] = 2 if lost_any else (1 if flagged_any else 0)
        self.worst[2 * P_TS] = bad
        self.worst[2 * P_TS + 1] = T[bad] if bad >= 0 else NAN

        # windows (the core estimate is one more channel), rise rate
        for row in range(N_TEMP_CHECKS):
            p = TEMP_P[row]
            thr = self.thr + 4 * p
            own = 0
            best_i = -1
            best = 0.0
            for s in range(nt + 1):
                if p == P_TE:
                    if s < nt:
                        x, ok, value = rate[s], valid[s] != 0, rate[s]
                    else:
                        x, ok, value = 0.0, False, 0.0
                elif p == P_OT_D or p == P_OT_C:
                    if s < nt:
                        x, ok = T[s], valid[s] != 0
                    else:
                        x, ok = core_max, isfinite(core_max)
                    value = x
                else:
                    if s < nt:
                        value, ok = T[s], valid[s] != 0
                    else:
                        value, ok = core_min, isfinite(core_min)
                    x = -value
                if (p == P_OT_C or p == P_UT_C) and not charging:
                    ok = False
                k = row * (nt + 1) + s
                lv = debounce(raw3(x, thr[0], thr[1], thr[2]), clear_ok(x, thr, self.lv_temp[k]), self.deb + 4 * p,
                              dts, self.tm_temp + 4 * k, self.lv_temp + k)
                if not ok:
                    reset4(self.tm_temp + 4 * k, self.lv_temp + k)
                    continue
                if lv > own:
                    own = lv
                if best_i < 0 or x > best:
                    best_i, best = s, x
                    self.worst[2 * p + 1] = value
            self.own[p] = <unsigned char>own
            self.worst[2 * p] = best_i
            if best_i < 0:
                self.worst[2 * p + 1] = NAN
        for s in range(nt):
            if valid[s]:
                if i_min < 0 or T[s] < t_min:
                    t_min, i_min = T[s], s
                if i_max < 0 or T[s] > t_max:
                    t_max, i_max = T[s], s
        out[OUT_T_MIN] = t_min
        out[OUT_T_MAX] = t_max
        out[OUT_T_MEDIAN] = median
        out[OUT_T_MIN_IDX] = i_min
        out[OUT_T_MAX_IDX] = i_max
        out[OUT_N_VALID_T] = n_valid

    def balance(self, bint enable, bint use_soc, double start, double stop):
        """Passive balancing: bleed each valid group more than ``start`` above the lowest (SOC or voltage).

        A group already bleeding goes on until within ``stop``. Returns the number of groups bleeding.
        """
        cdef int ns = self.ns, g, n_ok = 0, count = 0
        cdef double* v = self.reading
        cdef double* x = self.group_soc if use_soc else self.reading
        cdef unsigned char* b = self.balancing
        cdef double x_min = 0.0, d, v_floor = self.par[PAR_BAL_MIN_V]
        cdef bint hot = not (self.out[OUT_N_VALID_T] > 0 and self.out[OUT_T_MAX] <= self.par[PAR_BAL_MAX_T])
        cdef bint on
        for g in range(ns):
            if self.cell_valid[g] and isfinite(x[g]) and v[g] >= v_floor:
                if n_ok == 0 or x[g] < x_min:
                    x_min = x[g]
                n_ok = n_ok + 1
        if not enable or hot or n_ok < 2:
            for g in range(ns):
                b[g] = 0
            return 0
        for g in range(ns):
            on = False
            if self.cell_valid[g] and isfinite(x[g]) and v[g] >= v_floor:
                d = x[g] - x_min
                on = d > start or (b[g] != 0 and d > stop)
            b[g] = 1 if on else 0
            count = count + on
        return count
