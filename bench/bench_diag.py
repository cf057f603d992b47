"""The diagnostic server's cost, printed as JSON.

1. lockstep node ticks with and without the UDS server (idle: no tester talking), in one run, interleaved:
   microseconds per tick of wall and of process CPU time, and the ratio.
2. a lockstep session with the stock udsoncan client: session change, security access, the 384-byte DID of
   all cell voltages (1 first frame + 55 consecutive frames), all DTCs by status mask, clear: simulated and
   wall time per request.

Usage: python bench/bench_diag.py [--ticks 3000] [--requests 20]
"""
from __future__ import annotations

import argparse
import json
import os
import time

from udsoncan.client import Client

from bms.can import CanNode
from bms.diag import LockstepConnection, client_config, key_for
from bms.emulator import Emulator


def _node(diag, channel):
    return CanNode(Emulator("assb60-192s2p", seed=1, initial_soc=0.7), channel=channel, diag=diag)


def ticks(n: int) -> dict:
    nodes = {"without": _node(None, "bench-diag-a"), "with": _node(True, "bench-diag-b")}
    for node in nodes.values():
        node.run_for(1.0)
    wall = dict.fromkeys(nodes, 0.0)
    cpu = dict.fromkeys(nodes, 0.0)
    for _ in range(10):       # interleaved blocks: both see the same machine load
        for name, node in nodes.items():
            w, c = time.perf_counter(), time.process_time()
            for _ in range(n // 10):
                node.step()
            wall[name] += time.perf_counter() - w
            cpu[name] += time.process_time() - c
    for node in nodes.values():
        node.close()
    out = {f"{k}_diag_us_per_tick_wall": 1e6 * v / n for k, v in wall.items()}
    out.update({f"{k}_diag_us_per_tick_cpu": 1e6 * v / n for k, v in cpu.items()})
    out["diag_cpu_ratio"] = cpu["with"] / cpu["without"]
    return out


def session(requests: int) -> dict:
    node = _node(True, "bench-diag-c")
    conn = LockstepConnection(node)
    figures = {}
    with Client(conn, config=client_config(node.diag.dids)) as client:
        conn.run(1.0)
        client.change_session(3)
        client.send_key(2, key_for(client.request_seed(1).service_data.seed, 1))
        for name, call in (("read_cell_voltages", lambda: client.read_data_by_identifier(0x0110)),
                           ("read_dtcs", lambda: client.get_dtc_by_status_mask(0xFF)),
                           ("tester_present", client.tester_present)):
            t_sim, w = node.t_s, time.perf_counter()
            for _ in range(requests):
                call()
            figures[name] = {"simulated_ms_per_request": 1000 * (node.t_s - t_sim) / requests,
                             "wall_ms_per_request": 1000 * (time.perf_counter() - w) / requests}
    node.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps({"load_average": os.getloadavg(), "ticks": ticks(args.ticks),
                      "session": session(args.requests)}, indent=2))


if __name__ == "__main__":
    main()
