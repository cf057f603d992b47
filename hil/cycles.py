"""Speed-time drive cycles: the built-in standard cycles and any user CSV, validated on load."""
from __future__ import annotations

import csv
import difflib
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bms.errors import BmsError
from bms.input_files import read_input_text

__all__ = ["DriveCycle", "CycleError", "load_cycle", "builtin_cycles"]

_BUILTIN = {"udds": "udds.csv", "hwfet": "hwfet.csv", "us06": "us06.csv", "wltc": "wltc_class3b.csv"}


class CycleError(BmsError, ValueError):
    """A drive cycle file is missing or malformed; says which file and line."""


@dataclass(frozen=True)
class DriveCycle:
    name: str
    time_s: np.ndarray
    speed_mps: np.ndarray

    @property
    def duration_s(self) -> float:
        return float(self.time_s[-1] - self.time_s[0])

    @property
    def distance_km(self) -> float:
        v, t = self.speed_mps, self.time_s
        return float(np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(t)) / 1000.0)

    def repeated_duration_s(self, times: int) -> float:
        """``repeated(times).duration_s``, without building it."""
        return self.duration_s + (times - 1) * (self.duration_s + float(self.time_s[1] - self.time_s[0]))

    def repeated(self, times: int) -> DriveCycle:
        if times == 1:
            return self
        period = self.duration_s + (self.time_s[1] - self.time_s[0])
        t = np.concatenate([self.time_s + k * period for k in range(times)])
        return DriveCycle(f"{self.name}x{times}", t, np.tile(self.speed_mps, times))


def builtin_cycles() -> dict[str, str]:
    """Name → file of the standard cycles shipped with the package."""
    return dict(_BUILTIN)


def _builtin_path(name: str):
    return resources.files("hil") / "data" / "drive-cycles" / _BUILTIN[name]


def load_cycle(name_or_path: str | Path) -> DriveCycle:
    """A built-in cycle by name (udds, hwfet, us06, wltc) or a CSV with ``time_s,speed_mps`` columns."""
    key = str(name_or_path).lower()
    if key in _BUILTIN:
        text, source = _builtin_path(key).read_text(encoding="utf-8"), f"built-in cycle {key}"
        name = key
    else:
        path = Path(name_or_path)
        if not path.exists():
            close = difflib.get_close_matches(key, list(_BUILTIN), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; built-in cycles: {', '.join(_BUILTIN)}"
            raise CycleError(f"{path}: no such drive-cycle file{hint}")
        text, source, name = read_input_text(path, what="drive-cycle file"), str(path), path.stem
    return _parse(text, source, name)


def _parse(text: str, source: str, name: str) -> DriveCycle:
    # errors say where and what shape, never quote the file (a path may name any file on the machine)
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]][:2] != ["time_s", "speed_mps"]:
        found = f"a line of {len(rows[0])} column(s) without it" if rows else "an empty file"
        head = [c.strip() for c in rows[0]][:2] if rows else []
        if len(head) == 2 and head[0] == "time_s" and re.fullmatch(r"speed_\w{1,12}", head[1]):  # a unit slip
            found = f"'time_s,{head[1]}': the speed column is speed_mps, in m/s (km/h / 3.6)"
        raise CycleError(f"{source}:1: expected the header 'time_s,speed_mps' of a drive cycle, found {found}")
    times: list[float] = []
    speeds: list[float] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            t, v = float(row[0]), float(row[1])
        except (ValueError, IndexError):
            raise CycleError(f"{source}:{line}: expected two numbers 'time_s,speed_mps', found {len(row)} "
                             "column(s) that are not both numbers") from None
        if not (math.isfinite(t) and math.isfinite(v)):
            raise CycleError(f"{source}:{line}: time and speed must be finite, found {t}, {v}")
        if v < 0:
            raise CycleError(f"{source}:{line}: speed_mps must be >= 0, found {v}")
        if times and t <= times[-1]:
            raise CycleError(f"{source}:{line}: time_s must increase, found {t} after {times[-1]}")
        times.append(t)
        speeds.append(v)
    if len(times) < 2:
        raise CycleError(f"{source}: a drive cycle needs at least two rows, found {len(times)}")
    return DriveCycle(name, np.array(times), np.array(speeds))
