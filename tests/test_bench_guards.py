"""The benches time what they claim: bench_bms drives within both limits and refuses a run that left READY."""
import importlib.util
from pathlib import Path

import pytest

from bms import BmsState, Limits, StateRequest


def _bench(name):
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_bms = _bench("bench_bms")


def test_a_compliant_vcu_draws_within_both_limits():
    limits = Limits(discharge_current_A=300.0, charge_current_A=50.0)
    assert bench_bms.within_limits(1e4, limits) == 300.0
    assert bench_bms.within_limits(-1e4, limits) == -50.0
    assert bench_bms.within_limits(-20.0, limits) == -20.0


def test_a_timed_section_that_leaves_ready_stops_the_bench():
    emu = bench_bms._ready(None)
    t_start = emu.t_s
    bench_bms.require_ready(emu, t_start, "a section that did nothing")
    emu.bms.request(StateRequest.STANDBY, emu.t_s)
    emu.run(1.0)
    assert emu.bms.state != BmsState.READY
    with pytest.raises(SystemExit, match="did not stay in READY.*state changes"):
        bench_bms.require_ready(emu, t_start, "the timed emulator section")


@pytest.mark.parametrize("mode", ["plant_sensors_bms", "emulator"])
def test_regen_beyond_the_charge_limit_is_clipped_and_the_pack_stays_ready(mode):
    # unclipped, 1 kA of charge trips the charge-overcurrent protection and opens the pack within 1 s
    demand = [-1000.0] * 300
    assert bench_bms.loop(mode, len(demand), demand) > 0.0
