"""The BMS's fault vocabulary, in one place: protection bits, levels, DTC numbers, latching, derating.

``warning_flags`` and ``error_flags`` of :class:`bms.controller.Bms` carry one bit per
:class:`Protection` (bit number = enum value); the CAN DBC carries the same bits.

* ``warning_flags``: bit set while the protection is at :attr:`FaultLevel.WARNING`.
* ``error_flags``: bit set while the protection is at :attr:`FaultLevel.ERROR` or
  :attr:`FaultLevel.EMERGENCY` (``Bms.fault_level`` and the DTC say which).

Levels and what the BMS does:

========== =========================================================================================
WARNING    derate (the published limits fall by the protection's factors) or request; DTC *pending*
ERROR      controlled open: limits to zero, wait until the current falls below a threshold (at most a
           configured time), then open; state FAULT; DTC *confirmed*
EMERGENCY  immediate open whatever the current; state FAULT, always latched
========== =========================================================================================

A fault *latches* when it reaches the protection's ``latch_level``: the contactors then stay open until
the DTCs are cleared (``Bms.clear_dtcs``) with the condition gone.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["FaultLevel", "Protection", "ProtectionInfo", "PROTECTIONS", "DTC_BASE", "dtc_code", "Dtc", "Event"]


class FaultLevel(enum.IntEnum):
    NONE = 0
    WARNING = 1
    ERROR = 2
    EMERGENCY = 3


class Protection(enum.IntEnum):
    """One bit per protection in ``warning_flags``/``error_flags``; DTC number = ``DTC_BASE + bit``."""
    CELL_OVERVOLTAGE = 0            # highest valid cell-group voltage
    CELL_UNDERVOLTAGE = 1           # lowest valid cell-group voltage
    DISCHARGE_OVERTEMPERATURE = 2   # hottest valid sensor (or core estimate) against the discharge window
    DISCHARGE_UNDERTEMPERATURE = 3  # coldest valid sensor (or core estimate) against the discharge window
    CHARGE_OVERTEMPERATURE = 4      # charge window, checked while CHARGING
    CHARGE_UNDERTEMPERATURE = 5     # charge window (no charging below 0 degC), checked while CHARGING
    DISCHARGE_OVERCURRENT = 6       # measured current over the published discharge limit; short circuit
    CHARGE_OVERCURRENT = 7          # measured charge current over the published charge limit
    LINK_VOLTAGE_MISMATCH = 8       # DC link and pack voltage disagree with the main contactors closed
    PACK_VOLTAGE_MISMATCH = 9       # pack voltage sensor and the sum of the cell groups disagree
    CELL_VOLTAGE_SENSOR = 10        # a cell-monitor channel is open, out of range or stuck
    TEMPERATURE_SENSOR = 11         # a temperature sensor is open/out of range or disagrees with the others
    CURRENT_SENSOR = 12             # shunt out of range, offset with contactors open, stuck, or off the cells
    CONTACTOR_FEEDBACK = 13         # commanded closed, feedback open
    CONTACTOR_WELDED = 14           # commanded open, feedback (or the DC link) says closed
    PRECHARGE_FAILURE = 15          # DC link did not reach its target in time, after the retries
    VCU_TIMEOUT = 16                # no VCU command within the configured time
    CHARGER_TIMEOUT = 17            # no charger message within the configured time while CHARGING
    COMM_FAULT = 18                 # the CAN node reports timeouts, counter or CRC errors
    STACK_PRESSURE_LOSS = 19        # a group's resistance far above the pack's: lost stack pressure
    CELL_IMBALANCE = 20             # spread of the cell-group voltages
    THERMAL_EVENT = 21              # fast temperature rise on a sensor (solid electrolyte exotherm onset)
    INTERNAL_SHORT = 22             # a group loses charge faster than the others: a soft internal short


N_PROTECTIONS = len(Protection)
DTC_BASE = 0x1A00
_E, _X = FaultLevel.ERROR, FaultLevel.EMERGENCY


@dataclass(frozen=True)
class ProtectionInfo:
    """What the BMS does with one protection: latching, derating at WARNING, which side computes it."""
    latch_level: FaultLevel = _X            # the fault latches from this level on
    derate_discharge: float | str = 1.0     # factor on the discharge limits at WARNING (str: a config key)
    derate_charge: float | str = 1.0        # factor on the charge limits at WARNING (str: a config key)
    python: bool = False                    # set by the Python side, not the compiled kernel
    doc: str = ""


PROTECTIONS: dict[Protection, ProtectionInfo] = {
    Protection.CELL_OVERVOLTAGE: ProtectionInfo(_E, 1.0, 0.0, doc="warning stops charge and regen"),
    Protection.CELL_UNDERVOLTAGE: ProtectionInfo(_X, "cell_undervoltage_derate", 1.0),
    Protection.DISCHARGE_OVERTEMPERATURE: ProtectionInfo(_X, doc="derating follows discharge_derate_temp_C"),
    Protection.DISCHARGE_UNDERTEMPERATURE: ProtectionInfo(_X, doc="derating follows discharge_derate_temp_C"),
    Protection.CHARGE_OVERTEMPERATURE: ProtectionInfo(_X, 1.0, 0.5),
    Protection.CHARGE_UNDERTEMPERATURE: ProtectionInfo(_X, 1.0, 0.0, doc="warning stops the charge request"),
    Protection.DISCHARGE_OVERCURRENT: ProtectionInfo(_X),
    Protection.CHARGE_OVERCURRENT: ProtectionInfo(_X),
    Protection.LINK_VOLTAGE_MISMATCH: ProtectionInfo(_X),
    Protection.PACK_VOLTAGE_MISMATCH: ProtectionInfo(_X),
    Protection.CELL_VOLTAGE_SENSOR: ProtectionInfo(_X, doc="an unmonitored cell: controlled open"),
    Protection.TEMPERATURE_SENSOR: ProtectionInfo(_X, "temperature_sensor_derate", "temperature_sensor_derate",
                                                  doc="ERROR when a module has no valid sensor left"),
    Protection.CURRENT_SENSOR: ProtectionInfo(_X),
    Protection.CONTACTOR_FEEDBACK: ProtectionInfo(_E),
    Protection.CONTACTOR_WELDED: ProtectionInfo(_E, doc="EMERGENCY when both main contactors are welded"),
    Protection.PRECHARGE_FAILURE: ProtectionInfo(_E, python=True),
    Protection.VCU_TIMEOUT: ProtectionInfo(_X, doc="monitored once the VCU has been heard"),
    Protection.CHARGER_TIMEOUT: ProtectionInfo(_X),
    Protection.COMM_FAULT: ProtectionInfo(_X, python=True),
    Protection.STACK_PRESSURE_LOSS: ProtectionInfo(_E, "stack_pressure_derate", "stack_pressure_derate"),
    Protection.CELL_IMBALANCE: ProtectionInfo(_E),
    Protection.THERMAL_EVENT: ProtectionInfo(_E, 0.5, 0.0),
    Protection.INTERNAL_SHORT: ProtectionInfo(_E, python=True, doc="a warning for service: the pack stays in use"),
}


def dtc_code(protection: Protection) -> int:
    """The DTC number of a protection: ``DTC_BASE + bit``."""
    return DTC_BASE + int(protection)


@dataclass
class Dtc:
    """A diagnostic trouble code as a production ECU keeps it (first/last occurrence in simulated time)."""
    code: int
    name: str
    level: FaultLevel
    status: str                   # 'pending' | 'confirmed' | 'cleared'
    first_s: float
    last_s: float
    count: int = 1
    freeze_frame: dict = field(default_factory=dict)
    active: bool = True           # the protection is at a level > NONE right now

    @property
    def protection(self) -> Protection:
        return Protection(self.code - DTC_BASE)


@dataclass(frozen=True)
class Event:
    """Something the BMS did or saw, at simulated time ``t_s``.

    kinds: ``state`` (from, to, reason), ``contactor`` (name, closed, reason, current_A), ``fault`` (protection,
    level, from_level, channel, value), ``request`` (request, accepted, reason), ``precharge`` (attempt,
    result, …), ``charge``, ``balancing``, ``dtc`` (cleared), ``comm`` (source, active).
    """
    t_s: float
    kind: str
    detail: dict
