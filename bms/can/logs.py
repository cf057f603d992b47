"""Logs of the node's traffic and its cycle-time statistics.

``LogWriter`` writes frames with python-can's writers, chosen by file extension (``.blf``, ``.asc``,
``.log`` candump, ``.csv``, ``.trc``, ``.txt``; ``.mf4`` with the optional ``asammdf``), from one
background thread, so file I/O never delays the schedule. The node hands it one batch of frames per tick;
``stop()`` flushes, closes every file and joins the thread, also after an error, and re-raises any
error the thread met.

``CycleStats`` keeps, per message and direction, the deviation of every interval between two frames from
the message's nominal period: count, mean interval, mean/p99/max |deviation|. p99 comes from a 1 us
histogram (exact for the lockstep clock, where every deviation is 0), the maximum is exact.
"""
from __future__ import annotations

import os
import queue
import threading
from array import array
from pathlib import Path

import can
import numpy as np

from ..errors import BmsError

__all__ = ["LogWriter", "LogError", "CycleStats", "MessageStats", "SUPPORTED_LOG_SUFFIXES", "open_writer"]

SUPPORTED_LOG_SUFFIXES = (".blf", ".asc", ".log", ".csv", ".trc", ".txt", ".mf4")
# zlib level of BLF containers unless told otherwise: Z_BEST_SPEED writes a lockstep run's frames ~30 %
# faster than python-can's default (6) for ~13 % more bytes; every BLF reader inflates either
BLF_COMPRESSION_LEVEL = 1
_HIST_BINS = 20_001  # 1 us bins up to 20 ms; larger deviations land in the last bin (the max stays exact)


class LogError(BmsError):
    """A log file cannot be opened or written: which file and why."""


def open_writer(path: str | Path, **kwargs):
    """A python-can writer for ``path`` by its extension (``.gz`` for compressed text formats); BLF files
    are compressed at ``BLF_COMPRESSION_LEVEL`` unless ``compression_level`` is given."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    suffix = suffixes[-2] if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1 else (
        suffixes[-1] if suffixes else "")
    if suffix not in SUPPORTED_LOG_SUFFIXES:
        raise LogError(f"{path}: expected a log file ending in one of {', '.join(SUPPORTED_LOG_SUFFIXES)}, "
                       f"found {suffix or 'no extension'!r}")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if suffixes and suffixes[-1] == ".blf":
        kwargs.setdefault("compression_level", BLF_COMPRESSION_LEVEL)
    try:
        return can.Logger(str(path), **kwargs)
    except (ImportError, NotImplementedError) as exc:  # python-can says NotImplementedError for MF4
        raise LogError(f"{path}: the {suffix} writer needs an optional package ({exc}); "
                       f"for MF4 install assb-bms-emulator[mf4]") from exc
    except (OSError, ValueError) as exc:
        raise LogError(f"{path}: cannot open for writing: {exc}") from exc


class LogWriter:
    """Writes batches of ``can.Message`` to one or more files from a background thread.

    ``block=True`` (lockstep) makes ``write`` wait when ``max_batches`` are queued, so a fast producer never
    outruns the disk; ``block=False`` (wall clock) never waits: a batch that does not fit is dropped and
    counted in ``dropped_frames``. ``start_s``: the time BLF files count from (the lockstep clock's t = 0).
    ``rt_priority``: run the writer thread SCHED_FIFO at this priority where permitted (the node sets it one
    below a real-time loop thread).
    """

    def __init__(self, paths, *, block: bool = True, max_batches: int = 1000, start_s: float | None = None,
                 rt_priority: int | None = None, **writer_kwargs):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        self.block = block
        self.frames = 0
        self.dropped_frames = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_batches)
        self._writers = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.rt_priority = rt_priority
        try:
            for path in self.paths:
                writer = open_writer(path, **writer_kwargs)
                if start_s is not None and isinstance(writer, can.BLFWriter) and writer.start_timestamp is None:
                    # BLF stores times relative to a start it takes from the first frame, and cannot say
                    # "1970" in its header: anchored here, simulated times (t = 0.01 s ...) read back as such
                    writer.start_timestamp = float(start_s)
                if start_s is not None and isinstance(writer, can.ASCWriter):
                    _asc_header_date(writer, path, float(start_s))
                self._writers.append(writer)
        except BaseException:
            for writer in self._writers:
                _quiet_stop(writer)
            raise

    def start(self) -> "LogWriter":
        if self._thread is None and self._writers:
            self._thread = threading.Thread(target=self._run, name="bms-can-log-writer", daemon=True)
            self._thread.start()
        return self

    def write(self, batch: list) -> None:
        """Queue a batch of frames (the list is handed over: do not reuse it)."""
        if not batch or not self._writers:
            return
        if self._error is not None:
            raise LogError(f"{', '.join(map(str, self.paths))}: the writer failed: {self._error}") from self._error
        try:
            self._queue.put(batch, block=self.block, timeout=None if self.block else 0)
            self.frames += len(batch)
        except queue.Full:
            self.dropped_frames += len(batch)

    def _run(self) -> None:
        writers = self._writers
        if self.rt_priority:
            # beside a SCHED_FIFO loop thread: a writer left at normal priority can be descheduled while it
            # holds the GIL, and the loop would wait for it; one step below the loop it cannot preempt it
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.rt_priority))
            except (OSError, AttributeError):
                pass
        try:
            while True:
                batch = self._queue.get()
                if batch is None:
                    break
                for msg in batch:
                    for writer in writers:
                        writer.on_message_received(msg)
        except BaseException as exc:  # noqa: BLE001 - kept and re-raised by stop()
            self._error = exc
            while True:  # unblock a producer waiting on a full queue
                try:
                    if self._queue.get_nowait() is None:
                        break
                except queue.Empty:
                    break
        finally:
            for writer in writers:
                try:
                    writer.stop()
                except BaseException as exc:  # noqa: BLE001
                    self._error = self._error or exc

    def stop(self, timeout: float = 30.0) -> None:
        """Flush and close every file, join the thread; raises LogError if writing failed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise LogError(f"{', '.join(map(str, self.paths))}: the log writer did not finish within "
                               f"{timeout} s")
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
        self._buf = array("q")
        self._append = self._buf.append

    def add(self, t_ns: int) -> None:
        self._append(t_ns)
        if len(self._buf) >= self._FLUSH:
            self.flush()

    def flush(self) -> None:
        buf = self._buf
        if not buf:
            return
        times = np.frombuffer(buf, dtype=np.int64).copy()
        del buf[:]
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
        if not self.intervals:
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
