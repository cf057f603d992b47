"""``bms-emu serve`` answering the stock udsoncan client in another process, over udp_multicast inside a
network namespace the test creates (and removes), with the diagnostic memory kept across a restart."""
from __future__ import annotations

import json
import signal
import subprocess
import textwrap

import pytest
from test_can_crossprocess import GROUP, _popen, _stop, netns  # noqa: F401

TESTER = textwrap.dedent('''
    import json, sys, time
    import can, isotp, udsoncan
    from udsoncan.client import Client
    from bms.can import Codec
    from bms.diag import client_config, key_for, load_did_table
    phase, group = sys.argv[1:3]
    if phase == "first":   # a VCU that talks once and falls silent: VCU_TIMEOUT
        vcu_bus = can.Bus(interface="udp_multicast", channel=group, receive_own_messages=False)
        vcu = Codec()["VCU_Command"]
        for k in range(20):
            data = vcu.protect(vcu.encode({"StateRequest": 1, "ContactorRequest": 0}), k % 16)
            vcu_bus.send(can.Message(arbitration_id=vcu.frame_id, data=data, is_extended_id=False))
            time.sleep(0.01)
        vcu_bus.shutdown()
        time.sleep(1.5)
    # the tester's handle opens only now: a socket nobody read for 1.5 s is full of the BMS's frames (500 a
    # second), and the kernel drops what comes next, the first response among them (seen on a loaded machine)
    bus = can.Bus(interface="udp_multicast", channel=group, receive_own_messages=False)
    out = {}
    try:
        stack = isotp.CanStack(bus, address=isotp.Address(isotp.AddressingMode.Normal_11bits, txid=0x7E0,
                                                          rxid=0x7E8), params={"tx_padding": 0xCC})
        config = client_config(load_did_table(n_series=192, n_temperatures=24), request_timeout=20.0,
                               p2_timeout=10.0, use_server_timing=False)
        with Client(udsoncan.connections.PythonIsoTpConnection(stack), config=config) as client:
            out["session"] = client.change_session(3).service_data.session_echo
            seed = client.request_seed(1).service_data.seed
            out["unlocked"] = client.send_key(2, key_for(seed, 1)).positive
            if phase == "first":
                client.write_data_by_identifier(0xF190, "WASSB00EMU0000314")
            out["vin"] = client.read_data_by_identifier(0xF190).service_data.values[0xF190]
            out["cells"] = client.read_data_by_identifier(0x0110).service_data.values[0x0110]
            dtcs = client.get_dtc_by_status_mask(0x08).service_data.dtcs
            out["confirmed"] = {"%06X" % d.id: d.status.get_byte_as_int() for d in dtcs}
            try:
                client.read_data_by_identifier(0xDD00)
            except udsoncan.exceptions.NegativeResponseException as e:
                out["nrc"] = e.response.code
    finally:
        bus.shutdown()
    print(json.dumps(out))
''')
VCU_TIMEOUT = "1A1087"


def _udp_counters(ns) -> str:
    """The namespace's UDP counters (datagrams dropped for a full receive buffer: RcvbufErrors), for a failure."""
    snmp = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], capture_output=True, text=True).stdout
    sockets = subprocess.run(["ip", "netns", "exec", ns, "ss", "-uamnp"], capture_output=True, text=True).stdout
    return "\n" + "\n".join(line for line in snmp.splitlines() if line.startswith("Udp:")) + "\n" + sockets


def _serve(ns, memory):
    return _popen(ns, ["-m", "hil.cli", "serve", "-i", "udp_multicast", "-c", GROUP, "--rt-priority", "0",
                       "--diag-memory", str(memory)])


def _session(ns, memory, phase):
    server = _serve(ns, memory)
    tester = None
    try:
        first = server.stdout.readline()
        assert "bms-emu serve: BMS on" in first, first + server.stderr.read()
        assert "UDS on ISO-TP, requests 0x7E0" in server.stdout.readline()
        for line in server.stdout:  # the loop runs (power-on may take seconds on a loaded machine)
            if "powered on" in line:
                break
        tester = _popen(ns, ["-c", TESTER, phase, GROUP])
        out, err = _stop(tester, timeout=90)
        assert tester.returncode == 0, err + _udp_counters(ns)
        answers = json.loads(out.strip().splitlines()[-1])
        _, serve_err = _stop(server, signal.SIGTERM, timeout=30)
        assert server.returncode == 0, serve_err
        return answers
    finally:
        for proc in (tester, server):
            if proc is not None and proc.poll() is None:
                _stop(proc, signal.SIGINT)


def test_serve_answers_a_udsoncan_client_in_another_process(netns, tmp_path):  # noqa: F811
    pytest.importorskip("msgpack", reason="python-can's udp_multicast interface needs msgpack")
    memory = tmp_path / "bms-nvm.json"
    first = _session(netns, memory, "first")
    assert first["session"] == 3 and first["unlocked"] and first["nrc"] == 0x31
    assert first["vin"] == "WASSB00EMU0000314"
    assert len(first["cells"]) == 192 and all(3.0 < v < 4.3 for v in first["cells"])
    assert first["confirmed"][VCU_TIMEOUT] & 0x09 == 0x09, first["confirmed"]   # testFailed, confirmed
    stored = json.loads(memory.read_text())
    assert any(r["code"] == int(VCU_TIMEOUT, 16) for r in stored["dtc"]["records"])
    # serve again with the same memory: the DTC and the written VIN are still there, in a new operation cycle
    second = _session(netns, memory, "second")
    assert second["vin"] == "WASSB00EMU0000314"
    assert second["confirmed"][VCU_TIMEOUT] & 0x08 and not second["confirmed"][VCU_TIMEOUT] & 0x02
    assert json.loads(memory.read_text())["dtc"]["operation_cycle"] == stored["dtc"]["operation_cycle"] + 1
