"""The testing kit (hil.testing) through pytest's own pytester: inner test files use the plugin's fixtures and
the outcomes, the failure report, the leak check and the counterexample scenario are checked from outside."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from fil_support import EXAMPLE_DBC, SOURCES, compiler
from hypothesis import given, settings
from hypothesis.errors import InvalidArgument

from hil.testing import strategies as bst

pytest_plugins = ["pytester"]


def _run(pytester, source: str, *args):
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args)


def test_fixtures_pass_in_virtual_time(pytester):
    result = _run(pytester, '''
from hil.testing import Power
def test_bench(bms_bench, bms_clock, bms_tester):
    took = bms_clock.run_until(lambda: bms_bench.state == "READY", timeout_s=2.0)
    assert 0 < took < 1.0 and bms_clock.now_s == bms_bench.t_s
    bms_bench.run(Power(40_000.0, 0.5))
    limits = bms_tester.expect("BMS_Limits", within_ms=20)
    assert bms_bench.emulator.pack.current_A <= limits["DischargeCurrentLimit"]
    bms_clock.advance(0.25)
    assert abs(bms_clock.now_s - (1.0 + took - took % 0.01 + 0.25)) < 1.0
def test_two_benches_have_their_own_channels(bms_bench_factory):
    a, b = bms_bench_factory(seed=1), bms_bench_factory(seed=2)
    assert a.channel != b.channel
    a.advance(0.5)
    assert b.t_s == 0.0
''')
    result.assert_outcomes(passed=2)


def test_failure_report_shows_the_bench_and_keeps_the_log(pytester):
    result = _run(pytester, '''
def test_fails(bms_bench):
    bms_bench.inject("sensor", sensor="cell_voltage", index=3, fault="open_wire")
    bms_bench.advance(1.5)
    assert bms_bench.state == "READY"
''', "--bms-log-dir", "logs")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    for text in ("bms-emu", "t = 1.500 s simulated, BMS state FAULT", "CELL_VOLTAGE_SENSOR ERROR",
                 "UDS DTC memory: P1A", "last 32 frames", "BMS_Status"):
        assert text in out, text
    logs = list((pytester.path / "logs").rglob("*.blf"))
    assert len(logs) == 1 and logs[0].stat().st_size > 0 and str(logs[0].name) in out


def test_failure_report_of_a_property_shows_the_failing_bench(pytester):
    """A property that fails in ``check`` (the pool's bench, not a fixture's): the report shows that bench as it was
    when the property failed, as it does for the fixtures' benches, and the counterexample scenario."""
    result = _run(pytester, '''
from hil.testing import Current, check
def test_passes():
    check([Current(50.0, 0.3)])
def test_fails():
    check([Current(100.0, 0.5)], properties={"current_within_limits": {"tolerance_A": -1000.0, "grace_s": 0.0}})
''', "--bms-log-dir", "logs")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    section = out[out.index("bms-emu ----"):]
    for text in ("t = 1.500 s simulated, BMS state READY, firmware built-in", "contactors: main_positive closed",
                 "active faults: none", "faults injected: none", "counterexample scenario:"):
        assert text in section, text
    assert out.count("t = 1.500 s simulated, BMS state") == 1   # the failing test's report only


def test_failure_report_of_a_machine_subclass_invariant_shows_its_bench(pytester):
    """A ``BmsMachine`` subclass's own invariant fails: the report shows the machine's bench (it showed nothing)."""
    result = _run(pytester, '''
from hypothesis import Phase, settings
from hypothesis.stateful import invariant
from hil.testing import BmsMachine
class Mine(BmsMachine):
    @invariant()
    def never_settled(self):
        assert self.bench is None or self.bench.t_s < 0.5
Mine.TestCase.settings = settings(max_examples=2, stateful_step_count=2, derandomize=True, database=None,
                                  deadline=None, phases=[Phase.generate])   # the report, not the shrinking
TestMine = Mine.TestCase
''')
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    section = out[out.index("bms-emu ----"):]
    assert "t = 1.000 s simulated, BMS state READY" in section and "faults injected:" in section, out
    # its case is exported all the same (the kit's properties held: the replay says it passes, and why)
    scenario = re.search(r"counterexample scenario: (\S+\.toml)", section)
    assert scenario and Path(scenario.group(1)).exists(), section
    assert "the replay passes: what failed is not in the scenario" in section, section


def test_a_leaking_test_fails_at_teardown(pytester):
    result = _run(pytester, '''
import can, threading, pytest
from hil.testing import Bench
@pytest.mark.bms_leak_check
def test_check_keeps_a_ready_bench():
    from hil.testing import Power, check
    from hil.testing.pool import kept
    for _ in range(3):   # the second example's bench is kept (and reset for the third)
        check([Power(20_000.0, 0.2)], settle_s=0.5)
    assert len(kept()) == 1   # the kit's own, between examples: not a leak
def test_leaves_a_bench(bms_leak_check):
    Bench(seed=0)
KEPT = []
def test_leaves_a_bus(bms_bench):
    KEPT.append(can.Bus(interface="virtual", channel=bms_bench.channel + "-mine"))
@pytest.mark.bms_leak_check
def test_leaves_a_thread():
    threading.Thread(target=threading.Event().wait, args=(3.0,), daemon=True).start()
def test_clean(bms_bench):
    bms_bench.advance(0.1)
''')
    result.assert_outcomes(passed=5, errors=3)
    out = result.stdout.str()
    # the errors' own reports: the short summary after them repeats each message as wide as the terminal allows
    reports = out.split("short test summary info")[0]
    assert reports.count("not closed") == 1 and "VirtualBus was not properly shut down" not in out
    assert "still has an open bus" in reports and "still running" in reports


def test_disabled_with_no_option(pytester):
    result = _run(pytester, "def test_x(bms_bench):\n    pass\n", "-p", "no:bms_emu")
    result.assert_outcomes(errors=1)
    assert "fixture 'bms_bench' not found" in result.stdout.str()


def test_options_become_fixtures_and_a_module_overrides_them(pytester):
    result = _run(pytester, '''
import pytest
@pytest.fixture
def bms_seed():
    return 7
def test_options(bms_options, bms_preset, bms_seed, bms_bench):
    assert bms_options.seed == 3 and bms_preset == "assb60-96s4p" and bms_seed == 7
    assert bms_bench.scenario.seed == 7 and bms_bench.emulator.params.n_series == 96
''', "--bms-seed", "3", "--bms-preset", "assb60-96s4p")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("args, message", [
    (("--bms-firmware", "nope.so"), "--bms-firmware: no such file nope.so"),
    (("--bms-firmware", "nope.toml"), "--bms-firmware: nope.toml"),
    (("--bms-preset", "assb60-192s3p"), "--bms-preset: preset: expected a TOML file or one of"),
    (("--bms-seed", "-1"), "--bms-seed: expected an integer >= 0"),
])
def test_bad_options_are_usage_errors_before_any_test(pytester, args, message):
    """A wrong option stops the session at once with pytest's usage error (exit 4) naming the option: not an
    INTERNALERROR traceback, nor the same error again at the setup of every test."""
    result = _run(pytester, "def test_x(bms_bench):\n    pass\ndef test_y(bms_bench):\n    pass\n", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    assert message in result.stderr.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.fixture(scope="module")
def buggy_vcu(tmp_path_factory):
    import subprocess
    from pathlib import Path

    from bms.fil import header_path
    out = tmp_path_factory.mktemp("vcu") / "libvcu_bug.so"
    subprocess.run([compiler(), "-O2", "-DVCU_SEEDED_BUG", "-I", str(Path(str(header_path())).parent), "-shared",
                    "-fPIC", str(SOURCES["vcu"]), "-o", str(out)], check=True)
    return out


def test_the_seeded_bug_is_found_shrunk_and_replayed(pytester, buggy_vcu):
    """With a derandomised, bounded profile the property fails on the C VCU with the seeded bug; the shrunk drive
    is one short regeneration segment; the exported scenario fails the same way through bms-emu run."""
    result = _run(pytester, '''
from hypothesis import given, settings
from hil.testing import check
from hil.testing import strategies as bst
@settings(max_examples=10, derandomize=True, database=None, deadline=None)
@given(drive=bst.drives(max_segments=2, kinds=("rest", "power"), max_duration_s=0.5, min_power_W=-40_000.0,
                        max_power_W=40_000.0),
       start=bst.initial_conditions(min_temp_C=1.0, max_temp_C=4.0))
def test_limits(drive, start):
    check(drive, start=start, settle_s=0.8, properties={"current_within_limits": {"tolerance_A": 5.0}})
''', "--bms-firmware", str(buggy_vcu), "--bms-log-dir", "logs")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "beyond the published charge limit" in out
    falsifying = out[max(out.find("Falsifying example"), out.find("Failing test case")):]
    shrunk_drive = falsifying.split("start=")[0]   # the first report's drive (pytest may print the case twice)
    assert shrunk_drive.count("Power(") == 1 and "Rest(" not in shrunk_drive  # one segment
    # the shrunk case's file is the one named with the final failing case (files are named by content hash, and
    # the content holds this run's temporary paths: the sorted order of every example's file varies run to run)
    final = re.search(r"counterexample scenario: (\S+\.toml)", falsifying)
    assert final and Path(final.group(1)).parent == pytester.path / "logs" / "counterexamples", out
    # the failing examples met while shrinking are removed: the shrunk case alone is kept and reported
    assert sorted((pytester.path / "logs" / "counterexamples").glob("*.toml")) == [Path(final.group(1))]
    assert set(re.findall(r"counterexample scenario: (\S+\.toml)", out)) == {final.group(1)}, out
    from hil.runner import run_scenario
    from hil.scenario import load_scenario
    scenario = load_scenario(final.group(1))
    assert len(scenario.steps) <= 2 and sum(s.options.get("duration_s", 0) for s in scenario.steps) <= 2.1
    replay = run_scenario(scenario, mode="lockstep")
    failed = [v.name for v in replay.verdicts if not v.passed]
    assert failed == ["current_within_limits"]
    # the report's own replay: a bus log of the shrunk case beside its scenario, which can.LogReader opens
    log = Path(final.group(1)).with_suffix(".blf")
    assert f"bus log of the replay: {log}\n  the replay fails: current_within_limits" in out, out
    import can
    frames = list(can.LogReader(str(log)))
    assert frames and {0x100, 0x120} <= {f.arbitration_id for f in frames}


def test_the_state_machine_passes_on_the_builtin_bms(pytester):
    result = _run(pytester, '''
from hypothesis import settings
from hil.testing import BmsMachine
TestMachine = BmsMachine.TestCase
TestMachine.settings = settings(max_examples=2, stateful_step_count=4, derandomize=True, database=None,
                                deadline=None)
''')
    result.assert_outcomes(passed=1)



def test_a_machine_on_another_preset_draws_faults_of_its_own_pack():
    """A ``BmsMachine`` with ``preset`` set draws the cells and channels of its faults from that pack, not from the
    session's: on the 96s4p pack (96 groups) under a 192s2p session, a cell-voltage fault on group 150
    was drawn and refused by ``Bench.inject``, failing the test with the kit's error instead of a firmware's."""
    from hypothesis import HealthCheck
    from hypothesis.stateful import invariant, run_state_machine_as_test

    from hil.testing import BmsMachine
    from hil.testing.pool import close_all
    drawn = []

    class OnTheSmallerPack(BmsMachine):   # its only rule: inject (the others overridden by plain methods)
        preset = "assb60-96s4p"
        fault_kinds = ("sensor",)
        max_active_faults = 100

        def drive(self, segment): ...
        def charge(self, segment): ...
        def wait(self, seconds): ...
        def command(self, state, contactor, e2e): ...
        def clear(self, which): ...

        @invariant()
        def faults_within_the_pack(self):
            if self.bench is not None:
                for f in self.bench.faults.values():
                    drawn.append((f.kind, f.options))

    try:
        run_state_machine_as_test(OnTheSmallerPack, settings=settings(
            max_examples=10, stateful_step_count=10, derandomize=True, database=None, deadline=None,
            suppress_health_check=list(HealthCheck)))
    finally:
        close_all()
    indices = {o["index"] for _, o in drawn if o["sensor"] == "cell_voltage"}
    assert indices and max(indices) < 96, drawn

def test_strategies_refuse_bad_arguments_at_definition():
    for bad in (lambda: bst.drives(min_segments=3, max_segments=1), lambda: bst.segments(kinds=("walk",)),
                lambda: bst.initial_conditions(min_soc=0.9, max_soc=0.1), lambda: bst.faults(kinds=("meteor",)),
                lambda: bst.frames("NoSuchMessage"), lambda: bst.segments(min_current_A=float("nan")),
                lambda: bst.frames("VCU_Command", e2e="sometimes")):
        with pytest.raises(InvalidArgument):
            bad()


@pytest.mark.parametrize("bad, message", [
    # what no example could satisfy: refused at definition, not a FailedHealthCheck or an error at draw time
    (lambda: bst.drives(min_segments=3, max_total_s=0.2), "min_segments=3 segments of at least 0.1 s"),
    (lambda: bst.drives(max_total_s=0.05), "max_total_s=0.05"),
    (lambda: bst.segments(kinds=("cycle",), min_duration_s=2000.0, max_duration_s=3000.0), "no built-in cycle"),
    (lambda: bst.faults(kinds=("internal_short",), n_cells=0), "n_cells=0"),
    # what every example would then fail on: the bench's own ranges
    (lambda: bst.initial_conditions(min_temp_C=-300.0), "min_temp_C=-300.0"),
    (lambda: bst.initial_conditions(max_temp_C=150.0), "max_temp_C=150.0"),
    (lambda: bst.cell_spreads(max_capacity_rel_sigma=2.0), "max_capacity_rel_sigma=2.0"),
    # a string where a collection of names belongs
    (lambda: bst.segments(kinds="rest"), "kinds='rest': expected a collection of names"),
    (lambda: bst.faults(kinds="sensor"), "kinds='sensor': expected a collection of names"),
    (lambda: bst.segments(cycles="udds"), "cycles='udds': expected a collection of names"),
])
def test_strategies_refuse_what_no_example_could_satisfy_at_definition(bad, message):
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        bad()


@settings(max_examples=40, deadline=None, database=None)
@given(short=bst.segments(kinds=("cycle",), max_duration_s=0.5),
       long=bst.segments(kinds=("cycle",), min_duration_s=700.0, max_duration_s=800.0))
def test_cycle_slices_keep_the_duration_bounds(short, long):
    """A slice is as long as asked (it was at least 1 s whatever max_duration_s said, and could be longer than
    its cycle, which then ran shorter than the segment claimed)."""
    from hil.cycles import load_cycle
    assert 0.1 <= short.duration_s <= 0.5
    assert 700.0 <= long.duration_s <= 800.0
    for s in (short, long):
        assert s.start_s + s.duration_s <= load_cycle(s.cycle).duration_s + 1e-9
        assert s.speed_profile().time_s[-1] == pytest.approx(s.duration_s)


@settings(max_examples=20, deadline=None)
@given(frame=bst.frames("VCU_Command"), bad=bst.frames("VCU_Command", e2e="wrong_crc"))
def test_drawn_frames_decode_in_range_and_their_crc_is_as_asked(frame, bad):
    from bms.can import Codec
    codec = Codec()["VCU_Command"]
    assert codec.crc_ok(frame.data) and not codec.crc_ok(bad.data)
    values = codec.decode(bytes(frame.data))
    for sig in codec.dbc_message.signals:
        if sig.minimum is not None:
            assert sig.minimum - 1e-9 <= values[sig.name] <= sig.maximum + 1e-9


@settings(max_examples=15, deadline=None)
@given(drive=bst.drives(max_segments=4, max_duration_s=5.0), timeline=bst.fault_timelines(max_time_s=5.0),
       start=bst.initial_conditions(), spread=bst.cell_spreads())
def test_drawn_cases_are_valid_scenarios(drive, timeline, start, spread, tmp_path_factory):
    """Everything the strategies draw is something a scenario file accepts."""
    import tomli_w

    from hil.scenario import load_scenario
    data = {"scenario": {"name": "drawn", "initial_soc": start.soc},
            "ambient": {"temp_C": start.temp_C},
            "step": [{"kind": s.kind, **s.step_options()} for s in drive if s.kind != "drive"] +
                    [{"kind": "rest", "duration_s": 5.1}],   # every drawn fault time falls inside the steps
            "fault": [{"kind": f.kind, "at_s": f.at_s, **f.options,
                       **({"clear_at_s": f.clear_at_s} if f.clear_at_s is not None else {})} for f in timeline]}
    if spread:
        data["pack_overrides"] = {"spread": spread}
    if not data["fault"]:
        del data["fault"]
    path = tmp_path_factory.mktemp("drawn") / "drawn.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    scenario = load_scenario(path)
    assert len(scenario.faults) == len(timeline)
    assert all(0.1 - 1e-9 <= s.options.get("duration_s", 0.1) for s in scenario.steps)


def test_the_property_suite_checks_the_example_c_bms_for_real(tmp_path):
    """check() against the example C BMS firmware in the BMS slot: the recording holds what the firmware publishes
    (its limits, SOC, state, fault, decoded by its DBC), so every property checks the firmware itself. The stock
    firmware passes; the same firmware configured wrong fails the property that its error breaks."""
    from dataclasses import replace

    from hil.expectations import evaluate
    from hil.testing import Power, PropertyFailed, Rest, check
    from hil.testing.check import expectations
    spec = _c_bms_spec(tmp_path)
    bench = check([Power(30_000.0, 1.0), Rest(0.5)], firmware=spec)
    r = bench.recording()
    assert bench.state == "READY" and r.signals["current_A"].max() > 30.0
    assert np.nanmax(r.signals["discharge_limit_A"]) == 480.0 and np.nanmax(r.signals["charge_limit_A"]) == 120.0
    assert 0.45 < np.nanmin(r.signals["soc_estimated"]) < 0.55 and r.signals["state"][-1] == 3
    assert [e[1] for e in r.events if e[1].startswith("contactor:main")] == [
        "contactor:main_negative:closed", "contactor:main_positive:closed"]
    verdicts = evaluate(expectations(), r)
    assert all(v.passed and "not checked" not in v.message for v in verdicts), verdicts
    # below 0 degC the stock firmware publishes no charge limit: regeneration charges nothing
    check([Power(-30_000.0, 1.0)], firmware=spec, start=bst.InitialConditions(0.5, -5.0))
    # configured to charge down to -40 degC it allows it, and the VCU charges the cold pack
    cold = replace(spec, config="charge_min_C=-40")
    with pytest.raises(PropertyFailed, match=r"no_charge_below_0C: charging at .* coldest temperature sensor at -") \
            as failed:
        check([Power(-30_000.0, 1.0)], firmware=cold, start=bst.InitialConditions(0.5, -5.0))
    from hil.runner import run_scenario  # the runner records the firmware's word the same way: the replay fails
    from hil.scenario import load_scenario
    replay = run_scenario(load_scenario(failed.value.scenario_path), mode="lockstep")
    assert [v.name for v in replay.verdicts if not v.passed] == ["no_charge_below_0C"]
    # told the wrong capacity, its coulomb count runs away from the truth
    small = replace(spec, config="capacity_Ah=2")
    with pytest.raises(PropertyFailed, match=r"soc_within_3sigma: SOC estimate .* beyond 3 sigma"):
        check([Power(150_000.0, 3.0)], firmware=small)
    builtin = check([Power(30_000.0, 1.0), Rest(0.5)])
    assert builtin.state == "READY"


def _tap(bench) -> list:
    """Every frame on the bench's channel from now on: (time stamp, id, data), read after each tick (the node's and
    the VCU's frames both carry simulated time)."""
    import can
    bus = can.Bus(interface="virtual", channel=bench.channel, preserve_timestamps=True)
    frames: list = []

    def hook(_bench):
        while (m := bus.recv(0)) is not None:
            frames.append((m.timestamp, m.arbitration_id, bytes(m.data)))
    hook.close = bus.shutdown
    bench.tick_hooks.append(hook)
    return frames


def _c_bms_spec(tmp_path):
    import subprocess

    from bms.fil import header_path
    from bms.fil.loader import FirmwareSpec
    lib = tmp_path / "libbms.so"
    if not lib.exists():
        subprocess.run([compiler(), "-O2", "-I", str(Path(str(header_path())).parent), "-shared", "-fPIC",
                        str(SOURCES["bms"]), "-o", str(lib), "-lm"], check=True)
    return FirmwareSpec(role="bms", kind="library", path=str(lib), dbc=str(EXAMPLE_DBC), signals={
        "state": "EXB_Status.State", "discharge_limit_A": "EXB_Status.DischargeLimit",
        "charge_limit_A": "EXB_Status.ChargeLimit", "soc_pct": "EXB_Status.SOC", "fault": "EXB_Status.FaultCode"})


def test_the_kit_takes_a_bms_firmware_described_in_a_file_of_its_own(tmp_path):
    """``--bms-firmware my-bms.toml``: the firmware's [firmware] table alone (it took only whole scenarios)."""
    from hil.testing import Bench, Power, firmware_spec
    built = _c_bms_spec(tmp_path)
    (tmp_path / "my-bms.toml").write_text(
        f'[firmware]\nrole = "bms"\nkind = "library"\npath = "libbms.so"\ndbc = "{EXAMPLE_DBC}"\n'
        '[firmware.signals]\nstate = "EXB_Status.State"\ndischarge_limit_A = "EXB_Status.DischargeLimit"\n'
        'charge_limit_A = "EXB_Status.ChargeLimit"\nsoc_pct = "EXB_Status.SOC"\nfault = "EXB_Status.FaultCode"\n',
        encoding="utf-8")
    spec = firmware_spec(str(tmp_path / "my-bms.toml"))
    assert (spec.role, spec.kind, spec.path, spec.signals) == ("bms", "library", built.path, built.signals)
    with Bench(firmware=spec, channel="kit-fw-file") as bench:
        bench.run(Power(30_000.0, 2.0))
        assert bench.state == "READY" and bench.emulator.pack.current_A > 20.0


@pytest.mark.parametrize("slot", ["builtin", "c_bms"])
def test_a_restored_bench_runs_as_a_new_one(tmp_path, slot):
    """Snapshot a settled bench, run it elsewhere (a drive, a fault, a DTC), restore it, and run a drive: the
    recording (every signal, event, injection, cycle statistic), every frame on the bus and the exported scenario
    are those of a new bench settled the same way and run through the same drive."""
    import numpy as np

    from hil.testing import Bench, Current, Power, Rest
    spec = _c_bms_spec(tmp_path) if slot == "c_bms" else None
    drive = [Power(40_000.0, 1.0), Current(-40.0, 0.5), Rest(0.3)]
    with Bench(seed=3, firmware=spec, temp_C=15.0) as a, Bench(seed=3, firmware=spec, temp_C=15.0) as b:
        a.run(Rest(1.0))
        snap = a.snapshot()
        a.inject("sensor", sensor="cell_voltage", index=2, fault="open_wire")
        a.run(Power(90_000.0, 1.0))
        assert a.t_s > 1.5 and a.recording().time_s.size > 10
        a.restore(snap)
        assert a.t_s == 1.0 and not a.faults and len(a.steps) == 1
        frames_a = _tap(a)
        b.run(Rest(1.0))
        frames_b = _tap(b)
        for segment in drive:
            a.run(segment)
            b.run(segment)
        ra, rb = a.recording(), b.recording()
        assert np.array_equal(ra.time_s, rb.time_s)
        for name in ra.signals:
            assert np.array_equal(ra.signals[name], rb.signals[name], equal_nan=True), name
        assert ra.events == rb.events and ra.injections == rb.injections and ra.cycle_times == rb.cycle_times
        assert len(frames_a) > 100 and frames_a == frames_b
        assert a.scenario_toml()[0] == b.scenario_toml()[0]
        assert a.describe().split("\n", 1)[1] == b.describe().split("\n", 1)[1]


def test_a_bench_with_a_bus_log_is_not_pooled(tmp_path):
    from hil.testing import Bench
    from hil.testing.pool import ready_bench
    from hil.testing.snapshot import SnapshotError
    refused = r"can\.node\.log.*BufferedWriter cannot be restored"   # the path to the open file, named
    with Bench(log=tmp_path / "bus.blf") as bench, pytest.raises(SnapshotError, match=refused):
        bench.snapshot()
    from hil.testing.pool import STATS
    refused = STATS["not_pooled"]
    for _ in range(2):   # the second time a setup is asked for it would be kept: not with a bus log
        bench, pooled = ready_bench(0.2, log=tmp_path / "other.blf")
        assert not pooled
        bench.close()
    assert STATS["not_pooled"] == refused + 1


def test_the_machine_sends_vcu_commands_through_the_tester(tmp_path):
    """The state machine's command rule: a VCU_Command by DBC names between the VCU's own. A wrong CRC is refused
    (counted, nothing changes); a valid STANDBY request is obeyed (the contactors open, and the VCU asks for DRIVE
    again); the properties hold throughout, and the exported scenario replays both commands through bms-emu run."""
    from bms.controller import StateRequest
    from hil.testing.machine import BmsMachine
    from hil.testing.pool import close_all
    from hil.testing.strategies import InitialConditions
    machine = BmsMachine()
    try:
        machine.start(InitialConditions(), {})
        bench = machine.bench
        assert bench.state == "READY" and bench.tester is not None
        crc_errors = bench.node.counters["crc_errors"]
        machine.command(state=int(StateRequest.STANDBY), contactor=1, e2e="wrong_crc")
        assert bench.node.counters["crc_errors"] == crc_errors + 1 and bench.state == "READY"
        machine.command(state=int(StateRequest.STANDBY), contactor=1, e2e="valid")
        assert bench.state != "READY" and not bench.emulator.pack.contactors_closed["main_positive"]
        assert any(name == "state:STANDBY" for _, name, _ in bench.events)
        machine.safety_properties()
        # both are in the bench's export as [[frame]] entries, not left to the failure report
        assert machine.commands == [] and [(f.e2e, f.signals) for f in bench.frames] == [
            (e2e, {"StateRequest": int(StateRequest.STANDBY), "ContactorRequest": 1}) for e2e in ("wrong_crc", "valid")]
        bench.advance(0.5)
        _replays_the_bench(bench, tmp_path)
    finally:
        machine.teardown()
        close_all()


def _replays_the_bench(bench, folder):
    """``bms-emu run`` of the bench's exported scenario runs as the bench did: every recorded signal, the BMS's
    events and the node's frame counters (the injected frames' wrong CRC and counter jumps) are the same."""
    import numpy as np

    from hil.runner import run_scenario
    from hil.scenario import load_scenario
    path = bench.export(folder, name="replay")
    text = path.read_text()   # written as a scenario is by hand: the tables first, each step a [[step]] block
    assert text.startswith("[scenario]\n") and text.count("[[step]]") == len(bench.steps) and "= [" not in text
    result = run_scenario(load_scenario(path), mode="lockstep", plots=False)
    ours, theirs = bench.recording(), result.recording
    assert np.array_equal(ours.time_s, theirs.time_s)
    for name in ours.signals:
        assert np.array_equal(ours.signals[name], theirs.signals[name], equal_nan=True), name
    bms_events = lambda events: [e for e in events if e[1].startswith(("state:", "fault:", "dtc:"))]  # noqa: E731
    assert bms_events(ours.events) == bms_events(theirs.events) and bms_events(ours.events)
    counters = result.summary["can"]["counters"]
    for key in ("crc_errors", "counter_errors", "rx_accepted"):
        assert counters[key] == bench.node.counters[key], key
    assert [e[1] for e in theirs.events if e[1].startswith("frame:")] == [
        f"frame:frame[{n}]:VCU_Command" for n in range(len(bench.frames))]


def test_an_open_temperature_sensor_is_no_cold_cell_to_the_charge_property():
    """An open sensor reads -50 degC: the BMS marks it implausible and regenerates on its other sensors, and the
    no-charge-below-0C property looks at the coldest plausible reading (it took the -50 for a frozen cell: a false
    counterexample of the kit's state machine)."""
    from hil.properties import check_property
    from hil.testing import Bench, Power
    with Bench(seed=0, temp_C=25.0) as bench:
        bench.advance(1.0)
        bench.inject("sensor", sensor="temperature", index=0, fault="open_wire")
        bench.advance(0.5)
        assert bench.emulator.sensors.temperature_C.min() < -45.0   # the open sensor's reading
        bench.run(Power(-30_000.0, 1.0))
        r = bench.recording()
    assert r.signals["current_A"].min() < -20.0, "the pack did not regenerate: the test looks at nothing"
    assert 20.0 < np.nanmin(r.signals["temp_min_C"]) < 30.0
    passed, message, _ = check_property("no_charge_below_0C", r, {})
    assert passed, message


def test_a_current_sensor_fault_excuses_the_controlled_open_and_the_soc_bound():
    """A current sensor stuck at -128 A, then the VCU falls silent: the BMS's controlled open waits for a current it
    still reads for its ``open_delay_max_s`` (1 s), and its coulomb count follows the false reading. The kit's
    long state-machine runs reported both as counterexamples; the properties allow the open that delay while a
    current-sensor fault is injected, and do not hold the SOC estimate to its bound from such a fault on."""
    from hil.runner import run_scenario
    from hil.scenario import parse_scenario
    text = """
[scenario]
name = "stuck-current-sensor"
seed = 2
initial_soc = 0.6
mode = "lockstep"
[[step]]
kind = "power"
power_W = 30000.0
duration_s = 4.0
[[fault]]
name = "stuck"
kind = "sensor"
sensor = "current"
fault = "stuck"
value = -128.0
at_s = 1.0
[[fault]]
name = "silent"
kind = "vcu_silence"
at_s = 1.5
[[expect]]
name = "open"
kind = "property"
property = "contactors_open_on_error"
reaction_s = 0.1
[[expect]]
name = "soc"
kind = "property"
property = "soc_within_3sigma"
margin = 0.01
"""
    result = run_scenario(parse_scenario(text, "stuck-current-sensor"), mode="lockstep", plots=False)
    r = result.recording
    assert r.current_sensor_faults == [(1.0, math.inf)]
    error = next(t for t, name, _ in r.events if name == "fault:VCU_TIMEOUT:ERROR")
    opened = next(t for t, name, _ in r.events if name == "contactor:main_positive:open")
    assert 0.5 < opened - error <= 1.1, (error, opened)   # the controlled open waited for the current it reads
    verdicts = {v.name: v for v in result.verdicts}
    assert verdicts["open"].passed, verdicts["open"].message
    assert verdicts["soc"].passed and "not checked from t = 1.00 s" in verdicts["soc"].message


def test_a_bench_with_a_bms_firmware_refuses_diagnostic_faults_by_name(tmp_path):
    """A BMS firmware in the slot has no UDS server: ``isotp`` and ``uds_pending`` (which ``bst.faults`` draws by
    default) are refused when injected, saying why, not an AssertionError or a misleading ValueError mid-run."""
    from hil.testing import Bench, BenchError
    with Bench(firmware=_c_bms_spec(tmp_path), channel="kit-fw-diag") as bench:
        bench.advance(0.5)
        for kind, options in (("uds_pending", {"duration_s": 1.0}), ("isotp", {"fault": "drop_cf"})):
            with pytest.raises(BenchError, match=f"inject {kind}: .*UDS server"):
                bench.inject(kind, **options)
        assert not bench.faults
        bench.advance(0.5)
        assert bench.state == "READY"



@pytest.mark.parametrize("kind, options, message", [
    ("sensor", {"sensor": "cell_voltage", "index": 192, "fault": "stuck", "value": 3.0},
     "index: expected a cell_voltage channel 0 ... 191 of pack assb60-192s2p"),
    ("sensor", {"sensor": "cell_voltage", "fault": "drift"}, "value: missing (required for a drift fault)"),
    ("internal_short", {"cell": 3}, "resistance_ohm: missing"),
    ("internal_short", {"cell": 384, "resistance_ohm": 2.0}, "cell: expected a cell 0 ... 383"),
    ("contactor_weld", {"contactor": "main"}, "contactor: unknown contactor 'main'"),
    ("coolant_loss", {"cooling_factor": "half"}, "cooling_factor: expected a number, found 'half'"),
])
def test_a_fault_the_pack_cannot_take_is_refused_when_injected(kind, options, message):
    """``bench.inject`` checks a fault as a scenario's [[fault]] is checked, against the bench's pack: a wrong
    cell or channel, a missing or mistyped option fails at the call, naming it (it used to raise an IndexError or
    KeyError ticks later, inside the fault timeline). Nothing is injected and the bench runs on."""
    from hil.testing import Bench, BenchError
    with Bench(channel="kit-inject-checks") as bench:
        bench.advance(0.2)
        with pytest.raises(BenchError, match=re.escape(f"inject {kind}: {message}")):
            bench.inject(kind, **options)
        assert not bench.faults and not bench.timeline.pending
        name = bench.inject("sensor", sensor="cell_voltage", index=191, fault="offset", value=0.01)
        bench.advance(0.3)
        assert bench.faults[name].options["value"] == 0.01
        assert list(bench.timeline.injections) == [name]

def test_the_tester_sends_values_as_given_where_the_bits_hold_them():
    """``tester.send("VCU_Command", StateRequest=7)``: 7 is no request (a bad value the BMS must count), and it went
    out saturated to 4, SHUTDOWN, a valid request of another meaning. Now it goes out as given (as a scenario's
    [[frame]] does), and a value its bits cannot hold is refused naming the signal."""
    from hil.testing import Bench, BenchError, Tester
    with Bench(vcu="none", channel="kit-tester-raw") as bench:
        tester = Tester(bench)
        try:
            codec = tester.codec["VCU_Command"]
            data = tester.encode("VCU_Command", {"StateRequest": 7, "ContactorRequest": 0})
            assert codec.decode(data)["StateRequest"] != 4
            spec = codec.signals["StateRequest"]
            assert (int.from_bytes(data, "little") >> spec.shift) & ((1 << spec.length) - 1) == 7
            assert codec.crc_ok(data)                          # the CRC over the bytes as sent
            before = bench.node.counters["bad_values"]
            tester.send("VCU_Command", StateRequest=7, ContactorRequest=0)
            bench.advance(0.05)
            assert bench.node.counters["bad_values"] == before + 1
            with pytest.raises(BenchError, match="VCU_Command.StateRequest: 99 does not fit the signal's 4 bits"):
                tester.send("VCU_Command", StateRequest=99)
        finally:
            tester.close()


@settings(max_examples=10, deadline=None, database=None)
@given(frame=bst.frames("VCU_Command", signals={"StateRequest": 7}))
def test_a_fixed_signal_outside_the_dbc_range_is_drawn_as_given(frame):
    from bms.can import Codec
    codec = Codec()["VCU_Command"]
    spec = codec.signals["StateRequest"]
    assert (int.from_bytes(bytes(frame.data), "little") >> spec.shift) & ((1 << spec.length) - 1) == 7
    assert codec.crc_ok(frame.data)


def test_a_fixed_signal_its_bits_cannot_hold_is_refused_at_definition():
    with pytest.raises(InvalidArgument, match=r"signals\['StateRequest'\]=99: 99 does not fit the signal's 4 bits"):
        bst.frames("VCU_Command", signals={"StateRequest": 99})


def test_a_counterexample_of_a_process_firmware_given_by_a_relative_path_replays_from_anywhere(tmp_path,
                                                                                              monkeypatch):
    """``--bms-firmware build/vcu`` (a program, relative to the folder pytest runs in): the exported scenario named
    it as given, so ``bms-emu run`` found it only from that same folder (a scenario's paths are beside it)."""
    import subprocess

    from bms.fil import header_path
    from hil.scenario import load_scenario
    from hil.testing import Bench, Power, firmware_spec
    include = Path(str(header_path())).parent
    (tmp_path / "build").mkdir()
    subprocess.run([compiler(), "-O2", "-I", str(include), str(SOURCES["vcu"]),
                    str(include.parent / "c" / "bms_fil_process.c"), "-o", str(tmp_path / "build" / "vcu"), "-lm"],
                   check=True)
    monkeypatch.chdir(tmp_path)
    with Bench(firmware=firmware_spec("build/vcu", role="vcu"), channel="kit-export-process") as bench:
        bench.run(Power(10_000.0, 0.5))
        path = bench.export(tmp_path / "logs" / "counterexamples")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_scenario(path).firmware
    assert spec is not None and spec.kind == "process"
    assert Path(spec.path.split(" ")[0]) == tmp_path / "build" / "vcu"


def test_firmware_options_given_with_a_firmware_file_are_applied_or_refused(tmp_path):
    """``--bms-firmware my-bms.toml --bms-firmware-config ... --bms-firmware-kind process``: the config and the
    kind were ignored without a word; now the config replaces the file's, a role or kind other than the file's is
    refused (as ``bms-emu run --firmware FILE.toml`` does)."""
    from bms.errors import BmsError
    from hil.testing import firmware_spec
    _c_bms_spec(tmp_path)
    (tmp_path / "my-bms.toml").write_text(
        f'[firmware]\nrole = "bms"\nkind = "library"\npath = "libbms.so"\nconfig = "ov_V=4.30"\n'
        f'dbc = "{EXAMPLE_DBC}"\n', encoding="utf-8")
    path = str(tmp_path / "my-bms.toml")
    assert firmware_spec(path).config == "ov_V=4.30"
    assert firmware_spec(path, config="ov_V=4.10").config == "ov_V=4.10"
    assert firmware_spec(path, role="bms", kind="library").kind == "library"
    with pytest.raises(BmsError, match="--bms-firmware-kind process: .*my-bms.toml says library"):
        firmware_spec(path, kind="process")
    with pytest.raises(BmsError, match="--bms-firmware-role vcu: .*my-bms.toml says bms"):
        firmware_spec(path, role="vcu")


def test_a_counterexample_another_test_reported_is_not_removed_as_superseded(tmp_path):
    """Cases are files named by their content: a test's intermediate (shrinking) case can be the very file an
    earlier test reported as its shrunk case; removing it left that report naming a file that was gone."""
    from hil.testing.export import remove_superseded
    first_a, shared, second_final = (tmp_path / f"{n}.toml" for n in ("first-a", "shared", "second-final"))
    for path in (first_a, shared, second_final):
        path.write_text("[scenario]\n", encoding="utf-8")
    assert remove_superseded([first_a, shared]) == [shared]          # test 1 reports the shared file
    assert not first_a.exists() and shared.exists()
    assert remove_superseded([shared, second_final]) == [second_final]  # test 2 met it on the way
    assert shared.exists() and second_final.exists()


def test_fault_indices_follow_the_session_pack(monkeypatch):
    """``--bms-preset assb60-96s4p``: faults were drawn for 192 groups and 384 = 2 × 192 cells whatever the pack, so
    a drawn open wire on channel 150 stopped the example with an InputError that was no finding."""
    from hypothesis import find
    from hypothesis.errors import NoSuchExample

    from hil.testing import options
    monkeypatch.setattr(options, "_current", options.KitOptions(preset="assb60-96s4p"))
    drawn = bst.faults(kinds=("sensor", "internal_short"))
    with pytest.raises(NoSuchExample):
        find(drawn, lambda f: f[1].get("sensor") == "cell_voltage" and f[1]["index"] >= 96,
             settings=settings(database=None, max_examples=1000))

    @settings(max_examples=100, deadline=None, database=None)
    @given(fault=drawn)
    def inside(fault):
        kind, o = fault
        if kind == "internal_short":
            assert 0 <= o["cell"] < 96 * 4
        elif o["sensor"] == "cell_voltage":
            assert 0 <= o["index"] < 96
        elif o["sensor"] == "temperature":
            assert 0 <= o["index"] < 24
    inside()
    assert find(bst.faults(kinds=("sensor",), n_series=10, n_temperature_sensors=2),
                lambda f: f[1]["sensor"] == "cell_voltage" and f[1]["index"] >= 9)[1]["index"] == 9
