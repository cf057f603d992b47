"""Diagnostics of the emulated BMS: a UDS server (ISO 14229-1) on ISO-TP (ISO 15765-2), its DTC memory,
data identifiers, routines, security access, diagnostic-layer faults, and a lockstep tester connection.

The CAN node serves UDS by default on 0x7E0 (physical) / 0x7DF (functional), answering on 0x7E8
(``DiagConfig`` sets other identifiers). Any ISO-TP tester works against it: udsoncan's
``PythonIsoTpConnection`` on a real or virtual bus when paced, ``LockstepConnection`` in lockstep.
"""
from .config import DiagConfig
from .dids import DidTable, DidTableError, load_did_table
from .dtc import DTC_DEFINITIONS, STATUS_BITS, DtcMemory, DtcRecord, dtc_display, parse_dtc
from .faults import (
    DropConsecutiveFrame,
    FaultyLink,
    LateFlowControl,
    ReorderConsecutiveFrames,
    ResponsePending,
    WrongSequenceNumber,
    transport_fault,
)
from .lockstep import LockstepConnection, client_config
from .routines import BALANCING_TEST, CONTACTOR_TEST, PRECHARGE_TEST, ROUTINES
from .security import SecurityConfig, key_for
from .server import DiagError, UdsServer
from .transport import ClockedTransport, ClockTimer

__all__ = [
    "UdsServer", "DiagConfig", "DiagError", "SecurityConfig", "key_for", "DidTable", "DidTableError",
    "load_did_table", "DtcMemory", "DtcRecord", "DTC_DEFINITIONS", "STATUS_BITS", "dtc_display", "parse_dtc",
    "DropConsecutiveFrame", "ReorderConsecutiveFrames", "WrongSequenceNumber", "LateFlowControl",
    "ResponsePending", "FaultyLink", "transport_fault", "LockstepConnection", "client_config",
    "ClockedTransport", "ClockTimer", "ROUTINES", "BALANCING_TEST", "CONTACTOR_TEST", "PRECHARGE_TEST",
]
