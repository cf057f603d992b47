"""Process transport: the firmware runs in its own process (any language), stepped at a virtual-time
barrier over a shared-memory block with a one-byte handshake on two pipes (see ``bms_fil.h``).

Every wait is bounded by a wall-clock deadline: a firmware that crashes, hangs or answers garbage stops
the run with ``FirmwareCrash``/``FirmwareTimeout``/``FirmwareError`` (simulated time and last frames), it
never hangs it. The firmware side ships as ``bms_fil_process.c`` (C) and ``bms.fil.firmware_side`` (Python).
"""
from __future__ import annotations

import mmap
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .contract import Role, SlotLayout
from .library import _transport
from .slot import Firmware, FirmwareError

__all__ = ["ProcessFirmware", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 5.0
STATE_CAPACITY = 1 << 20


def _shared_block(size: int) -> int:
    """A file descriptor of ``size`` bytes of shared memory (memfd where there is one)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("bms-fil", 0)
    else:  # pragma: no cover - other POSIX systems
        handle, name = tempfile.mkstemp(prefix="bms-fil-")
        os.unlink(name)
        fd = handle
    os.ftruncate(fd, size)
    return fd


class ProcessFirmware(Firmware):
    """A firmware program (``command``: a path or an argument list) stepped in its own process.

    ``timeout_s``: wall-clock deadline of every answer (create gets 10x). ``library``: instead of a program,
    a firmware library served by ``python -m bms.fil.serve_library`` (for a library that keeps globals)."""

    kind = "process"

    def __init__(self, command, role: Role | str = Role.BMS, *, config: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_frames: int = 256, cwd: str | Path | None = None, env: dict | None = None,
                 state_capacity: int = STATE_CAPACITY):
        self.command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if not self.command:
            raise FirmwareError("process", "no command given")
        self.path = self.command[0]
        self.name = Path(self.path).name
        self.role = Role.parse(role)
        self.config = str(config)
        self.timeout_s = float(timeout_s)
        self.max_frames = int(max_frames)
        self.cwd, self.extra_env, self.state_capacity = cwd, env or {}, int(state_capacity)
        self._proc: subprocess.Popen | None = None
        self._channel = None
        self._fds: list[int] = []
        self._mm: mmap.mmap | None = None

    @classmethod
    def for_library(cls, path: str | Path, role: Role | str = Role.BMS, **kwargs) -> ProcessFirmware:
        # -P: the child imports the installed package, never a source tree in its working directory
        fw = cls([sys.executable, "-P", "-m", "bms.fil.serve_library", str(Path(path).resolve())], role, **kwargs)
        fw.path, fw.name = str(Path(path).resolve()), Path(path).name
        return fw

    def open(self, layout: SlotLayout, dt_ns: int) -> None:
        if layout.role != self.role:
            raise FirmwareError(self.name, f"built for the {self.role.name} role, put into the {layout.role.name} slot")
        self.layout = layout
        fil = _transport()
        config = self.config.encode()
        offsets, total, _, _ = fil.Channel.layout(int(self.role), layout.n_cells, layout.n_temperatures,
                                                  self.max_frames, len(config), self.state_capacity)
        shm_fd = _shared_block(total)
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        self._fds = [shm_fd, cmd_w, reply_r]
        self._mm = mmap.mmap(shm_fd, total)
        env = {**os.environ, **self.extra_env, "BMS_FIL_SHM_FD": str(shm_fd), "BMS_FIL_CMD_FD": str(cmd_r),
               "BMS_FIL_REPLY_FD": str(reply_w)}
        channel = fil.Channel(self._mm, cmd_w, reply_r, int(self.role), layout.n_cells, layout.n_temperatures,
                              int(dt_ns), self.max_frames, int(self.timeout_s * 10_000), self.name)
        channel.write_setup(offsets, total, config, int(dt_ns), self.state_capacity)
        try:
            self._proc = subprocess.Popen(self.command, pass_fds=(shm_fd, cmd_r, reply_w), env=env, cwd=self.cwd,
                                          stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.close()
            raise FirmwareError(self.name, f"cannot start {self.command[0]!r}: {exc}") from exc
        finally:
            os.close(cmd_r)
            os.close(reply_w)
        channel.exit_status = self._exit_status
        self._channel = channel
        try:
            channel.create()  # the first answer may take a while (an interpreter starting): 10x the deadline
        except BaseException:
            self.close()
            raise
        channel.timeout_ms = int(self.timeout_s * 1000)
        self.name, self.version = channel.name, channel.version
        vars(self).update(step=channel.step, receive=channel.receive, transmit=channel.transmit, reset=channel.reset,
                          save_state=channel.save_state, restore_state=channel.restore_state)

    def _exit_status(self) -> str:
        proc = self._proc
        if proc is None:
            return ""
        try:
            code = proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "its reply pipe closed but it still runs"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def last_frames(self) -> list:
        return self._channel.last_frames() if self._channel is not None else []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        """Ask the process to quit (bounded), kill it if it does not, release the block and the pipes."""
        proc, channel = self._proc, self._channel
        self._channel = None
        if proc is not None and proc.poll() is None:
            if channel is not None:
                channel.timeout_ms = min(channel.timeout_ms, 1000)
                channel.quit()
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif proc is not None:
            proc.wait()
        if channel is not None:
            channel.detach()
        self._proc = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # the compiled channel still holds a view: the map goes with it
                pass
            self._mm = None
