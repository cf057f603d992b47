"""The emulated BMS's CAN face: the DBC, a codec generated from it, clocks, a deadline scheduler, the
python-can node and its logs.

The DBC ships as package data (``assb_bms.dbc``); ``dbc_text()`` returns it and ``load_dbc()`` parses it with
cantools. ``CanNode(emulator, interface=..., channel=..., clock="virtual"|"wall", log="run.blf")`` puts an
``bms.emulator.Emulator`` on a bus.
"""
from importlib import resources

from .clock import VirtualClock, WallClock
from .codec import DBC_RESOURCE, E2E, Codec, CodecError, DbcError, MessageCodec, crc8_j1850, load_dbc
from .dbc_check import check_node_dbc
from .logs import SUPPORTED_LOG_SUFFIXES, CycleStats, LogError, LogWriter
from .node import DEFAULT_INTERFACE, BusError, BusFailure, CanNode, Frame, RunReport, classify_rx_error, open_bus
from .scheduler import Scheduler

__all__ = [
    "Codec", "MessageCodec", "E2E", "DbcError", "CodecError", "crc8_j1850", "load_dbc", "dbc_text",
    "VirtualClock", "WallClock", "Scheduler", "LogWriter", "LogError", "CycleStats", "SUPPORTED_LOG_SUFFIXES",
    "CanNode", "Frame", "RunReport", "BusError", "BusFailure", "open_bus", "DEFAULT_INTERFACE",
    "DBC_RESOURCE", "FD_DBC_RESOURCE", "fd_dbc_path", "check_node_dbc", "classify_rx_error",
]

FD_DBC_RESOURCE = "assb_bms_fd.dbc"   # the CAN FD variant: cell data in 64- and 48-byte frames


def dbc_text(fd: bool = False) -> str:
    """The shipped DBC (``fd``: its CAN FD variant), exactly as installed."""
    return resources.files(__name__).joinpath(FD_DBC_RESOURCE if fd else DBC_RESOURCE).read_text(encoding="utf-8")


def fd_dbc_path():
    """The installed CAN FD variant of the DBC, as a path (for ``Codec(path=...)`` and ``serve --dbc``)."""
    from pathlib import Path
    return Path(str(resources.files(__name__) / FD_DBC_RESOURCE))
