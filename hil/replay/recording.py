"""Reading a recorded drive: every mapped signal decoded from a python-can log, and what went wrong on the way.

Nothing is dropped silently. A log is checked against what its container promises (a BLF header's file
size, object count and duration; an ASC file's closing ``End TriggerBlock``; the line ending of the last
record of every text format; a gzip stream's end marker), and against the reader's own errors and warnings
(python-can's TRC reader skips a line it cannot parse with only a log message). Every frame of a mapped
message is counted: decoded, failed (and why: "6 data bytes where the DBC defines 8"), of another
multiplexer value or another channel. Each mapped signal is checked for gaps and for never appearing.
Each finding is a ``Finding``; a failing one fails the replay unless the mapping allows it.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bms.errors import BmsError
from bms.input_files import suggest

from ..scenario import ScenarioError
from .mapping import Product, ReplayMapping, SignalRef

__all__ = ["ReplayError", "Finding", "RecordedDrive", "read_recording"]

DEFAULT_GAP_FLOOR_S = 1.0        # default gap threshold: max(this, GAP_PERIODS × the median period)
GAP_PERIODS = 5.0
MAX_TIME_BACK_S = 1.0            # a timestamp going back further than this: a damaged or spliced log
MAX_REASONS = 3                  # failure reasons kept per message (the rest are counted)
STOP_EVERY_FRAMES = 4096         # how often a long read looks at a stop request


class ReplayError(BmsError, ValueError):
    """A log, DBC or mapping cannot be used for a replay at all; says which file and what."""


@dataclass
class Finding:
    """One check of the recording: passed, or what was wrong (and whether the mapping allows it)."""
    check: str                   # "log", "decode", "signal"
    subject: str                 # the log's name, a message's name or a mapping key
    ok: bool
    message: str
    allowed: bool = False        # a problem that the mapping explicitly allows
    line: int | None = None      # the mapping line it refers to

    @property
    def fails(self) -> bool:
        return not self.ok and not self.allowed


@dataclass
class _Group:
    """The frames of one mapped message (on one channel, or any): counted and decoded once per frame."""
    message: Any                 # cantools Message
    channel: str | None
    leaves: list[SignalRef]
    frames: int = 0
    decoded: int = 0
    failures: Counter = field(default_factory=Counter)
    other_mux: Counter = field(default_factory=Counter)
    other_channels: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    remote: int = 0

    @property
    def name(self) -> str:
        return self.message.name + (f" (channel {self.channel})" if self.channel is not None else "")


@dataclass
class RecordedDrive:
    """Every mapped quantity as (time_s from the log's first frame, value), and the checks' findings."""
    log: str
    series: dict[str, tuple[np.ndarray, np.ndarray]]
    findings: list[Finding]
    log_info: dict
    messages: dict[str, dict]
    signals: dict[str, dict]

    def __getitem__(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        return self.series[key]

    def get(self, key: str):
        return self.series.get(key)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.fails]

    @property
    def duration_s(self) -> float:
        return float(self.log_info.get("duration_s", 0.0))


class _LineTap:
    """Passes a text reader's lines through, remembering the first lines and the last one."""

    def __init__(self, file) -> None:
        self._file = file
        self.head: list[str] = []
        self.last = ""
        self.last_text = ""

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._file)
        self.last = line
        if line.strip():
            self.last_text = line
        if len(self.head) < 20:
            self.head.append(line)
        return line

    def __getattr__(self, name):
        return getattr(self._file, name)


class _Warnings(logging.Handler):
    """Collects what python-can's readers log at WARNING or above while a log is read."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage()[:200])


def read_recording(log_path: str | Path, dbc_path: str | Path, mapping: ReplayMapping, *,
                   stop=None) -> RecordedDrive:
    """Decode every mapped signal of ``log_path`` with the vehicle's DBC; check the log and each signal.
    ``stop`` (anything with ``is_set()``) is looked at every few thousand frames: reading ends there, and the
    log's check says so."""
    log_path = Path(log_path)
    db = _load_dbc(dbc_path)
    by_id = _groups(db, dbc_path, mapping)
    samples: dict[str, tuple[list, list]] = {key: ([], []) for key in mapping.leaves()}
    findings: list[Finding] = []
    info: dict = {"path": str(log_path), "format": "".join(log_path.suffixes[-2:]).lower() or "?"}
    reader = _open(log_path)
    tap = None
    from can.io.generic import TextIOMessageReader
    if isinstance(reader, TextIOMessageReader):
        tap = _LineTap(reader.file)
        setattr(reader, "file", tap)  # noqa: B010 (the reader's own attribute, typed as a TextIO)
    warnings = _Warnings()
    can_logger = logging.getLogger("can")
    can_logger.addHandler(warnings)
    frames = error_frames = 0
    near_misses: Counter = Counter()  # frames with a mapped ID number but the other ID length
    t_first = t_last = None
    damage = None
    try:
        for msg in reader:
            frames += 1
            if stop is not None and not frames % STOP_EVERY_FRAMES and stop.is_set():
                frames -= 1
                damage = f"reading stopped by a stop request after {frames:,} frames"
                break
            t = msg.timestamp
            if t_first is None:
                t_first = t
            t_last = t
            if msg.is_error_frame:
                error_frames += 1
                continue
            groups = by_id.get((msg.arbitration_id, msg.is_extended_id))
            if groups is None:
                if (msg.arbitration_id, not msg.is_extended_id) in by_id:
                    near_misses[(msg.arbitration_id, msg.is_extended_id)] += 1
                continue
            _take(msg, groups, samples)
    except Exception as exc:  # every reader raises its own kinds (struct, zlib, gzip EOF, ValueError …)
        damage = (f"unreadable after {frames} frames"
                  + (f" (t = {t_last - t_first:.3f} s)" if t_first is not None else "") + f": {_describe(exc)}")
    finally:
        can_logger.removeHandler(warnings)
        stop = getattr(reader, "stop", None)
        if stop is not None:
            try:
                stop()
            except Exception:  # closing a damaged file must not hide why it was damaged
                pass
    info.update(frames=frames, error_frames=error_frames,
                duration_s=float(t_last - t_first) if t_first is not None else 0.0,
                start_timestamp=t_first)
    problems = _log_problems(log_path, reader, tap, info, damage, warnings.records)
    info["problems"] = problems
    allowed = mapping.checks.allow_incomplete_log
    name = log_path.name
    findings.append(Finding("log", name, not problems,
                            "; ".join(problems) + (" (allowed: [checks] allow_incomplete_log)" if allowed else "")
                            if problems else _log_ok(info), allowed=bool(problems) and allowed))

    t0 = t_first if t_first is not None else 0.0
    series = {}
    for key, (t, v) in samples.items():
        times = np.asarray(t, dtype=float) - t0
        back = float(-np.min(np.diff(times), initial=0.0)) if times.size > 1 else 0.0
        if back > MAX_TIME_BACK_S:
            findings.append(Finding("log", name, False, f"{key}: a timestamp goes back by {back:.3f} s: two logs "
                                    f"joined, or a damaged log", allowed=allowed))
        series[key] = _sorted(times, np.asarray(v, dtype=float))
    messages = {}
    for groups in by_id.values():
        for group in groups:
            messages[group.name] = _message_report(group)
            findings.extend(_decode_findings(group, mapping))
    signals: dict[str, dict] = {}
    for key, ref in mapping.refs().items():
        if isinstance(ref, Product):
            series[key] = _product(ref, series)
        for leaf in ref.leaves():
            report, found = _signal_findings(leaf, ref, series[leaf.key], info["duration_s"], mapping, by_id,
                                             near_misses)
            signals[leaf.key] = report
            findings.extend(found)
    drive = RecordedDrive(str(log_path), series, findings, info, messages, signals)
    demand_key = f"demand.{mapping.demand_kind}"
    if not series[demand_key][0].size:
        leaves = mapping.demand.leaves()
        absent = next((leaf for leaf in leaves if not series[leaf.key][0].size), leaves[0])
        raise ReplayError(f"{log_path}: nothing to replay: {_absence(absent, by_id, near_misses)}"
                          + (f"; the log itself: {'; '.join(problems)}" if problems else ""))
    return drive


# --- opening ------------------------------------------------------------------------------------
def _load_dbc(dbc_path):
    import cantools

    try:
        db = cantools.database.load_file(str(dbc_path))
    except FileNotFoundError as exc:
        raise ReplayError(f"{dbc_path}: no such DBC file") from exc
    except Exception as exc:  # cantools raises several kinds for a bad DBC
        raise ReplayError(f"{dbc_path}: cannot load the DBC: {_describe(exc)}") from exc
    if not isinstance(db, cantools.database.can.Database):  # a diagnostics (.cdd) database has no frames
        raise ReplayError(f"{dbc_path}: not a CAN database (DBC, ARXML, KCD or SYM): cantools read it as "
                          f"{type(db).__module__}.{type(db).__name__}")
    return db


def _open(log_path: Path):
    import can

    if not log_path.exists():
        raise ReplayError(f"{log_path}: no such log file")
    try:
        return can.LogReader(str(log_path))
    except ValueError as exc:
        if "unknown log format" in str(exc):
            raise ReplayError(f"{log_path}: python-can reads no such format; expected .blf, .asc, .log "
                              f"(candump -L), .csv, .trc, .db, .mf4, or one of them .gz") from exc
        raise ReplayError(f"{log_path}: cannot open the log: {_describe(exc)}") from exc
    except ImportError as exc:
        raise ReplayError(f"{log_path}: reading this format needs an optional package: {exc} (for .mf4: "
                          f"pip install 'assb-bms-emulator[mf4]')") from exc
    except Exception as exc:  # BLFParseError, struct.error on a short header, NotImplementedError (mf4) …
        extra = " (for .mf4: pip install 'assb-bms-emulator[mf4]')" if log_path.suffix.lower() == ".mf4" else ""
        size = log_path.stat().st_size
        if log_path.suffix.lower() == ".blf" and size < 144:  # python-can's struct error on the file header
            extra = (" (the file is empty)" if size == 0 else
                     f" ({size} bytes: shorter than a BLF file header, 144 bytes)") + extra
        raise ReplayError(f"{log_path}: cannot open the log: {_describe(exc)}{extra}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _groups(db, dbc_path, mapping: ReplayMapping) -> dict[tuple[int, bool], list[_Group]]:
    """The mapped messages by (frame ID, extended), each group decoding its frames once."""
    groups: dict[tuple, _Group] = {}
    names = [m.name for m in db.messages]
    for key, leaf in mapping.leaves().items():
        try:
            message = db.get_message_by_name(leaf.message)
        except KeyError:
            raise ScenarioError(mapping.source, leaf.line, f"{key}.message",
                                f"message {leaf.message!r} is not in {dbc_path}{_nearest(leaf.message, names)}"
                                ) from None
        signal_names = [s.name for s in message.signals]
        if leaf.signal not in signal_names:
            raise ScenarioError(mapping.source, leaf.line, f"{key}.signal",
                                f"signal {leaf.signal!r} is not in message {leaf.message} of {dbc_path}"
                                f"{_nearest(leaf.signal, signal_names)}")
        channel = None if leaf.channel is None else str(leaf.channel)
        group = groups.setdefault((message.frame_id, message.is_extended_frame, channel),
                                  _Group(message, channel, []))
        group.leaves.append(leaf)
    by_id: dict[tuple[int, bool], list[_Group]] = {}
    for (frame_id, extended, _), group in groups.items():
        by_id.setdefault((frame_id, extended), []).append(group)
    return by_id


def _nearest(word: str, names: list[str]) -> str:
    """The scenario loader's suggestion, after a match that differs only in case (SOC, Soc)."""
    same = [n for n in names if n.lower() == word.lower()]
    return f"; did you mean {same[0]!r}?" if same else suggest(word, names)


def _take(msg, groups: list[_Group], samples: dict) -> None:
    """Count one frame of a mapped message and decode it once for every group that takes it."""
    channel = str(msg.channel)
    data = None
    for group in groups:
        group.channels[channel] += 1
        if group.channel is not None and group.channel != channel:
            group.other_channels[channel] += 1
            continue
        group.frames += 1
        if msg.is_remote_frame:
            group.remote += 1
            continue
        if data is None:
            data = bytes(msg.data)
        message = group.message
        try:
            decoded = message.decode(data, decode_choices=False)
        except Exception as exc:
            group.failures[_failure_reason(message, data, exc)] += 1
            continue
        t = msg.timestamp
        ok = False
        for leaf in group.leaves:
            value = decoded.get(leaf.signal)
            if value is None:
                group.other_mux[leaf.signal] += 1
                continue
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                group.failures[f"{leaf.signal} is not a finite number"] += 1
                continue
            ok = True
            times, values = samples[leaf.key]
            times.append(t)
            values.append(value * leaf.scale + leaf.offset)
        group.decoded += ok


def _failure_reason(message, data: bytes, exc: Exception) -> str:
    if len(data) < message.length:
        return f"{len(data)} data bytes where the DBC defines {message.length}"
    return _describe(exc)[:160]


def _sorted(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if t.size > 1 and np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        return t[order], v[order]
    return t, v


# --- the log's promises -------------------------------------------------------------------------
def _log_problems(path: Path, reader, tap: _LineTap | None, info: dict, damage: str | None,
                  warnings: list[str]) -> list[str]:
    problems = [damage] if damage else []
    if warnings:
        problems.append(f"the reader skipped or flagged {len(warnings)} record(s) (first: {warnings[0]!r})")
    header_count = getattr(reader, "object_count", None)
    if header_count is not None:  # BLF: what the header promises
        problems += _blf_problems(path, reader, info)
    if tap is not None and tap.last and not tap.last.endswith(("\n", "\r")):
        problems.append(f"the last line is cut off ({tap.last.strip()[:60]!r}): the log ends mid-record")
    if tap is not None and _is_asc(path):
        begun = any(line.strip().lower().startswith("begin triggerblock") for line in tap.head)
        if begun and not tap.last_text.strip().lower().startswith("end triggerblock"):
            problems.append("no 'End TriggerBlock' at the end: the ASC file was not closed by its writer "
                            "(cut or still being written)")
    return problems


def _is_asc(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    return ".asc" in suffixes[-2:]


def _blf_problems(path: Path, reader, info: dict) -> list[str]:
    problems = []
    promised_size = int(getattr(reader, "file_size", 0) or 0)
    count = int(reader.object_count)
    compressed = path.suffix.lower() == ".gz"
    actual_size = None if compressed else os.path.getsize(path)
    start, stop = getattr(reader, "start_timestamp", 0) or 0, getattr(reader, "stop_timestamp", 0) or 0
    header_duration = stop - start if start and stop and stop >= start else None
    info["header"] = {"file_size": promised_size, "object_count": count, "duration_s": header_duration}
    if promised_size <= 144 and count == 0 and info["frames"] > 0:
        problems.append(f"the header was never completed (it counts no objects, but {info['frames']} frames "
                        f"were read): the writer did not close the file, so the log may be cut")
        return problems
    if actual_size is not None and promised_size and actual_size != promised_size:
        problems.append(f"the header promises {promised_size:,} bytes, the file has {actual_size:,}: "
                        f"{'cut' if actual_size < promised_size else 'extended or damaged'}; read "
                        f"{info['frames']:,} of the {count:,} objects the header counts")
    elif info["frames"] > count > 0:
        problems.append(f"{info['frames']:,} frames read where the header counts {count:,} objects")
    if header_duration is not None and actual_size is None:  # no size to go by: the duration tells
        missing = header_duration - info["duration_s"]
        if missing > max(1.0, 0.01 * header_duration):
            problems.append(f"the header says the log lasts {header_duration:.1f} s, its frames cover "
                            f"{info['duration_s']:.1f} s")
    return problems


def _log_ok(info: dict) -> str:
    text = f"{info['frames']:,} frames over {info['duration_s']:.1f} s read to the end"
    header = info.get("header")
    if header:
        text += (f"; the BLF header's {header['file_size']:,} bytes and {header['object_count']:,} objects "
                 f"check out")
        if header["object_count"] > info["frames"]:
            text += f" ({header['object_count'] - info['frames']:,} objects of kinds python-can does not read)"
    return text


# --- messages and signals -----------------------------------------------------------------------
def _message_report(group: _Group) -> dict:
    return {"frame_id": hex(group.message.frame_id), "extended": group.message.is_extended_frame,
            "frames": group.frames, "decoded": group.decoded, "failed": sum(group.failures.values()),
            "failure_reasons": dict(group.failures.most_common()), "remote": group.remote,
            "other_multiplexer_values": dict(group.other_mux), "channels": dict(group.channels),
            "other_channels": dict(group.other_channels)}


def _decode_findings(group: _Group, mapping: ReplayMapping) -> list[Finding]:
    out = []
    failed = sum(group.failures.values())
    keys = ", ".join(leaf.key for leaf in group.leaves)
    line = group.leaves[0].line
    if group.frames:
        fraction = failed / group.frames
        limit = mapping.checks.max_decode_failure_fraction
        if failed:
            text = f"{failed:,} of {group.frames:,} frames failed to decode: {_reasons(group.failures)}"
            out.append(Finding("decode", group.name, False, text + (f" (allowed: up to {limit:g} of the frames)"
                                                                     if fraction <= limit else ""),
                               allowed=fraction <= limit, line=line))
        else:
            text = f"{group.decoded:,} of {group.frames:,} frames decoded ({keys})"
            other_pages = group.frames - group.decoded - group.remote
            if other_pages:  # a multiplexed message: they carry none of the mapped signals
                text += f"; {other_pages:,} carry other multiplexer values"
            if group.remote:
                text += f"; {group.remote:,} remote frames"
            out.append(Finding("decode", group.name, True, text, line=line))
    if group.channel is None and len(group.channels) > 1:
        listed = ", ".join(f"{c} ({n:,} frames)" for c, n in group.channels.most_common())
        out.append(Finding("decode", group.name, False, f"frames arrive on several channels: {listed}; the "
                           f"mapping must say which one (channel = …) for {keys}", line=line))
    return out


def _reasons(failures: Counter) -> str:
    shown = [f"{n:,} × {reason}" for reason, n in failures.most_common(MAX_REASONS)]
    rest = sum(failures.values()) - sum(n for _, n in failures.most_common(MAX_REASONS))
    return "; ".join(shown) + (f"; {rest:,} more of other kinds" if rest else "")


def _gap_threshold(leaf: SignalRef, parent, mapping: ReplayMapping, periods: np.ndarray) -> tuple[float, str]:
    for value, where in ((leaf.max_gap_s, f"{leaf.key}.max_gap_s"),
                         (getattr(parent, "max_gap_s", None), f"{parent.key}.max_gap_s"),
                         (mapping.checks.max_gap_s, "checks.max_gap_s")):
        if value is not None:
            return value, where
    median = float(np.median(periods)) if periods.size else 0.0
    return max(DEFAULT_GAP_FLOOR_S, GAP_PERIODS * median), f"default: max({DEFAULT_GAP_FLOOR_S:g} s, " \
                                                           f"{GAP_PERIODS:g} × median period)"


def _signal_findings(leaf: SignalRef, parent, series, duration_s: float, mapping: ReplayMapping, by_id,
                     near_misses: Counter):
    t, _ = series
    optional = getattr(parent, "optional", False) or leaf.optional
    report: dict = {"signal": leaf.describe(), "samples": int(t.size)}
    if not t.size:
        why = _absence(leaf, by_id, near_misses)
        report["missing"] = why
        return report, [Finding("signal", leaf.key, False, why + (" (allowed: optional)" if optional else ""),
                                allowed=optional, line=leaf.line)]
    periods = np.diff(t)
    threshold, source = _gap_threshold(leaf, parent, mapping, periods)
    edges = np.concatenate(([0.0], t, [duration_s]))
    spans = np.diff(edges)
    gaps = np.flatnonzero(spans > threshold)
    report.update(first_s=float(t[0]), last_s=float(t[-1]),
                  median_period_s=float(np.median(periods)) if periods.size else None,
                  gap_threshold_s=threshold, gaps=int(gaps.size),
                  longest_gap_s=float(spans.max()) if spans.size else 0.0)
    if not gaps.size:
        return report, [Finding("signal", leaf.key, True, f"{t.size:,} samples from {t[0]:.2f} s to {t[-1]:.2f} s, "
                                f"no gap over {threshold:g} s ({source})", line=leaf.line)]
    worst = int(gaps[np.argmax(spans[gaps])])
    where = ("at the start" if worst == 0 else "at the end" if worst == spans.size - 1
             else f"after t = {edges[worst]:.2f} s")
    if leaf.key.startswith("compare."):
        effect = "the comparison leaves the gaps out"
    else:
        effect = "the replay holds " + ("the first recorded value before it" if worst == 0 else
                                        "the last value through a gap")
    text = f"{gaps.size} gap(s) over {threshold:g} s ({source}); the longest {spans[worst]:.2f} s {where}: {effect}"
    report["longest_gap_at_s"] = float(edges[worst])
    return report, [Finding("signal", leaf.key, False, text, line=leaf.line)]


def _absence(ref, by_id, near_misses: Counter) -> str:
    """Why a mapped signal has no sample: no frame at all (and near misses), all failed, other mux values."""
    leaf = ref.leaves()[0]
    for groups in by_id.values():
        for group in groups:
            if leaf not in group.leaves:
                continue
            message = group.message
            if not group.frames:
                kind = "29-bit" if message.is_extended_frame else "11-bit"
                text = f"no frame of {message.name} (ID {message.frame_id:#x}, {kind}) in the log"
                if group.other_channels:
                    text += (f"; it arrives on channel(s) {', '.join(group.other_channels)}, not the mapped "
                             f"channel {group.channel}")
                near = near_misses.get((message.frame_id, not message.is_extended_frame), 0)
                if near:
                    text += (f"; {near:,} frames carry ID {message.frame_id:#x} as a "
                             f"{'11-bit' if message.is_extended_frame else '29-bit'} ID")
                return f"{text} ({leaf.key})"
            failed = sum(group.failures.values())
            if failed:
                return (f"{group.frames:,} frames of {message.name} found, all of them failed to decode: "
                        f"{_reasons(group.failures)} ({leaf.key})")
            if group.other_mux.get(leaf.signal):
                return (f"{group.frames:,} frames of {message.name} found, none carries {leaf.signal} (other "
                        f"multiplexer values) ({leaf.key})")
            if group.remote == group.frames:
                return f"{group.frames:,} frames of {message.name} found, all remote frames ({leaf.key})"
    return f"no sample of {leaf.describe()} ({leaf.key})"


def _product(ref: Product, series: dict) -> tuple[np.ndarray, np.ndarray]:
    """The factors multiplied at every instant any of them changes, each held at its latest value (as a
    receiving ECU sees CAN signals), from when all of them have a value."""
    parts = [series[f.key] for f in ref.factors]
    if any(not t.size for t, _ in parts):
        return np.empty(0), np.empty(0)
    start = max(float(t[0]) for t, _ in parts)
    times = np.unique(np.concatenate([t for t, _ in parts]))
    times = times[times >= start]
    value = np.ones_like(times)
    for t, v in parts:
        value *= v[np.clip(np.searchsorted(t, times, side="right") - 1, 0, None)]
    return times, value * ref.scale + ref.offset
