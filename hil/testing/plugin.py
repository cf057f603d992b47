"""The pytest plugin of the testing kit (entry point ``bms_emu``; ``pytest -p no:bms_emu`` disables it).

Fixtures: ``bms_bench`` (an emulator in lockstep on a virtual channel of its own), ``bms_bench_factory`` (several),
``bms_clock`` (its simulated clock), ``bms_tester`` (a DBC-driven tester in virtual time), ``bms_options`` (the
session's options, for hypothesis tests), and one fixture per command-line option (``bms_firmware``,
``bms_preset``, ``bms_seed``, ``bms_matrix``, ``bms_log_dir``) that a test module overrides by defining its own.
A test that leaves a bench, a virtual bus, a thread, a child process or a firmware instance open fails at
teardown. A failed test's report shows each bench's simulated time, BMS state, faults, DTCs and last frames, and
keeps its bus log.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bms.errors import BmsError
from bms.params import load_pack

from . import options as _options
from .bench import Bench
from .clock import SimClock
from .leaks import Resources
from .profiles import register as _register_profiles
from .tester import Tester

_BENCHES = pytest.StashKey[list]()
_REPORTS = pytest.StashKey[dict]()
_EXPORTS = pytest.StashKey[list]()
_FAILED_BENCH = pytest.StashKey[str]()
_REPLAYS = pytest.StashKey[dict]()


_register_profiles()  # before pytest's hypothesis plugin reads --hypothesis-profile


def pytest_addoption(parser):
    group = parser.getgroup("bms-emu", "bms-emu testing kit")
    group.addoption("--bms-firmware", default=None, metavar="PATH",
                    help="firmware under test: a library (.so), an FMU (.fmu), a program, or a scenario TOML whose "
                         "[firmware] table says everything (default: the built-in BMS and VCU model)")
    group.addoption("--bms-firmware-role", default=None, choices=("vcu", "bms"),
                    help="the slot the firmware takes (default: a TOML file's, else vcu)")
    group.addoption("--bms-firmware-kind", default=None, choices=("library", "process", "fmu"),
                    help="how the firmware is run (default: from the file name)")
    group.addoption("--bms-firmware-config", default=None, metavar="TEXT",
                    help="the string its create() gets (replaces a TOML file's config)")
    group.addoption("--bms-preset", default="assb60-192s2p", metavar="NAME", help="the pack preset (or pack TOML)")
    group.addoption("--bms-seed", default=0, type=int, metavar="N", help="the benches' random seed (default 0)")
    group.addoption("--bms-log-dir", default=None, metavar="DIR",
                    help="bus logs and counterexample scenarios (default: .bms-emu/test-logs in the root folder)")
    group.addoption("--bms-keep-logs", action="store_true", help="keep the bus logs of passing tests too")
    group.addoption("--bms-matrix", default=None, metavar="MAP.toml",
                    help="a vehicle CAN-matrix map: the benches' BMS speaks that matrix, the VCU model and the "
                         "tester go through the map (default: the built-in DBC)")


def pytest_configure(config):
    config.addinivalue_line("markers", "bms_leak_check: fail the test if it leaves a bench, bus, thread, process "
                                       "or firmware instance open")
    opt = config.option
    firmware = None
    # a bad option stops the session with a usage error naming it, not an INTERNALERROR or an error per test
    if getattr(opt, "bms_firmware", None):
        try:
            firmware = _options.firmware_spec(opt.bms_firmware, opt.bms_firmware_role, opt.bms_firmware_kind,
                                              opt.bms_firmware_config)
        except BmsError as exc:
            text = str(exc)
            raise pytest.UsageError(text if text.startswith("--bms-firmware") else f"--bms-firmware: {text}") from None
    if opt.bms_seed < 0:
        raise pytest.UsageError(f"--bms-seed: expected an integer >= 0 (the random seed), found {opt.bms_seed}")
    try:
        load_pack(opt.bms_preset)
    except BmsError as exc:
        raise pytest.UsageError(f"--bms-preset: {exc}") from None
    log_dir = Path(opt.bms_log_dir) if opt.bms_log_dir else Path(config.rootpath) / ".bms-emu" / "test-logs"
    matrix = getattr(opt, "bms_matrix", None)
    if matrix:
        matrix = Path(matrix)
        if not matrix.is_file():
            raise pytest.UsageError(f"--bms-matrix: no such file {matrix}")
    _options.configure(_options.KitOptions(firmware=firmware, preset=opt.bms_preset, seed=opt.bms_seed,
                                           log_dir=log_dir, keep_logs=opt.bms_keep_logs, matrix=matrix or None))


# --- the options as fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bms_options() -> _options.KitOptions:
    """The session's options (firmware, preset, seed, log folder): what a hypothesis test or state machine uses."""
    return _options.current()


@pytest.fixture
def bms_firmware(bms_options):
    """The firmware under test (a ``FirmwareSpec``), or None for the built-in BMS and VCU model."""
    return bms_options.firmware


@pytest.fixture
def bms_preset(bms_options) -> str:
    return bms_options.preset


@pytest.fixture
def bms_seed(bms_options) -> int:
    return bms_options.seed


@pytest.fixture
def bms_matrix(bms_options) -> Path | None:
    """The vehicle CAN-matrix map the benches speak (``--bms-matrix``), or None for the built-in DBC."""
    return bms_options.matrix


@pytest.fixture
def bms_log_dir(bms_options) -> Path:
    return bms_options.log_dir / _options.worker_tag()


# --- benches ---------------------------------------------------------------------------------------------
@pytest.fixture
def bms_leak_check(request):
    """Fails the test at teardown if it left anything open (see ``hil.testing.leaks``)."""
    before = Resources.now()
    yield
    left = Resources.now().left_since(before)
    if left:
        pytest.fail("the test left open: " + "; ".join(left), pytrace=False)


@pytest.fixture
def bms_bench_factory(request, bms_leak_check, bms_firmware, bms_preset, bms_seed, bms_log_dir, bms_options,
                      bms_matrix):
    """``make(**options)`` -> a ``Bench`` (options as ``Bench`` takes them; defaults from the command line), each
    with a tester on its channel and a bus log; all closed after the test, logs of a passing test removed."""
    benches: list[Bench] = request.node.stash.setdefault(_BENCHES, [])
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-120:]

    def make(**overrides) -> Bench:
        kwargs = {"preset": bms_preset, "seed": bms_seed, "firmware": bms_firmware, "matrix": bms_matrix,
                  "log": bms_log_dir / f"{stem}-{len(benches)}.blf", **overrides}
        bench = Bench(**kwargs)
        bench.tester = Tester(bench)
        benches.append(bench)
        return bench

    yield make
    errors = []
    for bench in benches:
        try:
            bench.close()
        except Exception as exc:  # noqa: BLE001 - every bench is closed; the first error is reported
            errors.append(exc)
    failed = any(r.failed for r in request.node.stash.get(_REPORTS, {}).values())
    if not failed and not bms_options.keep_logs:
        for bench in benches:
            if bench.log_path is not None and bench.log_path.exists():
                bench.log_path.unlink()
    if errors:
        raise errors[0]


@pytest.fixture
def bms_bench(bms_bench_factory) -> Bench:
    """An emulator in lockstep on a virtual channel of its own (built-in BMS or the firmware under test)."""
    return bms_bench_factory()


@pytest.fixture
def bms_clock(bms_bench) -> SimClock:
    return SimClock(bms_bench)


@pytest.fixture
def bms_tester(bms_bench) -> Tester:
    """The DBC-driven tester on ``bms_bench``'s channel (the emulator's DBC)."""
    return bms_bench.tester


# --- reports ------------------------------------------------------------------------------------------------
def pytest_sessionfinish(session):
    from .pool import close_all
    close_all()   # the ready benches kept between examples


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    from .check import take_exports, take_failed_bench
    from .export import remove_superseded
    exports = item.stash.setdefault(_EXPORTS, [])
    exports[:] = remove_superseded([*exports, *take_exports()])  # the shrunk case, not every example on the way
    # the bench of a failing check() or BmsMachine (the pool's, not the test's), and a machine example's export
    described, export = take_failed_bench()
    if described is not None:
        item.stash[_FAILED_BENCH] = described
    if not report.failed:
        return
    if not exports and export is not None:   # a state machine failed on something of its own: its last (shrunk)
        try:                                  # example as the case
            exports.append(export())
        except Exception as exc:  # noqa: BLE001 - the report of the test's own failure must not be lost to this
            report.sections.append(("bms-emu", f"the failing example could not be exported: {exc}"))
    sections = [bench.describe() for bench in item.stash.get(_BENCHES, [])]
    if _FAILED_BENCH in item.stash:
        sections.append(item.stash[_FAILED_BENCH])
    replays = item.stash.setdefault(_REPLAYS, {})   # once per case, also if the teardown fails after the call
    for path in item.stash.get(_EXPORTS, []):
        if path not in replays:
            replays[path] = _replayed_log(path)
        sections.append(f"counterexample scenario: {path}\n  replay: bms-emu run {path} --mode lockstep\n"
                        + replays[path])
    if sections:
        report.sections.append(("bms-emu", "\n\n".join(sections)))


def _replayed_log(scenario_path) -> str:
    """Replay the counterexample once (the shrunk case, after the test) with a bus log beside it; what it says."""
    from pathlib import Path

    from hil.runner import run_scenario
    from hil.scenario import load_scenario
    log = Path(scenario_path).with_suffix(".blf")
    try:
        result = run_scenario(load_scenario(scenario_path), mode="lockstep", plots=False,
                              can_options={"log": [str(log)]})
    except Exception as exc:  # noqa: BLE001 - the report of the test's own failure must not be lost to this
        return f"  the replay could not run: {exc}"
    failed = [v.name for v in result.verdicts if not v.passed]
    verdict = (f"the replay fails: {', '.join(failed)}" if failed else
               "the replay passes: what failed is not in the scenario (a check of the test's own, or frames "
               "the scenario cannot send)")
    return f"  bus log of the replay: {log}\n  {verdict}"


def pytest_runtest_setup(item):
    from .check import take_exports, take_failed_bench
    take_exports()  # a counterexample belongs to the test that wrote it
    take_failed_bench()


def pytest_collection_modifyitems(items):
    for item in items:  # the marker asks for the leak check without using a bench
        if item.get_closest_marker("bms_leak_check") and "bms_leak_check" not in item.fixturenames:
            item.fixturenames.append("bms_leak_check")
