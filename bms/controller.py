"""The built-in BMS (kept importable here; it lives in ``bms.firmware``, split by job)."""
from .faults import Dtc, Event, FaultLevel, Protection
from .firmware.state_machine import Bms
from .firmware.types import BmsState, Limits, StateRequest

__all__ = ["Bms", "BmsState", "StateRequest", "FaultLevel", "Limits", "Protection", "Dtc", "Event"]
