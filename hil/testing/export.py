"""A bench's run as a scenario file: the regression test a failing property leaves behind.

The file holds the bench's pack, seed, initial state and firmware, every segment it ran as a ``[[step]]`` (cycle
slices as CSV files beside it), every fault with the time it was injected and cleared, every frame its tester
injected for the state machine's commands (``[[frame]]``), and the properties that were checked as ``[[expect]]``
entries, so ``bms-emu run FILE --mode lockstep`` fails the same way.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import tomli_w

from .segments import CycleSlice

__all__ = ["scenario_toml", "write_scenario"]


def _firmware_table(spec) -> dict:
    table = {"role": spec.role, "kind": spec.kind}
    for key in ("path", "config", "dbc"):
        value = getattr(spec, key)
        if value:
            table[key] = str(Path(value).resolve()) if key in ("path", "dbc") and spec.kind != "process" else value
    if spec.kind == "process":   # a command line: a program named relative to this folder, made absolute (the
        program, _, rest = spec.path.partition(" ")   # scenario's paths are beside it, wherever it is replayed)
        if not Path(program).is_absolute() and Path(program).is_file():
            table["path"] = f"{Path(program).resolve()} {rest}".strip()
    table["timeout_s"] = float(spec.timeout_s)
    if spec.mapping:
        table["mapping"] = dict(spec.mapping)
    if spec.signals:
        table["signals"] = dict(spec.signals)
    if spec.differential is not None:
        table["differential"] = dict(spec.differential)
    return table


def scenario_toml(bench, expectations=(), *, name: str | None = None) -> tuple[str, dict[str, str]]:
    """(TOML text, {file name: text} of the cycle slices beside it)."""
    s = bench.scenario
    head = {"name": name or s.name, "description": f"exported by hil.testing after {bench.t_s:.2f} s simulated",
            "pack": s.pack, "seed": s.seed, "initial_soc": s.initial_soc, "dt_s": s.dt_s, "mode": "lockstep"}
    data: dict = {"scenario": head}
    if s.pack_overrides:
        data["pack_overrides"] = s.pack_overrides
    data["ambient"] = {"temp_C": s.ambient_C}
    if bench.firmware_spec is not None and bench.firmware_spec.external:
        data["firmware"] = _firmware_table(bench.firmware_spec)
    files: dict[str, str] = {}
    steps = []
    for step, segment in bench.steps:
        steps.append({"kind": step.kind, **step.options})
        if isinstance(segment, CycleSlice):
            files[segment.csv_name()] = segment.csv_text()
    if not steps:  # a scenario needs a step: one tick at rest is what an untouched bench did
        steps.append({"kind": "rest", "duration_s": s.dt_s})
    data["step"] = steps
    faults = []
    end_s = bench.t_s
    for fault in bench.faults.values():
        # a fault injected at the very end, or cleared where it was injected, never acted on the pack: a scenario
        # refuses it (it would never be injected), and leaving it out replays the same run
        if fault.at_s >= end_s - 1e-9 or (fault.clear_at_s is not None and fault.clear_at_s <= fault.at_s + 1e-9):
            continue
        entry = {"kind": fault.kind, "name": fault.name, "at_s": fault.at_s, **fault.options}
        if fault.clear_at_s is not None:
            entry["clear_at_s"] = fault.clear_at_s
        faults.append(entry)
    if faults:
        data["fault"] = faults
    frames = [{"at_s": f.at_s, "message": f.message, "signals": dict(f.signals), "e2e": f.e2e}
              for f in getattr(bench, "frames", ()) if f.at_s < end_s - 1e-9]   # one sent at the end never acted
    if frames:
        data["frame"] = frames
    expects = [{"kind": e.kind, "name": e.name, **e.options} for e in expectations]
    if expects:
        data["expect"] = expects
    return _scenario_text(data), files


def _scenario_text(data: dict) -> str:
    """``data`` as a scenario file is written by hand: the tables in their order, each list of tables as
    ``[[step]]`` blocks (tomli-w writes a short list inline, as ``step = [ {...} ]``, and the tables before it)."""
    blocks = []
    for key, value in data.items():
        entries = value if isinstance(value, list) else [value]
        header = f"[[{key}]]" if isinstance(value, list) else f"[{key}]"
        for entry in entries:
            lines = [header] + [tomli_w.dumps({k: v}).strip() if not isinstance(v, dict) else
                                f"{k} = {_inline_table(v)}" for k, v in entry.items()]
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _inline_table(table: dict) -> str:
    items = [f"{k} = {_inline_table(v)}" if isinstance(v, dict) else tomli_w.dumps({k: v}).strip()
             for k, v in table.items()]
    return "{ " + ", ".join(items) + " }" if items else "{}"


def write_scenario(bench, folder: Path, expectations=(), *, name: str | None = None) -> Path:
    """Write the scenario (named after a hash of its content, so the same failure writes the same file) and its
    cycle files through temporary files and renames; returns the TOML's path."""
    text, files = scenario_toml(bench, expectations, name=name)
    digest = hashlib.sha256((text + "".join(sorted(files.values()))).encode()).hexdigest()[:10]
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, content in files.items():
        _write_atomic(folder / file_name, content)
    path = folder / f"{name or bench.scenario.name}-{digest}.toml"
    _write_atomic(path, text)
    companions[path] = [folder / file_name for file_name in files]
    return path


# a written scenario's path -> the cycle files beside it (the pytest plugin removes a test's superseded cases)
companions: dict[Path, list[Path]] = {}
reported: set[Path] = set()   # the cases tests reported (with their cycle files): never removed as another's


def remove_superseded(paths: list[Path]) -> list[Path]:
    """Of the cases one test wrote (hypothesis's failing examples while it shrinks, in order), keep the last (the
    shrunk case it replays last) and remove the others' files that it does not share; returns what is kept."""
    if not paths:
        return []
    final = paths[-1]
    keep = {final, *companions.get(final, [])}
    reported.update(keep)
    for path in paths[:-1]:
        if path == final or path in reported:   # the shrunk case met on the way, or another test's reported one
            continue
        for file in (path, *companions.pop(path, [])):
            if file not in keep and file not in reported:
                file.unlink(missing_ok=True)
    return [final]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
