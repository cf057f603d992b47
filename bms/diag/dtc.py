"""DTC memory as ISO 14229-1 (Annex D) defines it: one record per BMS protection with the 8 status bits,
operation cycles, confirmation and ageing, snapshot records at the fault's simulated time, extended data.

The monitors are the BMS's protections (``bms.faults.Protection``): a protection at WARNING or above is a
failed test, one at NONE a passed test once it has run ``pass_after_s`` in a state where it is enabled.
DTC number = ``(0x1A00 + protection bit) << 8 | failure type byte`` (SAE J2012-DA style ``P1A00-17``).

Status bits, per record:

=== ==================================== ==========================================================
bit name                                 set / cleared
=== ==================================== ==========================================================
0   testFailed                           the protection is at WARNING or above now / it is back to NONE
1   testFailedThisOperationCycle         failed in this operation cycle / a new cycle starts
2   pendingDTC                           failed in this or the last cycle / a cycle ends that passed
                                         without failing
3   confirmedDTC                         failed in ``confirmation_cycles`` operation cycles, or reached
                                         ERROR (``confirm_immediately_at``) / aged out, cleared
4   testNotCompletedSinceLastClear       after a clear / the test completed (passed or failed)
5   testFailedSinceLastClear             failed since the last clear / clear
6   testNotCompletedThisOperationCycle   a new cycle starts / the test completed in this cycle
7   warningIndicatorRequested            confirmed at ERROR or above (the pack's warning lamp) / a
                                         cycle ends that passed without failing
=== ==================================== ==========================================================

A confirmed DTC ages out (confirmedDTC cleared) after ``ageing_cycles`` operation cycles without a failure.
Extended data record 0x01: occurrence counter, ageing counter, failed-cycles counter, first and last
occurrence (simulated ms since the first power-on of the memory: the ``memory time``).
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ..faults import DTC_BASE, FaultLevel, Protection

__all__ = ["DtcDefinition", "DtcRecord", "DtcMemory", "DTC_DEFINITIONS", "STATUS_BITS", "STATUS_AVAILABILITY",
           "dtc_display", "parse_dtc", "EXTENDED_DATA_RECORDS", "Status"]


class Status:
    TEST_FAILED = 0x01
    TEST_FAILED_THIS_CYCLE = 0x02
    PENDING = 0x04
    CONFIRMED = 0x08
    NOT_COMPLETED_SINCE_CLEAR = 0x10
    FAILED_SINCE_CLEAR = 0x20
    NOT_COMPLETED_THIS_CYCLE = 0x40
    WARNING_INDICATOR = 0x80


STATUS_BITS = {"test_failed": 0x01, "test_failed_this_operation_cycle": 0x02, "pending": 0x04, "confirmed": 0x08,
               "test_not_completed_since_last_clear": 0x10, "test_failed_since_last_clear": 0x20,
               "test_not_completed_this_operation_cycle": 0x40, "warning_indicator_requested": 0x80}
STATUS_AVAILABILITY = 0xFF   # every bit is supported
CLEARED_STATUS = Status.NOT_COMPLETED_SINCE_CLEAR | Status.NOT_COMPLETED_THIS_CYCLE   # 0x50
EXTENDED_DATA_RECORDS = {0x01: 16}   # record number -> bytes

# SAE J2012-DA failure type bytes
_FTB_V_HIGH, _FTB_V_LOW, _FTB_I_HIGH, _FTB_OVERTEMP = 0x17, 0x16, 0x19, 0x4B
_FTB_PLAUSIBILITY, _FTB_COMPARE, _FTB_STUCK_OPEN, _FTB_STUCK_CLOSED = 0x64, 0x62, 0x72, 0x73
_FTB_MISSING, _FTB_PERFORMANCE, _FTB_COMPONENT_TEMP, _FTB_NONE = 0x87, 0x92, 0x98, 0x00
_CHECK_IMMEDIATELY, _CHECK_AT_HALT, _MAINTENANCE = 0x80, 0x40, 0x20   # ISO 14229 DTC severity bits

_CLOSED = ("READY", "CHARGING")
_RUNNING = ("STANDBY", "PRECHARGE", "READY", "CHARGING", "FAULT")


@dataclass(frozen=True)
class DtcDefinition:
    protection: Protection
    ftb: int
    text: str
    severity: int = _CHECK_AT_HALT
    enabled_in: tuple[str, ...] = _RUNNING   # BMS states in which the monitor runs (and can pass)

    @property
    def code(self) -> int:
        return ((DTC_BASE + int(self.protection)) << 8) | self.ftb

    @property
    def display(self) -> str:
        return dtc_display(self.code)


def _d(p, ftb, text, severity=_CHECK_AT_HALT, enabled_in=_RUNNING):
    return DtcDefinition(p, ftb, text, severity, enabled_in)


P = Protection
DTC_DEFINITIONS: dict[Protection, DtcDefinition] = {d.protection: d for d in (
    _d(P.CELL_OVERVOLTAGE, _FTB_V_HIGH, "cell group voltage above the limit", _CHECK_IMMEDIATELY),
    _d(P.CELL_UNDERVOLTAGE, _FTB_V_LOW, "cell group voltage below the limit", _CHECK_IMMEDIATELY),
    _d(P.DISCHARGE_OVERTEMPERATURE, _FTB_OVERTEMP, "cell temperature above the discharge window",
       _CHECK_IMMEDIATELY),
    _d(P.DISCHARGE_UNDERTEMPERATURE, _FTB_PERFORMANCE, "cell temperature below the discharge window"),
    _d(P.CHARGE_OVERTEMPERATURE, _FTB_OVERTEMP, "cell temperature above the charge window", _CHECK_IMMEDIATELY,
       ("CHARGING",)),
    _d(P.CHARGE_UNDERTEMPERATURE, _FTB_PERFORMANCE, "cell temperature below the charge window",
       enabled_in=("CHARGING",)),
    _d(P.DISCHARGE_OVERCURRENT, _FTB_I_HIGH, "discharge current above the published limit", _CHECK_IMMEDIATELY,
       _CLOSED),
    _d(P.CHARGE_OVERCURRENT, _FTB_I_HIGH, "charge current above the published limit", _CHECK_IMMEDIATELY, _CLOSED),
    _d(P.LINK_VOLTAGE_MISMATCH, _FTB_COMPARE, "DC link and pack voltage disagree", enabled_in=_CLOSED),
    _d(P.PACK_VOLTAGE_MISMATCH, _FTB_COMPARE, "pack voltage sensor and cell sum disagree"),
    _d(P.CELL_VOLTAGE_SENSOR, _FTB_PLAUSIBILITY, "cell-monitor channel open, out of range or stuck"),
    _d(P.TEMPERATURE_SENSOR, _FTB_PLAUSIBILITY, "temperature sensor open, out of range or implausible"),
    _d(P.CURRENT_SENSOR, _FTB_PLAUSIBILITY, "current sensor out of range, offset, stuck or off the cells' current"),
    _d(P.CONTACTOR_FEEDBACK, _FTB_STUCK_OPEN, "contactor commanded closed, feedback open", _CHECK_IMMEDIATELY,
       _CLOSED),
    _d(P.CONTACTOR_WELDED, _FTB_STUCK_CLOSED, "contactor commanded open, feedback or DC link closed",
       _CHECK_IMMEDIATELY),
    _d(P.PRECHARGE_FAILURE, _FTB_PERFORMANCE, "DC link did not precharge in time", enabled_in=("PRECHARGE",)),
    _d(P.VCU_TIMEOUT, _FTB_MISSING, "VCU command missing", enabled_in=_RUNNING),
    _d(P.CHARGER_TIMEOUT, _FTB_MISSING, "charger status missing while charging", enabled_in=("CHARGING",)),
    _d(P.COMM_FAULT, _FTB_MISSING, "CAN message timeout, counter or CRC errors", _MAINTENANCE),
    _d(P.STACK_PRESSURE_LOSS, _FTB_PERFORMANCE, "cell group resistance far above the pack's (stack pressure)"),
    _d(P.CELL_IMBALANCE, _FTB_PERFORMANCE, "cell group voltages spread too far", _MAINTENANCE),
    _d(P.THERMAL_EVENT, _FTB_COMPONENT_TEMP, "fast temperature rise (thermal event onset)", _CHECK_IMMEDIATELY),
    _d(P.INTERNAL_SHORT, _FTB_PERFORMANCE, "a cell group loses charge faster than the others (internal short)",
       _MAINTENANCE),
)}


def dtc_display(code: int) -> str:
    """``0x1A0017`` -> ``P1A00-17`` (SAE J2012 letter and digits, failure type byte)."""
    high = code >> 8
    letter = "PCBU"[(high >> 14) & 3]
    return f"{letter}{(high >> 12) & 3}{high & 0xFFF:03X}-{code & 0xFF:02X}"


def parse_dtc(text: str | int) -> int:
    """A DTC given as ``P1A00-17``, ``0x1A0017``, ``1A0017`` or an int."""
    if isinstance(text, int):
        return text
    t = text.strip().upper()
    if t[:1] in "PCBU" and len(t) >= 5 and t[1] in "0123":
        letter = "PCBU".index(t[0])
        high = (letter << 14) | (int(t[1]) << 12) | int(t[2:5], 16)
        ftb = int(t.split("-")[1], 16) if "-" in t else 0
        return (high << 8) | ftb
    return int(t, 16)


@dataclass
class DtcRecord:
    """One DTC as the memory keeps it (all times simulated seconds on the memory's time base)."""
    code: int
    status: int = CLEARED_STATUS
    occurrences: int = 0
    failed_cycles: int = 0          # operation cycles with a failure since it was last passing (confirmation)
    ageing: int = 0                 # operation cycles without a failure since it was confirmed
    aged: int = 0                   # times it aged out
    first_s: float | None = None    # first failure since the last clear
    last_s: float | None = None     # most recent failure
    level: int = 0                  # highest fault level seen since the last clear
    snapshots: dict = field(default_factory=dict)   # record number -> {did: encoded bytes (hex)} + time
    passing_since_s: float | None = None            # monitor enabled and passing since (this cycle)
    failed_this_cycle: bool = False

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("code", "status", "occurrences", "failed_cycles", "ageing", "aged",
                                              "first_s", "last_s", "level", "snapshots", "failed_this_cycle")}

    @classmethod
    def from_dict(cls, data: dict) -> DtcRecord:
        record = cls(int(data["code"]))
        for key, value in data.items():
            if key in ("status", "occurrences", "failed_cycles", "ageing", "aged", "level"):
                setattr(record, key, int(value))
            elif key in ("first_s", "last_s"):
                setattr(record, key, None if value is None else float(value))
            elif key == "snapshots":
                record.snapshots = {int(k): dict(v) for k, v in value.items()}
            elif key == "failed_this_cycle":
                record.failed_this_cycle = bool(value)
        return record

    def extended_data(self, number: int) -> bytes:
        """Extended data record 0x01: occurrence counter (u8), ageing counter (u8), aged counter (u8),
        failed-cycles counter (u8), highest fault level (u8), pad (3), first and last occurrence (u32 ms each)."""
        def ms(t):
            return 0xFFFFFFFF if t is None else min(int(round(t * 1000)), 0xFFFFFFFE)
        return struct.pack(">BBBBB3xII", min(self.occurrences, 255), min(self.ageing, 255), min(self.aged, 255),
                           min(self.failed_cycles, 255), self.level, ms(self.first_s), ms(self.last_s))


class DtcMemory:
    """The BMS's fault memory; ``evaluate`` once per tick (cheap when nothing changed).

    ``snapshot`` is called as ``snapshot(protection, record_number) -> dict`` when a record is written;
    ``on_change(t_s, record, old_status, new_status, why)`` when a status byte changes.
    """

    def __init__(self, *, confirmation_cycles: int = 2, ageing_cycles: int = 40,
                 confirm_immediately_at: FaultLevel = FaultLevel.ERROR, pass_after_s: float = 1.0,
                 definitions: dict[Protection, DtcDefinition] | None = None):
        if not (isinstance(confirmation_cycles, int) and confirmation_cycles >= 1):
            raise ValueError(f"confirmation_cycles: expected an integer >= 1, found {confirmation_cycles!r}")
        if not (isinstance(ageing_cycles, int) and ageing_cycles >= 1):
            raise ValueError(f"ageing_cycles: expected an integer >= 1, found {ageing_cycles!r}")
        if not (isinstance(pass_after_s, (int, float)) and math.isfinite(pass_after_s) and pass_after_s >= 0):
            raise ValueError(f"pass_after_s: expected a time >= 0 s, found {pass_after_s!r}")
        self.confirmation_cycles, self.ageing_cycles = confirmation_cycles, ageing_cycles
        self.confirm_immediately_at = FaultLevel(confirm_immediately_at)
        self.pass_after_s = float(pass_after_s)
        self.definitions = definitions or DTC_DEFINITIONS
        self.by_code = {d.code: d for d in self.definitions.values()}
        self.records: dict[int, DtcRecord] = {d.code: DtcRecord(d.code) for d in self.definitions.values()}
        self.operation_cycle = 0
        self.time_offset_s = 0.0        # memory time = run time + offset (continues across restarts)
        self.setting_enabled = True     # ControlDTCSetting
        self.snapshot: Callable | None = None
        self.on_change: Callable | None = None
        self._levels: dict[Protection, int] = dict.fromkeys(self.definitions, 0)
        self._state = ""
        self._dirty = True
        self.waiting = True   # a passing test has yet to complete: ``evaluate`` needs time to go on

    # --- what the tester sees ----------------------------------------------------------------------------
    def status(self, code: int) -> int:
        return self.records[code].status

    def matching(self, mask: int) -> list[DtcRecord]:
        """Records whose status has a bit of ``mask`` set, in DTC-number order (ISO: status & mask != 0)."""
        return [r for code, r in sorted(self.records.items()) if r.status & mask & STATUS_AVAILABILITY]

    def stored(self) -> list[DtcRecord]:
        """Records that hold something (a failure since the last clear or a snapshot)."""
        return [r for _, r in sorted(self.records.items()) if r.status & (Status.FAILED_SINCE_CLEAR | 0x0F)
                or r.snapshots]

    def memory_time(self, t_s: float) -> float:
        return t_s + self.time_offset_s

    # --- the monitors ------------------------------------------------------------------------------------
    def evaluate(self, t_s: float, levels: dict[Protection, int], state: str) -> None:
        """Protection levels and the BMS state at run time ``t_s``: test results for every DTC."""
        if not self.setting_enabled:
            self._levels, self._state = dict(levels), state
            return
        mt = self.memory_time(t_s)
        waiting = False
        for p, d in self.definitions.items():
            level = int(levels.get(p, 0))
            r = self.records[d.code]
            if level > 0:
                if self._levels.get(p, 0) == 0 or not r.status & Status.TEST_FAILED:
                    self._failed(r, d, mt, level, p)
                elif level > r.level:
                    r.level = level
                    self._confirm_if(r, d, mt, level)
            else:
                if r.status & Status.TEST_FAILED:
                    self._set(r, r.status & ~Status.TEST_FAILED, mt, "test passed")
                if state in d.enabled_in:
                    if r.passing_since_s is None:
                        r.passing_since_s = mt
                    if r.status & (Status.NOT_COMPLETED_THIS_CYCLE | Status.NOT_COMPLETED_SINCE_CLEAR):
                        if mt - r.passing_since_s >= self.pass_after_s - 1e-9:
                            done = r.status & ~(Status.NOT_COMPLETED_THIS_CYCLE | Status.NOT_COMPLETED_SINCE_CLEAR)
                            self._set(r, done, mt, "test completed (passed)")
                        else:
                            waiting = True
                else:
                    r.passing_since_s = None
        self._levels, self._state = dict(levels), state
        self.waiting = waiting

    def _failed(self, r: DtcRecord, d: DtcDefinition, mt: float, level: int, p: Protection) -> None:
        first_this_cycle = not r.failed_this_cycle
        r.failed_this_cycle = True
        r.passing_since_s = None
        r.occurrences += 1
        r.level = max(r.level, level)
        if r.first_s is None:
            r.first_s = mt
        r.last_s = mt
        r.ageing = 0
        if first_this_cycle:
            r.failed_cycles += 1
        status = (r.status | Status.TEST_FAILED | Status.TEST_FAILED_THIS_CYCLE | Status.PENDING
                  | Status.FAILED_SINCE_CLEAR) & ~(Status.NOT_COMPLETED_THIS_CYCLE | Status.NOT_COMPLETED_SINCE_CLEAR)
        if self.snapshot is not None:
            if 1 not in r.snapshots:
                r.snapshots[1] = self.snapshot(p, mt)
            r.snapshots[2] = self.snapshot(p, mt)
        self._set(r, status, mt, f"test failed at {FaultLevel(level).name}")
        self._confirm_if(r, d, mt, level)

    def _confirm_if(self, r: DtcRecord, d: DtcDefinition, mt: float, level: int) -> None:
        status = r.status
        if r.failed_cycles >= self.confirmation_cycles or level >= self.confirm_immediately_at:
            status |= Status.CONFIRMED
            if level >= FaultLevel.ERROR or r.level >= FaultLevel.ERROR:
                status |= Status.WARNING_INDICATOR
        if status != r.status:
            self._set(r, status, mt, "confirmed" if status & Status.CONFIRMED else "warning indicator")

    # --- operation cycles, clearing -------------------------------------------------------------------
    def power_on(self) -> None:
        """The monitors start again (power-on, ECU reset): a fault still present is reported anew."""
        self._levels = dict.fromkeys(self.definitions, 0)
        self.waiting = True

    def start_operation_cycle(self, t_s: float, why: str = "power on", *, monitors_running: bool = True) -> None:
        """The current operation cycle ends and a new one starts (power-on, reset, wake-up, a new trip).

        ``monitors_running``: the monitors ran on across the boundary (a wake-up, a trip in the same power
        cycle), so a test still failing fails in the new cycle at once; False after power-on, where each
        test reports again when it next runs (testFailed keeps its last result until then)."""
        mt = self.memory_time(t_s)
        self.operation_cycle += 1
        for r in self.records.values():
            status = r.status
            completed = not status & Status.NOT_COMPLETED_THIS_CYCLE
            if not r.failed_this_cycle:
                if completed:
                    status &= ~(Status.PENDING | Status.WARNING_INDICATOR)
                    r.failed_cycles = 0
                if status & Status.CONFIRMED and completed:
                    r.ageing += 1
                    if r.ageing >= self.ageing_cycles:
                        status &= ~Status.CONFIRMED
                        r.aged += 1
                        r.ageing = 0
            if self.setting_enabled:
                status = (status & ~Status.TEST_FAILED_THIS_CYCLE) | Status.NOT_COMPLETED_THIS_CYCLE
                if status & Status.TEST_FAILED and monitors_running:   # still failing at the start of the cycle
                    status |= Status.TEST_FAILED_THIS_CYCLE
            r.failed_this_cycle = bool(status & Status.TEST_FAILED) and monitors_running
            if r.failed_this_cycle:
                r.failed_cycles += 1
                status &= ~Status.NOT_COMPLETED_THIS_CYCLE
                d = self.by_code[r.code]
                r.status = status
                self._confirm_if(r, d, mt, r.level)
                status = r.status
            r.passing_since_s = None
            self._set(r, status, mt, f"operation cycle {self.operation_cycle} ({why})")
        self._dirty = True
        self.waiting = True

    def clear(self, t_s: float, codes=None) -> int:
        """ClearDiagnosticInformation: every record (or those in ``codes``) back to 0x50, counters and
        snapshots erased. A protection still active fails again at the next evaluation. Returns the number
        of records that held something."""
        mt = self.memory_time(t_s)
        held = 0
        for code, r in self.records.items():
            if codes is not None and code not in codes:
                continue
            if r.status & 0x2F or r.snapshots:
                held += 1
            fresh = DtcRecord(code)
            old = r.status
            self.records[code] = fresh
            if old != fresh.status and self.on_change is not None:
                self.on_change(mt, fresh, old, fresh.status, "cleared")
        for p, d in self.definitions.items():
            if codes is None or d.code in codes:
                self._levels[p] = 0   # a fault still present is a new failure
        self._dirty = True
        self.waiting = True
        return held

    def _set(self, r: DtcRecord, status: int, mt: float, why: str) -> None:
        old = r.status
        r.status = status
        if old != status:
            self._dirty = True
            if self.on_change is not None:
                self.on_change(mt, r, old, status, why)

    # --- persistence -----------------------------------------------------------------------------------
    def take_dirty(self) -> bool:
        dirty, self._dirty = self._dirty, False
        return dirty

    def as_dict(self, t_s: float) -> dict:
        return {"operation_cycle": self.operation_cycle, "memory_time_s": self.memory_time(t_s),
                "records": [r.as_dict() for _, r in sorted(self.records.items())
                            if r.status != CLEARED_STATUS or r.snapshots or r.occurrences]}

    def load_dict(self, data: dict) -> None:
        self.operation_cycle = int(data.get("operation_cycle", 0))
        self.time_offset_s = float(data.get("memory_time_s", 0.0))
        for item in data.get("records", []):
            record = DtcRecord.from_dict(item)
            if record.code in self.records:
                self.records[record.code] = record
        self._dirty = False
