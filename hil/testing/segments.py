"""What a test asks of the pack, one segment at a time: rest, a constant current or power, a slice of a built-in
drive cycle, a charge session. Each segment is one scenario step, so a drive a test ran is a scenario file."""
from __future__ import annotations

import math
from dataclasses import dataclass

from hil.cycles import DriveCycle, load_cycle

__all__ = ["Segment", "Rest", "Current", "Power", "CycleSlice", "Charge"]


class Segment:
    """A drive segment: ``step_options()`` is its ``[[step]]`` table (without ``kind``)."""

    kind = ""

    def step_options(self) -> dict:
        raise NotImplementedError


@dataclass(frozen=True)
class Rest(Segment):
    """Nothing drawn for ``duration_s`` (the VCU still asks for DRIVE: the contactors stay closed)."""
    duration_s: float
    kind = "rest"

    def step_options(self) -> dict:
        return {"duration_s": self.duration_s}


@dataclass(frozen=True)
class Current(Segment):
    """A constant current demand (> 0 discharging), within the published limits if the VCU respects them."""
    current_A: float
    duration_s: float
    kind = "current"

    def step_options(self) -> dict:
        return {"current_A": self.current_A, "duration_s": self.duration_s}


@dataclass(frozen=True)
class Power(Segment):
    """A constant DC power demand (> 0 discharging; < 0 is regeneration)."""
    power_W: float
    duration_s: float
    kind = "power"

    def step_options(self) -> dict:
        return {"power_W": self.power_W, "duration_s": self.duration_s}


@dataclass(frozen=True)
class CycleSlice(Segment):
    """``duration_s`` of a built-in drive cycle from ``start_s``, through the default vehicle model."""
    cycle: str
    start_s: float
    duration_s: float
    kind = "drive"

    def speed_profile(self) -> DriveCycle:
        """The slice as a speed-time cycle starting at 0 s (the cycle's 1 s grid, interpolated at the ends)."""
        import numpy as np
        full = load_cycle(self.cycle)
        end_s = min(self.start_s + self.duration_s, full.duration_s)
        inner = full.time_s[(full.time_s > self.start_s) & (full.time_s < end_s)]
        t = np.concatenate([[self.start_s], inner, [end_s]])
        v = np.interp(t, full.time_s, full.speed_mps)
        return DriveCycle(f"{self.cycle}[{self.start_s:g}:{end_s:g}]", t - self.start_s, v)

    def csv_name(self) -> str:
        return f"{self.cycle}_{_tag(self.start_s)}_{_tag(self.duration_s)}.csv"

    def csv_text(self) -> str:
        c = self.speed_profile()
        return "time_s,speed_mps\n" + "".join(f"{t!r},{v!r}\n" for t, v in zip(c.time_s.tolist(), c.speed_mps.tolist()))

    def step_options(self) -> dict:
        return {"cycle": self.csv_name()}


@dataclass(frozen=True)
class Charge(Segment):
    """A charge session (``cccv`` or ``dcfc``) to ``target_soc``, at most ``max_duration_s``."""
    target_soc: float
    max_current_A: float
    max_duration_s: float
    method: str = "cccv"
    kind = "charge"

    def step_options(self) -> dict:
        return {"method": self.method, "target_soc": self.target_soc, "max_current_A": self.max_current_A,
                "max_duration_s": self.max_duration_s}


def _tag(seconds: float) -> str:
    return f"{seconds:.2f}".replace(".", "p") if math.isfinite(seconds) else "inf"
