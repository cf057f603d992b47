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
  ``GenMsgCycleTime`` is the frame period and a full sweep takes pages x cycle time.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

N_CELL_VOLTAGES = 192          # series groups of the largest preset (assb60-192s2p)
CELLS_PER_PAGE = 3
N_TEMPERATURES = 24            # 12 modules x 2 sensors
TEMPERATURES_PER_PAGE = 4
SOP_HORIZONS_S = (2, 10, 30)   # pages of BMS_SOP

BMS_STATES = ((0, "INIT"), (1, "STANDBY"), (2, "PRECHARGE"), (3, "READY"), (4, "CHARGING"), (5, "FAULT"),
              (6, "SHUTDOWN"))
STATE_REQUESTS = ((0, "NONE"), (1, "STANDBY"), (2, "DRIVE"), (3, "CHARGE"), (4, "SHUTDOWN"))
FAULT_LEVELS = ((0, "NONE"), (1, "WARNING"), (2, "ERROR"), (3, "EMERGENCY"))
OPEN_CLOSED = ((0, "OPEN"), (1, "CLOSED"))
NO_YES = ((0, "NO"), (1, "YES"))
CONTACTOR_REQUESTS = ((0, "NO_REQUEST"), (1, "OPEN"), (2, "CLOSE"))
DIAG_SERVICES = ((0x14, "CLEAR_DTC"), (0x19, "READ_DTC"))
DIAG_RESPONSES = ((0x54, "CLEAR_DTC_POSITIVE"), (0x59, "READ_DTC_POSITIVE"), (0x7F, "NEGATIVE"))
NEGATIVE_CODES = ((0x11, "SERVICE_NOT_SUPPORTED"), (0x13, "INCORRECT_LENGTH"), (0x22, "CONDITIONS_NOT_CORRECT"),
                  (0x31, "REQUEST_OUT_OF_RANGE"))


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


def _protection_bits() -> str:
    from ..faults import Protection

    if len(Protection) > 24:
        raise ValueError(f"{len(Protection)} protections do not fit the 24-bit flag signals of BMS_Faults")
    return ", ".join(f"{p.value}: {p.name}" for p in Protection)


def _e2e(name: str) -> list[Sig]:
    return [Sig(f"{name}_CRC", 0, 8, comment="CRC-8 SAE J1850 over E2EDataID (low byte first) and bytes 1..7."),
            Sig(f"{name}_Counter", 8, 4, comment="Alive counter, +1 per transmission, wraps 15 -> 0.")]


def _messages() -> list[Msg]:
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

    cells = [Sig("CellVoltagePage", 0, 8, mux="M", maximum=N_CELL_VOLTAGES // CELLS_PER_PAGE - 1,
                 comment="Page p carries series groups 3p+1..3p+3 (1-based in the signal names).")]
    for page in range(N_CELL_VOLTAGES // CELLS_PER_PAGE):
        for j in range(CELLS_PER_PAGE):
            k = page * CELLS_PER_PAGE + j + 1
            cells.append(Sig(f"CellVoltage_{k:03d}", 8 + 16 * j, 16, 0.0001, unit="V", mux=page,
                             comment=f"Measured voltage of series group {k}."))
    msgs.append(Msg(0x1C0, "BMS_CellVoltages", "BMS", "VCU", cells,
                    f"Every measured series-group voltage, {CELLS_PER_PAGE} per frame, pages in round robin "
                    f"(a pack with fewer groups sends fewer pages).", cycle_ms=10))

    temps = [Sig("TemperaturePage", 0, 8, mux="M", maximum=N_TEMPERATURES // TEMPERATURES_PER_PAGE - 1,
                 comment="Page p carries sensors 4p+1..4p+4 (1-based in the signal names).")]
    for page in range(N_TEMPERATURES // TEMPERATURES_PER_PAGE):
        for j in range(TEMPERATURES_PER_PAGE):
            k = page * TEMPERATURES_PER_PAGE + j + 1
            temps.append(Sig(f"Temperature_{k:02d}", 8 + 12 * j, 12, 0.1, -50, unit="degC", mux=page,
                             comment=f"Measured surface temperature of sensor {k}."))
    msgs.append(Msg(0x1D0, "BMS_CellTemperatures", "BMS", "VCU", temps,
                    f"Every measured temperature, {TEMPERATURES_PER_PAGE} per frame, pages in round robin.",
                    cycle_ms=20))

    msgs.append(Msg(0x7E8, "DIAG_Response", "BMS", "TESTER", [
        Sig("DiagResponse", 0, 8, mux="M", choices=DIAG_RESPONSES, comment="Response service identifier."),
        Sig("ReadDtc_Index", 8, 8, mux=0x59, comment="Index of the DTC reported in this frame."),
        Sig("ReadDtc_Count", 16, 8, mux=0x59, comment="Number of stored DTCs."),
        Sig("ReadDtc_Code", 24, 24, mux=0x59, comment="DTC number (3 bytes, as SAE J2012 / ISO 14229 DTCs)."),
        Sig("ReadDtc_Status", 48, 8, mux=0x59, comment="DTC status byte (ISO 14229 bits)."),
        Sig("ReadDtc_Level", 56, 2, mux=0x59, choices=FAULT_LEVELS, comment="Fault level of the DTC."),
        Sig("ClearDtc_Cleared", 8, 8, mux=0x54, comment="Number of DTCs cleared."),
        Sig("Negative_Service", 8, 8, mux=0x7F, comment="Service that was refused."),
        Sig("Negative_Code", 16, 8, mux=0x7F, choices=NEGATIVE_CODES, comment="Negative response code."),
    ], "Answer to DIAG_Request (single frame, no ISO-TP).", cycle_ms=0))

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

    msgs.append(Msg(0x7E0, "DIAG_Request", "TESTER", "BMS", [
        Sig("DiagService", 0, 8, choices=DIAG_SERVICES, comment="0x19 reads one DTC, 0x14 clears all DTCs."),
        Sig("DiagDtcIndex", 8, 8, comment="For READ_DTC: index of the stored DTC to report."),
    ], "Diagnostic request to read or clear the BMS's fault codes (single frame, no ISO-TP).", cycle_ms=0))
    return msgs


def _num(x: float) -> str:
    text = f"{x:.10g}"
    return text


def render() -> str:
    msgs = _messages()
    out = ['VERSION "assb_bms 1.0"', "", "", "NS_ :"]
    out += ["\t" + k for k in ("NS_DESC_", "CM_", "BA_DEF_", "BA_", "VAL_", "BA_DEF_DEF_", "VAL_TABLE_",
                               "SIG_VALTYPE_", "BO_TX_BU_", "BA_DEF_REL_", "BA_REL_", "BA_DEF_DEF_REL_",
                               "SG_MUL_VAL_")]
    out += ["", "BS_:", "", "BU_: BMS VCU CHARGER TESTER HIL", "", ""]
    for m in msgs:
        out.append(f"BO_ {m.frame_id} {m.name}: 8 {m.sender}")
        for s in m.signals:
            mux = "" if s.mux is None else (" M" if s.mux == "M" else f" m{s.mux}")
            lo, hi = s.limits()
            sign = "-" if s.signed else "+"
            out.append(f" SG_ {s.name}{mux} : {s.start}|{s.length}@1{sign} ({_num(s.scale)},{_num(s.offset)}) "
                       f"[{_num(lo)}|{_num(hi)}] \"{s.unit}\" {m.receivers}")
        out.append("")
    out.append("")
    out.append('CM_ "Emulated battery-management system of an all-solid-state 192s2p EV pack (assb-bms-emulator). '
               'Classical CAN, 11-bit IDs, Intel byte order. Current is positive when discharging. '
               'E2E-protected messages: <Message>_CRC in byte 0 is CRC-8 SAE J1850 (poly 0x1D, init 0xFF, '
               'xor-out 0xFF) over the E2EDataID attribute (low byte, high byte) then data bytes 1..7; '
               '<Message>_Counter in bits 8..11 counts 0..15 and wraps. Multiplexed messages send one page per '
               'frame in round robin; GenMsgCycleTime is the frame period.";')
    nodes = {"BMS": "The emulated battery-management system.", "VCU": "Vehicle control unit (firmware under test).",
             "CHARGER": "Off-board or on-board charger.", "TESTER": "Diagnostic tester.",
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
        'BA_DEF_DEF_  "DBName" "";',
        'BA_DEF_DEF_  "BusType" "CAN";',
        'BA_DEF_DEF_  "GenMsgCycleTime" 0;',
        'BA_DEF_DEF_  "GenMsgSendType" "Cyclic";',
        'BA_DEF_DEF_  "E2EDataID" 0;',
        'BA_DEF_DEF_  "RxTimeoutTime" 0;',
        'BA_ "DBName" "assb_bms";',
        'BA_ "BusType" "CAN";',
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
    for m in msgs:
        for s in m.signals:
            if s.choices:
                pairs = " ".join(f'{v} "{label}"' for v, label in sorted(s.choices, reverse=True))
                out.append(f"VAL_ {m.frame_id} {s.name} {pairs} ;")
    out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
