"""Writes the example vehicle matrix ``ev_fd_bms.dbc``: a BMS matrix structured unlike the emulator's own DBC.

CAN FD frames (64-byte cell-voltage frames, a 64-byte thermal frame, a 32-byte power frame), big-endian
(Motorola) signals, 29-bit identifiers for the state and the VCU command, other names, units (mV, W, Wh, SOC
as 0..1, current positive when charging), other value tables, AUTOSAR E2E profile 5 on the state, power and
command frames, and a version frame the map leaves alone (sent with its initial values).

    python -m hil.matrix.examples.generate ev_fd_bms.dbc
"""
from __future__ import annotations

import sys
from collections import OrderedDict

import cantools
from cantools.database import Message, Signal
from cantools.database.conversion import BaseConversion

BMS, VCU, OBC = "BMS_ECU", "VCU", "OBC"


def be(name, byte, length, scale=1.0, offset=0.0, lo=None, hi=None, unit=None, signed=False, choices=None,
       receivers=(VCU,), initial=None):
    """A big-endian signal whose most significant bit is bit 7 of ``byte`` (Motorola, DBC numbering)."""
    return Signal(name, 8 * byte + 7, length, "big_endian", signed, raw_initial=initial,
                  conversion=BaseConversion.factory(scale, offset, OrderedDict(choices) if choices else None),
                  minimum=lo, maximum=hi, unit=unit, receivers=list(receivers))


def le(name, start, length, scale=1.0, offset=0.0, lo=None, hi=None, unit=None, choices=None, receivers=(VCU,),
       initial=None):
    return Signal(name, start, length, "little_endian", False, raw_initial=initial,
                  conversion=BaseConversion.factory(scale, offset, OrderedDict(choices) if choices else None),
                  minimum=lo, maximum=hi, unit=unit, receivers=list(receivers))


def e2e_header(prefix, receivers=(VCU,)):
    """Profile 5 header at offset 0: CRC-16 little-endian in bytes 0-1, the counter in byte 2."""
    return [le(f"{prefix}_CRC", 0, 16, receivers=receivers), le(f"{prefix}_AliveCtr", 16, 8, receivers=receivers)]


YES = {0: "False", 1: "True"}
MODES = {0: "Off", 1: "Startup", 2: "Standby", 3: "PreCharge", 4: "Operational", 5: "Charging", 6: "Error",
         7: "PowerDown"}
REQUESTS = {0: "Idle", 1: "Standby", 2: "HvOn", 3: "HvCharge", 7: "PowerDown"}
RELAY = {0: "NoAction", 1: "Close", 2: "Open"}


def messages() -> list[Message]:
    out = []
    state = e2e_header("BMS_St") + [
        be("BMS_OpMode", 3, 4, choices=MODES, hi=7), be("BMS_FaultClass", 4, 2, hi=3),
        be("BMS_FaultLatch", 5, 1, choices=YES), be("BMS_RlyMainPos", 6, 1, choices=YES),
        be("BMS_RlyMainNeg", 7, 1, choices=YES), be("BMS_RlyPre", 8, 1, choices=YES),
        be("BMS_DchgEna", 9, 1, choices=YES), be("BMS_ChgEna", 10, 1, choices=YES),
        be("BMS_BalActive", 11, 1, choices=YES), be("BMS_ChgPlug", 12, 1, choices=YES),
        be("BMS_ComFlt", 13, 1, choices=YES), be("BMS_ReqEcho", 14, 4, choices=REQUESTS, hi=7),
        be("BMS_DtcCnt", 15, 8, hi=255)]
    out.append(Message(0x18FF1040, "BMS_State", 16, state, senders=[BMS], cycle_time=10, is_extended_frame=True,
                       is_fd=True, comment="BMS state; E2E profile 5, data ID 0x1040."))
    power = e2e_header("BMS_Pw") + [
        be("BMS_PackU", 3, 16, 0.05, 0, 0, 3276.75, "V"), be("BMS_LinkU", 5, 16, 0.05, 0, 0, 3276.75, "V"),
        be("BMS_PackI", 7, 24, 0.001, 0, -8388.608, 8388.607, "A", signed=True),
        be("BMS_DchgILim", 10, 16, 0.1, 0, 0, 6553.5, "A"), be("BMS_ChgILim", 12, 16, 0.1, 0, 0, 6553.5, "A"),
        be("BMS_DchgPLim", 14, 16, 50, 0, 0, 3276750, "W"), be("BMS_ChgPLim", 16, 16, 50, 0, 0, 3276750, "W")]
    out.append(Message(0x120, "BMS_Power", 24, power, senders=[BMS], cycle_time=10, is_fd=True,
                       comment="Pack measurements and limits; E2E profile 5, data ID 0x0120."))
    sop, byte = [], 0
    for horizon in ("2s", "10s", "30s"):
        for name, unit, scale in (("DchgI", "A", 0.1), ("ChgI", "A", 0.1), ("DchgP", "W", 100), ("ChgP", "W", 100)):
            sop.append(be(f"BMS_Sop{name}_{horizon}", byte, 16, scale, 0, 0, 65535 * scale, unit))
            byte += 2
    out.append(Message(0x126, "BMS_Sop", 24, sop, senders=[BMS], cycle_time=100, is_fd=True,
                       comment="State of power for 2 s, 10 s and 30 s, every horizon in one frame."))
    out.append(Message(0x121, "BMS_Energy", 8, [
        be("BMS_SoC", 0, 16, 0.0001, 0, 0, 1, ""), be("BMS_SoCLo", 2, 16, 0.0001, 0, 0, 1, ""),
        be("BMS_SoCHi", 4, 16, 0.0001, 0, 0, 1, ""), be("BMS_EnergyAvail", 6, 15, 25, 0, 0, 819175, "Wh"),
        le("BMS_SoCOk", 56, 1, choices=YES)], senders=[BMS], cycle_time=100, comment="SOC as 0..1, energy in Wh."))
    cells = [be("BMS_CellUMin", 0, 16, 0.1, 0, 0, 6553.5, "mV"), be("BMS_CellUMax", 2, 16, 0.1, 0, 0, 6553.5, "mV"),
             be("BMS_CellUMean", 4, 16, 0.1, 0, 0, 6553.5, "mV"), le("BMS_CellUMinNo", 48, 8, lo=0, hi=255),
             le("BMS_CellUMaxNo", 56, 8, lo=0, hi=255)]
    out.append(Message(0x122, "BMS_CellStat", 8, cells, senders=[BMS], cycle_time=100))
    thermal = [be("BMS_TMin", 0, 16, 0.1, -100, -100, 6453.5, "degC"), be("BMS_TMax", 2, 16, 0.1, -100, -100, 6453.5,
                                                                          "degC"),
               be("BMS_TMinNo", 4, 8, hi=255), be("BMS_TMaxNo", 5, 8, hi=255),
               be("BMS_TCoreMax", 6, 16, 0.1, -100, -100, 6453.5, "degC"), be("BMS_TCoreMaxNo", 8, 16, hi=65535),
               be("BMS_TCoreOk", 10, 8, choices=YES, hi=1)]
    for k in range(24):
        thermal.append(be(f"BMS_T{k + 1:02d}", 16 + 2 * k, 16, 0.1, -100, -100, 6453.5, "degC"))
    out.append(Message(0x123, "BMS_Thermal", 64, thermal, senders=[BMS], cycle_time=100, is_fd=True))
    for block in range(6):
        signals = [be(f"BMS_CellU{32 * block + k + 1:03d}", 2 * k, 16, 0.1, 0, 0, 6553.5, "mV") for k in range(32)]
        out.append(Message(0x130 + block, f"BMS_CellVolt{block + 1}", 64, signals, senders=[BMS], cycle_time=100,
                           is_fd=True, comment=f"Cells {32 * block + 1}..{32 * block + 32}, mV."))
    faults = [be("BMS_FltClassMax", 0, 2, hi=3), be("BMS_FltLatched", 1, 1, choices=YES),
              be("BMS_WarnBits", 2, 24, hi=16777215), be("BMS_ErrBits", 5, 24, hi=16777215)]
    out.append(Message(0x124, "BMS_Faults", 8, faults, senders=[BMS], cycle_time=100))
    out.append(Message(0x125, "BMS_ChgDemand", 8, [
        be("BMS_ChgUDem", 0, 16, 0.1, 0, 0, 6553.5, "V", receivers=(OBC,)),
        be("BMS_ChgIDem", 2, 16, 0.1, 0, 0, 6553.5, "A", receivers=(OBC,)),
        be("BMS_ChgOn", 4, 1, choices=YES, receivers=(OBC,))], senders=[BMS], cycle_time=100))
    out.append(Message(0x1FF, "BMS_Version", 8, [be("BMS_SwMajor", 0, 8, initial=3, receivers=(VCU,)),
                                                 be("BMS_SwMinor", 1, 8, initial=14, receivers=(VCU,)),
                                                 be("BMS_MatrixRev", 2, 8, initial=2, receivers=(VCU,))],
                       senders=[BMS], cycle_time=1000, comment="Not mapped: sent with its initial values."))
    command = e2e_header("VCU_Cmd", receivers=(BMS,)) + [
        be("VCU_BmsModeReq", 3, 3, choices=REQUESTS, hi=7, receivers=(BMS,)),
        be("VCU_HvRelayReq", 4, 2, choices=RELAY, hi=2, receivers=(BMS,))]
    out.append(Message(0x18FF0010, "VCU_BmsCmd", 8, command, senders=[VCU], cycle_time=20, is_extended_frame=True,
                       comment="The VCU's command to the BMS; E2E profile 5, data ID 0x0010."))
    out.append(Message(0x300, "OBC_Offer", 8, [
        be("OBC_Plugged", 0, 1, choices=YES, receivers=(BMS,)), be("OBC_MaxU", 1, 16, 0.1, 0, 0, 6553.5, "V",
                                                                   receivers=(BMS,)),
        be("OBC_MaxI", 3, 16, 0.1, 0, 0, 6553.5, "A", receivers=(BMS,))], senders=[OBC], cycle_time=100))
    return out


_FORMATS = ",".join(['"StandardCAN"', '"ExtendedCAN"'] + ['"reserved"'] * 12 + ['"StandardCAN_FD"', '"ExtendedCAN_FD"'])
# a CAN FD bus: cantools then writes each message's VFrameFormat (StandardCAN_FD, ExtendedCAN_FD ...)
HEADER = f"""VERSION "ev_fd_bms 2.0"
NS_ :
BS_:
BU_: {BMS} {VCU} {OBC}
BA_DEF_ "BusType" STRING ;
BA_DEF_ BO_ "VFrameFormat" ENUM {_FORMATS};
BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;
BA_DEF_DEF_ "BusType" "";
BA_DEF_DEF_ "VFrameFormat" "StandardCAN";
BA_DEF_DEF_ "GenMsgCycleTime" 0;
BA_ "BusType" "CAN FD";
"""


def database() -> cantools.database.Database:
    db = cantools.database.load_string(HEADER, database_format="dbc")
    assert isinstance(db, cantools.database.can.Database)
    db.messages.extend(messages())
    db.refresh()
    return db


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "ev_fd_bms.dbc"
    cantools.database.dump_file(database(), path)
    print(f"wrote {path}")
