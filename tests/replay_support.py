"""Recordings for the replay tests: the example vehicle's synthetic drive (physics in
``hil.replay.examples.synthetic``), encoded frame by frame by cantools, written by python-can's own writers,
and damaged the ways real logs are damaged."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import can
import cantools

from hil.replay import example_path
from hil.replay.examples.synthetic import frames, synthetic_drive

DBC = example_path("vehicle.dbc")
WRITABLE = (".blf", ".asc", ".log", ".csv", ".trc")   # python-can writes and reads these (and .gz of them)
READABLE = (*WRITABLE, ".db")                          # .db: SQLite in python-can's schema


def vehicle_db():
    return cantools.database.load_file(str(DBC))


def drive(duration_s: float = 30.0):
    return synthetic_drive(duration_s)


def write(path: Path, messages) -> Path:
    """Write ``messages`` with python-can's writer for the suffix (``.gz``: compressed afterwards)."""
    path = Path(path)
    if path.suffix == ".db":
        return _write_sqlite(path, messages)
    plain = path.with_suffix("") if path.suffix == ".gz" else path
    with can.Logger(str(plain)) as logger:
        for msg in messages:
            logger.on_message_received(msg)
    if path.suffix == ".gz":
        with open(plain, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    return path


def _write_sqlite(path: Path, messages) -> Path:
    """python-can's SQLite schema, written directly: its SqliteWriter (4.6) writes one batch of 501 frames
    after ``stop()`` and drops the rest of its queue."""
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE messages (ts REAL, arbitration_id INTEGER, extended INTEGER, remote INTEGER, "
                     "error INTEGER, dlc INTEGER, data BLOB)")
        conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(m.timestamp, m.arbitration_id, m.is_extended_id, m.is_remote_frame, m.is_error_frame,
                           m.dlc, bytes(m.data)) for m in messages])
    conn.close()
    return path


def recording(path: Path, duration_s: float = 30.0, *, edit=None, skip=()) -> tuple[Path, dict]:
    """The example vehicle's drive as a log; ``edit(msg)`` may change a frame or drop it (None)."""
    data = drive(duration_s)
    messages = frames(data, vehicle_db(), skip=skip)
    if edit is not None:
        messages = (m for m in map(edit, messages) if m is not None)
    return write(path, messages), data


def cut(path: Path, fraction: float = 0.5, *, mid_line: bool = True) -> Path:
    """Keep the first ``fraction`` of a file's bytes (for text, ending inside a line when ``mid_line``)."""
    data = path.read_bytes()
    keep = int(len(data) * fraction)
    if mid_line:
        while keep < len(data) and data[keep - 1:keep] in (b"\n", b"\r", b" "):
            keep += 1
    path.write_bytes(data[:keep])
    return path


def mapping(tmp_path: Path, text: str, name: str = "map.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


POWER_MAPPING = """\
[replay]
initial_soc = 0.62
[demand]
power_W = { product = [ { message = "INV_DcLink", signal = "DcCurrent" },
                        { message = "INV_DcLink", signal = "DcVoltage" } ] }
[compare]
soc = { message = "BMS_STATE", signal = "Soc", scale = 0.01 }
current_A = { message = "BMS_HV", signal = "PackCurrent", scale = -1.0 }
pack_voltage_V = { message = "BMS_HV", signal = "PackVoltage" }
[recorded_pack]
series_cells = 96
capacity_Ah = 150.0
"""
