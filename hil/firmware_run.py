"""A scenario run with an external firmware in a slot: which firmware goes where, the VCU model's view of an
external BMS, the differential run, and what the reports say about the firmware."""
from __future__ import annotations

from bms.controller import BmsState
from bms.errors import BmsError
from bms.fil import Firmware, FirmwareError
from bms.fil.differential import DifferentialBms
from bms.fil.loader import FirmwareSpec, open_firmware
from bms.fil.view import FrameView

from .can_loop import CanVcu
from .published import PublishedEvents

__all__ = ["FirmwareRun", "ForeignBmsVcu"]


class ForeignBmsVcu(CanVcu):
    """The VCU model in front of an external BMS firmware: it sends the same commands, and reads the BMS's
    state and limits from that firmware's own frames (``[firmware] dbc`` and ``signals``)."""

    def __init__(self, codec, view: FrameView):
        super().__init__(codec)
        self.view = view
        self.published = PublishedEvents()   # its state and fault changes, for the recording

    def receive(self, frame, t_ns: int) -> None:
        view = self.view
        view.receive(frame)
        if frame.arbitration_id in view.by_id:
            self.published.after_frame(view, t_ns / 1e9)

    def _read(self) -> None:
        view = self.view
        state = str(view.values["state"])
        self.state = BmsState.READY if view.is_ready else BmsState.FAULT if state == "FAULT" else BmsState.STANDBY
        dis, ch = view.number("discharge_limit_A"), view.number("charge_limit_A")
        self.discharge_limit_A = dis if dis == dis else 0.0
        self.charge_limit_A = ch if ch == ch else 0.0


class FirmwareRun:
    """What a ``FirmwareSpec`` (or None: the built-in BMS and VCU model) means for one run."""

    def __init__(self, spec: FirmwareSpec | None, mode: str):
        self.spec = spec if spec is not None and spec.external else None
        self.differential: DifferentialBms | None = None
        self._opened: list[Firmware] = []
        if self.spec is not None and mode == "headless":
            raise BmsError(f"firmware {self.spec.describe()}: an external firmware talks on a bus; run it with "
                           "--mode lockstep (or paced)")
        self.view = None
        self.foreign: ForeignBmsVcu | None = None   # the VCU model in front of an external BMS
        if self.spec is not None and self.spec.role == "bms" and self.spec.dbc:
            self.view = FrameView(self.spec.dbc, self.spec.signals)

    def _open(self) -> Firmware:
        assert self.spec is not None
        firmware = open_firmware(self.spec)
        self._opened.append(firmware)
        return firmware

    @property
    def drives_bms(self) -> bool:
        return self.spec is not None and self.spec.role == "bms" and self.spec.differential is None

    def bms_firmware(self) -> Firmware | None:
        """The firmware for the emulator's BMS slot (None: the built-in BMS)."""
        return self._open() if self.drives_bms else None

    def attach(self, emulator) -> None:
        """After the emulator is built: the differential run's shadow firmware."""
        spec = self.spec
        if spec is not None and spec.role == "bms" and spec.differential is not None:
            self.differential = DifferentialBms(emulator, self._open(), self.view, spec.differential)

    def vcu_firmware(self, codec) -> Firmware | None:
        """The firmware for the VCU slot on the bus (None: the VCU model)."""
        if self.spec is not None and self.spec.role == "vcu":
            return self._open()
        if self.spec is not None and self.drives_bms:
            if self.view is None:
                raise BmsError(f"firmware {self.spec.describe()}: the VCU model needs the firmware's state and "
                               "limits: give [firmware] dbc and signals (state, discharge_limit_A, ...)")
            self.foreign = ForeignBmsVcu(codec, self.view)
            return self.foreign
        return None

    def bms_messages(self) -> dict | None:
        """The external BMS firmware's messages from its DBC, frame id -> (name, cycle time s or None), for the
        node's cycle-time statistics (None: the built-in BMS, or no DBC)."""
        if not self.drives_bms or self.view is None:
            return None
        return {m.frame_id: (m.name, m.cycle_time / 1000.0 if m.cycle_time else None) for m in self.view.db.messages}

    def published_events(self) -> list:
        """The external BMS's published state and fault changes since the last call (none for the built-in)."""
        return self.foreign.published.take() if self.foreign is not None else []

    def summary(self, emulator) -> dict:
        """The report's firmware section: what sat in each slot, with names and versions."""
        slots = {"bms": emulator.firmware.info.as_dict()}
        vcu = [f for f in self._opened if f.role.name == "VCU"]
        if vcu:
            slots["vcu"] = vcu[0].info.as_dict()
        if self.differential is not None:
            slots["bms_shadow"] = self.differential.shadow.info.as_dict()
        return slots

    @staticmethod
    def failure(exc: BaseException) -> dict | None:
        if not isinstance(exc, FirmwareError):
            return None
        return {"firmware": exc.firmware, "t_s": exc.t_s, "cause": exc.cause, "last_frames": exc.frames}

    def close(self) -> None:
        for firmware in self._opened:
            try:
                firmware.close()
            except BmsError:
                pass
