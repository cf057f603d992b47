"""The compiled kernels and their NumPy twins agree on hypothesis-drawn states, parameters and inputs."""
import os
from pathlib import Path

import numpy as np
from conftest import rel_close
from hypothesis import given
from hypothesis import strategies as st

import bms
from bms import Pack, SensorLayer, _kernels, load_pack
from bms.sensors import Drift, Offset, OpenWire, Stuck

SCALE = {"soc": 1.0, "v_rc1_V": 1e-3, "v_rc2_V": 1e-3, "hysteresis": 1.0, "temp_core_C": 1.0,
         "temp_surface_C": 1.0, "cell_current_A": 1.0, "cell_heat_W": 1.0, "group_voltage_V": 1.0,
         "scalars": 1.0}


def test_compiled_kernels_are_in_use():
    if os.environ.get(_kernels.ENV_VAR, "compiled") == "numpy":
        assert bms.KERNEL_BACKEND == "numpy"
        return
    assert bms.KERNEL_BACKEND == "compiled"
    for module in (bms.KERNELS.plant, bms.KERNELS.sensors, bms.KERNELS.frame_encoder,
                   bms.KERNELS.blf_objects):
        assert Path(module.__file__).suffix in (".so", ".pyd"), module.__file__
    assert type(Pack(load_pack())._kernel).__module__ == bms.KERNELS.plant.__name__


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


def _assert_same_bits(a, b):
    for name, array in a.state.arrays().items():
        assert np.array_equal(array, getattr(b.state, name), equal_nan=True), name


# (array, change) an outside write between steps: a test's setup, an injected fault, fade, stack pressure;
# temperature changes below and above the Arrhenius refresh step, SOC changes within and across table intervals
OUTSIDE_WRITES = [("soc", 1e-7), ("soc", 0.06), ("temp_core_C", 0.004), ("temp_core_C", -3.0),
                  ("temp_surface_C", 1.0), ("capacity_Ah", -0.5), ("r0_scale", 0.1), ("r1_scale", 0.2),
                  ("r2_scale", -0.1), ("hysteresis", 0.3), ("hysteresis_sign", -1.0), ("v_rc1_V", 0.01),
                  ("arrhenius_temp_C", float("nan")), ("arrhenius_r2", 0.05), ("short_conductance_S", 0.5)]


@given(pack_setups(), st.sampled_from(OUTSIDE_WRITES), st.integers(0, 17))
def test_plant_kernel_sees_outside_writes_between_steps(compiled, twin, setup, write, cell):
    """The compiled plant keeps what the end of a step computes (OCV, entropic slope, SOC factor, the table
    intervals) for the next step's start. After an outside write between steps it must step exactly as a
    kernel that never stepped (the same bits) and as the twin (1e-9)."""
    params, state, balancing, contactors, link_V, steps = setup
    a = _build(compiled, params, state, balancing, contactors, link_V)
    b = _build(twin, params, state, balancing, contactors, link_V)
    for pack in (a, b):
        pack.step(*steps[0])
        name, change = write
        getattr(pack.state, name)[cell % params.n_cells] += change
    fresh = Pack(params, seed=7, kernels=compiled)
    fresh.state.copy_from(a.state)
    for dt, current, coolant, cooling in steps[1:] or steps:
        for pack in (a, b, fresh):
            pack.step(dt, current, coolant, cooling)
        _assert_same_bits(a, fresh)
        for name, scale in SCALE.items():
            mine, theirs = getattr(a.state, name), getattr(b.state, name)
            assert rel_close(mine, theirs, atol=1e-9 * max(scale, float(np.max(np.abs(theirs))))), name


def test_plant_kernel_across_every_table_interval_matches_a_fresh_kernel(compiled, twin):
    """A full discharge, a rest and a charge at 1 s steps: each cell's SOC crosses every interval of the OCV
    and entropic tables, where the kept interval of the last look-up must be replaced. Every 250 s a kernel
    that never stepped takes the next step from a copy of the state: the same bits."""
    params = load_pack().replace(pack={"n_series": 4, "n_parallel": 2, "n_modules": 1})
    packs = [Pack(params, seed=3, initial_soc=0.98, temp_C=-5.0, kernels=k) for k in (compiled, twin)]
    for pack in packs:
        pack.command_contactors(main_positive=True, main_negative=True)
    socs = []
    for k in range(5000):
        current = 150.0 if k < 2750 else (0.0 if k < 2950 else -150.0)
        if k % 250 == 0:
            fresh = Pack(params, seed=3, kernels=compiled)
            fresh.state.copy_from(packs[0].state)
            fresh.step(1.0, current, 20.0)
        for pack in packs:
            pack.step(1.0, current, 20.0)
        if k % 250 == 0:
            _assert_same_bits(packs[0], fresh)
        socs.append(packs[0].state.soc.copy())
    assert np.max(socs[0]) > 0.95 and np.min(socs) < 0.05 and np.min(socs[-1]) > 0.6  # down and up again
    a, b = packs
    for name, scale in SCALE.items():
        mine, theirs = getattr(a.state, name), getattr(b.state, name)
        assert rel_close(mine, theirs, atol=1e-9 * max(scale, float(np.max(np.abs(theirs))))), name
