"""A bounded ring of samples with one writer (the loop) and any number of readers (viewers), lock-free.

The writer never waits: it overwrites the oldest slot. Each reader keeps its own cursor (a sequence
number) and is told how many samples it missed because they were overwritten before it read them.
Under the GIL a list item assignment and an int rebinding are atomic; a slot holds ``(seq, item)`` so a
reader that races the writer sees either the old or the new sample of a slot, and tells them apart.
"""
from __future__ import annotations

__all__ = ["Ring"]


class Ring:
    """Holds the last ``capacity`` items pushed; ``since(cursor)`` returns what a reader has not seen."""

    def __init__(self, capacity: int):
        if not (isinstance(capacity, int) and capacity >= 1):
            raise ValueError(f"capacity: expected an integer >= 1, found {capacity!r}")
        self.capacity = capacity
        self._slots: list = [None] * capacity
        self._next = 0      # sequence number of the next item pushed = items ever pushed

    @property
    def pushed(self) -> int:
        return self._next

    @property
    def overwritten(self) -> int:
        """Items dropped (oldest first) to stay within capacity."""
        return max(0, self._next - self.capacity)

    def __len__(self) -> int:
        return min(self._next, self.capacity)

    def push(self, item) -> int:
        """Store ``item`` (writer only); returns its sequence number."""
        seq = self._next
        self._slots[seq % self.capacity] = (seq, item)
        self._next = seq + 1
        return seq

    def latest(self):
        """The newest item, or None."""
        end = self._next
        if end == 0:
            return None
        entry = self._slots[(end - 1) % self.capacity]
        return entry[1] if entry is not None else None

    def since(self, cursor: int, limit: int | None = None) -> tuple[list, int, int]:
        """Items with sequence numbers >= ``cursor``: ``(items, next_cursor, missed)``.

        ``limit`` keeps only the newest ``limit`` of them (the older ones count as missed): a viewer that
        fell behind catches up with the present, not with the past."""
        end = self._next
        start = max(cursor, end - self.capacity, 0)
        if limit is not None:
            start = max(start, end - limit)
        missed = max(0, start - cursor)
        out = []
        slots, capacity = self._slots, self.capacity
        for seq in range(start, end):
            entry = slots[seq % capacity]
            if entry is None or entry[0] != seq:  # overwritten while we read
                missed += 1
                continue
            out.append(entry[1])
        return out, end, missed
