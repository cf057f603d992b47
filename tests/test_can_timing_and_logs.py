"""Clocks, the deadline scheduler, cycle-time statistics and the background log writer."""
import threading

import can
import pytest
from can_support import no_leaked_buses_or_threads  # noqa: F401

from bms.can import CycleStats, LogError, LogWriter, Scheduler, VirtualClock, WallClock


def test_scheduler_orders_by_deadline_then_insertion_and_keeps_phase():
    s = Scheduler()
    s.add("fast", 10, payload="a")
    s.add("slow", 100, phase_ns=20)
    s.add("fast2", 10)
    seen = []
    for t in range(0, 250, 10):
        seen += [(t, task.name) for task in s.pop_due(t)]
    assert seen[:3] == [(0, "fast"), (0, "fast2"), (10, "fast")]
    assert [t for t, name in seen if name == "slow"] == [20, 120, 220]
    assert len([1 for _, name in seen if name == "fast"]) == 25


def test_scheduler_counts_missed_deadlines_and_skips_ahead():
    s = Scheduler()
    task = s.add("m", 10)
    assert [t.name for t in s.pop_due(0)] == ["m"]
    assert [t.name for t in s.pop_due(55)] == ["m"]  # 10..50 were due: sent once, 4 missed
    assert task.missed == 4 and task.next_due_ns == 60
    s.remove("m")
    assert s.pop_due(1000) == [] and s.next_due_ns() is None
    with pytest.raises(ValueError):
        s.add("bad", 0)


def test_virtual_clock_jumps_and_wall_clock_waits_for_absolute_deadlines():
    v = VirtualClock(epoch_s=100.0)
    v.start()
    assert v.wait_until(5_000_000) == 0 and v.now_ns() == 5_000_000 and v.timestamp(5_000_000) == 100.005
    w = WallClock(spin_s=0.0002)
    w.start()
    try:
        deadline = 0
        for _ in range(5):
            deadline += 2_000_000  # deadline += period, never sleep(period)
            lateness = w.wait_until(deadline)
            assert lateness >= 0 and w.now_ns() >= deadline
    finally:
        w.stop()


def test_cycle_stats_are_exact_for_exact_periods_and_see_a_late_frame():
    stats = CycleStats()
    m = stats.track("M", "tx", 10_000_000)
    for k in range(101):
        stats.record(m, k * 10_000_000)
    d = m.as_dict()
    assert d["frames"] == 101 and d["mean_interval_ms"] == 10.0
    assert d["p99_abs_deviation_ms"] == 0.0 and d["max_abs_deviation_ms"] == 0.0
    late = stats.track("L", "tx", 10_000_000)
    times = [k * 10_000_000 for k in range(1000)]
    times[500] += 1_500_000  # one frame 1.5 ms late: 2 of 999 intervals deviate by 1.5 ms (< 1 %)
    for t in times:
        stats.record(late, t)
    d = late.as_dict()
    assert d["max_abs_deviation_ms"] == 1.5 and d["p99_abs_deviation_ms"] == 0.0
    assert "L" in stats.table()


@pytest.mark.parametrize("suffix", [".blf", ".asc", ".log", ".csv", ".trc", ".txt"])
def test_log_writer_writes_every_format_and_reads_back(tmp_path, suffix):
    path = tmp_path / f"run{suffix}"
    frames = [can.Message(timestamp=1_700_000_000.0 + k * 0.01, arbitration_id=0x100 + k % 3,
                          data=bytes([k % 256] * 8), is_extended_id=False, is_rx=False) for k in range(500)]
    writer = LogWriter(path).start()
    for k in range(0, 500, 50):
        writer.write(frames[k:k + 50])
    writer.stop()
    writer.stop()  # idempotent
    assert not writer.alive and writer.frames == 500
    if suffix == ".txt":
        assert path.read_text().count("ID:") == 500
        return
    with can.LogReader(str(path)) as reader:
        back = list(reader)
    assert len(back) == 500
    assert [m.arbitration_id for m in back] == [m.arbitration_id for m in frames]
    assert bytes(back[-1].data) == bytes(frames[-1].data)
    # (ASC reads back relative to its start; every format keeps the intervals)
    assert back[-1].timestamp - back[0].timestamp == pytest.approx(4.99, abs=1e-3)


def test_log_writer_rejects_unknown_formats_and_reports_a_failing_writer(tmp_path):
    with pytest.raises(LogError, match="expected a log file ending in one of"):
        LogWriter(tmp_path / "run.xyz")
    try:
        import asammdf  # noqa: F401
    except ImportError:
        with pytest.raises(LogError, match=r"optional package.*assb-bms-emulator\[mf4\]"):
            LogWriter(tmp_path / "run.mf4")
    writer = LogWriter(tmp_path / "run.log").start()

    class Boom(Exception):
        pass

    def explode(msg):
        raise Boom("disk on fire")

    writer._writers[0].on_message_received = explode
    writer.write([can.Message(arbitration_id=1, data=b"\x01")])
    with pytest.raises(LogError, match="disk on fire"):
        writer.stop()
    assert not writer.alive


def test_log_writer_never_blocks_the_wall_clock_producer(tmp_path):
    writer = LogWriter(tmp_path / "run.log", block=False, max_batches=1)
    # not started: the queue fills and further batches are dropped and counted, never waited for
    writer.write([can.Message(arbitration_id=1)])
    writer.write([can.Message(arbitration_id=2), can.Message(arbitration_id=3)])
    assert writer.dropped_frames == 2
    writer.start()
    writer.stop()
    assert threading.active_count() >= 1
