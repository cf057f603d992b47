"""A synthetic recording of the example vehicle (``vehicle.dbc`` beside this file), to try a replay on:

    python -m hil.replay.examples.synthetic drive.blf --duration 300
    bms-emu replay drive.blf --dbc "$(python -c 'import hil.replay as r; print(r.example_path("vehicle.dbc"))')" \\
        --map "$(python -c 'import hil.replay as r; print(r.example_path())')"

The vehicle is not the emulated one, on purpose: a 1,750 kg car on a 96s 150 Ah pack (400 V class, an
internal-resistance model with a linear OCV) drives the start of WLTC at 4 °C. Every frame is encoded by
cantools from the DBC, so the DBC's scaling, offsets and resolution (0.01 km/h, 0.1 A) are in the log as a
real logger would record them. Any format python-can writes: the suffix chooses (.blf, .asc, .log, .csv,
.trc, .db, .mf4, .gz).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...cycles import load_cycle
from ...vehicle import Vehicle

__all__ = ["RecordedVehicle", "synthetic_drive", "frames", "write_log", "EXAMPLE_VEHICLE"]

EXAMPLE_VEHICLE = Vehicle(mass_kg=1750.0, rotating_mass_factor=1.04, drag_area_m2=0.62, rolling_resistance=0.0085,
                          drivetrain_efficiency=0.91, regen_power_max_W=90e3, aux_power_W=600.0)


@dataclass(frozen=True)
class RecordedVehicle:
    """The recording vehicle's pack: a series string with one lumped resistance and a linear OCV."""
    series_cells: int = 96
    capacity_Ah: float = 150.0
    ocv_empty_V: float = 3.40          # per cell at SOC 0
    ocv_full_V: float = 4.10           # per cell at SOC 1
    resistance_ohm: float = 0.06       # the whole pack
    heat_capacity_J_per_K: float = 250e3
    cooling_W_per_K: float = 40.0
    wheel_radius_m: float = 0.33
    gear_ratio: float = 9.0
    vehicle: Vehicle = EXAMPLE_VEHICLE


def synthetic_drive(duration_s: float = 120.0, *, soc0: float = 0.62, temp0_C: float = 6.0, ambient_C: float = 4.0,
                    dt_s: float = 0.01, car: RecordedVehicle = RecordedVehicle()) -> dict[str, np.ndarray]:
    """The recording vehicle's signals every ``dt_s`` (current > 0 discharging), from the physics above."""
    cycle = load_cycle("wltc")
    if duration_s > cycle.duration_s:  # longer recordings drive the cycle again
        cycle = cycle.repeated(math.ceil(duration_s / cycle.repeated_duration_s(1)))
    t = np.arange(0.0, min(duration_s, cycle.duration_s), dt_s)
    speed = np.interp(t, cycle.time_s, cycle.speed_mps)
    accel = np.interp(t, cycle.time_s, np.gradient(cycle.speed_mps, cycle.time_s))
    v = car.vehicle
    force = (v.mass_kg * v.rotating_mass_factor * accel + 0.5 * 1.2 * v.drag_area_m2 * speed ** 2
             + v.rolling_resistance * v.mass_kg * 9.81 * (speed > 0.01))
    wheel_W = force * speed
    dc_W = v.dc_power_W(wheel_W)
    omega = speed / car.wheel_radius_m * car.gear_ratio
    torque = np.where(omega > 1e-3, wheel_W / np.maximum(omega, 1e-3), 0.0)
    n = t.size
    soc, temp = np.empty(n), np.empty(n)
    current, voltage = np.empty(n), np.empty(n)
    s, temp_C, r = soc0, temp0_C, car.resistance_ohm
    for k in range(n):
        ocv = car.series_cells * (car.ocv_empty_V + (car.ocv_full_V - car.ocv_empty_V) * s)
        i = (ocv - np.sqrt(ocv * ocv - 4 * r * dc_W[k])) / (2 * r)   # P = (OCV − R·I)·I
        soc[k], temp[k], current[k], voltage[k] = s, temp_C, i, ocv - r * i
        s -= i * dt_s / 3600.0 / car.capacity_Ah
        temp_C += (i * i * r - car.cooling_W_per_K * (temp_C - ambient_C)) * dt_s / car.heat_capacity_J_per_K
    return {"time_s": t, "speed_mps": speed, "dc_power_W": dc_W, "current_A": current, "voltage_V": voltage,
            "soc": soc, "temp_max_C": temp, "torque_Nm": torque, "motor_speed_rpm": omega * 60 / (2 * np.pi),
            "ambient_C": np.full(n, ambient_C), "coolant_C": np.full(n, ambient_C + 1.0),
            "cell_min_V": voltage / car.series_cells - 0.005, "cell_max_V": voltage / car.series_cells + 0.005}


# message -> (period in ticks of the drive, offset s, signal -> drive key and factor into the DBC's units)
_SCHEDULE = {
    "BMS_HV": (1, 0.001, {"PackCurrent": ("current_A", -1.0), "PackVoltage": ("voltage_V", 1.0)}),
    "INV_DcLink": (1, 0.002, {"DcCurrent": ("current_A", 1.0), "DcVoltage": ("voltage_V", 1.0)}),
    "MOTOR": (1, 0.003, {"MotorTorque": ("torque_Nm", 1.0), "MotorSpeed": ("motor_speed_rpm", 1.0)}),
    "CHASSIS": (2, 0.004, {"VehSpeed": ("speed_mps", 3.6)}),
    "BMS_STATE": (10, 0.005, {"Soc": ("soc", 100.0), "TempMax": ("temp_max_C", 1.0),
                              "CellVMin": ("cell_min_V", 1000.0), "CellVMax": ("cell_max_V", 1000.0)}),
    "ENV": (100, 0.006, {"AmbientTemp": ("ambient_C", 1.0), "CoolantTemp": ("coolant_C", 1.0)}),
}


def frames(drive: dict[str, np.ndarray], db, *, start_timestamp: float = 1_760_000_000.0, skip=()):
    """The drive's frames in time order, each encoded by cantools from ``db`` (values rounded to the
    DBC's resolution as an ECU would); ``skip`` names messages left out."""
    import can

    t = drive["time_s"]
    messages = []
    for name, (every, offset, signals) in _SCHEDULE.items():
        if name in skip:
            continue
        message = db.get_message_by_name(name)
        counter = "BmsHvCounter" in [s.name for s in message.signals]
        for k in range(0, t.size, every):
            values = {sig: _quantised(message, sig, float(drive[key][k]) * factor)
                      for sig, (key, factor) in signals.items()}
            if counter:
                values["BmsHvCounter"] = (k // every) % 16
            messages.append((t[k] + offset, message.frame_id, message.encode(values)))
    messages.sort(key=lambda m: m[0])
    for ts, frame_id, data in messages:
        yield can.Message(timestamp=start_timestamp + float(ts), arbitration_id=frame_id, is_extended_id=False,
                          data=data, channel=0)


def _quantised(message, signal_name: str, value: float) -> float:
    signal = message.get_signal_by_name(signal_name)
    scale, offset = signal.scale, signal.offset
    return round((value - offset) / scale) * scale + offset


def write_log(path: str | Path, duration_s: float = 120.0, **drive_options) -> dict[str, np.ndarray]:
    """Write a synthetic recording in the format the suffix names; returns the drive it recorded."""
    import can
    import cantools

    from .. import example_path

    db = cantools.database.load_file(str(example_path("vehicle.dbc")))
    drive = synthetic_drive(duration_s, **drive_options)
    with can.Logger(str(path)) as logger:
        for msg in frames(drive, db):
            logger.on_message_received(msg)
    return drive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.replay.examples.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="file to write: .blf, .asc, .log, .csv, .trc, .db, .mf4 (optionally .gz)")
    parser.add_argument("--duration", type=float, default=300.0,
                        help="seconds of WLTC (repeated beyond its 1,800 s) to record (default 300)")
    args = parser.parse_args(argv)
    drive = write_log(args.log, args.duration)
    print(f"{args.log}: {drive['time_s'][-1]:.0f} s of the example vehicle, SOC {drive['soc'][0]:.3f} -> "
          f"{drive['soc'][-1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
