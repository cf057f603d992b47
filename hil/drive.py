"""A headless drive of the pack model: precharge, close, follow a drive cycle, summarise.

The BMS is not in this loop yet: the load follows the vehicle's power demand directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, asdict

import numpy as np

from bms import Pack, SensorLayer
from bms.params import PackParams

from .cycles import DriveCycle
from .vehicle import Vehicle, power_profile

__all__ = ["DriveSummary", "precharge_and_close", "drive"]


@dataclass
class DriveSummary:
    cycle: str
    simulated_s: float
    wall_s: float
    realtime_factor: float
    distance_km: float
    energy_out_kWh: float
    consumption_Wh_per_km: float
    soc_start: float
    soc_end: float
    cell_voltage_min_V: float
    cell_voltage_max_V: float
    temp_core_max_C: float
    current_max_A: float
    current_min_A: float
    precharge_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def precharge_and_close(pack: Pack, dt_s: float = 0.01, fraction: float = 0.95, timeout_s: float = 2.0,
                        coolant_C: float = 25.0) -> float:
    """Close main− and precharge, wait for the link to reach ``fraction`` of the pack, close main+.

    Returns the precharge time in seconds.
    """
    pack.command_contactors(main_negative=True, precharge=True)
    t = 0.0
    while True:
        pack.step(dt_s, 0.0, coolant_C)
        t += dt_s
        if pack.link_voltage_V >= fraction * pack.pack_voltage_V:
            break
        if t > timeout_s:
            raise RuntimeError(f"precharge did not reach {fraction:.0%} within {timeout_s} s")
    pack.command_contactors(main_positive=True)
    pack.step(dt_s, 0.0, coolant_C)
    pack.command_contactors(precharge=False)
    return t


def drive(params: PackParams, cycle: DriveCycle, *, vehicle: Vehicle | None = None, dt_s: float = 0.01,
          initial_soc: float = 0.9, temp_C: float = 25.0, seed: int = 0, progress=None) -> DriveSummary:
    """Drive ``cycle`` on a fresh pack with the vehicle model; the load draws P / V_link."""
    vehicle = vehicle or Vehicle()
    rng = np.random.default_rng(seed)
    pack = Pack(params, initial_soc=initial_soc, temp_C=temp_C, seed=rng)
    sensors = SensorLayer(pack, seed=rng)
    soc_start = pack.soc
    precharge_s = precharge_and_close(pack, dt_s, coolant_C=temp_C)
    power_W, _ = power_profile(cycle, vehicle, dt_s)
    v_min, v_max, t_max, i_max, i_min, energy_J = np.inf, -np.inf, -np.inf, -np.inf, np.inf, 0.0
    start = time.perf_counter()
    state = pack.state
    for k, p_W in enumerate(power_W):
        pack.step(dt_s, p_W / max(pack.link_voltage_V, 1.0), temp_C)
        sensors.sample(k * dt_s)
        energy_J += pack.pack_voltage_V * pack.current_A * dt_s
        i = pack.current_A
        i_max, i_min = max(i_max, i), min(i_min, i)
        if k % 100 == 0:
            v_min = min(v_min, state.group_voltage_V.min())
            v_max = max(v_max, state.group_voltage_V.max())
            t_max = max(t_max, state.temp_core_C.max())
        if progress is not None and k % 1000 == 0:
            progress(k, len(power_W))
    wall = time.perf_counter() - start
    simulated = len(power_W) * dt_s
    distance = cycle.distance_km
    return DriveSummary(cycle=cycle.name, simulated_s=simulated, wall_s=wall, realtime_factor=simulated / wall,
                        distance_km=distance, energy_out_kWh=energy_J / 3.6e6,
                        consumption_Wh_per_km=energy_J / 3600.0 / distance, soc_start=soc_start,
                        soc_end=pack.soc, cell_voltage_min_V=float(v_min), cell_voltage_max_V=float(v_max),
                        temp_core_max_C=float(t_max), current_max_A=i_max, current_min_A=i_min,
                        precharge_s=precharge_s)
