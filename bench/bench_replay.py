"""Reading a recorded drive for a replay: frames per second through python-can's reader, the checks and the
cantools decoding of the mapped messages, per log format, beside the reader alone (the floor). Prints JSON.
Usage: python bench/bench_replay.py [--duration 300] [--formats .blf,.asc,.log]

The log is the shipped example vehicle's synthetic drive (361 frames/s: three 100 Hz messages, one 50 Hz,
one 10 Hz, one 1 Hz) and the example mapping (10 mapped signals in 5 messages). ``cpu_s`` is process CPU
time, steadier than wall time on a shared machine; ``overhead`` is read_recording's CPU over the bare reader's.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import can

from hil.replay import example_path, load_mapping, read_recording
from hil.replay.examples.synthetic import write_log


def _cpu(fn) -> tuple[float, object]:
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of drive (default 300)")
    parser.add_argument("--formats", default=".blf,.asc,.log,.csv,.trc", help="comma-separated suffixes")
    args = parser.parse_args()
    mapping = load_mapping(example_path())
    dbc = example_path("vehicle.dbc")
    out: dict = {"duration_s": args.duration, "formats": {}}
    with tempfile.TemporaryDirectory() as folder:
        for suffix in args.formats.split(","):
            log = Path(folder) / f"drive{suffix}"
            write_log(log, args.duration)
            bare_s, frames = _cpu(lambda path=log: sum(1 for _ in can.LogReader(str(path))))
            read_s, drive = _cpu(lambda path=log: read_recording(path, dbc, mapping))
            out["formats"][suffix] = {"frames": frames, "bytes": log.stat().st_size,
                                      "reader_cpu_s": round(bare_s, 3), "read_recording_cpu_s": round(read_s, 3),
                                      "frames_per_s": round(frames / read_s), "overhead": round(read_s / bare_s, 2),
                                      "checks_failed": len(drive.failed)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
