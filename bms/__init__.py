"""The emulated pack and its BMS: parameters, plant (truth), sensors; compiled kernels with NumPy twins."""
from ._kernels import KERNELS
from .errors import BmsError, InputError, KernelBuildError, ParameterError
from .params import CellParams, PackParams, SensorParams, SpreadParams, load_cell, load_pack, preset_names, save_toml
from .plant import Pack, PlantState
from .sensors import Drift, Offset, OpenWire, SensorLayer, Stuck

__version__ = "0.1.0"
KERNEL_BACKEND = KERNELS.name

__all__ = [
    "BmsError", "InputError", "KernelBuildError", "ParameterError",
    "CellParams", "PackParams", "SensorParams", "SpreadParams", "load_cell", "load_pack", "preset_names",
    "save_toml", "Pack", "PlantState", "SensorLayer", "OpenWire", "Stuck", "Drift", "Offset",
    "KERNEL_BACKEND", "__version__",
]
