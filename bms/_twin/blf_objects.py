"""Readable twin of ext/blf_objects.pyx: classic CAN frames as the BLF objects python-can's ``BLFWriter`` writes.

``pack_can_objects(frames, i, start_ts, own_channel, channels, size, limit)`` packs ``frames[i:]`` one by one,
each as python-can's ``on_message_received`` would (base object header, v1 header, CAN_MESSAGE body: 48 bytes),
and stops before a frame python-can's own path must take (an error frame, a CAN FD frame, a timestamp of None),
or after the object that brings the container's ``size`` to ``limit`` (the writer flushes there, as python-can
does after each object). ``start_ts`` is the file's first timestamp (None before the first object: set from it,
truncated to milliseconds as python-can does). A frame's channel: None is the writer's ``own_channel``; any other
is numbered by ``can.util.channel2int`` plus one (None from it: ``own_channel``), strings cached in
``channels``. Returns ``(objects, next_i, start_ts, last_ts, size)``: the packed bytes, the index of the first
frame not packed, the start timestamp, the last packed frame's timestamp (None if none was) and the new size.
"""
from __future__ import annotations

import math
import struct

import can

# base object header + v1 header + CAN_MESSAGE (python-can's "<4sHHLL", "<LHHQ", "<HBBL8s"): 48 bytes, no padding
OBJECT = struct.Struct("<4sHHLLLHHQHBBL8s")
HEADER_SIZE = 32          # base + v1 header
CAN_MESSAGE = 1           # python-can's blf.CAN_MESSAGE
TIME_ONE_NANS = 2         # python-can's blf.TIME_ONE_NANS
CAN_MSG_EXT, REMOTE_FLAG, DIR = 0x80000000, 0x80, 0x1


def channel_number(channel, own_channel: int, channels: dict) -> int:
    """The BLF channel python-can writes for a frame's ``channel``."""
    if channel is None:
        return own_channel
    if type(channel) is str:
        found = channels.get(channel, channels)
        if found is channels:
            found = channels[channel] = can.util.channel2int(channel)
    else:
        found = channel if type(channel) is int else can.util.channel2int(channel)
    return own_channel if found is None else found + 1


def pack_can_objects(frames, i: int, start_ts, own_channel: int, channels: dict, size: int, limit: int):
    out = []
    last = None
    n = len(frames)
    while i < n:
        msg = frames[i]
        timestamp = msg.timestamp
        if msg.is_error_frame or msg.is_fd or timestamp is None or not math.isfinite(timestamp):
            break
        number = channel_number(msg.channel, own_channel, channels)
        if start_ts is None:
            start_ts = int(timestamp * 1000) / 1000
        last = timestamp
        ns = int((timestamp - start_ts) * 1e9)
        flags = REMOTE_FLAG if msg.is_remote_frame else 0
        if not msg.is_rx:
            flags |= DIR
        out.append(OBJECT.pack(b"LOBJ", HEADER_SIZE, 1, OBJECT.size, CAN_MESSAGE, TIME_ONE_NANS, 0, 0,
                               ns if ns > 0 else 0, number, flags, msg.dlc,
                               msg.arbitration_id | CAN_MSG_EXT if msg.is_extended_id else msg.arbitration_id,
                               bytes(msg.data)))
        size += OBJECT.size
        i += 1
        if size >= limit:
            break
    return b"".join(out), i, start_ts, last, size
