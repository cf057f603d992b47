"""The sensor layer between the plant (truth) and the BMS: what the BMS can measure, faults included.

Channels, in order: one cell-monitor channel per series group, the surface temperature sensors, the
shunt current, the pack voltage, the DC-link voltage, and the three contactor feedback contacts.
Every channel can be put into a fault state (open wire, stuck, drift, offset) at any time.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ._layout import CONTACTOR_NAMES, FAULT_DRIFT, FAULT_NONE, FAULT_OFFSET, FAULT_OPEN_WIRE, FAULT_STUCK
from .errors import InputError
from .plant import Pack

__all__ = ["SensorLayer", "OpenWire", "Stuck", "Drift", "Offset", "SENSOR_KINDS"]

NOISE_BLOCK_SAMPLES = 64  # noise is drawn for this many full samples at once
NOISE_LEVELS_BITS = 16     # each noise value is one 16-bit slice of the generator's raw 64-bit output


@lru_cache(maxsize=1)
def gaussian_levels() -> np.ndarray:
    """The standard normal's quantiles at the centres of 2**16 equal-probability bins, scaled to unit variance:
    a 16-bit uniform draw indexes it (inverse-transform sampling), four noise values per 64 random bits.
    Its tails end at 4.3 sigma and its resolution near 0 is 4e-5 sigma, far below every sensor's LSB;
    it costs a tenth of a ziggurat draw per value (read-only, built once per process)."""
    n = 1 << NOISE_LEVELS_BITS
    inv = statistics.NormalDist().inv_cdf
    levels = np.array([inv((k + 0.5) / n) for k in range(n)])
    levels /= levels.std()
    levels.flags.writeable = False
    return levels


@dataclass(frozen=True)
class OpenWire:
    """The channel reads its open-circuit value (0 V, 0 A, the temperature range's bottom, open)."""


@dataclass(frozen=True)
class Stuck:
    """The channel reads a constant value, in its own unit."""
    value: float


@dataclass(frozen=True)
class Drift:
    """The reading walks away from the truth at ``rate_per_s`` (unit per second) from injection."""
    rate_per_s: float


@dataclass(frozen=True)
class Offset:
    """The reading is off by a constant ``value``."""
    value: float


SensorFault = OpenWire | Stuck | Drift | Offset
SENSOR_KINDS = ("cell_voltage", "temperature", "current", "pack_voltage", "link_voltage", "contactor_feedback")


class SensorState:
    """Per-channel characteristics, fault state, schedule and readings, as arrays."""

    if TYPE_CHECKING:  # the arrays named above are set in __init__
        def __getattr__(self, name: str) -> np.ndarray: ...

    def __init__(self, n_channels: int, temperature_cell: np.ndarray):
        self.n_channels = n_channels
        for name in ("gain", "offset", "noise_sigma", "lsb", "period_s", "range_min", "range_max",
                     "open_value", "next_sample_s", "reading", "fault_value", "fault_start_s"):
            setattr(self, name, np.zeros(n_channels))
        self.fault_mode = np.zeros(n_channels, dtype=np.uint8)
        self.temperature_cell = np.ascontiguousarray(temperature_cell, dtype=np.int64)
        self.noise = np.zeros(n_channels * NOISE_BLOCK_SAMPLES)
        self.noise_cursor = np.array([float(self.noise.size)])  # empty: the first sample draws


class SensorLayer:
    """Samples the pack through the measurement chain; readings are views that update in place."""

    def __init__(self, pack: Pack, seed: int | np.random.Generator | None = 1, kernels=None):
        self.pack = pack
        p, sp = pack.params, pack.params.sensors
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        ns, nt = p.n_series, p.n_temperature_sensors
        cells_per_module = p.n_cells // p.n_modules
        per_module = sp.temperature_sensors_per_module
        temperature_cell = [m * cells_per_module + int((j + 0.5) * cells_per_module / per_module)
                            for m in range(p.n_modules) for j in range(per_module)]
        self.state = s = SensorState(ns + nt + 6, np.array(temperature_cell))
        self._slices = {"cell_voltage": slice(0, ns), "temperature": slice(ns, ns + nt),
                        "current": slice(ns + nt, ns + nt + 1), "pack_voltage": slice(ns + nt + 1, ns + nt + 2),
                        "link_voltage": slice(ns + nt + 2, ns + nt + 3),
                        "contactor_feedback": slice(ns + nt + 3, ns + nt + 6)}
        v_max = p.cell.voltage_max_V * ns * 1.5
        uniform = self._rng.uniform
        # kind: gain, offset, noise, lsb, period, range, open-circuit value
        spec = {
            "cell_voltage": (1.0, uniform(-1, 1, ns) * sp.cell_voltage_accuracy_V, sp.cell_voltage_noise_V,
                             sp.cell_voltage_lsb_V, sp.cell_voltage_period_s, (0.0, 5.0), 0.0),
            "temperature": (1.0, uniform(-1, 1, nt) * sp.temperature_accuracy_K, sp.temperature_noise_K,
                            sp.temperature_lsb_K, sp.temperature_period_s, (-50.0, 200.0), -50.0),
            "current": (1.0 + sp.current_gain_error, sp.current_offset_A, sp.current_noise_A, sp.current_lsb_A,
                        sp.current_period_s, (-3000.0, 3000.0), 0.0),
            "pack_voltage": (1.0, uniform(-1, 1) * sp.pack_voltage_accuracy_V, sp.pack_voltage_noise_V,
                             sp.pack_voltage_lsb_V, sp.pack_voltage_period_s, (0.0, v_max), 0.0),
            "link_voltage": (1.0, uniform(-1, 1) * sp.pack_voltage_accuracy_V, sp.pack_voltage_noise_V,
                             sp.pack_voltage_lsb_V, sp.pack_voltage_period_s, (0.0, v_max), 0.0),
            "contactor_feedback": (1.0, 0.0, 0.0, 0.0, sp.current_period_s, (0.0, 1.0), 0.0),
        }
        for kind, (gain, offset, sigma, lsb, period, (lo, hi), open_value) in spec.items():
            sl = self._slices[kind]
            s.gain[sl], s.offset[sl], s.noise_sigma[sl], s.lsb[sl] = gain, offset, sigma, lsb
            s.period_s[sl], s.range_min[sl], s.range_max[sl], s.open_value[sl] = period, lo, hi, open_value
        self.kernels = kernels or pack.kernels
        self._kernel = self.kernels.sensors.SensorKernel(s, pack.state, p)
        self._fill_noise = self.kernels.bms_tick.fill_noise
        self._i_current = self._slices["current"].start
        self._levels = gaussian_levels()
        self._raw = self._rng.bit_generator.random_raw
        self._n_raw = s.noise.size * NOISE_LEVELS_BITS // 64
        self.temperature_cell = s.temperature_cell
        self.cell_voltage_V = s.reading[self._slices["cell_voltage"]]
        self.temperature_C = s.reading[self._slices["temperature"]]
        self.contactor_feedback = s.reading[self._slices["contactor_feedback"]]

    def sample(self, t_s: float) -> int:
        """Take every reading that is due at simulated time ``t_s``; returns how many channels were."""
        s = self.state
        if s.noise_cursor[0] + s.n_channels > s.noise.size:
            self._refill_noise()
        return self._kernel.sample(t_s)

    def _refill_noise(self) -> None:
        """A block of standard-normal noise: the generator's raw 64-bit words cut into little-endian 16-bit
        indices into ``gaussian_levels()`` (the same values on every platform for a seed)."""
        s = self.state
        self._fill_noise(self._raw(self._n_raw), self._levels, s.noise)  # compiled: bms_tick.fill_noise
        s.noise_cursor[0] = 0.0

    @property
    def current_A(self) -> float:
        return self.state.reading.item(self._i_current)  # read every tick by the estimator

    @property
    def pack_voltage_V(self) -> float:
        return float(self.state.reading[self._slices["pack_voltage"].start])

    @property
    def link_voltage_V(self) -> float:
        return float(self.state.reading[self._slices["link_voltage"].start])

    # --- faults ---------------------------------------------------------------------------------
    def channel(self, kind: str, index: int | str = 0) -> int:
        """Flat channel number of sensor ``index`` of ``kind`` (a contactor may be named)."""
        if kind not in self._slices:
            raise InputError("sensor kind", f"one of {SENSOR_KINDS}", kind)
        if kind == "contactor_feedback" and isinstance(index, str):
            if index not in CONTACTOR_NAMES:
                raise InputError("contactor", f"one of {CONTACTOR_NAMES}", index)
            index = CONTACTOR_NAMES.index(index)
        sl = self._slices[kind]
        count = sl.stop - sl.start
        if not (isinstance(index, (int, np.integer)) and 0 <= index < count):
            raise InputError(f"{kind} index", f"an integer in [0, {count})", index)
        return sl.start + int(index)

    def inject(self, kind: str, index: int | str, fault: SensorFault, t_s: float = 0.0) -> None:
        """Put one sensor into a fault state from simulated time ``t_s`` on."""
        c = self.channel(kind, index)
        s = self.state
        modes = {OpenWire: (FAULT_OPEN_WIRE, 0.0), Stuck: (FAULT_STUCK, getattr(fault, "value", 0.0)),
                 Drift: (FAULT_DRIFT, getattr(fault, "rate_per_s", 0.0)),
                 Offset: (FAULT_OFFSET, getattr(fault, "value", 0.0))}
        if type(fault) not in modes:
            raise InputError("fault", "OpenWire(), Stuck(value), Drift(rate_per_s) or Offset(value)", fault)
        mode, value = modes[type(fault)]
        if not np.isfinite(value):
            raise InputError("fault value", "a finite number", value)
        s.fault_mode[c], s.fault_value[c], s.fault_start_s[c] = mode, value, t_s

    def clear(self, kind: str | None = None, index: int | str | None = None) -> None:
        """Clear one sensor's fault, all of one kind, or (no arguments) every fault."""
        s = self.state
        if kind is None:
            s.fault_mode[:] = FAULT_NONE
        elif index is None:
            self.channel(kind)
            s.fault_mode[self._slices[kind]] = FAULT_NONE
        else:
            s.fault_mode[self.channel(kind, index)] = FAULT_NONE

    def faults(self) -> list[tuple[str, int, int]]:
        """Active faults as (kind, index, mode)."""
        out = []
        for kind, sl in self._slices.items():
            for offset, mode in enumerate(self.state.fault_mode[sl]):
                if mode != FAULT_NONE:
                    out.append((kind, offset, int(mode)))
        return out
