"""The BMS's estimators: state of charge, core temperature, state of power, state of energy, state of health.

``PackEstimator`` sees only the sensor layer (cell-voltage channels, pack current, surface temperature
sensors) and the BMS's own nominal cell parameters (``PackParams.cell``, no spread); it never reads the
plant. Call ``update(t_s, dt_s)`` once per BMS tick, after ``sensors.sample(t_s)``.

Every tick, for every series group (compiled kernel ``TickKernel``):
  * input checks: a cell-voltage reading that is NaN, out of the plausible range or stuck (identical while
    the current moved enough to change it, or identical for too many samples although the channel is
    noisy) is flagged in ``input_valid`` and not used;
  * an extended Kalman filter per group on the same kind of model as the plant, with nominal parameters:
    states SOC, the two RC voltages, the Plett hysteresis state and the channel's voltage bias;
    covariance in Joseph form with a variance floor, innovations gated, 3 sigma reported; an SOC
    correction that reaches across a bend of the OCV is re-linearised (iterated EKF); the instantaneous
    hysteresis sign follows the low-passed pack current, uncertain (and so noisier) near its threshold;
  * the heat each group generates (from the filter's overpotentials) and a two-node thermal observer
    (core, surface) whose coolant temperature is estimated at each sensor and interpolated between sensors
    along the module; steady-state Kalman gains for the sensor's sample period.

The current sensor's zero: while the contactor feedback says no string current can flow (main− open, or main+
and precharge open), the shunt reads its own offset; the estimator averages those readings (a running mean of
the first 1000, then a moving one) and subtracts the mean from every reading it uses (at cold, 0.1 A per cell
of offset times the cold cell's resistance is a voltage error of a few mV, which the SOC filter would
otherwise read as SOC).

At ``slow_period_s`` (default 100 ms; kernel ``SlowKernel``): resistance tracking (scale on the nominal
resistances from voltage steps against current steps), capacity tracking (charge throughput over the
SOC change between rested anchors, inverse-variance weighted with a prior on the nominal capacity), state
of power for 2, 10 and 30 s (one horizon per slow update in turn, every horizon on ``update_slow()``
and on the first update, so nothing the BMS reports is a placeholder; each group's limit is a bisection
on a fixed current grid, a function of its state alone) and state of energy.

The per-tick bookkeeping around the two kernels (which readings are new, the current zero, the 100 ms
count) is compiled too (``bms_tick.EstimatorFeed``, twin ``bms/_twin/bms_tick.py``).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _est_layout as L
from . import _kernels
from ._est_layout import (
    COV_INDEX,
    N_COV,
    N_HORIZONS,
    N_SCALARS,
    N_SOP,
    N_THERMAL,
    N_TUNING,
    N_X,
    S_AH,
    S_CURRENT_VALID,
    S_ENERGY_KWH,
    S_ENERGY_USABLE_KWH,
    S_GATED,
    SOP_CHARGE_A,
    SOP_CHARGE_GROUP,
    SOP_CHARGE_MODEL_A,
    SOP_CHARGE_W,
    SOP_DISCHARGE_A,
    SOP_DISCHARGE_GROUP,
    SOP_DISCHARGE_MODEL_A,
    SOP_DISCHARGE_W,
    SOP_HORIZONS_S,
    STATE_NAMES,
    TH_K_COOLANT,
    TH_K_CORE,
    TH_K_SURFACE,
    X_SOC,
)
from .errors import InputError, ParameterError
from .params import PackParams, load_pack

_sum, _min, _max = np.add.reduce, np.minimum.reduce, np.maximum.reduce

__all__ = ["PackEstimator", "SopLimits", "EstimatorTuning", "EstimatorState", "thermal_gains",
           "SOP_HORIZONS_S"]



@dataclass(frozen=True, kw_only=True)
class EstimatorTuning:
    """Filter tuning. ``None`` means: derived from the sensor and spread specification in ``PackParams``
    (datasheet figures a BMS engineer knows; never the drawn offsets)."""
    voltage_noise_V: float | None = None          # white noise of a cell-voltage sample
    voltage_bias_V: float | None = None           # 1 sigma of a channel's constant offset
    model_error_rel: float = 0.04                 # relative error of the modelled overpotential
    model_error_V: float = 0.001                  # persistent model error of the voltage
    model_error_correlation_s: float = 1.0        # how long model errors persist
    current_noise_A: float | None = None          # white noise of the pack current sample
    current_offset_A: float | None = None         # 1 sigma of the current-sensor offset
    current_gain_error: float | None = None       # 1 sigma of the current-sensor gain error
    capacity_error_rel: float | None = None       # 1 sigma of a group's capacity against nominal
    # a group's R1, R2 against the nominal ones: the RC states' error is kept at this share of r * i
    # (stationary); the cell spread (5 % / sqrt(2)) at 2 sigma for the worst of many groups, and the
    # Arrhenius law off by a 0.5 K core-temperature error in the cold (about 4 %)
    rc_input_error_rel: float = 0.1
    rc_random_walk_V2_per_s: float = 1e-9
    hysteresis_process: float = 0.01
    # the instantaneous-hysteresis sign is decided on the current low-passed over this time (the plant's
    # follows the true current)
    sign_current_tau_s: float = 0.2
    bias_random_walk_V2_per_s: float = 1e-12
    gate_sigma: float = 8.0
    gate_floor_V: float = 0.05
    gate_reopen_samples: int = 100                # after this many gated samples in a row the SOC variance
                                                  # grows by (innovation / OCV slope)^2: the state was wrong
    voltage_plausible_V: tuple = (0.5, 5.0)
    stuck_samples: int | None = None              # None: 10 if the channel is noisy, else never by count
    stuck_change_V: float = 0.015
    variance_floor: float = 1e-14
    temperature_gate_K: float = 8.0
    temperature_plausible_C: tuple = (-45.0, 130.0)
    rest_c_rate: float = 0.02
    settle_s: float = 600.0
    min_soc_span: float = 0.3
    capacity_prior_rel: float = 0.1
    capacity_forget: float = 0.8
    resistance_noise_V: float | None = None       # one regression sample (two voltage samples)
    resistance_random_walk_per_s: float = 1e-6
    resistance_scale_bounds: tuple = (0.25, 6.0)
    resistance_min_step_C_rate: float = 0.05      # current steps below this (per cell) carry no resistance
                                                  # information, only current noise: a regression on them
                                                  # drifts toward zero (errors in variables). Drive cycles
                                                  # seldom step this much in 100 ms: until the tracker has
                                                  # learnt a group, the SOC filter counts its uncertainty
    energy_reference_c_rate: float = 1.0 / 3.0
    sop_refine_groups: int = 1                    # > 0: the SOP solve counts the horizon's self-heating
    sop_heat_capacity_J_per_K: float | None = None  # None: core heat capacity of the cell
    sop_rc_temperature_fraction: float = 0.5
    sop_resistance_spread_rel: float | None = None  # None: the cell spread over n_parallel cells
    sop_resistance_sigmas: float = 2.0            # the limiting group is the worst of many: its resistance
                                                  # is taken this many sigmas above the estimate (at most
                                                  # the spread, less once the tracker knows the group)
    # initial uncertainty
    initial_soc_sigma: float = 0.2                # when initial_soc is given
    ocv_soc_sigma: float = 0.05                   # when the SOC is taken from the rested OCV
    initial_rc_sigma_V: float = 0.0005
    initial_hysteresis_sigma: float = 0.3
    initial_resistance_sigma: float = 0.3         # relative, of the resistance scale
    # thermal observer (steady-state gains)
    heat_error_W: float = 0.5
    coolant_random_walk_K2_per_s: float = 1.0 / 3600.0
    temperature_noise_K: float | None = None
    calibrate_temperature_at_rest: bool = True
    slow_period_s: float = 0.1

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, tuple):
                if not (len(value) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
                        and value[0] < value[1]):
                    raise ParameterError(f"tuning.{f.name}", "a range (low, high) of finite numbers", value)
            elif not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ParameterError(f"tuning.{f.name}", "a finite number >= 0", value)
        if self.slow_period_s <= 0:
            raise ParameterError("tuning.slow_period_s", "a period > 0 s", self.slow_period_s)

    def array(self, params: PackParams) -> np.ndarray:
        """The kernel's tuning vector for a pack (per-cell figures)."""
        sp, cell, n_p = params.sensors, params.cell, params.n_parallel
        t = np.zeros(N_TUNING)
        noise = self.voltage_noise_V if self.voltage_noise_V is not None else math.sqrt(
            sp.cell_voltage_noise_V ** 2 + sp.cell_voltage_lsb_V ** 2 / 12.0)
        t[L.TU_SIG_V] = max(noise, 1e-5)
        t[L.TU_SIG_MODEL] = self.model_error_rel
        t[L.TU_SIG_CORR] = self.model_error_V
        t[L.TU_CORR_S] = self.model_error_correlation_s
        i_noise = self.current_noise_A if self.current_noise_A is not None else math.sqrt(
            sp.current_noise_A ** 2 + sp.current_lsb_A ** 2 / 12.0)
        t[L.TU_SIG_I] = i_noise / n_p
        eps = 0.01 * cell.capacity_Ah
        # the measured string current's error (the plant's sign follows the string current, so currents
        # circulating between parallel cells do not count)
        # (persistent errors here; the kernels add 3 sigma of the noise of the current low-passed over
        # sign_current_tau_s, on which the sign is decided: a band from the noise of single samples is
        # crossed by their tails in a long rest near the threshold)
        t[L.TU_SIGN_BAND] = max(abs(sp.current_offset_A) / n_p + abs(sp.current_gain_error) * eps, 1e-3)
        t[L.TU_SIGN_TAU] = self.sign_current_tau_s
        offset = self.current_offset_A if self.current_offset_A is not None else abs(sp.current_offset_A)
        offset = max(offset, 0.01) / n_p
        # an offset is a bias: as a random walk it reaches offset * t after about an hour
        t[L.TU_QZ_RATE] = (offset / 3600.0 / cell.capacity_Ah) ** 2 * 3600.0
        gain = self.current_gain_error if self.current_gain_error is not None else abs(sp.current_gain_error)
        cap = self.capacity_error_rel if self.capacity_error_rel is not None else params.spread.capacity_rel_sigma
        t[L.TU_QZ_THROUGHPUT] = 0.5 * (gain ** 2 + cap ** 2 + 1e-6)
        t[L.TU_SIG_RC_REL] = self.rc_input_error_rel
        t[L.TU_QV_RATE] = self.rc_random_walk_V2_per_s
        t[L.TU_QH] = self.hysteresis_process
        t[L.TU_QB_RATE] = self.bias_random_walk_V2_per_s
        t[L.TU_GATE] = self.gate_sigma
        t[L.TU_GATE_ABS] = self.gate_floor_V
        t[L.TU_REOPEN] = max(self.gate_reopen_samples, 1)
        t[L.TU_BIAS_MAX] = max(sp.cell_voltage_accuracy_V, 1e-3)  # offsets lie within +-accuracy
        t[L.TU_V_LO], t[L.TU_V_HI] = self.voltage_plausible_V
        if self.stuck_samples is not None:
            t[L.TU_STUCK_SAMPLES] = self.stuck_samples
        else:
            noisy = sp.cell_voltage_noise_V >= 3.0 * max(sp.cell_voltage_lsb_V, 1e-6)
            # a noisy channel repeats a sample with p ~ lsb / (3.5 sigma); ten in a row never happens
            t[L.TU_STUCK_SAMPLES] = 10.0 if noisy else 0.0
        t[L.TU_STUCK_V] = self.stuck_change_V
        t[L.TU_P_FLOOR] = self.variance_floor
        t[L.TU_T_GATE_K] = self.temperature_gate_K
        t[L.TU_T_LO], t[L.TU_T_HI] = self.temperature_plausible_C
        t[L.TU_REST_C_RATE] = self.rest_c_rate
        t[L.TU_SETTLE_S] = self.settle_s
        t[L.TU_MIN_DSOC] = self.min_soc_span
        t[L.TU_CAP_PRIOR_REL] = max(self.capacity_prior_rel, 1e-6)
        t[L.TU_CAP_FORGET] = self.capacity_forget
        r_noise = self.resistance_noise_V if self.resistance_noise_V is not None else math.sqrt(2.0) * noise
        t[L.TU_R_SIG] = max(r_noise, 1e-6)
        t[L.TU_R_Q_RATE] = self.resistance_random_walk_per_s
        t[L.TU_R_MIN], t[L.TU_R_MAX] = self.resistance_scale_bounds
        t[L.TU_R_MIN_DI] = max(self.resistance_min_step_C_rate * cell.capacity_Ah, 20.0 * t[L.TU_SIG_I], 1e-6)
        t[L.TU_SOE_C_RATE] = self.energy_reference_c_rate
        t[L.TU_SOP_REFINE] = self.sop_refine_groups
        t[L.TU_SOP_HEAT_J_PER_K] = (self.sop_heat_capacity_J_per_K if self.sop_heat_capacity_J_per_K
                                    else cell.heat_capacity_core_J_per_K)
        t[L.TU_SOP_TEMP_FRACTION] = self.sop_rc_temperature_fraction
        t[L.TU_SOP_R_SIGMA] = (self.sop_resistance_spread_rel if self.sop_resistance_spread_rel is not None
                               else params.spread.resistance_rel_sigma / math.sqrt(n_p))
        t[L.TU_SOP_R_K] = self.sop_resistance_sigmas
        return t


def thermal_gains(cell, dt_s: float, sample_period_s: float, *, heat_error_W: float = 0.5,
                  coolant_random_walk_K2_per_s: float = 1.0 / 3600.0, temperature_noise_K: float = 0.1,
                  iterations: int = 4000) -> np.ndarray:
    """Steady-state Kalman gains (core, surface, coolant) of the two-node thermal observer.

    Model per tick (backward Euler, as the plant): core and surface nodes, coolant a random walk; the
    surface is measured every ``round(sample_period_s / dt_s)`` ticks. Returns the gain applied to the
    surface innovation at a sample (a copy: the result is remembered).
    """
    # a pure function of a few scalars and costly (thousands of 3x3 Riccati steps, ~0.5 s): remembered per
    # process for each set of them, so the testing kit's examples and a sweep's members (cells of other
    # capacities, the same thermal figures) share it
    return _thermal_gains(cell.heat_capacity_core_J_per_K, cell.heat_capacity_surface_J_per_K,
                          cell.thermal_resistance_core_surface_K_per_W, cell.thermal_resistance_surface_coolant_K_per_W,
                          float(dt_s), float(sample_period_s), float(heat_error_W), float(coolant_random_walk_K2_per_s),
                          float(temperature_noise_K), int(iterations)).copy()


@functools.lru_cache(maxsize=64)
def _thermal_gains(c_core_J_per_K, c_surface_J_per_K, r_core_surface_K_per_W, r_surface_coolant_K_per_W, dt_s,
                   sample_period_s, heat_error_W, coolant_random_walk_K2_per_s, temperature_noise_K, iterations):
    ac, as_ = c_core_J_per_K / dt_s, c_surface_J_per_K / dt_s
    g_cs = 1.0 / r_core_surface_K_per_W
    g_sc = 1.0 / r_surface_coolant_K_per_W
    d = as_ + g_cs + g_sc
    inv_det = 1.0 / ((ac + g_cs) * d - g_cs * g_cs)
    F = np.array([[d * ac, g_cs * as_, g_cs * g_sc],
                  [g_cs * ac, (ac + g_cs) * as_, (ac + g_cs) * g_sc],
                  [0.0, 0.0, 1.0 / inv_det]]) * inv_det
    G = np.array([d, g_cs, 0.0]) * inv_det
    W = np.outer(G, G) * heat_error_W ** 2 + np.diag([0.0, 0.0, coolant_random_walk_K2_per_s * dt_s])
    m = max(1, int(round(sample_period_s / dt_s)))
    Fm, Wm = np.eye(3), np.zeros((3, 3))
    for _ in range(m):
        Wm = F @ Wm @ F.T + W
        Fm = F @ Fm
    H = np.array([0.0, 1.0, 0.0])
    P = np.diag([1.0, 1.0, 1.0])
    K = np.zeros(3)
    for _ in range(iterations):
        P = Fm @ P @ Fm.T + Wm
        S = H @ P @ H + temperature_noise_K ** 2
        K_new = P @ H / S
        P = (np.eye(3) - np.outer(K_new, H)) @ P
        P = 0.5 * (P + P.T)
        if np.allclose(K_new, K, rtol=1e-12, atol=1e-15):
            K = K_new
            break
        K = K_new
    out = np.zeros(N_THERMAL)
    out[TH_K_CORE], out[TH_K_SURFACE], out[TH_K_COOLANT] = K
    return out


class EstimatorState:
    """The estimators' state as arrays over series groups (and temperature sensors); the kernels hold
    pointers into them: change values in place, never rebind an attribute."""

    GROUP_ARRAYS = ("hysteresis_sign", "voltage_sign", "capacity_cell_Ah", "resistance_scale", "resistance_var",
                    "arrhenius_r0", "arrhenius_r1", "arrhenius_r2", "arrhenius_temp_C", "temp_core_C",
                    "temp_surface_C", "temp_coolant_C", "heat_W", "innovation_V", "voltage_last_V",
                    "stuck_current_A", "stuck_count", "gate_count", "interp_weight", "slow_voltage_V", "slow_model_V",
                    "slow_v1_V", "slow_v2_V", "slow_r0i_V", "capacity_sum_w", "capacity_sum_wq",
                    "anchor_soc", "anchor_var", "anchor_ah", "pending_q_Ah", "pending_w",
                    "pending_anchor_soc", "pending_anchor_var", "pending_anchor_ah")
    GROUP_FLAGS = ("valid", "slow_set", "anchor_set", "pending_set", "pending_anchor_set")

    if TYPE_CHECKING:  # the arrays named above are set in __init__
        def __getattr__(self, name: str) -> np.ndarray: ...

    def __init__(self, n_series: int, n_temperature: int):
        n = n_series
        self.n_series = n
        self.x = np.zeros(N_X * n)
        self.cov = np.zeros(N_COV * n)
        for name in self.GROUP_ARRAYS:
            setattr(self, name, np.zeros(n))
        for name in self.GROUP_FLAGS:
            setattr(self, name, np.zeros(n, dtype=np.uint8))
        self.group_sensor = np.full(n, -1, dtype=np.int64)
        self.interp_a = np.zeros(n, dtype=np.int64)
        self.interp_b = np.zeros(n, dtype=np.int64)
        self.sensor_group = np.zeros(n_temperature, dtype=np.int64)
        self.temperature_offset_K = np.zeros(n_temperature)
        self.temperature_valid = np.ones(n_temperature, dtype=np.uint8)
        self.tuning = np.zeros(N_TUNING)
        self.scalars = np.zeros(N_SCALARS)
        self.thermal = np.zeros(N_THERMAL)
        self.sop = np.zeros(N_SOP * N_HORIZONS)
        self.scalars[L.S_SOP_NEXT] = -1.0
        self.arrhenius_temp_C[:] = np.nan
        self.valid[:] = 1
        self.resistance_scale[:] = 1.0

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}

    def copy_from(self, other: EstimatorState) -> None:
        for name, array in other.arrays().items():
            getattr(self, name)[...] = array

    def covariance(self) -> np.ndarray:
        """The filter covariance of every group as full (n_series, 5, 5) matrices (a copy)."""
        n = self.n_series
        packed = self.cov.reshape(N_COV, n)
        out = np.empty((n, N_X, N_X))
        for i in range(N_X):
            for j in range(N_X):
                out[:, i, j] = packed[COV_INDEX[i][j]]
        return out


@dataclass(frozen=True)
class SopLimits:
    """State of power for ``horizons_s``; every array has one value per horizon and updates in place.

    ``discharge_current_A`` and ``charge_current_A`` are positive magnitudes at the pack terminals,
    ``*_power_W`` the power at that current and the predicted end-of-horizon voltage. They combine the
    model prediction (``*_current_model_A``: the limiting group reaches its voltage limit exactly at the
    horizon; ``*_limiting_group`` names it) with the charge table against temperature (SOC taper above
    ``cell.charge_taper_soc``, optional lithium-metal critical current density), the discharge C-rate
    limits (peak for horizons up to ``discharge_peak_duration_s``, then an I^2 t law down to the
    continuous rating) and temperature derating (zero below the charge/discharge minimum, linear from
    ``temp_derate_start_C`` to zero at ``temp_operating_max_C``).
    """
    horizons_s: tuple
    discharge_current_A: np.ndarray
    charge_current_A: np.ndarray
    discharge_power_W: np.ndarray
    charge_power_W: np.ndarray
    discharge_current_model_A: np.ndarray
    charge_current_model_A: np.ndarray
    discharge_limiting_group: np.ndarray
    charge_limiting_group: np.ndarray

    def at(self, horizon_s: float) -> dict:
        """The limits of one horizon as plain floats."""
        if horizon_s not in self.horizons_s:
            raise InputError("horizon_s", f"one of {self.horizons_s}", horizon_s)
        k = self.horizons_s.index(horizon_s)
        return {f.name: float(getattr(self, f.name)[k]) for f in fields(self) if f.name != "horizons_s"}


class PackEstimator:
    """What the BMS believes about the pack, from the sensor layer only (see the module docstring).

    ``initial_soc``: ``None`` initialises every group from the rested OCV of the first measured voltages;
    a number starts every group there (with ``tuning.initial_soc_sigma``).
    ``capacity_Ah_estimate`` and ``resistance_ohm_estimate`` are arrays over series groups: a group's
    capacity in Ah (``n_parallel`` cells) and its R0 in ohm referred to 25 degC and 50 % SOC.
    """

    def __init__(self, params: PackParams | str, sensors, *, initial_soc: float | None = None,
                 kernels=None, tuning: EstimatorTuning | None = None):
        self.params = params = load_pack(params) if isinstance(params, str) else params
        if not isinstance(params, PackParams):
            raise InputError("params", "PackParams or a preset name", type(params).__name__)
        if initial_soc is not None and not (isinstance(initial_soc, (int, float)) and math.isfinite(initial_soc)
                                            and 0.0 <= initial_soc <= 1.0):
            raise InputError("initial_soc", "None or a number in [0, 1]", initial_soc)
        self.tuning = tuning = tuning or EstimatorTuning()
        if not isinstance(tuning, EstimatorTuning):
            raise InputError("tuning", "EstimatorTuning", type(tuning).__name__)
        n, n_p = params.n_series, params.n_parallel
        voltages = getattr(sensors, "cell_voltage_V", None)
        temperatures = getattr(sensors, "temperature_C", None)
        if voltages is None or np.shape(voltages) != (n,):
            raise InputError("sensors.cell_voltage_V", f"{n} readings",
                             None if voltages is None else np.shape(voltages))
        cells = np.asarray(sensors.temperature_cell, dtype=np.int64)
        if temperatures is None or np.shape(temperatures) != cells.shape or cells.ndim != 1 or not cells.size:
            raise InputError("sensors.temperature_C", "one reading per temperature sensor",
                             None if temperatures is None else np.shape(temperatures))
        if cells.min() < 0 or cells.max() >= params.n_cells:
            raise InputError("sensors.temperature_cell", f"cell indices in [0, {params.n_cells})", cells)
        self.sensors = sensors
        self.initial_soc = initial_soc
        self.kernels = kernels = kernels or _kernels.KERNELS
        self.state = s = EstimatorState(n, cells.size)
        s.tuning[:] = tuning.array(params)
        s.capacity_cell_Ah[:] = params.cell.capacity_Ah
        self._layout_sensors(cells // n_p)
        module = kernels.estimators
        self._tick = module.TickKernel(s, params.cell, params, voltages, temperatures)
        self._slow = module.SlowKernel(s, params.cell, params, voltages)
        self._initialised = False
        self._thermal_cache: dict[float, np.ndarray] = {}
        self._thermal_dt: float | None = None
        # current-sensor zero (module docstring): a reading beyond what the sensor's offset and noise can
        # explain is current that flows (a contactor's feedback is wrong), never taken as the zero
        feedback = getattr(sensors, "contactor_feedback", None)
        if feedback is not None and not isinstance(feedback, np.ndarray):
            feedback = np.asarray(feedback, dtype=float)
        sp = params.sensors
        zero_max_A = 3.0 * abs(sp.current_offset_A) + 6.0 * sp.current_noise_A + sp.current_lsb_A
        # the per-tick bookkeeping around the tick kernel (new samples, current zero, the 100 ms count),
        # compiled: the emulator's one call per tick (bms_tick.BuiltinTick) runs it without this object
        self._feed = kernels.bms_tick.EstimatorFeed(self._tick, self._slow, feedback, zero_max_A,
                                                    tuning.slow_period_s - 1e-9)
        sop = s.sop.reshape(N_SOP, N_HORIZONS)
        self.sop = SopLimits(SOP_HORIZONS_S, sop[SOP_DISCHARGE_A], sop[SOP_CHARGE_A], sop[SOP_DISCHARGE_W],
                             sop[SOP_CHARGE_W], sop[SOP_DISCHARGE_MODEL_A], sop[SOP_CHARGE_MODEL_A],
                             sop[SOP_DISCHARGE_GROUP], sop[SOP_CHARGE_GROUP])
        x = s.x.reshape(N_X, n)
        self.group_soc = x[X_SOC]
        self.core_temp_C = s.temp_core_C
        self.input_valid = s.valid.view(bool)
        self.temperature_input_valid = s.temperature_valid.view(bool)

    # --- setup ----------------------------------------------------------------------------------
    def _layout_sensors(self, sensor_group: np.ndarray) -> None:
        """Which group each sensor sits on; coolant of the other groups interpolated along the module."""
        s, p = self.state, self.params
        s.sensor_group[:] = sensor_group
        for j, g in enumerate(sensor_group):
            if s.group_sensor[g] < 0:
                s.group_sensor[g] = j
        per_module = p.groups_per_module
        for g in range(p.n_series):
            if s.group_sensor[g] >= 0:
                s.interp_a[g] = s.interp_b[g] = g
                s.interp_weight[g] = 1.0
                continue
            start = (g // per_module) * per_module
            local = [k for k in range(start, start + per_module) if s.group_sensor[k] >= 0]
            if not local:  # no sensor in the module: nearest sensors of the pack
                local = [int(k) for k in np.flatnonzero(s.group_sensor >= 0)]
            below = [k for k in local if k < g]
            above = [k for k in local if k > g]
            if below and above:
                a, b = below[-1], above[0]
                s.interp_a[g], s.interp_b[g] = a, b
                s.interp_weight[g] = (b - g) / (b - a)
            else:
                k = below[-1] if below else above[0]
                s.interp_a[g] = s.interp_b[g] = k
                s.interp_weight[g] = 1.0

    def _thermal(self, dt_s: float) -> np.ndarray:
        gains = self._thermal_cache.get(dt_s)
        if gains is None:
            sp, tu = self.params.sensors, self.tuning
            noise = tu.temperature_noise_K if tu.temperature_noise_K is not None else math.sqrt(
                sp.temperature_noise_K ** 2 + sp.temperature_lsb_K ** 2 / 12.0 + 0.05 ** 2)
            gains = thermal_gains(self.params.cell, dt_s, sp.temperature_period_s, heat_error_W=tu.heat_error_W,
                                  coolant_random_walk_K2_per_s=tu.coolant_random_walk_K2_per_s,
                                  temperature_noise_K=noise)
            if len(self._thermal_cache) > 8:
                self._thermal_cache.clear()
            self._thermal_cache[dt_s] = gains
        return gains

    def _initialise(self) -> None:
        """First update: temperatures from the sensors (offsets calibrated if the pack is soaked), SOC from
        the rested OCV (or ``initial_soc``), covariance from the tuning's initial uncertainty."""
        s, p, tu = self.state, self.params, self.tuning
        cell, n = p.cell, p.n_series
        lo, hi = tu.temperature_plausible_C
        y = np.asarray(self.sensors.temperature_C, dtype=float)
        ok = np.isfinite(y) & (y >= lo) & (y <= hi)
        s.temperature_valid[:] = ok
        accuracy = p.sensors.temperature_accuracy_K
        if ok.any():
            fill = float(np.median(y[ok]))
        else:
            fill = 25.0
        y = np.where(ok, y, fill)
        if tu.calibrate_temperature_at_rest and ok.sum() >= 2 and np.ptp(y[ok]) <= 2.0 * accuracy + 0.5:
            s.temperature_offset_K[:] = np.where(ok, np.clip(y - y[ok].mean(), -accuracy, accuracy), 0.0)
        y = y - s.temperature_offset_K
        sensor_temp = np.full(n, fill)
        has = s.group_sensor >= 0
        sensor_temp[has] = y[s.group_sensor[has]]
        w = s.interp_weight
        temp = w * sensor_temp[s.interp_a] + (1.0 - w) * sensor_temp[s.interp_b]
        temp = np.where(has, sensor_temp, temp)
        s.temp_core_C[:] = s.temp_surface_C[:] = s.temp_coolant_C[:] = temp

        v = np.asarray(self.sensors.cell_voltage_V, dtype=float)
        lo_v, hi_v = tu.voltage_plausible_V
        v_ok = np.isfinite(v) & (v >= lo_v) & (v <= hi_v)
        ocv = np.array(cell.ocv_V)
        grid = np.linspace(0.0, 1.0, ocv.size)
        dudt_grid = np.linspace(0.0, 1.0, len(cell.entropic_mV_per_K))
        dudt = np.array(cell.entropic_mV_per_K) * 1e-3
        x = s.x.reshape(N_X, n)
        if self.initial_soc is None:
            i = self.sensors.current_A / p.n_parallel if math.isfinite(self.sensors.current_A) else 0.0
            clear = abs(i) >= 0.01 * cell.capacity_Ah + s.tuning[L.TU_SIGN_BAND]
            rest_v = np.where(v_ok, v, ocv.mean()) + (cell.r0_ohm * i + cell.hysteresis_instant_V * math.copysign(
                1.0, i) * clear)
            z = np.interp(rest_v, ocv, grid)
            for _ in range(2):
                z = np.interp(rest_v - (temp - 25.0) * np.interp(z, dudt_grid, dudt), ocv, grid)
            if v_ok.any():
                z = np.where(v_ok, z, float(np.median(z[v_ok])))
                sigma_z = np.where(v_ok, tu.ocv_soc_sigma, 0.25)
            else:
                z, sigma_z = np.full(n, 0.5), np.full(n, 0.3)
        else:
            z, sigma_z = np.full(n, float(self.initial_soc)), np.full(n, tu.initial_soc_sigma)
        x[:] = 0.0
        x[X_SOC] = np.clip(z, 0.0, 1.0)
        i = self.sensors.current_A / p.n_parallel if math.isfinite(self.sensors.current_A) else 0.0
        clear = abs(i) >= 0.01 * cell.capacity_Ah + s.tuning[L.TU_SIGN_BAND]
        s.hysteresis_sign[:] = math.copysign(1.0, i) if clear else 0.0
        s.scalars[L.S_SIGN_I] = i
        s.voltage_sign[:] = s.hysteresis_sign
        s.voltage_last_V[:] = np.nan
        bias = tu.voltage_bias_V if tu.voltage_bias_V is not None else p.sensors.cell_voltage_accuracy_V / math.sqrt(3)
        diag: tuple[Any, ...] = (sigma_z ** 2, tu.initial_rc_sigma_V ** 2, tu.initial_rc_sigma_V ** 2,
                tu.initial_hysteresis_sigma ** 2, max(bias, 1e-5) ** 2)
        s.resistance_var[:] = tu.initial_resistance_sigma ** 2
        cov = s.cov.reshape(N_COV, n)
        cov[:] = 0.0
        for k, value in enumerate(diag):
            cov[COV_INDEX[k][k]] = value
        self._initialised = True

    # --- the tick -------------------------------------------------------------------------------
    def _schedule(self):
        """The sensor layer's next-sample times of the first voltage and temperature channel: a change
        means a new sample (layers without a schedule count every update as new)."""
        layer = self.sensors
        state, channel = getattr(layer, "state", None), getattr(layer, "channel", None)
        if state is None or channel is None or not hasattr(state, "next_sample_s"):
            return None, 0, 0
        return state.next_sample_s, channel("cell_voltage", 0), channel("temperature", 0)

    def update(self, t_s: float, dt_s: float) -> None:
        """One BMS tick at simulated time ``t_s`` lasting ``dt_s``; call after ``sensors.sample(t_s)``."""
        if not (dt_s > 0 and dt_s < math.inf):
            raise InputError("dt_s", "a finite time step > 0 s", dt_s)
        if not (-math.inf < t_s < math.inf):
            raise InputError("t_s", "a finite time", t_s)
        first = not self._initialised
        if first:
            self._initialise()
            self._feed.schedule(*self._schedule())
        if self._thermal_dt != dt_s:
            self.state.thermal[:] = self._thermal(float(dt_s))
            self._thermal_dt = self.state.scalars[L.S_THERMAL_DT] = dt_s
            self._feed.thermal_dt_s = dt_s
        self._feed.update(dt_s, self.sensors.current_A, first)
        if first:  # state of power and energy exist from the first update, as the SOC does: every horizon now
            self.update_slow()

    def update_slow(self) -> None:
        """Run the slow estimators (SOP, SOE, SOH) now, whatever the schedule."""
        if self._initialised:
            self.state.scalars[L.S_SOP_NEXT] = -1.0  # every horizon now
            self._slow.update()
            self._feed.since_slow_s = 0.0

    # --- what the BMS believes ------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        """True once the first ``update`` has initialised the estimates from the sensors."""
        return self._initialised

    @property
    def current_zero_A(self) -> float:
        """The current sensor's zero (A) learnt while no current can flow, subtracted from every reading."""
        return self._feed.current_zero_A

    @property
    def group_soc_3sigma(self) -> np.ndarray:
        n = self.params.n_series
        return 3.0 * np.sqrt(self.state.cov[:n])

    @property
    def pack_soc(self) -> float:
        """Charge-weighted mean of the group SOCs (what the string holds)."""
        cap = self.state.capacity_cell_Ah
        return float(_sum(self.group_soc * cap) / _sum(cap))  # ufunc reductions: .sum() without its wrapper

    @property
    def soc_min(self) -> float:
        return float(_min(self.group_soc))

    @property
    def soc_max(self) -> float:
        return float(_max(self.group_soc))

    @property
    def usable_soc(self) -> float:
        """Share of the string's usable window that is left: the weakest group's charge over that charge
        plus what the fullest group can still take (0 when any group is empty, 1 when any is full)."""
        cap = self.state.capacity_cell_Ah
        down = float((self.group_soc * cap).min())
        up = float(((1.0 - self.group_soc) * cap).min())
        return down / (down + up) if down + up > 0 else 0.0

    @property
    def surface_temp_C(self) -> np.ndarray:
        return self.state.temp_surface_C

    @property
    def coolant_temp_C(self) -> np.ndarray:
        return self.state.temp_coolant_C

    @property
    def energy_remaining_kWh(self) -> float:
        """Energy stored above empty in every group, at open-circuit voltage."""
        return float(self.state.scalars[S_ENERGY_KWH])

    @property
    def energy_usable_kWh(self) -> float:
        """Energy deliverable until the weakest group is empty, less the resistive losses at
        ``tuning.energy_reference_c_rate`` and the present temperatures."""
        return float(self.state.scalars[S_ENERGY_USABLE_KWH])

    @property
    def capacity_Ah_estimate(self) -> np.ndarray:
        """Capacity of every series group in Ah (``n_parallel`` cells)."""
        return self.state.capacity_cell_Ah * self.params.n_parallel

    @property
    def resistance_ohm_estimate(self) -> np.ndarray:
        """R0 of every series group in ohm at 25 degC and 50 % SOC (the scale applies to R1, R2 too)."""
        return self.state.resistance_scale * self.params.cell.r0_ohm / self.params.n_parallel

    @property
    def charge_counted_Ah(self) -> float:
        """Net charge counted per cell since the start [Ah] (discharge positive, charge efficiency applied): what the
        SOC filter's prediction takes out of every group; updated every 100 ms."""
        return float(self.state.scalars[S_AH])

    @property
    def current_valid(self) -> bool:
        return bool(self.state.scalars[S_CURRENT_VALID] > 0)

    @property
    def innovations_gated(self) -> int:
        return int(self.state.scalars[S_GATED])

    @property
    def states(self) -> dict[str, np.ndarray]:
        """Every filter state by name, as views over series groups."""
        x = self.state.x.reshape(N_X, self.params.n_series)
        return {name: x[k] for k, name in enumerate(STATE_NAMES)}

    def covariance(self) -> np.ndarray:
        return self.state.covariance()
