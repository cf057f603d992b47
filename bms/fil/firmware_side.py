"""The firmware side of the process transport in Python: serve a ``bms.fil.Firmware`` to the emulator.

A firmware written in Python runs in its own process (``kind = "process"``, ``path = "python3 my_fw.py"``)::

    from bms.fil.firmware_side import serve
    serve(lambda layout, config: MyFirmware(config))   # MyFirmware: receive / step / transmit

``layout`` is the slot's ``SlotLayout``. The BMS role's outputs arrive as ``BmsActuators`` (uint8 arrays) as
in the emulator's own process; the VCU role's as a float64 array.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import re
import sys
from typing import Any

import numpy as np

from .contract import ABI_VERSION, Role, SlotLayout
from .slot import BmsActuators, FirmwareError

__all__ = ["serve", "Shm", "FrameStruct"]

SHM_MAGIC = 0x4C494642
CMD_CREATE, CMD_STEP, CMD_RESET, CMD_SAVE, CMD_RESTORE, CMD_QUIT = range(1, 7)
FRAME_EXTENDED, FRAME_FD = 0x1, 0x2


class Setup(ctypes.Structure):
    _fields_ = [("abi_version", ctypes.c_uint32), ("role", ctypes.c_uint32), ("n_cells", ctypes.c_uint32),
                ("n_temperatures", ctypes.c_uint32), ("n_inputs", ctypes.c_uint32), ("n_outputs", ctypes.c_uint32),
                ("max_frames", ctypes.c_uint32), ("reserved", ctypes.c_uint32), ("dt_ns", ctypes.c_int64),
                ("config", ctypes.c_void_p)]


class Shm(ctypes.Structure):
    """``bms_fil_shm`` of bms_fil.h."""
    _fields_ = [("magic", ctypes.c_uint32), ("abi_version", ctypes.c_uint32), ("sequence", ctypes.c_uint64),
                ("reply_sequence", ctypes.c_uint64), ("setup", Setup), ("t_ns", ctypes.c_int64),
                ("dt_ns", ctypes.c_int64), ("rx_count", ctypes.c_uint32), ("tx_count", ctypes.c_uint32),
                ("state_size", ctypes.c_uint64), ("state_used", ctypes.c_uint64), ("total_size", ctypes.c_uint64),
                ("config_offset", ctypes.c_uint64), ("inputs_offset", ctypes.c_uint64),
                ("outputs_offset", ctypes.c_uint64), ("rx_offset", ctypes.c_uint64), ("tx_offset", ctypes.c_uint64),
                ("state_offset", ctypes.c_uint64), ("state_capacity", ctypes.c_uint64), ("name", ctypes.c_char * 64),
                ("version", ctypes.c_char * 64), ("error", ctypes.c_char * 512)]


class FrameStruct(ctypes.Structure):
    """``bms_fil_frame`` of bms_fil.h."""
    _fields_ = [("t_ns", ctypes.c_int64), ("id", ctypes.c_uint32), ("len", ctypes.c_uint8),
                ("flags", ctypes.c_uint8), ("reserved", ctypes.c_uint8 * 2), ("data", ctypes.c_uint8 * 64)]


def _read_byte(fd: int) -> int | None:
    while True:
        try:
            data = os.read(fd, 1)
        except InterruptedError:
            continue
        return data[0] if data else None


def serve(factory, *, fds: tuple[int, ...] | None = None) -> int:
    """Answer the emulator's commands until it says quit (or goes away); returns the exit status.

    ``factory(layout, config)`` builds the firmware at CREATE; its ``name``/``version`` go to the report."""
    import can

    if fds is None:
        try:
            fds = tuple(int(os.environ[k]) for k in ("BMS_FIL_SHM_FD", "BMS_FIL_CMD_FD", "BMS_FIL_REPLY_FD"))
        except KeyError as exc:
            print(f"bms.fil.firmware_side: {exc.args[0]} is not set: start this program from the emulator "
                  "(kind = \"process\")", file=sys.stderr)
            return 2
    shm_fd, cmd_fd, reply_fd = fds
    size = os.fstat(shm_fd).st_size
    block = mmap.mmap(shm_fd, size)
    shm = Shm.from_buffer(block)
    firmware: Any = None
    inputs: Any = None
    outputs: Any = None
    out_view: Any = None
    rx: Any = None
    tx: Any = None
    while True:
        command = _read_byte(cmd_fd)
        if command is None:
            break
        code = 0
        shm.error = b""
        try:
            if command == CMD_CREATE:
                if shm.magic != SHM_MAGIC or shm.abi_version != ABI_VERSION:
                    shm.error = f"ABI version mismatch: host {shm.abi_version}, firmware {ABI_VERSION}".encode()
                    shm.abi_version = ABI_VERSION
                    code = 5
                else:
                    st = shm.setup
                    role = Role(st.role)
                    layout = SlotLayout(role, st.n_cells, st.n_temperatures, st.max_frames)
                    config = bytes(block[shm.config_offset:shm.config_offset + 65536]).split(b"\0", 1)[0].decode()
                    firmware = factory(layout, config)
                    if hasattr(firmware, "open"):
                        firmware.open(layout, st.dt_ns)
                    inputs = np.frombuffer(block, np.float64, st.n_inputs, shm.inputs_offset)
                    out_view = np.frombuffer(block, np.float64, st.n_outputs, shm.outputs_offset)
                    outputs = BmsActuators(st.n_cells) if role == Role.BMS else np.zeros(st.n_outputs)
                    rx = (FrameStruct * st.max_frames).from_buffer(block, shm.rx_offset)
                    tx = (FrameStruct * st.max_frames).from_buffer(block, shm.tx_offset)
                    shm.name = str(getattr(firmware, "name", "python firmware")).encode()[:63]
                    shm.version = str(getattr(firmware, "version", "")).encode()[:63]
                    shm.state_size = 0
            elif firmware is None:
                shm.error, code = b"no instance: create first", 1
            elif command == CMD_STEP:
                for k in range(shm.rx_count):
                    f = rx[k]
                    firmware.receive(can.Message(arbitration_id=f.id, data=bytes(f.data[:f.len]),
                                                 is_extended_id=bool(f.flags & FRAME_EXTENDED),
                                                 is_fd=bool(f.flags & FRAME_FD), timestamp=f.t_ns / 1e9,
                                                 check=False), f.t_ns)
                firmware.step(shm.t_ns, shm.dt_ns, inputs, outputs)
                if isinstance(outputs, BmsActuators):
                    out_view[:3] = outputs.contactor_command
                    out_view[3:] = outputs.balancing
                else:
                    out_view[:] = outputs
                frames = firmware.transmit()
                n = min(len(frames), shm.setup.max_frames)
                for k in range(n):
                    msg, f = frames[k], tx[k]
                    data = bytes(msg.data)
                    f.id, f.len = msg.arbitration_id, len(data)
                    f.flags = (FRAME_EXTENDED if msg.is_extended_id else 0) | (FRAME_FD if msg.is_fd else 0)
                    ctypes.memmove(f.data, data, len(data))
                shm.tx_count = n
            elif command == CMD_RESET:
                firmware.reset()
            elif command == CMD_SAVE:
                state = firmware.save_state()
                if len(state) > shm.state_capacity:
                    shm.error, code = b"state larger than the state area", 4
                else:
                    block[shm.state_offset:shm.state_offset + len(state)] = state
                    shm.state_used = len(state)
            elif command == CMD_RESTORE:
                firmware.restore_state(bytes(block[shm.state_offset:shm.state_offset + shm.state_used]))
            elif command == CMD_QUIT:
                if hasattr(firmware, "close"):
                    firmware.close()
                firmware = None
        except Exception as exc:  # noqa: BLE001 - every failure is the host's to report, with its message
            code = 1
            if isinstance(exc, FirmwareError):   # a served library's own failure: the host names firmware and time
                returned = re.match(r"\w+ returned (\d+): (.*)", exc.cause, flags=re.S)
                code, text = (min(max(int(returned.group(1)), 1), 255), returned.group(2)) if returned \
                    else (1, exc.cause)
            else:
                text = f"{type(exc).__name__}: {exc}"
            shm.error = text.encode()[:511]
        shm.reply_sequence = shm.sequence
        os.write(reply_fd, bytes((code,)))
        if command == CMD_QUIT:
            break
    del shm, rx, tx, inputs, out_view
    return 0
