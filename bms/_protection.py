"""Layout and state of the protection kernel (ext/protection.pyx and its twin bms/_twin/protection.py).

One place for the indices both kernels and the controller use, so they never drift. The state is a
structure of arrays owned by ``ProtectionState``; the kernels bind them once: change values in place.

Debounce, per channel and per protection (``tm`` rows: [warning, error, emergency, clear] timers):
a level's timer runs while the raw condition is at or beyond that level and resets otherwise; the level
rises as soon as its timer reaches its debounce time; it falls (to what the timers then support) once
the condition has been back inside the current level's threshold minus the hysteresis for the clear time.
Thresholds are stored "over" oriented (under-type checks negate value and thresholds).
"""
from __future__ import annotations

import math

import numpy as np

from .config import BmsConfig
from .faults import N_PROTECTIONS
from .faults import Protection as P

__all__ = ["ProtectionState"]

# events returned by ProtectionKernel.tick
EV_LEVEL = 1   # a protection level changed this tick
EV_SLOW = 2    # the slow (per-cell) task ran this tick
EV_WAKE = 4    # the Python side's wake-up time has come

# inputs (Python -> kernel)
IN_DIS_REF = 0         # A, discharge current the over-current check compares against
IN_CH_REF = 1          # A, charge current magnitude the over-current check compares against
IN_OC_ENABLE = 2       # 1: warning/error over-current checks active (READY, CHARGING, not opening)
IN_CHARGING = 3        # 1: charge temperature window checked
IN_VCU_DEADLINE = 4    # s, VCU_TIMEOUT when t passes it (inf: not monitored)
IN_CHARGER_DEADLINE = 5
IN_WAKE = 6            # s, EV_WAKE when t reaches it
IN_NEXT_SLOW = 7       # s, next slow task
IN_SLOW_PERIOD = 8     # s
IN_CORE_MAX = 9        # degC, hottest core estimate (nan: none)
IN_CORE_MIN = 10       # degC, coldest core estimate (nan: none)
IN_R_REF = 11          # ohm, datasheet R0 of a group at the present temperature (stack-pressure reference)
IN_SP_SOC_OK = 12      # 1: every group's SOC inside the stack-pressure window; 0: the regression restarts
IN_IMB_SOC_OK = 13     # 1: the pack's SOC inside the imbalance window (else imbalance is not judged)
N_IN = 14

# parameters (from the configuration)
PAR_CELL_MIN = 0
PAR_CELL_MAX = 1
PAR_STUCK_DI = 2
PAR_STUCK_DV = 3
PAR_STUCK_DEB = 4
PAR_TEMP_MIN = 5
PAR_TEMP_MAX = 6
PAR_DISAGREE_K = 7
PAR_RATE_TAU = 8
PAR_CUR_MAX = 9
PAR_OC_WARN = 10        # fraction over the reference
PAR_OC_ERR = 11
PAR_OC_OFFSET = 12      # A
PAR_OC_EM_DIS = 13      # A, absolute
PAR_OC_EM_CH = 14       # A, absolute
PAR_REG_TAU = 15        # s, stack-pressure regression forgetting time
PAR_REG_MIN_VAR = 16    # A^2
PAR_BAL_MAX_T = 17      # degC, no balancing above
PAR_BAL_MIN_V = 18      # V, no bleeding of a group below
PAR_REST_A = 19         # A, imbalance is judged only with |current| at or below this
PAR_LP_TAU = 20         # s, low-pass on voltage and current before the stack-pressure regression
PAR_TEMP_JUMP = 21      # K/s, a faster change between two temperature samples is a sensor step
N_PAR = 22

# kernel scalars (kernel-owned state)
KS_LAST_SLOW = 0
KS_CUR_LAST = 1
KS_CUR_REF_VSUM = 2
KS_CUR_STUCK_T = 3
KS_REG_MI = 4
KS_REG_MII = 5
KS_REG_TIME = 6
KS_VSUM = 7            # V, last sum of the valid cell readings
KS_LP_I = 8            # A, low-passed current
KS_REG_MU = 9          # Ah, stack-pressure regression: moments of the throughput since each sample (u) ...
KS_REG_MUU = 10        # Ah^2
KS_REG_MUI = 11        # Ah A, ... and of u with the current
N_KS = 12
REG_U_RIDGE = 1e-6     # Ah^2 added to u's variance: with no throughput in the window (rest) the regression is on
                       # the current alone
REG_MIN_REL_VAR = 0.01  # the current's variance in the window at least (10 % of its mean)^2: one step long ago, a
                        # sliver of the window's weight, is not a measurement of resistance (a charge's start)

# outputs (kernel -> Python), refreshed by the slow task
OUT_V_MIN = 0
OUT_V_MAX = 1
OUT_V_MIN_IDX = 2
OUT_V_MAX_IDX = 3
OUT_V_SUM = 4          # V, sum over valid channels
OUT_N_VALID_V = 5
OUT_T_MIN = 6
OUT_T_MAX = 7
OUT_T_MIN_IDX = 8
OUT_T_MAX_IDX = 9
OUT_N_VALID_T = 10
OUT_RATIO_MAX = 11
OUT_RATIO_IDX = 12
OUT_R_REF = 13         # ohm, reference resistance of the last judgement
OUT_SLOW_DT = 14
OUT_T_MEDIAN = 15      # degC, median of the valid sensors (nan below 3): a bad sensor does not move it
N_OUT = 16

# per-channel temperature checks (rows of tm_temp / lv_temp)
TEMP_CHECKS = (P.DISCHARGE_OVERTEMPERATURE, P.DISCHARGE_UNDERTEMPERATURE, P.CHARGE_OVERTEMPERATURE,
               P.CHARGE_UNDERTEMPERATURE, P.THERMAL_EVENT)
N_TEMP_CHECKS = len(TEMP_CHECKS)


class ProtectionState:
    """Arrays of the protection kernel for a pack of ``n_series`` groups and ``n_temp`` sensors."""

    def __init__(self, n_series: int, n_temp: int, sensors_per_module: int, config: BmsConfig,
                 capacity_Ah: float):
        ns, nt = n_series, n_temp
        self.n_series, self.n_temp, self.sensors_per_module = ns, nt, sensors_per_module
        self.thr = np.zeros((N_PROTECTIONS, 4))
        self.deb = np.zeros((N_PROTECTIONS, 4))
        self.par = np.zeros(N_PAR)
        self.inp = np.zeros(N_IN)
        self.ks = np.zeros(N_KS)
        self.out = np.zeros(N_OUT)
        self.level = np.zeros(N_PROTECTIONS, dtype=np.uint8)   # published: max(own, ext)
        self.own = np.zeros(N_PROTECTIONS, dtype=np.uint8)     # kernel-computed
        self.ext = np.zeros(N_PROTECTIONS, dtype=np.uint8)     # set by the Python side
        self.worst = np.zeros((N_PROTECTIONS, 2))              # (channel, value) at the last evaluation
        self.tm_scalar = np.zeros((N_PROTECTIONS, 4))
        self.lv_scalar = np.zeros(N_PROTECTIONS, dtype=np.uint8)
        self.tm_cell = np.zeros((2, ns, 4))                    # over-, under-voltage
        self.lv_cell = np.zeros((2, ns), dtype=np.uint8)
        self.tm_cell_sensor = np.zeros((ns, 4))
        self.lv_cell_sensor = np.zeros(ns, dtype=np.uint8)
        self.cell_last_V = np.full(ns, np.nan)
        self.cell_ref_A = np.zeros(ns)
        self.cell_stuck_s = np.zeros(ns)
        self.cell_valid = np.zeros(ns, dtype=np.uint8)
        self.tm_temp = np.zeros((N_TEMP_CHECKS, nt + 1, 4))   # last column: the core estimate
        self.lv_temp = np.zeros((N_TEMP_CHECKS, nt + 1), dtype=np.uint8)
        self.tm_temp_sensor = np.zeros((nt, 4))                # range: 2 (ERROR-kind), per sensor
        self.lv_temp_sensor = np.zeros(nt, dtype=np.uint8)
        self.tm_temp_disagree = np.zeros((nt, 4))              # disagreement: 1 (WARNING-kind)
        self.lv_temp_disagree = np.zeros(nt, dtype=np.uint8)
        self.temp_valid = np.zeros(nt, dtype=np.uint8)
        self.temp_last_C = np.full(nt, np.nan)
        self.temp_rate = np.zeros(nt)                          # K/s, filtered
        self.tm_contactor = np.zeros((2, 3, 4))                # feedback-open, welded
        self.lv_contactor = np.zeros((2, 3), dtype=np.uint8)
        self.tm_group = np.zeros((ns, 4))                      # stack pressure
        self.lv_group = np.zeros(ns, dtype=np.uint8)
        self.lp_v = np.full(ns, np.nan)                         # V, low-passed group voltages
        self.reg_mv = np.zeros(ns)
        self.reg_miv = np.zeros(ns)
        self.reg_mud = np.zeros(ns)                             # moment of u with each group's deviation
        self.ratio = np.ones(ns)
        self.group_soc = np.full(ns, np.nan)                   # balancing input (from the estimator)
        self.scratch = np.zeros(max(ns, nt) + 1)
        self.configure(config, capacity_Ah)
        self.reset_inputs()

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}

    def reset_inputs(self) -> None:
        inp = self.inp
        inp[:] = 0.0
        inp[IN_VCU_DEADLINE] = inp[IN_CHARGER_DEADLINE] = inp[IN_WAKE] = math.inf
        inp[IN_NEXT_SLOW] = 0.0
        inp[IN_SLOW_PERIOD] = self._period
        inp[IN_CORE_MAX] = inp[IN_CORE_MIN] = math.nan
        self.ks[:] = 0.0
        self.ks[KS_LAST_SLOW] = math.nan
        self.ks[KS_CUR_LAST] = math.nan
        self.ks[KS_LP_I] = math.nan

    def configure(self, c: BmsConfig, capacity_Ah: float) -> None:
        """Threshold, debounce and parameter tables from a configuration."""
        self._period = c.protection_period_s
        clear = c.protection_clear_s
        thr, deb = self.thr, self.deb
        thr[:] = math.inf
        deb[:, :3] = 0.0
        deb[:, 3] = clear

        def levels(p, prefix, unit, hysteresis, sign=1.0):
            values = [getattr(c, f"{prefix}_{lv}_{unit}") for lv in ("warning", "error", "emergency")]
            thr[p, :3] = [sign * v for v in values]
            thr[p, 3] = hysteresis
            deb[p, :3] = getattr(c, f"{prefix}_debounce_s")

        levels(P.CELL_OVERVOLTAGE, "cell_overvoltage", "V", c.cell_voltage_hysteresis_V)
        levels(P.CELL_UNDERVOLTAGE, "cell_undervoltage", "V", c.cell_voltage_hysteresis_V, -1.0)
        levels(P.CELL_IMBALANCE, "cell_imbalance", "V", c.cell_voltage_hysteresis_V)
        levels(P.DISCHARGE_OVERTEMPERATURE, "discharge_overtemp", "C", c.temperature_hysteresis_K)
        levels(P.DISCHARGE_UNDERTEMPERATURE, "discharge_undertemp", "C", c.temperature_hysteresis_K, -1.0)
        levels(P.CHARGE_OVERTEMPERATURE, "charge_overtemp", "C", c.temperature_hysteresis_K)
        levels(P.CHARGE_UNDERTEMPERATURE, "charge_undertemp", "C", c.temperature_hysteresis_K, -1.0)
        levels(P.LINK_VOLTAGE_MISMATCH, "link_mismatch", "V", c.voltage_mismatch_hysteresis_V)
        levels(P.PACK_VOLTAGE_MISMATCH, "pack_mismatch", "V", c.voltage_mismatch_hysteresis_V)
        levels(P.STACK_PRESSURE_LOSS, "stack_pressure", "ratio", c.stack_pressure_hysteresis)
        levels(P.THERMAL_EVENT, "thermal_rise", "K_per_s", 0.1)
        for p in (P.DISCHARGE_OVERCURRENT, P.CHARGE_OVERCURRENT):
            thr[p, 3] = c.overcurrent_hysteresis_A
            deb[p, :3] = c.overcurrent_debounce_s
        thr[P.CURRENT_SENSOR, :3] = [c.current_offset_warning_A, c.current_offset_error_A, math.inf]
        thr[P.CURRENT_SENSOR, 3] = 0.0
        deb[P.CURRENT_SENSOR, :3] = c.current_sensor_debounce_s
        deb[P.CELL_VOLTAGE_SENSOR, :3] = c.cell_voltage_sensor_debounce_s
        deb[P.TEMPERATURE_SENSOR, :3] = [c.temperature_disagreement_debounce_s, c.temperature_sensor_debounce_s,
                                         c.temperature_sensor_debounce_s]
        for p in (P.CONTACTOR_FEEDBACK, P.CONTACTOR_WELDED):
            deb[p, :3] = c.contactor_feedback_timeout_s
        for p in (P.VCU_TIMEOUT, P.CHARGER_TIMEOUT):
            deb[p, :] = 0.0
        par = self.par
        par[PAR_CELL_MIN], par[PAR_CELL_MAX] = c.cell_voltage_plausible_min_V, c.cell_voltage_plausible_max_V
        par[PAR_STUCK_DI], par[PAR_STUCK_DV] = c.sensor_stuck_current_delta_A, c.sensor_stuck_voltage_delta_V
        par[PAR_STUCK_DEB] = c.sensor_stuck_debounce_s
        par[PAR_TEMP_MIN], par[PAR_TEMP_MAX] = c.temperature_plausible_min_C, c.temperature_plausible_max_C
        par[PAR_DISAGREE_K] = c.temperature_disagreement_K
        par[PAR_RATE_TAU] = c.thermal_rise_filter_s
        par[PAR_TEMP_JUMP] = c.temperature_jump_K_per_s
        par[PAR_CUR_MAX] = c.current_plausible_max_A
        par[PAR_OC_WARN], par[PAR_OC_ERR] = c.overcurrent_warning_margin, c.overcurrent_error_margin
        par[PAR_OC_OFFSET] = c.overcurrent_offset_A
        par[PAR_OC_EM_DIS] = c.discharge_overcurrent_emergency_C_rate * capacity_Ah
        par[PAR_OC_EM_CH] = c.charge_overcurrent_emergency_C_rate * capacity_Ah
        par[PAR_REG_TAU] = c.stack_pressure_window_s
        par[PAR_REG_MIN_VAR] = c.stack_pressure_min_current_A ** 2
        par[PAR_BAL_MAX_T] = c.balancing_max_temp_C
        par[PAR_BAL_MIN_V] = c.balancing_min_cell_V
        par[PAR_REST_A] = c.rest_current_A
        par[PAR_LP_TAU] = c.stack_pressure_filter_s
