"""NumPy twin of ext/sensors.pyx: the measurement chain between the plant's truth and the BMS.

Every channel samples on its own period: reading = truth * gain + offset + sigma * noise, then the
channel's fault (open wire reads ``open_value``, stuck reads the fault value, drift adds
``rate * (t - start)``, offset adds a constant), then the range clamp, then quantisation to the LSB.
Noise comes from a pre-drawn buffer, one value per sampled channel in channel order.
"""
from __future__ import annotations

import math

import numpy as np

from .._layout import (
    FAULT_DRIFT,
    FAULT_OFFSET,
    FAULT_OPEN_WIRE,
    FAULT_STUCK,
    LINK_VOLTAGE,
    PACK_CURRENT,
    PACK_VOLTAGE,
    SAMPLE_TIME_TOLERANCE_S,
)
from ..errors import InputError


class SensorKernel:
    def __init__(self, sensors, plant, pack):
        self.s, self.p = sensors, plant
        self.n_series = pack.n_series
        self.n_temp = sensors.temperature_cell.shape[0]
        expected = self.n_series + self.n_temp + 6
        if sensors.n_channels != expected:
            raise InputError("n_channels", f"{expected}", sensors.n_channels)

    def truth(self) -> np.ndarray:
        p = self.p
        return np.concatenate([
            p.group_voltage_V,
            p.temp_surface_C[self.s.temperature_cell],
            [p.scalars[PACK_CURRENT], p.scalars[PACK_VOLTAGE], p.scalars[LINK_VOLTAGE]],
            p.contactor_closed.astype(np.float64),
        ])

    def sample(self, t_s):
        if not math.isfinite(t_s):
            raise InputError("t_s", "a finite time", t_s)
        s = self.s
        cur = int(s.noise_cursor[0])
        if cur + s.n_channels > s.noise.shape[0]:
            raise InputError("noise_cursor", "noise left for one full sample", s.noise_cursor[0])
        due = t_s >= s.next_sample_s - SAMPLE_TIME_TOLERANCE_S
        count = int(due.sum())
        if not count:
            return 0
        s.next_sample_s[due] += s.period_s[due]
        late = due & (s.next_sample_s <= t_s - SAMPLE_TIME_TOLERANCE_S)
        s.next_sample_s[late] = t_s + s.period_s[late]
        noise = s.noise[cur:cur + count]
        x = self.truth()[due] * s.gain[due] + s.offset[due] + s.noise_sigma[due] * noise
        mode = s.fault_mode[due]
        x = np.where(mode == FAULT_OPEN_WIRE, s.open_value[due], x)
        x = np.where(mode == FAULT_STUCK, s.fault_value[due], x)
        x = np.where(mode == FAULT_DRIFT, x + s.fault_value[due] * (t_s - s.fault_start_s[due]), x)
        x = np.where(mode == FAULT_OFFSET, x + s.fault_value[due], x)
        x = np.minimum(np.maximum(x, s.range_min[due]), s.range_max[due])
        lsb = s.lsb[due]
        safe = np.where(lsb > 0, lsb, 1.0)
        x = np.where(lsb > 0, np.floor(x / safe + 0.5) * safe, x)
        s.reading[due] = x
        s.noise_cursor[0] = cur + count
        return count
