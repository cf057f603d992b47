"""Generates ``assb_bms.dbc``, the emulated BMS's CAN database (the shipped file is this script's output).

Run ``python -m bms.can._dbcgen > bms/can/assb_bms.dbc`` after a change; a test checks that the shipped file
is exactly what this script writes, so the two never drift. The DBC, not this script, is the interface:
users load the file into their own tools (``bms-emu dbc -o FILE`` exports it).

Layout rules (documented in the DBC's comments too):
- classical CAN, 11-bit identifiers, 8 data bytes, every signal little-endian (Intel);
- current is positive when discharging; temperatures in degC;
- safety-relevant messages carry an E2E header: ``<Message>_CRC`` in byte 0 (CRC-8 SAE J1850: polynomial
  0x1D, initial value 0xFF, final XOR 0xFF, over the two bytes of the message's ``E2EDataID`` attribute,
  low byte first, then data bytes 1..7) and ``<Message>_Counter`` in the low nibble of byte 1 (0..15,
  incremented by one per transmission, wrapping);
- the cell voltage and temperature messages are multiplexed: one page per frame, pages in round robin, so
  ``GenMsgCycleTime`` is the frame period and a full sweep takes pages x cycle time;
- diagnostics are UDS (ISO 14229-1) on ISO-TP (ISO 15765-2), not DBC messages: requests on 0x7E0 (physical)
  and 0x7DF (functional), responses on 0x7E8 (``bms.diag``); the single-frame DIAG_Request/DIAG_Response
  messages of earlier versions are gone.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

N_CELL_VOLTAGES = 192          # series groups of the largest preset (assb60-192s2p)
CELLS_PER_PAGE = 3
N_TEMPERATURES = 24            # 12 modules x 2 sensors
TEMPERATURES_PER_PAGE = 4
# the CAN FD variant (assb_bms_fd.dbc): the same messages, cells and temperatures in 64- and 48-byte frames
FD_CELLS_PER_PAGE = 24         # 8 pages: a full sweep in 80 ms instead of 640 ms
FD_TEMPERATURES_PER_PAGE = 24  # one page
FD_LENGTHS = {"BMS_CellVoltages": 64, "BMS_CellTemperatures": 48}
SOP_HORIZONS_S = (2, 10, 30)   # pages of BMS_SOP

BMS_STATES = ((0, "INIT"), (1, "STANDBY"), (2, "PRECHARGE"), (3, "READY"), (4, "CHARGING"), (5, "FAULT"),
              (6, "SHUTDOWN"))
STATE_REQUESTS = ((0, "NONE"), (1, "STANDBY"), (2, "DRIVE"), (3, "CHARGE"), (4, "SHUTDOWN"))
FAULT_LEVELS = ((0, "NONE"), (1, "WARNING"), (2, "ERROR"), (3, "EMERGENCY"))
OPEN_CLOSED = ((0, "OPEN"), (1, "CLOSED"))
NO_YES = ((0, "NO"), (1, "YES"))
CONTACTOR_REQUESTS = ((0, "NO_REQUEST"), (1, "OPEN"), (2, "CLOSE"))


@dataclass
class Sig:
    name: str
    start: int
    length: int
    scale: float = 1
    offset: float = 0
    unit: str = ""
    signed: bool = False
    comment: str = ""
    choices: tuple = ()
    mux: str | int | None = None     # "M" for the multiplexer, an int for a multiplexed signal
    minimum: float | None = None
    maximum: float | None = None

    def limits(self) -> tuple[float, float]:
        lo_raw, hi_raw = ((-(1 << (self.length - 1)), (1 << (self.length - 1)) - 1) if self.signed
                          else (0, (1 << self.length) - 1))
        lo = self.minimum if self.minimum is not None else lo_raw * self.scale + self.offset
        hi = self.maximum if self.maximum is not None else hi_raw * self.scale + self.offset
        return lo, hi


@dataclass
class Msg:
    frame_id: int
    name: str
    sender: str
    receivers: str
    signals: list[Sig]
    comment: str
    cycle_ms: int = 0
    e2e: bool = False
    rx_timeout_ms: int = 0
    attributes: dict = field(default_factory=dict)
    length: int = 8
    fd: bool = False


def _protection_bits() -> str:
    from ..faults import Protection

    if len(Protection) > 24:
        raise ValueError(f"{len(Protection)} protections do not fit the 24-bit flag signals of BMS_Faults")
    return ", ".join(f"{p.value}: {p.name}" for p in Protection)


def _e2e(name: str) -> list[Sig]:
    return [Sig(f"{name}_CRC", 0, 8, comment="CRC-8 SAE J1850 over E2EDataID (low byte first) and bytes 1..7."),
            Sig(f"{name}_Counter", 8, 4, comment="Alive counter, +1 per transmission, wraps 15 -> 0.")]


def _messages(fd: bool = False) -> list[Msg]:
    msgs: list[Msg] = []
    name = "BMS_Status"
    msgs.append(Msg(0x100, name, "BMS", "VCU,CHARGER", _e2e(name) + [
        Sig("BmsState", 12, 4, choices=BMS_STATES, maximum=6, comment="State of the BMS state machine."),
        Sig("FaultLevel", 16, 2, choices=FAULT_LEVELS, comment="Highest active fault level."),
        Sig("FaultLatched", 18, 1, choices=NO_YES,
            comment="A fault is latched: contactors stay open until the DTCs are cleared."),
        Sig("ContactorMainPositive", 19, 1, choices=OPEN_CLOSED, comment="Main+ auxiliary-contact feedback."),
        Sig("ContactorMainNegative", 20, 1, choices=OPEN_CLOSED, comment="Main- auxiliary-contact feedback."),
        Sig("ContactorPrecharge", 21, 1, choices=OPEN_CLOSED, comment="Precharge auxiliary-contact feedback."),
        Sig("DischargeAllowed", 22, 1, choices=NO_YES, comment="Discharge current limit above zero."),
        Sig("ChargeAllowed", 23, 1, choices=NO_YES, comment="Charge current limit above zero."),
        Sig("BalancingActive", 24, 1, choices=NO_YES, comment="At least one series group is being bled."),
        Sig("ChargerConnected", 25, 1, choices=NO_YES, comment="The last charger status said connected."),
        Sig("CommFault", 26, 1, choices=NO_YES,
            comment="A received message timed out or failed its counter/CRC check."),
        Sig("StateRequestEcho", 27, 3, choices=STATE_REQUESTS, maximum=4,
            comment="The state request the BMS is acting on (VCU_Command after E2E checks)."),
        Sig("ActiveDtcCount", 32, 8, comment="Number of stored DTCs."),
    ], "State, contactors and fault summary of the BMS.", cycle_ms=10, e2e=True))

    name = "BMS_PackMeasurements"
    msgs.append(Msg(0x110, name, "BMS", "VCU,CHARGER", _e2e(name) + [
        Sig("PackVoltage", 16, 16, 0.02, unit="V", comment="Measured string voltage, pack side of the contactors."),
        Sig("LinkVoltage", 32, 16, 0.02, unit="V", comment="Measured DC-link voltage, load side."),
        Sig("PackCurrent", 48, 16, 0.1, unit="A", signed=True,
            comment="Measured pack current, positive when discharging."),
    ], "Measured pack voltage, DC-link voltage and current.", cycle_ms=10, e2e=True))

    name = "BMS_Limits"
    msgs.append(Msg(0x120, name, "BMS", "VCU,CHARGER", _e2e(name) + [
        Sig("DischargeCurrentLimit", 12, 13, 0.25, unit="A", comment="Largest discharge current allowed now."),
        Sig("ChargeCurrentLimit", 25, 13, 0.25, unit="A", comment="Largest charge current allowed now."),
        Sig("DischargePowerLimit", 38, 13, 0.1, unit="kW", comment="Largest discharge power allowed now."),
        Sig("ChargePowerLimit", 51, 13, 0.1, unit="kW", comment="Largest charge power allowed now."),
    ], "Current and power limits the VCU and charger must respect (state of power, derated).",
        cycle_ms=10, e2e=True))

    msgs.append(Msg(0x130, "BMS_CellVoltageStats", "BMS", "VCU", [
        Sig("CellVoltageMin", 0, 16, 0.0001, unit="V", comment="Lowest measured series-group voltage."),
        Sig("CellVoltageMax", 16, 16, 0.0001, unit="V", comment="Highest measured series-group voltage."),
        Sig("CellVoltageMinIndex", 32, 8, comment="Series group (0-based) of the lowest voltage."),
        Sig("CellVoltageMaxIndex", 40, 8, comment="Series group (0-based) of the highest voltage."),
        Sig("CellVoltageMean", 48, 16, 0.0001, unit="V", comment="Mean measured series-group voltage."),
    ], "Minimum, maximum and mean measured cell (series-group) voltage.", cycle_ms=100))

    msgs.append(Msg(0x140, "BMS_TemperatureStats", "BMS", "VCU", [
        Sig("TemperatureMin", 0, 10, 0.25, -50, unit="degC", comment="Lowest measured surface temperature."),
        Sig("TemperatureMax", 10, 10, 0.25, -50, unit="degC", comment="Highest measured surface temperature."),
        Sig("TemperatureMinIndex", 20, 8, comment="Temperature sensor (0-based) of the lowest reading."),
        Sig("TemperatureMaxIndex", 28, 8, comment="Temperature sensor (0-based) of the highest reading."),
        Sig("CoreTemperatureMax", 36, 10, 0.25, -50, unit="degC",
            comment="Highest estimated core temperature (estimator; not measured)."),
        Sig("CoreTemperatureMaxIndex", 46, 9, comment="Index (0-based) of the hottest estimated core."),
        Sig("CoreTemperatureValid", 55, 1, choices=NO_YES, comment="The core temperature estimate is available."),
    ], "Measured surface temperature extremes and the estimated core temperature.", cycle_ms=100))

    msgs.append(Msg(0x150, "BMS_SOC", "BMS", "VCU", [
        Sig("SOC", 0, 10, 0.1, unit="%", maximum=100, comment="Estimated pack state of charge."),
        Sig("SOCMin", 10, 10, 0.1, unit="%", maximum=100, comment="Lowest estimated series-group SOC."),
        Sig("SOCMax", 20, 10, 0.1, unit="%", maximum=100, comment="Highest estimated series-group SOC."),
        Sig("EnergyRemaining", 30, 16, 0.01, unit="kWh", comment="Estimated energy left to empty."),
        Sig("SOCValid", 46, 1, choices=NO_YES, comment="The SOC estimate is available."),
    ], "Estimated state of charge and remaining energy.", cycle_ms=100))

    name = "BMS_Faults"
    bits = _protection_bits()
    msgs.append(Msg(0x160, name, "BMS", "VCU", _e2e(name) + [
        Sig("FaultLevelMax", 12, 2, choices=FAULT_LEVELS, comment="Highest active fault level."),
        Sig("FaultsLatched", 14, 1, choices=NO_YES, comment="A fault is latched until cleared."),
        Sig("WarningFlags", 16, 24,
            comment=f"One bit per protection at WARNING (bit: protection): {bits}."),
        Sig("ErrorFlags", 40, 24,
            comment=f"One bit per protection at ERROR or EMERGENCY (bit: protection): {bits}."),
    ], "Active warnings and errors, one bit per protection; DTC number = 0x1A00 + bit.", cycle_ms=100,
        e2e=True))

    sop = [Sig("SopHorizon", 0, 4, mux="M", choices=tuple((i, f"HORIZON_{h}S")
                                                          for i, h in enumerate(SOP_HORIZONS_S)),
               maximum=len(SOP_HORIZONS_S) - 1, comment="Which prediction horizon this frame carries.")]
    for page, horizon in enumerate(SOP_HORIZONS_S):
        sop += [
            Sig(f"SopDischargeCurrent_{horizon}s", 4, 14, 0.25, unit="A", mux=page,
                comment=f"Estimated discharge current sustainable for {horizon} s."),
            Sig(f"SopChargeCurrent_{horizon}s", 18, 14, 0.25, unit="A", mux=page,
                comment=f"Estimated charge current sustainable for {horizon} s."),
            Sig(f"SopDischargePower_{horizon}s", 32, 16, 0.1, unit="kW", mux=page,
                comment=f"Estimated discharge power sustainable for {horizon} s."),
            Sig(f"SopChargePower_{horizon}s", 48, 16, 0.1, unit="kW", mux=page,
                comment=f"Estimated charge power sustainable for {horizon} s."),
        ]
    msgs.append(Msg(0x170, "BMS_SOP", "BMS", "VCU", sop,
                    "Estimated state of power per horizon (estimator output before the BMS's own derating); "
                    "one horizon per frame, in turn.", cycle_ms=100))

    name = "BMS_ChargeRequest"
    msgs.append(Msg(0x180, name, "BMS", "CHARGER", _e2e(name) + [
        Sig("ChargeVoltageRequest", 16, 16, 0.1, unit="V", comment="Charging voltage target."),
        Sig("ChargeCurrentRequest", 32, 16, 0.1, unit="A", comment="Charging current requested (>= 0)."),
        Sig("ChargeEnable", 48, 1, choices=NO_YES, comment="The BMS is in CHARGING and allows current."),
    ], "What the BMS asks of the charger.", cycle_ms=100, e2e=True))

    per = FD_CELLS_PER_PAGE if fd else CELLS_PER_PAGE
    cells = [Sig("CellVoltagePage", 0, 8, mux="M", maximum=N_CELL_VOLTAGES // per - 1,
                 comment=f"Page p carries series groups {per}p+1..{per}p+{per} (1-based in the signal names).")]
    for page in range(N_CELL_VOLTAGES // per):
        for j in range(per):
            k = page * per + j + 1
            cells.append(Sig(f"CellVoltage_{k:03d}", 8 + 16 * j, 16, 0.0001, unit="V", mux=page,
                             comment=f"Measured voltage of series group {k}."))
    msgs.append(Msg(0x1C0, "BMS_CellVoltages", "BMS", "VCU", cells,
                    f"Every measured series-group voltage, {per} per frame, pages in round robin "
                    f"(a pack with fewer groups sends fewer pages).", cycle_ms=10))

    per = FD_TEMPERATURES_PER_PAGE if fd else TEMPERATURES_PER_PAGE
    temps = [Sig("TemperaturePage", 0, 8, mux="M", maximum=N_TEMPERATURES // per - 1,
                 comment=f"Page p carries sensors {per}p+1..{per}p+{per} (1-based in the signal names).")]
    for page in range(N_TEMPERATURES // per):
        for j in range(per):
            k = page * per + j + 1
            temps.append(Sig(f"Temperature_{k:02d}", 8 + 12 * j, 12, 0.1, -50, unit="degC", mux=page,
                             comment=f"Measured surface temperature of sensor {k}."))
    msgs.append(Msg(0x1D0, "BMS_CellTemperatures", "BMS", "VCU", temps,
                    f"Every measured temperature, {per} per frame, pages in round robin.", cycle_ms=20))
    if fd:
        for m in msgs:
            if m.name in FD_LENGTHS:
                m.length, m.fd = FD_LENGTHS[m.name], True

    name = "VCU_Command"
    msgs.append(Msg(0x200, name, "VCU", "BMS", _e2e(name) + [
        Sig("StateRequest", 12, 4, choices=STATE_REQUESTS, maximum=4,
            comment="Requested BMS state. DRIVE and CHARGE close the contactors through precharge."),
        Sig("ContactorRequest", 16, 2, choices=CONTACTOR_REQUESTS, maximum=2,
            comment="OPEN turns a DRIVE or CHARGE request into STANDBY (open the contactors); "
                    "CLOSE or NO_REQUEST leave StateRequest as it is."),
    ], "Command from the vehicle control unit. The BMS flags a communication fault when it is missing for "
       "RxTimeoutTime or fails its counter/CRC check three times in a row.",
        cycle_ms=10, e2e=True, rx_timeout_ms=100))

    name = "CHG_Status"
    msgs.append(Msg(0x210, name, "CHARGER", "BMS", _e2e(name) + [
        Sig("ChargerConnected", 12, 1, choices=NO_YES, comment="The charger is plugged in and ready."),
        Sig("ChargerMaxVoltage", 16, 16, 0.1, unit="V", comment="Highest voltage the charger can deliver."),
        Sig("ChargerMaxCurrent", 32, 16, 0.1, unit="A", comment="Highest current the charger can deliver."),
    ], "What the charger offers.", cycle_ms=100, e2e=True, rx_timeout_ms=1000))

    msgs.append(Msg(0x300, "HIL_Load", "HIL", "BMS", [
        Sig("LoadCurrent", 0, 16, 0.1, unit="A", signed=True,
            comment="Current the emulated load draws from the DC link, positive when discharging."),
        Sig("CoolantTemperature", 16, 8, 0.5, -40, unit="degC", comment="Coolant inlet temperature."),
        Sig("CoolingFactor", 24, 8, 0.01, unit="", comment="Scale on the cooling (1 = nominal, 0 = none)."),
    ], "Bench input to the emulator's plant (not part of a real vehicle): the load current and cooling. "
       "The last value holds until the next frame.", cycle_ms=10))

    msgs.append(_fault_control())

    return msgs


# HIL_FaultControl: the scenarios' fault kinds (hil.scenario.FAULT_KINDS), one multiplexer page each
FAULT_CONTROL_KINDS = ((1, "sensor"), (2, "internal_short"), (3, "stack_pressure"), (4, "contactor_weld"),
                       (5, "coolant_loss"), (6, "vcu_silence"), (7, "can_corrupt"), (8, "bus_off"), (9, "isotp"),
                       (10, "uds_pending"))
SENSOR_CHANNELS = ((0, "cell_voltage"), (1, "temperature"), (2, "current"), (3, "pack_voltage"), (4, "link_voltage"),
                   (5, "contactor_feedback"))
SENSOR_FAULT_MODES = ((0, "open_wire"), (1, "stuck"), (2, "drift"), (3, "offset"))
CONTACTORS = ((0, "main_positive"), (1, "main_negative"), (2, "precharge"))


def _fault_control() -> Msg:
    kinds = dict((name, code) for code, name in FAULT_CONTROL_KINDS)
    return Msg(0x310, "HIL_FaultControl", "HIL", "BMS", [
        Sig("FaultKind", 0, 8, mux="M", choices=FAULT_CONTROL_KINDS, minimum=1, maximum=10,
            comment="The fault kind of the scenarios' [[fault]] tables; selects the page of the parameters."),
        Sig("Action", 8, 2, choices=((0, "INJECT"), (1, "CLEAR")), maximum=1,
            comment="INJECT the fault now, or CLEAR the injection of this kind and slot."),
        Sig("Slot", 10, 6, comment="Names the injection can<Slot>:<kind>, so several of one kind can be active."),
        Sig("ControlKey", 16, 16, comment="The 16-bit key printed with the bench-control token at start; a frame "
                                          "with another key is refused (and audited)."),
        Sig("SensorChannel", 32, 3, mux=kinds["sensor"], choices=SENSOR_CHANNELS, maximum=5,
            comment="sensor: which kind of channel."),
        Sig("SensorFault", 35, 2, mux=kinds["sensor"], choices=SENSOR_FAULT_MODES,
            comment="sensor: the fault (value below for stuck, drift, offset)."),
        Sig("SensorIndex", 37, 9, mux=kinds["sensor"], comment="sensor: the channel's index (0-based)."),
        Sig("SensorValue", 46, 18, 0.001, mux=kinds["sensor"], signed=True,
            comment="sensor: stuck value, drift per second or offset, in the channel's unit (V, degC, A)."),
        Sig("ShortCell", 32, 10, mux=kinds["internal_short"], comment="internal_short: the cell (0-based)."),
        Sig("ShortResistance", 42, 22, 0.001, unit="Ohm", mux=kinds["internal_short"],
            comment="internal_short: the short's resistance."),
        Sig("StackPressure", 32, 16, 0.001, unit="MPa", mux=kinds["stack_pressure"],
            comment="stack_pressure: the stack pressure of every cell."),
        Sig("WeldContactor", 32, 2, mux=kinds["contactor_weld"], choices=CONTACTORS, maximum=2,
            comment="contactor_weld: the contactor that welds shut."),
        Sig("FaultCoolingFactor", 32, 8, 0.01, mux=kinds["coolant_loss"],
            comment="coolant_loss: the cooling left (0 = none, 1 = nominal)."),
        Sig("CorruptWhat", 32, 1, mux=kinds["can_corrupt"], choices=((0, "counter"), (1, "crc")),
            comment="can_corrupt: the VCU model's frames fail the alive counter or the CRC check."),
        Sig("IsotpFault", 32, 2, mux=kinds["isotp"], choices=((0, "drop_cf"), (1, "reorder_cf"), (2, "wrong_sn"),
                                                             (3, "late_fc")), comment="isotp: the transport fault."),
        Sig("IsotpSide", 34, 1, mux=kinds["isotp"], choices=((0, "ecu"), (1, "tester")),
            comment="isotp: on the ECU's side or the scenario tester's."),
        Sig("IsotpIndex", 35, 8, mux=kinds["isotp"], comment="isotp: the consecutive frame's number (>= 1)."),
        Sig("IsotpDelay", 43, 16, 0.001, unit="s", mux=kinds["isotp"],
            comment="isotp: late_fc's delay (0: the default)."),
        Sig("PendingDuration", 32, 16, 0.01, unit="s", mux=kinds["uds_pending"],
            comment="uds_pending: how long the ECU answers 0x78 (0: until cleared)."),
        Sig("PendingService", 48, 8, mux=kinds["uds_pending"], comment="uds_pending: only this service (0: any)."),
    ], "Bench control (not part of a real vehicle): inject or clear a fault of the scenarios' vocabulary now. "
       "Acted on only while the live view's bench control runs (bms-emu run/serve --live); every frame is "
       "audited. Sent on event.")


def _num(x: float) -> str:
    text = f"{x:.10g}"
    return text


def render(fd: bool = False) -> str:
    """The DBC text; ``fd``: the CAN FD variant (cell voltages and temperatures in 64- and 48-byte frames with
    the bit-rate switch, everything else as in the classical DBC)."""
    msgs = _messages(fd)
    out = [f'VERSION "assb_bms{"_fd" if fd else ""} 1.1"', "", "", "NS_ :"]
    out += ["\t" + k for k in ("NS_DESC_", "CM_", "BA_DEF_", "BA_", "VAL_", "BA_DEF_DEF_", "VAL_TABLE_",
                               "SIG_VALTYPE_", "BO_TX_BU_", "BA_DEF_REL_", "BA_REL_", "BA_DEF_DEF_REL_",
                               "SG_MUL_VAL_")]
    out += ["", "BS_:", "", "BU_: BMS VCU CHARGER TESTER HIL", "", ""]
    for m in msgs:
        out.append(f"BO_ {m.frame_id} {m.name}: {m.length} {m.sender}")
        for s in m.signals:
            mux = "" if s.mux is None else (" M" if s.mux == "M" else f" m{s.mux}")
            lo, hi = s.limits()
            sign = "-" if s.signed else "+"
            out.append(f" SG_ {s.name}{mux} : {s.start}|{s.length}@1{sign} ({_num(s.scale)},{_num(s.offset)}) "
                       f"[{_num(lo)}|{_num(hi)}] \"{s.unit}\" {m.receivers}")
        out.append("")
    out.append("")
    out.append('CM_ "Emulated battery-management system of an all-solid-state 192s2p EV pack (assb-bms-emulator). '
               + ('CAN FD variant: BMS_CellVoltages and BMS_CellTemperatures are CAN FD frames (64 and 48 bytes, '
                  'bit-rate switch), every other message classical CAN; ' if fd else 'Classical CAN, ')
               + '11-bit IDs, Intel byte order. Current is positive when discharging. '
               'E2E-protected messages: <Message>_CRC in byte 0 is CRC-8 SAE J1850 (poly 0x1D, init 0xFF, '
               'xor-out 0xFF) over the E2EDataID attribute (low byte, high byte) then data bytes 1..7; '
               '<Message>_Counter in bits 8..11 counts 0..15 and wraps. Multiplexed messages send one page per '
               'frame in round robin; GenMsgCycleTime is the frame period. Diagnostics: UDS (ISO 14229-1) on '
               'ISO-TP (ISO 15765-2), requests on 0x7E0 (physical) and 0x7DF (functional), responses on 0x7E8, '
               'not described here as messages (they replace the DIAG_Request/DIAG_Response messages of '
               'version 1.0).";')
    nodes = {"BMS": "The emulated battery-management system.", "VCU": "Vehicle control unit (firmware under test).",
             "CHARGER": "Off-board or on-board charger.",
             "TESTER": "Diagnostic tester: UDS on ISO-TP, requests 0x7E0 (0x7DF functional), responses 0x7E8.",
             "HIL": "Test bench: drives the emulated plant (load current, cooling)."}
    for node, text in nodes.items():
        out.append(f'CM_ BU_ {node} "{text}";')
    for m in msgs:
        out.append(f'CM_ BO_ {m.frame_id} "{m.comment}";')
        for s in m.signals:
            if s.comment:
                out.append(f'CM_ SG_ {m.frame_id} {s.name} "{s.comment}";')
    out += [
        'BA_DEF_  "DBName" STRING ;',
        'BA_DEF_  "BusType" STRING ;',
        'BA_DEF_ BO_  "GenMsgCycleTime" INT 0 65535;',
        'BA_DEF_ BO_  "GenMsgSendType" ENUM  "Cyclic","Event";',
        'BA_DEF_ BO_  "E2EDataID" INT 0 65535;',
        'BA_DEF_ BO_  "RxTimeoutTime" INT 0 65535;',
        *(['BA_DEF_ BO_  "VFrameFormat" ENUM  "StandardCAN","ExtendedCAN","reserved","reserved","reserved",'
           '"reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved","reserved",'
           '"StandardCAN_FD","ExtendedCAN_FD";', 'BA_DEF_ BO_  "CANFD_BRS" ENUM  "0","1";'] if fd else []),
        'BA_DEF_DEF_  "DBName" "";',
        'BA_DEF_DEF_  "BusType" "CAN";',
        'BA_DEF_DEF_  "GenMsgCycleTime" 0;',
        'BA_DEF_DEF_  "GenMsgSendType" "Cyclic";',
        'BA_DEF_DEF_  "E2EDataID" 0;',
        'BA_DEF_DEF_  "RxTimeoutTime" 0;',
        *(['BA_DEF_DEF_  "VFrameFormat" "StandardCAN";', 'BA_DEF_DEF_  "CANFD_BRS" "1";'] if fd else []),
        f'BA_ "DBName" "assb_bms{"_fd" if fd else ""}";',
        f'BA_ "BusType" "{"CAN FD" if fd else "CAN"}";',
    ]
    for m in msgs:
        if m.cycle_ms:
            out.append(f'BA_ "GenMsgCycleTime" BO_ {m.frame_id} {m.cycle_ms};')
        else:
            out.append(f'BA_ "GenMsgSendType" BO_ {m.frame_id} 1;')
        if m.e2e:
            out.append(f'BA_ "E2EDataID" BO_ {m.frame_id} {m.frame_id};')
        if m.rx_timeout_ms:
            out.append(f'BA_ "RxTimeoutTime" BO_ {m.frame_id} {m.rx_timeout_ms};')
        if m.fd:
            out.append(f'BA_ "VFrameFormat" BO_ {m.frame_id} 14;')
    for m in msgs:
        for s in m.signals:
            if s.choices:
                pairs = " ".join(f'{v} "{label}"' for v, label in sorted(s.choices, reverse=True))
                out.append(f"VAL_ {m.frame_id} {s.name} {pairs} ;")
    out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(fd="--fd" in sys.argv[1:]))
