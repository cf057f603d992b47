"""Contactor sequences of the built-in BMS: precharge (with the weld test and retries) and the controlled open."""
from __future__ import annotations

from .. import _protection as L
from .._layout import CONTACTOR_NAMES
from ..faults import FaultLevel, Protection
from .part import BmsPart
from .types import BmsState

__all__ = ["ContactorSequences"]


class ContactorSequences(BmsPart):
    """The contactor part of ``Bms``: it writes the contactor commands (its outputs) and logs each change."""

    def _leave_to(self, t: float, target: BmsState, reason: str) -> None:
        """Controlled open (if anything is closed), then ``target``; FAULT is entered at once."""
        self._seq = None
        if target == BmsState.FAULT:
            self._goto(t, BmsState.FAULT, reason)
        if self.contactors_open:
            self._opening = None
            self._goto(t, target, reason)
            return
        if self._opening is None or target == BmsState.FAULT:
            self._opening = {"target": target, "reason": reason, "t0": t, "phase": "wait", "t_phase": t}
        self._publish_limits()

    def _command_contactors(self, t: float, reason: str, **commands) -> None:
        current = float(self._reading[self._i_current])
        for name, closed in commands.items():
            index = CONTACTOR_NAMES.index(name)
            if bool(self._command[index]) != closed:
                self._command[index] = closed
                self._event("contactor", {"name": name, "closed": closed, "reason": reason, "current_A": current}, t)

    def _open_now(self, t: float, reason: str) -> None:
        self._opening = None
        self._command_contactors(t, reason, main_positive=False, precharge=False, main_negative=False)

    def _pack_reference_V(self) -> float:
        """The pack voltage the DC link must reach: the higher of the pack sensor and the cell sum."""
        o = self._out
        n_valid = o[L.OUT_N_VALID_V]
        cells = o[L.OUT_V_SUM] * self.params.n_series / n_valid if n_valid > 0 else 0.0
        return max(float(self._reading[self._i_pack_V]), float(cells))

    def _run_precharge(self, t: float) -> None:
        seq, c = self._seq, self.config
        if seq is None:
            return
        phase, elapsed = seq["phase"], t - seq["t_phase"]
        link = float(self._reading[self._i_link_V])
        if phase == "start":
            self.precharge_attempts += 1
            seq.update(phase="negative", t_phase=t, link0=link)
            self._event("precharge", {"attempt": self.precharge_attempts, "step": "main_negative"}, t)
            self._command_contactors(t, "precharge", main_negative=True)
        elif phase == "negative" and elapsed >= c.contactor_close_time_s:
            ref = self._pack_reference_V()
            if seq["link0"] < c.weld_check_fraction * ref <= link:
                self._open_now(t, "weld test failed")
                self._ks.worst[Protection.CONTACTOR_WELDED] = (0, link)
                self._set_ext(Protection.CONTACTOR_WELDED, FaultLevel.ERROR, t)
                return
            seq.update(phase="precharge", t_phase=t)
            self._command_contactors(t, "precharge", precharge=True)
        elif phase == "precharge":
            ref = self._pack_reference_V()
            current = abs(float(self._reading[self._i_current]))
            if (ref > 0 and link >= c.precharge_fraction * ref and current <= c.precharge_end_current_A
                    and elapsed >= self._precharge_min_s):
                self._event("precharge", {"attempt": self.precharge_attempts, "result": "complete",
                                          "duration_s": elapsed, "link_voltage_V": link, "pack_voltage_V": ref}, t)
                seq.update(phase="positive", t_phase=t)
                self._command_contactors(t, "precharge complete", main_positive=True)
            elif elapsed >= c.precharge_timeout_s:
                self._open_now(t, "precharge timeout")
                self._event("precharge", {"attempt": self.precharge_attempts, "result": "timeout",
                                          "link_voltage_V": link, "pack_voltage_V": ref}, t)
                if self.precharge_attempts >= c.precharge_max_attempts:
                    self._seq = None
                    self._ks.worst[Protection.PRECHARGE_FAILURE] = (self.precharge_attempts, link)
                    self._set_ext(Protection.PRECHARGE_FAILURE, FaultLevel.ERROR, t)
                    return
                seq.update(phase="retry", t_phase=t)
        elif phase == "retry" and elapsed >= c.precharge_retry_delay_s:
            seq.update(phase="start", t_phase=t)
            self._run_precharge(t)
        elif phase == "positive" and elapsed >= c.contactor_close_time_s:
            self._command_contactors(t, "precharge done", precharge=False)
            self._seq = None
            self._goto(t, seq["target"], "precharge complete")

    def _run_opening(self, t: float) -> None:
        op, c = self._opening, self.config
        if op is None:
            return
        if op["phase"] == "wait":
            current = float(self._reading[self._i_current])
            waited = t - op["t0"]
            if abs(current) <= c.open_current_threshold_A or waited >= c.open_delay_max_s:
                reason = op["reason"] if abs(current) <= c.open_current_threshold_A else \
                    f"{op['reason']} (opened under load after {waited:.2f} s)"
                self._command_contactors(t, reason, main_positive=False, precharge=False)
                op.update(phase="negative", t_phase=t)
        elif t - op["t_phase"] >= c.contactor_close_time_s:
            self._command_contactors(t, op["reason"], main_negative=False)
            self._opening = None
            self._goto(t, op["target"], op["reason"])
