"""An FMU as firmware (VCU / charger role) through fmpy: FMI 2.0 co-simulation.

The slot's inputs and outputs map to FMU variables by their contract names (``demand_mode`` … ``load_current_A``)
or by ``mapping`` (contract name -> variable name). CAN goes through the DBC as signals: an input variable
named ``Message.Signal`` takes that signal's value from the last received frame of the message; output
variables ``Message.Signal`` are encoded (alive counter and CRC by the DBC's E2E) and sent after every step in
which the output ``Message.send`` is 1 (without one: at the message's cycle time), in the order of the send
variables. Each step is ``doStep(t, dt)`` with the inputs sampled at ``t``; its outputs act from ``t``.
Needs the ``fmu`` extra (``pip install 'assb-bms-emulator[fmu]'``).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

from .contract import VCU_INPUTS, VCU_OUTPUTS, Role, SlotLayout
from .slot import Firmware, FirmwareAbiError, FirmwareError, FirmwareOutputError

__all__ = ["FmuFirmware"]


def _fmpy():
    try:
        import fmpy
        from fmpy.fmi2 import FMU2Slave
    except ImportError as exc:
        raise FirmwareError("fmu", "an FMU needs fmpy: pip install 'assb-bms-emulator[fmu]'") from exc
    return fmpy, FMU2Slave


class FmuFirmware(Firmware):
    """A co-simulation FMU in the VCU slot. ``dbc``: the CAN database its signals belong to (default: the
    emulator's)."""

    kind = "fmu"

    def __init__(self, path: str | Path, role: Role | str = Role.VCU, *, mapping: dict | None = None,
                 dbc: str | Path | None = None, config: str = "", instance_name: str = "firmware"):
        self.path = str(Path(path).resolve())
        self.role = Role.parse(role)
        if self.role != Role.VCU:
            raise FirmwareError(Path(path).name, "an FMU goes into the VCU slot (the BMS role takes a library or a "
                                "process)")
        self.mapping, self.dbc, self.config = dict(mapping or {}), dbc, config
        self.instance_name = instance_name
        self.name = Path(path).stem
        self._fmu = None
        self._unzipped: str | None = None

    def open(self, layout: SlotLayout, dt_ns: int) -> None:
        fmpy, FMU2Slave = _fmpy()
        self.layout = layout
        try:
            md = fmpy.read_model_description(self.path)
        except Exception as exc:  # noqa: BLE001 - fmpy raises plain exceptions for a bad FMU
            raise FirmwareAbiError(self.name, f"not a readable FMU: {exc}") from exc
        if md.fmiVersion != "2.0" or md.coSimulation is None:
            interface = "co-simulation" if md.coSimulation else "model exchange"
            raise FirmwareAbiError(self.name, f"FMI {md.fmiVersion} {interface}: this slot takes FMI 2.0 "
                                   "co-simulation FMUs")
        self.name = md.modelName
        self.version = md.version or md.generationTool or ""
        variables = {v.name: v for v in md.modelVariables}
        from ..can import Codec
        self.codec = codec = Codec(path=self.dbc) if self.dbc else Codec()

        def reference(contract: str, causality: str):
            name = self.mapping.get(contract, contract)
            var = variables.get(name)
            if var is None or var.causality != causality:
                raise FirmwareAbiError(self.name, f"no {causality} variable {name!r} for the slot's {contract}")
            return var.valueReference
        self._in_refs = [reference(ch.name, "input") for ch in VCU_INPUTS]
        self._out_ref = reference(VCU_OUTPUTS[0].name, "output")
        # CAN signals: inputs by received message, outputs by sent message (send flag first)
        self._rx: dict[int, list] = {}
        self._tx: list = []
        self._rx_values: dict[int, float] = {}
        tx: dict[str, dict] = {}
        for var in md.modelVariables:
            message_name, dot, signal = var.name.partition(".")
            if not dot or message_name not in codec.messages:
                continue
            message = codec[message_name]
            if var.causality == "input":
                if signal not in message.signal_names():
                    raise FirmwareAbiError(self.name, f"variable {var.name}: {message_name} has no signal {signal}")
                self._rx.setdefault(message.frame_id, []).append((signal, var.valueReference, var.type))
                self._rx_values[var.valueReference] = float(var.start or 0.0)
            elif var.causality == "output":
                entry = tx.setdefault(message_name, {"message": message, "signals": {}, "send": None})
                if signal == "send":
                    entry["send"] = var.valueReference
                elif signal in message.signal_names():
                    entry["signals"][signal] = (var.valueReference, var.type)
                else:
                    raise FirmwareAbiError(self.name, f"variable {var.name}: {message_name} has no signal {signal}")
        for entry in tx.values():
            message = entry["message"]
            period = int(round((message.cycle_time_s or 0.0) * 1e9))
            self._tx.append({**entry, "encode": message.encoder(), "names": message.signal_names(), "counter": 0,
                             "period_ns": period, "next_ns": 0})
        self._frames: list = []
        self._unzipped = fmpy.extract(self.path)
        fmu = FMU2Slave(guid=md.guid, unzipDirectory=self._unzipped, modelIdentifier=md.coSimulation.modelIdentifier,
                        instanceName=self.instance_name)
        try:
            fmu.instantiate()
            fmu.setupExperiment(startTime=0.0)
            fmu.enterInitializationMode()
            fmu.exitInitializationMode()
        except Exception as exc:  # noqa: BLE001 - fmpy raises FMICallException or OSError
            raise FirmwareError(self.name, f"cannot instantiate the FMU: {exc}") from exc
        self._fmu = fmu
        self._int_refs = [r for r, kind in ((r, t) for f in self._rx.values() for _, r, t in f) if kind == "Integer"]
        self._real_refs = [r for r, kind in ((r, t) for f in self._rx.values() for _, r, t in f) if kind != "Integer"]

    def receive(self, frame, t_ns: int) -> None:
        fields = self._rx.get(frame.arbitration_id)
        if not fields:
            return
        message = self.codec.by_id(frame.arbitration_id)
        if message is None:
            return
        try:
            values = message.decode(bytes(frame.data))
        except Exception:  # noqa: BLE001 - a frame that does not decode leaves the last values
            return
        for signal, ref, _ in fields:
            self._rx_values[ref] = float(values[signal])

    def step(self, t_ns: int, dt_ns: int, inputs, outputs) -> None:
        fmu = self._fmu
        if fmu is None:
            raise FirmwareError(self.name, "the FMU is closed")
        values = self._rx_values
        try:
            fmu.setReal(self._in_refs, inputs.tolist())
            if self._real_refs:
                fmu.setReal(self._real_refs, [values[r] for r in self._real_refs])
            if self._int_refs:
                fmu.setInteger(self._int_refs, [int(values[r]) for r in self._int_refs])
            fmu.doStep(currentCommunicationPoint=t_ns / 1e9, communicationStepSize=dt_ns / 1e9)
            current = fmu.getReal([self._out_ref])[0]
        except Exception as exc:  # noqa: BLE001 - an FMI call that failed stops the run
            raise FirmwareError(self.name, f"FMI call failed: {exc}", t_ns / 1e9) from exc
        if not (math.isfinite(current) and -5000.0 <= current <= 5000.0):
            raise FirmwareOutputError(self.name, f"outputs[0] (load_current_A) = {current!r}: expected a finite "
                                      "current in [-5000, 5000] A", t_ns / 1e9)
        outputs[0] = current
        from ..can.node import Frame
        for entry in self._tx:
            if entry["send"] is not None:
                due = fmu.getInteger([entry["send"]])[0] == 1
            else:
                due = t_ns >= entry["next_ns"]
                if due:
                    entry["next_ns"] = t_ns + entry["period_ns"]
            if not due:
                continue
            refs = entry["signals"]
            got = {}
            for signal, (ref, kind) in refs.items():
                got[signal] = (fmu.getInteger([ref])[0] if kind == "Integer" else fmu.getReal([ref])[0])
            args = [got.get(n, 0) for n in entry["names"]]
            message = entry["message"]
            if message.e2e is not None:
                data = entry["encode"](entry["counter"], *args)
                entry["counter"] = (entry["counter"] + 1) & ((1 << message.e2e.counter_bits) - 1)
            else:
                data = entry["encode"](*args)
            self._frames.append(Frame.build(message.frame_id, data, is_extended_id=message.is_extended_id))

    def transmit(self) -> list:
        frames, self._frames = self._frames, []
        return frames

    def reset(self) -> None:
        if self._fmu is not None:
            self._fmu.reset()

    def close(self) -> None:
        fmu, self._fmu = self._fmu, None
        if fmu is not None:
            try:
                fmu.terminate()
                fmu.freeInstance()
            except Exception:  # noqa: BLE001 - nothing left to do with a broken FMU
                pass
        if self._unzipped:
            shutil.rmtree(self._unzipped, ignore_errors=True)
            self._unzipped = None
