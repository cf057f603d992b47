"""Scenario runs on a CAN bus: the BMS's CAN node, and a VCU model that talks to it only through frames.

``lockstep``: python-can's virtual bus, simulated time, as fast as possible, bit-identical per seed.
``paced``: the node on any python-can bus, paced by the wall clock; the VCU model sits on the same bus
(a virtual channel, or a real adapter where the firmware under test is absent). With ``external_vcu``
the firmware under test on the bus commands the BMS and the model only applies the scenario's load.
"""
from __future__ import annotations

import can

from bms.can import Codec
from bms.can.node import BusFailure, CanNode, Frame
from bms.controller import BmsState, StateRequest

from .load import Demand
from .vcu import _rearm_after, demand_current_A, request_for

__all__ = ["CanLoop", "CanVcu"]

OPEN, CLOSE = 1, 2  # VAL_ of VCU_Command.ContactorRequest


class CanVcu:
    """The VCU model on the bus: VCU_Command (and CHG_Status while charging) every ``period_s`` with its
    alive counter and CRC; it reads the BMS's state and limits from BMS_Status and BMS_Limits."""

    def __init__(self, bus: can.BusABC | None, codec: Codec, period_s: float = 0.01,
                 charger_voltage_V: float = 850.0, observe=None):
        self.bus, self.codec = bus, codec
        self.observe = observe  # without a bus (external VCU): the BMS whose state and limits the load respects
        self.period_s = period_s
        self.charger_voltage_V = charger_voltage_V
        self.silent = False
        self._rearm = False
        self.corrupt: str | None = None    # "counter" or "crc": the VCU's frames fail the BMS's checks
        self.state = BmsState.INIT
        self.discharge_limit_A = 0.0
        self.charge_limit_A = 0.0
        self._counters = {"VCU_Command": 0, "CHG_Status": 0}
        self._next_s = 0.0
        # the VCU reads three signals of two BMS messages: single-signal readers, not whole-frame decodes
        status, limits = codec["BMS_Status"], codec["BMS_Limits"]
        self._status_id, self._limits_id = status.frame_id, limits.frame_id
        self._read_state = status.signal_decoder("BmsState")
        self._read_discharge = limits.signal_decoder("DischargeCurrentLimit")
        self._read_charge = limits.signal_decoder("ChargeCurrentLimit")
        self._states: dict = {}  # raw BmsState -> BmsState
        self._encoded: dict = {}  # (message, counter, *values) -> payload
        self._commands: dict = {}  # StateRequest -> VCU_Command's values in signal order
        self._tx = {name: (codec[name], codec[name].encoder(), codec[name].signal_names())
                    for name in ("VCU_Command", "CHG_Status")}

    def _read(self) -> None:
        if self.observe is not None:
            self.state = self.observe.state
            self.discharge_limit_A = self.observe.limits.discharge_current_A
            self.charge_limit_A = self.observe.limits.charge_current_A
            return
        if self.bus is None:
            return
        recv, status_id, limits_id = self.bus.recv, self._status_id, self._limits_id
        status = limits = None
        while True:  # every frame is taken off the bus; only the latest Status and Limits matter
            msg = recv(0)
            if msg is None:
                break
            frame_id = msg.arbitration_id
            if frame_id == status_id:
                status = msg
            elif frame_id == limits_id:
                limits = msg
        if status is not None:
            raw = int(self._read_state(status.data))
            state = self._states.get(raw)
            if state is None:
                state = self._states[raw] = BmsState(raw)
            self.state = state
        if limits is not None:
            data = limits.data
            self.discharge_limit_A = self._read_discharge(data)
            self.charge_limit_A = self._read_charge(data)

    def _send(self, name: str, values: dict | tuple, t_s: float) -> None:
        """Send ``values`` (a mapping, or a tuple in the message's signal order) with counter and CRC."""
        message, encode, names = self._tx[name]
        counter = self._counters[name]
        self._counters[name] = (counter + 1) % 16
        if self.corrupt == "counter":
            counter = (counter + 7) % 16  # jumps the BMS's allowed delta
        if type(values) is tuple:
            key = (name, counter, *values)
        else:
            key = (name, counter, *[values.get(n, 0) for n in names])
        data = self._encoded.get(key)
        if data is None:  # encoding is a function of the counter and the values: a VCU repeats a few of them
            if len(self._encoded) >= 1024:
                self._encoded.clear()
            data = self._encoded[key] = encode(*key[1:])
        if self.corrupt == "crc":
            data = bytearray(data)
            data[0] ^= 0xA5
        self.bus.send(Frame.build(message.frame_id, data, timestamp=t_s))

    def tick(self, t_s: float, demand: Demand | None, link_voltage_V: float) -> float:
        self._read()
        if self.bus is not None and not self.silent and t_s >= self._next_s - 1e-9:
            self._next_s = t_s + self.period_s
            request = request_for(demand, self.state, self._rearm)
            self._rearm = _rearm_after(self._rearm, self.state, request)
            if request == StateRequest.CHARGE:
                self._send("CHG_Status", {"ChargerConnected": 1, "ChargerMaxVoltage": self.charger_voltage_V,
                                          "ChargerMaxCurrent": demand.value}, t_s)
            command = self._commands.get(request)
            if command is None:
                names = self._tx["VCU_Command"][2]
                values = {"StateRequest": int(request), "ContactorRequest": CLOSE if request in (
                    StateRequest.DRIVE, StateRequest.CHARGE) else OPEN}
                command = self._commands[request] = tuple(values.get(n, 0) for n in names)
            self._send("VCU_Command", command, t_s)
        if demand is None or self.state not in (BmsState.READY, BmsState.CHARGING):
            return 0.0
        return demand_current_A(demand, link_voltage_V, self.discharge_limit_A, self.charge_limit_A)


class CanLoop:
    """The emulator's node on a bus and the VCU model on a second handle of the same bus."""

    def __init__(self, emulator, *, mode: str = "lockstep", log=None, external_vcu: bool = False, **bus_options):
        if mode not in ("lockstep", "paced"):
            raise ValueError(f"mode: expected 'lockstep' or 'paced', found {mode!r}")
        self.emulator = emulator
        self.codec = Codec()
        options = {"interface": "virtual", **bus_options}
        if options["interface"] == "virtual" and "channel" not in options:
            options["channel"] = "bms-emu-lockstep0"  # log writers take the trailing digits as channel number
        self.node = CanNode(emulator, clock="virtual" if mode == "lockstep" else "wall", log=log,
                            arm_timeouts="first-rx", **options)
        self._vcu_bus = None
        try:
            if not external_vcu:
                self._vcu_bus = can.Bus(**options) if options["interface"] == "virtual" else self.node.bus
        except BaseException:
            self.node.close()
            raise
        self.vcu = CanVcu(self._vcu_bus, self.codec, observe=emulator.bms if external_vcu else None)
        self.external_vcu = external_vcu
        self.report = None

    def tick(self, load_current_A: float, coolant_C: float, cooling_factor: float) -> None:
        node = self.node
        node.load_current_A, node.coolant_C, node.cooling_factor = load_current_A, coolant_C, cooling_factor
        node.step()

    def fault(self, kind: str, options: dict, on: bool, t_s: float) -> None:
        if kind == "can_corrupt":
            self.vcu.corrupt = options["what"] if on else None
        elif kind == "bus_off" and on:
            self.node.bus.shutdown()  # the BMS's controller leaves the bus: the node must stop cleanly

    @staticmethod
    def is_stop_error(exc: BaseException) -> bool:
        return isinstance(exc, BusFailure)

    def close(self) -> dict:
        """Close the node (logs flushed) and the VCU's bus; returns cycle-time statistics per message."""
        try:
            self.report = self.node.close()
        finally:
            if self._vcu_bus is not None and self._vcu_bus is not self.node.bus:
                self._vcu_bus.shutdown()
        return {s["message"]: {"max_deviation_ms": s.get("max_abs_deviation_ms", 0.0),
                            "p99_deviation_ms": s.get("p99_abs_deviation_ms", 0.0),
                            "mean_interval_ms": s.get("mean_interval_ms"), "frames": s["frames"]}
                for s in self.report.cycle_times if s.get("direction") == "tx" and "mean_interval_ms" in s}
