"""What an external BMS firmware says on the bus, read through its own DBC: state, SOC, limits, fault.

``signals`` maps quantities to ``Message.Signal`` of the firmware's DBC: ``state``, ``soc_pct``,
``discharge_limit_A``, ``charge_limit_A``, ``fault``; ``ready``: the state value(s) that mean closed and
ready (a name of the DBC's value table or a number; default "READY").
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import BmsError

__all__ = ["FrameView"]


class FrameView:
    """The latest values of the mapped signals, updated by ``receive(frame)``."""

    QUANTITIES = ("state", "soc_pct", "discharge_limit_A", "charge_limit_A", "fault")

    def __init__(self, dbc: str, signals: dict):
        import cantools

        from ..input_files import parse_error_text, read_input_text
        read_input_text(dbc, what="DBC file")  # a device, a directory or a huge file is refused before cantools
        try:
            db: Any = cantools.database.load_file(dbc)
        except Exception as exc:  # noqa: BLE001 - any parse failure of a user's DBC
            raise BmsError(f"{dbc}: cannot read the firmware's DBC: {parse_error_text(exc)}") from None
        self.db = db
        ready = signals.get("ready", "READY")
        self.ready = {str(r) for r in (ready if isinstance(ready, list) else [ready])}
        self.by_id: dict[int, list[tuple[str, str]]] = {}
        for quantity, ref in signals.items():
            if quantity == "ready":
                continue
            message_name, _, signal = str(ref).partition(".")
            try:
                message = db.get_message_by_name(message_name)
            except KeyError:
                raise BmsError(f"{dbc}: no message {message_name!r} (firmware.signals.{quantity})") from None
            if signal not in [s.name for s in message.signals]:
                raise BmsError(f"{dbc}: message {message_name} has no signal {signal!r} (firmware.signals.{quantity})")
            self.by_id.setdefault(message.frame_id, []).append((quantity, signal))
        self.values: dict[str, object] = dict.fromkeys(self.QUANTITIES, math.nan)
        self.frames = 0

    def receive(self, frame) -> None:
        fields = self.by_id.get(frame.arbitration_id)
        if fields is None:
            return
        try:
            decoded: Any = self.db.decode_message(frame.arbitration_id, bytes(frame.data), decode_choices=True)
        except Exception:  # noqa: BLE001 - a frame that does not decode leaves the last values
            return
        self.frames += 1
        for quantity, signal in fields:
            value = decoded.get(signal, math.nan)
            self.values[quantity] = str(value) if quantity in ("state", "fault") else float(value)

    @property
    def is_ready(self) -> bool:
        return str(self.values["state"]) in self.ready

    def number(self, quantity: str) -> float:
        value = self.values.get(quantity, math.nan)
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.nan
