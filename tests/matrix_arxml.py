"""A small AUTOSAR 4 system description for the matrix tests (not a test module): two ECUs (BMS and VCU), a BMS
status frame and a VCU command frame, both protected by E2E profile 5 through an END-TO-END-PROTECTION-SET.

``write_arxml(path)`` writes it; cantools reads it as it reads any AUTOSAR 4 system description.
"""
from __future__ import annotations

from pathlib import Path

# frame name -> (identifier, length, sender, receiver, cycle s, data ID, [(signal, start bit, length)])
FRAMES = {
    "BMS_Status": (0x101, 8, "BMS", "VCU", 0.01, 0x0101,
                   [("BMS_Status_CRC", 0, 16), ("BMS_Status_Ctr", 16, 8), ("BMS_Mode", 24, 4),
                    ("BMS_DchgLim", 32, 16), ("BMS_ChgLim", 48, 16)]),
    "VCU_Cmd": (0x201, 8, "VCU", "BMS", 0.02, 0x0201,
                [("VCU_Cmd_CRC", 0, 16), ("VCU_Cmd_Ctr", 16, 8), ("VCU_Req", 24, 4)]),
}


def _ecu(name: str) -> str:
    return f"""
        <ECU-INSTANCE><SHORT-NAME>{name}</SHORT-NAME>
          <ASSOCIATED-COM-I-PDU-GROUP-REFS>
            <ASSOCIATED-COM-I-PDU-GROUP-REF DEST="I-SIGNAL-I-PDU-GROUP"
              >/PduGroups/{name}_TX</ASSOCIATED-COM-I-PDU-GROUP-REF>
            <ASSOCIATED-COM-I-PDU-GROUP-REF DEST="I-SIGNAL-I-PDU-GROUP"
              >/PduGroups/{name}_RX</ASSOCIATED-COM-I-PDU-GROUP-REF>
          </ASSOCIATED-COM-I-PDU-GROUP-REFS>
        </ECU-INSTANCE>"""


def _group(name: str, direction: str, pdus: list[str]) -> str:
    refs = "".join(f"""
            <I-SIGNAL-I-PDU-REF-CONDITIONAL>
              <I-SIGNAL-I-PDU-REF DEST="I-SIGNAL-I-PDU">/Pdus/{p}</I-SIGNAL-I-PDU-REF>
            </I-SIGNAL-I-PDU-REF-CONDITIONAL>""" for p in pdus)
    return f"""
        <I-SIGNAL-I-PDU-GROUP><SHORT-NAME>{name}</SHORT-NAME>
          <COMMUNICATION-DIRECTION>{direction}</COMMUNICATION-DIRECTION>
          <I-SIGNAL-I-PDUS>{refs}
          </I-SIGNAL-I-PDUS>
        </I-SIGNAL-I-PDU-GROUP>"""


def _pdu(name: str, length: int, cycle_s: float, signals) -> str:
    mappings = "".join(f"""
            <I-SIGNAL-TO-I-PDU-MAPPING><SHORT-NAME>{s}</SHORT-NAME>
              <I-SIGNAL-REF DEST="I-SIGNAL">/Signals/{s}</I-SIGNAL-REF>
              <PACKING-BYTE-ORDER>MOST-SIGNIFICANT-BYTE-LAST</PACKING-BYTE-ORDER>
              <START-POSITION>{start}</START-POSITION>
            </I-SIGNAL-TO-I-PDU-MAPPING>""" for s, start, _ in signals)
    return f"""
        <I-SIGNAL-I-PDU><SHORT-NAME>{name}</SHORT-NAME>
          <LENGTH>{length}</LENGTH>
          <I-PDU-TIMING-SPECIFICATIONS><I-PDU-TIMING><TRANSMISSION-MODE-DECLARATION>
            <TRANSMISSION-MODE-TRUE-TIMING><CYCLIC-TIMING><TIME-PERIOD><VALUE>{cycle_s}</VALUE></TIME-PERIOD>
            </CYCLIC-TIMING></TRANSMISSION-MODE-TRUE-TIMING>
          </TRANSMISSION-MODE-DECLARATION></I-PDU-TIMING></I-PDU-TIMING-SPECIFICATIONS>
          <I-SIGNAL-TO-PDU-MAPPINGS>{mappings}
          </I-SIGNAL-TO-PDU-MAPPINGS>
        </I-SIGNAL-I-PDU>"""


def arxml_text() -> str:
    ecus = "".join(_ecu(n) for n in ("BMS", "VCU"))
    groups = "".join(_group(f"{ecu}_{d}", direction, [f for f, v in FRAMES.items() if v[2 if d == "TX" else 3] == ecu])
                     for ecu in ("BMS", "VCU") for d, direction in (("TX", "OUT"), ("RX", "IN")))
    triggerings = "".join(f"""
                    <CAN-FRAME-TRIGGERING><SHORT-NAME>{f}</SHORT-NAME>
                      <FRAME-REF DEST="CAN-FRAME">/Frames/{f}</FRAME-REF>
                      <CAN-ADDRESSING-MODE>STANDARD</CAN-ADDRESSING-MODE>
                      <IDENTIFIER>{v[0]}</IDENTIFIER>
                    </CAN-FRAME-TRIGGERING>""" for f, v in FRAMES.items())
    frames = "".join(f"""
        <CAN-FRAME><SHORT-NAME>{f}</SHORT-NAME>
          <FRAME-LENGTH>{v[1]}</FRAME-LENGTH>
          <PDU-TO-FRAME-MAPPINGS>
            <PDU-TO-FRAME-MAPPING><SHORT-NAME>{f}</SHORT-NAME>
              <PDU-REF DEST="I-SIGNAL-I-PDU">/Pdus/{f}</PDU-REF>
              <PACKING-BYTE-ORDER>MOST-SIGNIFICANT-BYTE-LAST</PACKING-BYTE-ORDER>
              <START-POSITION>0</START-POSITION>
            </PDU-TO-FRAME-MAPPING>
          </PDU-TO-FRAME-MAPPINGS>
        </CAN-FRAME>""" for f, v in FRAMES.items())
    pdus = "".join(_pdu(f, v[1], v[4], v[6]) for f, v in FRAMES.items())
    signals = "".join(f"""
        <I-SIGNAL><SHORT-NAME>{s}</SHORT-NAME>
          <LENGTH>{length}</LENGTH>
          <SYSTEM-SIGNAL-REF DEST="SYSTEM-SIGNAL">/SystemSignals/{s}</SYSTEM-SIGNAL-REF>
        </I-SIGNAL>""" for v in FRAMES.values() for s, _, length in v[6])
    system_signals = "".join(f"""
        <SYSTEM-SIGNAL><SHORT-NAME>{s}</SHORT-NAME></SYSTEM-SIGNAL>""" for v in FRAMES.values() for s, _, _ in v[6])
    protections = "".join(f"""
            <END-TO-END-PROTECTION><SHORT-NAME>{f}_E2E</SHORT-NAME>
              <END-TO-END-PROFILE><SHORT-NAME>{f}_P05</SHORT-NAME>
                <CATEGORY>PROFILE_05</CATEGORY>
                <DATA-IDS><DATA-ID>{v[5]}</DATA-ID></DATA-IDS>
              </END-TO-END-PROFILE>
              <END-TO-END-PROTECTION-I-SIGNAL-I-PDUS>
                <END-TO-END-PROTECTION-I-SIGNAL-I-PDU>
                  <I-SIGNAL-I-PDU-REF DEST="I-SIGNAL-I-PDU">/Pdus/{f}</I-SIGNAL-I-PDU-REF>
                </END-TO-END-PROTECTION-I-SIGNAL-I-PDU>
              </END-TO-END-PROTECTION-I-SIGNAL-I-PDUS>
            </END-TO-END-PROTECTION>""" for f, v in FRAMES.items())

    def package(name: str, elements: str) -> str:
        return f"""
    <AR-PACKAGE><SHORT-NAME>{name}</SHORT-NAME>
      <ELEMENTS>{elements}
      </ELEMENTS>
    </AR-PACKAGE>"""
    cluster = f"""
        <CAN-CLUSTER><SHORT-NAME>Powertrain</SHORT-NAME>
          <CAN-CLUSTER-VARIANTS><CAN-CLUSTER-CONDITIONAL>
            <BAUDRATE>500000</BAUDRATE>
            <PHYSICAL-CHANNELS>
              <CAN-PHYSICAL-CHANNEL><SHORT-NAME>Channel0</SHORT-NAME>
                <FRAME-TRIGGERINGS>{triggerings}
                </FRAME-TRIGGERINGS>
              </CAN-PHYSICAL-CHANNEL>
            </PHYSICAL-CHANNELS>
            <PROTOCOL-VERSION>can2.0b</PROTOCOL-VERSION>
          </CAN-CLUSTER-CONDITIONAL></CAN-CLUSTER-VARIANTS>
        </CAN-CLUSTER>"""
    e2e = f"""
        <END-TO-END-PROTECTION-SET><SHORT-NAME>Protections</SHORT-NAME>
          <END-TO-END-PROTECTIONS>{protections}
          </END-TO-END-PROTECTIONS>
        </END-TO-END-PROTECTION-SET>"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<AUTOSAR xmlns="http://autosar.org/schema/r4.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="http://autosar.org/schema/r4.0 AUTOSAR_00046.xsd">
  <AR-PACKAGES>{package("Ecus", ecus)}{package("PduGroups", groups)}{package("Clusters", cluster)}\
{package("Frames", frames)}{package("Pdus", pdus)}{package("Signals", signals)}\
{package("SystemSignals", system_signals)}{package("E2E", e2e)}
  </AR-PACKAGES>
</AUTOSAR>
"""


MAP = """
[matrix]
file = "bms.arxml"
node = "BMS"

[publish]
discharge_current_limit_A = { message = "BMS_Status", signal = "BMS_DchgLim" }
charge_current_limit_A = { message = "BMS_Status", signal = "BMS_ChgLim" }

[publish.state]              # the matrix has no value tables: raw numbers
message = "BMS_Status"
signal = "BMS_Mode"
enum = { INIT = 0, STANDBY = 1, PRECHARGE = 2, READY = 3, CHARGING = 4, FAULT = 5, SHUTDOWN = 6 }

[receive]
state_request = { message = "VCU_Cmd", signal = "VCU_Req", timeout_s = 0.1 }

[e2e.BMS_Status]             # profile and data ID from the ARXML's END-TO-END-PROTECTION
crc_signal = "BMS_Status_CRC"
counter_signal = "BMS_Status_Ctr"

[e2e.VCU_Cmd]
crc_signal = "VCU_Cmd_CRC"
counter_signal = "VCU_Cmd_Ctr"
"""


def write_arxml(folder: Path) -> Path:
    """The ARXML and its map in ``folder``; returns the map's path."""
    (folder / "bms.arxml").write_text(arxml_text(), encoding="utf-8")
    path = folder / "arxml_map.toml"
    path.write_text(MAP, encoding="utf-8")
    return path
