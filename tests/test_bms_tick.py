"""The built-in firmware's compiled per-tick call and 100 ms task (ext/bms_tick.pyx) against their twin
(bms/_twin/bms_tick.py) on drawn inputs, and the one-call tick against the firmware slot's generic step."""
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bms import Emulator, StateRequest, _kernels, load_pack
from bms import _protection as L
from bms._twin import bms_tick as twin
from bms.config import BmsConfig
from bms.errors import BmsError
from bms.firmware.types import ZERO_LIMITS, Limits
from bms.sensors import OpenWire

compiled = pytest.importorskip("bms._ext.bms_tick") if os.environ.get(_kernels.ENV_VAR) == "numpy" else \
    _kernels.load("compiled").bms_tick

finite = st.floats(-1e3, 1e3, allow_nan=False)
maybe_nan = st.one_of(finite, st.just(math.nan))


def same(a, b) -> bool:
    """Equal bit for bit as floats (NaN equals NaN), or equal."""
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_the_compiled_tick_and_task_are_in_use():
    if os.environ.get(_kernels.ENV_VAR, "compiled") == "numpy":
        pytest.skip("BMS_KERNELS=numpy: the twins run on purpose")
    emu = Emulator(seed=1)
    assert type(emu.bms._task).__module__ == _kernels.KERNELS.bms_tick.__name__
    assert type(emu.estimator._feed).__module__ == _kernels.KERNELS.bms_tick.__name__
    assert emu._fused_tick is not None
    assert emu._fused_tick.__self__.__class__.__module__ == _kernels.KERNELS.bms_tick.__name__


@given(st.lists(maybe_nan, min_size=1, max_size=40))
def test_extrema_are_numpys_reductions(values):
    a = np.array(values)
    for module in (compiled, twin):
        lo, hi = module.extrema(a)
        assert same(lo, float(np.min(a))) and same(hi, float(np.max(a)))
    assert same(compiled.extrema(a[::3]), twin.extrema(a[::3]))  # strided


@given(st.integers(1, 7), st.integers(1, 30), st.integers(0, 2 ** 32 - 1))
def test_group_soc_is_the_charge_weighted_mean_and_the_twins_bits(n_parallel, n_series, seed):
    rng = np.random.default_rng(seed)
    soc = rng.uniform(0, 1, n_series * n_parallel)
    cap = rng.uniform(50, 70, soc.size)
    got = compiled.group_soc(soc, cap, n_parallel)
    assert np.array_equal(got, twin.group_soc(soc, cap, n_parallel))
    # the numpy reduction the plant's truth was defined with (the same sums below 8 cells in parallel)
    shape = (n_series, n_parallel)
    assert np.array_equal(got, np.add.reduce((soc * cap).reshape(shape), 1) / np.add.reduce(cap.reshape(shape), 1))


@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 50))
def test_noise_blocks_agree(seed, n_words):
    from bms.sensors import gaussian_levels
    words = np.random.default_rng(seed).bit_generator.random_raw(n_words)
    a, b = np.zeros(4 * n_words), np.zeros(4 * n_words)
    compiled.fill_noise(words, gaussian_levels(), a)
    twin.fill_noise(words, gaussian_levels(), b)
    assert np.array_equal(a, b)
    assert np.array_equal(a[:4], gaussian_levels()[[int(words[0] >> (16 * k)) & 0xFFFF for k in range(4)]])


class _Recorder:
    """A tick and a slow kernel that record what they are called with."""

    def __init__(self):
        self.calls = []

    def tick(self, *args):
        self.calls.append(("tick", *args))

    def update(self):
        self.calls.append(("slow",))


@given(st.lists(st.tuples(st.sampled_from([0.01, 0.02, 0.05]), maybe_nan, st.integers(0, 7), st.booleans()),
                min_size=1, max_size=60), st.booleans())
def test_estimator_feeds_agree(steps, scheduled):
    """New-sample detection, the current zero while no current can flow, the 100 ms count."""
    logs = []
    for module in (compiled, twin):
        rec, feedback, due = _Recorder(), np.zeros(3), np.zeros(4)
        feed = module.EstimatorFeed(rec, rec, feedback, 0.7, 0.1 - 1e-9)
        if scheduled:
            feed.schedule(due, 1, 3)
        for k, (dt, current, contactors, new_sample) in enumerate(steps):
            feedback[:] = [(contactors >> b) & 1 for b in range(3)]
            if new_sample:
                due[1 + k % 2 * 2] += dt
            feed.update(dt, current, k == 0)
            rec.calls.append((feed.current_zero_A, feed.zero_n, feed.since_slow_s))
        logs.append(rec.calls)
    assert len(logs[0]) == len(logs[1]) and all(same(tuple(a), tuple(b)) for a, b in zip(*logs))


@st.composite
def slow_cases(draw):
    lithium = draw(st.booleans())
    params = load_pack().replace(cell={"lithium_metal": lithium})
    config = BmsConfig(overcurrent_limit_grace_s=draw(st.sampled_from([0.0, 0.5])))
    steps = []
    for _ in range(draw(st.integers(1, 25))):
        t_lo = draw(st.floats(-40, 70))
        steps.append(dict(
            v=sorted(draw(st.lists(st.floats(2.5, 4.3), min_size=2, max_size=2))),
            t=(t_lo, t_lo + draw(st.floats(0, 20))), n_valid=draw(st.sampled_from([0.0, 192.0])),
            t_median=draw(st.one_of(st.just(math.nan), st.floats(-40, 90))),
            current=draw(st.one_of(st.floats(-400, 800), st.just(math.nan), st.floats(-1, 1))),
            state=draw(st.integers(0, 6)), opening=draw(st.booleans()), dt=draw(st.sampled_from([0.1, 0.2])),
            est=draw(st.booleans()), soc=draw(st.lists(st.floats(0, 1), min_size=3, max_size=3)),
            sop=draw(st.lists(st.one_of(st.floats(0, 500), st.just(math.nan), st.just(-1.0)), min_size=6,
                              max_size=6)),
            derate=(draw(st.sampled_from([1.0, 0.5])), draw(st.sampled_from([1.0, 0.3])))))
    return params, config, steps


@given(slow_cases())
def test_slow_tasks_agree(case):
    """The 100 ms task's limits, SOC fallback, core temperature and publication, compiled and twin."""
    params, config, steps = case
    results = []
    for module in (compiled, twin):
        owner = SimpleNamespace(limits=ZERO_LIMITS, charge_request_A=5.0)
        out, inp, reading = np.zeros(L.N_OUT), np.zeros(L.N_IN), np.zeros(10)
        task = module.SlowTask(owner, params, config, out, inp, reading, 4, Limits, ZERO_LIMITS)
        log = []
        for k, s in enumerate(steps):
            out[[L.OUT_V_MIN, L.OUT_V_MAX]] = s["v"]
            out[L.OUT_V_SUM] = sum(s["v"]) / 2 * s["n_valid"]
            out[L.OUT_N_VALID_V] = out[L.OUT_N_VALID_T] = s["n_valid"]
            out[[L.OUT_T_MIN, L.OUT_T_MAX]] = s["t"]
            out[L.OUT_T_MEDIAN] = s["t_median"]
            out[L.OUT_SLOW_DT] = s["dt"]
            reading[4] = s["current"]
            task.derate_discharge, task.derate_charge = s["derate"]
            sop = SimpleNamespace(horizons_s=(2.0, 10.0, 30.0), discharge_current_A=np.array(s["sop"][:3]),
                                  charge_current_A=np.array(s["sop"][3:]))
            est = SimpleNamespace(group_soc=np.array(s["soc"]), core_temp_C=np.array(s["t"]) + 1.0, sop=sop) \
                if s["est"] else None
            rested = task.update(0.1 * k, est, s["state"], s["opening"])
            log.append((rested, tuple(task.capability), tuple(owner.limits), owner.charge_request_A, inp.copy(),
                        task.soc, task.soc_lo, task.soc_hi, task.core_cold_C, task.core_hot_C, task.peak_budget,
                        task.current_A))
        results.append(log)
    for a, b in zip(*results):
        assert same(a, b), (a, b)


def _drive(emu, seconds, faults=True):
    emu.run(0.4)
    emu.bms.request(StateRequest.DRIVE, emu.t_s)
    trace = []
    for k in range(int(seconds / emu.dt_s)):
        if k % 10 == 0:
            emu.bms.vcu_alive(emu.t_s)
        if faults and k == 150:
            emu.sensors.inject("cell_voltage", 3, OpenWire(), t_s=emu.t_s)
        emu.tick(emu.limited(300.0 * math.sin(0.02 * k)), coolant_C=25.0 + 0.01 * k)
        if k % 25 == 0:
            trace.append((emu.t_s, emu.pack.state.soc.copy(), emu.sensors.state.reading.copy(),
                          emu.estimator.state.x.copy(), tuple(emu.bms.limits), int(emu.bms.state)))
    return trace, [(e.t_s, e.kind, str(e.detail)) for e in emu.bms.events]


def _same_runs(a, b):
    (trace_a, events_a), (trace_b, events_b) = a, b
    assert events_a == events_b
    for x, y in zip(trace_a, trace_b, strict=True):
        assert all(same(u, v) for u, v in zip(x, y)), x[0]


def test_one_call_tick_is_the_slots_step_bit_for_bit():
    """The built-in firmware's one compiled call per tick gives the run the slot's generic path gives."""
    fused, generic = Emulator(seed=3, initial_soc=0.8), Emulator(seed=3, initial_soc=0.8)
    builtin_step = generic.firmware.step
    generic._step_firmware = lambda *args: builtin_step(*args)   # a wrapper, as a differential run puts in
    assert fused._fused_tick is not None and generic._fused_tick is None
    _same_runs(_drive(fused, 4.0), _drive(generic, 4.0))


def test_the_twin_tick_and_task_give_the_compiled_run():
    if os.environ.get(_kernels.ENV_VAR, "compiled") == "numpy":
        pytest.skip("BMS_KERNELS=numpy: no compiled kernels to compare with")
    mixed = _kernels.load("compiled")
    mixed.bms_tick = twin  # every other kernel compiled: this module's twin alone against its build
    runs = [_drive(Emulator(seed=4, initial_soc=0.6, kernels=k), 3.0) for k in (_kernels.load("compiled"), mixed)]
    _same_runs(*runs)


@settings(max_examples=25)  # an emulator per example
@given(st.sampled_from(["assb60-96s4p", "assb60-192s2p"]), st.integers(1, 7), st.integers(0, 1000),
       st.floats(-300, 300))
def test_observer_gives_the_properties_values(preset, n_parallel, seed, current_A):
    """What the recording takes in one call equals the properties and reductions it replaces, bit for bit."""
    params = load_pack(preset).replace(pack={"n_parallel": n_parallel})
    emu = Emulator(params, seed=seed, initial_soc=0.7)
    for _ in range(3):
        emu.tick(current_A)
    pack, est = emu.pack, emu.estimator
    expected = (pack.soc, est.pack_soc, float(np.add.reduce(est.group_soc_3sigma) / params.n_series),
                float(np.min(pack.state.group_voltage_V)), float(np.max(pack.state.group_voltage_V)),
                float(np.max(pack.state.temp_core_C)), float(np.max(pack.state.temp_surface_C)),
                float(np.max(est.core_temp_C)))
    assert same(emu.observe(), expected)
    for module in (compiled, twin):
        assert same(module.Observer(pack.state, n_parallel, est).values(), expected)
        assert same(module.Observer(pack.state, n_parallel).values(), (*expected[:1], math.nan, math.nan,
                                                                     *expected[3:7], math.nan))


def test_the_avx2_kernels_give_the_baseline_run_bit_for_bit():
    """The AVX2 build of the floating-point kernels (-mavx2, no FMA) is the baseline build's arithmetic, four doubles
    at a time: a drive with a sensor fault gives the same state, readings, estimates, limits and events."""
    if os.environ.get(_kernels.ENV_VAR, "compiled") == "numpy":
        pytest.skip("BMS_KERNELS=numpy: no compiled kernels to compare with")
    try:
        avx2 = _kernels.load("compiled", isa="avx2")
    except BmsError as exc:
        pytest.skip(f"no AVX2 kernels here: {exc}")
    baseline = _kernels.load("compiled", isa="baseline")
    assert avx2.plant.__name__ == "bms._ext.avx2.plant" and baseline.plant.__name__ == "bms._ext.plant"
    _same_runs(*(_drive(Emulator(seed=5, initial_soc=0.7, kernels=k), 4.0) for k in (baseline, avx2)))


def test_a_wrong_isa_choice_is_refused():
    with pytest.raises(BmsError, match=r"BMS_ISA='sse9': expected one of \('auto', 'baseline', 'avx2'\)"):
        _kernels.load("compiled", isa="sse9")
    assert _kernels.load("compiled", isa="baseline").isa == "baseline"
