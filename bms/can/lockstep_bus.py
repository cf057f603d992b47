"""python-can's virtual bus, without the per-frame cost that dominated a lockstep tick.

``LockstepBus`` is a ``can.interfaces.virtual.VirtualBus``: it joins the same in-process channel registry, so
plain ``can.Bus(interface="virtual", channel=...)`` handles (a test's tester, a firmware under test in the
same process) hear its frames and it hears theirs, in the order sent, with python-can's per-receiver copy
semantics (each receiver gets its own ``is_rx`` copy carrying the channel and the sender's timestamp).
What it does differently, measured on a lockstep run (python-can's virtual ``send`` + ``recv`` is about
3 us a frame, most of it ``copy.deepcopy``'s dispatch and ``queue.Queue``'s lock and condition per frame):

- a receiver that is a ``LockstepBus`` applies its ``can_filters`` when a frame is sent, the way an adapter's
  acceptance filter does, so a frame it does not listen to is never copied or queued (the VCU model reads
  two of the BMS's five frames a tick);
- frames go into the receiver's deque directly: no lock unless a thread is blocked waiting in ``recv``;
- the copy is ``Frame``'s cheap one (``bms.can.node.Frame``), ``copy.deepcopy`` for any other message;
- ``recv(0)`` on an empty queue returns at once;
- ``heard()`` says which identifiers another handle on the channel would take, so a sender in lockstep
  without a log need not build the frames nobody hears (the BMS sends five frames a tick; the VCU reads two).

Frames a plain ``VirtualBus`` sends into a ``LockstepBus``'s queue go through the same filter on ``put``.
"""
from __future__ import annotations

import logging
import queue
import time
from copy import deepcopy

import can
from can.interfaces.virtual import VirtualBus, channels_lock

from .node import Frame

__all__ = ["LockstepBus"]

_LOG = logging.getLogger("can.bus")   # where python-can's BusABC.recv logs "Received: ..."


class _FilteredQueue(queue.Queue):
    """A receiver's queue: ``put`` (plain VirtualBus senders, any thread) honours the owner's filters;
    ``deliver`` (a ``LockstepBus`` sender) appends without a lock and wakes a blocked ``get`` only if one
    waits. Unbounded, like python-can's default (``rx_queue_size=0``)."""

    def __init__(self, owner: LockstepBus):
        super().__init__(0)
        self.owner = owner
        self.waiting = 0
        self.ids: frozenset | None = None   # exact-id filters as (id, extended): a set lookup, not a loop

    def accepts(self, msg: can.Message) -> bool:
        ids = self.ids
        if ids is not None:  # python-can's (can_id ^ id) & mask == 0 with the kind's full mask
            extended = msg.is_extended_id
            return (msg.arbitration_id & (0x1FFFFFFF if extended else 0x7FF), extended) in ids
        owner = self.owner
        return owner._filters is None or owner._matches_filters(msg)

    def put(self, item, block=True, timeout=None) -> None:  # what a plain VirtualBus sender calls
        if self.accepts(item):
            self.deliver(item)

    def deliver(self, item) -> None:
        self.queue.append(item)  # deque.append is atomic under the GIL
        if self.waiting:  # read after the append: a getter that counted itself in sees the item or is woken
            with self.not_empty:
                self.not_empty.notify()

    def get(self, block=True, timeout=None):
        try:
            return self.queue.popleft()
        except IndexError:
            if not block or timeout is not None and timeout <= 0:
                raise queue.Empty from None
        with self.not_empty:
            self.waiting += 1
            try:
                end = None if timeout is None else time.monotonic() + timeout
                while not self.queue:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        raise queue.Empty
                    self.not_empty.wait(left)
                return self.queue.popleft()
            finally:
                self.waiting -= 1

    def qsize(self) -> int:
        return len(self.queue)

    def empty(self) -> bool:
        return not self.queue


def _rx_copy(msg: can.Message, timestamp: float, channel) -> can.Message:
    if type(msg) is Frame:
        return msg.received_copy(timestamp, channel)
    copy = deepcopy(msg)
    copy.timestamp = timestamp
    copy.channel = channel
    copy.is_rx = True
    return copy


class LockstepBus(VirtualBus):
    """A python-can virtual bus handle (same channels as ``interface="virtual"``) with acceptance filtering
    at the sender and lock-free delivery; see the module docstring."""

    filters_version = 0   # bumped when any handle's filters change: heard() answers anew

    def __init__(self, channel="channel-0", receive_own_messages: bool = False, preserve_timestamps: bool = True,
                 **kwargs):
        if kwargs.get("rx_queue_size"):
            raise ValueError("LockstepBus: rx_queue_size: only an unbounded queue (0) is supported")
        kwargs.pop("rx_queue_size", None)
        kwargs.pop("interface", None)
        super().__init__(channel=channel, receive_own_messages=receive_own_messages,
                         preserve_timestamps=preserve_timestamps, **kwargs)
        mine = _FilteredQueue(self)
        with channels_lock:  # swap python-can's queue for ours, in place (the channel keeps its order)
            self.channel[self.channel.index(self.queue)] = mine
            self.queue = mine
        self._rx = mine.queue
        mine.ids = _exact_ids(self._filters)
        self._heard_cache: tuple = ((), None)

    def _apply_filters(self, filters) -> None:
        """Filters act when a frame is queued (``BusABC.set_filters`` stores them in ``_filters``); filters
        that each name one identifier of a given kind become a set of (id, extended)."""
        queue_ = getattr(self, "queue", None)
        if isinstance(queue_, _FilteredQueue):
            queue_.ids = _exact_ids(filters)
        LockstepBus.filters_version += 1

    def heard(self) -> frozenset | None:
        """The (id, extended) pairs some other handle on this channel would receive from this one, or None if
        any frame may be heard (a plain virtual handle, filters other than exact identifiers, or this handle
        receiving its own frames; a closed handle, so that its sender meets python-can's error). Recomputed only
        when a handle joins or leaves or a filter changes."""
        if not self._open:
            return None
        key = (*self.channel, LockstepBus.filters_version)
        cached_key, result = self._heard_cache
        if key == cached_key:
            return result
        result = None if self.receive_own_messages else _ids_heard(self.channel, self.queue)
        self._heard_cache = (key, result)
        return result

    def _recv_internal(self, timeout):
        self._check_if_open()
        try:
            return self.queue.get(block=True, timeout=timeout), True
        except queue.Empty:
            return None, True

    def recv(self, timeout: float | None = None) -> can.Message | None:
        if self._open:
            rx = self._rx
            if rx:
                try:
                    msg = rx.popleft()
                except IndexError:  # another thread read it first
                    pass
                else:
                    if _LOG.isEnabledFor(self.RECV_LOGGING_LEVEL):
                        _LOG.log(self.RECV_LOGGING_LEVEL, "Received: %s", msg)
                    return msg
            if timeout is not None and timeout <= 0:
                return None
        return super().recv(timeout)  # blocking, or a closed bus (python-can's error)

    def send(self, msg: can.Message, timeout: float | None = None, *, handover: bool = False) -> None:
        """python-can's ``send``. ``handover``: the sender will not touch ``msg`` again (it keeps no reference), so
        the last ``LockstepBus`` receiver that takes it gets ``msg`` itself, made its received copy (timestamp,
        channel, ``is_rx``), instead of a copy: one copy fewer for a frame built to be sent."""
        self._check_if_open()
        timestamp = msg.timestamp if self.preserve_timestamps else time.time()
        channel = self.channel_id
        mine = self.queue
        all_sent = True
        own = type(msg) is Frame  # the cheap copy
        held: _FilteredQueue | None = None   # with handover: the receiver taken last, which gets msg itself
        for bus_queue in self.channel:
            if bus_queue is mine and not self.receive_own_messages:
                continue
            if type(bus_queue) is _FilteredQueue:  # accepts() and deliver() inline: the per-frame path
                ids = bus_queue.ids
                if ids is not None:
                    extended = msg.is_extended_id
                    if (msg.arbitration_id & (0x1FFFFFFF if extended else 0x7FF), extended) not in ids:
                        continue
                elif not bus_queue.accepts(msg):
                    continue
                target: _FilteredQueue | None
                if handover:   # the one held before gets a copy; this one waits: it may be the last
                    target, held = held, bus_queue
                    if target is None:
                        continue
                else:
                    target = bus_queue
                copy = msg.received_copy(timestamp, channel) if own else _rx_copy(  # type: ignore[attr-defined]
                    msg, timestamp, channel)
                if target is mine:
                    copy.is_rx = False
                target.queue.append(copy)
                if target.waiting:
                    with target.not_empty:
                        target.not_empty.notify()
                continue
            copy = _rx_copy(msg, timestamp, channel)  # a plain VirtualBus handle: python-can's own path
            copy.is_rx = bus_queue is not mine
            try:
                bus_queue.put(copy, block=True, timeout=timeout)
            except queue.Full:
                all_sent = False
        if held is not None:
            msg.timestamp, msg.channel, msg.is_rx = timestamp, channel, held is not mine
            held.queue.append(msg)
            if held.waiting:
                with held.not_empty:
                    held.not_empty.notify()
        if not all_sent:
            raise can.CanOperationError("Could not send message to one or more recipients")


def _ids_heard(channel, mine) -> frozenset | None:
    ids: set = set()
    for bus_queue in channel:
        if bus_queue is mine:
            continue
        if type(bus_queue) is not _FilteredQueue or bus_queue.ids is None:
            return None
        ids |= bus_queue.ids
    return frozenset(ids)


def _exact_ids(filters) -> frozenset | None:
    """(id, extended) of filters that each accept exactly one identifier of a stated kind, else None."""
    if not filters:
        return None
    ids = set()
    for f in filters:
        extended = f.get("extended")
        if extended is None or f["can_mask"] != (0x1FFFFFFF if extended else 0x7FF):
            return None
        ids.add((f["can_id"] & f["can_mask"], bool(extended)))
    return frozenset(ids)
