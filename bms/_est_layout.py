"""Index layouts of the estimator kernels (ext/estimators.pyx and bms/_twin/estimators.py share them).

Arrays over series groups are structures of arrays: element ``k`` of group ``g`` sits at ``k * n + g``.
"""

# --- SOC filter state vector, per series group -------------------------------------------------
X_SOC = 0      # state of charge, 0..1
X_V1 = 1       # voltage across the first RC pair (V, > 0 while discharging)
X_V2 = 2       # voltage across the second RC pair (V)
X_HYST = 3     # Plett dynamic hysteresis state, -1..1
X_BIAS = 4     # the cell-monitor channel's voltage offset (V): a slowly varying bias
N_X = 5
STATE_NAMES = ("soc", "v_rc1_V", "v_rc2_V", "hysteresis", "voltage_bias_V")

# packed upper triangle of the symmetric 5x5 covariance, row by row
COV_INDEX = [[0] * N_X for _ in range(N_X)]
_k = 0
for _i in range(N_X):
    for _j in range(_i, N_X):
        COV_INDEX[_i][_j] = COV_INDEX[_j][_i] = _k
        _k += 1
N_COV = _k  # 15
del _i, _j, _k

# --- tuning (EstimatorState.tuning), all in SI units; defaults in bms.estimators.EstimatorTuning -
TU_SIG_V = 0            # V, white voltage-measurement noise (1 sigma)
TU_SIG_MODEL = 1        # relative model error on the overpotential r0|i| + |v1| + |v2|
TU_SIG_I = 2            # A per cell, white current-sensor noise
TU_QZ_RATE = 3          # 1/s, SOC random walk (current-sensor offset)
TU_QZ_THROUGHPUT = 4    # SOC variance added per unit of |SOC change| (gain and capacity error)
TU_SIG_RC_REL = 5       # relative error of the RC pairs' input r*i (stationary share of r*i, not per tick)
TU_QV_RATE = 6          # V^2/s, random walk floor of the RC voltages
TU_QH = 7               # hysteresis variance added per unit of hysteresis decay (1 - exp)
TU_QB_RATE = 8          # V^2/s, random walk of the channel bias
TU_GATE = 9             # innovation gate, in standard deviations of the innovation
TU_V_LO = 10            # V, a cell voltage outside [lo, hi] is implausible
TU_V_HI = 11
TU_STUCK_SAMPLES = 12   # identical voltage samples in a row that mean "stuck" (0: never by count)
TU_STUCK_V = 13         # V, a reading that stays identical while the model expects this change is stuck
TU_P_FLOOR = 14         # smallest variance kept on the diagonal of the covariance
TU_T_GATE_K = 15        # K, temperature innovations beyond this are not used
TU_T_LO = 16            # degC, plausible temperature range
TU_T_HI = 17
TU_REST_C_RATE = 18     # |current| below this C-rate counts as rest (capacity anchors)
TU_SETTLE_S = 19        # s of rest before an anchor is taken
TU_MIN_DSOC = 20        # SOC span between anchors that yields a capacity sample
TU_CAP_PRIOR_REL = 21   # relative 1 sigma of the capacity prior (nominal)
TU_CAP_FORGET = 22      # weight kept by older capacity samples when a new one is committed
TU_R_SIG = 23           # V, noise of one resistance regression sample
TU_R_Q_RATE = 24        # 1/s, random walk of the resistance scale
TU_R_MIN = 25           # bounds of the resistance scale
TU_R_MAX = 26
TU_SOE_C_RATE = 27      # reference discharge C-rate of the usable-energy losses
TU_SOP_REFINE = 28      # groups per direction and horizon refined with self-heating
TU_SOP_HEAT_J_PER_K = 29  # heat capacity heated by the SOP current over a horizon (per cell)
TU_SOP_TEMP_FRACTION = 30  # the RC pairs see this fraction of the horizon's temperature rise
TU_GATE_ABS = 31        # V, innovations below this are never gated
TU_SIGN_BAND = 32       # A per cell: half width of the current band where the hysteresis sign is uncertain
TU_SIG_CORR = 33        # V, model error that persists (hysteresis shape, parallel cells, OCV table)
TU_CORR_S = 34          # s, how long model errors persist: they weigh as one sample per TU_CORR_S
TU_REOPEN = 35          # consecutive gated samples after which the SOC variance is re-opened
TU_BIAS_MAX = 36        # V, the channel bias estimate is kept within +-this (the sensor's accuracy band)
TU_R_MIN_DI = 37        # A per cell: smallest current step between slow updates used for resistance tracking
TU_SOP_R_SIGMA = 38     # relative 1 sigma of a group's resistance against the model (cell spread, per group)
TU_SOP_R_K = 39         # the SOP solve assumes each group's resistance this many sigmas above its estimate
TU_SIGN_TAU = 40        # s, time constant of the low-passed current deciding the hysteresis sign (0: none)
N_TUNING = 41

# --- pack scalars (EstimatorState.scalars) ------------------------------------------------------
S_CURRENT = 0           # A per cell used in the last tick (> 0 discharging)
S_CURRENT_VALID = 1     # 1 when the current reading was usable
S_ACC_T = 2             # s accumulated since the last slow update
S_ACC_Q = 3             # Ah per cell (charge efficiency applied) since the last slow update
S_ACC_IDT = 4           # A s per cell since the last slow update
S_ACC_IMAX = 5          # largest |A| per cell since the last slow update
S_REST_S = 6            # s of rest so far
S_AH = 7                # Ah per cell, net throughput counter (charge efficiency applied)
S_ENERGY_KWH = 8        # remaining energy above empty, at OCV
S_ENERGY_USABLE_KWH = 9  # deliverable before the weakest group is empty, with losses
S_GATED = 10            # innovations rejected by the gate (count)
S_TICKS = 11            # ticks run
S_THERMAL_DT = 12       # dt for which the thermal gains were computed
S_SLOW_PREV_I = 13      # A per cell at the previous slow update
S_SLOW_PREV_SET = 14    # 1 once a previous slow sample exists
S_SOP_NEXT = 15         # horizon the next slow update solves (they take turns); < 0: every horizon
S_SIGN_I = 16           # A per cell, the low-passed current that decides the instantaneous-hysteresis sign
S_SIGN_ZONE_NOW = 17    # 1 when the last tick's current (sample or low-passed) was where the sign may flip
S_ACC_SIGN_ZONE = 18    # 1 when any tick since the slow sample before the last one was (no resistance step)
N_SCALARS = 19

# --- thermal observer constants (EstimatorState.thermal): steady-state gains per temperature sample
TH_K_CORE = 0
TH_K_SURFACE = 1
TH_K_COOLANT = 2
N_THERMAL = 3

# --- state of power outputs (EstimatorState.sop, shape (N_SOP, N_HORIZONS) flattened) ----------
SOP_DISCHARGE_A = 0
SOP_CHARGE_A = 1
SOP_DISCHARGE_W = 2
SOP_CHARGE_W = 3
SOP_DISCHARGE_MODEL_A = 4   # voltage-limited part only (the model prediction)
SOP_CHARGE_MODEL_A = 5
SOP_DISCHARGE_GROUP = 6     # limiting group of the model prediction
SOP_CHARGE_GROUP = 7
N_SOP = 8
SOP_HORIZONS_S = (2.0, 10.0, 30.0)
N_HORIZONS = 3

# --- flags --------------------------------------------------------------------------------------
# Arrhenius factors are refreshed when the estimated core temperature has moved this far (K)
EST_ARRHENIUS_REFRESH_K = 0.05
# self-heating over an SOP horizon is counted up to this rise (K): beyond, the solve would run away. A 10 s
# pulse at 10C and 45 degC heats the core by ~7 K (at the former 5 K cap the limit was 46 mV short); exp_rise
# stays within 1e-4 for 10 K down to -40 degC
SOP_MAX_RISE_K = 10.0
# resistance tracking waits until the group's SOC filter is this sure (1 sigma): while it converges, its
# corrections to SOC, RC and hysteresis states would read as resistance
EST_R_SOC_SIGMA_MAX = 0.01
# a group's SOP solution is a point of the grid 20C * k / 2^SOP_BISECTIONS (k = 0 .. 2^SOP_BISECTIONS), found
# by bisection: a function of the group's state alone (7e-5 A per step for a 60 Ah cell)
SOP_BISECTIONS = 24
# volts by which a group's end voltage must clear its limit for the SOP search to skip it (far above rounding)
SOP_PROOF_MARGIN_V = 1e-9
# an SOC correction larger than this (a tenth of an OCV table step) is re-linearised at the updated SOC
# (iterated EKF), this many times (from 0 to 87.5 % three stopped at 93 % and the rest went into hysteresis)
EST_IEKF_DSOC = 0.005
EST_IEKF_ITERATIONS = 6
