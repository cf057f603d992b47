"""The cells against the counted charge: the current sensor while current flows, and each group's own losses.

With every contactor open the shunt must read zero, and the protection kernel checks that. While current flows
there is nothing to compare the shunt with but the cells: the SOC filter predicts each group's SOC from the counted
charge and corrects it toward what the group's voltage says. Every 10 s this part takes each group's correction
as a charge (the change of its SOC estimate plus what the prediction took out of it, times its capacity):

- **the current sensor** (CURRENT_SENSOR): a wrong current (an offset or a gain error that appeared mid-drive)
  makes every group's correction lean the same way, at the rate of the error. The median over the valid groups,
  summed over ``current_plausibility_window_s`` (300 s), is the shunt's error as the cells see it (its reading
  minus their current, ``Bms.current_error_A``); WARNING from ``current_plausibility_warning_A`` (15 A), cleared
  below half of it. Judged only with the contactors closed.
- **an internal short** (INTERNAL_SHORT): a group that loses charge of its own (a soft short across a cell) is
  corrected downward more than the others. Its correction less the median, averaged over
  ``internal_short_tau_s`` (900 s), is the charge it loses (``Bms.group_leak_A``); WARNING from
  ``internal_short_warning_A`` (2.5 A) on the worst group, cleared below half of it. Judged at rest only, from
  ``internal_short_rest_s`` (300 s) after the BMS counts as rested (``rest_time_s`` below ``rest_current_A``) on:
  with current, a group's capacity error looks like a leak (a healthy pack read 1.8 A in the fast-charge
  scenario), and so does its relaxation after it.

Both take samples from ``current_plausibility_settle_s`` (600 s) after the estimator starts, while the filter still
corrects its first SOC estimate (7.7 A of common correction on the default scenario in its first 900 s).
Measured on the 192s2p pack: a healthy pack's shunt error stays below 3 A from then on (the default scenario,
cold-us06, fast-charge, WLTC drives at 25 and 45 degC), its groups' leaks at rest below 1 A (25 and -10 degC).
A -40 A offset from the middle of a drive is judged within 30 s (its estimate swings between 30 and 110 A while the
filter follows: an estimate of the error's size, not a measurement of it); an offset much smaller than 15 A is found
only at the next stop, with the contactors open. 2 ohm across a cell of a parked pack (about 2 A) reads 5-6 A and is
warned 25 min after power-on; a short while driving is not judged until the pack rests.
"""
from __future__ import annotations

import math

import numpy as np

from ..faults import FaultLevel, Protection
from .part import BmsPart
from .types import CLOSED_STATES

__all__ = ["ChargeChecks"]

_PERIOD_S = 10.0   # corrections add up: a window's sum is the same; the check costs ~0.07 us a tick, not 0.4


class ChargeChecks(BmsPart):
    """The charge checks of ``Bms``: ``_check_charge`` from the 100 ms task."""

    def _charge_checks_setup(self) -> None:
        c, n = self.config, self.params.n_series
        self._cc_window = np.zeros(max(1, round(c.current_plausibility_window_s / _PERIOD_S)))
        self._cc_count = 0               # samples in the window since it was last emptied (contactors closed)
        self._cc_next_s = -math.inf
        self._cc_settled_s = math.inf    # the estimator's start + settle_s
        self._cc_last_soc = np.zeros(n)
        self._cc_last_Ah = math.nan      # NaN: no sample to compare with
        self._cc_leak_samples = 0
        self._cc_rested_since = math.inf   # when the BMS last began to count as rested (its slow task says)
        self.current_error_A = math.nan  # the last judged shunt error: its reading minus the cells' current [A]
        self.group_leak_A = np.zeros(n)  # the charge each group loses of its own [A] (NaN: not judged)
        self.group_leak_A[:] = np.nan

    def _check_charge(self, t: float, rested: bool) -> None:
        """``rested``: the 100 ms task's verdict (below ``rest_current_A`` for ``rest_time_s``)."""
        if not rested:
            self._cc_rested_since = math.inf
        elif self._cc_rested_since == math.inf:
            self._cc_rested_since = t
        if t < self._cc_next_s:
            return
        self._cc_next_s = t + _PERIOD_S - 1e-9
        est = self.estimator
        counted = getattr(est, "charge_counted_Ah", None) if self._estimator_ready() else None
        if counted is None:
            return
        if self._cc_settled_s == math.inf:
            self._cc_settled_s = t + self.config.current_plausibility_settle_s
        if t < self._cc_settled_s:
            return
        soc = est.group_soc
        if math.isfinite(self._cc_last_Ah):
            capacity = est.capacity_Ah_estimate
            corrected_Ah = ((soc - self._cc_last_soc) + (counted - self._cc_last_Ah) * self.params.n_parallel
                            / capacity) * capacity
            flags = getattr(est, "input_valid", None)
            valid = np.ones(soc.size, dtype=bool) if flags is None else np.asarray(flags, dtype=bool)
            if valid.sum() * 2 >= valid.size:   # the median of the sound groups, while most are
                common_Ah = float(np.median(corrected_Ah[valid]))
                if self.state in CLOSED_STATES and self._opening is None:
                    self._sample_current(common_Ah, t)
                else:
                    self._cc_count = 0   # judged on current that flows, window by window
                if t - self._cc_rested_since >= self.config.internal_short_rest_s:   # see the module docstring
                    self._sample_leaks(np.where(valid, corrected_Ah - common_Ah, np.nan), t)
        self._cc_last_soc[:] = soc
        self._cc_last_Ah = counted

    def _sample_current(self, common_Ah: float, t: float) -> None:
        window = self._cc_window
        window[self._cc_count % window.size] = common_Ah
        self._cc_count += 1
        if self._cc_count >= window.size:
            error_A = float(window.sum()) * 3600.0 / (window.size * _PERIOD_S)
            self.current_error_A = error_A
            self._judge(Protection.CURRENT_SENSOR, error_A, abs(error_A), 0,
                        self.config.current_plausibility_warning_A, t)

    def _sample_leaks(self, own_Ah, t: float) -> None:
        """An exponential average of each group's own correction (a group without a valid input keeps its last)."""
        leak = self.group_leak_A
        tau = self.config.internal_short_tau_s
        sample = -own_Ah * (3600.0 / _PERIOD_S)
        if self._cc_leak_samples == 0:
            leak[:] = 0.0
        ok = np.isfinite(sample)
        leak[ok] += (sample[ok] - leak[ok]) * min(1.0, _PERIOD_S / tau)
        self._cc_leak_samples += 1
        if self._cc_leak_samples * _PERIOD_S >= tau:
            g = int(np.argmax(leak))
            self._judge(Protection.INTERNAL_SHORT, float(leak[g]), float(leak[g]), g,
                        self.config.internal_short_warning_A, t)

    def _judge(self, p: Protection, value: float, size: float, channel: int, threshold: float, t: float) -> None:
        """WARNING from the threshold on, cleared below half of it."""
        level = int(self._ks.ext[p])
        if size >= threshold and level < FaultLevel.WARNING:
            self._ks.worst[p] = (channel, value)
            self._set_ext(p, FaultLevel.WARNING, t)
        elif size < 0.5 * threshold and level > FaultLevel.NONE:
            self._set_ext(p, FaultLevel.NONE, t)
