"""A longitudinal vehicle model: speed trace → DC power at the pack → current at the pack's voltage."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cycles import DriveCycle

__all__ = ["Vehicle", "power_profile"]

GRAVITY_M_PER_S2 = 9.81
AIR_DENSITY_KG_PER_M3 = 1.2


@dataclass(frozen=True)
class Vehicle:
    """A mid-size 800 V electric SUV (typical values, not a specific car)."""
    mass_kg: float = 2100.0
    rotating_mass_factor: float = 1.05
    drag_area_m2: float = 0.68           # Cd · A
    rolling_resistance: float = 0.009
    drivetrain_efficiency: float = 0.90  # battery ↔ wheel, each way
    regen_power_max_W: float = 150e3
    aux_power_W: float = 1000.0

    def battery_power_W(self, speed_mps: np.ndarray, accel_mps2: np.ndarray) -> np.ndarray:
        """DC power drawn from the pack (> 0 discharging) for each speed and acceleration."""
        force = (self.mass_kg * self.rotating_mass_factor * accel_mps2
                 + 0.5 * AIR_DENSITY_KG_PER_M3 * self.drag_area_m2 * speed_mps ** 2
                 + self.rolling_resistance * self.mass_kg * GRAVITY_M_PER_S2 * (speed_mps > 0.01))
        return self.dc_power_W(force * speed_mps)

    def dc_power_W(self, mechanical_W: np.ndarray) -> np.ndarray:
        """DC power at the pack (> 0 discharging) for a mechanical power at the wheels or the motor shaft:
        losses on the way each direction, regeneration capped, auxiliaries added."""
        wheel = np.asarray(mechanical_W, dtype=float)
        battery = np.where(wheel > 0, wheel / self.drivetrain_efficiency,
                           np.maximum(wheel * self.drivetrain_efficiency, -self.regen_power_max_W))
        return battery + self.aux_power_W


def power_profile(cycle: DriveCycle, vehicle: Vehicle, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Battery power and speed sampled every ``dt_s`` over the cycle (linear interpolation)."""
    t = np.arange(cycle.time_s[0], cycle.time_s[-1], dt_s)
    speed = np.interp(t, cycle.time_s, cycle.speed_mps)
    accel = np.interp(t, cycle.time_s, np.gradient(cycle.speed_mps, cycle.time_s))
    return vehicle.battery_power_W(speed, accel), speed
