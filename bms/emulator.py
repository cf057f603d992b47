"""The closed loop the harness and the CAN node run: plant -> sensors -> BMS firmware slot, one tick at a time.

The slot holds the built-in BMS (estimator + ``Bms``) or any BMS-role firmware (``bms.fil``): it reads the
sensor layer's readings and writes the actuator command registers the plant obeys, nothing else.
"""
from __future__ import annotations

import math

import numpy as np

from .config import BmsConfig
from .errors import InputError
from .fil.contract import Role, bms_layout
from .firmware.slot import BuiltinBms
from .params import PackParams, load_pack
from .plant import Pack
from .sensors import SensorLayer

__all__ = ["Emulator"]


def _default_estimator(params, sensors, kernels=None):
    try:
        from .estimators import PackEstimator
    except ImportError as exc:  # the estimator is optional: the BMS then uses its own tables
        if exc.name not in (f"{__package__}.estimators", None):
            raise
        return None
    return PackEstimator(params, sensors, initial_soc=None, kernels=kernels)


def _is_pack_estimator(estimator) -> bool:
    if estimator is None:
        return False
    try:
        from .estimators import PackEstimator
    except ImportError:  # the estimator is optional
        return False
    return isinstance(estimator, PackEstimator)


class Emulator:
    """A pack, its sensors, the BMS's estimator and the BMS, stepped in lockstep by ``tick``.

    One ``numpy.random.Generator`` seeded with ``seed`` draws the pack's cell spread and the sensors'
    offsets and noise, so a run is bit-identical for a given seed. ``estimator``: ``"auto"`` builds
    ``bms.estimators.PackEstimator`` when it is importable, ``None`` runs the BMS on its own tables, or
    pass an estimator object.

    ``firmware``: a BMS-role ``bms.fil.Firmware`` in the slot in place of the built-in BMS (then ``bms`` and
    ``estimator`` are None; the firmware's frames go through ``firmware.receive``/``transmit``).
    """

    def __init__(self, params: PackParams | str = "assb60-192s2p", *, seed: int = 0, initial_soc: float = 0.5,
                 temp_C: float = 25.0, dt_s: float = 0.01, config: BmsConfig | None = None, estimator="auto",
                 kernels=None, firmware=None):
        if not (isinstance(dt_s, (int, float)) and math.isfinite(dt_s) and dt_s > 0):
            raise InputError("dt_s", "a finite time step > 0 s", dt_s)
        if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
            raise InputError("seed", "an integer >= 0 (the run's random seed)", seed)
        self.params = params = load_pack(params) if isinstance(params, str) else params
        self.rng = rng = np.random.default_rng(seed)
        self.pack = Pack(params, initial_soc=initial_soc, temp_C=temp_C, seed=rng, kernels=kernels)
        self.sensors = SensorLayer(self.pack, seed=rng, kernels=kernels)
        self.dt_s = float(dt_s)
        dt_ns = self.dt_s * 1e9  # integer nanoseconds of the slot's clock (saturated for absurd ticks)
        self.dt_ns = int(round(dt_ns)) if dt_ns < 2.0 ** 62 else 2 ** 62
        # the slot's buffers: the sensor readings in, the plant's actuator command registers out
        self.inputs = self.sensors.state.reading
        self.actuators = self.pack.state
        self.layout = bms_layout(params.n_series, params.n_temperature_sensors)
        if firmware is None:
            if isinstance(estimator, str):
                if estimator != "auto":
                    raise InputError("estimator", "'auto', None or an estimator object", estimator)
                estimator = _default_estimator(params, self.sensors, kernels)
            firmware = BuiltinBms(params, self.sensors, self.pack, dt_s=self.dt_s, config=config,
                                  estimator=estimator, kernels=kernels, actuators=self.actuators)
            self.estimator, self.bms = estimator, firmware.bms
        else:
            if getattr(firmware, "role", None) != Role.BMS:
                raise InputError("firmware", "a BMS-role firmware", getattr(firmware, "role", firmware))
            firmware.open(self.layout, self.dt_ns)
            self.estimator = self.bms = None
        self.firmware = firmware
        self.shadow = None   # a BMS firmware run beside the built-in one (bms.fil.differential)
        self.ticks = 0
        self.t_s = 0.0
        self.coolant_C = float(temp_C)
        self._plant_step = self.pack._kernel.step   # what Pack.step calls, without its Python frame
        self._sample = self.sensors.sample
        self._step_firmware = firmware.step
        # the built-in firmware: plant, sensors, estimator and protection kernel in one compiled call per tick
        self._builtin_tick = self._fused_tick = None
        observed = self.estimator if _is_pack_estimator(self.estimator) else None
        self._observe = self.pack.kernels.bms_tick.Observer(self.pack.state, params.n_parallel, observed).values
        self._observes_estimator = observed is not None
        if isinstance(firmware, BuiltinBms):
            self._builtin_tick = self._fused_tick = self.pack.kernels.bms_tick.BuiltinTick(
                self.pack, self.sensors, estimator, firmware.bms, self.dt_s).tick

    @property
    def _step_firmware(self):
        """The firmware slot's step; replacing it (a differential run's wrapper) leaves the one-call tick."""
        return self._firmware_step

    @_step_firmware.setter
    def _step_firmware(self, step) -> None:
        self._firmware_step = step
        builtin = getattr(self, "_builtin_tick", None)
        self._fused_tick = builtin if step == getattr(self.firmware, "step", None) else None

    def tick(self, load_current_A: float, coolant_C: float | None = None, cooling_factor: float = 1.0) -> None:
        """One tick: the load draws ``load_current_A`` (> 0 discharging) from the DC link; ``coolant_C``
        (None: as before, initially the start temperature) and ``cooling_factor`` set the cooling."""
        if coolant_C is None:
            coolant_C = self.coolant_C
        else:
            self.coolant_C = coolant_C
        self.ticks = ticks = self.ticks + 1
        fused = self._fused_tick
        if fused is not None:
            self.t_s = fused(ticks, load_current_A, coolant_C, cooling_factor)
            return
        dt = self.dt_s
        t = ticks * dt
        self._plant_step(dt, load_current_A, coolant_C, cooling_factor)
        self._sample(t)
        self._firmware_step(ticks * self.dt_ns, self.dt_ns, self.inputs, self.actuators)
        self.t_s = t

    def observe(self) -> tuple[float, ...]:
        """What a recording takes of the truth and of the estimator's belief now: ``(soc_true, soc_estimated,
        soc_3sigma_mean, cell_voltage_min_V, cell_voltage_max_V, temp_core_max_C, temp_surface_max_C,
        temp_core_est_max_C)`` (the estimator's NaN without one), as ``Pack.soc``, ``pack_soc``, the mean of
        ``group_soc_3sigma`` and the arrays' maxima give them, in one compiled call."""
        values = self._observe()
        est = self.estimator
        if est is None or self._observes_estimator:
            return values
        sigma = np.asarray(est.group_soc_3sigma)  # another estimator object: its own properties
        return (values[0], float(est.pack_soc), float(np.add.reduce(sigma) / sigma.size), *values[3:7],
                float(np.maximum.reduce(est.core_temp_C)))

    def run(self, seconds: float, load_current_A: float = 0.0, **kwargs) -> None:
        """Tick for ``seconds`` of simulated time at a constant load."""
        for _ in range(int(round(seconds / self.dt_s))):
            self.tick(load_current_A, **kwargs)

    def limited(self, demand_A: float) -> float:
        """What a compliant VCU draws for a demand: clipped to the BMS's published current limits."""
        if self.bms is None:
            raise InputError("limited", "the built-in BMS (an external firmware publishes its limits on CAN)",
                             self.firmware.name)
        lim = self.bms.limits
        return min(max(demand_A, -lim.charge_current_A), lim.discharge_current_A)

    def close(self) -> None:
        """Release the firmware in the slot (an external library or process)."""
        self.firmware.close()
