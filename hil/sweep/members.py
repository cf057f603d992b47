"""A sweep's members: each one the base scenario with the design point's values written into its TOML and a
seed of its own, so every member is a scenario file that runs alone exactly as it ran in the sweep.

A member's key is the SHA-256 of its scenario text (its name left out): the manifest finds finished members by
it, so a grown design or a rerun skips what was already run. Its seed comes from the sweep's seed, a hash of
its design point and its replicate number (``SeedSequence`` spawn keys): the same point gets the same seed in
a grid of more levels or a longer Sobol sequence.
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import tomli_w

from ..scenario import ScenarioError, parse_scenario
from .design import STREAM_MEMBER, design_points
from .sweepfile import Sweep, SweepError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Member", "members", "member_seed", "CHECK_ALL_UP_TO"]

CHECK_ALL_UP_TO = 1000


@dataclass(frozen=True)
class Member:
    index: int
    values: dict[str, Any]       # parameter path -> value
    replicate: int
    seed: int
    key: str                     # SHA-256 of the scenario text without its name
    text: str                    # the member's scenario TOML
    source: str                  # the base scenario's file (relative paths resolve beside it)

    @property
    def short_key(self) -> str:
        return self.key[:12]


def member_seed(sweep_seed: int, values: tuple, replicate: int) -> int:
    point = int.from_bytes(hashlib.sha256(json.dumps(list(values)).encode()).digest()[:8], "little")
    state = np.random.SeedSequence(sweep_seed, spawn_key=(STREAM_MEMBER, point, replicate)).generate_state(1, np.uint64)
    return int(state[0]) >> 1  # a TOML integer is signed 64-bit


def _set(data: dict, path: str, value, base_cell) -> None:
    parts = path.split(".")
    head, key = parts[0], parts[-1]
    if head == "age":
        cell = data.setdefault("pack_overrides", {}).setdefault("cell", {})
        if key == "capacity_fraction":
            cell["capacity_Ah"] = base_cell.capacity_Ah * value
        else:
            for name in ("r0_ohm", "r1_ohm", "r2_ohm"):
                cell[name] = cell.get(name, getattr(base_cell, name)) * value
        return
    if head == "pack_overrides":
        data.setdefault("pack_overrides", {}).setdefault(parts[1], {})[key] = value
    elif head in ("pack", "cell", "spread", "sensors"):
        data.setdefault("pack_overrides", {}).setdefault(head, {})[key] = value
    elif "[" in head:
        root, index = head[:-1].split("[")
        data[root][int(index)][key] = value
    else:
        data.setdefault(head, {})[key] = value


def members(sweep: Sweep, *, validate: bool = True) -> list[Member]:
    """Every member in order; ``validate`` parses members as scenarios (a drawn value outside what a scenario
    accepts is reported against the sweep file, naming the member and the parameter): all of them up to
    ``CHECK_ALL_UP_TO``, else the first 64 and each parameter's extremes (the rest are checked as they run:
    a refused one is an error row)."""
    from bms import load_pack

    base_data = tomllib.loads(sweep.base_text)
    ageing = any(p.path.startswith("age.") for p in sweep.parameters)
    base_cell = None
    if ageing:
        head = base_data.get("scenario", {})
        base_cell = load_pack(head.get("pack", "assb60-192s2p"), overrides=base_data.get("pack_overrides")).cell
    out = []
    paths = [p.path for p in sweep.parameters]
    # ageing scales what the rest of the point sets: applied last
    order = sorted(range(len(paths)), key=lambda i: paths[i].startswith("age."))
    for p, point in enumerate(design_points(sweep)):
        for replicate in range(sweep.replicates):
            index = p * sweep.replicates + replicate
            data = copy.deepcopy(base_data)
            for i in order:
                _set(data, paths[i], point[i], base_cell)
            seed = member_seed(sweep.seed, () if sweep.seeds == "common" else point, replicate)
            data.setdefault("scenario", {})["seed"] = seed
            data["scenario"].pop("name", None)
            key = hashlib.sha256(tomli_w.dumps(data).encode()).hexdigest()
            data["scenario"] = {"name": f"{sweep.name}-{index}", **data["scenario"]}
            text = f"# member {index} of sweep {sweep.name!r} ({sweep.source}); key {key[:12]}\n" + tomli_w.dumps(data)
            member = Member(index, dict(zip(paths, point)), replicate, seed, key, text, sweep.base_source)
            out.append(member)
    if validate:
        # every member up to CHECK_ALL_UP_TO (a scenario's checks cost ~20 ms); beyond, the first ones and
        # those holding each parameter's extremes (a value out of a key's range is found there)
        extremes = _extremes(sweep, out)
        chosen = out if len(out) <= CHECK_ALL_UP_TO else list({m.index: m for m in out[:64] + extremes}.values())
        for member in sorted(chosen, key=lambda m: m.index):
            check(sweep, member)
        for member in extremes:
            if any(p.path.split(".")[0].split("[")[0] in _PARAMETER_ROOTS for p in sweep.parameters):
                check_parameters(sweep, member)
    return out


_PARAMETER_ROOTS = ("pack", "cell", "spread", "sensors", "pack_overrides", "age", "bms")


def _extremes(sweep: Sweep, out: list[Member]) -> list[Member]:
    """The members holding each parameter's smallest and largest value (each value of a choice): a value a
    key's checks refuse is found there, without checking every member."""
    chosen: dict[int, Member] = {}
    for p in sweep.parameters:
        values = [m.values[p.path] for m in out]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            picks = [int(np.argmin(values)), int(np.argmax(values))]
        else:
            picks = [values.index(v) for v in dict.fromkeys(values)][:16]
        chosen.update((k, out[k]) for k in picks)
    return list(chosen.values())


def check_parameters(sweep: Sweep, member: Member) -> None:
    """Builds the member's pack and BMS parameters as its run will (``hil.runner.build_emulator``)."""
    from bms import ParameterError, load_config, load_pack

    scenario = parse_scenario(member.text, member.source)
    try:
        load_pack(scenario.pack, overrides=scenario.pack_overrides)
        if scenario.bms_overrides:
            load_config(overrides=scenario.bms_overrides)
    except ParameterError as exc:
        key = exc.key.split(".")[-1]
        line = next((p.line for p in sweep.parameters if p.path.split(".")[-1] == key), None) or \
            next((p.line for p in sweep.parameters if p.path.startswith("age.")), None)
        raise SweepError(sweep.source, line, exc.key, f"member {member.index} ({describe_values(member)}): expected "
                         f"{exc.expected}, found {exc.found!r}" + (f" ({exc.hint})" if exc.hint else "")) from None


def check(sweep: Sweep, member: Member):
    """The member as a scenario; a ScenarioError becomes the sweep file's error at the parameter concerned."""
    try:
        return parse_scenario(member.text, member.source)
    except ScenarioError as exc:
        line = next((p.line for p in sweep.parameters if exc.key.endswith(p.path.split(".")[-1])), None)
        why = str(exc).split(f"{exc.key}: ", 1)[-1]
        raise SweepError(sweep.source, line, exc.key, f"member {member.index} ({describe_values(member)}) is not a "
                         f"valid scenario: {why}") from None


def describe_values(member: Member) -> str:
    return ", ".join(f"{k} = {v:.6g}" if isinstance(v, float) else f"{k} = {v!r}" for k, v in member.values.items())


def standalone_text(member: Member) -> str:
    """The member's scenario with the files it names (cycle CSVs, a pack TOML, a firmware and its DBC) as
    absolute paths, so the text runs from wherever it is written (``--write-member``)."""
    from ..scenario import _pack_path, beside, cycle_path

    data = tomllib.loads(member.text)
    for step in data.get("step", []):
        if step.get("kind") == "drive" and isinstance(step.get("cycle"), str):
            path = cycle_path(step["cycle"], member.source)
            if path is not None:
                step["cycle"] = str(path)
    head = data.get("scenario", {})
    if isinstance(head.get("pack"), str):
        head["pack"] = _pack_path(head["pack"], member.source)
    firmware = data.get("firmware")
    if isinstance(firmware, dict):
        for key in ("path", "dbc"):
            if isinstance(firmware.get(key), str) and firmware[key]:
                first, _, rest = firmware[key].partition(" ")
                absolute = beside(first, member.source)
                if key == "dbc" or firmware.get("kind") != "process" or absolute.exists():
                    firmware[key] = f"{absolute} {rest}".strip()
    first_line = member.text.splitlines()[0]
    return f"{first_line}\n# files it names are absolute paths (relative ones were beside {member.source})\n" + \
        tomli_w.dumps(data)
