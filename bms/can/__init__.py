"""The emulated BMS's CAN face: the DBC, a codec generated from it, clocks, a deadline scheduler, the
python-can node and its logs.

The DBC ships as package data (``assb_bms.dbc``); ``dbc_text()`` returns it and ``load_dbc()`` parses it with
cantools. ``CanNode(emulator, interface=..., channel=..., clock="virtual"|"wall", log="run.blf")`` puts an
``bms.emulator.Emulator`` on a bus.
"""
from importlib import resources

from .clock import VirtualClock, WallClock
from .codec import DBC_RESOURCE, Codec, CodecError, DbcError, E2E, MessageCodec, crc8_j1850, load_dbc
from .logs import SUPPORTED_LOG_SUFFIXES, CycleStats, LogError, LogWriter
from .node import DEFAULT_INTERFACE, BusError, BusFailure, CanNode, Frame, RunReport, open_bus
from .scheduler import Scheduler

__all__ = [
    "Codec", "MessageCodec", "E2E", "DbcError", "CodecError", "crc8_j1850", "load_dbc", "dbc_text",
    "VirtualClock", "WallClock", "Scheduler", "LogWriter", "LogError", "CycleStats", "SUPPORTED_LOG_SUFFIXES",
    "CanNode", "Frame", "RunReport", "BusError", "BusFailure", "open_bus", "DEFAULT_INTERFACE",
    "DBC_RESOURCE",
]


def dbc_text() -> str:
    """The shipped DBC, exactly as installed."""
    return resources.files(__name__).joinpath(DBC_RESOURCE).read_text(encoding="utf-8")
