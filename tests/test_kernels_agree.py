"""The compiled kernels and their NumPy twins agree on hypothesis-drawn states, parameters and inputs."""
import os
from pathlib import Path

import numpy as np
from hypothesis import given, strategies as st

import bms
from bms import Pack, SensorLayer, load_pack
from bms import _kernels
from bms.sensors import Drift, Offset, OpenWire, Stuck

from conftest import rel_close

SCALE = {"soc": 1.0, "v_rc1_V": 1e-3, "v_rc2_V": 1e-3, "hysteresis": 1.0, "temp_core_C": 1.0,
         "temp_surface_C": 1.0, "cell_current_A": 1.0, "cell_heat_W": 1.0, "group_voltage_V": 1.0,
         "scalars": 1.0}


def test_compiled_kernels_are_in_use():
    if os.environ.get(_kernels.ENV_VAR, "compiled") == "numpy":
        assert bms.KERNEL_BACKEND == "numpy"
        return
    assert bms.KERNEL_BACKEND == "compiled"
    for module in (bms.KERNELS.plant, bms.KERNELS.sensors):
        assert Path(module.__file__).suffix in (".so", ".pyd"), module.__file__
    assert type(Pack(load_pack())._kernel).__module__ == "bms._ext.plant"


@st.composite
def pack_setups(draw):
    n_series = draw(st.integers(1, 6))
    n_parallel = draw(st.integers(1, 3))
    n_modules = draw(st.sampled_from([d for d in (1, 2, 3) if n_series % d == 0]))
    f = lambda lo, hi: draw(st.floats(lo, hi))  # noqa: E731
    params = load_pack().replace(
        pack={"n_series": n_series, "n_parallel": n_parallel, "n_modules": n_modules,
              "link_capacitance_F": f(1e-4, 1e-2), "precharge_resistance_ohm": f(1.0, 100.0),
              "balancing_resistance_ohm": f(10.0, 100.0)},
        cell={"capacity_Ah": f(5.0, 100.0), "r0_ohm": f(5e-4, 5e-3), "r1_ohm": f(5e-4, 5e-3),
              "r2_ohm": f(5e-4, 5e-3), "tau1_s": f(1.0, 50.0), "tau2_s": f(50.0, 500.0),
              "r1_activation_J_per_mol": f(0.0, 60000.0), "hysteresis_rate": f(0.0, 200.0),
              "hysteresis_dynamic_V": f(0.0, 0.05), "resistance_soc_curvature": f(0.0, 2.0),
              "coulombic_efficiency": f(0.9, 1.0)},
        sensors={"temperature_sensors_per_module": draw(st.integers(1, 2))})
    n = n_series * n_parallel
    cells = lambda lo, hi: np.array(draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n)))  # noqa: E731
    state = {
        "soc": cells(-0.05, 1.05), "v_rc1_V": cells(-0.3, 0.3), "v_rc2_V": cells(-0.3, 0.3),
        "hysteresis": cells(-1.0, 1.0), "hysteresis_sign": np.array(draw(st.lists(
            st.sampled_from([-1.0, 0.0, 1.0]), min_size=n, max_size=n))),
        "temp_core_C": cells(-40.0, 80.0), "temp_surface_C": cells(-40.0, 80.0),
        "r1_scale": cells(0.5, 3.0), "short_conductance_S": cells(0.0, 1.0) * draw(st.sampled_from([0.0, 1.0])),
    }
    balancing = np.array(draw(st.lists(st.booleans(), min_size=n_series, max_size=n_series)), dtype=np.uint8)
    contactors = np.array(draw(st.lists(st.booleans(), min_size=3, max_size=3)), dtype=np.uint8)
    link_V = draw(st.floats(0.0, 5.0 * n_series))
    # currents up to 10C of the pack: beyond that the drawn cells run away thermally within a step
    c_rate_10 = 10.0 * params.cell.capacity_Ah * n_parallel
    steps = draw(st.lists(st.tuples(st.floats(1e-3, 10.0), st.floats(-c_rate_10, c_rate_10),
                                    st.floats(-40.0, 80.0), st.floats(0.0, 1.0)), min_size=1, max_size=4))
    return params, state, balancing, contactors, link_V, steps


def _build(kernels, params, state, balancing, contactors, link_V):
    pack = Pack(params, seed=7, kernels=kernels)
    for name, values in state.items():
        getattr(pack.state, name)[:] = values
    pack.state.balancing[:] = balancing
    pack.state.contactor_command[:] = contactors
    pack.state.scalars[0] = link_V
    return pack


@given(pack_setups())
def test_plant_kernels_agree(compiled, twin, setup):
    params, state, balancing, contactors, link_V, steps = setup
    a = _build(compiled, params, state, balancing, contactors, link_V)
    b = _build(twin, params, state, balancing, contactors, link_V)
    for dt, current, coolant, cooling in steps:
        a.step(dt, current, coolant, cooling)
        b.step(dt, current, coolant, cooling)
        for name, scale in SCALE.items():
            # 1e-9 relative to the array's magnitude: parallel cells at very different SOC carry large
            # opposite currents, and the small net current of a group is the difference of large ones
            mine, theirs = getattr(a.state, name), getattr(b.state, name)
            assert rel_close(mine, theirs, atol=1e-9 * max(scale, float(np.max(np.abs(theirs))))), name
        assert np.array_equal(a.state.contactor_closed, b.state.contactor_closed)


@given(pack_setups(), st.lists(st.tuples(st.sampled_from(["cell_voltage", "temperature", "current",
                                                          "pack_voltage", "contactor_feedback"]),
                                         st.sampled_from([OpenWire(), Stuck(1.5), Drift(0.01), Offset(-0.2)])),
                               max_size=4))
def test_sensor_kernels_agree(compiled, twin, setup, faults):
    params, state, balancing, contactors, link_V, steps = setup
    packs = [_build(k, params, state, balancing, contactors, link_V) for k in (compiled, twin)]
    layers = [SensorLayer(p, seed=3) for p in packs]
    for layer in layers:
        for kind, fault in faults:
            layer.inject(kind, 0, fault, t_s=0.05)
    t = 0.0
    for dt, current, coolant, cooling in steps:
        t += dt
        counts = []
        for pack, layer in zip(packs, layers):
            pack.step(dt, current, coolant, cooling)
            counts.append(layer.sample(t))
        assert counts[0] == counts[1]
        assert rel_close(layers[0].state.reading, layers[1].state.reading, atol=1e-9)
        assert np.array_equal(layers[0].state.next_sample_s, layers[1].state.next_sample_s)
