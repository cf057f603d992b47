"""Scenario runs on a CAN bus: the BMS's CAN node, and a VCU model that talks to it only through frames.

``lockstep``: python-can's virtual bus, simulated time, as fast as possible, bit-identical per seed.
``paced``: the node on any python-can bus, paced by the wall clock; the VCU model sits on the same bus,
on a handle of its own where the interface gives each handle the others' frames (virtual, udp_multicast,
socketcan), else on the node's handle (a real adapter where the firmware under test is absent). With ``external_vcu``
the firmware under test on the bus commands the BMS and the model only applies the scenario's load.
"""
from __future__ import annotations

from typing import Any

import can
import numpy as np

from bms.can import Codec
from bms.can.lockstep_bus import LockstepBus
from bms.can.node import BusFailure, CanNode, Frame, RunReport, classify_rx_error
from bms.can.node import _tx_frame as _frame
from bms.controller import BmsState, StateRequest
from bms.errors import BmsError
from bms.fil import DEMAND_MODES, Firmware, FirmwareError, Role, vcu_layout
from bms.fil.contract import VCU_INPUTS, VCU_OUTPUTS

from .load import Demand
from .vcu import _rearm_after, demand_current_A

__all__ = ["CanLoop", "CanVcu", "VcuHost"]

VCU_N_INPUTS, VCU_N_OUTPUTS = len(VCU_INPUTS), len(VCU_OUTPUTS)

OPEN, CLOSE = 1, 2  # VAL_ of VCU_Command.ContactorRequest
_OWN_HANDLE = ("virtual", "udp_multicast", "socketcan")  # interfaces where a second handle hears the first
_LOCKSTEP_OPTIONS = {"interface", "channel", "bitrate", "fd", "data_bitrate"}  # what a virtual bus may be given
_RX_ERRORS_PER_TICK = 64


class CanVcu(Firmware):
    """The VCU model as a VCU-role firmware: VCU_Command (and CHG_Status while charging) every ``period_s``
    with its alive counter and CRC; it reads the BMS's state and limits from BMS_Status and BMS_Limits.

    ``silent`` (it stops talking) and ``corrupt`` ("counter" or "crc": its frames fail the BMS's checks) are
    the VCU faults a scenario injects."""

    kind = "builtin"
    role = Role.VCU
    name = "bms-emu VCU model"

    def __init__(self, codec: Codec, period_s: float = 0.01):
        from bms import __version__
        self.version = __version__
        self.codec = codec
        self.period_s = period_s
        self.silent = False
        self._rearm = False
        self.corrupt: str | None = None
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
        self._status = self._limits = None   # the latest BMS_Status and BMS_Limits frames not yet read
        # python-can acceptance filters for the frames it reads (a LockstepBus applies them at the sender);
        # none for a subclass that reads frames of its own (ForeignBmsVcu: an external BMS's DBC)
        self.can_filters = [{"can_id": m.frame_id, "can_mask": 0x1FFFFFFF if m.is_extended_id else 0x7FF,
                             "extended": m.is_extended_id} for m in (status, limits)] \
            if type(self).receive is CanVcu.receive else None
        self._states: dict = {}  # raw BmsState -> BmsState
        self._encoded: dict = {}  # (message, counter, *values) -> payload
        self._commands: dict = {}  # StateRequest -> VCU_Command's values in signal order
        self._tx_frames: list = []
        self._tx = {name: (codec[name], codec[name].encoder(), codec[name].signal_names())
                    for name in ("VCU_Command", "CHG_Status")}

    def receive(self, frame, t_ns: int) -> None:
        frame_id = frame.arbitration_id  # only the latest Status and Limits matter
        if frame_id == self._status_id:
            self._status = frame
        elif frame_id == self._limits_id:
            self._limits = frame

    def _read(self) -> None:
        status, limits = self._status, self._limits
        if status is not None:
            self._status = None
            raw = int(self._read_state(status.data))
            state = self._states.get(raw)
            if state is None:
                state = self._states[raw] = BmsState(raw)
            self.state = state
        if limits is not None:
            self._limits = None
            data = limits.data
            self.discharge_limit_A = self._read_discharge(data)
            self.charge_limit_A = self._read_charge(data)

    def _send(self, name: str, values: dict | tuple) -> None:
        """Queue ``values`` (a mapping, or a tuple in the message's signal order) with counter and CRC."""
        message, encode, names = self._tx[name]
        counter = self._counters[name]
        self._counters[name] = (counter + 1) % 16
        if self.corrupt == "counter":
            counter = (counter + 7) % 16  # jumps the BMS's allowed delta
        if isinstance(values, tuple):
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
        self._tx_frames.append(_frame(Frame, message.frame_id, data))

    def step(self, t_ns: int, dt_ns: int, inputs, outputs) -> None:
        mode, value, link_voltage_V, _, charger_V, charger_A = inputs.tolist()
        outputs[0] = self.demand(t_ns, mode, value, link_voltage_V, charger_V, charger_A)

    def demand(self, t_ns: int, mode: float, value: float, link_voltage_V: float, charger_V: float,
               charger_A: float) -> float:
        """``step`` without the slot's arrays (its inputs as numbers): the current [A] the VCU draws this tick."""
        self._read()
        t_s = t_ns / 1e9
        charging = mode == _CHARGE
        if not self.silent and t_s >= self._next_s - 1e-9:
            self._next_s = t_s + self.period_s
            request = _REQ_CHARGE if charging else _REQ_DRIVE
            if self._rearm:  # after a fault the VCU sends STANDBY once before asking again
                request = _REQ_STANDBY
            self._rearm = _rearm_after(self._rearm, self.state, request)
            if request is _REQ_CHARGE:
                self._send("CHG_Status", {"ChargerConnected": 1, "ChargerMaxVoltage": charger_V,
                                          "ChargerMaxCurrent": charger_A})
            command = self._commands.get(request)
            if command is None:
                names = self._tx["VCU_Command"][2]
                values = {"StateRequest": int(request), "ContactorRequest": CLOSE if request in (
                    StateRequest.DRIVE, StateRequest.CHARGE) else OPEN}
                command = self._commands[request] = tuple(values.get(n, 0) for n in names)
            self._send("VCU_Command", command)
        state = self.state
        if state is not _READY and state is not _CHARGING:
            return 0.0
        if mode == _POWER:
            asked = value / max(link_voltage_V, 50.0)
        elif mode == _CURRENT:
            asked = value
        elif charging:
            asked = -charger_A
        else:
            asked = 0.0
        return min(max(asked, -self.charge_limit_A), self.discharge_limit_A)

    def transmit(self) -> list:
        frames, self._tx_frames = self._tx_frames, []
        return frames


_POWER, _CURRENT, _CHARGE = DEMAND_MODES["power"], DEMAND_MODES["current"], DEMAND_MODES["charge"]
# enum members looked up once (an Enum class attribute costs ~0.1 us on Python 3.11, several a tick)
_READY, _CHARGING = BmsState.READY, BmsState.CHARGING
_REQ_CHARGE, _REQ_DRIVE, _REQ_STANDBY = StateRequest.CHARGE, StateRequest.DRIVE, StateRequest.STANDBY
_MODE = {name: float(code) for name, code in DEMAND_MODES.items()}


class VcuHost:
    """The VCU slot on a bus handle: each tick it hands the frames that arrived to the firmware, sets the
    slot's inputs from the drive's demand, steps the firmware and sends what it transmits.

    Without a bus (``observe``: a real VCU elsewhere on the bus commands the BMS) it only applies the
    scenario's load within the limits the BMS publishes."""

    def __init__(self, bus: can.BusABC | None, firmware: Firmware, *, dt_s: float,
                 charger_voltage_V: float = 850.0, observe=None):
        self.bus, self.firmware, self.observe = bus, firmware, observe
        self.charger_voltage_V = charger_voltage_V
        dt_ns = dt_s * 1e9
        self.dt_ns = int(round(dt_ns)) if dt_ns < 2.0 ** 62 else 2 ** 62  # saturated for absurd ticks
        self.inputs = np.zeros(VCU_N_INPUTS)
        self.outputs = np.zeros(VCU_N_OUTPUTS)
        self._silent = False
        self.corrupt_frames: str | None = None
        self.bad_frames = 0  # what its handle could not decode (the node counts the same stray frames)
        self._demand = firmware.demand if isinstance(firmware, CanVcu) and type(firmware).step is CanVcu.step \
            else None
        # the VCU model builds each frame anew and keeps none: the BMS's handle may take the frame itself
        self._handover = isinstance(firmware, CanVcu) and isinstance(bus, LockstepBus)
        firmware.open(vcu_layout(), self.dt_ns)

    # the VCU faults a scenario injects: the firmware's own if it models them, else dropped frames
    @property
    def silent(self) -> bool:
        return getattr(self.firmware, "silent", self._silent)

    @silent.setter
    def silent(self, on: bool) -> None:
        if hasattr(self.firmware, "silent"):
            self.firmware.silent = on
        self._silent = on

    @property
    def corrupt(self) -> str | None:
        return getattr(self.firmware, "corrupt", self.corrupt_frames)

    @corrupt.setter
    def corrupt(self, what: str | None) -> None:
        if hasattr(self.firmware, "corrupt"):
            self.firmware.corrupt = what
        else:
            self.corrupt_frames = what

    def tick(self, t_s: float, demand: Demand | None, link_voltage_V: float) -> float:
        if self.observe is not None:
            state = self.observe.state
            if demand is None or (state is not _READY and state is not _CHARGING):
                return 0.0
            limits = self.observe.limits
            return demand_current_A(demand, link_voltage_V, limits.discharge_current_A, limits.charge_current_A)
        firmware, bus = self.firmware, self.bus
        t_ns = int(round(t_s * 1e9))
        if bus is not None:
            recv, receive = bus.recv, firmware.receive
            errors = 0
            while errors < _RX_ERRORS_PER_TICK:
                try:
                    msg = recv(0)
                except (can.CanError, OSError, ValueError, TypeError) as exc:  # a stray datagram: go on
                    if classify_rx_error(bus, exc) == "fatal":
                        raise BusFailure(f"the VCU model's bus failed: {exc}") from exc
                    self.bad_frames += 1
                    errors += 1
                    continue
                if msg is None:
                    break
                receive(msg, t_ns)
        if demand is None:
            mode = value = speed = charger_V = charger_A = 0.0
        else:
            charging = demand.mode == "charge"
            mode = _MODE.get(demand.mode, 0.0)
            value, speed = 0.0 if charging else demand.value, demand.speed_mps
            charger_V, charger_A = (self.charger_voltage_V, demand.value) if charging else (0.0, 0.0)
        if self._demand is not None:  # the VCU model: its step without the slot's arrays
            current = self._demand(t_ns, mode, value, link_voltage_V, charger_V, charger_A)
        else:
            inputs = self.inputs
            inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], inputs[5] = (
                mode, value, link_voltage_V, speed, charger_V, charger_A)
            firmware.step(t_ns, self.dt_ns, inputs, self.outputs)
            current = float(self.outputs[0])
        frames = firmware.transmit()
        if frames and bus is not None and not (self._silent and not hasattr(firmware, "silent")):
            send: Any = bus.send   # a LockstepBus takes handover=True
            for frame in frames:
                frame.timestamp = t_s
                if self.corrupt_frames == "crc":
                    frame.data[0] ^= 0xA5
                if self._handover:   # a keyword call: cheaper than through a functools.partial
                    send(frame, handover=True)
                else:
                    send(frame)
        return current


class CanLoop:
    """The emulator's node on a bus and the VCU model on a second handle of the same bus."""

    def __init__(self, emulator, *, mode: str = "lockstep", log=None, external_vcu: bool = False,
                 vcu_firmware=None, diag_requests=(), frames=(), codec: Codec | None = None, matrix=None,
                 bms_messages: dict | None = None, **bus_options):
        """``matrix``: a vehicle CAN-matrix map (path or ``bms.can.matrix.MatrixMap``): the BMS speaks it, and
        the VCU (written against the built-in DBC) through a ``VcuGateway``. ``frames``: a scenario's
        ``[[frame]]`` injections (``hil.frames.FrameInjection``), sent by ``self.injector`` on a handle of its own.
        ``bms_messages``: an external BMS firmware's messages, frame id -> (name, period s or None), from its DBC."""
        if mode not in ("lockstep", "paced"):
            raise ValueError(f"mode: expected 'lockstep' or 'paced', found {mode!r}")
        self.emulator = emulator
        self.codec = codec or Codec()  # one codec for the node and the VCU (a DBC parse is ~0.3 s)
        if matrix is not None and not hasattr(matrix, "codec"):
            from .matrix import load_matrix_map
            matrix = load_matrix_map(matrix, n_cells=emulator.pack.params.n_series,
                                     n_temperatures=len(emulator.sensors.temperature_C))
        self.matrix = matrix
        node_options: dict = {"firmware_messages": bms_messages}
        if matrix is not None and matrix.diag_config() is not None:  # UDS on the vehicle's own ids, as serve
            node_options["diag"] = matrix.diag_config()
        options = {"interface": "virtual", **bus_options}
        if options["interface"] == "virtual" and "channel" not in options:
            options["channel"] = "bms-emu-lockstep0"  # log writers take the trailing digits as channel number
        # lockstep on python-can's virtual interface: LockstepBus handles (still VirtualBus handles on the same
        # channel, so a tester's or a firmware's own virtual handle hears them), filtering at the sender
        lockstep_bus = mode == "lockstep" and options["interface"] == "virtual" and set(options) <= _LOCKSTEP_OPTIONS
        self._node_bus = LockstepBus(options["channel"]) if lockstep_bus else None
        try:
            self.node = CanNode(emulator, self._node_bus, clock="virtual" if mode == "lockstep" else "wall", log=log,
                                codec=self.codec, arm_timeouts="first-rx", matrix=matrix, **node_options,
                                **({} if lockstep_bus else options))
        except BaseException:
            if self._node_bus is not None:
                self._node_bus.shutdown()
            raise
        self._vcu_bus = self._tester_bus = None
        self.tester = None  # set before anything that can fail: close() reads it
        try:
            if not external_vcu:
                self._vcu_bus = (LockstepBus(options["channel"]) if lockstep_bus else can.Bus(**options)
                                 if options["interface"] in _OWN_HANDLE else self.node.bus)
        except BaseException:
            self.node.close()
            if self._node_bus is not None:
                self._node_bus.shutdown()
            raise
        try:
            if callable(vcu_firmware):  # a factory that takes the codec
                vcu_firmware = vcu_firmware(self.codec)
            vcu_firmware = vcu_firmware or CanVcu(self.codec)
            if matrix is not None and not external_vcu:
                from bms.can.matrix import VcuGateway
                vcu_firmware = VcuGateway(vcu_firmware, matrix, self.codec)
            self.vcu = VcuHost(self._vcu_bus, vcu_firmware, dt_s=emulator.dt_s,
                               observe=emulator.bms if external_vcu else None)
            filters = getattr(vcu_firmware, "can_filters", None)
            if lockstep_bus and self._vcu_bus is not None and filters:  # frames it never reads are never copied
                self._vcu_bus.set_filters(filters)
        except BaseException:
            self.close()
            raise
        self.external_vcu = external_vcu
        self.report: RunReport | None = None
        if diag_requests:
            from .diag_tester import ScenarioTester
            try:
                interface = options["interface"]
                if interface != "virtual":  # a handle of its own where one hears the node's, as the VCU's
                    self._tester_bus = can.Bus(**options) if interface in _OWN_HANDLE else self.node.bus
                self.tester = ScenarioTester(self.node, list(diag_requests), bus=self._tester_bus)
            except BaseException:
                self.close()
                raise
        self._seen = {"server": 0, "tester": 0}
        self.injector = None
        if frames:
            try:
                self.injector = self._frame_injector(frames, options, lockstep_bus)
            except BaseException:
                self.close()
                raise

    def _frame_injector(self, frames, options: dict, lockstep_bus: bool):
        from .frames import FrameInjector, frames_refused
        why = frames_refused("lockstep", {"matrix": self.matrix, "interface": options["interface"]})
        if why:
            raise BmsError(why)
        bus = LockstepBus(options["channel"]) if lockstep_bus else can.Bus(**options)
        try:
            ids = {(self.codec[f.message].frame_id, self.codec[f.message].is_extended_id) for f in frames}
            bus.set_filters([{"can_id": i, "can_mask": 0x1FFFFFFF if ext else 0x7FF, "extended": ext}
                             for i, ext in sorted(ids)])
            return FrameInjector(frames, self.codec, bus)
        except BaseException:
            bus.shutdown()
            raise

    def tick(self, load_current_A: float, coolant_C: float, cooling_factor: float) -> None:
        node = self.node
        node.load_current_A, node.coolant_C, node.cooling_factor = load_current_A, coolant_C, cooling_factor
        node.step()
        if self.tester is not None:
            self.tester.tick(node.t_s)

    def fault(self, kind: str, options: dict, on: bool, t_s: float) -> None:
        if kind == "can_corrupt":
            self.vcu.corrupt = options["what"] if on else None
        elif kind == "bus_off" and on:
            self.node.bus.shutdown()  # the BMS's controller leaves the bus: the node must stop cleanly
        elif kind == "isotp":
            from bms.diag import transport_fault
            side = self.tester if options.get("side", "ecu") == "tester" else self.node.diag
            link = side.faults if side is not None else None
            if link is None:
                raise ValueError("an ISO-TP fault on the tester's side needs the scenario's tester ([[diag]])")
            fault = transport_fault(options["fault"], **{k: options[k] for k in ("index", "delay_s") if k in options})
            (link.inject if on else link.remove)(fault)
        elif kind == "uds_pending":
            from bms.diag import ResponsePending
            assert self.node.diag is not None, "the node answers UDS"
            self.node.diag.response_pending = ResponsePending(
                options.get("duration_s", float("inf")), options.get("interval_s"), options.get("service")) \
                if on else None

    def new_events(self) -> list[tuple[float, str, str]]:
        """The diagnostic server's and the tester's events since the last call."""
        out = []
        for key, source in (("server", self.node.diag), ("tester", self.tester)):
            events = getattr(source, "events", None)
            if events is None:
                continue
            dropped = getattr(source, "events_dropped", 0)
            out += events[max(0, self._seen[key] - dropped):]
            self._seen[key] = dropped + len(events)
        return out

    @staticmethod
    def is_stop_error(exc: BaseException) -> bool:
        return isinstance(exc, (BusFailure, FirmwareError))

    def close(self) -> dict:
        """Close the node (logs flushed) and the VCU's bus; returns cycle-time statistics per message."""
        try:
            if self.tester is not None:
                self.tester.close()
            injector = getattr(self, "injector", None)
            if injector is not None:
                injector.close()
            self.report = self.node.close()
        finally:
            for bus in (self._vcu_bus, self._tester_bus, self._node_bus):
                if bus is not None and (bus is not self.node.bus or bus is self._node_bus):
                    bus.shutdown()
            vcu = getattr(self, "vcu", None)
            if vcu is not None:
                vcu.firmware.close()
        assert self.report is not None
        return {s["message"]: {"max_deviation_ms": s.get("max_abs_deviation_ms", 0.0),
                            "p99_deviation_ms": s.get("p99_abs_deviation_ms", 0.0),
                            "mean_interval_ms": s.get("mean_interval_ms"), "frames": s["frames"]}
                for s in self.report.cycle_times if s.get("direction") == "tx" and "mean_interval_ms" in s}
