"""Logs of the node's traffic and its cycle-time statistics.

``LogWriter`` writes frames with python-can's writers, chosen by file extension (``.blf``, ``.asc``,
``.log`` candump, ``.csv``, ``.trc``, ``.txt``; ``.mf4`` with the optional ``asammdf``), from one
background thread, so file I/O never delays the schedule. The node hands it one batch of frames per tick;
what it holds is bounded by frames and by wall time (every file readable after any stop, at most a short
tail lost to a kill); ``stop()`` flushes, closes every file and joins the thread, also after an error, and
re-raises any error the thread met.

``CycleStats`` keeps, per message and direction, the deviation of every interval between two frames from
the message's nominal period: count, mean interval, mean/p99/max |deviation|. p99 comes from a 1 us
histogram (exact for the lockstep clock, where every deviation is 0), the maximum is exact.
"""
from __future__ import annotations

import copy
import gzip
import os
import re
import threading
import time
from collections import deque
from pathlib import Path

import can
import numpy as np

from .._kernels import KERNELS
from ..errors import BmsError

__all__ = ["LogWriter", "LogError", "CycleStats", "MessageStats", "SUPPORTED_LOG_SUFFIXES", "open_writer"]

SUPPORTED_LOG_SUFFIXES = (".blf", ".asc", ".log", ".csv", ".trc", ".txt", ".mf4")
# what the CLI's --log help and the writer's error say: every format, and which compress
LOG_FORMATS_HELP = ".blf, .asc, .log (candump), .csv, .trc, .txt, .mf4 (mf4 extra); the text ones also .gz"
# zlib level of BLF containers unless told otherwise: Z_BEST_SPEED writes a lockstep run's frames ~30 %
# faster than python-can's default (6) for ~13 % more bytes; every BLF reader inflates either
BLF_COMPRESSION_LEVEL = 1
_HIST_BINS = 20_001  # 1 us bins up to 20 ms; larger deviations land in the last bin (the max stays exact)


# what python-can's writers do with CAN FD frames: .trc cannot write them, .csv drops the FD and BRS flags,
# .txt (printer) shows them; .blf, .asc, .log (candump) and .mf4 keep them
FD_LOSSY_SUFFIXES = {".trc": "python-can's TRC writer cannot write CAN FD frames",
                     ".csv": "python-can's CSV format has no column for the FD and bit-rate-switch flags"}


def fd_log_problems(paths) -> list[tuple[str, str, bool]]:
    """(path, why, fatal) for each log that would lose CAN FD frames (fatal) or their flags."""
    out = []
    for path in paths or ():
        why = FD_LOSSY_SUFFIXES.get(Path(str(path)).suffix.lower())
        if why:
            out.append((str(path), why, Path(str(path)).suffix.lower() == ".trc"))
    return out


class LogError(BmsError):
    """A log file cannot be opened or written: which file and why."""


class BatchBLFWriter(can.BLFWriter):
    """python-can's BLF writer with ``write_frames(frames)``: a batch of classic CAN data and remote frames packed
    by a compiled kernel (``KERNELS.blf_objects``, its twin ``bms/_twin/blf_objects.py``) as python-can packs them,
    object header and CAN_MESSAGE body, in a fraction of ``on_message_received``'s cost per frame (the largest part
    of a lockstep tick's logging); the bytes are python-can's, checked frame for frame against its writer. Any
    other frame (CAN FD, error frames, a timestamp of None) goes through ``on_message_received``."""

    def write_frames(self, frames) -> None:
        from can.io import blf

        fast = _BLF_OBJECT_SIZE == blf.OBJ_HEADER_BASE_STRUCT.size + blf.OBJ_HEADER_V1_STRUCT.size + \
            blf.CAN_MSG_STRUCT.size and hasattr(self, "_buffer") and hasattr(self, "max_container_size")
        if not fast:  # a python-can whose BLF layout differs from the one this was written against
            for msg in frames:
                self.on_message_received(msg)
            return
        pack, limit, channel = KERNELS.blf_objects.pack_can_objects, self.max_container_size, self.channel
        i, n = 0, len(frames)
        while i < n:
            # python-can's counters updated before anything of python-can's runs (a flush, its own path)
            objects, j, start, last, size = pack(frames, i, self.start_timestamp, channel, _BLF_CHANNELS,
                                                 self._buffer_size, limit)
            if j == i:  # a frame for python-can's own path
                self.on_message_received(frames[i])
                i += 1
                continue
            self._buffer.append(objects)
            self._buffer_size, self.start_timestamp, self.stop_timestamp = size, start, last
            self.object_count += j - i
            if size >= limit:  # python-can flushes after the object that reaches the limit
                self._flush()
            i = j


_BLF_OBJECT_SIZE = 48     # python-can's "<4sHHLL", "<LHHQ", "<HBBL8s": base header, v1 header, CAN_MESSAGE
_BLF_CHANNELS: dict[str, int | None] = {}   # channel name -> python-can's channel2int (a regex match each)


def write_frames(writer, frames) -> None:
    """``frames`` through ``writer``: its batch method if it has one, else frame by frame."""
    batch = getattr(writer, "write_frames", None)
    if batch is not None:
        batch(frames)
    else:
        for msg in frames:
            writer.on_message_received(msg)


class CandumpWriter(can.CanutilsLogWriter):
    """python-can's candump (``.log``) writer with every frame under the writer's one interface name.

    python-can names a frame by its own ``channel`` (the bus's name on a received frame) and a frame without
    one (what the node sends) by the writer's default "vcan0": one bus came out as two interfaces
    (``vcan0`` for the BMS's frames, ``can0`` or the virtual channel for the VCU's), which canplayer
    replays onto two."""

    def on_message_received(self, msg: can.Message) -> None:
        if msg.channel is not None:
            msg = copy.copy(msg)  # the frame is shared with the other logs and receivers
            msg.channel = None
        super().on_message_received(msg)


def candump_interface(channel) -> str:
    """The interface name a candump log gives a bus's frames: its channel where that is a Linux interface
    name (at most 15 characters, no blanks or '/'), else python-can's "vcan0" (the virtual channels)."""
    if isinstance(channel, str) and re.fullmatch(r"[^\s/]{1,15}", channel):
        return channel
    return "vcan0"


def open_writer(path: str | Path, *, interface: str | None = None, **kwargs):
    """A python-can writer for ``path`` by its extension (``.gz`` for compressed text formats); BLF files
    are compressed at ``BLF_COMPRESSION_LEVEL`` unless ``compression_level`` is given. ``interface``: the
    one interface name of a candump log's frames (``candump_interface``; default: each frame's channel)."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    suffix = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (
        suffixes[-1] if suffixes else "")
    if suffix not in SUPPORTED_LOG_SUFFIXES:
        raise LogError(f"{path}: expected a log file ending in one of {LOG_FORMATS_HELP}; "
                       f"found {suffix or 'no extension'!r}")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if suffixes and suffixes[-1] == ".blf":
        kwargs.setdefault("compression_level", BLF_COMPRESSION_LEVEL)
    try:
        if suffixes and suffixes[-1] == ".blf":
            return BatchBLFWriter(str(path), **kwargs)
        if suffix == ".log" and interface is not None:
            gz = suffixes[-1] == ".gz"  # as python-can's Logger opens a .gz text log
            return CandumpWriter(gzip.open(path, "wt") if gz else str(path), channel=interface, **kwargs)
        return can.Logger(str(path), **kwargs)
    except (ImportError, NotImplementedError) as exc:  # python-can says NotImplementedError for MF4
        raise LogError(f"{path}: the {suffix} writer needs an optional package ({exc}); "
                       f"for MF4 install assb-bms-emulator[mf4]") from exc
    except (OSError, ValueError) as exc:
        raise LogError(f"{path}: cannot open for writing: {exc}") from exc


class LogWriter:
    """Writes batches of ``can.Message`` to one or more files from a background thread.

    What a writer holds in memory and in file buffers is bounded, so a stop (or even a kill) loses at most
    a short tail and every file stays readable: the header of each file is on disk as soon as it is opened;
    the thread hands everything it wrote to the operating system (python-can's BLF container included)
    every ``flush_frames`` frames and at least every ``flush_s`` seconds of wall time while frames come in;
    at most ``max_pending_frames`` frames wait in the queue. ``block=True`` (lockstep) makes ``write`` wait
    while the queue is full, so a fast producer never outruns the disk; ``block=False`` (wall clock) never
    waits: a batch that does not fit is dropped and counted in ``dropped_frames``. ``start_s``: the time BLF
    files count from (the lockstep clock's t = 0). ``same_bytes`` (default: when ``start_s`` is given, i.e.
    lockstep): the same frames always give the same bytes, so BLF containers are cut by frame count only
    and the wall-time bound flushes only what python-can has already written. ``rt_priority``: run the
    writer thread SCHED_FIFO at this priority where permitted (the node sets it one below a real-time loop
    thread). ``thread=False`` writes each batch in the caller's thread, inside ``write`` (lockstep: nothing
    runs beside the loop, and handing batches to a thread cost the loop more than writing them; the same
    bytes, the same bounds, the wall-time one checked at each batch).
    """

    def __init__(self, paths, *, block: bool = True, max_pending_frames: int = 20_000, flush_frames: int = 10_000,
                 flush_s: float = 1.0, start_s: float | None = None, same_bytes: bool | None = None,
                 rt_priority: int | None = None, thread: bool = True, **writer_kwargs):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        self.block = block
        self.max_pending_frames = max(1, int(max_pending_frames))
        self.flush_frames = max(1, int(flush_frames))
        self.flush_s = float(flush_s)
        self.same_bytes = start_s is not None if same_bytes is None else bool(same_bytes)
        self.frames = 0
        self.dropped_frames = 0
        self.flushes = 0
        self._batches: deque = deque()
        self._pending = 0          # frames queued and not yet written
        self._closing = False
        self._ready = threading.Condition(threading.Lock())
        self._writers: list = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.rt_priority = rt_priority
        self.threaded = bool(thread)
        self._unflushed = self._since_cut = 0   # frames written since the last flush / the last container cut
        self._last_flush = time.monotonic()
        try:
            for path in self.paths:
                writer = open_writer(path, **writer_kwargs)
                self._writers.append(writer)
                if start_s is not None and isinstance(writer, can.BLFWriter) and writer.start_timestamp is None:
                    # BLF stores times relative to a start it takes from the first frame, and cannot say
                    # "1970" in its header: anchored here, simulated times (t = 0.01 s ...) read back as such
                    writer.start_timestamp = float(start_s)
                if start_s is not None and isinstance(writer, can.ASCWriter):
                    _asc_header_date(writer, path, float(start_s))
                    # ASC's times count from the measurement's start, which python-can takes from the first
                    # frame (t = 0.01 s read back as 0): started here, they read back as simulated time
                    writer.log_event("bms-emu: times are simulated seconds", float(start_s))
                _flush_writer(writer)  # the header on disk at once: a file killed now still opens
        except OSError as exc:
            for writer in self._writers:
                _quiet_stop(writer)
            raise LogError(f"{path}: cannot write: {exc}") from exc
        except BaseException:
            for writer in self._writers:
                _quiet_stop(writer)
            raise

    def start(self) -> LogWriter:
        if self._thread is None and self._writers and self.threaded:
            self._thread = threading.Thread(target=self._run, name="bms-can-log-writer", daemon=True)
            self._thread.start()
        return self

    def write(self, batch: list) -> None:
        """Queue a batch of frames (the list is handed over: do not reuse it)."""
        if not batch or not self._writers:
            return
        if self._error is not None:
            raise LogError(f"{', '.join(map(str, self.paths))}: the writer failed: {self._error}") from self._error
        n = len(batch)
        if not self.threaded:
            self.frames += n
            try:
                self._write_batch(batch)
            except BaseException as exc:
                self._error = exc
                raise LogError(f"{', '.join(map(str, self.paths))}: writing failed: {exc}") from exc
            return
        with self._ready:
            if self._pending and self._pending + n > self.max_pending_frames:
                if not self.block:
                    self.dropped_frames += n
                    return
                while self._pending and self._pending + n > self.max_pending_frames and self._error is None:
                    self._ready.wait(0.5)
                if self._error is not None:
                    raise LogError(f"{', '.join(map(str, self.paths))}: the writer failed: {self._error}") \
                        from self._error
            self._batches.append(batch)
            self._pending += n
            self.frames += n
            self._ready.notify_all()

    def _next_batch(self, unflushed: int, last_flush: float) -> list | None:
        """The next batch, or None when it is time to flush (or to finish) with nothing queued."""
        with self._ready:
            while not self._batches and not self._closing:
                if unflushed:
                    left = last_flush + self.flush_s - time.monotonic()
                    if left <= 0:
                        return None
                    self._ready.wait(left)
                else:
                    self._ready.wait()
            return self._batches.popleft() if self._batches else None

    def _run(self) -> None:
        if self.rt_priority:
            # beside a SCHED_FIFO loop thread: a writer left at normal priority can be descheduled while it
            # holds the GIL, and the loop would wait for it; one step below the loop it cannot preempt it
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))
            except (OSError, AttributeError):
                pass
        try:
            while True:
                batch = self._next_batch(self._unflushed, self._last_flush)
                if batch is not None:
                    self._write_batch(batch, flush=False)
                    with self._ready:
                        self._pending -= len(batch)
                        self._ready.notify_all()
                self._flush_due(batch is None)
                if batch is None and self._closing:
                    with self._ready:
                        if not self._batches:
                            break
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by stop()
            with self._ready:
                self._error = exc
                self._batches.clear()  # unblock a producer waiting on a full queue
                self._pending = 0
                self._ready.notify_all()
        finally:
            self._close_writers()

    def _close_writers(self) -> None:
        for writer in self._writers:
            try:
                writer.stop()
            except BaseException as exc:  # noqa: BLE001
                self._error = self._error or exc
                file = getattr(writer, "file", None)
                if file is not None:  # the writer failed half-way through stop(): still close its file
                    try:
                        file.close()
                    except BaseException:  # noqa: BLE001, S110 - the first error is the one kept
                        pass

    def _write_batch(self, batch: list, flush: bool = True) -> None:
        for writer in self._writers:
            write_frames(writer, batch)
        self._unflushed += len(batch)
        self._since_cut += len(batch)
        if flush:
            self._flush_due(False)

    def _flush_due(self, idle: bool) -> None:
        """Containers cut every ``flush_frames`` frames (a function of the frames alone); what python-can
        holds handed to the operating system every ``flush_s`` of wall time (``idle``: nothing came in)."""
        if self._since_cut >= self.flush_frames:
            for writer in self._writers:
                _flush_writer(writer)
            self.flushes += 1
            self._since_cut = self._unflushed = 0
            self._last_flush = time.monotonic()
        elif self._unflushed and (idle or time.monotonic() - self._last_flush >= self.flush_s):
            for writer in self._writers:
                _flush_writer(writer, containers=not self.same_bytes)
            self.flushes += 1
            self._unflushed, self._last_flush = 0, time.monotonic()
            if not self.same_bytes:
                self._since_cut = 0

    def stop(self, timeout: float = 30.0) -> None:
        """Flush and close every file, join the thread; raises LogError if writing failed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            with self._ready:
                self._closing = True
                self._ready.notify_all()
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise LogError(f"{', '.join(map(str, self.paths))}: the log writer did not finish within "
                               f"{timeout} s")
        elif not self.threaded:  # what was written goes to disk with python-can's own stop()
            self._close_writers()
        else:
            for writer in self._writers:
                _quiet_stop(writer)
        if self._error is not None:
            raise LogError(f"{', '.join(map(str, self.paths))}: writing failed: {self._error}") from self._error

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _flush_writer(writer, containers: bool = True) -> None:
    """Hand what ``writer`` holds to the operating system: python-can's pending BLF container (unless
    ``containers`` is False), then the file's buffer (writers without a file, such as MF4's, keep their own)."""
    if containers and isinstance(writer, can.BLFWriter):
        writer._flush()  # the container python-can would write at 128 KiB, written now (a valid BLF object)
    file = getattr(writer, "file", None)
    if file is not None and not getattr(file, "closed", True):
        file.flush()


def _asc_header_date(writer, path: Path, start_s: float) -> None:
    """python-can's ASC writer dates its header with the wall clock; a lockstep log says its own start
    instead, so two runs write the same bytes. Left as is if anything looks unexpected."""
    from datetime import datetime

    try:
        f = writer.file
        f.flush()
        header = path.read_text(encoding=getattr(f, "encoding", None) or "utf-8")
        first, sep, rest = header.partition("\n")
        if not (first.startswith("date ") and sep):
            return
        f.seek(0)
        f.truncate()
        f.write(f"date {writer._format_header_datetime(datetime.fromtimestamp(start_s))}\n{rest}")
    except Exception:  # noqa: BLE001 - a cosmetic header, never worth failing a run
        pass


def _quiet_stop(writer) -> None:
    try:
        writer.stop()
    except Exception:  # noqa: BLE001
        pass


class MessageStats:
    """Interval statistics of one message in one direction.

    ``add(t_ns)`` only appends to a buffer (the node calls it for every frame); the buffer is folded into
    the statistics with NumPy every ``_FLUSH`` frames and before any result is read. Integer nanoseconds
    throughout, so a lockstep run's figures are exact.
    """

    _FLUSH = 4096

    def __init__(self, name: str, direction: str, period_ns: int):
        self.name, self.direction, self.period_ns = name, direction, int(period_ns or 0)
        self.frames = 0
        self.intervals = 0
        self.interval_sum_ns = 0
        self.abs_dev_sum_ns = 0
        self.max_abs_dev_ns = 0
        self.last_ns: int | None = None
        self.hist = np.zeros(_HIST_BINS, dtype=np.int64) if self.period_ns else None
        # a list: array("q").append parses its argument the slow way (~850 instructions a frame, 6x a list's);
        # in lockstep every frame of a tick appends the same int object
        self._buf: list[int] = []
        # the buffer's own append, for a caller that adds a time per frame and calls ``flush_due`` (or
        # ``CycleStats.flush_due``) now and then instead of paying ``add``'s call and size check each time
        self.append_ns = self._append = self._buf.append

    def add(self, t_ns: int) -> None:
        self._append(t_ns)
        if len(self._buf) >= self._FLUSH:
            self.flush()

    def flush_due(self) -> None:
        if len(self._buf) >= self._FLUSH:
            self.flush()

    def flush(self) -> None:
        buf = self._buf
        if not buf:
            return
        times = np.array(buf, dtype=np.int64)
        buf.clear()
        self.frames += times.size
        if self.period_ns:
            if self.last_ns is not None:
                times_all = np.concatenate(([self.last_ns], times))
            else:
                times_all = times
            if times_all.size > 1:
                intervals = np.diff(times_all)
                dev = np.abs(intervals - self.period_ns)
                self.intervals += int(intervals.size)
                self.interval_sum_ns += int(intervals.sum())
                self.abs_dev_sum_ns += int(dev.sum())
                self.max_abs_dev_ns = max(self.max_abs_dev_ns, int(dev.max()))
                assert self.hist is not None  # a message with a period has its histogram
                self.hist += np.bincount(np.minimum(dev // 1000, _HIST_BINS - 1), minlength=_HIST_BINS)
        self.last_ns = int(times[-1])

    def as_dict(self) -> dict:
        self.flush()
        out = {"message": self.name, "direction": self.direction, "frames": self.frames,
               "period_ms": self.period_ns / 1e6 if self.period_ns else None}
        if self.period_ns and self.intervals:
            n = self.intervals
            out.update(mean_interval_ms=self.interval_sum_ns / n / 1e6,
                       mean_abs_deviation_ms=self.abs_dev_sum_ns / n / 1e6,
                       p99_abs_deviation_ms=self.percentile_ns(0.99) / 1e6,
                       max_abs_deviation_ms=self.max_abs_dev_ns / 1e6)
        return out

    def percentile_ns(self, q: float) -> int:
        """Lower edge of the 1 us bin holding the q-quantile of |deviation| (the exact max if beyond)."""
        self.flush()
        if not self.intervals or self.hist is None:
            return 0
        cumulative = np.cumsum(self.hist)
        i = int(np.searchsorted(cumulative, q * self.intervals, side="left"))
        return self.max_abs_dev_ns if i >= _HIST_BINS - 1 else i * 1000


class CycleStats:
    """Per (message, direction): interval deviations from the nominal period."""

    def __init__(self):
        self._stats: dict[tuple[str, str], MessageStats] = {}

    def track(self, name: str, direction: str, period_ns: int | None) -> MessageStats:
        key = (name, direction)
        if key not in self._stats:
            self._stats[key] = MessageStats(name, direction, int(period_ns or 0))
        return self._stats[key]

    def flush_due(self) -> None:
        """Fold every buffer that reached its size (for callers that use ``MessageStats.append_ns``)."""
        for stats in self._stats.values():
            stats.flush_due()

    @staticmethod
    def record(stats: MessageStats, t_ns: int) -> None:
        stats.add(t_ns)

    def get(self, name: str, direction: str = "tx") -> MessageStats | None:
        return self._stats.get((name, direction))

    def report(self) -> list[dict]:
        return [d for d in (s.as_dict() for s in self._stats.values()) if d["frames"]]

    def table(self) -> str:
        """A human-readable table (what ``serve`` prints at the end of a run)."""
        rows = [("message", "dir", "frames", "period ms", "mean ms", "p99 |dev| ms", "max |dev| ms")]
        for s in self._stats.values():
            d = s.as_dict()
            if not s.frames:
                continue
            if "mean_interval_ms" in d:
                rows.append((s.name, s.direction, str(s.frames), f"{d['period_ms']:g}", f"{d['mean_interval_ms']:.4f}",
                             f"{d['p99_abs_deviation_ms']:.3f}", f"{d['max_abs_deviation_ms']:.3f}"))
            else:
                rows.append((s.name, s.direction, str(s.frames), "event" if not s.period_ns else
                             f"{d['period_ms']:g}", "", "", ""))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                         for r in rows)
