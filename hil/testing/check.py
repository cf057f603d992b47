"""Run a drawn case on a bench and check the kit's safety properties: the body of a property test.

``check(drive, ...)`` builds a bench (the session's firmware, preset and seed unless given), applies the faults at
their times while the drive runs, checks every property on the recording, and on a failure writes the case as a
scenario (``bms-emu run`` replays it) and raises ``PropertyFailed`` naming the file.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hil.scenario import Expectation

from . import options as _options
from .bench import Bench
from .pool import ready_bench
from .segments import Rest, Segment

__all__ = ["PropertyFailed", "check", "DEFAULT_PROPERTIES", "expectations", "record_export", "take_exports",
           "keep_failed_bench", "take_failed_bench"]

# property -> its options (hil.properties): the safety properties a BMS and a VCU must keep
DEFAULT_PROPERTIES = {
    "current_within_limits": {"tolerance_A": 5.0, "grace_s": 0.2},
    "contactors_open_on_error": {"reaction_s": 0.1},
    "no_charge_below_0C": {"tolerance_A": 1.0, "grace_s": 0.2},
    "soc_within_3sigma": {"margin": 0.01},
    "dtc_for_every_reaction": {},
}

_exports: list = []
# the last failing bench's description (simulated time, state, faults, frames) and a machine example's export
_failed_bench: list[tuple[str, Callable[[], Path] | None]] = []


def record_export(path) -> None:
    _exports.append(path)


def keep_failed_bench(bench: Bench, unexported: list[Expectation] | None = None) -> None:
    """Keep ``bench``'s description for the failure report (``take_failed_bench``); with ``unexported`` (the
    properties of a state machine's example) also a way to write its run as a counterexample, which the plugin
    takes if the test fails without one (a subclass's own invariant or rule failed)."""
    export = None if unexported is None else lambda: bench.export(
        _options.current().counterexample_dir.resolve(), unexported, name="counterexample")
    _failed_bench[:] = [(bench.describe(), export)]


def take_failed_bench() -> tuple[str | None, Callable[[], Path] | None]:
    """What the last failing ``check`` or ``BmsMachine`` bench looked like when it failed (``Bench.describe``), and
    the export kept with it (or None), since the last call: the pytest plugin's failure report shows it (the bench
    itself is reset by the next example)."""
    out = _failed_bench[-1] if _failed_bench else (None, None)
    _failed_bench.clear()
    return out


def take_exports() -> list:
    """The counterexample files written since the last call (the pytest plugin puts them into the report)."""
    out = list(_exports)
    _exports.clear()
    return out


class PropertyFailed(AssertionError):
    def __init__(self, message: str, scenario_path=None, verdicts=()):
        super().__init__(message)
        self.scenario_path, self.verdicts = scenario_path, list(verdicts)


def expectations(properties: dict | None = None) -> list[Expectation]:
    """``kind = "property"`` expectations of ``properties`` (name -> options; default ``DEFAULT_PROPERTIES``)."""
    props = DEFAULT_PROPERTIES if properties is None else properties
    return [Expectation("property", {"property": name, **opts}, name) for name, opts in props.items()]


def fail(bench: Bench, verdicts, exps, *, export: bool = True) -> PropertyFailed:
    """The failure of ``verdicts`` on ``bench``: the case exported as a scenario (its path in the message)."""
    path = None
    keep_failed_bench(bench)   # hypothesis replays the shrunk case last: its bench is the one kept
    if export:
        path = bench.export(_options.current().counterexample_dir.resolve(), exps, name="counterexample")
        record_export(path)
        try:
            from hypothesis import note
            note(f"counterexample scenario: {path} (replay: bms-emu run {path} --mode lockstep)")
        except Exception:  # noqa: BLE001 - outside a hypothesis test there is nothing to note into
            pass
    lines = [f"{v.name}: {v.message}" for v in verdicts]
    where = f"\ncounterexample scenario: {path}\n  replay: bms-emu run {path} --mode lockstep" if path else ""
    return PropertyFailed(f"at t = {bench.t_s:.2f} s simulated:\n  " + "\n  ".join(lines) + where, path, verdicts)


def check(drive: list[Segment], *, faults=(), start=None, spread=None, properties: dict | None = None,
          settle_s: float = 1.0, export: bool = True, **bench_options) -> Bench:
    """Run ``drive`` (after ``settle_s`` at rest: the BMS precharges and closes) with ``faults``
    (``strategies.TimedFault``, times from the start of the drive) on a new bench; raise ``PropertyFailed`` if
    a property fails. ``start``: ``InitialConditions``; ``bench_options``: anything ``Bench`` takes.

    The bench is this process's ready one for these options, reset to its settled snapshot (``hil.testing.pool``):
    an example costs its drive, not a new bench and its precharge. Returns the bench; its recording stays
    readable until the next ``check`` with the same options resets it."""
    opts = _options.current()
    kwargs = {"preset": opts.preset, "seed": opts.seed, "firmware": opts.firmware, "spread": spread,
              "matrix": opts.matrix}
    if start is not None:
        kwargs.update(start.bench_options())
    kwargs.update(bench_options)
    exps = expectations(properties)
    bench, pooled = ready_bench(settle_s, **kwargs)
    try:
        t0 = bench.t_s
        pending = sorted(faults, key=lambda f: f.at_s)
        names: dict[int, str] = {}
        for segment in _split(drive, [t0 + f.at_s for f in pending] + [t0 + f.clear_at_s for f in pending
                                                                        if f.clear_at_s is not None], t0):
            _due(bench, pending, names, t0)
            bench.run(segment)
        _due(bench, pending, names, t0)
        failed = bench.check(exps)
        if failed:
            raise fail(bench, failed, exps, export=export)
    finally:
        if not pooled:
            bench.close()
    return bench


def _due(bench: Bench, pending: list, names: dict, t0: float) -> None:
    for f in pending:
        if id(f) not in names and bench.t_s >= t0 + f.at_s - 1e-9:
            names[id(f)] = bench.inject(f.kind, **f.options)
        if f.clear_at_s is not None and id(f) in names and bench.t_s >= t0 + f.clear_at_s - 1e-9:
            bench.clear(names[id(f)])


def _split(drive: list[Segment], times: list[float], t0: float):
    """The drive's segments, rests and constant ones cut at the fault times (so a fault lands on its time); a
    cycle slice or charge is not cut (its fault waits for its end)."""
    from dataclasses import replace

    from .segments import Current, Power
    t = t0
    cuts = sorted(set(round(x, 6) for x in times))
    for segment in drive:
        if isinstance(segment, (Rest, Current, Power)):
            end = t + segment.duration_s
            for c in cuts:
                if t + 1e-9 < c < end - 1e-9:
                    yield replace(segment, duration_s=round(c - t, 6))
                    t = c
            yield replace(segment, duration_s=round(end - t, 6))
            t = end
        else:
            yield segment
            t += getattr(segment, "duration_s", 0.0)
