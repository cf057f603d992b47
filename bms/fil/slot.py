"""The firmware slot: what every firmware implementation offers the loop, whatever its transport.

Per tick the host calls ``receive`` for each frame that arrived, then ``step(t_ns, dt_ns, inputs, outputs)``,
then ``transmit()`` for the frames to send (stamped by the host with the tick's time). ``inputs`` and
``outputs`` are the same buffers every tick (see ``bms.fil.contract``): a float64 array of inputs; outputs
are the actuator command registers for the BMS role (``contactor_command`` and ``balancing``, uint8) and a
float64 array for the VCU role. Times are integer nanoseconds of virtual time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BmsError
from .contract import Role, SlotLayout

__all__ = ["Firmware", "FirmwareError", "FirmwareAbiError", "FirmwareCrash", "FirmwareTimeout",
           "FirmwareOutputError", "BmsActuators", "FirmwareInfo"]


class FirmwareError(BmsError):
    """A firmware failed (returned an error, crashed, hung, or wrote invalid outputs).

    ``firmware`` names it, ``t_s`` is the simulated time, ``cause`` what happened, ``frames`` the last
    frames it received and sent (newest last)."""

    def __init__(self, firmware: str, cause: str, t_s: float | None = None, frames: list | None = None):
        self.firmware, self.cause, self.t_s, self.frames = firmware, cause, t_s, list(frames or [])
        when = f" at t = {t_s:.3f} s" if t_s is not None else ""
        super().__init__(f"firmware {firmware}{when}: {cause}")


class FirmwareAbiError(FirmwareError):
    """The library or process speaks another ABI version, or lacks the entry point (refused before the first tick)."""


class FirmwareCrash(FirmwareError):
    """The firmware process died (a signal or an exit)."""


class FirmwareTimeout(FirmwareError):
    """The firmware did not answer within its wall-clock deadline."""


class FirmwareOutputError(FirmwareError):
    """The firmware wrote an output that is NaN, out of range or not a whole value where one is required."""


class BmsActuators:
    """The BMS role's outputs as the plant reads them: contactor commands (3) and bleed switches (per group)."""

    def __init__(self, n_cells: int):
        self.contactor_command = np.zeros(3, dtype=np.uint8)
        self.balancing = np.zeros(n_cells, dtype=np.uint8)


@dataclass(frozen=True)
class FirmwareInfo:
    """What a report says about the firmware in a slot."""
    role: str
    kind: str
    name: str
    version: str
    path: str = ""

    def as_dict(self) -> dict:
        return {"role": self.role, "kind": self.kind, "name": self.name, "version": self.version, "path": self.path}


class Firmware:
    """Base of every slot implementation. Subclasses override the hooks they need."""

    kind = "builtin"
    role = Role.BMS
    name = "firmware"
    version = ""
    path = ""

    def open(self, layout: SlotLayout, dt_ns: int) -> None:
        """Called once by the host before the first tick (create)."""
        self.layout = layout

    def reset(self) -> None:
        raise FirmwareError(self.name, "reset is not supported")

    def receive(self, frame, t_ns: int) -> None:
        """A frame that arrived at ``t_ns`` (a ``can.Message``); handled at the next step (or at once)."""

    def step(self, t_ns: int, dt_ns: int, inputs: np.ndarray, outputs) -> None:
        raise NotImplementedError

    def transmit(self) -> list:
        """The frames to send now (``can.Message``), in order."""
        return []

    def save_state(self) -> bytes:
        raise FirmwareError(self.name, "save_state is not supported")

    def restore_state(self, state: bytes) -> None:
        raise FirmwareError(self.name, "restore_state is not supported")

    def close(self) -> None:
        """Release the instance (destroy); idempotent."""

    @property
    def info(self) -> FirmwareInfo:
        return FirmwareInfo(self.role.name.lower(), self.kind, self.name, self.version, str(self.path))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
