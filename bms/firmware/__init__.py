"""The built-in BMS firmware: state machine, contactor sequences, limits, charge control, balancing, fault memory.

``Bms`` is one object made of those parts (each module one job); ``BuiltinBms`` puts it, with its estimator,
into the firmware slot (``bms.fil``) like any other BMS firmware.
"""
from ..faults import Dtc, Event, FaultLevel, Protection
from .state_machine import Bms
from .types import BmsState, Limits, StateRequest

__all__ = ["Bms", "BmsState", "StateRequest", "FaultLevel", "Limits", "Protection", "Dtc", "Event"]
