"""Sweep files in TOML: a base scenario and a design over its parameters.

```toml
[sweep]
name = "aged-packs"
scenario = "base.toml"          # built-in scenario name or a file beside the sweep
seed = 7                        # every member's seed is derived from it
design = "lhs"                  # grid | lhs | sobol | random (Monte Carlo)
members = 64                    # lhs, sobol (a power of 2), random; grid: the product of its levels
replicates = 1                  # members (seeds) per design point
seeds = "per_member"            # or "common": replicate r of every point gets the same seed

[[parameter]]
path = "ambient.temp_C"         # a key of the base scenario, as written in its TOML
min = -20.0
max = 40.0

[[parameter]]
path = "age.capacity_fraction"  # ageing: capacity retained; age.resistance_factor scales R0, R1, R2
distribution = "normal"         # uniform (default) | loguniform | normal | choice
mean = 0.92
sigma = 0.03
min = 0.7                       # a normal is truncated to [min, max] where they are given
max = 1.0
```

Errors are the scenario loader's: file, line, key, what was expected and the nearest valid name.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bms.input_files import parse_toml, suggest

from ..scenario import (
    EXPECT_KINDS,
    FAULT_COMMON,
    FAULT_KINDS,
    STEP_KINDS,
    ScenarioError,
    _check_table,
    _Locator,
    builtin_scenarios,
    parse_scenario,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Sweep", "Parameter", "SweepError", "load_sweep", "parse_sweep", "DESIGNS", "DISTRIBUTIONS"]


class SweepError(ScenarioError):
    """A sweep file is malformed (or a member it makes is not a valid scenario): file, line and key."""


DESIGNS = ("grid", "lhs", "sobol", "random")
DISTRIBUTIONS = ("uniform", "loguniform", "normal", "choice")
MODES = ("headless", "lockstep")
_TOP = {"sweep", "parameter", "report"}
_SWEEP_KEYS = {"name": str, "description": str, "scenario": str, "seed": int, "design": str, "members": int,
               "replicates": int, "mode": str, "seeds": str}
SEEDS = ("per_member", "common")
_PARAMETER_KEYS = {"path": str, "values": list, "min": float, "max": float, "levels": int, "distribution": str,
                   "mean": float, "sigma": float}
_REPORT_KEYS = {"map": list}
# where a path may point: the scenario's tables (pack_overrides by its four sections), and ageing
_PACK_SECTIONS = ("pack", "cell", "spread", "sensors")
_SCENARIO_PATHS = ("initial_soc", "dt_s")
_AMBIENT_PATHS = ("temp_C", "coolant_C")
AGE_PATHS = ("capacity_fraction", "resistance_factor")
_ROOTS = ("scenario", "ambient", "pack_overrides", "bms", "step", "fault", "expect", "age", *_PACK_SECTIONS)


@dataclass(frozen=True)
class Parameter:
    """One swept input: where it goes in the base scenario and how its values are drawn."""
    path: str
    line: int | None
    distribution: str = "uniform"
    values: tuple | None = None
    min: float | None = None
    max: float | None = None
    levels: int | None = None
    mean: float | None = None
    sigma: float | None = None
    integer: bool = False        # the base value is an integer (a repeat count, a cell index): rounded


@dataclass(frozen=True)
class Sweep:
    name: str
    source: str
    base_text: str               # the base scenario's TOML
    base_source: str             # its file: relative paths in it resolve beside it
    seed: int
    design: str
    members: int                 # design points (grid: the product of the levels) x replicates
    replicates: int
    parameters: tuple[Parameter, ...]
    mode: str = "headless"
    seeds: str = "per_member"    # common: replicate r of every point has one seed (common random numbers)
    description: str = ""
    report_map: tuple[str, str] | None = None

    @property
    def points(self) -> int:
        return self.members // self.replicates


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(str(path), None, "file", f"cannot be read: {exc}") from exc
    return parse_sweep(text, str(path))


def _base_scenario(ref: str, source: str, line) -> tuple[str, str]:
    builtins = builtin_scenarios()
    beside = Path(ref) if Path(ref).is_absolute() else Path(source).parent / ref
    if beside.is_file():
        try:  # absolute: what the members name beside it is found from any folder, on any worker
            return beside.read_text(encoding="utf-8"), str(beside.resolve())
        except (OSError, UnicodeDecodeError) as exc:
            raise SweepError(source, line, "sweep.scenario", f"{beside} cannot be read: {exc}") from exc
    if ref in builtins:
        resource = resources.files("hil") / "scenarios" / builtins[ref]
        return resource.read_text(encoding="utf-8"), str(resource)
    raise SweepError(source, line, "sweep.scenario", f"no such file {str(beside)!r} or built-in scenario"
                     f"{suggest(ref, builtins)}")


def parse_sweep(text: str, source: str) -> Sweep:
    try:
        return _parse_sweep(text, source)
    except SweepError:
        raise
    except ScenarioError as exc:  # the scenario loader's checks of a table: the same error, as a sweep's
        if exc.source != source:
            raise
        raise as_sweep_error(exc) from None


def _parse_sweep(text: str, source: str) -> Sweep:
    data = parse_toml(text, source, SweepError, "sweep file")
    loc = _Locator(text)
    for key in data:
        if key not in _TOP:
            raise SweepError(source, loc.line(key) or loc.line(None, key), key, f"unknown table{suggest(key, _TOP)}")
    if "sweep" not in data:
        raise SweepError(source, None, "sweep", "missing: a sweep file needs a [sweep] table")
    head = _check_table(data["sweep"], _SWEEP_KEYS, {"scenario", "design"}, source, loc, "sweep", 0, "sweep")
    design = head["design"]
    if design not in DESIGNS:
        raise SweepError(source, loc.line("sweep", "design"), "sweep.design",
                         f"unknown design {design!r}{suggest(design, DESIGNS)}")
    if head.get("mode", "headless") not in MODES:
        raise SweepError(source, loc.line("sweep", "mode"), "sweep.mode",
                         f"unknown mode {head['mode']!r}{suggest(head['mode'], MODES)}")
    if head.get("seeds", "per_member") not in SEEDS:
        raise SweepError(source, loc.line("sweep", "seeds"), "sweep.seeds",
                         f"unknown choice {head['seeds']!r}{suggest(head['seeds'], SEEDS)}")
    replicates = head.get("replicates", 1)
    if replicates < 1:
        raise SweepError(source, loc.line("sweep", "replicates"), "sweep.replicates",
                         f"expected an integer >= 1, found {replicates}")
    if head.get("seed", 0) < 0:
        raise SweepError(source, loc.line("sweep", "seed"), "sweep.seed", f"expected an integer >= 0, found "
                         f"{head['seed']}")
    base_text, base_source = _base_scenario(head["scenario"], source, loc.line("sweep", "scenario"))
    try:
        base = parse_scenario(base_text, base_source)
    except ScenarioError as exc:
        raise SweepError(source, loc.line("sweep", "scenario"), "sweep.scenario",
                         f"the base scenario is not valid: {exc}") from exc
    base_data = tomllib.loads(base_text)
    # the base scenario's own mode unless the sweep names one (a lockstep scenario stays on its bus)
    default_mode = base.mode if base.mode in MODES else "headless"
    mode = head.get("mode", default_mode)
    if mode == "headless":
        from ..runner import CAN_FAULTS
        needs = [what for what, present in (
            ("[[diag]] requests", base.diag), ("dtc expectations", any(e.kind == "dtc" for e in base.expectations)),
            ("CAN faults", any(f.kind in CAN_FAULTS for f in base.faults))) if present]
        if needs:
            raise SweepError(source, loc.line("sweep", "mode") or loc.line("sweep"), "sweep.mode",
                             f"the base scenario has {', '.join(needs)}, which need the BMS on a bus: set "
                             f"mode = 'lockstep' (default: the base scenario's mode, else headless)")

    entries = data.get("parameter", [])
    if not isinstance(entries, list) or not entries:
        raise SweepError(source, loc.line("parameter"), "parameter", "a sweep needs at least one [[parameter]]")
    parameters = []
    for n, entry in enumerate(entries):
        parameters.append(_parameter(entry, n, design, base, base_data, source, loc))
    paths = [p.path for p in parameters]
    for n, path in enumerate(paths):
        if path in paths[:n]:
            raise SweepError(source, loc.line("parameter", "path", n), f"parameter[{n}].path",
                             f"{path!r} is swept twice")
    if "age.capacity_fraction" in paths and "cell.capacity_Ah" in paths:
        raise SweepError(source, loc.line("parameter", "path", paths.index("cell.capacity_Ah")),
                         "parameter.path", "cell.capacity_Ah and age.capacity_fraction both set the capacity")

    if design == "grid":
        if "members" in head:
            raise SweepError(source, loc.line("sweep", "members"), "sweep.members",
                             "a grid has as many points as the product of its levels: give values or levels")
        points = math.prod(len(p.values) if p.values is not None else int(p.levels or 1) for p in parameters)
    else:
        if "members" not in head:
            raise SweepError(source, loc.line("sweep"), "sweep.members", f"missing (required for design = "
                             f"{design!r})")
        points = head["members"]
        if points < 1:
            raise SweepError(source, loc.line("sweep", "members"), "sweep.members",
                             f"expected an integer >= 1, found {points}")
        if design == "sobol" and points & (points - 1):
            raise SweepError(source, loc.line("sweep", "members"), "sweep.members",
                             f"a Sobol design is balanced for a power of 2 points, found {points} (try "
                             f"{1 << max(0, points - 1).bit_length()})")
    report_map = None
    if "report" in data:
        report = _check_table(data["report"], _REPORT_KEYS, set(), source, loc, "report", 0, "report")
        if "map" in report:
            line = loc.line("report", "map")
            if len(report["map"]) != 2 or any(p not in paths for p in report["map"]):
                raise SweepError(source, line, "report.map", f"expected two swept paths (of {', '.join(paths)}), "
                                 f"found {report['map']!r}")
            report_map = tuple(report["map"])
    return Sweep(name=head.get("name", Path(source).stem), source=source, base_text=base_text,
                 base_source=base_source, seed=head.get("seed", 0), design=design, members=points * replicates,
                 replicates=replicates, parameters=tuple(parameters), mode=mode,
                 seeds=head.get("seeds", "per_member"),
                 description=head.get("description", ""), report_map=report_map)


def _parameter(entry, n: int, design: str, base, base_data: dict, source: str, loc) -> Parameter:
    if not isinstance(entry, dict):
        raise SweepError(source, loc.line("parameter", None, n), f"parameter[{n}]", "expected a table")
    values = _check_table(entry, _PARAMETER_KEYS, {"path"}, source, loc, "parameter", n, f"parameter[{n}]")
    line = loc.line("parameter", None, n)

    def fail(key, message):
        raise SweepError(source, loc.line("parameter", key, n) or line, f"parameter[{n}].{key}", message)

    path = values["path"]
    current = check_path(path, base, base_data, lambda message: fail("path", message))
    integer = isinstance(current, int) and not isinstance(current, bool)
    distribution = values.get("distribution", "choice" if "values" in values else "uniform")
    if design == "grid":
        if "distribution" in values or "mean" in values or "sigma" in values:
            fail("distribution" if "distribution" in values else "mean",
                 "a grid takes values = [...] or min, max and levels (distributions are for lhs, sobol, random)")
        if "values" not in values and not {"min", "max", "levels"} <= set(values):
            fail("values", "missing: a grid parameter needs values = [...] or min, max and levels")
        if "values" in values and {"min", "max", "levels"} & set(values):
            fail("values", "give values or min, max and levels, not both")
        if "levels" in values and values["levels"] < 1:
            fail("levels", f"expected an integer >= 1, found {values['levels']}")
        distribution = "grid"
    else:
        if "levels" in values:
            fail("levels", f"levels are for a grid; design = {design!r} draws {distribution} values")
        if distribution not in DISTRIBUTIONS:
            fail("distribution", f"unknown distribution {distribution!r}{suggest(distribution, DISTRIBUTIONS)}")
        needs = {"uniform": ("min", "max"), "loguniform": ("min", "max"), "normal": ("mean", "sigma"),
                 "choice": ("values",)}[distribution]
        for key in needs:
            if key not in values:
                fail(key, f"missing (required for distribution = {distribution!r})")
        extra = set(values) - {"path", "distribution", *needs} - ({"min", "max"} if distribution == "normal" else set())
        if extra:
            key = sorted(extra)[0]
            fail(key, f"not used by distribution = {distribution!r} (it takes {', '.join(needs)})")
        if distribution == "normal" and values["sigma"] <= 0:
            fail("sigma", f"expected a standard deviation > 0, found {values['sigma']}")
        if distribution == "loguniform" and values["min"] <= 0:
            fail("min", f"a log-uniform range needs min > 0, found {values['min']}")
    if "min" in values and "max" in values and not values["min"] < values["max"]:
        if not (design == "grid" and values.get("levels") == 1 and values["min"] == values["max"]):
            fail("max", f"expected max > min, found min = {values['min']}, max = {values['max']}")
    if "values" in values:
        if not values["values"]:
            fail("values", "expected at least one value")
        for value in values["values"]:
            finite = not isinstance(value, float) or math.isfinite(value)
            if not isinstance(value, (int, float, str, bool)) or not finite:
                fail("values", f"expected numbers, strings or booleans, found {value!r}")
    return Parameter(path=path, line=line, distribution=distribution,
                     values=tuple(values["values"]) if "values" in values else None, min=values.get("min"),
                     max=values.get("max"), levels=values.get("levels"), mean=values.get("mean"),
                     sigma=values.get("sigma"), integer=integer)


def _index(part: str, root: str, count: int, fail) -> int:
    """``step[2]`` -> 2, checked against the base scenario's entries."""
    if not (part.startswith(f"{root}[") and part.endswith("]") and part[len(root) + 1:-1].isdigit()):
        fail(f"expected {root}[N].KEY, found {part!r}")
    index = int(part[len(root) + 1:-1])
    if index >= count:
        fail(f"the base scenario has {count} [[{root}]] entr{'y' if count == 1 else 'ies'} (0..{count - 1}), "
             f"found index {index}")
    return index


def check_path(path: str, base, base_data: dict, fail):
    """Checks that ``path`` names an input of the base scenario; returns its current value (None if unset)."""
    from dataclasses import fields

    from bms.config import BmsConfig
    from bms.params import CellParams, PackParams, SensorParams, SpreadParams

    parts = path.split(".")
    root = parts[0].split("[")[0]
    if root not in _ROOTS:
        fail(f"unknown input {path!r}{suggest(root, _ROOTS)}")
    if root == "pack_overrides":
        parts = parts[1:]
        root = parts[0] if parts else ""
        if root not in _PACK_SECTIONS:
            fail(f"expected pack_overrides.SECTION.KEY{suggest(root, _PACK_SECTIONS)}")
    if len(parts) != 2:
        fail(f"expected TABLE.KEY (such as ambient.temp_C, cell.capacity_Ah, fault[0].at_s), found {path!r}")
    key = parts[1]

    def known(options):
        if key not in options:
            fail(f"unknown key {key!r} of {parts[0]}{suggest(key, options)}")

    if root == "scenario":
        if key == "seed":
            fail("the members' seeds are derived from sweep.seed (use replicates for more seeds per point)")
        known(_SCENARIO_PATHS)
        return base_data.get("scenario", {}).get(key, {"initial_soc": 0.9, "dt_s": 0.01}[key])
    if root == "ambient":
        known(_AMBIENT_PATHS)
        value = base_data.get("ambient", {}).get(key)
        if isinstance(value, list):
            fail(f"the base scenario's {path} is a profile; a sweep sets constants")
        return value
    if root == "age":
        known(AGE_PATHS)
        return None
    if root in _PACK_SECTIONS:
        cls = {"pack": PackParams, "cell": CellParams, "spread": SpreadParams, "sensors": SensorParams}[root]
        known([f.name for f in fields(cls) if "check" in f.metadata])
        overrides = base_data.get("pack_overrides", {}).get(root, {})
        if key in overrides:
            return overrides[key]
        from bms import load_pack
        params = load_pack(base.pack)
        return getattr(params if root == "pack" else getattr(params, root), key)
    if root == "bms":
        known([f.name for f in fields(BmsConfig)])
        return base_data.get("bms", {}).get(key)
    entries = {"step": base.steps, "fault": base.faults, "expect": base.expectations}[root]
    index = _index(parts[0], root, len(entries), fail)
    entry = entries[index]
    vocabulary: dict[str, dict] = {"step": STEP_KINDS, "fault": FAULT_KINDS, "expect": EXPECT_KINDS}
    allowed: dict = {**vocabulary[root][entry.kind], **(FAULT_COMMON if root == "fault" else {})}
    # every value a sweep can write (a number, string or boolean; each member is then checked as a scenario),
    # not a name or a nested table
    allowed = {k: v for k, v in allowed.items() if k != "name" and v is not dict}
    known(allowed)
    if root == "fault" and key == "at_s" and entry.at_s is None:
        fail(f"{parts[0]} fires on a condition (when = ...), not at a time")
    return base_data[root][index].get(key)


def as_sweep_error(exc: ScenarioError) -> SweepError:
    return SweepError(exc.source, exc.line, exc.key, str(exc).split(f"{exc.key}: ", 1)[-1])
