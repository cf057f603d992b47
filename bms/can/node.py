"""The emulated BMS as a node on a python-can bus.

One loop drives everything, tick by tick (the emulator's ``dt_s``), against one clock:

1. wait for the tick's deadline (virtual clock: at once; wall clock: absolute deadline, frames received
   while waiting are kept for step 3);
2. send the frames due now; they were encoded at the end of the previous tick, so the send itself is
   all that stands between the deadline and the bus;
3. read every received frame: commands feed the BMS's request interface, counters and CRCs are checked,
   unknown IDs, wrong DLCs, error and remote frames are counted and ignored, and so are frames the
   interface could not decode (a stray datagram on udp_multicast); the node's own sends heard back
   (python-can's ``is_rx`` False, or on udp_multicast matched against what it sent) are neither logged
   nor read a second time;
4. check each received message's timeout and report changes to ``bms.comm_fault``;
5. advance the emulator by one tick;
6. encode the frames due at the next deadline (one heap of deadlines for the node, no thread per message);
7. hand the tick's frames to the background log writer.

Power-on (``start``) runs the BMS's first task (t = 0 -> dt) before the clock starts and before anything
is sent or received, so the first frames are due at t = dt and the one-off cost of that first task (the
estimator initialises itself) never counts against a deadline.

A bus that fails (adapter gone, interface down, the node's own controller bus-off, receiving that keeps
failing for a second) ends the run: the frames logged so far are flushed, the bus is shut down, and
``BusFailure`` says what happened. What another node does (garbage, invalid IDs, error frames on a software
bus) is counted and the run goes on.
"""
from __future__ import annotations

import errno
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, cast

import can

from ..errors import BmsError
from ._mapping import Publisher
from .clock import make_clock
from .codec import Codec, MessageCodec
from .dbc_check import check_node_dbc
from .logs import CycleStats, LogWriter, MessageStats, candump_interface
from .scheduler import Scheduler

__all__ = ["CanNode", "Frame", "RunReport", "BusError", "BusFailure", "open_bus", "DEFAULT_INTERFACE",
           "classify_rx_error"]

DEFAULT_INTERFACE = "virtual"
_FATAL_ERRNOS = {errno.ENODEV, errno.ENETDOWN, errno.ENXIO, errno.EBADF, errno.EPIPE, errno.ESHUTDOWN,
                 errno.ENOTCONN, errno.ENETUNREACH}
_CAN_ERR_BUSOFF = 0x00000040     # SocketCAN error class bits in an error frame's identifier
_RX_ERRORS_PER_TICK = 64         # failed receives in a row before a tick stops reading (the next goes on)
_RX_FAILING_MAX_NS = 1_000_000_000  # receiving that fails this long without one good read: the bus failed
_ECHOES_MAX = 1024               # own sends awaiting their echo (udp_multicast)
_RX_EXCEPTIONS = (can.CanError, OSError, ValueError, TypeError)
_STATS_FLUSH_TICKS = 1024        # ticks between folds of the cycle-time buffers (a few frames a tick each)

# StateRequest / BmsState values used on the wire (the DBC's value tables)
_REQ_NONE, _REQ_STANDBY, _REQ_DRIVE, _REQ_CHARGE, _REQ_SHUTDOWN = range(5)
_CONTACTOR_OPEN = 1


class Frame(can.Message):
    """A ``can.Message`` in every respect, whose deep copy is cheap.

    python-can's virtual bus delivers a deep copy of every frame to every other handle on the channel;
    ``Message.__deepcopy__`` sends the channel and the data through ``copy.deepcopy`` (~3.5 us a frame,
    the largest single cost of a lockstep tick). A frame's fields are immutable scalars except ``data``
    (a bytearray), so copying the data and sharing the rest is a deep copy; the copy is a ``Frame`` too.
    """

    __slots__ = ()

    @classmethod
    def build(cls, arbitration_id: int, data, *, is_extended_id: bool = False, is_fd: bool = False,
              timestamp: float = 0.0, bitrate_switch: bool = False) -> Frame:
        """A data frame to send (``is_rx`` False, DLC = data length): ``Frame(arbitration_id=..., data=...,
        ...)`` without the keyword-argument constructor, for code that builds frames every tick."""
        return _tx_frame(cls, arbitration_id, data, is_extended_id, is_fd, bitrate_switch, timestamp)

    def __deepcopy__(self, memo=None) -> Frame:
        new = _new_frame(Frame)
        new.timestamp = self.timestamp
        new.arbitration_id = self.arbitration_id
        new.is_extended_id = self.is_extended_id
        new.is_remote_frame = self.is_remote_frame
        new.is_error_frame = self.is_error_frame
        channel = self.channel
        new.channel = channel if channel is None or type(channel) in (str, int) else deepcopy(channel, memo)
        new.dlc = self.dlc
        new.data = bytearray(self.data)
        new.is_fd = self.is_fd
        new.is_rx = self.is_rx
        new.bitrate_switch = self.bitrate_switch
        new.error_state_indicator = self.error_state_indicator
        return new

    def received_copy(self, timestamp: float, channel) -> Frame:
        """The copy a receiver gets (``is_rx`` True, the bus's channel and timestamp), built at once."""
        new = _new_frame(Frame)
        new.timestamp = timestamp
        new.arbitration_id = self.arbitration_id
        new.is_extended_id = self.is_extended_id
        new.is_remote_frame = self.is_remote_frame
        new.is_error_frame = self.is_error_frame
        new.channel = channel
        new.dlc = self.dlc
        new.data = bytearray(self.data)
        new.is_fd = self.is_fd
        new.is_rx = True
        new.bitrate_switch = self.bitrate_switch
        new.error_state_indicator = self.error_state_indicator
        return new


_new_frame = object.__new__


def _tx_frame(cls, arbitration_id: int, data, is_extended_id: bool = False, is_fd: bool = False,
              bitrate_switch: bool = False, timestamp: float = 0.0) -> Frame:
    """``Frame.build`` with positional arguments (the per-frame paths call it directly)."""
    msg = _new_frame(cls)
    msg.timestamp = timestamp
    msg.arbitration_id = arbitration_id
    msg.is_extended_id = is_extended_id
    msg.is_remote_frame = msg.is_error_frame = msg.is_rx = msg.error_state_indicator = False
    msg.bitrate_switch = bitrate_switch
    msg.channel = None
    msg.data = data = bytearray(data)
    msg.dlc = len(data)
    msg.is_fd = is_fd
    return msg


class BusError(BmsError):
    """The CAN bus cannot be opened: which interface and channel, and what python-can said."""


class BusFailure(BmsError):
    """The bus failed during a run; ``report`` holds the run up to the failure (logs are flushed)."""

    def __init__(self, message: str, report: RunReport | None = None):
        super().__init__(message)
        self.report = report


# --- opening a bus the way python-can's tools do -------------------------------------------------------
def _configured_interface(config_context: str | None) -> str | None:
    """The interface python-can's configuration (can.rc, environment, config files) names, if any."""
    from can import util

    sources = [can.rc, util.load_environment_config(config_context), util.load_environment_config()]
    for source in sources:
        value = source.get("interface") or source.get("bustype")
        if value:
            return str(value)
    contexts = [None] if config_context is None else [config_context, None]
    for context in contexts:
        try:
            cfg = util.load_file_config(None, context) if context else util.load_file_config(None)
        except Exception:  # noqa: BLE001 - an unreadable config file is python-can's to report
            continue
        value = cfg.get("interface") or cfg.get("bustype")
        if value:
            return str(value)
    return None


def open_bus(interface: str | None = None, channel=None, *, bitrate: int | None = None, fd: bool | None = None,
             data_bitrate: int | None = None, config_context: str | None = None, ignore_config: bool = False,
             **kwargs) -> can.BusABC:
    """Open a bus like python-can's tools: arguments first, then ``can.rc``, ``CAN_*`` environment
    variables and python-can's config files; the interface defaults to ``virtual`` when none names one.
    Raises ``BusError`` with the interface, the channel and python-can's reason."""
    if interface is None:
        interface = None if ignore_config else _configured_interface(config_context)
        interface = interface or DEFAULT_INTERFACE
    config = {k: v for k, v in dict(bitrate=bitrate, fd=fd, data_bitrate=data_bitrate).items() if v is not None}
    config.update(kwargs)
    if interface == "virtual":
        config.setdefault("preserve_timestamps", True)  # frames keep the node's (maybe simulated) time
    try:
        return can.Bus(channel=channel, interface=interface, config_context=config_context,
                       ignore_config=ignore_config, **config)
    except Exception as exc:  # whatever the backend raised (struct.error for a --bus-kwargs value of the wrong kind)
        where = f"interface {interface!r}" + (f", channel {channel!r}" if channel is not None else "")
        hint = ""
        if isinstance(exc, OSError) and exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            hint = " (this kernel has no SocketCAN support)"
        elif isinstance(exc, OSError) and exc.errno == errno.ENODEV:
            hint = " (no such network interface: is the adapter plugged in and the link up?)"
        raise BusError(f"cannot open the CAN bus on {where}: {exc}{hint}") from exc


class _TxTask:
    """One cyclic message: its encoders (per page), value source, page cursor, alive counter, statistics."""

    __slots__ = ("message", "values", "pages", "page_index", "encoders", "e2e", "counter", "counter_mask",
                 "stats", "frame_id", "is_extended_id", "length", "is_fd", "last_values", "last_data", "fast", "brs",
                 "stats_ns")

    def __init__(self, message: MessageCodec, values, pages, stats, bitrate_switch: bool = False):
        self.message, self.values, self.stats = message, values, stats
        self.stats_ns = stats.append_ns  # the node folds the statistics every _STATS_FLUSH_TICKS ticks
        self.pages = tuple(pages) if message.multiplexer else None
        self.page_index = 0
        self.encoders = {page: message.encoder(page) for page in (self.pages or (None,))}
        # the generated encoders called directly; ``encoders`` (with the saturating fallback) on their errors
        self.fast = {page: message.generated_encoder(page) or self.encoders[page] for page in self.encoders}
        self.e2e = message.e2e is not None
        self.counter = 0
        self.counter_mask = (1 << message.e2e.counter_bits) - 1 if self.e2e else 0
        self.frame_id, self.is_extended_id = message.frame_id, message.is_extended_id
        self.length, self.is_fd = message.length, message.is_fd
        self.brs = bool(bitrate_switch and message.is_fd)  # CAN FD data phase at the data bit rate
        # a message that is not multiplexed keeps its last values and their frames (one per alive counter
        # value): while the values stay the same (BMS_Status, the limits at rest ...) nothing is re-encoded
        self.last_values = None
        self.last_data: dict = {}


# --- reception monitoring ----------------------------------------------------------------------------
@dataclass
class _RxMessage:
    codec: MessageCodec
    timeout_ns: int
    stats: MessageStats
    handler: Callable[..., Any] | None
    armed: bool = False
    last_valid_ns: int = 0
    last_counter: int | None = None
    errors_in_row: int = 0
    valid_in_row: int = 0    # valid frames since the last error or timeout: a fault heals after comm_recovery_frames
    timed_out: bool = False
    e2e_failed: bool = False
    reported: bool = False
    valid: int = 0
    charger: bool = False    # the charger's offer: its silence unplugs the charger
    # payload -> (CRC ok, alive counter, values or None if they do not decode): checking and decoding are
    # functions of the payload alone, and a VCU repeats a few payloads (16 counters x its few requests)
    decoded: dict = field(default_factory=dict)

    @property
    def faulted(self) -> bool:
        return self.timed_out or self.e2e_failed


@dataclass
class RunReport:
    """What a run did: time, frames, every counted anomaly, cycle-time statistics, why it stopped."""
    clock: str
    ticks: int = 0
    simulated_s: float = 0.0
    wall_s: float = 0.0
    realtime_factor: float = 0.0
    stop_reason: str = ""
    overruns: int = 0
    skipped_ticks: int = 0
    max_lateness_ms: float = 0.0
    counters: dict = field(default_factory=dict)
    comm_faults: list = field(default_factory=list)
    cycle_times: list = field(default_factory=list)
    logs: list = field(default_factory=list)
    log_frames: int = 0
    log_dropped_frames: int = 0
    last_tx_error: str | None = None
    last_rx_error: str | None = None

    def as_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)

    def summary(self) -> str:
        c = self.counters
        lines = [f"stopped: {self.stop_reason}",
                 f"{self.clock} clock: {self.ticks} ticks, {self.simulated_s:.3f} s simulated in {self.wall_s:.3f} s "
                 f"({self.realtime_factor:.1f}x real time); overruns {self.overruns}, skipped ticks "
                 f"{self.skipped_ticks}, max lateness {self.max_lateness_ms:.3f} ms",
                 "frames: " + ", ".join(f"{k} {v}" for k, v in c.items() if v or k in ("tx_frames", "rx_frames"))]
        if self.last_tx_error:
            lines.append(f"last transmit error: {self.last_tx_error}")
        if self.last_rx_error:
            lines.append(f"last bad frame or receive error: {self.last_rx_error}")
        if self.logs:
            lines.append(f"logs: {', '.join(self.logs)} ({self.log_frames} frames"
                         + (f", {self.log_dropped_frames} dropped" if self.log_dropped_frames else "") + ")")
        return "\n".join(lines)


_COUNTERS = ("tx_frames", "rx_frames", "rx_accepted", "unknown_id", "not_for_bms", "wrong_dlc", "error_frames",
             "remote_frames", "crc_errors", "counter_errors", "bad_values", "tx_errors", "rx_overflow_ticks",
             "diag_frames", "rx_suppressed", "tx_suppressed", "bad_frames", "rx_errors", "own_frames",
             "tx_bus_off", "rx_bus_off")


class CanNode:
    """The emulated BMS on a CAN bus (see the module docstring for the loop).

    ``bus``: an open python-can bus (the caller keeps ownership), or None to open one from ``bus_config``
    (``interface``, ``channel``, ``bitrate``, ``fd``, ``data_bitrate``, ``config_context`` … as python-can
    takes them; default interface ``virtual``), which the node shuts down when it closes.
    ``clock``: ``"virtual"`` (lockstep, default), ``"wall"``, or a clock object.
    ``log``: one path or a list of paths; the writer follows the extension.
    ``arm_timeouts``: ``"first-rx"`` (a message's timeout is watched once it has been received, the default)
    or ``"start"`` (watched from the start of the run: a VCU that never talks is a fault).
    ``controller_error_frames``: whether error frames on the bus are the node's own controller reporting
    (then one with SocketCAN's ``CAN_ERR_BUSOFF`` ends the run) or other nodes' frames (counted); default:
    the controller's, except on python-can's software buses (virtual, udp_multicast).
    ``diag``: the UDS server on ISO-TP (``bms.diag``): True for the default one (0x7E0/0x7DF -> 0x7E8), a
    ``DiagConfig``, a ``UdsServer``, or None for none; ``node.diag`` is the server.
    """

    def __init__(self, emulator, bus: can.BusABC | None = None, *, clock="virtual", codec: Codec | None = None,
                 log=None, load_current_A: float = 0.0, coolant_C: float | None = None,
                 cooling_factor: float = 1.0, arm_timeouts: str = "first-rx", e2e_max_errors: int = 3,
                 comm_recovery_frames: int = 3, counter_max_delta: int = 2, bus_error_timeout_s: float | None = None,
                 max_rx_per_tick: int = 10_000, controller_error_frames: bool | None = None,
                 log_batch_frames: int = 512, node_name: str = "BMS", diag=True, matrix=None,
                 firmware_messages: dict | None = None, **bus_config):
        if arm_timeouts not in ("first-rx", "start"):
            raise ValueError(f"arm_timeouts: expected 'first-rx' or 'start', found {arm_timeouts!r}")
        self.emulator = emulator
        self.codec = codec or Codec()
        # a vehicle matrix (bms.can.matrix.MatrixMap): its messages on the bus, the built-in DBC's behind them
        self.matrix = matrix
        self.builtin_codec = self.codec
        if matrix is not None:
            self.codec, node_name = matrix.codec, matrix.node
        self.clock = make_clock(clock)
        self.period_ns = int(round(float(emulator.dt_s) * 1e9))
        if self.period_ns <= 0:
            raise ValueError(f"emulator.dt_s: expected > 0, found {emulator.dt_s!r}")
        self.node_name = node_name
        self.load_current_A = float(load_current_A)
        self.coolant_C = coolant_C
        self.cooling_factor = float(cooling_factor)
        self.arm_timeouts = arm_timeouts
        self.e2e_max_errors = int(e2e_max_errors)
        if int(comm_recovery_frames) < 1:
            raise ValueError(f"comm_recovery_frames: expected >= 1, found {comm_recovery_frames!r}")
        self.comm_recovery_frames = int(comm_recovery_frames)
        self.counter_max_delta = int(counter_max_delta)
        self.bus_error_timeout_ns = None if bus_error_timeout_s is None else int(bus_error_timeout_s * 1e9)
        self.last_tx_error: str | None = None
        self.max_rx_per_tick = int(max_rx_per_tick)
        self.log_batch_frames = 1 if self.clock.realtime else int(log_batch_frames)
        self.counters = dict.fromkeys(_COUNTERS, 0)
        # an injected bus-off with recovery: the controller neither sends nor hears until it rejoins (counted)
        self.off_bus = False
        self.stats = CycleStats()
        self.tick_stats = self.stats.track("<tick>", "loop", self.period_ns)
        self._tick_ns = self.tick_stats.append_ns
        self.charger_connected = False
        self.last_request = _REQ_NONE
        self.comm_fault_active = False
        self.comm_fault_log: list[tuple[float, str, bool]] = []
        self.on_fault_control = None   # (values, t_s) -> None: the bench control (hil.live), if it runs
        # an external BMS firmware in the slot speaks for itself: its frames pass through unchanged
        self._firmware = emulator.firmware if getattr(emulator, "bms", True) is None else None
        if codec is not None and matrix is None and self._firmware is None:  # a DBC in place of the shipped one
            check_node_dbc(self.codec, node_name)
        self._firmware_stats: dict = {}
        self._firmware_messages = firmware_messages or {}   # frame id -> (name, period s or None), its DBC's
        self._shadow = getattr(emulator, "shadow", None)   # a BMS firmware run beside (differential): hears all
        self._requests = _request_enum()
        self._request_values = tuple(self._requests(r) for r in range(_REQ_SHUTDOWN + 1))
        self._publisher = Publisher(self, emulator, self.builtin_codec)
        self._scheduler = Scheduler()
        self._tx_ids: set[tuple[int, bool]] = set()
        self._build_tx()
        self._tx_table = self._scheduler.cyclic_table(self.period_ns)
        self._rx: dict[tuple[int, bool], _RxMessage] = {}
        self._build_rx()
        self._k = 0
        self._prepared: list = []
        self._pending: list = []
        self._idle_error: BusFailure | None = None
        self._idle_errors = 0
        self._rx_failing_since_ns: int | None = None
        self.last_rx_error: str | None = None
        self._last_bus_ok_ns = 0
        self._started = False
        self._closed = False
        self._report: RunReport | None = None
        self._failure: str | None = None
        self._wall_start = 0.0
        self._wall_used = 0.0
        self.overruns = 0
        self.skipped_ticks = 0
        self.max_lateness_ns = 0
        self.stop_reason = ""
        # the built-in BMS's UDS server (an external BMS firmware answers diagnostics itself, if it does)
        self.diag = _diag_server(diag, emulator) if self._firmware is None else None
        self._diag_ids = self.diag.ids() if self.diag is not None else {}
        # the bus last: nothing above may leave it open on an error
        self._owns_bus = bus is None
        self.bus = bus if bus is not None else open_bus(**bus_config)
        # error frames: the node's own controller reporting (SocketCAN, adapters), or, on a bus of software
        # handles (virtual, udp_multicast), frames another process sent, which say nothing of this node's
        self.controller_error_frames = (not _software_bus(self.bus) if controller_error_frames is None
                                        else bool(controller_error_frames))
        # udp_multicast hands every socket of the group its own datagrams, unmarked: match them to what was sent
        self._echoes: deque | None = deque(maxlen=_ECHOES_MAX) if _hears_own_sends_unmarked(self.bus) else None
        try:
            rt = getattr(self.clock, "rt_priority", None)
            # the bus's name: a virtual bus's is its channel_id (its channel is a list of queues)
            channel = getattr(self.bus, "channel_id", None) or getattr(self.bus, "channel", None)
            self.log = LogWriter(log, block=not self.clock.realtime, thread=self.clock.realtime,
                                 start_s=None if self.clock.realtime else self.clock.timestamp(0),
                                 rt_priority=max(1, rt - 1) if rt else None,
                                 interface=candump_interface(channel)) if log else None
        except BaseException:
            if self._owns_bus:
                self.bus.shutdown()
            raise
        self.log_paths = [str(p) for p in (self.log.paths if self.log else [])]
        # frames for the log, written in batches; without a log, a deque that keeps nothing (a list here held every
        # frame of the run: unbounded memory on a long run or a kit session). Only a log's batch is ever written.
        self._log_batch: list = [] if self.log is not None else cast(list, deque(maxlen=0))
        # lockstep on a LockstepBus without a log: the cyclic frames no other handle takes are not built
        self._heard = getattr(self.bus, "heard", None) if self.log is None and not self.clock.realtime \
            and self._echoes is None else None
        self._deferred_for: frozenset | None = None   # what heard() said when frames were left unbuilt
        if self.diag is not None:
            self.diag.attach(self.clock.now_ns, self._send_diag)

    # --- set-up ------------------------------------------------------------------------------------------
    def _build_tx(self) -> None:
        if self._firmware is not None:
            return
        tick = self.period_ns
        slot = 0
        faster: list[tuple[str, int]] = []  # messages whose cycle is shorter than the tick
        if self.matrix is not None:
            for message, values, pages, period_s in self.matrix.tx_messages(self._publisher, self.emulator):
                self._tx_ids.add((message.frame_id, message.is_extended_id))
                period = int(round(period_s * 1e9))
                phase = tick + ((slot * tick) % period if period > tick else 0)
                slot += period > tick
                task = _TxTask(message, values, pages, self.stats.track(message.name, "tx", period),
                               self.matrix.bitrate_switch)
                self._scheduler.add(message.name, period, phase_ns=phase, payload=task)
                faster += [(message.name, period)] if period < tick else []
            _warn_faster_than_tick(faster, tick)
            return
        for message in self.codec.sent_by(self.node_name):
            self._tx_ids.add((message.frame_id, message.is_extended_id))
            values = self._publisher.handler(message.name)
            if message.cycle_time_s is None or values is None:
                continue
            period = int(round(message.cycle_time_s * 1e9))
            pages = self._publisher.pages(message.name)
            if message.name == "BMS_CellVoltages" and len(pages) * len(message.signal_names(pages[0])) \
                    < self.emulator.pack.params.n_series:
                raise BmsError(f"{self.codec.path}: BMS_CellVoltages carries {len(pages)} pages, too few for "
                               f"{self.emulator.pack.params.n_series} series groups")
            phase = tick  # the first frames go out after the BMS's first task, at t = dt
            if period > tick:  # spread the slower messages over the ticks of their period
                phase += (slot * tick) % period
                slot += 1
            task = _TxTask(message, values, pages, self.stats.track(message.name, "tx", period),
                           bitrate_switch=True)  # only CAN FD frames switch (assb_bms_fd.dbc's cell data)
            self._scheduler.add(message.name, period, phase_ns=phase, payload=task)
            faster += [(message.name, period)] if period < tick else []
        _warn_faster_than_tick(faster, tick)

    def _build_rx(self) -> None:
        if self._firmware is not None:
            return
        handlers = {"VCU_Command": self._on_vcu_command, "CHG_Status": self._on_charger_status,
                    "HIL_Load": self._on_hil_load, "HIL_FaultControl": self._on_fault_control}
        if self.matrix is not None:
            for message, timeout_s, handler, charger in self.matrix.rx_messages(handlers, self.builtin_codec,
                                                                                  self.counters):
                period = int(round(message.cycle_time_s * 1e9)) if message.cycle_time_s else None
                rx = _RxMessage(message, int(round(timeout_s * 1e9)), self.stats.track(message.name, "rx", period),
                                handler, charger=charger)
                rx.armed = self.arm_timeouts == "start" and rx.timeout_ns > 0
                self._rx[(message.frame_id, message.is_extended_id)] = rx
            return
        for message in self.codec.received_by(self.node_name):
            attrs = message.dbc_message.dbc.attributes if message.dbc_message.dbc else {}
            timeout_ms = int(attrs["RxTimeoutTime"].value) if "RxTimeoutTime" in attrs else 0
            period = int(round(message.cycle_time_s * 1e9)) if message.cycle_time_s else None
            rx = _RxMessage(message, timeout_ms * 1_000_000, self.stats.track(message.name, "rx", period),
                            handlers.get(message.name), charger=message.name == "CHG_Status")
            rx.armed = self.arm_timeouts == "start" and rx.timeout_ns > 0
            self._rx[(message.frame_id, message.is_extended_id)] = rx

    # --- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> CanNode:
        if self._started:
            return self
        if self._closed:
            raise BmsError("this CanNode is closed; make a new one")
        self._started = True
        if self.log:
            self.log.start()
        self._wall_start = time.perf_counter()
        # power-on: the BMS's first task (t: 0 -> dt) runs before the clock starts, so its one-off cost
        # (the estimator's initialisation) never counts against a deadline; the first frames are due at dt
        self.emulator.tick(self.load_current_A, self.coolant_C, self.cooling_factor)
        self._k = 1
        self._prepare(self.period_ns)
        self.clock.start()  # run time 0 is now: the first deadline is one tick away
        return self

    def run(self, duration_s: float | None = None, *, stop: threading.Event | None = None,
            on_tick=None) -> RunReport:
        """Run until ``duration_s`` of simulated time has passed since power-on (``start()``, called here unless
        called before), ``stop`` is set or Ctrl-C; then close.

        Returns the run's report; raises ``BusFailure`` (after closing) when the bus failed.
        ``on_tick(t_s)``: called after every tick (a live view's telemetry and bench control).
        """
        left_s = None if duration_s is None else max(duration_s - self.t_s, 0.0)  # start() ran the first tick
        try:
            self.run_for(left_s, stop=stop, close_on_failure=False, on_tick=on_tick)
        except KeyboardInterrupt:
            self.stop_reason = "interrupted (Ctrl-C)"
        except BusFailure as exc:
            report = self.close()
            raise BusFailure(str(exc), report) from exc.__cause__
        except BaseException:
            self.stop_reason = self.stop_reason or "error"
            try:
                self.close()
            except BmsError:
                pass
            raise
        return self.close()

    def run_for(self, duration_s: float | None, *, stop: threading.Event | None = None,
                close_on_failure: bool = True, on_tick=None) -> int:
        """Run ``duration_s`` of simulated time (None: until ``stop``) and stay open; returns ticks run.

        A bus failure closes the node (logs flushed) and raises ``BusFailure``.
        """
        ticks = None if duration_s is None else int(math.floor(duration_s * 1e9 / self.period_ns + 1e-6))
        end_k = None if ticks is None else self._k + ticks  # counted before power-on: it is one of them
        self.start()
        start_k = self._k
        try:
            while end_k is None or self._k < end_k:
                if stop is not None and stop.is_set():
                    self.stop_reason = "stopped"
                    break
                self._tick()
                if on_tick is not None:
                    on_tick(self.t_s)
            else:
                self.stop_reason = "duration reached"
        except BusFailure as exc:
            self._failure = str(exc)
            self.stop_reason = f"bus failure: {exc}"
            if close_on_failure:
                report = self.close()
                raise BusFailure(str(exc), report) from exc.__cause__
            raise
        return self._k - start_k

    def step(self) -> None:
        """Run one tick and stay open: what ``run_for(dt)`` does, for a harness that calls it every tick
        (the first call is the power-on task). A bus failure raises ``BusFailure``; ``close()`` flushes."""
        if not self._started:
            self.start()
            self.stop_reason = "duration reached"  # as after run_for(dt): each step runs its whole tick
            return
        try:
            self._tick()
        except BusFailure as exc:
            self._failure = str(exc)
            self.stop_reason = f"bus failure: {exc}"
            raise

    def close(self) -> RunReport:
        """Flush and close the logs, shut the bus down if the node opened it, restore the clock. Idempotent."""
        if self._closed:
            return self._report if self._report is not None else self.report()
        self._closed = True
        errors = []
        if self.diag is not None:
            try:
                self.diag.close()
            except BmsError as exc:
                errors.append(exc)
        if self._started and self._prepared and self._failure is None and not self.stop_reason.startswith(
                "interrupted"):
            # the frames of the last state (t = end of the run) go out too: a run of T seconds sends
            # T / period frames of every message, the last ones at T
            try:
                t_ns = self._k * self.period_ns
                if self.clock.realtime:
                    self.clock.wait_until(t_ns)
                    self._send_prepared(self.clock.now_ns(), True)
                else:
                    self.clock.wait_until(t_ns)
                    self._send_prepared(t_ns, False)
            except BusFailure as exc:
                self._failure = str(exc)
            except KeyboardInterrupt:
                self.stop_reason = "interrupted (Ctrl-C)"
        self._prepared.clear()
        if self._started:
            self._wall_used = time.perf_counter() - self._wall_start
        try:
            if self._log_batch and self.log:
                self.log.write(self._log_batch)
                self._log_batch = []
        except BmsError as exc:
            errors.append(exc)
        if self.log:
            try:
                self.log.stop()
            except BmsError as exc:
                errors.append(exc)
        self.clock.stop()
        if self._owns_bus:
            try:
                self.bus.shutdown()
            except Exception:  # noqa: BLE001 - a vanished adapter may fail to shut down; nothing left to do
                pass
        self._report = self.report()
        if errors:
            raise errors[0]
        return self._report

    def __enter__(self) -> CanNode:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def report(self) -> RunReport:
        sim = self._k * self.period_ns / 1e9
        wall = self._wall_used if self._closed else (time.perf_counter() - self._wall_start if self._started else 0)
        return RunReport(
            clock=self.clock.kind, ticks=self._k, simulated_s=sim, wall_s=wall,
            realtime_factor=sim / wall if wall > 0 else 0.0, stop_reason=self.stop_reason or "not started",
            overruns=self.overruns, skipped_ticks=self.skipped_ticks, max_lateness_ms=self.max_lateness_ns / 1e6,
            counters=dict(self.counters), comm_faults=list(self.comm_fault_log), cycle_times=self.stats.report(),
            logs=list(self.log_paths), log_frames=self.log.frames if self.log else 0,
            log_dropped_frames=self.log.dropped_frames if self.log else 0, last_tx_error=self.last_tx_error,
            last_rx_error=self.last_rx_error)

    @property
    def t_s(self) -> float:
        return self._k * self.period_ns / 1e9

    # --- the tick ------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        clock = self.clock
        k = self._k
        t_ns = k * self.period_ns
        if clock.realtime:
            lateness = clock.wait_until(t_ns, self._idle)
            now = clock.now_ns()
            if lateness > self.max_lateness_ns:
                self.max_lateness_ns = lateness
            if lateness > 10 * self.period_ns:  # far behind (machine stalled): re-base, count what was lost
                skipped = lateness // self.period_ns
                self.skipped_ticks += skipped
                clock.rebase(skipped * self.period_ns)
                now -= skipped * self.period_ns
            self.tick_stats.add(now)
            self._send_prepared(now, True)
        else:
            clock.wait_until(t_ns)
            self._tick_ns(t_ns)
            self._send_prepared(t_ns, False)
        self._receive(t_ns)
        if self.diag is not None:
            self.diag.step(t_ns)
        e = self.emulator
        e.tick(self.load_current_A, self.coolant_C, self.cooling_factor)
        self._k = k + 1
        self._prepare(t_ns + self.period_ns)
        if self.log is not None and len(self._log_batch) >= self.log_batch_frames:
            self.log.write(self._log_batch)
            self._log_batch = []
        if not k % _STATS_FLUSH_TICKS:  # the per-frame times are appended without a size check
            self.stats.flush_due()
        if clock.realtime and clock.now_ns() > t_ns + self.period_ns:
            self.overruns += 1

    def _prepare(self, t_ns: int) -> None:
        """Encode the frames due at ``t_ns`` from the state now (the end of the tick before)."""
        if self._firmware is not None:
            self._prepare_firmware()
            return
        append = self._prepared.append
        table = self._tx_table
        if table is not None:  # the schedule repeats: the tasks due at tick k, precomputed
            due = table[(t_ns // self.period_ns) % len(table)]
        else:
            due = [task.payload for task in self._scheduler.pop_due(t_ns)]
        heard = self._heard() if self._heard is not None else None
        self._deferred_for = None
        for tx in due:
            counter = tx.counter  # 0 for a message without E2E
            if tx.pages is not None:
                page = tx.pages[tx.page_index]
                tx.page_index = (tx.page_index + 1) % len(tx.pages)
            else:
                page = None
            if tx.e2e:
                tx.counter = (counter + 1) & tx.counter_mask
            if heard is not None and (tx.frame_id, tx.is_extended_id) not in heard:
                append((tx.stats_ns, (tx, page, counter)))  # nobody hears it, nothing logs it: built if that changes
                self._deferred_for = heard
                continue
            append((tx.stats_ns, self._frame_of(tx, page, counter)))

    @staticmethod
    def _frame_of(tx: _TxTask, page, counter: int) -> Frame:
        if page is not None:
            values = tx.values(page)
            data = None
        else:
            values = tx.values(None)
            if values == tx.last_values:  # encoding is a function of (counter, values) alone
                data = tx.last_data.get(counter)
            else:
                tx.last_values = values
                tx.last_data = {}
                data = None
        if data is None:
            try:
                data = tx.fast[page](counter, *values) if tx.e2e else tx.fast[page](*values)
            except (ValueError, OverflowError, TypeError):  # NaN, inf ...: the saturating path
                data = tx.encoders[page](counter, *values) if tx.e2e else tx.encoders[page](*values)
            if page is None:
                tx.last_data[counter] = data
        return _tx_frame(Frame, tx.frame_id, data, tx.is_extended_id, tx.is_fd, tx.brs)

    def _prepare_firmware(self) -> None:
        """An external BMS firmware's frames of its last step, sent at the next deadline."""
        stats, firmware = self._firmware_stats, self._firmware
        assert firmware is not None
        for frame in firmware.transmit():
            st = stats.get(frame.arbitration_id)
            if st is None:
                frame_id = frame.arbitration_id
                name, period_s = self._firmware_messages.get(frame_id, (f"0x{frame_id:X}", None))
                st = stats[frame_id] = self.stats.track(name, "tx", round(period_s * 1e9) if period_s else None)
            self._prepared.append((st.append_ns, frame))

    def _send_prepared(self, t_ns: int, realtime: bool) -> None:
        prepared = self._prepared
        if not prepared:
            return
        if self.off_bus:
            self.counters["tx_bus_off"] += len(prepared)
            prepared.clear()
            return
        if self.diag is not None and not self.diag.normal_tx:  # CommunicationControl: application frames off
            self.counters["tx_suppressed"] += len(prepared)
            prepared.clear()
            return
        bus, clock, batch = self.bus, self.clock, self._log_batch
        send: Any = bus.send   # a LockstepBus takes handover=True
        sent = 0
        echoes = self._echoes
        stamp = clock.timestamp(t_ns)
        try:
            if realtime:
                for st, msg in prepared:
                    now = clock.now_ns()
                    msg.timestamp = clock.timestamp(now)
                    try:
                        send(msg)
                    except (can.CanError, OSError) as exc:
                        self._tx_failed(exc, t_ns)
                        continue
                    sent += 1
                    st(now)
                    batch.append(msg)
                    if echoes is not None:
                        echoes.append(_echo_key(msg))
            else:  # simulated time: every frame of the tick carries the tick's time
                deferred_for = self._deferred_for
                if deferred_for is not None and self._heard is not None and self._heard() is not deferred_for:
                    # a handle joined, left or changed its filters since: build what was left unbuilt
                    prepared[:] = [(st, self._frame_of(*msg) if type(msg) is tuple else msg) for st, msg in prepared]
                # frames this node built and keeps no reference to (a LockstepBus, no log, no echo check, no
                # firmware's frames): the receiver taking one gets the frame itself, not a copy
                handover = self._heard is not None and self._firmware is None
                for st, msg in prepared:
                    if type(msg) is tuple:  # heard by nobody: counted and timed as sent
                        sent += 1
                        st(t_ns)
                        continue
                    msg.timestamp = stamp
                    try:
                        if handover:   # a keyword call: cheaper than through a functools.partial
                            send(msg, handover=True)
                        else:
                            send(msg)
                    except (can.CanError, OSError) as exc:
                        self._tx_failed(exc, t_ns)
                        continue
                    sent += 1
                    st(t_ns)
                    batch.append(msg)
                    if echoes is not None:
                        echoes.append(_echo_key(msg))
        finally:
            prepared.clear()
            self.counters["tx_frames"] += sent
        if sent:
            self._last_bus_ok_ns = t_ns

    def _send_event(self, message: MessageCodec, values: dict, t_ns: int, stats) -> None:
        data = message.encode(values)
        msg = Frame(arbitration_id=message.frame_id, is_extended_id=message.is_extended_id, data=data,
                          dlc=message.length, is_fd=message.is_fd, is_rx=False, check=False,
                          timestamp=self.clock.timestamp(self.clock.now_ns() if self.clock.realtime else t_ns))
        try:
            self.bus.send(msg)
        except (can.CanError, OSError) as exc:
            self._tx_failed(exc, t_ns)
            return
        self.counters["tx_frames"] += 1
        stats.add(t_ns)
        self._log_batch.append(msg)
        if self._echoes is not None:
            self._echoes.append(_echo_key(msg))

    # --- bus errors ----------------------------------------------------------------------------------------
    def _tx_failed(self, exc: BaseException, t_ns: int) -> None:
        """A frame could not be sent: counted (a bus nobody acknowledges fills the transmit queue, e.g.
        before the VCU powers up); fatal when the adapter is gone, or when nothing could be sent for
        ``bus_error_timeout_s`` if that is set."""
        self.counters["tx_errors"] += 1
        self.last_tx_error = _describe(exc)
        if any(_gone(e) for e in _chain(exc)):
            raise BusFailure(f"sending on the bus failed: {_describe(exc)}") from exc
        if self.bus_error_timeout_ns is not None and t_ns - self._last_bus_ok_ns > self.bus_error_timeout_ns:
            raise BusFailure(f"no frame could be sent for {self.bus_error_timeout_ns / 1e9:g} s; last error: "
                             f"{exc}") from exc

    def _idle(self, seconds: float) -> None:
        """Wall clock: wait for frames instead of sleeping (kept for the next tick's reception)."""
        if (self._idle_error is not None or self._idle_errors >= _RX_ERRORS_PER_TICK
                or len(self._pending) >= self.max_rx_per_tick):
            time.sleep(seconds)
            return
        try:
            msg = self.bus.recv(timeout=seconds)
        except _RX_EXCEPTIONS as exc:
            self._idle_errors += 1
            try:
                self._rx_error(exc, self.clock.now_ns())
            except BusFailure as failure:  # raised by the next tick's reception, after its sends
                self._idle_error = failure
            return
        self._rx_failing_since_ns = None
        if msg is not None:
            self._pending.append(msg)

    def _rx_error(self, exc: BaseException, t_ns: int) -> None:
        """A receive that raised. The adapter's own failure (bus shut down, device gone, interface down)
        raises ``BusFailure``; a frame or datagram the interface could not decode is a bad frame (counted,
        never fatal: a peer flooding garbage must not stop the BMS), anything else a receive error: counted,
        and the run goes on unless receiving fails for a second without one good read."""
        kind = classify_rx_error(self.bus, exc)
        if kind == "fatal":
            raise BusFailure(f"receiving from the bus failed: {_describe(exc)}") from exc
        self.last_rx_error = f"{_describe(exc)} (at t = {self._t_s(t_ns):.2f} s)"
        if kind == "bad_frame":  # something arrived and was read: the bus works (a flood of garbage included)
            self.counters["bad_frames"] += 1
            return
        self.counters["rx_errors"] += 1
        since = self._rx_failing_since_ns
        if since is None:
            self._rx_failing_since_ns = t_ns
        elif t_ns - since > (self.bus_error_timeout_ns or _RX_FAILING_MAX_NS):
            raise BusFailure(f"receiving from the bus has failed for {(t_ns - since) / 1e9:.1f} s without one "
                             f"good read; last error: {_describe(exc)}") from exc

    def _receive(self, t_ns: int) -> None:
        pending = self._pending
        self._idle_errors = 0
        if self._idle_error is not None:
            failure, self._idle_error = self._idle_error, None
            raise failure
        recv = self.bus.recv
        if self.off_bus:  # what arrives meanwhile never reaches the controller
            try:
                while recv(0) is not None:
                    self.counters["rx_bus_off"] += 1
            except _RX_EXCEPTIONS as exc:
                self._rx_error(exc, t_ns)
            if self._rx:
                self._check_timeouts(t_ns)
            return
        errors = 0
        while len(pending) < self.max_rx_per_tick:
            try:
                msg = recv(0)
            except _RX_EXCEPTIONS as exc:
                self._rx_error(exc, t_ns)
                errors += 1
                if errors >= _RX_ERRORS_PER_TICK:
                    break
                continue
            errors = 0
            self._rx_failing_since_ns = None
            if msg is None:
                break
            pending.append(msg)
        else:
            self.counters["rx_overflow_ticks"] += 1
        if pending:
            for msg in pending:
                self._on_frame(msg, t_ns)
            pending.clear()
        if self._rx:
            self._check_timeouts(t_ns)

    # --- reception ----------------------------------------------------------------------------------------
    def _on_frame(self, msg: can.Message, t_ns: int) -> None:
        counters = self.counters
        if not msg.is_rx or (self._echoes and self._is_echo(msg)):  # logged and counted when it was sent
            counters["own_frames"] += 1
            return
        counters["rx_frames"] += 1
        realtime = self.clock.realtime
        if not realtime:
            msg.timestamp = self.clock.timestamp(t_ns)
        msg.is_rx = True
        self._log_batch.append(msg)
        if msg.is_error_frame:
            counters["error_frames"] += 1
            self._bad_rx(msg, "an error frame", t_ns)
            if msg.arbitration_id & _CAN_ERR_BUSOFF and self.controller_error_frames:
                raise BusFailure("the controller went bus-off (error frame with CAN_ERR_BUSOFF)")
            return
        if msg.is_remote_frame:
            counters["remote_frames"] += 1
            return
        if self._shadow is not None:
            self._shadow.receive(msg, t_ns)
        if self._firmware is not None:  # an external BMS firmware reads its own frames
            counters["rx_accepted"] += 1
            self._firmware.receive(msg, t_ns)
            return
        key = (msg.arbitration_id, msg.is_extended_id)
        functional = self._diag_ids.get(key)
        if functional is not None:
            counters["diag_frames"] += 1
            assert self.diag is not None  # diagnostic ids are listened to only with a server
            self.diag.on_frame(msg, functional)
            return
        rx = self._rx.get(key)
        if rx is not None and not self.diag_rx_enabled:
            counters["rx_suppressed"] += 1
            return
        if rx is None:
            if msg.arbitration_id > (0x1FFFFFFF if msg.is_extended_id else 0x7FF) or msg.arbitration_id < 0:
                counters["bad_frames"] += 1  # an identifier no CAN frame can carry
                self._bad_rx(msg, "an identifier no CAN frame carries", t_ns)
            elif key in self._tx_ids or self.codec.by_id(*key):
                counters["not_for_bms"] += 1
            else:
                counters["unknown_id"] += 1
                self._bad_rx(msg, "an identifier not in the DBC", t_ns)
            return
        message = rx.codec
        data = msg.data
        if len(data) != message.length or msg.dlc != message.length:
            counters["wrong_dlc"] += 1
            self._bad_rx(msg, f"{message.name}: DLC {msg.dlc} ({len(data)} data bytes) where the DBC defines "
                              f"{message.length}", t_ns)
            return
        stamp = t_ns if not realtime else int(msg.timestamp * 1e9)
        rx.stats.append_ns(stamp)  # folded every _STATS_FLUSH_TICKS ticks
        payload = bytes(data)
        entry = rx.decoded.get(payload)
        if entry is None:
            entry = _check_and_decode(message, payload)
            if len(rx.decoded) >= _DECODED_MAX:
                rx.decoded.clear()
            rx.decoded[payload] = entry
        crc_ok, counter, values = entry
        if message.e2e is not None:
            if not crc_ok:
                counters["crc_errors"] += 1
                self._bad_rx(msg, f"{message.name}: wrong CRC", t_ns)
                self._e2e_error(rx, t_ns)
                return
            last = rx.last_counter
            rx.last_counter = counter
            if last is not None:
                delta = (counter - last) % (1 << message.e2e.counter_bits)
                if not 1 <= delta <= self.counter_max_delta:
                    counters["counter_errors"] += 1
                    self._bad_rx(msg, f"{message.name}: alive counter {last} then {counter}", t_ns)
                    self._e2e_error(rx, t_ns)
                    return
        if values is None:
            counters["bad_values"] += 1
            self._bad_rx(msg, f"{message.name}: a value its signals cannot carry", t_ns)
            return
        rx.valid += 1
        rx.errors_in_row = 0
        rx.valid_in_row += 1
        rx.last_valid_ns = t_ns
        rx.armed = rx.timeout_ns > 0
        if (rx.e2e_failed or rx.timed_out) and rx.valid_in_row >= self.comm_recovery_frames:
            # healed only by frames in a row on time and intact (AUTOSAR E2E's MinOkStateInvalid): a sender
            # slower than the timeout, or one frame in three bad, stays one fault instead of chattering
            rx.e2e_failed = rx.timed_out = False
            self._update_fault(rx, t_ns)
        if rx.handler is not None and rx.handler(values, t_ns, rx) is False:
            counters["bad_values"] += 1  # a sound frame asking for what does not exist: counted once, here
            self._bad_rx(msg, f"{message.name}: a request for what does not exist", t_ns)
            return
        counters["rx_accepted"] += 1

    def _bad_rx(self, msg: can.Message, why: str, t_ns: int) -> None:
        """A received frame the node counted and could not use: the report's last receive error says
        what, which frame and when (only on this path: a good frame costs nothing)."""
        ident = f"0x{msg.arbitration_id:08X}" if msg.is_extended_id else f"0x{msg.arbitration_id:03X}"
        self.last_rx_error = f"{why} (ID {ident}, data {bytes(msg.data).hex().upper() or '-'}, at t = " \
                             f"{self._t_s(t_ns):.2f} s)"
        refused = getattr(self.on_fault_control, "refused", None)
        rx = self._rx.get((msg.arbitration_id, msg.is_extended_id))
        if refused is not None and rx is not None and rx.handler == self._on_fault_control:
            refused(self.last_rx_error, self._t_s(t_ns))   # a malformed bench request is audited too

    def _is_echo(self, msg: can.Message) -> bool:
        """Whether ``msg`` is one of this node's sends coming back (they come back in the order sent; the
        ones before a match were lost on the way and are forgotten)."""
        echoes = self._echoes
        assert echoes is not None
        key = _echo_key(msg)
        for k, sent in enumerate(echoes):
            if sent == key:
                for _ in range(k + 1):
                    echoes.popleft()
                return True
        return False

    def _e2e_error(self, rx: _RxMessage, t_ns: int) -> None:
        rx.errors_in_row += 1
        rx.valid_in_row = 0
        if rx.errors_in_row >= self.e2e_max_errors and not rx.e2e_failed:
            rx.e2e_failed = True
            self._update_fault(rx, t_ns)

    def _check_timeouts(self, t_ns: int) -> None:
        for rx in self._rx.values():
            if rx.armed and t_ns - rx.last_valid_ns > rx.timeout_ns:
                rx.valid_in_row = 0
                rx.last_counter = None  # resynchronise on the next frame
                if rx.timed_out:
                    continue
                rx.timed_out = True
                self._update_fault(rx, t_ns)
                if rx.charger and self.charger_connected:
                    self.charger_connected = False
                    self.emulator.bms.charger_offer(self._t_s(t_ns), max_voltage_V=0.0, max_current_A=0.0,
                                                    connected=False)

    def _update_fault(self, rx: _RxMessage, t_ns: int) -> None:
        faulted = rx.faulted
        if faulted != rx.reported:
            rx.reported = faulted
            t_s = self._t_s(t_ns)
            self.comm_fault_log.append((t_s, rx.codec.name, faulted))
            self.emulator.bms.comm_fault(rx.codec.name, faulted, t_s)
            self.comm_fault_active = any(r.reported for r in self._rx.values())

    def _t_s(self, t_ns: int) -> float:
        """The BMS's own time for run time ``t_ns`` (the emulator's ``t_s``: same instant, same float)."""
        t_s = getattr(self.emulator, "t_s", None)
        return float(t_s) if t_s is not None and abs(t_s * 1e9 - t_ns) < 1e3 else t_ns / 1e9

    # --- what each received message asks of the BMS --------------------------------------------------------
    def _on_vcu_command(self, values: dict, t_ns: int, rx) -> bool:
        """Feed the request to the BMS; False for a request that does not exist (counted a bad value)."""
        bms, t_s = self.emulator.bms, self._t_s(t_ns)
        request = int(values["StateRequest"])
        if request > _REQ_SHUTDOWN:
            bms.vcu_alive(t_s)  # the VCU is there, its request is not one
            return False
        if int(values.get("ContactorRequest", 0)) == _CONTACTOR_OPEN and request in (_REQ_DRIVE, _REQ_CHARGE):
            request = _REQ_STANDBY
        self.last_request = request
        if request == _REQ_NONE:
            bms.vcu_alive(t_s)
        else:
            bms.request(self._request_values[request], t_s)
        return True

    def _on_charger_status(self, values: dict, t_ns: int, rx) -> None:
        connected = bool(values["ChargerConnected"])
        self.charger_connected = connected
        if not connected:
            rx.armed = False  # an unplugged charger may fall silent
        self.emulator.bms.charger_offer(self._t_s(t_ns), max_voltage_V=float(values["ChargerMaxVoltage"]),
                                        max_current_A=float(values["ChargerMaxCurrent"]), connected=connected)

    def _on_hil_load(self, values: dict, t_ns: int, rx) -> None:
        self.load_current_A = float(values["LoadCurrent"])
        self.coolant_C = float(values["CoolantTemperature"])
        self.cooling_factor = float(values["CoolingFactor"])

    def _on_fault_control(self, values: dict, t_ns: int, rx) -> None:
        hook = self.on_fault_control
        if hook is not None:  # without a bench control running, the frame is only logged
            hook(values, self._t_s(t_ns))

    # --- diagnostics (bms.diag) -------------------------------------------------------------------------
    @property
    def diag_rx_enabled(self) -> bool:
        """CommunicationControl: the application messages are received."""
        return self.diag is None or self.diag.normal_rx

    def _send_diag(self, arbitration_id: int, data: bytes, is_extended_id: bool) -> None:
        """An ISO-TP frame of the UDS server, sent at once (timestamp: now, or the tick's simulated time)."""
        if self.off_bus:
            self.counters["tx_bus_off"] += 1
            return
        clock = self.clock
        msg = Frame.build(arbitration_id, data, is_extended_id=is_extended_id,
                          timestamp=clock.timestamp(clock.now_ns()))
        try:
            self.bus.send(msg)
        except (can.CanError, OSError) as exc:
            self._tx_failed(exc, clock.now_ns())
            return
        self.counters["tx_frames"] += 1
        self._log_batch.append(msg)
        if self._echoes is not None:
            self._echoes.append(_echo_key(msg))


def _warn_faster_than_tick(faster: list[tuple[str, int]], tick_ns: int) -> None:
    """A node sends at its ticks: a message of a shorter cycle goes out once a tick, slower than its DBC says."""
    if faster:
        names = ", ".join(f"{name} ({period / 1e6:g} ms)" for name, period in faster)
        warnings.warn(f"the tick (dt = {tick_ns / 1e6:g} ms) is longer than the cycle time of {names}: they are "
                      f"sent once a tick; a tick of at most {min(p for _, p in faster) / 1e6:g} ms keeps them on time",
                      CycleTimeWarning, stacklevel=3)


class CycleTimeWarning(UserWarning):
    """The node cannot send a message as often as its DBC (or matrix) says."""


def _diag_server(diag, emulator):
    """The node's UDS server from its ``diag`` argument."""
    if diag is None or diag is False:
        return None
    from ..diag import DiagConfig, UdsServer
    if diag is True:
        return UdsServer(emulator)
    if isinstance(diag, DiagConfig):
        return UdsServer(emulator, diag)
    if isinstance(diag, UdsServer):
        return diag
    raise ValueError(f"diag: expected True, None, a DiagConfig or a UdsServer, found {diag!r}")


_DECODED_MAX = 1024  # payloads remembered per received message (random traffic cannot grow it further)


def _check_and_decode(message: MessageCodec, payload: bytes) -> tuple:
    """(CRC ok, alive counter, values or None): what reception needs of a payload; the values are shared
    by every frame with this payload, so handlers read them and never change them."""
    if message.e2e is not None:
        if not message.crc_ok(payload):
            return False, None, None
        counter = message.counter_of(payload)
    else:
        counter = None
    try:
        return True, counter, message.decode(payload)
    except BmsError:
        return True, counter, None


def _request_enum():
    """The BMS's StateRequest enum (plain ints where the controller is not importable)."""
    try:
        from ..controller import StateRequest
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__.rpartition('.')[0]}.controller":
            raise
        return int
    return StateRequest


# --- what a receive error means, and whose frames come back --------------------------------------------
_GONE_TEXT = ("closed bus", "not open", "no such device", "network is down", "file descriptor", "disconnected",
              "device not found")  # "file descriptor": EBADF, and select() on a socket closed under python-can


def _chain(exc: BaseException | None):
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def _describe(exc: BaseException) -> str:
    """The error and what caused it (python-can wraps the reason: "could not unpack received message")."""
    parts = []
    for e in _chain(exc):
        text = str(e) or type(e).__name__
        if text not in parts:
            parts.append(text)
    return ": ".join(parts)


def _gone(exc: BaseException) -> bool:
    code = getattr(exc, "errno", None)
    if code is None:
        code = getattr(exc, "error_code", None)
    if code in _FATAL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(s in text for s in _GONE_TEXT)


def classify_rx_error(bus: can.BusABC, exc: BaseException) -> str:
    """What an exception from ``bus.recv`` means: ``"fatal"`` (the bus is shut down, the device is gone or
    the interface down: the adapter's own failure), ``"bad_frame"`` (the interface could not make a frame
    of what arrived: python-can wraps a decoding error, or raises ValueError or TypeError, with no
    operating-system error behind it) or ``"error"`` (any other failed receive: counted, retried)."""
    if getattr(bus, "_is_shutdown", False):
        return "fatal"
    chain = list(_chain(exc))
    if any(_gone(e) for e in chain):
        return "fatal"
    if any(isinstance(e, OSError) for e in chain):
        return "error"
    return "bad_frame"


def _software_bus(bus: can.BusABC) -> bool:
    """A bus of software handles (python-can's virtual and udp_multicast): no controller of this node
    stands behind it, so an error frame on it was sent by another process."""
    from can.interfaces.virtual import VirtualBus
    return isinstance(bus, VirtualBus) or type(bus).__name__ == "UdpMulticastBus"  # LockstepBus is a VirtualBus


def _hears_own_sends_unmarked(bus: can.BusABC) -> bool:
    """udp_multicast: every socket of the group receives every datagram, its own too (multicast loopback,
    which the other processes on the host need), and python-can's message format has no ``is_rx``."""
    return type(bus).__name__ == "UdpMulticastBus"


def _echo_key(msg: can.Message) -> tuple:
    return (msg.arbitration_id, msg.is_extended_id, msg.is_remote_frame, msg.is_error_frame, msg.is_fd,
            bytes(msg.data))
