"""Bad inputs raise the package's errors, naming the key; the sensor layer measures and fails as told."""
import math

import numpy as np
import pytest
from conftest import close_contactors, single_cell_params

from bms import Drift, InputError, Offset, OpenWire, Pack, SensorLayer, Stuck


@pytest.mark.parametrize("kernels", ["compiled", "twin"])
@pytest.mark.parametrize("args,key", [
    ((math.nan, 10.0), "dt_s"), ((0.0, 10.0), "dt_s"), ((-0.01, 10.0), "dt_s"), ((math.inf, 1.0), "dt_s"),
    ((0.01, math.nan), "load_current_A"), ((0.01, math.inf), "load_current_A"),
    ((0.01, 1.0, math.nan), "coolant_C"), ((0.01, 1.0, 25.0, -1.0), "cooling_factor"),
])
def test_bad_step_inputs_name_the_key(request, kernels, args, key):
    pack = Pack(single_cell_params(), kernels=request.getfixturevalue(kernels))
    before = pack.state.soc.copy()
    with pytest.raises(InputError, match=key):
        pack.step(*args)
    assert np.array_equal(pack.state.soc, before)  # nothing happened


def test_bad_construction_and_fault_inputs():
    with pytest.raises(InputError, match="initial_soc"):
        Pack(initial_soc=math.nan)
    with pytest.raises(InputError, match="temp_C"):
        Pack(temp_C=math.inf)
    pack = Pack(single_cell_params())
    with pytest.raises(InputError, match="pressure_MPa"):
        pack.set_stack_pressure(0.0)
    with pytest.raises(InputError, match="contactor"):
        pack.weld_contactor("main_plus")
    layer = SensorLayer(pack)
    with pytest.raises(InputError, match="sensor kind"):
        layer.inject("cell_volt", 0, OpenWire())
    with pytest.raises(InputError, match="cell_voltage index"):
        layer.inject("cell_voltage", 5, OpenWire())
    with pytest.raises(InputError, match="fault value"):
        layer.inject("current", 0, Stuck(math.nan))
    with pytest.raises(InputError, match="t_s"):
        layer.sample(math.nan)


def test_sensors_measure_the_truth_within_their_accuracy():
    pack = Pack("assb60-192s2p", initial_soc=0.5, seed=2)
    close_contactors(pack)
    layer = SensorLayer(pack, seed=3)
    sp = pack.params.sensors
    errors, current_errors = [], []
    for k in range(500):
        pack.step(0.01, 100.0)
        layer.sample(0.01 * (k + 1))
        errors.append(layer.cell_voltage_V - pack.state.group_voltage_V)
        current_errors.append(layer.current_A - pack.current_A)
    errors = np.array(errors)
    # per channel: offset within the accuracy band, noise with the configured rms
    assert np.all(np.abs(errors.mean(axis=0)) <= sp.cell_voltage_accuracy_V + 2e-4)
    assert errors.std(axis=0).mean() == pytest.approx(
        math.hypot(sp.cell_voltage_noise_V, sp.cell_voltage_lsb_V / math.sqrt(12)), rel=0.05)
    # shunt: gain error and offset are systematic, noise is not
    expected_bias = sp.current_gain_error * 100.0 + sp.current_offset_A
    assert np.mean(current_errors) == pytest.approx(expected_bias, abs=0.03)
    assert np.std(current_errors) == pytest.approx(sp.current_noise_A, rel=0.15)
    # readings are quantised to the LSB
    assert np.allclose(np.round(layer.cell_voltage_V / sp.cell_voltage_lsb_V) * sp.cell_voltage_lsb_V,
                       layer.cell_voltage_V, atol=1e-12)


def test_sensor_noise_is_standard_normal_and_fixed_by_the_seed():
    layer = SensorLayer(Pack("assb60-192s2p"), seed=5)
    blocks = []
    for _ in range(8):
        layer._refill_noise()
        blocks.append(layer.state.noise.copy())
    x = np.concatenate(blocks)
    # Kolmogorov-Smirnov distance to the normal CDF (from math.erf, not the levels' own quantile function)
    xs = np.sort(x)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(xs / math.sqrt(2.0)))
    n = xs.size
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)  # the 1 % critical value
    assert abs(x.mean()) < 4 / math.sqrt(n) and x.var() == pytest.approx(1.0, abs=0.02)
    assert np.mean(x ** 4) == pytest.approx(3.0, abs=0.1)  # Gaussian tails, not a uniform's
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(0.0, abs=4 / math.sqrt(n))
    again = SensorLayer(Pack("assb60-192s2p"), seed=5)
    again._refill_noise()
    assert np.array_equal(again.state.noise, blocks[0])
    other = SensorLayer(Pack("assb60-192s2p"), seed=6)
    other._refill_noise()
    assert not np.array_equal(other.state.noise, blocks[0])


def test_sample_periods_are_kept():
    pack = Pack("assb60-192s2p")
    layer = SensorLayer(pack)
    counts = [layer.sample(0.01 * k) for k in range(100)]
    n_temp = pack.params.n_temperature_sensors
    every_tick = layer.state.n_channels - n_temp
    # temperatures every 100 ms, everything else every 10 ms
    assert counts[0] == layer.state.n_channels
    assert counts[1:10] == [every_tick] * 9
    assert counts[10] == layer.state.n_channels


def test_sensor_faults():
    pack = Pack("assb60-192s2p", initial_soc=0.5)
    close_contactors(pack)
    layer = SensorLayer(pack)
    layer.inject("cell_voltage", 3, OpenWire())
    layer.inject("temperature", 1, Stuck(85.0))
    layer.inject("current", 0, Drift(0.5), t_s=1.0)
    layer.inject("pack_voltage", 0, Offset(-20.0))
    layer.inject("contactor_feedback", "main_positive", Stuck(0.0))
    for k in range(301):
        pack.step(0.01, 50.0)
        layer.sample(1.0 + 0.01 * k)
    assert layer.cell_voltage_V[3] == 0.0
    assert layer.temperature_C[1] == 85.0
    assert layer.current_A - pack.current_A == pytest.approx(0.5 * 3.0 + 0.45, abs=0.5)
    assert layer.pack_voltage_V == pytest.approx(pack.pack_voltage_V - 20.0, abs=1.5)
    assert layer.contactor_feedback[0] == 0.0 and pack.contactors_closed["main_positive"]
    assert {(kind, index) for kind, index, _ in layer.faults()} == {
        ("cell_voltage", 3), ("temperature", 1), ("current", 0), ("pack_voltage", 0), ("contactor_feedback", 0)}
    layer.clear("cell_voltage", 3)
    layer.clear("temperature")
    pack.step(0.01, 50.0)
    layer.sample(5.0)
    assert layer.cell_voltage_V[3] == pytest.approx(pack.state.group_voltage_V[3], abs=0.004)
    assert abs(layer.temperature_C[1] - 25.0) < 1.5
    layer.clear()
    assert layer.faults() == []


def test_open_wire_temperature_reads_below_range():
    pack = Pack("assb60-192s2p")
    layer = SensorLayer(pack)
    layer.inject("temperature", 0, OpenWire())
    layer.sample(0.0)
    assert layer.temperature_C[0] == -50.0


def test_same_seed_same_readings():
    readings = []
    for _ in range(2):
        pack = Pack("assb60-192s2p", seed=4)
        layer = SensorLayer(pack, seed=9)
        close_contactors(pack)
        for k in range(100):
            pack.step(0.01, 80.0)
            layer.sample(0.01 * k)
        readings.append(layer.state.reading.copy())
    assert np.array_equal(*readings)
