"""The link between the loop's process and the live view's server process: a Unix SOCK_SEQPACKET socket pair.

Each message is one pickled object in one packet (message boundaries kept by the kernel, no framing). The
loop's end never blocks: a packet that does not fit into the socket's buffer (a server that fell behind)
is dropped and counted, never waited for; one larger than MAX_PACKET_BYTES, which the other end could only
read cut short, is dropped and counted too.
"""
from __future__ import annotations

import pickle
import socket

__all__ = ["Link", "link_pair"]

BUFFER_BYTES = 4 << 20       # ~400 snapshots in flight before the loop's end drops
MAX_PACKET_BYTES = 1 << 20


def link_pair() -> tuple[Link, socket.socket]:
    """The loop's end (non-blocking) and the raw socket to hand to the server process."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
    return Link(a, blocking=False), b


class Link:
    def __init__(self, sock: socket.socket, *, blocking: bool):
        self.sock = sock
        self.blocking = blocking
        sock.setblocking(blocking)
        self.dropped = 0
        self.closed = False

    def send(self, obj) -> bool:
        """Send one message; False (and counted) when the buffer is full or the other end is gone."""
        if self.closed:
            return False
        packet = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        if len(packet) > MAX_PACKET_BYTES:  # the other end would read it cut short: dropped, counted, never sent
            self.dropped += 1
            return False
        try:
            self.sock.send(packet, 0 if self.blocking else socket.MSG_DONTWAIT)
            return True
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
            return False
        except OSError:  # the other end went away
            self.closed = True
            return False

    def receive(self, timeout_s: float | None = None):
        """One message (blocking, up to ``timeout_s``), or None at a timeout; EOFError when the other end closed."""
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(MAX_PACKET_BYTES)
        except TimeoutError:
            return None
        finally:  # a socket left in timeout mode would wait in the loop's non-blocking calls
            self.sock.setblocking(self.blocking)
        if not data:
            self.closed = True
            raise EOFError("the other end of the live link closed")
        return pickle.loads(data)

    def pending(self) -> list:
        """Every message waiting now (non-blocking)."""
        out = []
        while not self.closed:
            try:
                data = self.sock.recv(MAX_PACKET_BYTES, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            out.append(pickle.loads(data))
        return out

    def close(self) -> None:
        self.closed = True
        self.sock.close()
