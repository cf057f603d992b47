"""A test bench in lockstep virtual time: the emulated pack and BMS (or a team's firmware in a slot) on a virtual
CAN channel of its own, with the VCU model (or the team's VCU) on the same channel, driven segment by segment.

The per-tick loop is the scenario runner's own (``hil.runner``): the same load program, fault timeline,
recording and expectations. Everything a test does is kept as scenario steps and faults, so ``scenario_toml()``
is a scenario that ``bms-emu run --mode lockstep`` replays to the same state, frame for frame.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from bms._layout import LINK_VOLTAGE
from bms.controller import BmsState
from bms.errors import BmsError
from bms.fil.loader import FirmwareSpec
from hil.expectations import Recording, current_sensor_faults, evaluate
from hil.firmware_run import FirmwareRun
from hil.load import Demand, LoadProgram
from hil.published import ContactorWatch
from hil.runner import RECORD_PERIOD_S, _collect_events, _FaultTimeline, _Recorder, _snapshot, build_emulator
from hil.scenario import FAULT_KINDS, FaultAction, Scenario, ScenarioError, Step
from hil.scenario_checks import DIAGNOSTIC_FAULTS, check_fault
from hil.vehicle import Vehicle, power_profile

from .segments import CycleSlice, Rest, Segment

__all__ = ["Bench", "BenchError", "open_benches"]

_channels = itertools.count()
_open: set = set()          # benches not yet closed (the plugin's leak check reads it)
_open_lock = threading.Lock()


def _default_codec():
    """The emulator's DBC, parsed once per process and shared by every bench (codecs hold no run state)."""
    global _CODEC
    if _CODEC is None:
        from bms.can import Codec
        _CODEC = Codec()
    return _CODEC


_CODEC = None


def open_benches() -> list[Bench]:
    with _open_lock:
        return list(_open)


class BenchError(BmsError):
    """A bench was used wrongly (closed, an unknown fault, a time-out of ``run_until``)."""


class _SliceProgram(LoadProgram):
    """A one-step load program whose drive cycle is a slice held in memory (the exported scenario has it
    as a CSV beside the TOML, read back to the same arrays)."""

    def __init__(self, scenario: Scenario, cycle):
        self._slice = cycle
        super().__init__(scenario)

    def _cycle(self, step):
        return self._slice


def unique_channel(prefix: str = "bms-kit") -> str:
    """A virtual channel name no other bench of this process or of another pytest-xdist worker uses (python-can's
    virtual bus is per process; the worker and process id keep log channels apart too)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{prefix}-{worker}-{os.getpid()}-{next(_channels)}"


class Bench:
    """The emulator in lockstep on its own virtual channel (see the module docstring).

    ``firmware``: a ``FirmwareSpec`` (role ``bms`` or ``vcu``) or None for the built-in BMS and VCU model.
    ``vcu``: ``"model"`` (the VCU model or the firmware's VCU talks to the BMS) or ``"none"`` (nothing commands
    the BMS but the test, e.g. through ``hil.testing.Tester``; the load then follows the published limits).
    ``spread``: overrides of the pack's ``[spread]`` table (cell-to-cell variation), ``log``: a bus log path.
    ``matrix``: a vehicle CAN-matrix map (TOML path, see ``hil.matrix``): the BMS speaks that matrix, the VCU model
    goes through the map (as ``bms-emu run --matrix``), and a ``Tester`` translates the built-in DBC's names.
    """

    def __init__(self, *, preset: str = "assb60-192s2p", seed: int = 0, initial_soc: float = 0.5,
                 temp_C: float = 25.0, spread: dict | None = None, firmware: FirmwareSpec | None = None,
                 vcu: str = "model", channel: str | None = None, log: str | Path | None = None,
                 name: str = "kit", dt_s: float = 0.01, matrix: str | Path | None = None):
        if vcu not in ("model", "none"):
            raise BenchError(f"vcu: expected 'model' or 'none', found {vcu!r}")
        if not (isinstance(initial_soc, (int, float)) and 0.0 <= initial_soc <= 1.0):
            raise BenchError(f"initial_soc: expected 0 … 1, found {initial_soc!r}")
        if not (isinstance(temp_C, (int, float)) and math.isfinite(temp_C)):
            raise BenchError(f"temp_C: expected a finite temperature in degC, found {temp_C!r}")
        self.channel = channel or unique_channel()
        self.log_path = Path(log) if log is not None else None
        self.vcu_kind = vcu
        overrides = {"spread": dict(spread)} if spread else {}
        self.scenario = Scenario(name=name, source="<hil.testing bench>", pack=preset, pack_overrides=overrides,
                                 seed=int(seed), initial_soc=float(initial_soc), dt_s=dt_s, ambient_C=float(temp_C),
                                 firmware=firmware, mode="lockstep")
        self.firmware_spec = firmware
        self.steps: list[tuple[Step, Segment]] = []
        self.faults: dict[str, FaultAction] = {}
        self.frames: list = []   # hil.frames.FrameInjection: frames sent by the tester that an export replays
        self.closed = False
        self._fw = FirmwareRun(firmware, "lockstep")
        try:
            self.emulator = emulator = build_emulator(self.scenario, self._fw.bms_firmware())
            self._fw.attach(emulator)
            from hil.can_loop import CanLoop
            options = {"channel": self.channel}
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                options["log"] = str(self.log_path)
            self.can = CanLoop(emulator, mode="lockstep", vcu_firmware=self._fw.vcu_firmware,
                               bms_messages=self._fw.bms_messages(), external_vcu=vcu == "none",
                               codec=_default_codec(), matrix=matrix, **options)
        except BaseException:
            self._fw.close()
            raise
        with _open_lock:
            _open.add(self)
        self.node = self.can.node
        self.timeline = _FaultTimeline(self.scenario, emulator, self.can.vcu, self.can)
        self.dt_s = dt_s
        self.ambient_C = float(temp_C)
        self.tester: Any = None         # the plugin's benches carry a Tester (hil.testing.Tester)
        self.ticks = 0
        self.record_every = max(1, int(round(RECORD_PERIOD_S / dt_s)))
        self.recorder = _Recorder(1024)
        self.events: list[tuple[float, str, str]] = []
        self._seen_events = 0
        self.latest: dict[str, float] = {}
        self.tick_hooks: list = []      # callables(bench) after every tick (the tester reads the bus there)
        self.last_frames: deque = deque(maxlen=32)   # (t_s, frame) of the tester's tap, for failure reports
        pack = emulator.pack
        # an external BMS: the recording holds what it publishes, and the plant's contactor changes tick by tick
        self._view = self._fw.view if emulator.bms is None else None
        self._watch = ContactorWatch(pack) if emulator.bms is None else None
        self._link_voltage_V = functools.partial(pack.state.scalars.item, LINK_VOLTAGE)  # Pack.link_voltage_V
        estimator = emulator.estimator
        self._soc = (lambda: estimator.pack_soc) if estimator is not None else (lambda: pack.soc)

    # --- time -----------------------------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        """Simulated time [s] (ticks × dt_s)."""
        return self.ticks * self.dt_s

    def _tick(self, demand: Demand | None) -> None:
        if self.closed:
            raise BenchError("this bench is closed")
        e, tl = self.emulator, self.timeline
        tick = self.ticks
        t = tick * self.dt_s
        if tick % self.record_every == 0 and (tl.pending or tl.active):
            tl.due(t, self.latest)
        link_V = self._link_voltage_V()
        recording = (tick + 1) % self.record_every == 0
        in_force = e.bms.limits if recording and e.bms is not None else None  # what this tick's current obeys
        current = self.can.vcu.tick(t, demand, link_V)
        self.can.tick(current, self.ambient_C, tl.cooling_factor)
        self.ticks = tick + 1
        watch = self._watch
        if watch is not None:
            watch.tick(e.t_s)
        if recording:
            from hil.vcu import requested_current_A
            self.latest = _snapshot(e, requested_current_A(demand, link_V), demand.speed_mps if demand else 0.0,
                                    self._view, in_force)
            self.recorder.add(e.t_s, self.latest)
            self._seen_events = _collect_events(e, self.events, self._seen_events)
            self.events += self.can.new_events()
            if watch is not None:
                self.events += watch.take() + self._fw.published_events()
        for hook in self.tick_hooks:
            hook(self)

    def run(self, segment: Segment) -> None:
        """Run one drive segment to its end (a charge: to its target SOC, its time limit or the end of charge the
        built-in BMS declares)."""
        options = segment.step_options()
        step = Step(segment.kind, options)
        one = replace(self.scenario, steps=(step,), faults=())
        program = _SliceProgram(one, segment.speed_profile()) if isinstance(segment, CycleSlice) \
            else LoadProgram(one, self.emulator.bms)
        if isinstance(segment, CycleSlice) and not len(power_profile(segment.speed_profile(), Vehicle(),
                                                                     self.dt_s)[0]):
            raise BenchError(f"{segment}: the slice is shorter than one tick")
        self.steps.append((step, segment))
        next_for, soc = program.next_for, self._soc
        while True:
            demand = next_for(soc)
            if demand is None:
                return
            self._tick(demand)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass at rest (a whole number of ticks, at least one)."""
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise BenchError(f"advance: expected a duration > 0 s, found {seconds!r}")
        self.run(Rest(max(1, round(seconds / self.dt_s)) * self.dt_s))

    def run_until(self, condition, timeout_s: float) -> float:
        """Tick at rest until ``condition(bench)`` holds (checked after every tick); returns the simulated time
        it took. Raises ``BenchError`` when ``timeout_s`` of simulated time pass first."""
        if not (isinstance(timeout_s, (int, float)) and timeout_s >= 0):
            raise BenchError(f"run_until: expected a timeout >= 0 s of simulated time, found {timeout_s!r}")
        start = self.ticks
        limit = start + int(round(timeout_s / self.dt_s))
        try:
            while not condition(self):
                if self.ticks >= limit:
                    raise BenchError(f"run_until: {getattr(condition, '__name__', condition)} did not hold "
                                     f"within {timeout_s:g} s of simulated time (t = {self.t_s:.2f} s)")
                self._tick(Demand("rest", 0.0, 0.0, len(self.steps)))
        finally:
            if self.ticks > start:  # the rest it took, as a step of whole ticks
                rest = Rest((self.ticks - start) * self.dt_s)
                self.steps.append((Step("rest", rest.step_options()), rest))
        return (self.ticks - start) * self.dt_s

    # --- faults -----------------------------------------------------------------------------------------------
    def inject(self, kind: str, name: str | None = None, **options) -> str:
        """Inject a fault of any kind a scenario's ``[[fault]]`` takes (``sensor``, ``internal_short``,
        ``contactor_weld``, ``coolant_loss``, ``vcu_silence``, ``can_corrupt`` …) now; it takes effect at the
        next 100 ms boundary, as in a scenario. Returns its name (for ``clear``)."""
        if kind not in FAULT_KINDS:
            raise BenchError(f"inject: unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        allowed = cast(dict, FAULT_KINDS[kind])
        unknown = set(options) - set(allowed)
        if unknown:
            raise BenchError(f"inject {kind}: unknown option(s) {', '.join(sorted(unknown))}; expected "
                             f"{', '.join(allowed) or 'none'}")
        try:   # as a scenario's [[fault]] is checked: a wrong cell or channel fails here, not ticks later
            options = check_fault(kind, options, self.emulator.pack.params)
        except ScenarioError as exc:
            raise BenchError(f"inject {kind}: {exc.key.removeprefix('fault[0].')}: {exc.detail}") from None
        if kind in DIAGNOSTIC_FAULTS and self.node.diag is None:
            raise BenchError(f"inject {kind}: a diagnostic-layer fault needs the built-in BMS's UDS server; the BMS "
                             "firmware in the slot has none (leave it out of the kinds drawn)")
        name = name or f"fault{len(self.faults)}:{kind}"
        if name in self.faults:
            raise BenchError(f"inject: a fault named {name!r} exists already")
        fault = FaultAction(kind, dict(options), at_s=self.t_s, name=name)
        self.faults[name] = fault
        self.timeline.pending.append(fault)
        return name

    def clear(self, name: str) -> None:
        """Clear the fault ``name`` now (at the next 100 ms boundary, as ``clear_at_s`` in a scenario)."""
        fault = self.faults.get(name)
        if fault is None:
            raise BenchError(f"clear: no fault named {name!r}; injected: {', '.join(self.faults) or 'none'}")
        if fault.clear_at_s is not None:
            return
        cleared = replace(fault, clear_at_s=self.t_s)
        self.faults[name] = cleared
        if fault in self.timeline.pending:
            self.timeline.pending[self.timeline.pending.index(fault)] = cleared
        else:
            self.timeline.active.append((self.t_s, fault))

    # --- what happened ------------------------------------------------------------------------------------------
    def recording(self) -> Recording:
        t, signals = self.recorder.trimmed()
        injections = dict(self.timeline.injections)
        return Recording(t, signals, sorted(self.events, key=lambda e: e[0]), injections, self._cycle_times(), True,
                         "", "", current_sensor_faults(self.faults.values(), injections))

    def _cycle_times(self) -> dict:
        out = {}
        for s in self.node.stats.report():
            if s.get("direction") == "tx" and "mean_interval_ms" in s:
                out[s["message"]] = {"max_deviation_ms": s.get("max_abs_deviation_ms", 0.0),
                                     "p99_deviation_ms": s.get("p99_abs_deviation_ms", 0.0),
                                     "mean_interval_ms": s.get("mean_interval_ms"), "frames": s["frames"]}
        return out

    def check(self, expectations) -> list:
        """The failed verdicts of ``expectations`` (``hil.scenario.Expectation``) on the recording so far."""
        return [v for v in evaluate(list(expectations), self.recording()) if not v.passed]

    @property
    def state(self) -> str:
        """The BMS's state: the built-in BMS's, or what an external BMS firmware last said on the bus."""
        bms = self.emulator.bms
        if bms is not None:
            return BmsState(bms.state).name
        view = self._fw.view
        return str(view.values.get("state", "unknown")) if view is not None else "unknown"

    def describe(self) -> str:
        """Simulated time, BMS state, active faults and DTCs, the kept bus log, the last frames: what a failure
        report shows."""
        e = self.emulator
        lines = [f"bench {self.channel}: t = {self.t_s:.3f} s simulated, BMS state {self.state}, "
                 f"firmware {self._fw.spec.describe() if self._fw.spec else 'built-in'}"]
        c = e.pack.contactors_closed
        lines.append("contactors: " + ", ".join(f"{k} {'closed' if v else 'open'}" for k, v in c.items()))
        bms = e.bms
        if bms is not None:
            active = {p: lv.name for p, lv in bms.levels.items() if int(lv)}
            lines.append("active faults: " + (", ".join(f"{p} {lv}" for p, lv in active.items()) or "none"))
            lim = bms.limits
            lines.append(f"published limits: discharge {lim.discharge_current_A:.1f} A, charge "
                         f"{lim.charge_current_A:.1f} A; pack current {e.pack.current_A:.1f} A")
            lines.append("DTCs: " + (", ".join(f"{d.name} {FaultName(d)}" for d in bms.dtcs) or "none"))
        diag = self.node.diag
        if diag is not None:
            memory = _dtc_memory(diag)
            lines.append("UDS DTC memory: " + (", ".join(memory) or "empty"))
        injected = [f"{n} at {t:.2f} s" for n, t in self.timeline.injections.items()]
        lines.append("faults injected: " + (", ".join(injected) or "none"))
        if self.log_path is not None:
            lines.append(f"bus log: {self.log_path}")
        if self.last_frames:
            lines.append(f"last {len(self.last_frames)} frames:")
            codec = self.node.codec  # the matrix's on a matrix bench: the frames on the bus
            for t_s, frame in self.last_frames:
                lines.append(f"  {t_s:9.3f} s  {_decoded(codec, frame)}")
        return "\n".join(lines)

    # --- the scenario it ran ----------------------------------------------------------------------------------
    def scenario_toml(self, expectations=(), *, name: str | None = None) -> tuple[str, dict[str, str]]:
        """This bench's run as a scenario TOML, and the files beside it (cycle slices as CSV) by name."""
        from .export import scenario_toml
        return scenario_toml(self, expectations, name=name)

    def export(self, folder: str | Path, expectations=(), *, name: str | None = None) -> Path:
        """Write ``scenario_toml()`` and its cycle files into ``folder``; returns the TOML's path."""
        from .export import write_scenario
        return write_scenario(self, Path(folder), expectations, name=name)

    # --- snapshots ------------------------------------------------------------------------------------------------
    def snapshot(self):
        """The bench's whole run state now (plant, sensors and their noise streams, estimator, BMS and its fault
        memory, the CAN node's counters, schedules and statistics, the VCU, the firmware's saved state, the
        recording, the steps run and the simulated clock), for ``restore``. Raises ``SnapshotError`` for a bench
        that holds what cannot be restored in place (a bus log, a firmware without ``save_state``)."""
        from .snapshot import capture
        if self.closed:
            raise BenchError("this bench is closed")
        return capture(self)

    def restore(self, snapshot) -> None:
        """Put the bench back to ``snapshot`` (taken by ``snapshot()`` of this bench): from then on it runs as a
        bench run to that point would, frame for frame."""
        if self.closed:
            raise BenchError("this bench is closed")
        snapshot.restore()

    # --- life cycle -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the bus handles, flush the bus log, release the firmware. Idempotent."""
        if self.closed:
            return
        self.closed = True
        with _open_lock:
            _open.discard(self)
        try:
            self.can.close()
        finally:
            self._fw.close()
            for hook in list(self.tick_hooks):
                close = getattr(hook, "close", None)
                if close is not None:
                    close()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Bench {self.channel} t={self.t_s:.2f}s {'closed' if self.closed else self.state}>"


def FaultName(dtc) -> str:  # noqa: N802 - reads as a label in the report line
    level = getattr(dtc, "level", None)
    return f"{getattr(level, 'name', level)} {getattr(dtc, 'status', '')}".strip()


def _dtc_memory(diag) -> list[str]:
    """The UDS server's DTC memory (every stored record) as 'P1A05-00 status 0x2F'."""
    from bms.diag import dtc_display
    return [f"{dtc_display(r.code)} status 0x{int(r.status):02X}" for r in diag.memory.stored()]


def _decoded(codec, frame) -> str:
    text = f"0x{frame.arbitration_id:03X} {bytes(frame.data).hex(' ')}"
    try:
        name, values = codec.decode(frame.arbitration_id, bytes(frame.data), frame.is_extended_id)
    except (BmsError, KeyError, ValueError):
        return text
    shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(values.items())[:6])
    return f"{text}  {name}: {shown}"

