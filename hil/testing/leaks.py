"""What a test may leave behind: benches, python-can virtual channels, threads, child processes, open firmware.

``Resources.now()`` takes a snapshot; ``left_since(before)`` names what is open now that was not before. The ready
benches ``hil.testing.pool`` keeps between examples (and their channels and firmware) are the kit's, not a test's:
they are left out, and the plugin closes them when the session ends. Any other bench, bus, thread, process or
firmware a test leaves open is still a leak.
"""
from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Resources"]


def _children() -> set[int]:
    """Live (not zombie) child processes of this process, from /proc (empty where there is none)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        try:
            pids.update(int(p) for p in task.read_text().split())
        except OSError:
            continue
    live = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            live.add(pid)
    return live


def _open_firmware() -> dict[int, str]:
    """Firmware instances still holding a library instance or a live process (id -> description)."""
    from bms.fil.library import LibraryFirmware
    from bms.fil.process import ProcessFirmware
    out = {}
    for obj in gc.get_objects():
        if isinstance(obj, LibraryFirmware) and getattr(obj, "_lib", None) is not None:
            out[id(obj)] = f"library firmware {obj.path}"
        elif isinstance(obj, ProcessFirmware):
            proc = getattr(obj, "_proc", None)
            if proc is not None and proc.poll() is None:
                out[id(obj)] = f"process firmware {obj.path} (pid {proc.pid})"
    return out


@dataclass
class Resources:
    benches: set
    channels: set
    threads: set
    children: set
    firmware: dict

    @classmethod
    def now(cls, *, firmware: bool = True) -> Resources:
        from can.interfaces import virtual

        from .bench import open_benches
        from .pool import kept
        pool = kept()   # the ready benches the kit keeps between examples: its own, closed at the session's end
        kept_ids = {id(b) for b in pool}
        kept_channels = {b.channel for b in pool}
        kept_firmware = {id(f) for b in pool for f in b._fw._opened}
        kept_procs = (getattr(f, "_proc", None) for b in pool for f in b._fw._opened)
        kept_pids = {proc.pid for proc in kept_procs if proc is not None}
        with virtual.channels_lock:
            channels = {name for name, queues in virtual.channels.items() if queues and name not in kept_channels}
        gc.collect()
        fw = {k: d for k, d in _open_firmware().items() if k not in kept_firmware} if firmware else {}
        return cls({id(b) for b in open_benches() if id(b) not in kept_ids}, channels,
                   {t for t in threading.enumerate() if t.is_alive()}, _children() - kept_pids, fw)

    def left_since(self, before: Resources, *, settle_s: float = 1.0) -> list[str]:
        """What is open now and was not in ``before``; threads and processes get ``settle_s`` of wall-clock time
        to end (a writer thread finishing its last flush), the only wall-clock wait of the kit."""
        deadline = time.monotonic() + settle_s
        now = self
        while True:
            threads = [t for t in now.threads - before.threads if t.is_alive()]
            children = now.children - before.children
            if not (threads or children) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
            now = Resources.now(firmware=False)
            now.firmware, now.benches, now.channels = self.firmware, self.benches, self.channels
        from .bench import open_benches
        out = [f"bench {b.channel} not closed" for b in open_benches() if id(b) in self.benches - before.benches]
        out += [f"python-can virtual channel {c!r} still has an open bus"
                for c in sorted(self.channels - before.channels)]
        out += [f"thread {t.name!r} still running" for t in threads]
        out += [f"child process {pid} still running" for pid in sorted(children)]
        out += [f"{d} not closed" for k, d in self.firmware.items() if k not in before.firmware]
        return out
