"""ECUReset as a power cycle: the BMS firmware restarts from its initial state while the pack goes on.

What a real BMS loses at a power cycle: its state machine (back to INIT, contactors dropped open, balancing
off, latches released until the faults are seen again), its RAM. What it keeps, in non-volatile memory: the
fault memory, and the SOC and SOH (the estimator keeps running: a production BMS stores them at shutdown and
restores them at start-up). The event log goes on too, so a scenario's recording has the reset in it.
"""
from __future__ import annotations

from ..faults import Event

__all__ = ["restart_bms"]


def restart_bms(emulator, t_s: float, reason: str = "ECU reset") -> None:
    bms, pack = emulator.bms, emulator.pack
    pack.command_contactors(main_positive=False, main_negative=False, precharge=False)  # coils lose power
    pack.state.balancing[:] = 0
    old_state = bms.state.name
    keep = {"events": bms.events, "events_dropped": bms.events_dropped, "dtcs": bms.dtcs,
            "dtc_history": bms.dtc_history}
    # the firmware starts again: the same object (the CAN node and its publisher hold it), its initial state
    bms.__init__(bms.params, bms.sensors, pack, config=bms.config, estimator=bms.estimator, kernels=bms.kernels)
    for name, value in keep.items():
        setattr(bms, name, value)
    bms.events.append(Event(t_s, "state", {"from": old_state, "to": "INIT", "reason": reason}))
