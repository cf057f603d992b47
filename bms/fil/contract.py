"""The firmware slot's I/O contract: what a firmware of each role sees and does, as plain arrays.

BMS role (the seam between the pack's hardware and its BMS firmware):
    inputs  float64[n_cells + n_temperatures + 6], the sensor layer's channels in its order:
            cell-monitor channels (V), temperature channels (degC), shunt current (A, > 0 discharging),
            pack voltage (V), DC-link voltage (V), contactor feedback main+, main-, precharge (1 closed);
            each the channel's latest sample (taken on its own period, at the first tick on or after it
            was due; held in between)
    outputs contactor commands main+, main-, precharge (1 close), balancing switches per group (1 bleed)
VCU / charger role:
    inputs  float64[6]: demand mode (0 rest, 1 power, 2 current, 3 charge), demand value (W or A),
            the inverter's DC-link voltage (V), vehicle speed (m/s), the charger's offer (V, A)
    outputs float64[1]: the load current the inverter draws (> 0) or the charger feeds (< 0), A
Both roles receive and send CAN frames. Indices match ``bms_fil.h`` (``BMS_IN_*``, ``VCU_IN_*``).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from .._layout import CONTACTOR_NAMES
from ..errors import InputError

__all__ = ["Role", "SlotLayout", "Channel", "ABI_VERSION", "MAX_FRAMES", "DEMAND_MODES", "VCU_INPUTS",
           "VCU_OUTPUTS", "bms_layout", "vcu_layout", "contract_table"]

ABI_VERSION = 1           # bms_fil.h: BMS_FIL_ABI_VERSION
MAX_FRAMES = 256          # frames per tick and direction (bms_fil_setup.max_frames)
DEMAND_MODES = {"rest": 0, "power": 1, "current": 2, "charge": 3}

# VCU role indices (bms_fil.h VCU_IN_* / VCU_OUT_*)
VCU_IN_DEMAND_MODE, VCU_IN_DEMAND_VALUE, VCU_IN_LINK_V, VCU_IN_SPEED_MPS, VCU_IN_CHARGER_MAX_V, \
    VCU_IN_CHARGER_MAX_A = range(6)
VCU_OUT_LOAD_CURRENT_A = 0


class Role(enum.IntEnum):
    BMS = 1
    VCU = 2

    @classmethod
    def parse(cls, value) -> Role:
        if isinstance(value, Role):
            return value
        try:
            return cls[str(value).upper()] if isinstance(value, str) else cls(value)
        except (KeyError, ValueError):
            raise InputError("role", "'bms' or 'vcu'", value) from None


@dataclass(frozen=True)
class Channel:
    """One entry of the contract: name, unit, how many, valid range (outputs: checked every tick)."""
    name: str
    unit: str
    count: int
    low: float
    high: float
    sampled: str          # when the value is taken (inputs) or acts (outputs)
    integer: bool = False  # outputs: only whole values are valid (switches, modes)


# sample instants: the sensor layer's periods (SensorParams) in the default preset
_CELL = "latest sample, every cell_voltage_period_s (10 ms)"
_TEMP = "latest sample, every temperature_period_s (100 ms)"
_FAST = "latest sample, every current_period_s / pack_voltage_period_s (10 ms)"

VCU_INPUTS = (
    Channel("demand_mode", "0 rest, 1 power, 2 current, 3 charge", 1, 0, 3, "this tick's demand", True),
    Channel("demand_value", "W or A (> 0 discharging)", 1, -math.inf, math.inf, "this tick's demand"),
    Channel("link_voltage_V", "V", 1, 0, math.inf, "the inverter's measurement at the start of the tick"),
    Channel("speed_mps", "m/s", 1, -math.inf, math.inf, "this tick"),
    Channel("charger_max_voltage_V", "V (0: no charger)", 1, 0, math.inf, "this tick"),
    Channel("charger_max_current_A", "A", 1, 0, math.inf, "this tick"),
)
VCU_OUTPUTS = (Channel("load_current_A", "A (> 0 drawn, < 0 fed in)", 1, -5000.0, 5000.0,
                       "acts from t to t + dt"),)


@dataclass(frozen=True)
class SlotLayout:
    """The array layout of one slot: what ``bms_fil_setup`` tells a C firmware."""
    role: Role
    n_cells: int = 0
    n_temperatures: int = 0
    max_frames: int = MAX_FRAMES

    @property
    def inputs(self) -> tuple[Channel, ...]:
        if self.role == Role.VCU:
            return VCU_INPUTS
        nc, nt = self.n_cells, self.n_temperatures
        return (Channel("cell_voltage_V", "V", nc, 0.0, 5.0, _CELL),
                Channel("temperature_C", "degC", nt, -50.0, 200.0, _TEMP),
                Channel("current_A", "A (> 0 discharging)", 1, -3000.0, 3000.0, _FAST),
                Channel("pack_voltage_V", "V", 1, 0.0, math.inf, _FAST),
                Channel("link_voltage_V", "V", 1, 0.0, math.inf, _FAST),
                Channel("contactor_feedback", "1 closed, 0 open (" + ", ".join(CONTACTOR_NAMES) + ")", 3, 0, 1,
                        "latest sample, every current_period_s (10 ms)", True))

    @property
    def outputs(self) -> tuple[Channel, ...]:
        if self.role == Role.VCU:
            return VCU_OUTPUTS
        return (Channel("contactor_command", "1 close, 0 open (" + ", ".join(CONTACTOR_NAMES) + ")", 3, 0, 1,
                        "acts from t to t + dt", True),
                Channel("balancing", "1 bleed, 0 off, per group", self.n_cells, 0, 1, "acts from t to t + dt",
                        True))

    @property
    def n_inputs(self) -> int:
        return sum(c.count for c in self.inputs)

    @property
    def n_outputs(self) -> int:
        return sum(c.count for c in self.outputs)

    def output_names(self) -> list[str]:
        """One name per output index (``contactor_command[main_positive]``, ``balancing[17]`` …)."""
        return _names(self.outputs)

    def input_names(self) -> list[str]:
        """One name per input index (``cell_voltage_V[0]`` … ``contactor_feedback[precharge]``)."""
        return _names(self.inputs)


def _names(channels: tuple[Channel, ...]) -> list[str]:
    names = []
    for ch in channels:
        if ch.count == 1:
            names.append(ch.name)
        elif ch.name.startswith("contactor_"):
            names += [f"{ch.name}[{n}]" for n in CONTACTOR_NAMES]
        else:
            names += [f"{ch.name}[{i}]" for i in range(ch.count)]
    return names


def bms_layout(n_cells: int, n_temperatures: int) -> SlotLayout:
    return SlotLayout(Role.BMS, int(n_cells), int(n_temperatures))


def vcu_layout() -> SlotLayout:
    return SlotLayout(Role.VCU)


def contract_table(n_cells: int = 192, n_temperatures: int = 24) -> str:
    """The I/O contract as a Markdown table (the README's)."""
    rows = ["| role | direction | index | name | unit | sample instant |", "|---|---|---|---|---|---|"]
    for layout in (bms_layout(n_cells, n_temperatures), vcu_layout()):
        for direction, channels in (("in", layout.inputs), ("out", layout.outputs)):
            index = 0
            for ch in channels:
                span = f"{index}" if ch.count == 1 else f"{index}..{index + ch.count - 1}"
                rows.append(f"| {layout.role.name} | {direction} | {span} | `{ch.name}` | {ch.unit} | {ch.sampled} |")
                index += ch.count
    return "\n".join(rows)
