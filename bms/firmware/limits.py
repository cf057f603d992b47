"""Published limits of the built-in BMS: state of power, temperature and SOC tables, voltage limits,
peak-current budget, derating; the SOC and core-temperature fallbacks when no estimator is ready.

The numbers are computed by the 100 ms task's kernel (``bms_tick.SlowTask``, compiled; its readable
specification is ``bms/_twin/bms_tick.py``): this part publishes them by state and says what it needs.
"""
from __future__ import annotations

from .part import BmsPart

__all__ = ["LimitsTask"]


class LimitsTask(BmsPart):
    """The limits part of ``Bms``: computed in the slow task, published by state."""

    def _estimator_ready(self) -> bool:
        est = self.estimator
        return est is not None and bool(getattr(est, "initialised", True))

    def _publish_limits(self) -> None:
        """READY: every limit; CHARGING: the charge half; any other state or an open sequence: zero."""
        self._task.publish(self.state, self._opening is not None)

    def _factor(self, value: float | str) -> float:
        """A derating factor, or the configuration value it names."""
        return float(getattr(self.config, value) if isinstance(value, str) else value)

    @property
    def _capability(self) -> tuple[float, float, float, float]:
        """The limits before gating by state (A, A, W, W): what READY would publish now."""
        return self._task.capability
