"""Diagnostics in scenarios: the same lockstep session twice gives identical logs; malformed diagnostic
entries are refused with the file, line and key."""
from __future__ import annotations

import can
import pytest

from hil.runner import run_scenario
from hil.scenario import ScenarioError, load_scenario, parse_scenario


def test_two_lockstep_runs_of_a_diagnostic_scenario_give_identical_logs(tmp_path):
    scenario = load_scenario("diagnostics")
    logs, events = [], []
    for run in range(2):
        paths = [tmp_path / f"run{run}.blf", tmp_path / f"run{run}.asc"]
        result = run_scenario(scenario, out_dir=None, mode="lockstep", max_sim_s=33.5,
                              can_options={"log": [str(p) for p in paths]})
        logs.append([p.read_bytes() for p in paths])
        events.append(result.recording.events)
    assert logs[0] == logs[1], "same scenario, same seed: the bus logs must be identical byte for byte"
    assert events[0] == events[1]
    names = [name for _, name, _ in events[0]]
    for expected in ("uds:vin:positive", "uds:cells_dropped:timeout", "uds:cells_again:positive",
                     "dtc:P1A0B-64:confirmed", "diag:operation_cycle:3"):
        assert expected in names, expected
    frames = list(can.BLFReader(str(tmp_path / "run0.blf")))
    requests = [m for m in frames if m.arbitration_id == 0x7E0]
    answers = [m for m in frames if m.arbitration_id == 0x7E8]
    # the cell voltages whole once (56 frames), and once cut off: the tester stops after the lost frame, so the
    # BMS sends the first block (8) and gives up waiting for its flow control (N_Bs)
    assert len(requests) >= 10 and len(answers) >= 56 + 8


BASE = """
[scenario]
name = "bad"
mode = "lockstep"
[[step]]
kind = "rest"
duration_s = 5.0
"""


@pytest.mark.parametrize("extra, key, words", [
    ('[[diag]]\nat_s = 1.0\nrequest = "read_didd"\ndid = 1\n', "diag[0].request", "did you mean 'read_did'"),
    ('[[diag]]\nat_s = 1.0\nrequest = "read_did"\n', "diag[0].did", "missing"),
    ('[[diag]]\nrequest = "session"\n', "diag[0].at_s", "missing"),
    ('[[diag]]\nat_s = 1.0\nrequest = "raw"\npayload = "2G"\n', "diag[0].payload", "hexadecimal"),
    ('[[diag]]\nat_s = 1.0\nrequest = "session"\nsession = "programming"\n', "diag[0].session", "extended"),
    ('[[diag]]\nat_s = 1.0\nrequest = "session"\ncolour = 1\n', "diag[0].colour", "unknown key"),
    ('[[fault]]\nkind = "isotp"\nfault = "drop_frame"\nat_s = 1.0\n', "fault[0].fault", "drop_cf"),
    ('[[fault]]\nkind = "isotp"\nfault = "drop_cf"\nindex = 0\nat_s = 1.0\n', "fault[0]", "index"),
    ('[[fault]]\nkind = "isotp"\nfault = "late_fc"\nside = "tester"\nat_s = 1.0\n', "side", "[[diag]]"),
    ('[[fault]]\nkind = "uds_pending"\nduration_s = -1.0\nat_s = 1.0\n', "fault[0]", "duration_s"),
    ('[[expect]]\nkind = "dtc"\ndtc = "CELL_OVERVOLTAG"\nstatus = "confirmed"\n', "expect[0].dtc",
     "CELL_OVERVOLTAGE"),
    ('[[expect]]\nkind = "dtc"\ndtc = "P1A00-17"\nstatus = "confirmd"\n', "expect[0].status", "confirmed"),
    ('[[expect]]\nkind = "dtc"\ndtc = "P1A00-17"\nstatus = "pending"\nwithin_cycles = -1\n', "expect[0]",
     "within_cycles"),
])
def test_malformed_diagnostic_entries_name_file_line_and_key(extra, key, words):
    with pytest.raises(ScenarioError) as e:
        parse_scenario(BASE + extra, "bad.toml")
    text = str(e.value)
    assert text.startswith("bad.toml:") and key in text and words in text, text
    line = int(text.split(":")[1])
    assert 8 <= line <= 8 + extra.count("\n"), text


def test_diagnostics_need_a_bus():
    scenario = parse_scenario(BASE + '[[diag]]\nat_s = 1.0\nrequest = "tester_present"\n', "d.toml")
    with pytest.raises(ScenarioError, match="^d.toml:8: diag: .*need the BMS on a bus"):
        run_scenario(scenario, mode="headless")


def test_a_diag_request_without_the_builtin_bms_is_refused_at_its_line():
    from hil.scenario_checks import check_diagnostics
    scenario = parse_scenario(BASE + '[[diag]]\nat_s = 1.0\nrequest = "tester_present"\n'
                              '[[diag]]\nat_s = 2.0\nrequest = "read_dtc"\n', "d.toml")
    with pytest.raises(ScenarioError, match=r"^d.toml:8: diag\[0\]: a \[\[diag\]\] request \(tester_present\) needs"):
        check_diagnostics(scenario, builtin_bms=False)
