"""Passive balancing of the built-in BMS: by SOC when the estimator is ready, else by voltage at rest."""
from __future__ import annotations

import numpy as np

from ..faults import FaultLevel
from .part import BmsPart
from .types import BmsState

__all__ = ["Balancing"]


class Balancing(BmsPart):
    """The balancing part of ``Bms`` (the bleed switches are set by the protection kernel)."""

    def _balance(self, t: float, rested: bool) -> None:
        c, st = self.config, self.state
        allowed = (c.balancing_enabled and st in (BmsState.STANDBY, BmsState.READY, BmsState.CHARGING)
                   and max(self._levels) < FaultLevel.ERROR and (rested or st == BmsState.CHARGING))
        use_soc = False
        est = self.estimator
        if allowed and self._estimator_ready() and getattr(est, "group_soc", None) is not None:
            soc = self._ks.group_soc
            soc[:] = est.group_soc
            valid = getattr(est, "input_valid", None)
            if valid is not None:
                soc[~np.asarray(valid, dtype=bool)] = np.nan
            use_soc = True
        if use_soc:
            count = self._kernel.balance(allowed, True, c.balancing_start_soc, c.balancing_stop_soc)
        else:
            count = self._kernel.balance(allowed, False, c.balancing_start_V, c.balancing_stop_V)
        if (count > 0) != (self.balancing_groups > 0):
            self._event("balancing", {"active": count > 0, "groups": count, "by": "soc" if use_soc else "voltage"},
                        t)
        self.balancing_groups = count
