"""Hypothesis strategies for BMS tests, in hypothesis's own style: keyword arguments, ``min_value``/``max_value``
style bounds, strategies as arguments where a value may vary, and ``InvalidArgument`` raised at once when a
strategy is defined with bad arguments (not when it is first drawn from).

They shrink toward the quiet case: rest, zero current, no fault, the preset's own cell spread, a pack at 50 %
SOC and 25 degC.

    from hypothesis import given
    from hil.testing import strategies as bst

    @given(drive=bst.drives(max_segments=4, max_duration_s=20.0), start=bst.initial_conditions())
    def test_limits(drive, start): ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from hil.cycles import builtin_cycles, load_cycle
from hil.scenario import FAULT_KINDS, ISOTP_FAULTS, SENSOR_FAULTS
from hil.scenario_checks import TEMP_RANGE_C

from .segments import Charge, Current, CycleSlice, Power, Rest, Segment

__all__ = ["segments", "drives", "faults", "fault_timelines", "cell_spreads", "initial_conditions", "frames",
           "malformed_frames", "InitialConditions", "TimedFault", "SEGMENT_KINDS", "DEFAULT_FAULT_KINDS"]

SEGMENT_KINDS = ("rest", "current", "power", "cycle", "charge")
_DRIVE_KINDS = ("rest", "current", "power", "cycle")   # segments' default kinds
_MAX_SPREAD_SIGMA = 0.5   # what a pack's [spread] takes (bms.params): above it cells of negative capacity are drawn
# bus_off takes the BMS off the bus for good (the run stops): drawn only when asked for
DEFAULT_FAULT_KINDS = tuple(k for k in FAULT_KINDS if k != "bus_off")
SENSOR_KINDS = ("cell_voltage", "temperature", "current", "pack_voltage", "link_voltage", "contactor_feedback")
CONTACTORS = ("main_positive", "main_negative", "precharge")
_TICK_S = 0.01


def _number(name: str, value, *, finite: bool = True, positive: bool = False, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (finite and not math.isfinite(value)):
        raise InvalidArgument(f"{name}={value!r}: expected a finite number")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise InvalidArgument(f"{name}={value!r}: expected a number {'>=' if allow_zero else '>'} 0")
    return float(value)


def _range(low_name: str, low, high_name: str, high) -> tuple[float, float]:
    low, high = _number(low_name, low), _number(high_name, high)
    if low > high:
        raise InvalidArgument(f"{low_name}={low!r} is greater than {high_name}={high!r}")
    return low, high


def _names(name: str, value) -> tuple:
    """A collection of names as a tuple; a lone string is refused (``tuple("rest")`` is four letters)."""
    if isinstance(value, str):
        raise InvalidArgument(f"{name}={value!r}: expected a collection of names, such as ({value!r},)")
    return tuple(value)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name}={value!r}: expected an integer >= 0")
    return value


def _towards(low: float, high: float, nominal: float, *, step: float | None = None):
    """Floats in [low, high] that shrink toward ``nominal`` (clipped into the range), on a grid of ``step``."""
    centre = min(max(nominal, low), high)
    if step:
        lo, hi = math.ceil((low - centre) / step - 1e-9), math.floor((high - centre) / step + 1e-9)
        return st.integers(lo, hi).map(lambda k: round(centre + k * step, 9))
    return st.floats(low - centre, high - centre, allow_nan=False).map(lambda d: min(max(centre + d, low), high))


def _durations(min_duration_s: float, max_duration_s: float):
    """Whole 100 ms steps (so each segment ends where the runner looks at its fault timeline), shortest first."""
    lo, hi = max(1, math.ceil(min_duration_s * 10 - 1e-9)), math.floor(max_duration_s * 10 + 1e-9)
    if hi < lo:
        raise InvalidArgument(f"no multiple of 0.1 s in [{min_duration_s}, {max_duration_s}] s")
    return st.integers(lo, hi).map(lambda k: round(k * 0.1, 1))


# --- drives -----------------------------------------------------------------------------------------------
def segments(*, kinds=_DRIVE_KINDS, min_duration_s: float = 0.1,
             max_duration_s: float = 30.0, min_current_A: float = -200.0, max_current_A: float = 400.0,
             min_power_W: float = -80_000.0, max_power_W: float = 200_000.0, cycles=None,
             max_charge_duration_s: float = 30.0):
    """One drive segment (``hil.testing.Rest``, ``Current``, ``Power``, ``CycleSlice`` or ``Charge``), of the
    ``kinds`` asked for, in the order given (hypothesis shrinks toward the first: rest). Currents and powers are > 0
    discharging; a slice of a built-in cycle (``cycles``: names, default all; those long enough for
    ``min_duration_s``) starts on a whole second and lasts at least 1 s (shorter where ``max_duration_s`` < 1 s)."""
    kinds = _names("kinds", kinds)
    if not kinds or any(k not in SEGMENT_KINDS for k in kinds):
        raise InvalidArgument(f"kinds={kinds!r}: expected a non-empty selection of {SEGMENT_KINDS}")
    dmin, dmax = _range("min_duration_s", min_duration_s, "max_duration_s", max_duration_s)
    if dmin < 0:
        raise InvalidArgument(f"min_duration_s={min_duration_s!r}: expected >= 0")
    imin, imax = _range("min_current_A", min_current_A, "max_current_A", max_current_A)
    pmin, pmax = _range("min_power_W", min_power_W, "max_power_W", max_power_W)
    names = tuple(builtin_cycles()) if cycles is None else _names("cycles", cycles)
    known = builtin_cycles()
    for name in names:
        if name not in known:
            raise InvalidArgument(f"cycles: unknown cycle {name!r}; built-in: {', '.join(known)}")
    charge_max = _number("max_charge_duration_s", max_charge_duration_s, positive=True, allow_zero=False)
    duration = _durations(dmin, dmax)
    options = {   # what each kind asked for draws (only those: a kind not asked for is not checked)
        "rest": lambda: duration.map(Rest),
        "current": lambda: st.builds(Current, _towards(imin, imax, 0.0, step=1.0), duration),
        "power": lambda: st.builds(Power, _towards(pmin, pmax, 0.0, step=100.0), duration),
        "cycle": lambda: _cycle_slices(names, dmin, dmax) if names else None,
        "charge": lambda: st.builds(Charge, _towards(0.2, 1.0, 0.8, step=0.01), _towards(1.0, 240.0, 60.0, step=1.0),
                                    _durations(0.1, charge_max)),
    }
    chosen = [s for s in (options[k]() for k in kinds) if s is not None]
    if not chosen:
        raise InvalidArgument("cycles=() leaves no segment kind to draw")
    return st.one_of(*chosen)


def _shortest_slice_s(dmin: float, dmax: float) -> float:
    return max(dmin, 1.0) if dmax >= 1.0 else dmin


def _cycle_slices(names: tuple[str, ...], dmin: float, dmax: float):
    lengths = {name: int(load_cycle(name).duration_s) for name in names}
    shortest = _shortest_slice_s(dmin, dmax)
    long_enough = tuple(n for n in names if lengths[n] - 1 >= shortest - 1e-9)   # a slice ends 1 s before the end
    if not long_enough:
        raise InvalidArgument(f"min_duration_s={dmin!r}: no built-in cycle of {names} is long enough for a slice of "
                              f"{shortest:g} s ({', '.join(f'{n} {lengths[n]} s' for n in names)})")

    @st.composite
    def slice_of(draw) -> CycleSlice:
        name = draw(st.sampled_from(long_enough))
        length = lengths[name]
        duration = draw(_durations(shortest, min(dmax, length - 1)))
        start = draw(st.integers(0, max(0, int(length - duration))))
        return CycleSlice(name, float(start), duration)
    return slice_of()


def drives(*, min_segments: int = 1, max_segments: int = 5, max_total_s: float | None = None, **segment_options):
    """A drive: a list of ``min_segments`` … ``max_segments`` segments (``segments(**segment_options)``), at most
    ``max_total_s`` long in all (charge segments count with their time limit). Shrinks toward one short rest."""
    lo, hi = _count("min_segments", min_segments), _count("max_segments", max_segments)
    if lo > hi:
        raise InvalidArgument(f"min_segments={lo} is greater than max_segments={hi}")
    total = None if max_total_s is None else _number("max_total_s", max_total_s, positive=True, allow_zero=False)
    drawn = st.lists(segments(**segment_options), min_size=lo, max_size=hi)
    if total is None:
        return drawn
    shortest = _shortest_segment_s(**segment_options)
    if max(lo, 1) * shortest > total + 1e-9:   # no drive (or only the empty one) would pass the filter
        what = f"min_segments={lo} segments" if lo > 1 else "one segment"
        raise InvalidArgument(f"max_total_s={max_total_s!r} is shorter than {what} of at least {shortest:g} s")
    return drawn.filter(lambda segs: sum(_length(s) for s in segs) <= total + 1e-9)


def _shortest_segment_s(*, kinds=_DRIVE_KINDS, min_duration_s: float = 0.1, max_duration_s: float = 30.0,
                        **_other) -> float:
    """The shortest segment ``segments`` with these arguments draws (a charge counts with its time limit)."""
    base = max(1, math.ceil(min_duration_s * 10 - 1e-9)) / 10
    return min(0.1 if k == "charge" else max(base, _shortest_slice_s(min_duration_s, max_duration_s))
               if k == "cycle" else base for k in kinds)


def _length(segment: Segment) -> float:
    return segment.max_duration_s if isinstance(segment, Charge) else float(getattr(segment, "duration_s", 0.0))


# --- faults -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimedFault:
    """A fault of a scenario's ``[[fault]]`` kinds at ``at_s`` (from the start of the drive), cleared at
    ``clear_at_s`` (None: never)."""
    kind: str
    options: dict = field(hash=False)
    at_s: float = 0.0
    clear_at_s: float | None = None


def faults(*, kinds=DEFAULT_FAULT_KINDS, n_series: int | None = None, n_temperature_sensors: int | None = None,
           n_cells: int | None = None):
    """One fault (kind and options, as ``Bench.inject`` takes them) of the ``kinds`` given, shrinking toward the
    first kind listed; indices within a pack of ``n_series`` groups, ``n_temperature_sensors`` sensors and
    ``n_cells`` cells (default: the session's pack, ``--bms-preset``, read when the first fault is drawn; with
    ``n_series`` given, ``n_cells`` defaults to 2 × n_series)."""
    kinds = _names("kinds", kinds)
    if not kinds or any(k not in FAULT_KINDS for k in kinds):
        raise InvalidArgument(f"kinds={kinds!r}: expected a non-empty selection of {tuple(FAULT_KINDS)}")
    for name, value in (("n_series", n_series), ("n_temperature_sensors", n_temperature_sensors),
                        ("n_cells", n_cells)):
        if value is not None and _count(name, value) < 1:
            raise InvalidArgument(f"{name}={value!r}: expected an integer >= 1")
    if n_series is not None and n_temperature_sensors is not None:
        return _faults(kinds, n_series, n_temperature_sensors, 2 * n_series if n_cells is None else n_cells)

    def of_the_session_pack():
        from bms.params import load_pack

        from .options import current
        pack = load_pack(current().preset)
        ns = pack.n_series if n_series is None else n_series
        nc = n_cells if n_cells is not None else 2 * ns if n_series is not None else pack.n_series * pack.n_parallel
        return _faults(kinds, ns, pack.n_temperature_sensors if n_temperature_sensors is None else
                       n_temperature_sensors, nc)
    return st.deferred(of_the_session_pack)


def _faults(kinds: tuple, ns: int, nt: int, nc: int):
    index_of = {"cell_voltage": st.integers(0, ns - 1), "temperature": st.integers(0, nt - 1),
                "current": st.just(0), "pack_voltage": st.just(0), "link_voltage": st.just(0),
                "contactor_feedback": st.sampled_from(range(3))}
    value_of = {"stuck": {"cell_voltage": (0.0, 5.0), "temperature": (-40.0, 200.0), "current": (-3000.0, 3000.0),
                          "pack_voltage": (0.0, 1000.0), "link_voltage": (0.0, 1000.0),
                          "contactor_feedback": (0.0, 1.0)},
                "drift": {"cell_voltage": (-0.01, 0.01), "temperature": (-1.0, 1.0), "current": (-5.0, 5.0),
                          "pack_voltage": (-5.0, 5.0), "link_voltage": (-5.0, 5.0), "contactor_feedback": (0.0, 0.0)},
                "offset": {"cell_voltage": (-0.2, 0.2), "temperature": (-30.0, 30.0), "current": (-50.0, 50.0),
                           "pack_voltage": (-50.0, 50.0), "link_voltage": (-50.0, 50.0),
                           "contactor_feedback": (0.0, 0.0)}}

    @st.composite
    def sensor(draw) -> tuple[str, dict]:
        which = draw(st.sampled_from(SENSOR_KINDS))
        kind = draw(st.sampled_from(SENSOR_FAULTS))
        options = {"sensor": which, "index": draw(index_of[which]), "fault": kind}
        if kind != "open_wire":
            lo, hi = value_of[kind][which]
            options["value"] = draw(_towards(lo, hi, 0.0))
        return "sensor", options

    builders = {
        "sensor": sensor(),
        "internal_short": st.tuples(st.just("internal_short"), st.fixed_dictionaries(
            {"cell": st.integers(0, nc - 1), "resistance_ohm": _towards(0.05, 100.0, 100.0)})),
        "stack_pressure": st.tuples(st.just("stack_pressure"), st.fixed_dictionaries(
            {"pressure_MPa": _towards(0.1, 10.0, 5.0)})),   # > 0: the plant refuses a pressure of 0
        "contactor_weld": st.tuples(st.just("contactor_weld"), st.fixed_dictionaries(
            {"contactor": st.sampled_from(CONTACTORS)})),
        "coolant_loss": st.tuples(st.just("coolant_loss"), st.fixed_dictionaries(
            {"cooling_factor": _towards(0.0, 1.0, 0.0)})),
        "vcu_silence": st.just(("vcu_silence", {})),
        "can_corrupt": st.tuples(st.just("can_corrupt"), st.fixed_dictionaries(
            {"what": st.sampled_from(("crc", "counter"))})),
        "bus_off": st.just(("bus_off", {})),
        "isotp": st.tuples(st.just("isotp"), st.fixed_dictionaries({"fault": st.sampled_from(ISOTP_FAULTS)})),
        "uds_pending": st.tuples(st.just("uds_pending"), st.fixed_dictionaries(
            {"duration_s": _towards(0.1, 10.0, 0.1, step=0.1)})),
    }
    return st.one_of(*[builders[k] for k in kinds])


def fault_timelines(*, kinds=DEFAULT_FAULT_KINDS, min_faults: int = 0, max_faults: int = 3, max_time_s: float = 60.0,
                    clears: bool = True, **fault_options):
    """Faults at times in [0, ``max_time_s``] (on the runner's 100 ms grid), each maybe cleared later
    (``clears``); sorted by time. Shrinks toward no fault."""
    lo, hi = _count("min_faults", min_faults), _count("max_faults", max_faults)
    if lo > hi:
        raise InvalidArgument(f"min_faults={lo} is greater than max_faults={hi}")
    horizon = _number("max_time_s", max_time_s, positive=True)
    one = faults(kinds=kinds, **fault_options)
    times = _towards(0.0, horizon, 0.0, step=0.1)

    @st.composite
    def timed(draw) -> TimedFault:
        kind, options = draw(one)
        at = draw(times)
        clear_at = None
        if clears and draw(st.booleans()):
            clear_at = round(at + draw(_towards(0.1, max(0.1, horizon), 0.1, step=0.1)), 1)
        return TimedFault(kind, options, at, clear_at)
    return st.lists(timed(), min_size=lo, max_size=hi).map(lambda fs: sorted(fs, key=lambda f: f.at_s))


# --- the pack ---------------------------------------------------------------------------------------------
def cell_spreads(*, max_capacity_rel_sigma: float = 0.05, max_resistance_rel_sigma: float = 0.2,
                 max_initial_soc_sigma: float = 0.03):
    """Overrides of the pack's ``[spread]`` table (1-sigma cell-to-cell variation), or None for the preset's own
    (what it shrinks to)."""
    cap = _number("max_capacity_rel_sigma", max_capacity_rel_sigma, positive=True)
    res = _number("max_resistance_rel_sigma", max_resistance_rel_sigma, positive=True)
    soc = _number("max_initial_soc_sigma", max_initial_soc_sigma, positive=True)
    for name, value in (("max_capacity_rel_sigma", cap), ("max_resistance_rel_sigma", res),
                        ("max_initial_soc_sigma", soc)):
        if value > _MAX_SPREAD_SIGMA:
            raise InvalidArgument(f"{name}={value!r}: a pack's spread takes at most {_MAX_SPREAD_SIGMA} (a relative "
                                  "1-sigma spread; above it cells of negative capacity are drawn)")
    drawn = st.fixed_dictionaries({"capacity_rel_sigma": _towards(0.0, cap, 0.0, step=0.001),
                                   "resistance_rel_sigma": _towards(0.0, res, 0.0, step=0.001),
                                   "initial_soc_sigma": _towards(0.0, soc, 0.0, step=0.0005)})
    return st.none() | drawn


@dataclass(frozen=True)
class InitialConditions:
    """The pack at the start: SOC (0 … 1) and temperature (degC, the ambient and coolant too)."""
    soc: float = 0.5
    temp_C: float = 25.0

    def bench_options(self) -> dict:
        return {"initial_soc": self.soc, "temp_C": self.temp_C}


def initial_conditions(*, min_soc: float = 0.1, max_soc: float = 0.95, min_temp_C: float = -20.0,
                       max_temp_C: float = 45.0):
    """Start SOC and temperature, shrinking toward 50 % and 25 degC (clipped into the ranges), on a 1 % and
    0.5 K grid."""
    smin, smax = _range("min_soc", min_soc, "max_soc", max_soc)
    if smin < 0 or smax > 1:
        raise InvalidArgument(f"min_soc={smin}, max_soc={smax}: SOC is 0 … 1")
    tmin, tmax = _range("min_temp_C", min_temp_C, "max_temp_C", max_temp_C)
    low, high = TEMP_RANGE_C
    for name, value in (("min_temp_C", tmin), ("max_temp_C", tmax)):
        if not low < value < high:
            raise InvalidArgument(f"{name}={value!r}: the emulator takes temperatures in ({low:g}, {high:g}) degC")
    return st.builds(InitialConditions, _towards(smin, smax, 0.5, step=0.01), _towards(tmin, tmax, 25.0, step=0.5))


# --- frames -----------------------------------------------------------------------------------------------
_E2E_MODES = ("valid", "wrong_counter", "wrong_crc", "any")


def frames(message: str, *, dbc=None, e2e: str = "valid", signals=None):
    """``can.Message`` frames of DBC ``message`` (default DBC: the emulator's) with every signal within its DBC
    range (enumerations from their value tables). For an E2E message (alive counter and CRC) ``e2e`` says what
    they are: ``valid``, ``wrong_counter`` (a counter that jumps; the frame's CRC is right), ``wrong_crc``, or
    ``any``. ``signals``: a dict of strategies (or values) for some signals, the rest drawn; a value outside the
    DBC's range is sent as given where the signal's bits hold it (a value they cannot hold: ``InvalidArgument``)."""
    from bms.can import Codec
    from bms.can.node import Frame
    from hil.frames import _is_float, _put_raw, field_overflow
    if e2e not in _E2E_MODES:
        raise InvalidArgument(f"e2e={e2e!r}: expected one of {_E2E_MODES}")
    codec = Codec(path=dbc) if dbc is not None else Codec()
    try:
        mc = codec[message]
    except Exception as exc:  # noqa: BLE001 - the DBC's own message says which names exist
        raise InvalidArgument(str(exc)) from None
    fixed = dict(signals or {})
    names = {s.name for s in mc.dbc_message.signals}
    unknown = set(fixed) - names
    if unknown:
        raise InvalidArgument(f"signals: {', '.join(sorted(unknown))} not in {message} ({', '.join(sorted(names))})")
    protected = set()
    if mc.e2e is not None:
        protected = {mc.e2e.counter_signal, mc.e2e.crc_signal}
    per_signal = {}
    for sig in mc.dbc_message.signals:
        if sig.name in protected:
            continue
        if sig.name == mc.multiplexer:
            per_signal[sig.name] = st.sampled_from(mc.pages)
        elif sig.name in fixed:
            value = fixed[sig.name]
            if not isinstance(value, st.SearchStrategy) and not _is_float(mc, sig.name):
                why = field_overflow(mc, sig.name, value) if isinstance(value, (int, float)) else "expected a number"
                if why is not None:
                    raise InvalidArgument(f"signals[{sig.name!r}]={value!r}: {why}")
            per_signal[sig.name] = value if isinstance(value, st.SearchStrategy) else st.just(value)
        else:
            per_signal[sig.name] = _signal_values(sig)
    counter_bits = mc.e2e.counter_bits if mc.e2e is not None else 0

    @st.composite
    def frame(draw):
        values = {name: draw(s) for name, s in per_signal.items()}
        if mc.multiplexer is not None:
            mux = values.get(mc.multiplexer)
            # only the signals of the drawn page
            values = {k: v for k, v in values.items() if k == mc.multiplexer or _on_page(mc, k, mux)}
        mode = draw(st.sampled_from(_E2E_MODES[:3])) if e2e == "any" else e2e
        if mc.e2e is not None:
            values[mc.e2e.counter_signal] = draw(st.integers(0, (1 << counter_bits) - 1))
        data = bytearray(mc.encode(values))   # saturated into the DBC's ranges: a fixed value outside goes in below
        outside = [k for k in fixed if k in values and not _is_float(mc, k) and field_overflow(mc, k, values[k]) is None
                   and not mc.signals[k].minimum - 1e-9 <= values[k] <= mc.signals[k].maximum + 1e-9]
        for name in outside:
            _put_raw(mc.signals[name], data, values[name])
        if outside and mc.e2e is not None:   # the CRC over the bytes as sent
            data = bytearray(mc.protect(bytes(data), values[mc.e2e.counter_signal]))
        if mc.e2e is not None and mode == "wrong_crc":
            data[mc.e2e.crc_byte] ^= draw(st.integers(1, 255))
        return Frame.build(mc.frame_id, data, is_extended_id=mc.is_extended_id, is_fd=mc.is_fd)
    return frame()


def _on_page(mc, name: str, page) -> bool:
    sig = mc.dbc_message.get_signal_by_name(name)
    ids = getattr(sig, "multiplexer_ids", None)
    return not ids or page in ids


def _signal_values(sig):
    if sig.choices:
        return st.sampled_from(sorted(int(k) for k in sig.choices))
    scale = sig.scale or 1
    raw_min = 0 if not sig.is_signed else -(1 << (sig.length - 1))
    raw_max = (1 << sig.length) - 1 if not sig.is_signed else (1 << (sig.length - 1)) - 1
    lo = sig.minimum if sig.minimum is not None else raw_min * scale + sig.offset
    hi = sig.maximum if sig.maximum is not None else raw_max * scale + sig.offset
    lo, hi = min(lo, hi), max(lo, hi)
    k_lo, k_hi = math.ceil((lo - sig.offset) / scale - 1e-9), math.floor((hi - sig.offset) / scale + 1e-9)
    k_lo, k_hi = max(k_lo, raw_min), min(k_hi, raw_max)
    zero = min(max(round(-sig.offset / scale), k_lo), k_hi)   # shrinks toward the physical 0 (or the nearest)
    return st.integers(k_lo - zero, k_hi - zero).map(lambda d: round((zero + d) * scale + sig.offset, 10))


def malformed_frames(*, dbc=None):
    """Frames a receiver must count and ignore: a known ID with a wrong length, an unknown ID, a remote frame, an
    error frame (without the bus-off bit), a known ID as a 29-bit ID."""
    from bms.can import Codec
    from bms.can.node import Frame
    codec = Codec(path=dbc) if dbc is not None else Codec()
    known = sorted({(m.frame_id, m.length) for m in codec.messages.values() if not m.is_extended_id})
    ids = {fid for fid, _ in known}
    if not known:
        raise InvalidArgument("the DBC has no standard-ID message")

    @st.composite
    def wrong_length(draw):
        fid, length = draw(st.sampled_from(known))
        n = draw(st.integers(0, 8).filter(lambda n: n != length))
        return Frame.build(fid, draw(st.binary(min_size=n, max_size=n)))

    unknown = st.integers(0, 0x7FF).filter(lambda i: i not in ids).flatmap(
        lambda fid: st.binary(max_size=8).map(lambda d: Frame.build(fid, d)))

    def remote(fid_len):
        f = Frame.build(fid_len[0], b"")
        f.is_remote_frame, f.dlc = True, fid_len[1]
        return f

    def error(bits):
        f = Frame.build(bits & ~0x40, b"\x00" * 8, is_extended_id=True)
        f.is_error_frame = True
        return f

    extended = st.sampled_from(known).flatmap(
        lambda k: st.binary(min_size=k[1], max_size=k[1]).map(lambda d: Frame.build(k[0], d, is_extended_id=True)))
    return st.one_of(wrong_length(), unknown, st.sampled_from(known).map(remote),
                     st.integers(1, 0x1FF).map(error), extended)
