"""Property tests of a VCU firmware against the emulated BMS: copy this file (and conftest.py) next to your firmware.

Run:  pytest examples/testing -p no:cacheprovider            (the example C VCU, built by conftest.py)
      pytest examples/testing -n 2                           (pytest-xdist: every bench has its own channel)
      pytest examples/testing --bms-firmware build/libvcu.so (your own library, process or FMU in the VCU slot)
A failing property prints the shrunk case and the scenario file that replays it: bms-emu run FILE --mode lockstep
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.testing import Bench, Power, PropertyFailed, Rest, Tester, check
from hil.testing import strategies as bst

# CI: derandomised and bounded, so a run is the same on every machine; drives are short (seconds, not minutes)
KIT = settings(max_examples=12, derandomize=True, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DRIVES = bst.drives(max_segments=3, kinds=("rest", "current", "power"), max_duration_s=3.0,
                    min_power_W=-60_000.0, max_power_W=120_000.0)


def test_the_vcu_closes_the_contactors_and_drives(bms_bench_factory, example_vcu):
    """A plain test with the fixtures: the bench, its simulated clock, the DBC tester."""
    bench = bms_bench_factory(firmware=example_vcu)
    took_s = bench.run_until(lambda b: b.state == "READY", timeout_s=2.0)
    assert took_s < 1.0                                   # precharge and close in simulated time
    bench.run(Power(50_000.0, 1.0))
    assert bench.emulator.pack.current_A > 50.0           # the VCU draws what the driver asks for
    status = bench.tester.expect("BMS_Status", BmsState=3, within_ms=20)
    assert status["ContactorMainPositive"] == 1


@settings(KIT)
@given(drive=DRIVES, start=bst.initial_conditions(min_temp_C=-10.0, max_temp_C=40.0))
def test_the_vcu_keeps_the_published_limits(example_vcu, drive, start):
    """For any short drive from any start, the safety properties hold (the VCU respects the limits)."""
    check(drive, start=start, firmware=example_vcu)


@settings(KIT)
@given(drive=DRIVES, start=bst.initial_conditions(), faults=bst.fault_timelines(
    kinds=("sensor", "coolant_loss", "can_corrupt"), max_faults=2, max_time_s=3.0))
def test_faults_open_the_contactors_in_time(example_vcu, drive, start, faults):
    """Any fault at any time: confirmed errors open the contactors within 100 ms, every FAULT has its DTC."""
    check(drive + [Rest(1.0)], start=start, faults=faults, firmware=example_vcu)


def test_the_seeded_bug_is_found_and_shrunk(buggy_vcu):
    """The VCU with the seeded bug breaks the charge limit in cold regeneration: the property finds it, shrinks
    it to one short regeneration segment (0.1 s), and writes a scenario that replays it. (With drives of a few
    seconds hypothesis spends most of its time shrinking: about 35 s of CPU here.)"""
    found: list[PropertyFailed] = []

    @settings(KIT, max_examples=40)
    @given(drive=bst.drives(max_segments=2, kinds=("rest", "power"), max_duration_s=1.0, min_power_W=-60_000.0,
                            max_power_W=60_000.0),
           start=bst.initial_conditions(min_temp_C=-5.0, max_temp_C=10.0))
    def prop(drive, start):
        try:
            check(drive, start=start, firmware=buggy_vcu)
        except PropertyFailed as exc:
            found.append((drive, exc))
            raise

    with pytest.raises(PropertyFailed):
        prop()
    drive, shrunk = found[-1]                # hypothesis runs the shrunk example last
    assert "charge limit" in str(shrunk) or "charging at" in str(shrunk)   # over the limit, or charging below 0 degC
    assert len(drive) == 1 and drive[0].duration_s <= 0.5 and drive[0].power_W < 0   # one short regeneration
    assert shrunk.scenario_path is not None and shrunk.scenario_path.exists()


class TestVcuStateMachine:
    """The stateful suite: drives, charges, faults and waits in any order against the example VCU."""

    def test_machine(self, example_vcu):
        from hypothesis.stateful import run_state_machine_as_test

        from hil.testing import BmsMachine
        machine = BmsMachine.for_firmware(example_vcu)
        run_state_machine_as_test(machine, settings=settings(KIT, max_examples=3, stateful_step_count=4))


@settings(KIT, max_examples=4)
@given(frames=st.lists(bst.malformed_frames(), min_size=1, max_size=6))
def test_frames_the_bms_must_ignore(frames):
    """Malformed frames on the bus are counted and ignored: the BMS stays READY with the VCU talking."""
    with Bench(seed=0) as bench:
        tester = Tester(bench)
        bench.advance(1.0)
        for frame in frames:
            tester.send_frame(frame)
        bench.advance(0.2)
        assert bench.state == "READY"
        c = bench.node.counters
        ignored = sum(c[k] for k in ("unknown_id", "not_for_bms", "wrong_dlc", "error_frames", "remote_frames"))
        assert ignored >= len(frames)
