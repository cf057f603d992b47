"""Precharge and close a bare pack model without a BMS (benchmarks and physics studies use it)."""
from __future__ import annotations

from bms import Pack

__all__ = ["precharge_and_close"]


def precharge_and_close(pack: Pack, dt_s: float = 0.01, fraction: float = 0.95, timeout_s: float = 2.0,
                        coolant_C: float = 25.0) -> float:
    """Close main− and precharge, wait for the link to reach ``fraction`` of the pack, close main+.

    Returns the precharge time in seconds.
    """
    pack.command_contactors(main_negative=True, precharge=True)
    t = 0.0
    while True:
        pack.step(dt_s, 0.0, coolant_C)
        t += dt_s
        if pack.link_voltage_V >= fraction * pack.pack_voltage_V:
            break
        if t > timeout_s:
            raise RuntimeError(f"precharge did not reach {fraction:.0%} within {timeout_s} s")
    pack.command_contactors(main_positive=True)
    pack.step(dt_s, 0.0, coolant_C)
    pack.command_contactors(precharge=False)
    return t
