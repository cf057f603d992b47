"""A sweep's results: one row per member (its inputs, KPIs, each expectation's verdict and first violation
time, DTCs), kept in an append-only manifest and written as Parquet and CSV.

The manifest (``manifest.jsonl``) gets one JSON line per finished member, flushed and synced as it arrives:
a sweep killed at any instant keeps every member finished before, and a rerun skips them by their key. A last
line cut short by the kill is ignored.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

__all__ = ["member_row", "error_row", "Manifest", "table_rows", "write_tables", "FINISHED", "KPIS"]

# a member with one of these statuses is done: a rerun skips it (lost: its task died with a worker)
FINISHED = ("passed", "failed", "incomplete", "error")
KPIS = ("energy_out_kWh", "energy_in_kWh", "limited_s", "derating_s", "cell_voltage_min_V", "temp_core_max_C",
        "soc_error_rms_pct", "soc_error_max_pct", "soc_end", "simulated_s")


def _limited_s(recording) -> float:
    """Time the VCU asked for more than the BMS allowed (discharge or charge), from the 0.1 s recording."""
    s, t = recording.signals, recording.time_s
    if not t.size:
        return 0.0
    dts = np.diff(t, prepend=t[0])
    demand = s["current_demand_A"]
    over = (demand > s["discharge_limit_A"] + 1e-6) | (-demand > s["charge_limit_A"] + 1e-6)
    return float(np.sum(dts[over]))


def member_row(result) -> dict:
    """What a sweep keeps of a member's run."""
    s = result.summary
    status = "passed" if s["passed"] else ("failed" if s["complete"] else "incomplete")
    row = {"status": status, "energy_out_kWh": s["energy_out_kWh"], "energy_in_kWh": s["energy_in_kWh"],
           "limited_s": _limited_s(result.recording), "derating_s": s["time_in_derating_s"],
           "cell_voltage_min_V": s["cell_voltage_min_V"], "temp_core_max_C": s["temp_core_max_C"],
           "soc_error_rms_pct": s["soc_error_rms_pct"], "soc_error_max_pct": s["soc_error_max_pct"],
           "soc_end": s["soc_end"], "simulated_s": s["simulated_s"],
           "dtcs": " ".join(sorted({f["event"] for f in s["faults"]})),
           "stop_reason": s["stop_reason"], "error": ""}
    for v in result.verdicts:
        row[f"pass:{v.name}"] = bool(v.passed)
        row[f"t_fail_s:{v.name}"] = None if v.passed else v.t_s
    return row


def error_row(message: str, status: str = "error") -> dict:
    return {"status": status, "error": message}


class Manifest:
    """``manifest.jsonl`` in the sweep's folder: member key -> its row (the last line of a key wins)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self._cut = False  # the last line was cut short (a kill while it was written): end it first
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell():
                    f.seek(-1, os.SEEK_END)
                    self._cut = f.read(1) != b"\n"
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # the line being written when the sweep was killed
                    if isinstance(entry, dict) and "key" in entry:
                        self.rows[entry["key"]] = entry

    def finished(self, key: str) -> bool:
        return self.rows.get(key, {}).get("status") in FINISHED

    def add(self, entries: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            if self._cut:
                f.write("\n")
                self._cut = False
            for entry in entries:
                f.write(json.dumps(entry, default=_plain) + "\n")
                self.rows[entry["key"]] = entry
            f.flush()
            os.fsync(f.fileno())


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def table_rows(sweep_members, manifest: Manifest, rerun) -> list[dict]:
    """One row per member of the design in order: inputs first, then what its run gave (nothing yet: pending)."""
    rows = []
    for m in sweep_members:
        entry = manifest.rows.get(m.key, {"status": "pending"})
        row = {"member": m.index, "key": m.short_key, "seed": m.seed, "replicate": m.replicate}
        row.update(m.values)
        row.update({k: v for k, v in entry.items() if k not in ("key", "index")})
        row["rerun"] = rerun(m.index)
        rows.append(row)
    return rows


def _columns(rows: list[dict]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_tables(folder: Path, rows: list[dict]) -> dict[str, Path]:
    """``results.parquet`` and ``results.csv``, each written whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _columns(rows)
    full = [{c: row.get(c) for c in columns} for row in rows]
    data = {}
    for c in columns:
        values = [r[c] for r in full]
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int, float} and float in kinds:
            values = [None if v is None else float(v) for v in values]
        elif len(kinds) > 1:  # a parameter of mixed choices: as text
            values = [None if v is None else str(v) for v in values]
        data[c] = pa.array(values)
    table = pa.table(data)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    parquet = folder / "results.parquet"
    _atomic_bytes(parquet, sink.getvalue().to_pybytes())
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in full:
        writer.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                         for v in row.values()])
    path_csv = folder / "results.csv"
    _atomic_bytes(path_csv, text.getvalue().encode("utf-8"))
    return {"parquet": parquet, "csv": path_csv}
