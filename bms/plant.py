"""The pack's truth: cell, group, contactor and DC-link state as arrays, stepped by the kernels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import _kernels
from ._layout import CONTACTOR_NAMES, LINK_VOLTAGE, N_SCALARS, PACK_CURRENT, PACK_CURRENT_PEAK, PACK_VOLTAGE
from .errors import InputError
from .params import PackParams, load_pack

_sum = np.add.reduce

__all__ = ["Pack", "PlantState"]

CELL_ARRAYS = ("soc", "v_rc1_V", "v_rc2_V", "hysteresis", "hysteresis_sign", "temp_core_C",
               "temp_surface_C", "cell_current_A", "cell_heat_W", "capacity_Ah", "r0_scale", "r1_scale",
               "r2_scale", "short_conductance_S", "arrhenius_r0", "arrhenius_r1", "arrhenius_r2",
               "arrhenius_temp_C")


class PlantState:
    """Structure of arrays over cells (index ``group * n_parallel + p``) and series groups.

    The kernels hold pointers into these arrays: change values in place (``state.soc[:] = …``),
    never rebind an attribute.

    After ``Pack.step`` every array describes one instant, the end of the step, or one interval, the step:

    - end of the step: ``soc``, ``v_rc1_V``, ``v_rc2_V``, ``hysteresis``, ``hysteresis_sign``,
      ``temp_core_C``, ``temp_surface_C``, ``contactor_closed``, the link voltage (``scalars``); and the
      terminal voltages ``group_voltage_V`` and the pack voltage (their sum), formed from that end state
      alone: OCV at the end SOC and core temperature, end hysteresis and RC voltages, R0 at the end SOC and
      temperature, carrying the step's cell current (parallel cells: the common voltage at which they
      deliver that total);
    - over the step: ``cell_current_A`` (held constant through the step), ``cell_heat_W`` (its mean) and
      the string current (mean; ``scalars`` also holds the largest within the step, the inrush).
    """

    if TYPE_CHECKING:  # the arrays named above are set in __init__
        def __getattr__(self, name: str) -> np.ndarray: ...

    def __init__(self, n_series: int, n_parallel: int):
        n = n_series * n_parallel
        for name in CELL_ARRAYS:
            setattr(self, name, np.zeros(n))
        self.arrhenius_temp_C[:] = np.nan  # forces the first refresh
        self.group_voltage_V = np.zeros(n_series)
        self.balancing = np.zeros(n_series, dtype=np.uint8)
        self.scalars = np.zeros(N_SCALARS)
        self.contactor_command = np.zeros(3, dtype=np.uint8)
        self.contactor_welded = np.zeros(3, dtype=np.uint8)
        self.contactor_closed = np.zeros(3, dtype=np.uint8)

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(vars(self))

    def copy_from(self, other: PlantState) -> None:
        for name, array in other.arrays().items():
            getattr(self, name)[...] = array


class Pack:
    """The physical pack (truth): 2-RC + hysteresis cells in parallel groups, thermal, contactors.

    ``seed`` is an int or a ``numpy.random.Generator``; it draws the cell-to-cell spread.
    """

    def __init__(self, params: PackParams | str = "assb60-192s2p", *, initial_soc: float = 0.5,
                 temp_C: float = 25.0, seed: int | np.random.Generator | None = 0, kernels=None):
        self.params = params = load_pack(params) if isinstance(params, str) else params
        if not (np.isfinite(initial_soc) and 0.0 <= initial_soc <= 1.0):
            raise InputError("initial_soc", "a number in [0, 1]", initial_soc)
        if not (np.isfinite(temp_C) and -60.0 < temp_C < 120.0):
            raise InputError("temp_C", "a finite temperature in (-60, 120) degC", temp_C)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        cell, spread, n = params.cell, params.spread, params.n_cells
        self.state = s = PlantState(params.n_series, params.n_parallel)
        s.capacity_Ah[:] = cell.capacity_Ah * np.maximum(1.0 + spread.capacity_rel_sigma * rng.standard_normal(n),
                                                         0.5)
        self._resistance_spread = np.maximum(1.0 + spread.resistance_rel_sigma * rng.standard_normal(n), 0.2)
        s.soc[:] = np.clip(initial_soc + spread.initial_soc_sigma * rng.standard_normal(n), 0.0, 1.0)
        self.stack_pressure_MPa = np.full(n, cell.stack_pressure_nominal_MPa)
        s.r0_scale[:] = self._resistance_spread
        s.r2_scale[:] = self._resistance_spread
        self._update_interfacial_scale()
        s.temp_core_C[:] = temp_C
        s.temp_surface_C[:] = temp_C
        self.kernels = kernels or _kernels.KERNELS
        self._kernel = self.kernels.plant.PlantKernel(s, cell, params)
        self._group_soc = self.kernels.bms_tick.group_soc

    # --- stepping -------------------------------------------------------------------------------
    def step(self, dt_s: float, load_current_A: float, coolant_C: float = 25.0,
             cooling_factor: float = 1.0) -> None:
        """Advance by ``dt_s``; the load draws ``load_current_A`` (> 0 discharging) from the DC link."""
        self._kernel.step(dt_s, load_current_A, coolant_C, cooling_factor)

    # --- actuators and fault inputs -------------------------------------------------------------
    def command_contactors(self, *, main_positive: bool | None = None, main_negative: bool | None = None,
                           precharge: bool | None = None) -> None:
        for index, value in enumerate((main_positive, main_negative, precharge)):
            if value is not None:
                self.state.contactor_command[index] = bool(value)

    def weld_contactor(self, name: str, welded: bool = True) -> None:
        """A welded contactor stays closed whatever it is commanded."""
        self.state.contactor_welded[self._contactor_index(name)] = bool(welded)

    def set_stack_pressure(self, pressure_MPa: float, cells=slice(None)) -> None:
        """Stack pressure (nominal from the cell parameters); the interfacial resistance follows it."""
        if not (np.isfinite(pressure_MPa) and pressure_MPa > 0):
            raise InputError("pressure_MPa", "a finite pressure > 0 MPa", pressure_MPa)
        self.stack_pressure_MPa[cells] = pressure_MPa
        self._update_interfacial_scale()

    def set_internal_short(self, cell: int, resistance_ohm: float | None) -> None:
        """An internal short across one cell (``None`` removes it)."""
        if resistance_ohm is not None and not (np.isfinite(resistance_ohm) and resistance_ohm > 0):
            raise InputError("resistance_ohm", "a finite resistance > 0 ohm or None", resistance_ohm)
        self.state.short_conductance_S[cell] = 0.0 if resistance_ohm is None else 1.0 / resistance_ohm

    def _update_interfacial_scale(self) -> None:
        cell = self.params.cell
        ratio = self.stack_pressure_MPa / cell.stack_pressure_nominal_MPa
        self.state.r1_scale[:] = self._resistance_spread * ratio ** cell.interfacial_pressure_exponent

    @staticmethod
    def _contactor_index(name: str) -> int:
        if name not in CONTACTOR_NAMES:
            raise InputError("contactor", f"one of {CONTACTOR_NAMES}", name)
        return CONTACTOR_NAMES.index(name)

    # --- readings of the truth ------------------------------------------------------------------
    @property
    def link_voltage_V(self) -> float:
        """DC-link capacitor voltage at the end of the last step."""
        return float(self.state.scalars[LINK_VOLTAGE])

    @property
    def pack_voltage_V(self) -> float:
        """Series-string terminal voltage at the end of the last step, from the end-of-step state."""
        return float(self.state.scalars[PACK_VOLTAGE])

    @property
    def current_A(self) -> float:
        """String current averaged over the last step (> 0 discharging); the cells carry it constant."""
        return float(self.state.scalars[PACK_CURRENT])

    @property
    def peak_current_A(self) -> float:
        """Signed string current of largest magnitude within the last step (contactor inrush)."""
        return float(self.state.scalars[PACK_CURRENT_PEAK])

    @property
    def group_soc(self) -> np.ndarray:
        """Charge-weighted SOC of each series group."""
        s = self.state
        return self._group_soc(s.soc, s.capacity_Ah, self.params.n_parallel)  # compiled: bms_tick.group_soc

    @property
    def soc(self) -> float:
        """Pack SOC as the string sees it: the charge-weighted mean over groups."""
        return float(_sum(self.group_soc) / self.params.n_series)  # = .mean()

    @property
    def contactors_closed(self) -> dict[str, bool]:
        return {name: bool(v) for name, v in zip(CONTACTOR_NAMES, self.state.contactor_closed)}
