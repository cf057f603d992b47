"""From a failing member to a minimal case: the testing kit's drive strategies (``hil.testing.strategies``)
search drives at the member's point (its pack, ageing, ambient, SOC, faults and seed kept) and hypothesis
shrinks the first drive that fails one of the member's failed expectations to the smallest such drive,
written as a scenario (``bms-emu run`` replays it). The pack left at rest is tried first: a failure no drive
causes is written as a short rest, and said so.

A drive counts only if its run is complete and every fault the member's own run injected was injected again
(a drive too short for its fault proves nothing about the fault's reaction).
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ..report import write_text_atomic
from .members import Member, standalone_text
from .sweepfile import Sweep

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ShrinkResult", "shrink_member"]


@dataclass
class ShrinkResult:
    member: Member
    failed: list[str]                    # the member's own failed expectations
    path: Path | None = None             # the minimal scenario (None: no failing drive found)
    drive: list = field(default_factory=list)
    reproduced: list[str] = field(default_factory=list)   # which of them the minimal drive fails
    examples: int = 0
    message: str = ""


def shrink_member(sweep: Sweep, member: Member, out_dir: str | Path, *, max_examples: int = 40,
                  max_segments: int = 4, max_runs: int | None = None) -> ShrinkResult:
    """``max_examples`` drives drawn at most before one fails; ``max_runs`` (default 8 x max_examples) runs in all,
    shrinking included: past it the smallest failing drive so far is the answer."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import HypothesisException

    from ..load import LoadProgram
    from ..runner import run_scenario
    from ..scenario import ScenarioError, parse_scenario
    from ..testing.segments import CycleSlice, Rest
    from ..testing.strategies import drives

    mode = sweep.mode
    scenario = parse_scenario(member.text, member.source)
    own = run_scenario(scenario, mode=mode, plots=False)
    failed = [v.name for v in own.verdicts if not v.passed]
    result = ShrinkResult(member, failed)
    if not failed:
        result.message = f"member {member.index} passes: nothing to shrink"
        return result
    injected = set(own.recording.injections)
    planned_s = LoadProgram(scenario).planned_duration_s()
    folder = Path(out_dir) / f"shrink-{member.index}"
    folder.mkdir(parents=True, exist_ok=True)
    data = tomllib.loads(standalone_text(member))
    data["scenario"]["name"] = f"{data['scenario']['name']}-shrunk"

    def scenario_text(drive) -> str:
        case = copy.deepcopy(data)
        case["step"] = [{"kind": s.kind, **s.step_options()} for s in drive]
        for s in drive:  # a slice of a cycle is a CSV beside the scenario
            if isinstance(s, CycleSlice) and not (folder / s.csv_name()).exists():
                write_text_atomic(folder / s.csv_name(), s.csv_text())
        return f"# the smallest drive found failing {', '.join(failed)} at member {member.index}'s point\n" + \
            tomli_w.dumps(case)

    found: dict = {}
    failing: dict[str, dict] = {}
    max_runs = max_runs if max_runs is not None else 8 * max_examples
    longest_s = max(0.1, min(planned_s, 600.0))

    # around the member: its own steps, each kept or dropped, its current or power and its length scaled
    # down (shrinking toward fewer, gentler, shorter steps); and the kit's drives of no more than its length
    around = _around(scenario.steps)
    anywhere = drives(max_segments=max_segments, max_total_s=longest_s, max_duration_s=longest_s,
                      kinds=("rest", "current", "power", "cycle"))

    def attempt(drive) -> tuple[str, list[str], float]:
        """The drive's scenario text, which of the member's failed expectations it fails (none where the run does
        not count) and the first failure's time."""
        result.examples += 1
        text = scenario_text(drive)
        try:
            case = parse_scenario(text, str(folder / "shrunk.toml"))
        except ScenarioError:  # a fault after the drive's end, and the like: not a case of the member's failure
            return text, [], math.nan
        run = run_scenario(case, mode=mode, plots=False)
        if not run.summary["complete"] or not injected <= set(run.recording.injections):
            return text, [], math.nan
        again = [v for v in run.verdicts if not v.passed and v.name in failed]
        first = min((v.t_s for v in again if v.t_s is not None), default=math.nan)
        return text, [v.name for v in again], first

    # first the pack at rest for as long as the member's drive: a failure that needs no drive at all is told
    # apart at once (and written as a rest just past its first violation), before any search
    at_rest = [Rest(round(longest_s, 1))]
    text, again, first = attempt(at_rest)
    if again:
        found.update(text=text, drive=at_rest, again=again)
        end = max([first, *own.recording.injections.values()])  # and past every fault the member injected
        if end == end and end + 0.2 < longest_s:
            short = [Rest(math.ceil((end + 0.1) * 10 - 1e-9) / 10)]
            text, again_short, _ = attempt(short)
            if again_short:
                found.update(text=text, drive=short, again=again_short)
    else:
        @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True, print_blob=False,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
        @given(st.one_of(around, anywhere) if around is not None else anywhere)
        def still_fails(drive):
            if not drive:
                return
            key = repr(drive)
            if key in failing:  # known (hypothesis replays its minimal example last)
                _failed(found, failing[key])
            if result.examples >= max_runs:
                return  # the budget is spent: the smallest failure so far stands
            text, again, _ = attempt(drive)
            if again:
                failing[key] = dict(text=text, drive=list(drive), again=again)
                _failed(found, failing[key])

        try:
            still_fails()
        except AssertionError:
            pass
        except HypothesisException as exc:  # every drawn drive filtered out, a flaky replay: what was found stands
            if not found:
                result.message = f"the search ended without a case: {type(exc).__name__}: {exc}"
                return result
    if not found:
        result.message = (f"no drive of up to {max_segments} segments and {longest_s:g} s failed "
                          f"{', '.join(failed)} in {result.examples} examples (the member's own scenario: "
                          f"--write-member {member.index})")
        return result
    result.path = folder / "shrunk.toml"
    write_text_atomic(result.path, found["text"])  # the last failing example: hypothesis replays the minimal
    result.drive, result.reproduced = found["drive"], found["again"]
    total = sum(getattr(s, "duration_s", 0.0) for s in result.drive)
    result.message = (f"{', '.join(result.reproduced)} fails with {len(result.drive)} segment(s), {total:g} s "
                      f"(the member's drive: {planned_s:g} s) in {result.examples} runs")
    if all(isinstance(s, Rest) for s in result.drive):
        result.message += ": the pack at rest fails, no drive is needed (the member's point is the cause)"
    return result


def _failed(found: dict, case: dict) -> None:
    """One place that raises: hypothesis takes failures raised from two lines for two different bugs."""
    found.update(case)
    raise AssertionError(f"{', '.join(case['again'])} failed")


def _around(steps):
    """Drives made of the member's own steps: each kept or not, its current or power times a fraction, its
    length times a fraction (whole 0.1 s, at least one); None where a step is of a kind not scaled here."""
    from hypothesis import strategies as st

    from ..cycles import builtin_cycles, load_cycle
    from ..testing.segments import Current, CycleSlice, Power, Rest

    def tenths(seconds: float, g: float) -> float:
        return max(0.1, round(round(seconds * g * 10) / 10, 1))

    makers = []
    for step in steps:
        o = step.options
        if step.kind == "current":
            makers.append(lambda f, g, o=o: Current(round(o["current_A"] * f, 1), tenths(o["duration_s"], g)))
        elif step.kind == "power":
            makers.append(lambda f, g, o=o: Power(round(o["power_W"] * f, 0), tenths(o["duration_s"], g)))
        elif step.kind == "rest":
            makers.append(lambda f, g, o=o: Rest(tenths(o["duration_s"], g)))
        elif step.kind == "drive" and str(o["cycle"]).lower() in builtin_cycles():
            length = float(int(load_cycle(o["cycle"]).duration_s))
            makers.append(lambda f, g, length=length, o=o: CycleSlice(o["cycle"].lower(), 0.0,
                                                                      max(1.0, float(round(length * g)))))
        else:
            return None
    # tenths of the member's value: drawn often at the member's own (hypothesis favours a range's ends),
    # shrunk toward a tenth of it
    fraction = st.integers(1, 10).map(lambda k: k / 10)
    keep = st.booleans() if len(makers) > 1 else st.just(True)  # shrinks toward dropping a step
    picks = st.tuples(*(st.tuples(keep, fraction, fraction) for _ in makers))
    return picks.map(lambda chosen: [make(f, g) for make, (kept, f, g) in zip(makers, chosen) if kept])
