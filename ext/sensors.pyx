# The BMS's measurement chain: every channel samples the plant's truth on its own period and adds
# gain error, offset, noise, range clamp and quantisation; a channel in a fault state reads what the
# fault dictates. Readable specification: bms/_twin/sensors.py.
from libc.math cimport floor, isfinite

from bms._layout import (SAMPLE_TIME_TOLERANCE_S, FAULT_OPEN_WIRE, FAULT_STUCK, FAULT_DRIFT, FAULT_OFFSET, LINK_VOLTAGE,
                         PACK_VOLTAGE, PACK_CURRENT)
from bms.errors import InputError

include "binding.pxi"

cdef int F_OPEN = FAULT_OPEN_WIRE, F_STUCK = FAULT_STUCK, F_DRIFT = FAULT_DRIFT, F_OFFSET = FAULT_OFFSET
cdef double TOLERANCE_S = SAMPLE_TIME_TOLERANCE_S
cdef int I_LINK = LINK_VOLTAGE, I_PACK_V = PACK_VOLTAGE, I_CURRENT = PACK_CURRENT




cdef class SensorKernel:
    """Binds to a SensorState and a PlantState; ``sample(t_s)`` updates the readings in place."""
    cdef object _owners
    cdef int n_series, n_temp, n_channels, n_noise
    cdef double* gain
    cdef double* offset
    cdef double* sigma
    cdef double* lsb
    cdef double* period
    cdef double* lo
    cdef double* hi
    cdef double* open_value
    cdef double* next_t
    cdef double* reading
    cdef double* fault_value
    cdef double* fault_start
    cdef double* noise
    cdef double* cursor
    cdef unsigned char* fault_mode
    cdef unsigned char* closed
    cdef double* v_group
    cdef double* t_surf
    cdef double* scalars
    cdef long long* temp_cell

    def __init__(self, sensors, plant, pack):
        owners = []
        cdef int n = sensors.n_channels
        self.n_series = pack.n_series
        self.n_temp = sensors.temperature_cell.shape[0]
        self.n_channels = n
        if n != self.n_series + self.n_temp + 6:
            raise InputError("n_channels", f"{self.n_series + self.n_temp + 6}", n)
        self.gain = dptr(sensors.gain, n, "gain", owners)
        self.offset = dptr(sensors.offset, n, "offset", owners)
        self.sigma = dptr(sensors.noise_sigma, n, "noise_sigma", owners)
        self.lsb = dptr(sensors.lsb, n, "lsb", owners)
        self.period = dptr(sensors.period_s, n, "period_s", owners)
        self.lo = dptr(sensors.range_min, n, "range_min", owners)
        self.hi = dptr(sensors.range_max, n, "range_max", owners)
        self.open_value = dptr(sensors.open_value, n, "open_value", owners)
        self.next_t = dptr(sensors.next_sample_s, n, "next_sample_s", owners)
        self.reading = dptr(sensors.reading, n, "reading", owners)
        self.fault_value = dptr(sensors.fault_value, n, "fault_value", owners)
        self.fault_start = dptr(sensors.fault_start_s, n, "fault_start_s", owners)
        self.n_noise = sensors.noise.shape[0]
        self.noise = dptr(sensors.noise, self.n_noise, "noise", owners)
        self.cursor = dptr(sensors.noise_cursor, 1, "noise_cursor", owners)
        self.fault_mode = uptr(sensors.fault_mode, n, "fault_mode", owners)
        self.closed = uptr(plant.contactor_closed, 3, "contactor_closed", owners)
        self.temp_cell = lptr(sensors.temperature_cell, self.n_temp, "temperature_cell", owners)
        self.v_group = dptr(plant.group_voltage_V, pack.n_series, "group_voltage_V", owners)
        self.t_surf = dptr(plant.temp_surface_C, pack.n_series * pack.n_parallel, "temp_surface_C", owners)
        self.scalars = dptr(plant.scalars, plant.scalars.shape[0], "scalars", owners)
        self._owners = owners

    def sample(self, double t_s):
        """Sample every channel that is due at simulated time ``t_s``; returns how many were."""
        if not isfinite(t_s):
            raise InputError("t_s", "a finite time", t_s)
        if <int>self.cursor[0] + self.n_channels > self.n_noise:
            raise InputError("noise_cursor", "noise left for one full sample", self.cursor[0])
        cdef int count
        with nogil:
            count = self._sample(t_s)
        return count

    cdef inline double truth(self, int c) noexcept nogil:
        cdef int ns = self.n_series, nt = self.n_temp
        if c < ns:
            return self.v_group[c]
        if c < ns + nt:
            return self.t_surf[self.temp_cell[c - ns]]
        c = c - ns - nt
        if c == 0:
            return self.scalars[I_CURRENT]
        if c == 1:
            return self.scalars[I_PACK_V]
        if c == 2:
            return self.scalars[I_LINK]
        return <double>self.closed[c - 3]

    cdef int _sample(self, double t) noexcept nogil:
        cdef int c, mode, count = 0, cur = <int>self.cursor[0]
        cdef double x
        for c in range(self.n_channels):
            if not (t >= self.next_t[c] - TOLERANCE_S):
                continue
            self.next_t[c] = self.next_t[c] + self.period[c]
            if self.next_t[c] <= t - TOLERANCE_S:
                self.next_t[c] = t + self.period[c]
            x = self.truth(c) * self.gain[c] + self.offset[c] + self.sigma[c] * self.noise[cur]
            cur = cur + 1
            count = count + 1
            mode = self.fault_mode[c]
            if mode == F_OPEN:
                x = self.open_value[c]
            elif mode == F_STUCK:
                x = self.fault_value[c]
            elif mode == F_DRIFT:
                x = x + self.fault_value[c] * (t - self.fault_start[c])
            elif mode == F_OFFSET:
                x = x + self.fault_value[c]
            if x < self.lo[c]:
                x = self.lo[c]
            elif x > self.hi[c]:
                x = self.hi[c]
            if self.lsb[c] > 0:
                x = floor(x / self.lsb[c] + 0.5) * self.lsb[c]
            self.reading[c] = x
        self.cursor[0] = cur
        return count
