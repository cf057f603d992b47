"""What a report says about the run's inputs and the software that ran it."""
from __future__ import annotations

import functools

DISTRIBUTION = "assb-bms-emulator"

__all__ = ["package_version", "versions", "scenario_inputs", "describe_step", "DISTRIBUTION"]


@functools.lru_cache(maxsize=1)  # read from the installed metadata once per process (each sweep member asks)
def package_version() -> str:
    """The installed distribution's version (the package's own ``__version__`` where it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from bms import __version__
        return __version__


def versions() -> str:
    """``bms-emu --version``: this package, the libraries that shape its results, and the kernel build."""
    import can
    import cantools
    import numpy

    from bms import KERNELS

    kernels = KERNELS.name if KERNELS.name == "numpy" else f"{KERNELS.name}, {KERNELS.isa}"
    return (f"bms-emu {package_version()} (kernels: {kernels}; python-can {can.__version__}, "
            f"cantools {cantools.__version__}, numpy {numpy.__version__})")


def describe_step(step) -> str:
    """One step in a few words: ``drive wltc x3``, ``rest 600 s``, ``charge dcfc to 0.8``."""
    o = step.options
    if step.kind == "drive":
        repeat = o.get("repeat", 1)
        return f"drive {o['cycle']}" + (f" x{repeat}" if repeat != 1 else "")
    if step.kind == "charge":
        return f"charge {o.get('method', 'cccv')} to {o['target_soc']:g}"
    if step.kind == "profile":
        return f"profile of {o.get('quantity', '?')}"
    value = {"current": ("current_A", "A"), "power": ("power_W", "W")}.get(step.kind)
    amount = f" {o[value[0]]:g} {value[1]}" if value and value[0] in o else ""
    return f"{step.kind}{amount} for {o['duration_s']:g} s" if "duration_s" in o else step.kind


def scenario_inputs(scenario, *, mode: str, max_sim_s: float | None = None) -> dict:
    """The inputs a reviewer needs to reproduce the run."""
    return {
        "scenario_file": scenario.source,
        "pack": scenario.pack,
        "seed": scenario.seed,
        "initial_soc": scenario.initial_soc,
        "ambient_C": scenario.ambient_C,
        "coolant_C": scenario.coolant_C if scenario.coolant_C is not None else "follows ambient",
        "dt_s": scenario.dt_s,
        "steps": "; ".join(describe_step(s) for s in scenario.steps),
        "faults": ", ".join(f.name for f in scenario.faults) or "none",
        "pack_overrides": scenario.pack_overrides or "none",
        "bms_overrides": scenario.bms_overrides or "none",
        "mode": mode,
        "max_sim_s": max_sim_s,
    }
