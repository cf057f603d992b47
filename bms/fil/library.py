"""In-process transport: a firmware shared library called through the C ABI of ``bms_fil.h``.

The library is opened with ``dlopen(RTLD_LOCAL)`` and called through its ``bms_fil_api`` function table
from the compiled transport (``bms._ext.fil``) on buffers allocated once: a tick allocates nothing.
"""
from __future__ import annotations

from pathlib import Path

from .contract import Role, SlotLayout
from .slot import Firmware, FirmwareError

__all__ = ["LibraryFirmware", "library_flags"]


def _transport():
    try:
        from .._ext import fil
    except ImportError as exc:  # a broken build fails loudly, never silently
        raise FirmwareError("library transport", f"the compiled transport bms._ext.fil is missing: {exc} "
                            "(reinstall the package: pip install -e .)") from exc
    return fil


def library_flags(path: str | Path, role: Role | str = Role.BMS) -> int:
    """The ``flags`` of a library's api table (``BMS_FIL_FLAG_GLOBALS`` = 1: one instance per process),
    read without creating an instance."""
    from ctypes import CDLL, POINTER, Structure, c_char_p, c_uint32

    class _Head(Structure):
        _fields_ = [("abi_version", c_uint32), ("flags", c_uint32), ("roles", c_uint32), ("reserved", c_uint32),
                    ("name", c_char_p), ("version", c_char_p)]

    try:
        get_api = CDLL(str(Path(path).resolve())).bms_fil_get_api
    except (OSError, AttributeError):
        return 0  # opening it for real says what is wrong (FirmwareAbiError)
    get_api.restype, get_api.argtypes = POINTER(_Head), [c_uint32]
    api = get_api(_transport().ABI_VERSION)
    return int(api.contents.flags) if api else 0


class LibraryFirmware(Firmware):
    """A firmware library in this process. ``config`` is handed to its ``create``."""

    kind = "library"

    def __init__(self, path: str | Path, role: Role | str = Role.BMS, *, config: str = "", max_frames: int = 256):
        self.path = str(Path(path).resolve())
        self.role = Role.parse(role)
        self.config = str(config)
        self.max_frames = int(max_frames)
        self.name = Path(path).name
        self._lib = None

    def open(self, layout: SlotLayout, dt_ns: int) -> None:
        if layout.role != self.role:
            raise FirmwareError(self.name, f"built for the {self.role.name} role, put into the {layout.role.name} slot")
        self.layout = layout
        lib = _transport().Library(self.path, int(self.role), layout.n_cells, layout.n_temperatures, int(dt_ns),
                                   self.config, self.max_frames)
        self._lib = lib
        self.name, self.version, self.flags = lib.name, lib.version, lib.flags
        # the slot's calls go straight to the compiled transport (no Python layer per tick)
        vars(self).update(step=lib.step, receive=lib.receive, transmit=lib.transmit, reset=lib.reset,
                          save_state=lib.save_state, restore_state=lib.restore_state)

    def last_frames(self) -> list:
        return self._lib.last_frames() if self._lib is not None else []

    def close(self) -> None:
        if self._lib is not None:
            self._lib.close()
            self._lib = None
