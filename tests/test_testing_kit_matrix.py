"""The testing kit on a vehicle matrix (issue 16 item 5): one test body, written against the built-in DBC's names,
runs through pytester on the built-in DBC and on the example CAN FD matrix (its map), and both agree."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bms.can import Codec
from bms.errors import BmsError
from hil.matrix import load_matrix_map
from hil.testing import Bench
from hil.testing.tester import Tester

pytest_plugins = ["pytester"]

MAP = Path(__file__).resolve().parents[1] / "hil" / "matrix" / "examples" / "ev_fd_bms.toml"

# written only against the built-in DBC: the tester drives the BMS (no VCU model) and reads it back
BODY = '''
import json, os
from bms.controller import BmsState
from hil.testing import Power

def test_drive(bms_bench_factory, bms_matrix):
    bench = bms_bench_factory(vcu="none", initial_soc=0.6)
    tester = bench.tester
    tester.start_periodic("VCU_Command", {"StateRequest": 2, "ContactorRequest": 0})   # DRIVE
    status = tester.expect("BMS_Status", {"BmsState": int(BmsState.READY)}, within_ms=3000)
    assert status["ContactorMainPositive"] == 1 and status["ContactorMainNegative"] == 1
    assert bench.state == "READY"
    t_ready_s = bench.t_s
    bench.run(Power(30_000.0, 0.5))
    limit_A = tester.expect_signal("BMS_Limits", "DischargeCurrentLimit", within_ms=200, min_value=1.0)
    soc = tester.expect("BMS_SOC", within_ms=1000)["SOC"]
    with open(os.environ["KIT_OUT"] + ("-matrix" if bms_matrix else "-dbc") + ".json", "w") as f:
        json.dump({"t_ready_s": t_ready_s, "limit_A": limit_A, "soc_pct": soc,
                   "true_limit_A": bench.emulator.bms.limits.discharge_current_A}, f)
'''


def _resolution_A() -> float:
    """One step of the built-in DischargeCurrentLimit plus one of the matrix's (the tester on a matrix reads
    the matrix value through the built-in signal's encoding)."""
    builtin = Codec()["BMS_Limits"].signals["DischargeCurrentLimit"].scale
    matrix = load_matrix_map(MAP).codec["BMS_Power"].signals["BMS_DchgILim"].scale
    return builtin + matrix


def test_same_body_runs_on_the_builtin_dbc_and_on_the_matrix(pytester, monkeypatch):
    out = pytester.path / "out"
    monkeypatch.setenv("KIT_OUT", str(out))
    pytester.makepyfile(test_inner=BODY)
    for args in ((), ("--bms-matrix", str(MAP))):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args)
        result.assert_outcomes(passed=1)
    dbc = json.loads(Path(f"{out}-dbc.json").read_text())
    matrix = json.loads(Path(f"{out}-matrix.json").read_text())
    # lockstep, the same seed: READY is seen at the same tick give or take one period of the status message
    period_s = max(Codec()["BMS_Status"].cycle_time_s, load_matrix_map(MAP).codec["BMS_State"].cycle_time_s)
    assert abs(dbc["t_ready_s"] - matrix["t_ready_s"]) <= period_s + 1e-9
    assert abs(dbc["limit_A"] - matrix["limit_A"]) <= _resolution_A()
    for run in (dbc, matrix):
        assert abs(run["limit_A"] - run["true_limit_A"]) <= _resolution_A()
    assert abs(dbc["soc_pct"] - matrix["soc_pct"]) <= 0.1 + 0.01 * 100 * 0.01   # built-in 0.1 %, matrix 0.01 %


def test_a_missing_map_file_is_a_usage_error(pytester):
    pytester.makepyfile(test_inner="def test_x(bms_bench):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "--bms-matrix", "nope.toml")
    assert result.ret != 0
    assert "--bms-matrix: no such file nope.toml" in result.stderr.str()


def test_names_the_map_does_not_carry_fail_naming_them_and_the_map():
    with Bench(vcu="none", matrix=MAP) as bench:
        tester = Tester(bench)
        try:
            with pytest.raises(BmsError, match=r"HIL_Load: not mapped by the matrix map .*ev_fd_bms\.toml"):
                tester.send("HIL_Load", {"LoadCurrent": 10.0})
            with pytest.raises(BmsError, match=r"BMS_SOP: not mapped by the matrix map .*ev_fd_bms\.toml"):
                tester.expect("BMS_SOP", within_ms=100)
            assert bench.t_s == 0.0     # failed before stepping the bench
            with pytest.raises(BmsError, match=r"VCU_Command: no signal\(s\) Nope"):
                tester.send("VCU_Command", {"Nope": 1})
        finally:
            tester.close()


def test_a_signal_the_map_leaves_out_fails_naming_it(tmp_path):
    import shutil
    shutil.copy(MAP.with_suffix(".dbc"), tmp_path / "ev_fd_bms.dbc")
    text = "".join(line for line in MAP.read_text().splitlines(keepends=True)
                   if not line.startswith("contactor_request ="))
    (tmp_path / "partial.toml").write_text(text)
    with Bench(vcu="none", matrix=tmp_path / "partial.toml") as bench:
        tester = Tester(bench)
        try:
            tester.send("VCU_Command", {"StateRequest": 2})     # what the map carries goes out
            with pytest.raises(BmsError, match=r"VCU_Command: signal\(s\) ContactorRequest not mapped by the "
                                               r"matrix map .*partial\.toml"):
                tester.send("VCU_Command", {"StateRequest": 2, "ContactorRequest": 1})
        finally:
            tester.close()


@pytest.mark.parametrize("matrix, request_id, response_id", [(None, 0x7E0, 0x7E8), (MAP, 0x18DA40F1, 0x18DAF140)])
def test_uds_answers_on_the_maps_diagnostic_ids(matrix, request_id, response_id):
    """``run --matrix`` and the kit's matrix bench (both a ``CanLoop``) take the map's [diagnostics] ids, as
    ``serve --matrix`` does: TesterPresent as one ISO-TP single frame, its positive response on the response id."""
    import can

    with Bench(vcu="none", matrix=matrix) as bench:
        tester = Tester(bench)
        listener = can.Bus(interface="virtual", channel=bench.channel, receive_own_messages=False)
        try:
            assert load_matrix_map(MAP).diagnostics["request_id"] == 0x18DA40F1   # what the example map says
            extended = request_id > 0x7FF
            tester.send_frame(can.Message(arbitration_id=request_id, is_extended_id=extended,
                                          data=bytes([0x02, 0x3E, 0x00]) + b"\xcc" * 5))
            bench.advance(0.1)
            frames = iter(lambda: listener.recv(0), None)
            answers = [bytes(f.data[:3]) for f in frames
                       if f.arbitration_id == response_id and f.is_extended_id == extended]
            assert answers == [bytes([0x02, 0x7E, 0x00])]
        finally:
            listener.shutdown()
            tester.close()
