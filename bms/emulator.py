"""The closed loop the harness and the CAN node run: plant -> sensors -> estimator -> BMS, one tick at a time."""
from __future__ import annotations

import math

import numpy as np

from .config import BmsConfig
from .controller import Bms
from .errors import InputError
from .params import PackParams, load_pack
from .plant import Pack
from .sensors import SensorLayer

__all__ = ["Emulator"]


def _default_estimator(params, sensors):
    try:
        from .estimators import PackEstimator
    except ImportError as exc:  # the estimator is optional: the BMS then uses its own tables
        if exc.name not in (f"{__package__}.estimators", None):
            raise
        return None
    return PackEstimator(params, sensors, initial_soc=None)


class Emulator:
    """A pack, its sensors, the BMS's estimator and the BMS, stepped in lockstep by ``tick``.

    One ``numpy.random.Generator`` seeded with ``seed`` draws the pack's cell spread and the sensors'
    offsets and noise, so a run is bit-identical for a given seed. ``estimator``: ``"auto"`` builds
    ``bms.estimators.PackEstimator`` when it is importable, ``None`` runs the BMS on its own tables, or
    pass an estimator object.
    """

    def __init__(self, params: PackParams | str = "assb60-192s2p", *, seed: int = 0, initial_soc: float = 0.5,
                 temp_C: float = 25.0, dt_s: float = 0.01, config: BmsConfig | None = None, estimator="auto",
                 kernels=None):
        if not (isinstance(dt_s, (int, float)) and math.isfinite(dt_s) and dt_s > 0):
            raise InputError("dt_s", "a finite time step > 0 s", dt_s)
        self.params = params = load_pack(params) if isinstance(params, str) else params
        self.rng = rng = np.random.default_rng(seed)
        self.pack = Pack(params, initial_soc=initial_soc, temp_C=temp_C, seed=rng, kernels=kernels)
        self.sensors = SensorLayer(self.pack, seed=rng, kernels=kernels)
        if isinstance(estimator, str):
            if estimator != "auto":
                raise InputError("estimator", "'auto', None or an estimator object", estimator)
            estimator = _default_estimator(params, self.sensors)
        self.estimator = estimator
        self.bms = Bms(params, self.sensors, self.pack, config=config, estimator=estimator, kernels=kernels)
        self.dt_s = float(dt_s)
        self.ticks = 0
        self.t_s = 0.0
        self.coolant_C = float(temp_C)
        self._update = estimator.update if estimator is not None else None

    def tick(self, load_current_A: float, coolant_C: float | None = None, cooling_factor: float = 1.0) -> None:
        """One tick: the load draws ``load_current_A`` (> 0 discharging) from the DC link; ``coolant_C``
        (None: as before, initially the start temperature) and ``cooling_factor`` set the cooling."""
        if coolant_C is None:
            coolant_C = self.coolant_C
        else:
            self.coolant_C = coolant_C
        dt = self.dt_s
        self.ticks += 1
        t = self.ticks * dt
        self.pack.step(dt, load_current_A, coolant_C, cooling_factor)
        self.sensors.sample(t)
        if self._update is not None:
            self._update(t, dt)
        self.bms.step(t, dt)
        self.t_s = t

    def run(self, seconds: float, load_current_A: float = 0.0, **kwargs) -> None:
        """Tick for ``seconds`` of simulated time at a constant load."""
        for _ in range(int(round(seconds / self.dt_s))):
            self.tick(load_current_A, **kwargs)

    def limited(self, demand_A: float) -> float:
        """What a compliant VCU draws for a demand: clipped to the BMS's published current limits."""
        lim = self.bms.limits
        return min(max(demand_A, -lim.charge_current_A), lim.discharge_current_A)
