"""The live view's telemetry stream, bench control (JSON API, CAN message) and their traces in the results."""
from __future__ import annotations

import json
import threading

import can
import numpy as np
import pytest
from live_support import LiveRun, audit_lines, start_serve_live

from bms import Emulator
from bms.can.codec import Codec
from hil.live import BenchControl, ControlError, LiveSession, Ring, Telemetry
from hil.live.can_control import frame_values, request_from_frame

pytest.importorskip("bokeh", reason="the live view needs the live extra (bokeh)")

OPEN_WIRE = {"kind": "sensor", "sensor": "cell_voltage", "index": 17, "fault": "open_wire"}


# --- the ring and the stream -------------------------------------------------------------------------
def test_ring_keeps_the_newest_and_counts_what_a_reader_missed():
    ring = Ring(5)
    for i in range(12):
        ring.push(i)
    assert len(ring) == 5 and ring.pushed == 12 and ring.overwritten == 7
    items, cursor, missed = ring.since(0)
    assert items == [7, 8, 9, 10, 11] and cursor == 12 and missed == 7
    assert ring.since(cursor) == ([], 12, 0)
    ring.push(12)
    assert ring.since(cursor) == ([12], 13, 0)
    # a reader far behind asks for the newest two only: the rest count as missed
    assert ring.since(9, limit=2) == ([11, 12], 13, 2)
    assert ring.latest() == 12
    with pytest.raises(ValueError, match="capacity"):
        Ring(0)


def test_ring_reader_racing_the_writer_never_sees_a_wrong_sequence():
    ring = Ring(64)
    done = threading.Event()
    bad = []

    def reader():
        cursor = 0
        while not done.is_set():
            items, new_cursor, missed = ring.since(cursor)
            if items and (items != list(range(new_cursor - len(items), new_cursor)) or
                          new_cursor - cursor != len(items) + missed):
                bad.append((cursor, items[:3], new_cursor, missed))
            cursor = new_cursor
    th = threading.Thread(target=reader)
    th.start()
    for i in range(200_000):
        ring.push(i)
    done.set()
    th.join()
    assert not bad


def _emulator():
    return Emulator(seed=2, initial_soc=0.7)


def test_telemetry_decimates_on_simulated_time_and_stays_bounded():
    e = _emulator()
    t = Telemetry(e, period_s=0.5, max_rate_hz=None, capacity=8)
    taken = []
    for _ in range(1000):    # 10 s of 10 ms ticks, offered every tick
        e.tick(20.0)
        if t.offer(e.t_s):
            taken.append(round(e.t_s, 6))
    # the first offer at once, then one per 0.5 s on the grid
    assert taken == [0.01] + [round(0.5 * i, 6) for i in range(1, 21)]
    assert t.samples.pushed == 21 and len(t.samples) == 8 and t.samples.overwritten == 13
    items, _, missed = t.samples.since(0)
    assert [s["t_s"] for s in items] == pytest.approx(taken[-8:]) and missed == 13
    last = items[-1]
    # a snapshot is a copy: the truth it shows does not change when the loop goes on
    v = last["group_voltage_V"].copy()
    e.tick(500.0)
    assert np.array_equal(last["group_voltage_V"], v)
    assert last["group_voltage_V"].shape == (e.pack.params.n_series,)
    assert last["temp_surface_C"].shape == (e.pack.params.n_cells,)
    assert last["soc_true"] == pytest.approx(e.pack.soc, abs=1e-3)


def test_telemetry_wall_rate_limit_skips_but_keeps_the_grid():
    e = _emulator()
    now = [0.0]
    t = Telemetry(e, period_s=0.1, max_rate_hz=2.0, clock=lambda: now[0])
    for _ in range(100):   # 1 s simulated in 0.1 s of (fake) wall time: at most one snapshot per 0.5 s
        e.tick(0.0)
        now[0] += 0.001
        t.offer(e.t_s)
    assert t.samples.pushed == 1 and t.offered == 11 and t.skipped_rate == 10   # t = 0.01, 0.1 ... 1.0


# --- requests in the scenario vocabulary ------------------------------------------------------------
def test_requests_are_checked_by_the_scenario_grammar(tmp_path):
    control = BenchControl(tmp_path / "audit.jsonl", token="t0ken")
    cmd = control.command({"action": "inject", "fault": OPEN_WIRE})
    assert cmd.fault.kind == "sensor" and cmd.fault.options["index"] == 17 and cmd.fault.name == "bench1:sensor"
    for body, message in [
        ({"action": "inject", "fault": {"kind": "sensnor"}}, "did you mean 'sensor'"),
        ({"action": "inject", "fault": {**OPEN_WIRE, "fault": "open"}}, "fault.fault: unknown sensor fault"),
        ({"action": "inject", "fault": {**OPEN_WIRE, "at_s": 3.0}}, "fault.at_s"),
        ({"action": "inject", "fault": {"kind": "internal_short", "cell": 3}}, "fault.resistance_ohm: missing"),
        ({"action": "explode"}, "action: expected"),
        ({"action": "inject"}, "fault: missing"),
        ([1, 2], "expected a JSON object"),
    ]:
        with pytest.raises(ControlError, match=message):
            control.command(body)
    control.close("test")
    refused = [e for e in audit_lines(tmp_path / "audit.jsonl") if e["result"] == "refused"]
    assert len(refused) == 7 and "did you mean 'sensor'" in refused[0]["reason"]
    assert control.check_token("t0ken") and not control.check_token("t0ke") and not control.check_token(None)


def test_can_frame_decodes_to_the_same_request_for_every_fault_kind():
    from hil.live.page import FAULT_EXAMPLES
    from hil.scenario import FAULT_KINDS
    assert set(FAULT_EXAMPLES) == set(FAULT_KINDS)
    db = Codec().db
    message = db.get_message_by_name("HIL_FaultControl")
    for kind, options in FAULT_EXAMPLES.items():
        request = {"action": "inject", "name": f"can5:{kind}", "fault": {"kind": kind, **options}}
        data = message.encode(frame_values(request, key=0x1234, slot=5))
        decoded = message.decode(data, decode_choices=False)
        assert request_from_frame(decoded) == request, kind
        clear = {"action": "clear", "name": f"can5:{kind}"}
        assert request_from_frame(message.decode(message.encode(frame_values(clear, 0x1234, 5)),
                                                 decode_choices=False)) == clear


# --- the JSON API against a real server -------------------------------------------------------------
def test_api_injects_and_clears_refuses_wrong_tokens_and_binds_loopback(tmp_path):
    with LiveRun(tmp_path) as run:
        live = run.live
        host, _port = live.server.bound[0][:2]
        assert host == "127.0.0.1" and all(addr[0] == "127.0.0.1" for addr in live.server.bound)
        state = run.wait_until(lambda: (lambda st: st if st["latest"] else None)(run.get("api/state")),
                               "the first snapshot at the server", 30.0)
        assert state["layout"]["n_modules"] == 12 and state["telemetry"]["snapshots"] >= 1
        vocabulary = run.get("api/faults")["kinds"]
        assert vocabulary["sensor"]["required"] == ["fault", "sensor"]

        inject = {"action": "inject", "name": "ow17", "fault": OPEN_WIRE}
        assert run.post("api/control", inject, None)[0] == 401
        assert run.post("api/control", inject, "not-the-token")[0] == 403
        status, body = run.post("api/control", {"action": "inject", "fault": {"kind": "sensor"}}, live.control.token)
        assert status == 400 and "missing" in body["error"]
        status, body = run.post("api/control", b"{not json", live.control.token)
        assert status == 400 and "not JSON" in body["error"]

        status, body = run.post("api/control", inject, live.control.token)
        assert status == 200, body
        injected_at = body["applied"][0]["t_s"]
        assert run.post("api/control", inject, live.control.token)[0] == 409   # the name is taken
        # the BMS sees the open wire: a confirmed DTC in the stream's fault memory
        run.wait_until(lambda: any(d["name"] == "CELL_VOLTAGE_SENSOR" and "confirmed" in d["bits"]
                                   for s in run.get("api/telemetry?limit=1")["samples"] for d in s["dtcs"]),
                       "a confirmed CELL_VOLTAGE_SENSOR DTC", sim_budget_s=30.0)
        events = run.get("api/events?limit=1000")["events"]
        assert any(e["name"] == "bench:inject:ow17" for e in events)
        status, body = run.post("api/control", {"action": "clear", "name": "ow17"}, live.control.token)
        assert status == 200 and body["applied"][0]["name"] == "ow17"
        assert run.post("api/control", {"action": "clear", "name": "ow17"}, live.control.token)[0] == 404
        assert run.get("api/faults")["active"] == {}
    result = run.result
    s = result.summary
    assert s["injections"]["ow17"] == pytest.approx(injected_at) and "ow17:cleared" in s["injections"]
    assert any(f["event"] == "fault:CELL_VOLTAGE_SENSOR:ERROR" and f["t_s"] >= injected_at for f in s["faults"])
    assert any(f["event"] == "bench:inject:ow17" for f in s["faults"])
    names = [e[1] for e in result.recording.events]
    assert "bench:inject:ow17" in names and "bench:clear:ow17" in names
    audit = audit_lines(run.out / "bench-audit.jsonl")
    reasons = [e.get("reason", "") for e in audit if e["result"] == "refused"]
    assert any("missing token" in r for r in reasons) and "wrong token" in reasons
    applied = [e for e in audit if e["result"] == "applied"]
    assert [e["action"] for e in applied] == ["inject", "clear"] and applied[0]["remote"] == "127.0.0.1"
    assert s["bench_control"] == audit
    assert "not-the-token" not in (run.out / "bench-audit.jsonl").read_text()
    summary = json.loads((run.out / "summary.json").read_text())
    assert summary["bench_control"][-1]["action"] == "clear"


def test_headless_run_refuses_can_faults_but_takes_plant_faults(tmp_path):
    with LiveRun(tmp_path, mode="headless") as run:
        token = run.live.control.token
        status, body = run.post("api/control", {"action": "inject", "fault": {"kind": "bus_off"}}, token)
        assert status == 409 and "need a bus" in body["error"]
        status, body = run.post("api/control", {"action": "inject", "name": "hot",
                                                "fault": {"kind": "coolant_loss", "cooling_factor": 0.0}}, token)
        assert status == 200, body
        assert run.live.target.timeline.cooling_factor == 0.0
    assert run.result.summary["injections"]["hot"] >= 0
    assert any(e["result"] == "failed" and e["fault"]["kind"] == "bus_off"
               for e in audit_lines(run.out / "bench-audit.jsonl"))


# --- the CAN control message ---------------------------------------------------------------------
def test_can_message_injects_and_clears_and_a_wrong_key_is_refused(tmp_path):
    channel = f"live-can-{id(tmp_path)}"
    db = Codec().db
    message = db.get_message_by_name("HIL_FaultControl")
    with LiveRun(tmp_path, can_options={"channel": channel}) as run, \
            can.Bus(interface="virtual", channel=channel) as bench:
        key = run.live.control.can_key
        request = {"action": "inject", "fault": {"kind": "sensor", "sensor": "temperature", "index": 3,
                                                 "fault": "stuck", "value": 80.0}}

        def send(values):
            bench.send(can.Message(arbitration_id=message.frame_id, data=message.encode(values),
                                   is_extended_id=False))
        send(frame_values(request, key=key ^ 0x5A5A, slot=7))
        run.wait_until(lambda: any(e.get("source") == "can" and e["result"] == "refused"
                                   for e in run.live.control.audit), "the wrong key refused", 10.0)
        assert "can7:sensor" not in run.live.control.active
        send(frame_values(request, key=key, slot=7))
        run.wait_until(lambda: "can7:sensor" in run.live.control.active, "the CAN injection applied", 10.0)
        run.wait_until(lambda: any(d["name"] == "TEMPERATURE_SENSOR" or d["name"] == "CELL_OVERTEMP"
                                   for d in run.live.telemetry.samples.latest()["dtcs"]),
                       "the stuck sensor seen by the BMS", 30.0)
        send(frame_values({"action": "clear", "name": "can7:sensor"}, key=key, slot=7))
        run.wait_until(lambda: not run.live.control.active, "the CAN clear applied", 10.0)
    audit = audit_lines(run.out / "bench-audit.jsonl")
    can_entries = [e for e in audit if e.get("source") == "can"]
    assert [e["result"] for e in can_entries] == ["refused", "applied", "applied"]
    assert "wrong ControlKey" in can_entries[0]["reason"]
    assert can_entries[1]["fault"] == {"kind": "sensor", "name": "can7:sensor", "sensor": "temperature", "index": 3,
                                       "fault": "stuck", "value": 80.0}
    assert "can7:sensor" in run.result.summary["injections"]


def test_a_malformed_can_control_frame_is_audited_as_refused(tmp_path):
    """A HIL_FaultControl frame the node cannot decode (a wrong DLC, a fault kind the DBC does not have) is
    counted, and, as every malformed bench request, a refused line of the audit log that says what was wrong."""
    channel = f"live-can-bad-{id(tmp_path)}"
    message = Codec().db.get_message_by_name("HIL_FaultControl")
    with LiveRun(tmp_path, can_options={"channel": channel}) as run, \
            can.Bus(interface="virtual", channel=channel) as bench:
        good = message.encode(frame_values({"action": "clear", "name": "can1:sensor"}, key=run.live.control.can_key,
                                           slot=1))
        for data in (good[:5], bytes([0]) + good[1:]):   # 5 of 8 bytes; FaultKind 0
            bench.send(can.Message(arbitration_id=message.frame_id, data=data, is_extended_id=False))
        run.wait_until(lambda: sum(e.get("source") == "can" for e in run.live.control.audit) >= 2,
                       "both frames audited", 10.0)
    reasons = [e["reason"] for e in audit_lines(run.out / "bench-audit.jsonl") if e.get("source") == "can"]
    assert len(reasons) == 2 and "DLC 5" in reasons[0] and "HIL_FaultControl" in reasons[1], reasons
    assert all(e["result"] == "refused" for e in audit_lines(run.out / "bench-audit.jsonl"))


# --- the finished run: interactive plots in one offline file ------------------------------------------
def test_report_gets_an_offline_interactive_page_and_view_rewrites_it(tmp_path):
    import re

    from hil.cli import main
    from hil.runner import run_scenario
    from hil.scenario import parse_scenario
    scenario = parse_scenario('[[step]]\nkind = "current"\ncurrent_A = 100.0\nduration_s = 20.0\n'
                              '[[fault]]\nkind = "sensor"\nsensor = "cell_voltage"\nindex = 5\nfault = "open_wire"\n'
                              'at_s = 10.0\n', "short.toml")
    result = run_scenario(scenario, out_dir=tmp_path / "out", mode="headless")
    page = result.reports["interactive"].read_text()
    assert result.summary["interactive_plots"] == "report-interactive.html"
    assert "report-interactive.html" in (tmp_path / "out" / "report.html").read_text()
    # BokehJS inline, nothing fetched from elsewhere: it opens offline
    assert not re.search(r"<script[^>]+src=", page) and "Bokeh" in page and len(page) > 500_000
    assert "soc_estimated" in page   # the data are in the page
    (tmp_path / "out" / "report-interactive.html").unlink()
    assert main(["view", str(tmp_path / "out"), "--no-open"]) == 0
    again = (tmp_path / "out" / "report-interactive.html").read_text()
    assert "fault:CELL_VOLTAGE_SENSOR:ERROR" in again       # the events, from summary.json
    assert main(["view", str(tmp_path), "--no-open"]) == 2  # not a run's folder


# --- serve --live in a real process -----------------------------------------------------------------
def test_serve_live_prints_its_token_binds_loopback_and_takes_an_injection(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    assert subprocess.run([sys.executable, "-m", "hil.cli", "serve", "--live", "--live-host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=120).returncode == 2
    proc, lines, base, token = start_serve_live(tmp_path, "--json", str(tmp_path / "serve.json"))
    try:
        assert f"?token={token}" in "".join(lines)
        body = json.dumps({"action": "inject", "name": "ow3", "fault": {**OPEN_WIRE, "index": 3}}).encode()
        request = urllib.request.Request(base + "api/control", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=120) as r:
            applied = json.load(r)["applied"][0]
        assert applied["fault"]["index"] == 3
        start = applied["t_s"]
        while True:   # bounded by simulated time: serve runs in real time, so 30 s of it
            with urllib.request.urlopen(base + "api/telemetry?limit=1", timeout=120) as r:
                sample = json.load(r)["samples"][-1]
            if any(d["name"] == "CELL_VOLTAGE_SENSOR" for d in sample["dtcs"]):
                break
            assert sample["t_s"] - start < 30.0, "the open wire was not seen by the BMS"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    audit = audit_lines(tmp_path / "bench-audit.jsonl")
    assert [(e["action"], e["result"]) for e in audit] == [("inject", "applied")]


def test_serve_live_bus_off_from_the_bench_control_is_named_as_the_end_of_the_run(tmp_path):
    """bus_off from the bench control takes the BMS off the bus, which ends serve (exit 3): its report and
    error say that the injection did it, not that the adapter failed (once, not twice over)."""
    import os
    import urllib.request

    proc, _, base, token = start_serve_live(tmp_path, "-c", f"live-busoff-{os.getpid()}", "--json",
                                            str(tmp_path / "serve.json"))
    try:
        body = json.dumps({"action": "inject", "name": "off", "fault": {"kind": "bus_off"}}).encode()
        request = urllib.request.Request(base + "api/control", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=120) as r:
            applied = json.load(r)["applied"][0]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err
    said = f"bus-off injected ('off' at t = {applied['t_s']:.2f} s): the BMS left the bus"
    assert said in err and said in out
    report = json.loads((tmp_path / "serve.json").read_text())
    assert report["stop_reason"].startswith(f"the bus failed: {said}") and "bus failure:" not in report["stop_reason"]


def test_serve_live_starts_its_server_before_the_bms_powers_on(tmp_path):
    """The live server's start (a process of its own: about a second) came after power-on, with the wall
    clock already running: serve began with dozens of skipped ticks, the BMS silent on the bus for that
    long. The server is now up (its banner printed) before power-on starts the clock."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hil.cli", "serve", "--live", "--live-port", "0", "--rt-priority",
                           "0", "--duration", "0.5", "-c", f"live-order-{os.getpid()}", "--json",
                           str(tmp_path / "serve.json")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    banner = next(k for k, line in enumerate(lines) if line.startswith("live view: http://127.0.0.1:"))
    assert banner < next(k for k, line in enumerate(lines) if "powered on, running" in line), lines
    assert json.loads((tmp_path / "serve.json").read_text())["stop_reason"] == "duration reached"


@pytest.mark.parametrize("command", [["serve", "--duration", "1", "--rt-priority", "0"],
                                     ["run", "--mode", "paced", "--max-sim-s", "1", "--no-plots"]])
def test_a_live_port_in_use_is_a_clear_error_not_a_traceback(tmp_path, command):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "hil.cli", *command, "--live", "--live-port", str(port),
                               "-c", f"live-port-{os.getpid()}"], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"the live view's server did not start on 127.0.0.1:{port}" in done.stderr
    assert "Address already in use" in done.stderr


def test_serve_live_survives_requests_of_megabytes_and_deep_nesting(tmp_path):
    """A refused request is audited with what it held, carried to the loop's process over the link. A 2 MB
    request (with or without the token) made a packet larger than the link's reader takes: the loop read
    it cut short and serve died in pickle.loads, with a traceback and no report. Arrays nested 100,000
    deep were a 500. Now: 401 / 400 answers, serve runs on and writes its report."""
    import os
    import signal
    import urllib.error
    import urllib.request

    proc, _, base, token = start_serve_live(tmp_path, "-c", f"live-big-{os.getpid()}", "--json",
                                            str(tmp_path / "serve.json"), until="powered on")
    try:
        big = json.dumps({"action": "inject", "name": "x" * 2_000_000, "fault": {"kind": "coolant_loss"}}).encode()
        deep = b'{"action": "inject", "fault": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        answers = []
        for body, bearer in ((big, None), (big, token), (deep, token)):
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            request = urllib.request.Request(base + "api/control", data=body, method="POST", headers=headers)
            try:
                urllib.request.urlopen(request, timeout=120)
            except urllib.error.HTTPError as exc:
                answers.append(exc.code)
                assert len(exc.read()) < 2_000   # the refusal quotes the 2 MB name cut short
        with urllib.request.urlopen(base + "api/state", timeout=120) as r:
            assert r.status == 200   # the server and the loop behind it are still there
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert answers == [401, 400, 400]
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "SIGTERM" in json.loads((tmp_path / "serve.json").read_text())["stop_reason"]
    summary = json.loads((tmp_path / "serve.json").read_text())
    assert summary["complete"] is False and "Traceback" not in out


def test_a_request_refused_just_before_the_end_is_in_the_audit_log(tmp_path):
    """The server hands a refusal's audit entry to the loop, which writes it at its next recording tick. A
    run that ended before that tick closed the log first: the line was lost (seen with SIGTERM right after a
    refused request). The entry is in the link once the answer came; closing the session writes it."""
    import os
    import urllib.error
    import urllib.request

    from bms.can import CanNode

    audit = tmp_path / "bench-audit.jsonl"
    live = LiveSession(audit_path=audit, port=0)
    node = CanNode(Emulator(seed=0), channel=f"live-close-{os.getpid()}")
    try:
        live.attach(node.emulator, node=node, info={"scenario": "serve"})
        live.start()
        request = urllib.request.Request(live.server.url + "api/control", data=b"{}", method="POST",
                                         headers={"Authorization": "Bearer not-the-token"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=120)
        assert answer.value.code == 403
    finally:
        live.close("stopped")   # no tick ran since the request
        node.close()
    assert [(e["result"], e["reason"]) for e in audit_lines(audit)] == [("refused", "wrong token")]
