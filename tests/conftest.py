import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from bms import _kernels
from bms.params import load_pack

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# CI is a gate: the same examples every run (derandomised), so a red run is a change's doing; the default
# profile keeps drawing new ones on developers' machines, where a new counterexample is found and kept
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60,
                          derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def compiled():
    return _kernels.load("compiled")


@pytest.fixture(scope="session")
def twin():
    return _kernels.load("numpy")


@pytest.fixture(scope="session")
def pack_params():
    return load_pack("assb60-192s2p")


def single_cell_params(**cell_overrides):
    """A 1s1p pack of the assb60 cell without spread (one module, one temperature sensor)."""
    return load_pack("assb60-192s2p").replace(
        pack={"n_series": 1, "n_parallel": 1, "n_modules": 1},
        spread={"capacity_rel_sigma": 0.0, "resistance_rel_sigma": 0.0, "initial_soc_sigma": 0.0},
        sensors={"temperature_sensors_per_module": 1},
        cell=cell_overrides)


def close_contactors(pack, dt_s=0.01, steps=50):
    """Precharge and close, as a BMS would."""
    pack.command_contactors(main_negative=True, precharge=True)
    for _ in range(steps):
        pack.step(dt_s, 0.0)
    pack.command_contactors(main_positive=True, precharge=False)
    pack.step(dt_s, 0.0)


def rel_close(a, b, rtol=1e-9, atol=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.all(np.abs(a - b) <= atol + rtol * np.abs(b))
