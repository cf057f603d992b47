"""The scenario's steps as a per-tick load program: what the vehicle or charger asks of the pack."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cycles import DriveCycle, load_cycle
from .scenario import Scenario, Step, cycle_path
from .vehicle import Vehicle, power_profile

__all__ = ["Demand", "LoadProgram"]

DEFAULT_CHARGE_CURRENT_A = {"cccv": 60.0, "dcfc": 240.0}   # 0.5C and 2C of the 120 Ah pack
DEFAULT_CHARGE_DURATION_S = 4 * 3600.0


@dataclass(slots=True)
class Demand:
    """One tick's demand: a current or a power (> 0 discharging), or a charge session."""
    mode: str                  # "current", "power", "rest", "charge"
    value: float = 0.0         # A for current, W for power, charger current offer (A) for charge
    speed_mps: float = 0.0
    step: int = 0
    target_soc: float = 1.0


class LoadProgram:
    """Walks through the steps tick by tick. A charge step lasts until the target SOC (as the BMS reports it), its
    time limit, or the end of charge the built-in BMS declares (``bms``: its ``charge_complete``; None for a BMS
    firmware, which does not say), as a charger ends its session: a target above the SOC at which the BMS
    ends the charge (``target_soc = 1.0``) would otherwise hold the pack at rest until the time limit."""

    def __init__(self, scenario: Scenario, bms=None):
        self.scenario = scenario
        self.bms = bms
        self._charge_begun = False   # the BMS's flag was down during this step: a complete after that ends it
        self.dt_s = scenario.dt_s
        self._index = -1
        self._tick_in_step = 0
        self._profile: tuple[np.ndarray, np.ndarray] | None = None
        self._power: list[float] | None = None
        self._speed: list[float] | None = None
        self._next_step()

    @property
    def finished(self) -> bool:
        return self._index >= len(self.scenario.steps)

    @property
    def step_index(self) -> int:
        return self._index

    def planned_duration_s(self) -> float:
        """Duration of the steps with a known length (charge steps count with their time limit)."""
        total = 0.0
        for step in self.scenario.steps:
            o = step.options
            if step.kind == "drive":  # without building the repeated cycle (repeat may be absurd)
                total += self._cycle(step).repeated_duration_s(o.get("repeat", 1))
            elif step.kind == "profile":
                total += float(o["time_s"][-1])
            elif step.kind == "charge":
                total += o.get("max_duration_s", DEFAULT_CHARGE_DURATION_S)
            else:
                total += o["duration_s"]
        return total

    def _cycle(self, step: Step):
        """A built-in cycle by name, or a CSV file beside the scenario (or absolute)."""
        path = cycle_path(step.options["cycle"], self.scenario.source)
        return load_cycle(step.options["cycle"] if path is None else path)

    def _next_step(self) -> None:
        self._index += 1
        self._tick_in_step = 0
        self._charge_begun = False
        self._profile = None
        self._power = self._speed = None  # per-tick power and speed as float lists (drive, power profiles)
        if self.finished:
            return
        step = self.scenario.steps[self._index]
        o = step.options
        if step.kind == "drive":
            vehicle = Vehicle(**o.get("vehicle", {}))
            cycle = self._cycle(step).repeated(o.get("repeat", 1))
            self._profile = power_profile(cycle, vehicle, self.dt_s)
            self._ticks = len(self._profile[0])
        elif step.kind == "profile":  # a recorded demand (replay): sample-and-hold onto the tick grid
            t, values = o["time_s"], o["values"]
            grid = np.arange(0.0, t[-1], self.dt_s)
            index = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, None)
            held = values[index]
            if o["quantity"] == "speed_mps":
                self._profile = power_profile(DriveCycle("recorded", t, values), Vehicle(), self.dt_s)
            else:  # a current or power; the speed, where the replay derived the power from one
                speed = o.get("speed_mps")
                self._profile = (held, speed[index] if speed is not None else np.zeros_like(held))
            self._ticks = len(self._profile[0])
        elif step.kind == "charge":
            self._ticks = int(round(o.get("max_duration_s", DEFAULT_CHARGE_DURATION_S) / self.dt_s))
        else:
            self._ticks = int(round(o["duration_s"] / self.dt_s))
        if step.kind == "drive" or (step.kind == "profile" and o["quantity"] != "current_A"):
            assert self._profile is not None
            self._power, self._speed = (np.asarray(a, dtype=float).tolist() for a in self._profile)

    def next(self, reported_soc: float) -> Demand | None:
        """The demand for the coming tick, or None when every step is done."""
        return self.next_for(lambda: reported_soc)

    def next_for(self, soc) -> Demand | None:
        """``next`` with the reported SOC as a callable, asked only where a step ends on it (charge steps)."""
        power, speed = self._power, self._speed
        if power is not None and speed is not None and self._tick_in_step < self._ticks:  # the common case
            k = self._tick_in_step
            self._tick_in_step = k + 1
            return Demand("power", power[k], speed[k], self._index)
        while not self.finished:
            step = self.scenario.steps[self._index]
            done = self._tick_in_step >= self._ticks
            if step.kind == "charge":
                if soc() >= step.options["target_soc"]:
                    done = True
                elif self.bms is not None:
                    if not self.bms.charge_complete:
                        self._charge_begun = True
                    elif self._charge_begun:
                        done = True
            if not done:
                break
            self._next_step()
        if self.finished:
            return None
        k = self._tick_in_step
        self._tick_in_step += 1
        o = step.options
        power, speed = self._power, self._speed
        if power is not None and speed is not None:
            return Demand("power", power[k], speed[k], self._index)
        if step.kind == "profile":
            assert self._profile is not None
            return Demand("current", float(self._profile[0][k]), 0.0, self._index)
        if step.kind == "current":
            return Demand("current", o["current_A"], 0.0, self._index)
        if step.kind == "power":
            return Demand("power", o["power_W"], 0.0, self._index)
        if step.kind == "rest":
            return Demand("rest", 0.0, 0.0, self._index)
        method = o.get("method", "cccv")
        return Demand("charge", o.get("max_current_A", DEFAULT_CHARGE_CURRENT_A[method]), 0.0, self._index,
                      o["target_soc"])
