"""The current sensor judged while current flows, against the cell voltages (the built-in BMS's estimator).

With every contactor open the shunt must read zero, and the protection kernel checks that. While current flows
there is nothing to compare the shunt with but the cells: the SOC filter predicts each group's SOC from the counted
charge and corrects it toward what the group's voltage says. A wrong current (an offset or a gain error that
appeared mid-drive) makes every group's correction lean the same way, at the rate of the error; a single group's
own fault (a weak cell, a sensor channel) moves only its own. So the median over the groups of the corrections,
summed over a window, is the shunt's error as the cells see it (its reading minus their current):

    error_A = 3600 / window_s * sum over the window's seconds of
              median over valid groups of (dSOC + dQ_counted_Ah / cell_capacity_Ah) * group_capacity_Ah

(the change of a group's SOC estimate plus what the prediction took out of it: the filter's correction.) The check
raises CURRENT_SENSOR to WARNING when ``|error_A|`` reaches ``current_plausibility_warning_A`` and clears it below
half of that. It takes samples from ``current_plausibility_settle_s`` (600 s) after the estimator starts, while
the filter still corrects its first SOC estimate (7.7 A on the default scenario in its first 900 s), and judges
once a window is full. Measured on the 192s2p pack (the default scenario, cold-us06, fast-charge, WLTC drives and
rests at 25 and 45 degC): a healthy pack stays below 3 A from then on; a -40 A offset from the middle of a drive
is judged within 30 s, and its estimate swings between 30 and 110 A while the filter follows (an estimate of the
error's size, not a measurement of it). An offset much smaller than the threshold is not found here (it is at
the next stop, with the contactors open).
"""
from __future__ import annotations

import math

import numpy as np

from ..faults import FaultLevel, Protection
from .part import BmsPart
from .types import CLOSED_STATES

__all__ = ["CurrentPlausibility"]

_CHECK_PERIOD_S = 1.0


class CurrentPlausibility(BmsPart):
    """The current-plausibility part of ``Bms``: ``_check_current`` from the 100 ms task."""

    def _current_check_setup(self) -> None:
        c = self.config
        self._cp_window = np.zeros(max(1, round(c.current_plausibility_window_s / _CHECK_PERIOD_S)))
        self._cp_count = 0            # samples taken since the window was last emptied
        self._cp_next_s = -math.inf
        self._cp_settled_s = math.inf     # when the estimator has settled (its start + settle_s)
        self._cp_last_soc = np.zeros(self.params.n_series)
        self._cp_last_Ah = math.nan       # NaN: no sample to compare with
        self.current_error_A = math.nan   # the last judged error: the reading minus the cells' current [A]

    def _check_current(self, t: float) -> None:
        if t < self._cp_next_s:
            return
        self._cp_next_s = t + _CHECK_PERIOD_S - 1e-9
        est = self.estimator
        counted = getattr(est, "charge_counted_Ah", None) if self._estimator_ready() else None
        if counted is None or not math.isfinite(self.config.current_plausibility_warning_A):
            return
        if self._cp_settled_s == math.inf:
            self._cp_settled_s = t + self.config.current_plausibility_settle_s
        if self.state not in CLOSED_STATES or self._opening is not None or t < self._cp_settled_s:
            self._cp_count, self._cp_last_Ah = 0, math.nan   # judged on current that flows, window by window
            return
        soc = est.group_soc
        if math.isfinite(self._cp_last_Ah):
            capacity = est.capacity_Ah_estimate
            per_cell = capacity / self.params.n_parallel
            corrected_Ah = ((soc - self._cp_last_soc) + (counted - self._cp_last_Ah) / per_cell) * capacity
            valid = np.asarray(getattr(est, "input_valid", np.ones(soc.size, dtype=bool)), dtype=bool)
            if valid.sum() * 2 >= valid.size:   # the median of the sound groups, while most are
                window = self._cp_window
                window[self._cp_count % window.size] = float(np.median(corrected_Ah[valid]))
                self._cp_count += 1
                if self._cp_count >= window.size:
                    self._judge_current(float(window.sum()) * 3600.0 / (window.size * _CHECK_PERIOD_S), t)
        self._cp_last_soc[:] = soc
        self._cp_last_Ah = counted

    def _judge_current(self, error_A: float, t: float) -> None:
        """WARNING from the threshold on, cleared below half of it."""
        self.current_error_A = error_A
        threshold = self.config.current_plausibility_warning_A
        level = int(self._ks.ext[Protection.CURRENT_SENSOR])
        if abs(error_A) >= threshold and level < FaultLevel.WARNING:
            self._ks.worst[Protection.CURRENT_SENSOR] = (0, error_A)
            self._set_ext(Protection.CURRENT_SENSOR, FaultLevel.WARNING, t)
        elif abs(error_A) < 0.5 * threshold and level > FaultLevel.NONE:
            self._set_ext(Protection.CURRENT_SENSOR, FaultLevel.NONE, t)
