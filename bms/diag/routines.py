"""RoutineControl (0x31) routines of the BMS: balancing test, contactor test, precharge test.

Every routine needs the extended session, the BMS in STANDBY with the pack at rest (|current| below
``rest_current_A``) and nothing at ERROR or above; the contactor and precharge tests also need security level
1 (they close high-voltage contactors). The balancing test runs in the background (start, stop, request
results); the contactor and precharge tests take longer than P2: the start request is answered 0x78 (response
pending) until the test ends, then with its results. A routine stops, and opens what it closed, when the BMS
leaves STANDBY (a VCU request) or a fault reaches ERROR.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["Nrc", "Routine", "RoutineRun", "ROUTINES", "BALANCING_TEST", "CONTACTOR_TEST", "PRECHARGE_TEST"]

BALANCING_TEST, CONTACTOR_TEST, PRECHARGE_TEST = 0x0201, 0x0202, 0x0203
NRC_CONDITIONS, NRC_SEQUENCE, NRC_RANGE, NRC_LENGTH = 0x22, 0x24, 0x31, 0x13
RUNNING, COMPLETED, ABORTED = 1, 0, 2
from .._layout import CONTACTOR_NAMES as _CONTACTORS  # noqa: E402


class Nrc(Exception):
    """A negative response: the service cannot be served for ``code``."""

    def __init__(self, code: int, why: str = ""):
        super().__init__(f"NRC 0x{code:02X}" + (f": {why}" if why else ""))
        self.code, self.why = code, why


@dataclass(frozen=True)
class Routine:
    id: int
    name: str
    security: int          # level needed (0: none)
    long: bool             # answered 0x78 until done
    option_bytes: int      # length of the start option record


ROUTINES = {r.id: r for r in (Routine(BALANCING_TEST, "balancing_test", 0, False, 3),
                              Routine(CONTACTOR_TEST, "contactor_test", 1, True, 0),
                              Routine(PRECHARGE_TEST, "precharge_test", 1, True, 0))}


def check_conditions(emulator, rest_current_A: float) -> None:
    """NRC 0x22 unless the BMS is in STANDBY at rest with nothing at ERROR or above."""
    bms = emulator.bms
    if bms.state.name != "STANDBY":
        raise Nrc(NRC_CONDITIONS, f"the BMS is in {bms.state.name}, not STANDBY")
    if not abs(emulator.sensors.current_A) < rest_current_A:
        raise Nrc(NRC_CONDITIONS, "the pack is not at rest")
    if int(bms.fault_level) >= 2:
        raise Nrc(NRC_CONDITIONS, "a fault at ERROR or above is active")


class RoutineRun:
    """One run of a routine, stepped once per tick before the plant."""

    def __init__(self, routine: Routine, emulator, t_s: float, options: bytes, *, settle_s: float):
        self.routine, self.emulator, self.t0 = routine, emulator, t_s
        self.status = RUNNING
        self.why = ""
        self.settle_s = settle_s
        self._closed: set[str] = set()
        pack = emulator.pack
        if routine.id == BALANCING_TEST:
            group, duration = struct.unpack(">HB", options)
            if not (0 <= group < pack.params.n_series) or duration == 0:
                raise Nrc(NRC_RANGE, "group or duration out of range")
            self.group, self.duration_s = group, float(duration)
            self.v_before = float(emulator.sensors.cell_voltage_V[group])
            self.v_after = math.nan
        elif routine.id == CONTACTOR_TEST:
            # (contactor, close?) steps, each checked against the auxiliary contact after settle_s
            self.steps = [(c, closed) for c in ("main_negative", "main_positive", "precharge")
                          for closed in (True, False)]
            self.results = 0
            self._next_step(t_s)
        elif routine.id == PRECHARGE_TEST:
            self.timeout_s = emulator.bms.config.precharge_timeout_s
            self.link_fraction = emulator.bms.config.precharge_fraction
            self._command(main_negative=True, precharge=True)
            self.t_reached: float | None = None
            self.pack_V = self.link_V = math.nan

    # --- the tests -------------------------------------------------------------------------------------
    def step(self, t_s: float) -> None:
        if self.status != RUNNING:
            return
        bms = self.emulator.bms
        if bms.state.name != "STANDBY" or int(bms.fault_level) >= 2:
            self.abort(f"BMS in {bms.state.name}" if bms.state.name != "STANDBY" else "fault at ERROR", t_s)
            return
        rid = self.routine.id
        if rid == BALANCING_TEST:
            bleed = self.emulator.pack.state.balancing
            bleed[:] = 0
            bleed[self.group] = 1     # the routine owns the bleed switches while it runs
            if t_s - self.t0 >= self.duration_s - 1e-9:
                self.finish(t_s)
        elif rid == CONTACTOR_TEST:
            if t_s - self._t_step >= self.settle_s - 1e-9:
                name, closed = self._step
                feedback = self.emulator.sensors.contactor_feedback[_CONTACTORS.index(name)] > 0.5
                if feedback == closed:
                    self.results |= 1 << (2 * _CONTACTORS.index(name) + (0 if closed else 1))
                if self.steps:
                    self._next_step(t_s)
                else:
                    self.finish(t_s)
        elif rid == PRECHARGE_TEST:
            s = self.emulator.sensors
            self.pack_V, self.link_V = s.pack_voltage_V, s.link_voltage_V
            if self.t_reached is None and self.pack_V > 0 and self.link_V >= self.link_fraction * self.pack_V:
                self.t_reached = t_s
            if self.t_reached is not None or t_s - self.t0 >= self.timeout_s:
                self.finish(t_s)

    def _next_step(self, t_s: float) -> None:
        self._step = self.steps.pop(0)
        name, closed = self._step
        self._command(**{name: closed})
        self._t_step = t_s

    def _command(self, **commands) -> None:
        self.emulator.pack.command_contactors(**commands)
        for name, closed in commands.items():
            (self._closed.add if closed else self._closed.discard)(name)

    def _release(self) -> None:
        if self._closed and self.emulator.bms.state.name in ("STANDBY", "FAULT", "INIT"):
            self._command(**dict.fromkeys(self._closed, False))
        self._closed.clear()
        if self.routine.id == BALANCING_TEST:
            self.emulator.pack.state.balancing[self.group] = 0
            self.v_after = float(self.emulator.sensors.cell_voltage_V[self.group])

    def finish(self, t_s: float) -> None:
        self._release()
        self.status, self.t_end = COMPLETED, t_s

    def abort(self, why: str, t_s: float) -> None:
        self._release()
        self.status, self.why, self.t_end = ABORTED, why, t_s

    # --- the routine status record ------------------------------------------------------------------------
    def result(self, t_s: float) -> bytes:
        rid = self.routine.id
        if rid == BALANCING_TEST:
            v_now = self.v_after if math.isfinite(self.v_after) else float(
                self.emulator.sensors.cell_voltage_V[self.group])
            elapsed = (getattr(self, "t_end", t_s) - self.t0)
            return struct.pack(">BHHHH", self.status, self.group, _u16(self.v_before / 1e-4), _u16(v_now / 1e-4),
                               _u16(elapsed * 10))
        if rid == CONTACTOR_TEST:
            passed = self.status == COMPLETED and self.results == 0x3F
            return struct.pack(">BBB", self.status, 0 if passed else 1, self.results)
        passed = self.status == COMPLETED and self.t_reached is not None
        t_ms = (self.t_reached - self.t0) * 1000 if self.t_reached is not None else math.nan
        return struct.pack(">BBHHH", self.status, 0 if passed else 1, _u16(t_ms), _u16(self.link_V * 10),
                           _u16(self.pack_V * 10))


def _u16(x: float) -> int:
    return 0xFFFF if not np.isfinite(x) else int(min(max(round(x), 0), 0xFFFE))
