"""The testing kit: benches in lockstep virtual time, a DBC-driven tester, hypothesis strategies, a BMS state
machine, and the pytest plugin (``hil.testing.plugin``, entry point ``bms_emu``) that provides them as fixtures.

Public API: ``Bench``, ``SimClock``, ``Tester``, the segments (``Rest``, ``Current``, ``Power``, ``CycleSlice``,
``Charge``), ``check`` and ``PropertyFailed``, ``BmsMachine``, ``KitOptions``/``current_options``, and the module
``hil.testing.strategies``.
"""
from .bench import Bench, BenchError
from .check import DEFAULT_PROPERTIES, PropertyFailed, check, expectations
from .clock import SimClock
from .machine import BmsMachine
from .options import KitOptions, firmware_spec
from .options import current as current_options
from .segments import Charge, Current, CycleSlice, Power, Rest, Segment
from .tester import ExpectationFailed, Periodic, Tester

__all__ = ["Bench", "BenchError", "SimClock", "Tester", "Periodic", "ExpectationFailed", "Segment", "Rest", "Current",
           "Power", "CycleSlice", "Charge", "check", "PropertyFailed", "DEFAULT_PROPERTIES", "expectations",
           "BmsMachine", "KitOptions", "current_options", "firmware_spec"]
