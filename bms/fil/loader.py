"""A firmware from its description (the scenario's ``[firmware]`` table, ``bms-emu run --firmware``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .contract import Role
from .slot import Firmware, FirmwareError

__all__ = ["FirmwareSpec", "KINDS", "open_firmware"]

KINDS = ("builtin", "library", "process", "fmu")


@dataclass(frozen=True)
class FirmwareSpec:
    """Which firmware sits in which slot. ``path``: the library, the program (with arguments) or the FMU;
    ``config``: the string its ``create`` gets; ``mapping``: FMU variables of the slot's channels;
    ``signals``: what the firmware's own frames say (its state, SOC, limits, fault) as ``Message.Signal``
    of ``dbc``; ``differential``: an external BMS runs beside the built-in one, which drives the actuators."""
    role: str = "bms"
    kind: str = "builtin"
    path: str = ""
    config: str = ""
    timeout_s: float = 5.0
    dbc: str = ""
    mapping: dict = field(default_factory=dict)
    signals: dict = field(default_factory=dict)   # quantity -> "Message.Signal" of its DBC (see FrameView)
    differential: dict | None = None              # tolerances: the firmware runs beside the built-in BMS

    @property
    def external(self) -> bool:
        return self.kind != "builtin"

    def describe(self) -> str:
        return f"{self.role} {self.kind}" + (f" {self.path}" if self.path else "")


def open_firmware(spec: FirmwareSpec) -> Firmware:
    """The external firmware ``spec`` names (not yet opened: the host opens it with its slot's layout).

    A library that declares ``BMS_FIL_FLAG_GLOBALS`` is run in a process of its own."""
    role = Role.parse(spec.role)
    if spec.kind == "library":
        from .library import LibraryFirmware, library_flags
        path = Path(spec.path)
        if not path.is_file():
            raise FirmwareError(spec.path, "no such library file")
        if library_flags(path, role) & 1:
            from .process import ProcessFirmware
            return ProcessFirmware.for_library(path, role, config=spec.config, timeout_s=spec.timeout_s)
        return LibraryFirmware(path, role, config=spec.config)
    if spec.kind == "process":
        from .process import ProcessFirmware
        return ProcessFirmware(spec.path, role, config=spec.config, timeout_s=spec.timeout_s)
    if spec.kind == "fmu":
        from .fmu import FmuFirmware
        return FmuFirmware(spec.path, role, mapping=spec.mapping, dbc=spec.dbc or None, config=spec.config)
    raise FirmwareError(spec.path or spec.kind, f"unknown firmware kind {spec.kind!r}; expected one of {KINDS}")
