"""Sweeps: designs keep their promises (LHS strata, Sobol balance, full grids), members are reproducible
scenarios (a member rerun alone gives the same KPIs bit for bit), a parallel sweep equals a serial one member
by member (also with a worker killed under it), an interrupted sweep resumes without rerunning finished
members, and bad sweep files fail like bad scenarios (file, line, key, nearest name).

Members are a few simulated seconds of the 192s2p pack; the clusters have 2 workers.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy.stats.qmc", reason="the sweep extra is not installed: pip install '.[sweep]'")
pytest.importorskip("pyarrow", reason="the sweep extra is not installed: pip install '.[sweep]'")

from hil.cli import main  # noqa: E402
from hil.runner import run_scenario  # noqa: E402
from hil.scenario import parse_scenario  # noqa: E402
from hil.sweep import SweepError, load_sweep, members, parse_sweep  # noqa: E402
from hil.sweep.design import unit_points  # noqa: E402
from hil.sweep.execute import run_sweep  # noqa: E402
from hil.sweep.results import Manifest, member_row  # noqa: E402

BASE = """\
[scenario]
name = "short"
seed = 3
initial_soc = 0.8
[ambient]
temp_C = 25.0
[[step]]
kind = "current"
current_A = 200.0
duration_s = {duration_s}
[[fault]]
kind = "sensor"
sensor = "cell_voltage"
index = 5
fault = "offset"
value = 0.3
at_s = 0.5
[[expect]]
name = "cells above 3.45 V"
kind = "bound"
signal = "cell_voltage_min_V"
min = 3.45
"""

GRID = """\
[sweep]
name = "grid"
scenario = "base.toml"
seed = 11
design = "grid"
replicates = {replicates}
[[parameter]]
path = "ambient.temp_C"
values = {temps}
[[parameter]]
path = "step[0].current_A"
min = 100.0
max = 300.0
levels = 2
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def base(tmp_path):
    return _write(tmp_path, "base.toml", BASE.format(duration_s=1.0))


def _grid(tmp_path, temps=(-10.0, 25.0), replicates=1, name="grid.toml"):
    return _write(tmp_path, name, GRID.format(temps=list(temps), replicates=replicates))


def _comparable(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


# --- designs ------------------------------------------------------------------------------------------
def _design(tmp_path, design: str, n: int, extra: str = "") -> object:
    text = f"""\
        [sweep]
        scenario = "base.toml"
        seed = 4
        design = "{design}"
        members = {n}
        [[parameter]]
        path = "ambient.temp_C"
        min = -20.0
        max = 40.0
        [[parameter]]
        path = "scenario.initial_soc"
        min = 0.2
        max = 0.9
        [[parameter]]
        path = "fault[0].at_s"
        min = 0.1
        max = 0.9
        {extra}
    """
    return load_sweep(_write(tmp_path, f"{design}.toml", text))


def _unit(sweep) -> np.ndarray:
    """The members' values back in the unit cube (uniform parameters: (v - min) / (max - min))."""
    ms = members(sweep, validate=False)
    return np.array([[(m.values[p.path] - p.min) / (p.max - p.min) for p in sweep.parameters] for m in ms])


def test_latin_hypercube_has_one_member_per_stratum_of_every_parameter(base, tmp_path):
    n = 20
    u = _unit(_design(tmp_path, "lhs", n))
    for column in u.T:
        assert sorted(np.floor(column * n).astype(int)) == list(range(n))


def test_sobol_is_balanced_and_grows_without_moving_its_first_members(base, tmp_path):
    n = 16
    u = _unit(_design(tmp_path, "sobol", n))
    for column in u.T:  # a (0, m, 1)-net in every dimension: one point in each 1/n interval
        assert sorted(np.floor(column * n).astype(int)) == list(range(n))
    boxes = {(int(a * 4), int(b * 4)) for a, b in u[:, :2]}  # the first two dimensions: a (0, 4, 2)-net
    assert len(boxes) == 16
    longer = members(_design(tmp_path, "sobol", 32), validate=False)
    assert [m.key for m in longer[:n]] == [m.key for m in members(_design(tmp_path, "sobol", n), validate=False)]
    with pytest.raises(SweepError, match=r"sobol.toml:5: sweep.members: .*power of 2.*try 32"):
        _design(tmp_path, "sobol", 24)


def test_grid_is_complete_and_a_grown_grid_keeps_its_old_points(base, tmp_path):
    small = members(load_sweep(_grid(tmp_path, replicates=2)))
    assert len(small) == 2 * 2 * 2
    points = [(m.values["ambient.temp_C"], m.values["step[0].current_A"]) for m in small]
    assert sorted(set(points)) == [(-10.0, 100.0), (-10.0, 300.0), (25.0, 100.0), (25.0, 300.0)]
    assert all(points.count(p) == 2 for p in set(points))
    assert len({m.seed for m in small}) == len(small)  # replicates: seeds of their own
    common = load_sweep(_write(tmp_path, "common.toml", GRID.format(temps=[-10.0, 25.0], replicates=2)
                               .replace('design = "grid"', 'design = "grid"\nseeds = "common"')))
    seeds = {(m.replicate, m.seed) for m in members(common)}  # common random numbers: one seed per replicate
    assert len(seeds) == 2 and len({s for _, s in seeds}) == 2
    grown = members(load_sweep(_grid(tmp_path, temps=(-10.0, 0.0, 25.0), replicates=2, name="grown.toml")))
    assert {m.key for m in small} < {m.key for m in grown}  # the same points, the same seeds: the same members


def test_monte_carlo_members_keep_their_draws_when_the_sweep_grows(base, tmp_path):
    extra = """[[parameter]]
        path = "age.capacity_fraction"
        distribution = "normal"
        mean = 0.9
        sigma = 0.05
        min = 0.8
        max = 0.95"""
    few, more = _design(tmp_path, "random", 5, extra), _design(tmp_path, "random", 40, extra)
    assert [m.key for m in members(few, validate=False)] == [m.key for m in members(more, validate=False)[:5]]
    ageing = [m.values["age.capacity_fraction"] for m in members(more, validate=False)]
    assert min(ageing) >= 0.8 and max(ageing) <= 0.95  # truncated normal
    u = unit_points("random", 3, 2, seed=9)
    assert np.array_equal(u, unit_points("random", 30, 2, seed=9)[:3])
    member = members(more)[0]
    capacity = parse_scenario(member.text, member.source).pack_overrides["cell"]["capacity_Ah"]
    assert capacity == pytest.approx(60.0 * member.values["age.capacity_fraction"], rel=1e-12)


# --- reproducibility and parallel runs ----------------------------------------------------------------
def test_a_member_rerun_alone_gives_the_same_kpis_bit_for_bit(base, tmp_path, capsys):
    sweep_file = _grid(tmp_path)
    result = run_sweep(load_sweep(sweep_file), tmp_path / "out", workers=0, report=False)
    assert result.complete and {r["status"] for r in result.rows} == {"passed", "failed"}
    k = next(r["member"] for r in result.rows if r["status"] == "failed")
    row = result.rows[k]
    assert row["rerun"] == f"bms-emu sweep {sweep_file} --member {k}"
    assert main(["sweep", str(sweep_file), "--member", str(k), "--out", str(tmp_path / "out")]) == 1
    summary = json.loads((tmp_path / "out" / f"member-{k}" / "summary.json").read_text())
    for key in ("energy_out_kWh", "cell_voltage_min_V", "temp_core_max_C", "soc_error_max_pct", "soc_end"):
        assert summary[key] == row[key]
    capsys.readouterr()
    assert main(["sweep", str(sweep_file), "--write-member", str(k)]) == 0
    written = _write(tmp_path, "member.toml", capsys.readouterr().out)
    again = member_row(run_scenario(parse_scenario(written.read_text(), str(written)), plots=False))
    assert {c: again[c] for c in again} == {c: row[c] for c in again}


def test_two_dask_workers_equal_a_serial_run_even_with_a_worker_killed(base, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the sweep extra is not installed")
    sweep = load_sweep(_grid(tmp_path, temps=(-10.0, 10.0, 25.0), replicates=2))
    serial = run_sweep(sweep, tmp_path / "serial", workers=0, report=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)  # worker address -> process id

        class KillOne:  # when the first chunk is in: kills a worker that has chunks in hand
            def start(self, total, skipped):
                self.lost_tasks = ()

            def close(self):
                pass

            def update(self, done, failed, errors):
                if not self.lost_tasks:
                    address, self.lost_tasks = max(client.processing().items(), key=lambda item: len(item[1]))
                    os.kill(pids[address], signal.SIGKILL)

        killer = KillOne()
        parallel = run_sweep(sweep, tmp_path / "dask", executor=client.get_executor(pure=False), chunk=1,
                             progress=killer, report=False)
    assert killer.lost_tasks  # the killed worker had work: Dask ran it again elsewhere
    assert parallel.complete, parallel.stop_reason
    assert _comparable(parallel.rows) == _comparable(serial.rows)
    lines = (tmp_path / "dask" / "manifest.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert sorted(set(keys)) == sorted(m.key for m in parallel.members)  # none lost ...
    assert len(keys) - len(set(keys)) == sum(json.loads(line)["status"] == "lost" for line in lines)  # ... or twice


def test_a_process_pool_executor_runs_a_sweep_as_the_serial_run_does(base, tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    sweep = load_sweep(_grid(tmp_path))
    serial = run_sweep(sweep, tmp_path / "serial", workers=0, report=False)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        pooled = run_sweep(sweep, tmp_path / "pool", executor=pool, report=True)
    assert _comparable(pooled.rows) == _comparable(serial.rows)
    import pyarrow.parquet as pq
    table = pq.read_table(pooled.files["parquet"]).to_pylist()
    assert [r["cell_voltage_min_V"] for r in table] == [r["cell_voltage_min_V"] for r in serial.rows]
    assert [r["pass:cells above 3.45 V"] for r in table] == [r["status"] == "passed" for r in serial.rows]
    page = pooled.files["html"].read_text()
    assert "pass/fail over ambient.temp_C and step[0].current_A" in page or "data:image/png;base64" in page
    assert "--member" in page
    assert "simulated_s: 1 for all 4 members" in page   # a KPI that does not vary is a line, not a one-bar plot


def test_a_failing_member_is_recorded_and_the_sweep_goes_on(base, tmp_path, monkeypatch):
    import hil.runner
    real = hil.runner.run_scenario

    def crashes_when_cold(scenario, **options):  # a member whose run raises (a numerical failure, a bug)
        if scenario.ambient_C < 0:
            raise FloatingPointError("the solver diverged")
        return real(scenario, **options)

    monkeypatch.setattr(hil.runner, "run_scenario", crashes_when_cold)
    result = run_sweep(load_sweep(_grid(tmp_path)), tmp_path / "out", workers=0, report=True)
    cold = [r for r in result.rows if r["ambient.temp_C"] < 0]
    assert {r["status"] for r in cold} == {"error"}
    assert all(r["error"].startswith("FloatingPointError: the solver diverged") for r in cold)
    assert all(r["status"] in ("passed", "failed") for r in result.rows if r not in cold)
    assert result.complete and not result.passed
    assert "the solver diverged" in result.files["html"].read_text()


def test_a_sweep_takes_its_base_scenarios_mode_unless_it_names_one(base, tmp_path):
    """A lockstep base scenario (CAN faults, diagnostics) is swept on the bus without saying so again."""
    text = "[sweep]\nscenario = 'can-faults'\ndesign = 'grid'\n{mode}[[parameter]]\npath = 'ambient.temp_C'\n" \
           "values = [1.0]\n"
    assert load_sweep(_write(tmp_path, "a.toml", text.format(mode=""))).mode == "lockstep"
    assert load_sweep(_write(tmp_path, "b.toml", text.format(mode="mode = 'lockstep'\n"))).mode == "lockstep"
    assert load_sweep(_grid(tmp_path)).mode == "headless"   # a base scenario that names no mode


def test_a_failing_member_is_shrunk_by_the_testing_kit_to_a_scenario_that_fails_alike(base, tmp_path):
    pytest.importorskip("hypothesis")
    from hil.sweep.shrink import shrink_member
    sweep = load_sweep(_grid(tmp_path))
    member = next(m for m in members(sweep) if m.values == {"ambient.temp_C": -10.0, "step[0].current_A": 300.0})
    result = shrink_member(sweep, member, tmp_path / "out", max_examples=30, max_runs=60)
    assert result.failed == ["cells above 3.45 V"] and result.path is not None, result.message
    replay = run_scenario(parse_scenario(result.path.read_text(), str(result.path)), plots=False)
    assert [v.name for v in replay.verdicts if not v.passed] == ["cells above 3.45 V"]
    assert "fault[0]:sensor" in replay.recording.injections  # the member's fault still fires in the small drive
    assert replay.scenario.ambient_C == -10.0 and replay.scenario.seed == member.seed
    assert sum(s.duration_s for s in result.drive) <= 1.0 + 1e-9
    charge_As = sum(getattr(s, "current_A", 0.0) * s.duration_s for s in result.drive)
    assert charge_As < 300.0  # smaller than the member's 300 A for 1 s: shrunk, not the member replayed


def test_a_member_that_fails_at_rest_is_shrunk_to_a_short_rest(tmp_path):
    """A failure the member's point causes without any drive (a pack nearly empty at the start: undervoltage)
    is told apart before any search: the minimal case is a rest just past the first violation."""
    pytest.importorskip("hypothesis")
    from hil.sweep.shrink import shrink_member
    from hil.testing.segments import Rest
    _write(tmp_path, "base.toml", BASE.replace("initial_soc = 0.8", "initial_soc = 0.02").replace(
        "min = 3.45", "min = 2.8").replace("cells above 3.45 V", "cells above the warning").format(duration_s=20.0))
    sweep = load_sweep(_grid(tmp_path, temps=(25.0,)))
    member = members(sweep)[0]
    result = shrink_member(sweep, member, tmp_path / "out", max_examples=5)
    assert result.failed == ["cells above the warning"] and result.path is not None, result.message
    assert len(result.drive) == 1 and isinstance(result.drive[0], Rest), result.drive
    assert result.drive[0].duration_s <= 1.0 and result.examples == 2, (result.drive, result.examples)
    assert "no drive is needed" in result.message
    replay = run_scenario(parse_scenario(result.path.read_text(), str(result.path)), plots=False)
    assert [v.name for v in replay.verdicts if not v.passed] == ["cells above the warning"]


# --- stopping and resuming ----------------------------------------------------------------------------
def test_an_interrupted_sweep_resumes_running_only_the_missing_members(base, tmp_path):
    sweep_file = _write(tmp_path, "long.toml", """\
        [sweep]
        scenario = "base.toml"
        seed = 2
        design = "random"
        members = 12
        [[parameter]]
        path = "ambient.temp_C"
        min = -10.0
        max = 30.0
    """)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "sweep", str(sweep_file), "--workers", "0",
                             "--chunk", "1", "--out", str(out), "--no-report"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    finished = len(manifest.read_text().splitlines())
    if finished == 12:
        pytest.skip("the sweep finished before the signal (an extremely slow start)")
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "INCOMPLETE" in stdout
    stopped = json.loads((out / "sweep.json").read_text())
    assert not stopped["complete"] and "SIGTERM" in stopped["stop_reason"] and stopped["counts"]["pending"] > 0
    assert 2 <= finished < 12
    with manifest.open("a") as f:  # a kill in the middle of a line: the half line is ignored
        f.write('{"key": "abc", "sta')
    result = run_sweep(load_sweep(sweep_file), out, workers=0, report=False)
    assert result.skipped == finished and result.ran == 12 - finished and result.complete
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["complete"] and summary["counts"]["passed"] + summary["counts"]["failed"] == 12
    lines = manifest.read_text().splitlines()
    assert lines[finished] == '{"key": "abc", "sta'  # the half line stays a line of its own
    keys = [json.loads(line)["key"] for n, line in enumerate(lines) if n != finished]
    assert len(keys) == len(set(keys)) == 12  # every member once
    assert len(Manifest(manifest).rows) == 12


def test_a_grown_sweep_runs_only_its_new_members(base, tmp_path):
    out = tmp_path / "out"
    first = run_sweep(load_sweep(_grid(tmp_path)), out, workers=0, report=False)
    grown = run_sweep(load_sweep(_grid(tmp_path, temps=(-10.0, 10.0, 25.0))), out, workers=0, report=False)
    assert (first.ran, grown.skipped, grown.ran) == (4, 4, 2)
    assert {r["key"] for r in first.rows} < {r["key"] for r in grown.rows}
    old = {r["key"]: r for r in first.rows}
    assert all(_comparable([r])[0] | {"member": 0, "rerun": ""} == _comparable([old[r["key"]]])[0] |
               {"member": 0, "rerun": ""} for r in grown.rows if r["key"] in old)


def test_a_written_member_names_its_files_by_absolute_paths(tmp_path, capsys, monkeypatch):
    import shutil
    from importlib import resources
    (tmp_path / "cycles").mkdir()
    shutil.copy(resources.files("hil") / "data" / "drive-cycles" / "us06.csv", tmp_path / "cycles" / "my.csv")
    _write(tmp_path, "base.toml", "[[step]]\nkind = 'drive'\ncycle = 'cycles/my.csv'\n")
    _write(tmp_path, "s.toml", "[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\n"
                               "path = 'scenario.initial_soc'\nvalues = [0.5, 0.6]\n")
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "s.toml", "--write-member", "1"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    written = _write(elsewhere, "m1.toml", capsys.readouterr().out)
    scenario = parse_scenario(written.read_text(), str(written))
    assert scenario.steps[0].options["cycle"] == str(tmp_path / "cycles" / "my.csv")
    assert scenario.initial_soc == 0.6


# --- bad sweep files ----------------------------------------------------------------------------------
BAD = [
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\nseeed = 1\n",
     r":4: sweep.seeed: unknown key; did you mean 'seed'"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'lhc'\nmembers = 4\n",
     r":3: sweep.design: unknown design 'lhc'; did you mean 'lhs'"),
    ("[sweep]\nscenario = 'bse.toml'\ndesign = 'grid'\n", r":2: sweep.scenario: no such file .*bse.toml"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'ambiant.temp_C'\nvalues = [1.0]\n",
     r":5: parameter\[0\].path: unknown input 'ambiant.temp_C'; did you mean 'ambient'"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'cell.capacity_A'\nvalues = [1.0]\n",
     r":5: parameter\[0\].path: unknown key 'capacity_A' of cell; did you mean 'capacity_Ah'"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'fault[3].at_s'\nvalues = [1.0]\n",
     r":5: parameter\[0\].path: the base scenario has 1 \[\[fault\]\] entry \(0..0\), found index 3"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'ambient.temp_C'\nmin = 1.0\n",
     r":4: parameter\[0\].values: missing: a grid parameter needs values"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'lhs'\nmembers = 4\n[[parameter]]\npath = 'ambient.temp_C'\n"
     "distribution = 'normall'\nmean = 1.0\n", r":7: parameter\[0\].distribution: unknown distribution 'normall'; "
     r"did you mean 'normal'"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'random'\nmembers = 50\n[[parameter]]\npath = 'scenario.initial_soc'"
     "\ndistribution = 'normal'\nmean = 0.9\nsigma = 0.2\n",
     r":5: scenario.initial_soc: member \d+ \(scenario.initial_soc = 1.\d+\) is not a valid scenario: expected a "
     r"number in \[0, 1\]"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'spread.capacity_rel_sigma'\n"
     "values = [0.01, -0.5]\n",
     r":4: (pack_overrides\.)?spread.capacity_rel_sigma: member 1 \(spread.capacity_rel_sigma = -0.5\)"
     r"(:| is not a valid scenario: )expected a number in \[0, 0.5\] \(a relative 1-sigma spread[^)]*\), found -0.5"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'scenario.seed'\nvalues = [1]\n",
     r":5: parameter\[0\].path: the members' seeds are derived from sweep.seed"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'ambient.temp_C'\nvalues = [1.0]\n"
     "[[parameter]]\npath = 'ambient.temp_C'\nvalues = [2.0]\n",
     r":8: parameter\[1\].path: 'ambient.temp_C' is swept twice"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\nmembers = = 3\n", r":4: file: not valid TOML"),
    ("[sweep]\nscenario = 'diagnostics'\ndesign = 'grid'\nmode = 'headless'\n[[parameter]]\npath = 'ambient.temp_C'\n"
     "values = [1.0]\n",
     r":4: sweep.mode: the base scenario has \[\[diag\]\] requests, dtc expectations, CAN faults, which need the BMS"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[paramter]\n",
     r":4: paramter: unknown table; did you mean 'parameter'"),
    ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n",
     r": parameter: a sweep needs at least one \[\[parameter\]\]"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[m.split(":", 2)[-1][:30] for _, m in BAD])
def test_a_bad_sweep_file_names_its_file_line_and_key(base, tmp_path, text, message):
    path = _write(tmp_path, "bad.toml", text)
    with pytest.raises(SweepError, match=str(path).replace(".", r"\.") + message):
        members(load_sweep(path))  # a member is checked as a scenario when it is made


def test_a_sweep_sets_any_number_or_word_of_a_fault_and_checks_each_member(base, tmp_path):
    # which channel is faulted, and how: integer and string keys of a fault (the channel was refused as
    # "unknown key 'index'" although the scenario has it)
    text = ("[sweep]\nscenario = 'base.toml'\ndesign = 'grid'\n[[parameter]]\npath = 'fault[0].index'\n"
            "values = [0, 191]\n[[parameter]]\npath = 'fault[0].fault'\nvalues = ['offset', 'stuck']\n")
    ms = members(load_sweep(_write(tmp_path, "channels.toml", text)))
    faults = [parse_scenario(m.text, m.source).faults[0] for m in ms]
    assert sorted((f.options["index"], f.options["fault"]) for f in faults) == [
        (0, "offset"), (0, "stuck"), (191, "offset"), (191, "stuck")]
    with pytest.raises(SweepError, match=r":5: parameter\[0\].path: unknown key 'name' of fault\[0\]"):
        load_sweep(_write(tmp_path, "name.toml", text.replace("'fault[0].index'", "'fault[0].name'")))
    with pytest.raises(SweepError, match=r"member \d \(fault\[0\].index = 500, .*\) is not a valid scenario: "
                                        r"expected a cell_voltage channel 0 \.\.\. 191"):
        members(load_sweep(_write(tmp_path, "far.toml", text.replace("191", "500"))))


def test_a_large_sweep_checks_its_extreme_members(base, tmp_path):
    path = _write(tmp_path, "large.toml", "[sweep]\nscenario = 'base.toml'\ndesign = 'random'\nmembers = 1100\n"
                  "[[parameter]]\npath = 'scenario.initial_soc'\ndistribution = 'normal'\nmean = 0.5\nsigma = 0.2\n")
    sweep = load_sweep(path)
    values = [m.values["scenario.initial_soc"] for m in members(sweep, validate=False)]
    low, high = int(np.argmin(values)), int(np.argmax(values))
    assert values[high] > 1.0 and not any(v > 1.0 or v < 0.0 for v in values[:64])  # past the first ones
    with pytest.raises(SweepError, match=rf"large.toml:5: scenario.initial_soc: member ({low}|{high}) "
                                         r"\(scenario.initial_soc = [-0-9.]+\) is not a valid scenario"):
        members(sweep)


def test_the_command_reports_a_bad_sweep_file_with_status_2(base, tmp_path, capsys):
    path = _write(tmp_path, "bad.toml", BAD[0][0])
    assert main(["sweep", str(path), "--workers", "0"]) == 2
    assert "sweep.seeed: unknown key; did you mean 'seed'" in capsys.readouterr().err


def test_parse_sweep_accepts_a_built_in_base_scenario():
    sweep = parse_sweep("[sweep]\nscenario = 'default'\ndesign = 'grid'\n[[parameter]]\npath = 'age.resistance_factor'"
                        "\nvalues = [1.0, 1.5]\n", "inline.toml")
    ms = members(sweep)
    r0 = [parse_scenario(m.text, m.source).pack_overrides["cell"]["r0_ohm"] for m in ms]
    assert r0[1] / r0[0] == pytest.approx(1.5) and math.isclose(r0[0], 0.0015)


def test_the_status_line_gives_long_members_per_hour(monkeypatch):
    import io

    from hil.sweep import progress
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    lines = progress.SweepStatusLines(every_s=0.0, stream=out)
    lines.start(8, 0)
    clock[0] += 100.0
    lines.update(2, 0, 0)   # two 10-minute drives in 100 s: 0.02 a second
    clock[0] += 100.0
    lines.update(8, 0, 0)   # then eight in 200 s: 0.04 a second
    printed = out.getvalue().splitlines()
    assert "72 members/h" in printed[1] and "144 members/h" in printed[2], printed
    fast = progress.SweepStatusLines(every_s=0.0, stream=out)
    fast.start(200, 0)
    assert fast.rate_text(0) == "0.0 members/s"
