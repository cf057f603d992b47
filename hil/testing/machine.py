"""A hypothesis rule-based state machine of a BMS on a bench, for any firmware in the slot.

Rules drive, charge, rest, inject and clear faults, send VCU commands through the tester (valid, or with a wrong
alive counter or CRC) and let time pass in bounded chunks; after every rule the
safety properties (``hil.testing.check.DEFAULT_PROPERTIES``, or the class's ``properties``) are checked on the
recording. A failure writes the run so far as a scenario TOML (the shrunk one is the last written, and hypothesis
prints its path) that ``bms-emu run`` replays to the same failure.

    from hil.testing import BmsMachine
    class TestMyVcu(BmsMachine.for_firmware(my_spec)):   # or BmsMachine: the session's --bms-firmware
        pass
    TestMyVcu.TestCase.settings = settings(max_examples=20, stateful_step_count=8)

State machines take no pytest fixtures: the firmware, preset and seed come from the class or from the session's
command-line options (``hil.testing.options.current()``).
"""
from __future__ import annotations

import functools

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bms.controller import StateRequest

from ..frames import FrameInjection, injected_frame
from . import options as _options
from . import strategies as bst
from .bench import Bench
from .check import DEFAULT_PROPERTIES, expectations, fail, keep_failed_bench, take_exports
from .pool import ready_bench

__all__ = ["BmsMachine", "take_exports"]


class BmsMachine(RuleBasedStateMachine):
    """The BMS under drives, charges, faults and time. Class attributes a subclass sets: ``firmware`` (a
    ``FirmwareSpec``; None: the session's), ``preset``, ``seed``, ``properties`` (name -> options),
    ``max_active_faults``, ``fault_kinds`` (what ``inject`` draws), ``export`` (write the counterexample scenario)."""

    firmware = None
    preset: str | None = None
    seed: int | None = None
    properties: dict = DEFAULT_PROPERTIES
    max_active_faults = 2
    fault_kinds = ("sensor", "internal_short", "coolant_loss", "vcu_silence", "can_corrupt", "stack_pressure")
    export = True
    settle_s = 1.0

    def __init__(self):
        super().__init__()
        self.bench: Bench | None = None
        self._pooled = False
        self.active: list[str] = []

    @classmethod
    def for_firmware(cls, firmware, **attrs) -> type[BmsMachine]:
        """A subclass with ``firmware`` (and any other class attribute) set."""
        return type(f"{cls.__name__}For{getattr(firmware, 'kind', 'Builtin').title()}", (cls,),
                    {"firmware": firmware, **attrs})

    # --- start ----------------------------------------------------------------------------------------------
    @initialize(start=bst.initial_conditions(min_soc=0.2, max_soc=0.9, min_temp_C=-15.0, max_temp_C=40.0),
                spread=bst.cell_spreads())
    def start(self, start, spread):
        opts = _options.current()
        # this process's ready bench for the start, reset to its snapshot (power on, precharge, close: done once)
        self.commands: list[str] = []   # frames sent through the tester (a scenario cannot replay them)
        self.bench, self._pooled = ready_bench(
            self.settle_s, tester=True, preset=self.preset or opts.preset,
            seed=opts.seed if self.seed is None else self.seed,
            firmware=self.firmware if self.firmware is not None else opts.firmware, spread=spread, name="machine",
            matrix=opts.matrix, **start.bench_options())

    # --- rules ------------------------------------------------------------------------------------------------
    @rule(segment=bst.segments(kinds=("rest", "current", "power", "cycle"), max_duration_s=5.0))
    def drive(self, segment):
        self.bench.run(segment)

    @rule(segment=bst.segments(kinds=("charge",), max_charge_duration_s=3.0))
    def charge(self, segment):
        self.bench.run(segment)
        self.bench.advance(0.2)  # the charger leaves; the VCU asks for DRIVE again

    @rule(seconds=st.integers(1, 30).map(lambda k: round(k * 0.1, 1)))
    def wait(self, seconds):
        self.bench.advance(seconds)

    @precondition(lambda self: self.bench is not None and len(self.active) < self.max_active_faults)
    @rule(data=st.data())
    def inject(self, data):
        """A fault of ``fault_kinds`` on a cell or channel of this machine's pack (its ``preset``, which may not
        be the session's)."""
        params = self.bench.emulator.pack.params
        kind, options = data.draw(_faults_of(tuple(self.fault_kinds), params.n_series,
                                             params.n_temperature_sensors, params.n_cells), label="fault")
        self.active.append(self.bench.inject(kind, **options))
        self.bench.advance(0.1)  # it takes effect at the next 100 ms boundary

    @precondition(lambda self: self.bench is not None)
    @rule(state=st.sampled_from([int(r) for r in StateRequest]), contactor=st.sampled_from([0, 1, 2]),
          e2e=st.sampled_from(("valid", "wrong_counter", "wrong_crc")))
    def command(self, state, contactor, e2e):
        """A VCU_Command by its DBC names through the tester, between the VCU's own: its alive counter the next one
        after the last on the bus (``valid``), one that jumps (``wrong_counter``), or a wrong CRC."""
        bench = self.bench
        frame, replayable = _vcu_command(bench, e2e, StateRequest=state, ContactorRequest=contactor)
        if not replayable:
            self.commands.append(f"t = {bench.t_s:.2f} s VCU_Command StateRequest={StateRequest(state).name} "
                                 f"ContactorRequest={contactor} ({e2e}): {bytes(frame.data).hex(' ')}")
        bench.advance(0.1)

    @precondition(lambda self: bool(self.active))
    @rule(which=st.integers(0, 7))
    def clear(self, which):
        name = self.active.pop(which % len(self.active))
        self.bench.clear(name)
        self.bench.advance(0.1)

    # --- properties -------------------------------------------------------------------------------------------
    @invariant()
    def safety_properties(self):
        if self.bench is None:
            return
        exps = expectations(self.properties)
        failed = self.bench.check(exps)
        if failed:
            exc = fail(self.bench, failed, exps, export=self.export)
            if self.commands:   # a matrix bench's commands: the scenario cannot send them, say what it lacks
                exc.args = (exc.args[0] + f"\n  not in the scenario ({len(self.commands)} frame(s) sent through the "
                            "tester on a vehicle matrix, which bms-emu run cannot replay):\n    "
                            + "\n    ".join(self.commands),)
            raise exc

    def teardown(self):
        if self.bench is not None:
            # the failure report shows the bench of the last example (hypothesis runs the shrunk failing one last),
            # whatever failed in it: a kit property, a subclass's own invariant or rule (then the plugin exports it)
            keep_failed_bench(self.bench, expectations(self.properties) if self.export else None)
        if self.bench is not None and not self._pooled:
            self.bench.close()   # a pooled bench stays open for the next example's reset


@functools.lru_cache(maxsize=16)
def _faults_of(kinds: tuple, n_series: int, n_temperature_sensors: int, n_cells: int):
    return bst.faults(kinds=kinds, n_series=n_series, n_temperature_sensors=n_temperature_sensors, n_cells=n_cells)


def _vcu_command(bench, e2e: str, **signals):
    """Send VCU_Command with ``signals`` through the bench's tester; ``e2e`` says what its alive counter and CRC are
    (``hil.frames.injected_frame``, as a scenario's ``[[frame]]``). Returns (frame, recorded for the export)."""
    tester = bench.tester
    codec = tester.codec["VCU_Command"]
    if getattr(tester, "_gateway", None) is not None or codec.e2e is None:
        return tester.send("VCU_Command", signals), False   # a matrix bench: the map's own counter and CRC
    replayable = tester.codec is bench.can.codec   # the run's DBC, which a scenario's [[frame]] speaks
    last = next((f for _, f in reversed(tester.received) if f.arbitration_id == codec.frame_id), None)
    frame = injected_frame(codec, signals, e2e, last)
    tester.send_frame(frame)
    if replayable:
        bench.frames.append(FrameInjection(bench.t_s, "VCU_Command", dict(signals), e2e))
    return frame, replayable
