"""The built-in BMS's states, the VCU's requests and the published limits."""
from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["BmsState", "StateRequest", "Limits", "ZERO_LIMITS", "CLOSED_STATES"]


class BmsState(enum.IntEnum):
    INIT = 0
    STANDBY = 1
    PRECHARGE = 2
    READY = 3
    CHARGING = 4
    FAULT = 5
    SHUTDOWN = 6


class StateRequest(enum.IntEnum):
    NONE = 0
    STANDBY = 1
    DRIVE = 2
    CHARGE = 3
    SHUTDOWN = 4


class Limits(NamedTuple):
    """What the VCU (and charger) must respect: positive magnitudes at the pack terminals."""
    discharge_current_A: float = 0.0
    charge_current_A: float = 0.0
    discharge_power_W: float = 0.0
    charge_power_W: float = 0.0


ZERO_LIMITS = Limits()
CLOSED_STATES = (BmsState.READY, BmsState.CHARGING)
