"""What a test run is about: the firmware under test, the pack preset, the seed, where bus logs and counterexamples
go. The pytest plugin fills it from the command line; hypothesis tests and state machines read ``current()``
(they cannot take pytest fixtures)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from bms.errors import BmsError
from bms.fil.loader import KINDS, FirmwareSpec

__all__ = ["KitOptions", "current", "configure", "firmware_spec"]


@dataclass(frozen=True)
class KitOptions:
    firmware: FirmwareSpec | None = None       # None: the built-in BMS and the VCU model
    preset: str = "assb60-192s2p"
    seed: int = 0
    log_dir: Path = field(default_factory=lambda: Path("bms-emu-test-logs"))
    keep_logs: bool = False                    # keep the bus logs of passing tests too
    matrix: Path | None = None                 # a vehicle CAN-matrix map (TOML): benches speak that matrix

    def replace(self, **changes) -> KitOptions:
        return replace(self, **changes)

    @property
    def counterexample_dir(self) -> Path:
        return self.log_dir / "counterexamples"


_current = KitOptions()


def current() -> KitOptions:
    """The options of this test run (defaults outside pytest)."""
    return _current


def configure(options: KitOptions) -> None:
    global _current
    _current = options


def firmware_spec(path: str, role: str | None = None, kind: str | None = None,
                  config: str | None = None) -> FirmwareSpec:
    """A firmware from the command line: the ``[firmware]`` table of a TOML file, alone or in a scenario (every
    key, for a BMS firmware's DBC and signals), or a library (``.so``/``.dylib``/``.dll``), an FMU (``.fmu``)
    or a program to run (``role`` default ``vcu``). A ``config`` replaces a TOML file's; a ``role`` or ``kind``
    other than the file's is refused (as ``bms-emu run --firmware FILE.toml`` does)."""
    p = Path(path)
    if p.suffix == ".toml":
        from hil.scenario import load_firmware
        spec = load_firmware(p)
        for flag, given, own in (("--bms-firmware-role", role, spec.role), ("--bms-firmware-kind", kind, spec.kind)):
            if given is not None and given != own:
                raise BmsError(f"{flag} {given}: {path} says {own}")
        return spec if config is None else replace(spec, config=config)
    role = role or "vcu"
    config = config or ""
    if kind is None:
        kind = "library" if p.suffix in (".so", ".dylib", ".dll") else "fmu" if p.suffix == ".fmu" else "process"
    if kind not in KINDS:
        raise BmsError(f"--bms-firmware-kind: expected one of {', '.join(KINDS)}, found {kind!r}")
    if kind != "process" and not p.exists():
        raise BmsError(f"--bms-firmware: no such file {path}")
    return FirmwareSpec(role=role, kind=kind, path=str(p.resolve()) if kind != "process" else path, config=config)


def worker_tag() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")
