"""The built-in BMS in the firmware slot: its estimator and ``Bms``, stepped like any BMS firmware."""
from __future__ import annotations

import numpy as np

from ..fil.contract import Role
from ..fil.slot import Firmware
from .state_machine import Bms

__all__ = ["BuiltinBms"]


class BuiltinBms(Firmware):
    """The estimator and the BMS logic behind the slot's BMS-role contract.

    Its inputs are the sensor layer's readings (the array itself: the kernels bind it once) and its outputs
    the actuator command registers given at construction. It keeps its own float clock, the tick count times
    ``dt_s``, so its results stay bit-identical to runs before the slot existed. Its CAN face is the CAN
    node's DBC publisher (``bms.can``), which calls its request interface as frames arrive.
    """

    kind = "builtin"
    role = Role.BMS
    name = "bms-emu built-in BMS"

    def __init__(self, params, sensors, pack, *, dt_s: float, config=None, estimator=None, kernels=None,
                 actuators=None):
        from .. import __version__
        self.version = __version__
        self.dt_s = float(dt_s)
        self.estimator = estimator
        self.bms = Bms(params, sensors, pack, config=config, estimator=estimator, kernels=kernels,
                       actuators=actuators)
        self.inputs = sensors.state.reading
        self.outputs = self.bms.actuators
        self._update = estimator.update if estimator is not None else None
        self._bms_step = self.bms.step

    def step(self, t_ns: int, dt_ns: int, inputs: np.ndarray, outputs) -> None:
        if inputs is not self.inputs or outputs is not self.outputs:
            raise ValueError("the built-in BMS is bound to the sensor readings and actuators it was built with")
        dt = self.dt_s
        t = (t_ns // dt_ns) * dt
        if self._update is not None:
            self._update(t, dt)
        self._bms_step(t, dt)
