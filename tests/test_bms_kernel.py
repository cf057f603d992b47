"""The compiled protection kernel and its NumPy twin agree on hypothesis-drawn readings, inputs and configs."""
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from conftest import rel_close
from hypothesis import event, given, settings
from hypothesis import strategies as st

import bms
from bms import _kernels
from bms import _protection as L
from bms.config import BmsConfig
from bms.faults import Protection as P


def test_compiled_protection_kernel_is_in_use():
    if os.environ.get(_kernels.ENV_VAR, "compiled") == "numpy":
        return
    module = bms.KERNELS.protection
    assert Path(module.__file__).suffix in (".so", ".pyd"), module.__file__
    from bms.emulator import Emulator
    emu = Emulator(_small_params(), estimator=None)
    assert type(emu.bms._kernel).__module__ == bms.KERNELS.protection.__name__


def _small_params():
    return bms.load_pack().replace(pack={"n_series": 8, "n_modules": 2})


CELL_VALUES = st.one_of(st.floats(2.0, 4.5), st.sampled_from([0.0, 0.4, 2.2, 2.5, 2.8, 4.22, 4.25, 4.3, 5.0]),
                        st.just(math.nan))
TEMP_VALUES = st.one_of(st.floats(-40.0, 120.0), st.sampled_from([-50.0, -25.0, -20.0, 0.0, 55.0, 70.0, 80.0,
                                                                   200.0]))


@st.composite
def setups(draw):
    n_modules = draw(st.integers(1, 3))
    per_module = draw(st.integers(1, 3))
    ns = n_modules * draw(st.integers(1, 3))
    nt = n_modules * per_module
    deb = lambda: [draw(st.sampled_from([0.0, 0.02, 0.05, 0.1])) for _ in range(3)]  # noqa: E731
    config = BmsConfig().replace(
        protection_period_s=draw(st.sampled_from([0.01, 0.02, 0.05])),
        protection_clear_s=draw(st.sampled_from([0.0, 0.03, 0.1])),
        cell_overvoltage_debounce_s=deb(), cell_undervoltage_debounce_s=deb(), discharge_overtemp_debounce_s=deb(),
        charge_undertemp_debounce_s=deb(), overcurrent_debounce_s=deb(), current_sensor_debounce_s=deb(),
        link_mismatch_debounce_s=deb(), pack_mismatch_debounce_s=deb(), thermal_rise_debounce_s=deb(),
        stack_pressure_debounce_s=deb(), cell_imbalance_debounce_s=deb(),
        cell_voltage_sensor_debounce_s=draw(st.sampled_from([0.0, 0.03])),
        temperature_sensor_debounce_s=draw(st.sampled_from([0.0, 0.03])),
        temperature_disagreement_debounce_s=draw(st.sampled_from([0.0, 0.03])),
        sensor_stuck_debounce_s=draw(st.sampled_from([0.0, 0.03])),
        contactor_feedback_timeout_s=draw(st.sampled_from([0.01, 0.03])),
        stack_pressure_window_s=draw(st.sampled_from([0.02, 0.1])), stack_pressure_min_current_A=1.0)
    steps = []
    for _ in range(draw(st.integers(1, 12))):
        repeat = draw(st.booleans())
        steps.append(dict(
            repeat=repeat,
            cells=draw(st.lists(CELL_VALUES, min_size=ns, max_size=ns)),
            temps=draw(st.lists(TEMP_VALUES, min_size=nt, max_size=nt)),
            # K per step added to the temperatures instead (the rise-rate filter; None: new readings)
            temp_drift=draw(st.sampled_from([None, None, 0.0, 0.01, -0.03, 0.1, 5.0])),
            current=draw(st.one_of(st.floats(-800, 800), st.sampled_from([0.0, 3000.0, -3000.0, math.nan]))),
            pack_V=draw(st.floats(0.0, 5.0 * ns)), link_V=draw(st.floats(0.0, 5.0 * ns)),
            feedback=draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=3, max_size=3)),
            command=draw(st.lists(st.sampled_from([0, 1]), min_size=3, max_size=3)),
            oc_enable=draw(st.booleans()), charging=draw(st.booleans()),
            dis_ref=draw(st.floats(0.0, 500.0)), ch_ref=draw(st.floats(0.0, 200.0)),
            vcu=draw(st.sampled_from([math.inf, 0.0, 0.05, 0.2])), core=draw(st.sampled_from([math.nan, -30.0, 90.0])),
            r_ref=draw(st.sampled_from([0.0, 7.5e-4, 1e-3])), wake=draw(st.sampled_from([math.inf, 0.0, 0.1])),
            sp_soc_ok=draw(st.sampled_from([1.0, 1.0, 1.0, 0.0])), imb_soc_ok=draw(st.sampled_from([1.0, 1.0, 0.0])),
            ext=draw(st.sampled_from([0, 1, 2, 3])),
            dt=draw(st.sampled_from([0.01, 0.02, 0.05])),
            balance=draw(st.tuples(st.booleans(), st.booleans())),
            soc=draw(st.lists(st.floats(0.0, 1.0), min_size=ns, max_size=ns)),
        ))
    return ns, nt, per_module, config, steps


def _build(kernels, ns, nt, per_module, config):
    state = L.ProtectionState(ns, nt, per_module, config, capacity_Ah=120.0)
    sensors = SimpleNamespace(reading=np.zeros(ns + nt + 6))
    plant = SimpleNamespace(contactor_command=np.zeros(3, dtype=np.uint8), balancing=np.zeros(ns, dtype=np.uint8))
    kernel = kernels.protection.ProtectionKernel(state, sensors, plant, SimpleNamespace(n_series=ns))
    return state, sensors, plant, kernel


@settings(max_examples=int(os.environ.get("AGREE_EXAMPLES", 150)))
@given(setups())
def test_protection_kernels_agree(compiled, twin, setup):
    ns, nt, per_module, config, steps = setup
    sides = [_build(k, ns, nt, per_module, config) for k in (compiled, twin)]
    t = 0.0
    for k, step in enumerate(steps):
        t += step["dt"]
        results = []
        for state, sensors, plant, kernel in sides:
            r = sensors.reading
            if not step["repeat"] or k == 0:
                r[:ns] = step["cells"]
                if step["temp_drift"] is None or k == 0:
                    r[ns:ns + nt] = step["temps"]
                else:
                    r[ns:ns + nt] += step["temp_drift"]
                r[ns + nt] = step["current"]
            r[ns + nt + 1], r[ns + nt + 2] = step["pack_V"], step["link_V"]
            r[ns + nt + 3:] = step["feedback"]
            plant.contactor_command[:] = step["command"]
            inp = state.inp
            inp[L.IN_OC_ENABLE], inp[L.IN_CHARGING] = step["oc_enable"], step["charging"]
            inp[L.IN_DIS_REF], inp[L.IN_CH_REF] = step["dis_ref"], step["ch_ref"]
            inp[L.IN_VCU_DEADLINE] = step["vcu"]
            inp[L.IN_CORE_MAX] = inp[L.IN_CORE_MIN] = step["core"]
            inp[L.IN_R_REF], inp[L.IN_WAKE] = step["r_ref"], step["wake"]
            inp[L.IN_SP_SOC_OK], inp[L.IN_IMB_SOC_OK] = step["sp_soc_ok"], step["imb_soc_ok"]
            state.ext[P.COMM_FAULT] = step["ext"]
            state.group_soc[:] = step["soc"]
            events = kernel.tick(t, step["dt"])
            bleeding = kernel.balance(step["balance"][0], step["balance"][1], 0.01, 0.005)
            results.append((events, bleeding))
        assert results[0] == results[1], (k, results)
        a, b = sides[0][0].arrays(), sides[1][0].arrays()
        for name in set(a) - {"scratch"}:  # the compiled kernel's sort buffer
            if a[name].dtype == np.uint8:
                assert np.array_equal(a[name], b[name]), (k, name, a[name], b[name])
            else:
                assert rel_close(np.nan_to_num(a[name], nan=-7.0, posinf=1e300, neginf=-1e300),
                                 np.nan_to_num(b[name], nan=-7.0, posinf=1e300, neginf=-1e300), atol=1e-9), \
                    (k, name, a[name], b[name])
        assert np.array_equal(sides[0][2].balancing, sides[1][2].balancing)
    state = sides[0][0]
    event(f"stack pressure judged: {bool((state.ratio != 1.0).any())}")
    event(f"highest level: {int(state.level.max())}")


def _thermal_event_levels(kernels, temperature_of_sensor_1, seconds=12.0, dt=0.01):
    """The THERMAL_EVENT level over time of an 8-group pack at rest whose sensor 1 reads
    ``temperature_of_sensor_1(t)`` while the other three read 20 degC."""
    state, sensors, plant, kernel = _build(kernels, 8, 4, 2, BmsConfig())
    r = sensors.reading
    r[:8] = 3.7
    r[8:12] = 20.0
    r[12] = 0.0
    r[13] = r[14] = 8 * 3.7
    levels, t = [], 0.0
    while t < seconds:
        t += dt
        r[9] = temperature_of_sensor_1(t)
        kernel.tick(t, dt)
        levels.append((round(t, 3), int(state.level[P.THERMAL_EVENT])))
    return levels


def test_a_sensor_stuck_at_a_step_is_no_thermal_event_but_a_fast_rise_is(compiled, twin):
    for kernels in (compiled, twin):
        # a stuck sensor: 20 degC, then 11.3 K higher from one sample to the next (found by a sweep: a pack
        # at 13.7 degC with a sensor stuck at 25 degC latched THERMAL_EVENT at EMERGENCY and stopped the drive)
        stuck = _thermal_event_levels(kernels, lambda t: 20.0 if t < 1.0 else 31.3)
        assert max(level for _, level in stuck) == 0, kernels
        # heat: 3 K/s from 1 s on (above the 2 K/s emergency threshold) reaches EMERGENCY after the
        # 2 s filter and the 2 s debounce
        rising = _thermal_event_levels(kernels, lambda t: 20.0 + 3.0 * max(0.0, t - 1.0))
        first = next(t for t, level in rising if level == 3)
        assert 3.0 < first < 8.0, (kernels, first)
