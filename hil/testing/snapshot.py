"""In-place snapshots of a bench's whole run state, restored in a few milliseconds.

``capture(root, skip=...)`` walks every object reachable from ``root`` once and keeps a copy of what can change:
the items of each dict (an object's ``__dict__`` too), list, deque, set and bytearray, the values of ``__slots__``,
the data of each writable NumPy array, the state of each NumPy bit generator, the contents of closure cells, and the
saved state of an external firmware (its C ABI ``save_state``). ``Snapshot.restore()`` writes all of it back *into the
same objects*: the compiled kernels keep raw pointers into the arrays and stay valid, the objects that hold each
other keep their identity, and anything created after the snapshot is dropped with the container that held it.

What cannot be restored in place is refused when the snapshot is taken, naming the path to it (``bench.can.node
._log._file``): an open file (a bus log), a live thread, a generator, shared memory (a process firmware), an unknown
compiled object. Compiled objects of ``bms._ext`` (kernels, firmware transports) keep their state in NumPy arrays
they hold (``_owners``, a library firmware's output buffer, which a firmware may leave set between steps): the walk
reaches those through ``gc.get_referents`` and restores them.
"""
from __future__ import annotations

import array
import enum
import gc
import io
import operator
import re
import struct
import threading
import types
from collections import deque

import can
import numpy as np

from bms.errors import BmsError

__all__ = ["Snapshot", "SnapshotError", "capture"]

_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, slice, type, types.ModuleType,
          types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType, types.BuiltinMethodType,
          np.generic, np.dtype, np.ufunc, enum.Enum, memoryview, type(Ellipsis), type(NotImplemented),
          operator.itemgetter, operator.attrgetter, operator.methodcaller, struct.Struct, re.Pattern)
# definitions and parsed files: shared between benches, never changed by a run
_CONSTANT_MODULES = ("cantools", "bitstruct", "logging", "typing", "re", "bms.can.codec", "bms.diag.dids",
                     "bms.params", "textparser")
_LOCKS = (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Event,
          threading.Semaphore)
_MISSING = object()


class SnapshotError(BmsError):
    """A bench holds something a snapshot cannot restore in place (the message names the path to it)."""


class Snapshot:
    """What ``capture`` kept; ``restore()`` puts it back (any number of times)."""

    def __init__(self):
        self.dicts: list = []        # (dict, items)
        self.lists: list = []        # (list, items)
        self.deques: list = []
        self.sets: list = []
        self.buffers: list = []      # (bytearray or array.array, copy)
        self.arrays: list = []       # (array, copy)
        self.slots: list = []        # (object, ((name, value), ...))
        self.cells: list = []        # (cell, contents)
        self.generators: list = []   # (bit generator, state)
        self.firmware: list = []     # (firmware, saved state bytes)
        self.objects = 0
        self.nbytes = 0

    def restore(self) -> None:
        for d, items in self.dicts:
            d.clear()
            d.update(items)
        for lst, items in self.lists:
            lst[:] = items
        for dq, items in self.deques:
            dq.clear()
            dq.extend(items)
        for s, items in self.sets:
            s.clear()
            s.update(items)
        for buf, data in self.buffers:
            buf[:] = data
        copyto = np.copyto
        for a, data in self.arrays:
            copyto(a, data)
        setattr_ = object.__setattr__
        for obj, values in self.slots:
            for name, value in values:
                if value is _MISSING:
                    if hasattr(obj, name):
                        delattr(obj, name)
                else:
                    setattr_(obj, name, value)
        for cell, value in self.cells:
            cell.cell_contents = value
        for bitgen, state in self.generators:
            bitgen.state = state
        for fw, transport, state, counters, pending in self.firmware:
            fw.restore_state(state)
            if transport is not None:
                transport.n_rx = 0
                for frame, t_ns in pending:   # the frames it had received for its next step
                    transport.receive(frame, t_ns)
                transport.last_t_ns = counters


def _slot_names(cls) -> list[str]:
    names = []
    for c in cls.__mro__:
        slots = c.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [s for s in slots if s not in ("__dict__", "__weakref__")]
    return names


def _external_firmware(obj) -> bool:
    from bms.fil.slot import Firmware
    return isinstance(obj, Firmware) and getattr(obj, "kind", "builtin") != "builtin"


def _firmware_state(fw, path: str) -> tuple:
    """(firmware, transport, saved state, transport's last step time, frames queued for its next step) of an external
    firmware: its C ABI ``save_state``, and what its transport (``bms._ext.fil``) holds between steps."""
    transport = getattr(fw, "_lib", None) or getattr(fw, "_channel", None)
    if transport is None and (hasattr(fw, "_lib") or hasattr(fw, "_channel")):
        raise SnapshotError(f"{path}: firmware {fw.name} is closed")
    try:
        state = fw.save_state()
    except BmsError as exc:
        raise SnapshotError(f"{path}: firmware {fw.name} cannot save its state ({exc}): its bench is built anew "
                            "for each example") from exc
    if transport is None:
        return fw, None, state, None, ()
    if transport.n_tx:
        raise SnapshotError(f"{path}: firmware {fw.name} has frames not yet sent")
    pending = transport.queued()   # the frames received since its last step, flags and all
    return fw, transport, state, transport.last_t_ns, tuple(pending)


def capture(root, *, skip=()) -> Snapshot:
    """A snapshot of everything reachable from ``root`` but the objects in ``skip`` (shared, constant ones)."""
    snap = Snapshot()
    seen = {id(x) for x in skip}
    stack: list = [(root, "bench")]
    keep = []   # the copies must outlive the walk (ids of temporaries would be reused)
    while stack:
        obj, path = stack.pop()
        if id(obj) in seen or isinstance(obj, _ATOMS):
            continue
        seen.add(id(obj))
        keep.append(obj)
        snap.objects += 1
        cls = type(obj)
        module = cls.__module__ or ""
        if module.startswith(_CONSTANT_MODULES) or isinstance(obj, _LOCKS):
            continue
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                raise SnapshotError(f"{path}: an array of Python objects cannot be restored in place")
            if obj.flags.writeable:
                snap.arrays.append((obj, obj.copy()))
                snap.nbytes += obj.nbytes
            continue
        if isinstance(obj, np.random.Generator):
            obj = obj.bit_generator
        if isinstance(obj, np.random.BitGenerator):
            snap.generators.append((obj, obj.state))
            continue
        if isinstance(obj, dict):
            items = tuple(obj.items())
            snap.dicts.append((obj, items))
            for k, v in items:
                stack.append((v, f"{path}[{k!r}]"))
                stack.append((k, f"{path} key {k!r}"))
            continue
        if isinstance(obj, list):
            snap.lists.append((obj, tuple(obj)))
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(obj))
            continue
        if isinstance(obj, deque):
            snap.deques.append((obj, tuple(obj)))
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(obj))
            continue
        if isinstance(obj, set):
            snap.sets.append((obj, tuple(obj)))
            stack.extend((v, f"{path} item") for v in obj)
            continue
        if isinstance(obj, (tuple, frozenset)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(obj))
            continue
        if isinstance(obj, (bytearray, array.array)):
            snap.buffers.append((obj, obj[:]))
            continue
        if isinstance(obj, types.MethodType):
            stack.append((obj.__self__, f"{path}.__self__"))
            continue
        if isinstance(obj, types.FunctionType):
            for i, cell in enumerate(obj.__closure__ or ()):
                try:
                    value = cell.cell_contents
                except ValueError:      # an empty cell
                    continue
                snap.cells.append((cell, value))
                stack.append((value, f"{path}.<closure {obj.__code__.co_freevars[i]}>"))
            continue
        if isinstance(obj, types.GeneratorType) or isinstance(obj, (threading.Thread, io.IOBase)):
            raise SnapshotError(f"{path}: {cls.__module__}.{cls.__qualname__} cannot be restored in place (a bench "
                                "with a bus log, a thread or a running generator cannot be reset)")
        if isinstance(obj, can.BusABC):
            # python-can's virtual bus: only its receive queue is run state (the channel's list of queues is
            # shared with every handle on the channel, a tester's too)
            queue = getattr(obj, "queue", None)
            if not isinstance(getattr(queue, "queue", None), deque):
                raise SnapshotError(f"{path}: a {cls.__qualname__} cannot be restored in place (only python-can's "
                                    "virtual bus can)")
            pending = queue.queue  # type: ignore[union-attr]  # a deque: checked just above
            snap.deques.append((pending, tuple(pending)))
            stack.extend((v, f"{path}.queue[{i}]") for i, v in enumerate(pending))
            continue
        if _external_firmware(obj):
            entry = _firmware_state(obj, path)
            snap.firmware.append(entry)
            if entry[1] is not None:   # the transport's own buffers (the outputs a firmware leaves set)
                stack.append((entry[1], f"{path}.<transport>"))
            continue  # its Python side is its name, layout and bound transport calls: no run state
        state = getattr(obj, "__dict__", None)
        names = _slot_names(cls)
        if state is None and not names:
            if module.startswith("bms._ext"):
                # a compiled kernel or transport: its state is in the arrays it holds (``_owners``, a firmware's
                # output buffer), which the garbage collector's view of it hands out
                stack.extend((v, f"{path}.<held {i}>") for i, v in enumerate(gc.get_referents(obj)))
                continue
            if cls.__module__ == "functools":
                continue
            raise SnapshotError(f"{path}: {cls.__module__}.{cls.__qualname__} holds state a snapshot cannot see")
        if isinstance(state, dict) and id(state) not in seen:
            seen.add(id(state))
            items = tuple(state.items())
            snap.dicts.append((state, items))
            stack.extend((v, f"{path}.{k}") for k, v in items)
        if names:
            values = tuple((n, getattr(obj, n, _MISSING)) for n in names)
            snap.slots.append((obj, values))
            stack.extend((v, f"{path}.{n}") for n, v in values if v is not _MISSING)
    return snap
