"""The base of the parts ``Bms`` is made of: they share one object's state, declared here."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..faults import Dtc, Event
from .types import BmsState, Limits, StateRequest

__all__ = ["BmsPart"]


class BmsPart:
    """A part of ``Bms`` (limits, charging, balancing, contactors, fault memory): a job of its own, working on
    the state ``Bms.__init__`` sets up. The state the parts share:"""

    state: BmsState
    latched: bool
    limits: Limits
    dtcs: list[Dtc]
    dtc_history: list[Dtc]
    events: list[Event]
    events_dropped: int
    balancing_groups: int
    charge_complete: bool
    charge_request_A: float
    charge_request_V: float
    precharge_attempts: int
    _mode: StateRequest
    _refused: str | None
    _seq: dict[str, Any] | None          # precharge sequence: phase, t_phase, target, link0
    _opening: dict[str, Any] | None      # open sequence: phase, t0, t_phase, target, reason
    _init_t0: float | None
    _quiet_since: float | None
    _charge_end_since: float | None
    _charger: dict[str, Any]
    _task: Any                           # the 100 ms task's kernel (bms_tick.SlowTask): limits, SOC fallback

    if TYPE_CHECKING:  # the other parts' methods and the set-up of Bms.__init__, for the type checker
        def __getattr__(self, name: str) -> Any: ...
