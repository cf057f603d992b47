"""Whether a DBC given in place of the shipped one holds what the emulated BMS node sends and reads.

A bench may move IDs, layouts and cycle times (its VCU expects the BMS status at 0x500), but the node fills
and reads messages by name: a message or signal it needs that the DBC lacks would be a frame never sent
or a command never heard, found only on the bench. So the check runs before the bus is opened, and names
every gap at once, with the line of each message it finds wanting.
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from .codec import DbcError, load_dbc

__all__ = ["check_node_dbc", "OPTIONAL_RX"]

# received messages the node does without: no charger on the bench; the load from --load-current
OPTIONAL_RX = frozenset({"CHG_Status", "HIL_Load"})


@cache
def _reference(node: str) -> tuple:
    """(name, "tx"/"rx", plain signal names or None for a multiplexed message) of the shipped DBC."""
    out = []
    for message in load_dbc().messages:
        receivers = {r for s in message.signals for r in s.receivers}
        direction = "tx" if node in message.senders else "rx" if node in receivers else None
        if direction is None:
            continue
        multiplexed = any(s.is_multiplexer for s in message.signals)
        out.append((message.name, direction, None if multiplexed else frozenset(s.name for s in message.signals)))
    return tuple(out)


def _message_lines(path: str) -> dict[str, int]:
    """Line of each ``BO_`` of the DBC file (empty when it cannot be read again)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    pattern = re.compile(r"^BO_\s+\d+\s+(\w+)\s*:", re.MULTILINE)
    return {m.group(1): text.count("\n", 0, m.start()) + 1 for m in pattern.finditer(text)}


def check_node_dbc(codec, node: str = "BMS") -> None:
    """Raise ``DbcError`` naming every message and signal the node needs that ``codec``'s DBC lacks: each
    message the shipped DBC has the node send (sent by ``node``, with every signal), ``VCU_Command``
    received by it (with every signal), ``CHG_Status`` and ``HIL_Load`` with every signal where present;
    and each signal of a sent message that the node has no value for."""
    problems: list[str] = []
    lines: dict[str, int] | None = None

    def at(name: str) -> str:
        nonlocal lines
        if lines is None:
            lines = _message_lines(codec.path)
        return f"line {lines[name]}: " if name in lines else ""

    for name, direction, signals in _reference(node):
        message = codec.messages.get(name)
        role = "sent by" if direction == "tx" else "received by"
        if message is None:
            if direction == "rx" and name in OPTIONAL_RX:
                continue
            problems.append(f"no message {name} (the BMS's {'cyclic message' if direction == 'tx' else 'command'})")
            continue
        if direction == "tx" and node not in message.senders:
            problems.append(f"{at(name)}{name}: expected to be sent by node {node}, found senders "
                            f"{list(message.senders) or 'none'}")
        if direction == "rx" and node not in message.receivers:
            problems.append(f"{at(name)}{name}: expected {node} among the receivers of its signals, found "
                            f"{list(message.receivers) or 'none'}")
        if signals is None:
            if message.multiplexer is None:
                problems.append(f"{at(name)}{name}: expected a multiplexed message (one page per frame)")
            continue
        present = set(message.signals)
        missing = sorted(signals - present)
        if missing:
            problems.append(f"{at(name)}{name} ({role} {node}) lacks signal{'s' * (len(missing) > 1)} "
                            f"{', '.join(missing)}")
        unknown = sorted(present - signals) if direction == "tx" else []
        if unknown:
            problems.append(f"{at(name)}{name}: signal{'s' * (len(unknown) > 1)} {', '.join(unknown)} that the "
                            f"{node} has no value for")
    if problems:
        raise DbcError(f"{codec.path}: not a DBC for the emulated {node}: " + "; ".join(problems))
