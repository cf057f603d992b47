"""Differential testing: the built-in BMS and an external BMS firmware on the same drive and the same
sensor readings. The built-in one drives the actuators and speaks on the bus; the other (the shadow) gets
the same inputs and received frames, its outputs go to actuators of its own and its frames are read
through its DBC (``FrameView``). The report says where the two differ: contactor timing, fault reactions
and DTCs, published limits and SOC, each against a tolerance.
"""
from __future__ import annotations

import math

from .._layout import CONTACTOR_NAMES
from .slot import BmsActuators, Firmware
from .view import FrameView

__all__ = ["DifferentialBms", "DEFAULT_TOLERANCES"]

DEFAULT_TOLERANCES = {"contactor_s": 0.5, "soc": 0.05, "limit_A": 100.0, "fault_s": 1.0}
_READY = (3, 4)   # BmsState READY, CHARGING


class DifferentialBms:
    """Puts ``shadow`` beside the built-in BMS of ``emulator`` (call before the first tick)."""

    def __init__(self, emulator, shadow: Firmware, view: FrameView | None = None, tolerances: dict | None = None,
                 sample_period_s: float = 0.1):
        if emulator.bms is None:
            raise ValueError("a differential run needs the built-in BMS in the slot")
        self.emulator, self.shadow, self.view = emulator, shadow, view
        self.tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
        shadow.open(emulator.layout, emulator.dt_ns)
        self.actuators = BmsActuators(emulator.layout.n_cells)
        self.events: dict[str, list] = {"builtin": [], "external": []}   # (t_s, contactor, closed)
        self._last = {"builtin": [0, 0, 0], "external": [0, 0, 0]}
        self.samples: list[tuple] = []   # t, builtin soc/limits/ready, external soc/limits/ready
        self.fault_s: dict[str, float | None] = {"builtin": None, "external": None}
        self.fault_name = {"builtin": "", "external": ""}
        self._every = max(1, int(round(sample_period_s / emulator.dt_s)))
        self._k = 0
        self._builtin_step = emulator._step_firmware
        emulator._step_firmware = self.step
        emulator.shadow = self

    def receive(self, frame, t_ns: int) -> None:
        self.shadow.receive(frame, t_ns)

    def step(self, t_ns: int, dt_ns: int, inputs, actuators) -> None:
        self._builtin_step(t_ns, dt_ns, inputs, actuators)
        self.shadow.step(t_ns, dt_ns, inputs, self.actuators)
        frames = self.shadow.transmit()
        if self.view is not None:
            for frame in frames:
                self.view.receive(frame)
        t_s = t_ns / 1e9
        for side, command in (("builtin", actuators.contactor_command), ("external", self.actuators.contactor_command)):
            last = self._last[side]
            for k in range(3):
                if command[k] != last[k]:
                    last[k] = int(command[k])
                    self.events[side].append((t_s, CONTACTOR_NAMES[k], bool(command[k])))
        bms = self.emulator.bms
        if self.fault_s["builtin"] is None and int(bms.state) == 5:
            self.fault_s["builtin"] = t_s
            self.fault_name["builtin"] = ", ".join(d.name for d in bms.dtcs if d.active) or "FAULT"
        view = self.view
        if view is not None and self.fault_s["external"] is None and str(view.values["fault"]) not in (
                "NONE", "0", "nan", "0.0"):
            self.fault_s["external"] = t_s
            self.fault_name["external"] = str(view.values["fault"])
        self._k += 1
        if self._k % self._every == 0:
            lim = bms.limits
            ext = (view.number("soc_pct") / 100.0, view.number("discharge_limit_A"), view.number("charge_limit_A"),
                   view.is_ready) if view is not None else (math.nan, math.nan, math.nan, False)
            self.samples.append((t_s, bms.soc, lim.discharge_current_A, lim.charge_current_A,
                                 int(bms.state) in _READY, *ext))

    def close(self) -> None:
        self.shadow.close()

    # --- the report ------------------------------------------------------------------------------------
    def report(self) -> dict:
        tol = self.tolerances
        sections = {"contactors": self._contactors(tol["contactor_s"]), "faults": self._faults(tol["fault_s"]),
                    "limits": self._limits(tol["limit_A"]), "soc": self._soc(tol["soc"])}
        return {"firmware": self.shadow.info.as_dict(), "tolerances": tol, **sections,
                "passed": all(s["passed"] for s in sections.values())}

    def _contactors(self, tolerance_s: float) -> dict:
        rows, worst = [], 0.0
        ext = list(self.events["external"])
        for t_b, name, closed in self.events["builtin"]:
            match = next((e for e in ext if e[1] == name and e[2] == closed), None)
            if match is None:
                rows.append({"contactor": name, "closed": closed, "builtin_s": t_b, "external_s": None,
                             "difference_s": None})
                worst = math.inf
                continue
            ext.remove(match)
            diff = match[0] - t_b
            worst = max(worst, abs(diff))
            rows.append({"contactor": name, "closed": closed, "builtin_s": t_b, "external_s": match[0],
                         "difference_s": diff})
        for t_e, name, closed in ext:
            rows.append({"contactor": name, "closed": closed, "builtin_s": None, "external_s": t_e,
                         "difference_s": None})
            worst = math.inf
        return {"changes": rows, "worst_difference_s": worst, "passed": worst <= tolerance_s}

    def _faults(self, tolerance_s: float) -> dict:
        b, e = self.fault_s["builtin"], self.fault_s["external"]
        if b is None and e is None:
            diff, passed = None, True
        elif b is None or e is None:
            diff, passed = None, False
        else:
            diff = e - b
            passed = abs(diff) <= tolerance_s
        return {"builtin_s": b, "builtin_dtcs": self.fault_name["builtin"], "external_s": e,
                "external_fault": self.fault_name["external"], "difference_s": diff, "passed": passed}

    def _limits(self, tolerance_A: float) -> dict:
        worst = {"discharge_A": 0.0, "charge_A": 0.0}
        at = {"discharge_A": None, "charge_A": None}
        compared = 0
        for t, _, dis_b, ch_b, ready_b, _, dis_e, ch_e, ready_e in self.samples:
            if not (ready_b and ready_e) or math.isnan(dis_e):
                continue
            compared += 1
            for key, d in (("discharge_A", dis_e - dis_b), ("charge_A", ch_e - ch_b)):
                if abs(d) > abs(worst[key]):
                    worst[key], at[key] = d, t
        passed = compared > 0 and all(abs(v) <= tolerance_A for v in worst.values())
        return {"samples_compared": compared, "worst_difference": worst, "worst_at_s": at, "passed": passed}

    def _soc(self, tolerance: float) -> dict:
        worst, at, compared = 0.0, None, 0
        for t, soc_b, _, _, _, soc_e, _, _, _ in self.samples:
            if math.isnan(soc_b) or math.isnan(soc_e):
                continue
            compared += 1
            if abs(soc_e - soc_b) > abs(worst):
                worst, at = soc_e - soc_b, t
        return {"samples_compared": compared, "worst_difference": worst, "worst_at_s": at,
                "passed": compared > 0 and abs(worst) <= tolerance}
