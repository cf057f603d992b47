"""One telemetry stream from the loop: decimated snapshots of the pack, the BMS and the bus in a bounded ring.

The loop calls ``Telemetry.offer(t_s)`` (cheap when nothing is due) on its own thread; a snapshot is taken
every ``period_s`` of simulated time, and no more often than ``max_rate_hz`` of wall time (a lockstep run
at 100x real time would otherwise copy 1,000 snapshots a second that nobody can look at). Snapshots go into
a ``Ring`` (drop-oldest); events into a second, larger ring so a viewer that polls slowly still sees each
of them. Nothing here waits for a reader or takes a lock: a slow or absent viewer never slows the loop.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .ring import Ring

__all__ = ["Telemetry", "SCALARS"]

# scalar fields of every snapshot (units in the names); the live page and the API use the same names
SCALARS = ("t_s", "wall_s", "realtime_factor", "lag_ms", "soc_true", "soc_estimated", "soc_3sigma", "current_A",
           "current_demand_A", "discharge_limit_A", "charge_limit_A", "pack_voltage_V", "link_voltage_V",
           "temp_core_max_C", "temp_core_est_max_C", "temp_surface_max_C", "cell_voltage_min_V",
           "cell_voltage_max_V", "fault_level", "balancing_groups")

_CONTACTORS = ("main_positive", "main_negative", "precharge")


class Telemetry:
    """Snapshots of one emulator (and its CAN node, if any) into a bounded ring.

    ``period_s``: simulated time between snapshots (the decimation). ``max_rate_hz``: at most this many
    snapshots per wall-clock second (None: no wall-clock limit, so the stream is a function of simulated
    time only, as in tests). ``capacity``: snapshots kept; ``event_capacity``: events kept.
    """

    def __init__(self, emulator, *, node=None, period_s: float = 0.1, max_rate_hz: float | None = 25.0,
                 capacity: int = 600, event_capacity: int = 10_000, clock=time.perf_counter):
        if not (isinstance(period_s, (int, float)) and math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"period_s: expected a time > 0 s, found {period_s!r}")
        if max_rate_hz is not None and not max_rate_hz > 0:
            raise ValueError(f"max_rate_hz: expected a rate > 0 Hz or None, found {max_rate_hz!r}")
        self.emulator, self.node = emulator, node
        self.period_s = float(period_s)
        self.min_wall_interval_s = 0.0 if max_rate_hz is None else 1.0 / max_rate_hz
        self.samples = Ring(capacity)
        self.events = Ring(event_capacity)
        self.offered = 0          # offers that were due in simulated time
        self.skipped_rate = 0     # of those, skipped by the wall-clock rate limit
        self._clock = clock
        self._next_t_s = 0.0
        self._next_wall_s = 0.0
        self._wall_start_s: float | None = None
        self.demand_A = math.nan
        self.sink = None      # called with every sample and event (the link to the server process)
        self.link = None      # that link, for its count of packets dropped when the server fell behind
        self.layout = _layout(emulator.pack.params)

    # --- the loop's side ----------------------------------------------------------------------------
    def offer(self, t_s: float) -> bool:
        """A snapshot at simulated time ``t_s`` if one is due; returns whether one was taken."""
        if t_s < self._next_t_s - 1e-9:
            return False
        self.offered += 1
        # the next one is due a whole period later, on the grid (a late offer does not shift it)
        self._next_t_s = (math.floor(t_s / self.period_s + 1e-6) + 1) * self.period_s
        if self.min_wall_interval_s:
            now = self._clock()
            if now < self._next_wall_s:
                self.skipped_rate += 1
                return False
            self._next_wall_s = now + self.min_wall_interval_s
        if self._wall_start_s is None:  # wall time counts from the first snapshot, set equal to its t_s
            self._wall_start_s = self._clock() - t_s
        sample = self.snapshot(t_s)
        self.samples.push(sample)
        if self.sink is not None:
            self.sink(("s", sample, self.stats()))
        return True

    def event(self, t_s: float, name: str, detail: str = "") -> None:
        """An event (the BMS's, the bus's, a bench injection) for the viewers' timeline."""
        event = {"t_s": float(t_s), "name": name, "detail": detail}
        self.events.push(event)
        if self.sink is not None:
            self.sink(("e", event))

    def snapshot(self, t_s: float) -> dict:
        e = self.emulator
        pack, sensors, est, bms = e.pack, e.sensors, e.estimator, e.bms
        s = pack.state
        if self._wall_start_s is None:
            self._wall_start_s = self._clock() - t_s
        wall_s = self._clock() - self._wall_start_s
        out = {"t_s": float(t_s), "wall_s": wall_s,
               "realtime_factor": t_s / wall_s if wall_s > 0 else math.nan,
               "lag_ms": (wall_s - t_s) * 1e3,
               "soc_true": float(pack.soc),
               "soc_estimated": float(est.pack_soc) if est is not None else math.nan,
               "soc_3sigma": float(np.mean(est.group_soc_3sigma)) if est is not None else math.nan,
               "current_A": float(pack.current_A), "current_demand_A": float(self.demand_A),
               "pack_voltage_V": float(pack.pack_voltage_V), "link_voltage_V": float(pack.link_voltage_V),
               "temp_core_max_C": float(s.temp_core_C.max()), "temp_surface_max_C": float(s.temp_surface_C.max()),
               "temp_core_est_max_C": float(np.max(est.core_temp_C)) if est is not None else math.nan,
               "cell_voltage_min_V": float(s.group_voltage_V.min()),
               "cell_voltage_max_V": float(s.group_voltage_V.max()),
               "balancing_groups": int(np.count_nonzero(s.balancing)),
               # per group / per cell / per sensor: truth and what the BMS measures
               "group_voltage_V": s.group_voltage_V.copy(), "cell_voltage_measured_V": sensors.cell_voltage_V.copy(),
               "balancing": s.balancing.copy(), "temp_core_C": s.temp_core_C.copy(),
               "temp_surface_C": s.temp_surface_C.copy(), "temperature_measured_C": sensors.temperature_C.copy(),
               "contactors_closed": {n: bool(c) for n, c in zip(_CONTACTORS, s.contactor_closed)},
               "contactors_welded": {n: bool(c) for n, c in zip(_CONTACTORS, s.contactor_welded)},
               "sensor_faults": [{"sensor": k, "index": i, "mode": m} for k, i, m in sensors.faults()]}
        if bms is not None:
            limits = bms.limits
            out.update(state=bms.state.name, discharge_limit_A=float(limits.discharge_current_A),
                       charge_limit_A=float(limits.charge_current_A),
                       fault_level=max((int(d.level) for d in bms.dtcs if d.status != "cleared"), default=0),
                       latched=bool(getattr(bms, "latched", False)))
        else:
            out.update(state="EXTERNAL", discharge_limit_A=math.nan, charge_limit_A=math.nan, fault_level=0,
                       latched=False)
        out["dtcs"] = self._dtcs()
        out["can"] = self._can()
        return out

    def _dtcs(self) -> list[dict]:
        """The fault memory: the UDS server's (ISO 14229 status bits decoded) where there is one, else the
        BMS's own DTC list."""
        diag = getattr(self.node, "diag", None)
        if diag is not None:
            from bms.diag.dtc import STATUS_BITS, dtc_display
            memory = diag.memory
            rows = []
            for r in memory.stored():
                d = memory.by_code.get(r.code)
                rows.append({"dtc": dtc_display(r.code), "name": d.protection.name if d else hex(r.code),
                             "status": f"0x{r.status:02X}",
                             "bits": [n for n, b in STATUS_BITS.items() if r.status & b],
                             "level": int(r.level), "occurrences": r.occurrences,
                             "first_s": r.first_s, "last_s": r.last_s})
            return rows
        bms = self.emulator.bms
        if bms is None:
            return []
        return [{"dtc": f"0x{d.code:04X}", "name": d.name, "status": d.status, "bits": [d.status],
                 "level": int(d.level), "occurrences": d.count, "first_s": d.first_s, "last_s": d.last_s}
                for d in bms.dtcs]

    def _can(self) -> dict:
        node = self.node
        if node is None:
            return {}
        out = dict(node.counters)
        tick = node.tick_stats
        out.update(overruns=node.overruns, skipped_ticks=node.skipped_ticks,
                   max_lateness_ms=node.max_lateness_ns / 1e6, tick_max_deviation_ms=tick.max_abs_dev_ns / 1e6,
                   comm_fault=bool(node.comm_fault_active),
                   log_dropped_frames=node.log.dropped_frames if node.log is not None else 0)
        return out

    # --- the viewers' side ----------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"snapshots": self.samples.pushed, "kept": len(self.samples), "dropped": self.samples.overwritten,
                "skipped_rate_limit": self.skipped_rate, "events": self.events.pushed,
                "period_s": self.period_s, "capacity": self.samples.capacity,
                "link_dropped": self.link.dropped if self.link is not None else 0}


def _layout(params) -> dict:
    """The pack's physical arrangement: modules x series groups per module x cells in parallel."""
    return {"n_modules": params.n_modules, "groups_per_module": params.groups_per_module,
            "n_parallel": params.n_parallel, "n_series": params.n_series,
            "temperature_sensors_per_module": params.sensors.temperature_sensors_per_module}


def jsonable(sample: dict) -> dict:
    """A snapshot with its arrays as lists and non-finite numbers as None (valid JSON)."""
    def conv(v):
        if isinstance(v, np.ndarray):
            return [None if not math.isfinite(x) else x for x in v.tolist()] if v.dtype.kind == "f" else v.tolist()
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return {k: conv(v) for k, v in sample.items()}
