"""The firmware slot: the I/O contract, the C ABI header and the transports (library, process, FMU)."""
from .contract import ABI_VERSION, DEMAND_MODES, Role, SlotLayout, bms_layout, contract_table, vcu_layout
from .slot import (
    BmsActuators,
    Firmware,
    FirmwareAbiError,
    FirmwareCrash,
    FirmwareError,
    FirmwareInfo,
    FirmwareOutputError,
    FirmwareTimeout,
)

__all__ = ["ABI_VERSION", "DEMAND_MODES", "Role", "SlotLayout", "bms_layout", "vcu_layout", "contract_table",
           "Firmware", "FirmwareError", "FirmwareAbiError", "FirmwareCrash", "FirmwareTimeout", "FirmwareOutputError",
           "FirmwareInfo", "BmsActuators", "header_path", "header_text"]


def header_path():
    """The shipped C header ``bms_fil.h`` (a ``Traversable``)."""
    from importlib import resources
    return resources.files(__package__) / "include" / "bms_fil.h"


def header_text() -> str:
    return header_path().read_text(encoding="utf-8")
