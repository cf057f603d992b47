"""Clocks, the deadline scheduler, cycle-time statistics and the background log writer."""
import math
import threading

import can
import pytest
from can_support import no_leaked_buses_or_threads  # noqa: F401
from hypothesis import given
from hypothesis import strategies as st

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


@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 12), st.booleans()), min_size=1, max_size=8),
       st.sampled_from([1, 3, 10]))
def test_the_cyclic_table_gives_what_pop_due_gives_every_tick(specs, tick):
    """The node's precomputed schedule against the heap, tick by tick over two repetitions and more (or
    None where the schedule does not repeat in whole ticks: a period or phase off the tick grid)."""
    s = Scheduler()
    for i, (period_ticks, phase_ticks, off_grid) in enumerate(specs):
        period = period_ticks * tick + (1 if off_grid and tick > 1 else 0)
        s.add(f"m{i}", period, phase_ns=min(phase_ticks * tick, period), payload=i)
    table = s.cyclic_table(tick)
    on_grid = all(t.period_ns % tick == 0 and t.next_due_ns % tick == 0 and t.next_due_ns > 0 for t in s.tasks)
    repeats = on_grid and math.lcm(*(t.period_ns // tick for t in s.tasks)) <= 10_000
    assert (table is not None) == repeats
    if table is None:
        return
    for k in range(1, 2 * len(table) + 13):
        assert table[k % len(table)] == [t.payload for t in s.pop_due(k * tick)], k


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
    writer = LogWriter(tmp_path / "run.log", block=False, max_pending_frames=1)
    # not started: the queue fills and further batches are dropped and counted, never waited for
    writer.write([can.Message(arbitration_id=1)])
    writer.write([can.Message(arbitration_id=2), can.Message(arbitration_id=3)])
    assert writer.dropped_frames == 2
    writer.start()
    writer.stop()
    assert threading.active_count() >= 1


_frame = st.builds(
    lambda i, ext, remote, rx, fd, err, data, ch, k: can.Message(
        timestamp=100.0 + k * 0.001, arbitration_id=i if ext else i & 0x7FF, is_extended_id=ext,
        is_remote_frame=remote and not fd, is_rx=rx, is_fd=fd, is_error_frame=err, channel=ch,
        data=b"" if remote and not fd else data[:64 if fd else 8], check=False),
    st.integers(0, 0x1FFFFFFF), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
    st.booleans(), st.binary(max_size=64),
    st.sampled_from([None, 0, 2, "vcan0", "bms-emu-lockstep0", "can", "x12"]), st.integers(0, 10**6))


@given(st.lists(_frame, max_size=60), st.integers(1, 5), st.sampled_from(["compiled", "twin"]))
def test_the_batch_blf_writer_writes_python_cans_bytes(tmp_path_factory, frames, batches, backend):
    """BatchBLFWriter.write_frames, with the compiled object packer and with its twin, against python-can's
    BLFWriter.on_message_received, byte for byte: small containers so that flushes fall inside a batch; any batch
    split."""
    import bms
    import bms._twin.blf_objects
    from bms.can.logs import BatchBLFWriter
    compiled = bms.KERNELS.blf_objects
    folder = tmp_path_factory.mktemp("blf")
    for m in frames:
        m.dlc = len(m.data) if not m.is_remote_frame else m.dlc
    ref, new = can.BLFWriter(str(folder / "ref.blf"), max_container_size=300), \
        BatchBLFWriter(str(folder / "new.blf"), max_container_size=300)
    for w in (ref, new):
        w.start_timestamp = 100.0
    for m in frames:
        ref.on_message_received(m)
    step = max(1, len(frames) // batches)
    bms.KERNELS.blf_objects = compiled if backend == "compiled" else bms._twin.blf_objects
    try:
        for k in range(0, len(frames), step):
            new.write_frames(frames[k:k + step])
    finally:
        bms.KERNELS.blf_objects = compiled
    for w in (ref, new):
        w.stop()
    assert (folder / "new.blf").read_bytes()[144:] == (folder / "ref.blf").read_bytes()[144:]
    with can.BLFReader(str(folder / "new.blf")) as reader:
        assert len(list(reader)) == len(frames)
