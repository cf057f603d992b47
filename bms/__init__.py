"""The emulated pack and its BMS: parameters, plant (truth), sensors, BMS logic; compiled kernels with NumPy twins."""
from ._kernels import KERNELS
from .config import BmsConfig, load_config
from .controller import Bms, BmsState, Limits, StateRequest
from .emulator import Emulator
from .errors import BmsError, InputError, KernelBuildError, ParameterError
from .estimators import EstimatorTuning, PackEstimator, SopLimits
from .faults import Dtc, Event, FaultLevel, Protection
from .params import CellParams, PackParams, SensorParams, SpreadParams, load_cell, load_pack, preset_names, save_toml
from .plant import Pack, PlantState
from .sensors import Drift, Offset, OpenWire, SensorLayer, Stuck

__version__ = "0.1.0"
KERNEL_BACKEND = KERNELS.name

__all__ = [
    "BmsError", "InputError", "KernelBuildError", "ParameterError",
    "CellParams", "PackParams", "SensorParams", "SpreadParams", "load_cell", "load_pack", "preset_names",
    "save_toml", "Pack", "PlantState", "SensorLayer", "OpenWire", "Stuck", "Drift", "Offset",
    "BmsConfig", "load_config", "Bms", "BmsState", "StateRequest", "FaultLevel", "Limits", "Protection", "Dtc",
    "Event", "Emulator", "KERNEL_BACKEND", "__version__",
]
__all__ += ["PackEstimator", "SopLimits", "EstimatorTuning"]
