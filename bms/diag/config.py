"""How the BMS's diagnostic server is set up: addressing, ISO-TP parameters, UDS timing, security, DTC
confirmation and ageing, the DID table and the non-volatile memory file."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..faults import FaultLevel
from .security import SecurityConfig

__all__ = ["DiagConfig", "OPERATION_CYCLES"]

OPERATION_CYCLES = ("power", "manual")


def _id(value, key: str, extended: bool) -> None:
    top = 0x1FFFFFFF if extended else 0x7FF
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top):
        raise InputError(key, f"a CAN identifier 0..0x{top:X}", value)


def _time(value, key: str, *, zero: bool = False) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (value >= 0 if zero else value > 0)):
        raise InputError(key, "a finite time " + (">= 0 s" if zero else "> 0 s"), value)


@dataclass(frozen=True)
class DiagConfig:
    """The diagnostic server of the emulated BMS.

    Addressing: requests on ``physical_id`` (0x7E0) and ``functional_id`` (0x7DF, None: none), responses on
    ``response_id`` (0x7E8); ``extended_id`` for 29-bit identifiers. ``isotp``: can-isotp parameters over
    the defaults (padding 0xCC, BS 8, STmin 0, N_Bs = N_Cr = 1000 ms). Timing the server announces and
    keeps: P2 ``p2_server_s``, P2* ``p2_star_server_s``, S3 ``s3_server_s``; 0x78 repeated every
    ``pending_interval_s`` (None: P2* / 2). DTCs: confirmed after failing in ``confirmation_cycles``
    operation cycles (or at once from ``confirm_immediately_at``), aged out after ``ageing_cycles`` cycles
    without a failure; a test passes after ``pass_after_s`` without failure. ``operation_cycle``: "power"
    (power-on, ECU reset and wake-up from SHUTDOWN start a cycle) or "manual" (only
    ``UdsServer.start_operation_cycle``). ``memory_path``: the non-volatile memory (DTCs, written DIDs,
    counters, security attempts) as a JSON file kept across restarts (None: in memory only).
    ``insulation_resistance_kohm``: the plant has no insulation model, this is the value the BMS measures.
    """
    physical_id: int = 0x7E0
    response_id: int = 0x7E8
    functional_id: int | None = 0x7DF
    extended_id: bool = False
    isotp: dict = field(default_factory=dict)
    p2_server_s: float = 0.050
    p2_star_server_s: float = 5.0
    s3_server_s: float = 5.0
    pending_interval_s: float | None = None
    security: SecurityConfig = field(default_factory=SecurityConfig)
    confirmation_cycles: int = 2
    ageing_cycles: int = 40
    confirm_immediately_at: str = "ERROR"
    pass_after_s: float = 1.0
    dtc_period_s: float = 0.1
    did_table: str | Path | None = None
    memory_path: str | Path | None = None
    operation_cycle: str = "power"
    insulation_resistance_kohm: float = 5000.0
    insulation_threshold_ohm_per_V: float = 100.0
    rest_current_A: float = 2.0
    routine_settle_s: float = 0.2
    max_dids_per_request: int = 16

    def __post_init__(self):
        for key in ("physical_id", "response_id"):
            _id(getattr(self, key), key, self.extended_id)
        if self.functional_id is not None:
            _id(self.functional_id, "functional_id", self.extended_id)
        ids = [self.physical_id, self.response_id] + ([self.functional_id] if self.functional_id is not None else [])
        if len(set(ids)) != len(ids):
            raise InputError("diag identifiers", "three different CAN identifiers", ids)
        for key in ("p2_server_s", "p2_star_server_s", "s3_server_s", "dtc_period_s", "routine_settle_s"):
            _time(getattr(self, key), key)
        if self.p2_server_s > 65.535 or self.p2_star_server_s > 655.35:
            raise InputError("p2_server_s / p2_star_server_s", "P2 <= 65.535 s, P2* <= 655.35 s",
                             (self.p2_server_s, self.p2_star_server_s))
        if self.pending_interval_s is not None:
            _time(self.pending_interval_s, "pending_interval_s")
        _time(self.pass_after_s, "pass_after_s", zero=True)
        if self.confirm_immediately_at not in FaultLevel.__members__ or self.confirm_immediately_at == "NONE":
            raise InputError("confirm_immediately_at", "WARNING, ERROR or EMERGENCY", self.confirm_immediately_at)
        if self.operation_cycle not in OPERATION_CYCLES:
            raise InputError("operation_cycle", " or ".join(OPERATION_CYCLES), self.operation_cycle)
        if not isinstance(self.security, SecurityConfig):
            raise InputError("security", "a SecurityConfig", self.security)
        if not (isinstance(self.max_dids_per_request, int) and self.max_dids_per_request >= 1):
            raise InputError("max_dids_per_request", "an integer >= 1", self.max_dids_per_request)
        if not isinstance(self.isotp, dict):
            raise InputError("isotp", "a dict of can-isotp parameters", self.isotp)

    @property
    def pending_interval(self) -> float:
        return self.pending_interval_s if self.pending_interval_s is not None else self.p2_star_server_s / 2
