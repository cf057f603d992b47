"""Every stop ends the same clean way: SIGINT, SIGTERM and SIGHUP at any instant of ``bms-emu run`` and
``bms-emu serve`` (before power-on, at the first tick, mid-run, while logs close and reports are written),
a full disk under the logs or the reports, and runs that simulated nothing or less than asked.

The in-process tests send the signal from inside the program at an exact instant (a wrapped function
calls ``os.kill`` on its own process), so nothing races; the subprocess tests stop a real process from
outside, synchronised on the status lines it prints, with generous timeouts.
"""
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import can
import numpy as np
import pytest

import hil.report
from bms.can import logs as can_logs
from bms.emulator import Emulator
from hil.cli import main
from hil.runner import run_scenario
from hil.scenario import parse_scenario

SCENARIO = """
[scenario]
name = "stops"
initial_soc = 0.8
seed = 3
[[step]]
kind = "current"
current_A = 60.0
duration_s = {duration}
[[expect]]
name = "no cell above its maximum"
kind = "bound"
signal = "cell_voltage_max_V"
max = 4.25
"""
LOGS = ("bus.blf", "bus.asc", "bus.log")


def _scenario_file(folder: Path, duration: float = 2.0) -> Path:
    path = folder / "stops.toml"
    path.write_text(SCENARIO.format(duration=duration))
    return path


def _kill_self(sig):
    os.kill(os.getpid(), sig)


def _signal_at(monkeypatch, sig, instant: str) -> None:
    """Arrange for ``sig`` to arrive at ``instant`` of the run (``serve`` and ``run`` alike)."""
    if instant == "build":  # the emulator's construction: before any log or bus is open
        real_init = Emulator.__init__

        def init(self, *args, **kwargs):
            _kill_self(sig)
            real_init(self, *args, **kwargs)
        monkeypatch.setattr(Emulator, "__init__", init)
    elif instant in ("power-on", "mid-run"):  # the first tick (the estimator initialises) or the 150th
        real_tick, calls, at = Emulator.tick, [0], 1 if instant == "power-on" else 150

        def tick(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == at:
                _kill_self(sig)
            return real_tick(self, *args, **kwargs)
        monkeypatch.setattr(Emulator, "tick", tick)
    elif instant == "closing-logs":
        real_stop, sent = can_logs.LogWriter.stop, []

        def stop(self, *args, **kwargs):
            if not sent:
                sent.append(_kill_self(sig))
            return real_stop(self, *args, **kwargs)
        monkeypatch.setattr(can_logs.LogWriter, "stop", stop)
    elif instant == "reports":  # between the recording and the summary
        real_junit, sent = hil.report.write_junit, []

        def junit(*args, **kwargs):
            if not sent:
                sent.append(_kill_self(sig))
            return real_junit(*args, **kwargs)
        monkeypatch.setattr(hil.report, "write_junit", junit)
    else:
        raise AssertionError(instant)


def _assert_logs_readable(folder: Path, *, closed: bool = True) -> list[int]:
    counts = []
    for name in LOGS:
        with can.LogReader(str(folder / name)) as reader:
            frames = list(reader)
        counts.append(len(frames))
        if name.endswith(".blf") and closed:
            with can.BLFReader(str(folder / name)) as reader:
                assert reader.object_count == len(frames), "the BLF header counts every frame: closed properly"
    assert len(set(counts)) == 1, f"every log holds the same frames: {counts}"
    return counts


@pytest.fixture(autouse=True)
def _handlers_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    assert {s: signal.getsignal(s) for s in before} == before, "main() leaves the signal handlers as it found them"


# --- bms-emu run ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("instant", ["build", "power-on", "mid-run", "closing-logs", "reports"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_instant_of_run_ends_cleanly(tmp_path, monkeypatch, capsys, sig, instant):
    scenario = _scenario_file(tmp_path)
    out = tmp_path / "out"
    args = ["run", str(scenario), "--out", str(out), "--no-plots", "--mode", "lockstep",
            "-c", f"stops-run-{os.getpid()}"]
    for name in LOGS:
        args += ["--log", str(out / name)]
    _signal_at(monkeypatch, sig, instant)
    status = main(args)
    assert status == 128 + sig, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    name = signal.Signals(sig).name
    assert summary["complete"] is False and summary["passed"] is False and summary["incomplete_cause"] == "signal"
    reason = summary["stop_reason"]
    assert name in reason
    if instant in ("build", "power-on"):
        assert summary["simulated_s"] <= 0.011 and "at t = 0.0" in reason
    elif instant == "mid-run":
        assert reason.endswith("at t = 1.50 s") and summary["simulated_s"] == pytest.approx(1.5)
    elif instant == "closing-logs":  # the steps were done: still incomplete, stopped before its summary
        assert summary["simulated_s"] == pytest.approx(2.0) and reason.endswith("after the last tick (t = 2.00 s)")
    else:
        assert summary["simulated_s"] == pytest.approx(2.0) and "while the reports were written" in reason
    suite = ET.parse(out / "junit.xml").getroot()
    failure = [c for c in suite.iter("testcase") if c.get("name") == "run completed"][0].find("failure")
    assert name in failure.get("message")
    np.load(out / "recording.npz")["time_s"]  # noqa: B018 - whole and loadable
    counts = _assert_logs_readable(out)
    assert (counts[0] > 0) is (instant not in ("build",)), counts
    assert f"INCOMPLETE: {summary['stop_reason']}" in capsys.readouterr().out


@pytest.mark.skipif(signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, reason="SIGHUP is ignored here (nohup)")
def test_sighup_stops_run_like_ctrl_c(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _signal_at(monkeypatch, signal.SIGHUP, "mid-run")
    assert main(["run", str(_scenario_file(tmp_path)), "--out", str(out), "--no-plots", "--mode", "headless"]) == 129
    assert "stopped by SIGHUP" in json.loads((out / "summary.json").read_text())["stop_reason"]


def test_a_signal_after_the_summary_leaves_the_verdict_it_wrote(tmp_path, monkeypatch):
    """Once the summary is written the run is over: a late signal changes neither it nor the status."""
    out = tmp_path / "out"
    real = hil.report.write_text_atomic

    def write(path, text):
        real(path, text)
        if path.name == "summary.json":
            _kill_self(signal.SIGTERM)
    monkeypatch.setattr(hil.report, "write_text_atomic", write)
    assert main(["run", str(_scenario_file(tmp_path, 2.0)), "--out", str(out), "--no-plots",
                 "--mode", "headless"]) == 0
    assert json.loads((out / "summary.json").read_text())["passed"] is True


def test_a_second_signal_stops_at_once_and_claims_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_junit = hil.report.write_junit

    def junit(*args, **kwargs):
        _kill_self(signal.SIGTERM)
        _kill_self(signal.SIGTERM)
        return real_junit(*args, **kwargs)
    monkeypatch.setattr(hil.report, "write_junit", junit)
    assert main(["run", str(_scenario_file(tmp_path, 2.0)), "--out", str(out), "--no-plots",
                 "--mode", "headless"]) == 143
    assert not (out / "summary.json").exists() and not (out / "junit.xml").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"


def test_a_stale_summary_never_stands_in_for_a_new_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"passed": true, "complete": true}')
    (out / "junit.xml").write_text("<testsuite failures='0'/>")

    def crash(*args, **kwargs):
        raise RuntimeError("a bug mid-run")
    monkeypatch.setattr(Emulator, "tick", crash)
    with pytest.raises(RuntimeError):
        run_scenario(parse_scenario(SCENARIO.format(duration=2.0), "s.toml"), out_dir=out, mode="headless")
    assert not (out / "summary.json").exists() and not (out / "junit.xml").exists()


# --- bms-emu serve --------------------------------------------------------------------------------------
@pytest.mark.parametrize("instant", ["build", "power-on", "mid-run", "closing-logs"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_instant_of_serve_ends_cleanly(tmp_path, monkeypatch, capsys, sig, instant):
    args = ["serve", "--lockstep", "--duration", "3", "-c", f"stops-serve-{os.getpid()}", "--json",
            str(tmp_path / "run.json")]
    for name in LOGS:
        args += ["--log", str(tmp_path / name)]
    _signal_at(monkeypatch, sig, instant)
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "run.json").read_text())
    name = signal.Signals(sig).name
    assert report["complete"] is False and name in report["stop_reason"] and "t = " in report["stop_reason"]
    assert f"stopped: {report['stop_reason']}" in out and "BMS_Status" in out and "p99 |dev| ms" in out
    counts = _assert_logs_readable(tmp_path)
    assert counts[0] == report["log_frames"] > 0  # power-on's frames at least: the first tick sends
    if instant == "mid-run":
        assert report["simulated_s"] == pytest.approx(1.5, abs=0.011)


def test_serve_reaching_its_duration_is_complete(tmp_path):
    assert main(["serve", "--lockstep", "--duration", "0.5", "-q", "-c", f"stops-full-{os.getpid()}",
                 "--json", str(tmp_path / "run.json")]) == 0
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["complete"] is True and report["stop_reason"] == "duration reached"


# --- from outside: real processes, real signals ----------------------------------------------------------
def _start(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "hil.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


def _wait_for_line(proc, text: str, timeout_s: float = 120.0) -> list[str]:
    """Lines printed until one holds ``text`` (the process's own status line: no sleeps racing it)."""
    import selectors

    lines, selector = [], selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    import time
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not selector.select(timeout=1.0):
            continue
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    proc.kill()
    raise AssertionError(f"no line with {text!r} within {timeout_s} s: {lines} {proc.stderr.read()}")


@contextlib.contextmanager
def _reaped(proc):
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("sig,wait_for", [(signal.SIGTERM, "reports into"), (signal.SIGINT, " s wall")])
def test_run_stopped_from_outside_writes_its_reports(tmp_path, sig, wait_for):
    """SIGTERM on the first line, printed before power-on; SIGINT on the first status line (mid-run)."""
    out = tmp_path / "out"
    args = ["run", "default", "--out", str(out), "--status-every", "0.2", "--no-plots",
            "-c", f"stops-outside-{os.getpid()}"]
    for name in LOGS:
        args += ["--log", str(out / name)]
    with _reaped(_start(args, tempfile.gettempdir())) as proc:
        _wait_for_line(proc, wait_for)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and signal.Signals(sig).name in summary["stop_reason"]
    assert "INCOMPLETE" in stdout and summary["simulated_s"] < 5000
    _assert_logs_readable(out)


def test_ctrl_c_at_serve_power_on_ends_cleanly(tmp_path):
    """The first line comes before power-on: Ctrl-C there gives the clean ending of any other instant."""
    with _reaped(_start(["serve", "-c", f"stops-po-{os.getpid()}", "--rt-priority", "0", "--log",
                         str(tmp_path / "bus.blf")], tmp_path)) as proc:
        _wait_for_line(proc, "bms-emu serve: BMS on")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "stopped: interrupted by SIGINT (Ctrl-C) at t = " in stdout and "BMS_Status" in stdout
    with can.BLFReader(str(tmp_path / "bus.blf")) as reader:
        assert reader.object_count == len(list(reader)) > 0


# --- silent successes --------------------------------------------------------------------------------------
def test_a_run_that_simulated_nothing_never_passes(tmp_path):
    scenario = dataclasses.replace(parse_scenario(SCENARIO.format(duration=10.0), "s.toml"), dt_s=1e308)
    result = run_scenario(scenario, out_dir=tmp_path, mode="headless", plots=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] is False and summary["complete"] is False
    assert summary["incomplete_cause"] == "nothing_simulated" and "nothing was simulated" in summary["stop_reason"]
    assert not result.passed and summary["simulated_s"] == 0.0


def test_max_sim_s_is_reported_truncated_with_the_after_s_it_missed(tmp_path, capsys):
    text = SCENARIO.format(duration=30.0) + '[[expect]]\nkind = "accuracy"\nquantity = "soc"\nafter_s = 20.0\n'
    path = tmp_path / "t.toml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--mode", "headless", "--no-plots", "--max-sim-s", "5"]) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["truncated"] is True and summary["complete"] is False and summary["passed"] is False
    assert "max_sim_s = 5 s" in summary["stop_reason"] and "30 s its steps ask for" in summary["stop_reason"]
    accuracy = summary["verdicts"][1]
    assert not accuracy["passed"] and "after_s = 20 s" in accuracy["message"] and "t = 5.00 s" in accuracy["message"]
    assert "TRUNCATED" in capsys.readouterr().out
    # a limit beyond the steps' end truncates nothing
    assert main(["run", str(path), "--out", str(out), "--mode", "headless", "--no-plots", "--max-sim-s", "99"]) == 0


# --- disk full ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of the given size in KiB (skipped where mounting is not allowed)."""
    mounts = []

    def mount(kib: int) -> Path:
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {done.stderr.strip()}")
        mounts.append(point)
        return point
    yield mount
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_disk_full_under_the_bus_log_still_writes_the_reports(tmp_path, small_disk, capsys):
    disk = small_disk(32)
    out = tmp_path / "out"
    status = main(["run", str(_scenario_file(tmp_path, 120.0)), "--out", str(out), "--no-plots", "--mode",
                   "lockstep", "-c", f"stops-full-{os.getpid()}", "--log", str(disk / "bus.blf")])
    assert status == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incomplete_cause"] == "log" and "No space left on device" in summary["stop_reason"]
    assert summary["passed"] is False and 0 < summary["simulated_s"] < 120.0
    assert ET.parse(out / "junit.xml").getroot().get("failures") == "1"
    np.load(out / "recording.npz")["time_s"]  # noqa: B018
    assert "INCOMPLETE: the bus log could not be written" in capsys.readouterr().out


def test_disk_full_while_reporting_claims_no_success(tmp_path, small_disk, capsys):
    disk = small_disk(32)  # too small for the recording of a minute (~50 kB): the rest still fits
    status = main(["run", str(_scenario_file(tmp_path, 60.0)), "--out", str(disk), "--no-plots",
                   "--mode", "headless"])
    assert status == 4
    summary = json.loads((disk / "summary.json").read_text())
    assert summary["passed"] is False and summary["incomplete_cause"] == "reports"
    assert "recording.npz" in summary["stop_reason"] and "No space left" in summary["stop_reason"]
    assert ET.parse(disk / "junit.xml").getroot().get("failures") == "1"
    assert not (disk / "recording.npz").exists(), "no half-written recording"
    assert not [p.name for p in disk.iterdir() if p.name.endswith(".tmp")]
    assert "a report could not be written: recording.npz" in capsys.readouterr().err


def test_disk_full_for_the_summary_leaves_no_verdict(tmp_path, small_disk):
    disk = small_disk(64)
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:  # leave a few hundred bytes free
        while True:
            f.write(b"\0" * 256)
            f.flush()
    assert main(["run", str(_scenario_file(tmp_path, 2.0)), "--out", str(disk), "--no-plots",
                 "--mode", "headless"]) == 4
    summary, junit = disk / "summary.json", disk / "junit.xml"
    assert not summary.exists() or json.loads(summary.read_text())["passed"] is False
    assert not junit.exists() or ET.parse(junit).getroot().get("failures") != "0"
    assert not summary.exists() and not junit.exists()  # here: nothing fits, so nothing claims anything


def test_serve_stops_with_a_clear_error_when_its_log_fills_the_disk(tmp_path, small_disk, capsys):
    disk = small_disk(32)
    assert main(["serve", "--lockstep", "--duration", "600", "-c", f"stops-sfull-{os.getpid()}", "--log",
                 str(disk / "bus.blf")]) == 4
    captured = capsys.readouterr()
    assert "a log could not be written" in captured.err and "No space left on device" in captured.err
    assert "BMS_Status" in captured.out  # the report and the cycle-time table are still printed


# --- a console that goes away (| head, a log collector that died) ---------------------------------------------
def _with_stdout_gone(args, cwd) -> subprocess.CompletedProcess:
    """``args`` run with a standard output whose reader has already gone: every write meets a broken pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "hil.cli", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=cwd, timeout=300)
    finally:
        os.close(write_end)


def test_serve_whose_stdout_is_gone_still_runs_and_writes_its_report(tmp_path):
    done = _with_stdout_gone(["serve", "--lockstep", "--duration", "0.5", "-c", f"stops-pipe-{os.getpid()}",
                              "--json", str(tmp_path / "run.json"), "--log", str(tmp_path / "bus.blf")], tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["complete"] is True and report["stop_reason"] == "duration reached"
    with can.BLFReader(str(tmp_path / "bus.blf")) as reader:
        assert len(list(reader)) == report["log_frames"] > 0


def test_run_whose_stdout_is_gone_still_writes_its_verdict(tmp_path):
    scenario = _scenario_file(tmp_path, duration=1.0)
    done = _with_stdout_gone(["run", str(scenario), "--out", str(tmp_path / "out"), "--mode", "lockstep",
                              "--no-plots", "-c", f"stops-pipe-run-{os.getpid()}"], tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passed"] is True and summary["complete"] is True
