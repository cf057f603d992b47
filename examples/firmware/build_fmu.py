"""Build the example VCU as an FMI 2.0 co-simulation FMU: ``python build_fmu.py example_vcu.fmu``.

Compiles vcu_fmu.c (which includes vcu.c) with the FMI headers fmpy ships, writes modelDescription.xml
and zips both into the FMU. A team's own FMU export does the same with its application.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "example_vcu"
GUID = "{8c4e810f-3df3-4a00-8276-176fa3c9f000}"
# (name, type, causality, value reference): the slot's contract names and "Message.Signal" of the DBC;
# the CHG_Status variables come before VCU_Command's: frames go out in the order of their send variables
VARIABLES = [("demand_mode", "Real", "input"), ("demand_value", "Real", "input"), ("link_voltage_V", "Real", "input"),
             ("speed_mps", "Real", "input"), ("charger_max_voltage_V", "Real", "input"),
             ("charger_max_current_A", "Real", "input"), ("BMS_Limits.DischargeCurrentLimit", "Real", "input"),
             ("BMS_Limits.ChargeCurrentLimit", "Real", "input"), ("BMS_Status.BmsState", "Integer", "input"),
             ("load_current_A", "Real", "output"), ("CHG_Status.send", "Integer", "output"),
             ("CHG_Status.ChargerConnected", "Integer", "output"), ("CHG_Status.ChargerMaxVoltage", "Real", "output"),
             ("CHG_Status.ChargerMaxCurrent", "Real", "output"), ("VCU_Command.send", "Integer", "output"),
             ("VCU_Command.StateRequest", "Integer", "output"), ("VCU_Command.ContactorRequest", "Integer", "output")]


def model_description() -> str:
    rows, outputs = [], []
    for vr, (name, kind, causality) in enumerate(VARIABLES):
        start = ' start="0"' if causality == "input" else ""
        variability = "discrete" if kind == "Integer" or causality == "output" else "continuous"
        rows.append(f'    <ScalarVariable name="{name}" valueReference="{vr}" causality="{causality}" '
                    f'variability="{variability}"><{kind}{start}/></ScalarVariable>')
        if causality == "output":
            outputs.append(f'      <Unknown index="{vr + 1}"/>')
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<fmiModelDescription fmiVersion="2.0" modelName="{MODEL}" guid="{GUID}" '
            'generationTool="examples/firmware/build_fmu.py" version="1.0.0" numberOfEventIndicators="0">\n'
            f'  <CoSimulation modelIdentifier="{MODEL}" canHandleVariableCommunicationStepSize="true"/>\n'
            '  <DefaultExperiment stepSize="0.01"/>\n  <ModelVariables>\n' + "\n".join(rows) +
            '\n  </ModelVariables>\n  <ModelStructure>\n    <Outputs>\n' + "\n".join(outputs) +
            '\n    </Outputs>\n  </ModelStructure>\n</fmiModelDescription>\n')


def build(out: Path, include: Path) -> Path:
    import fmpy
    fmi_headers = Path(fmpy.__file__).parent / "c-code"
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    with tempfile.TemporaryDirectory() as folder:
        binary = Path(folder) / "binaries" / "linux64" / f"{MODEL}.so"
        binary.parent.mkdir(parents=True)
        subprocess.run([cc, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-I", str(include), "-I",
                        str(fmi_headers), "-I", str(HERE), str(HERE / "vcu_fmu.c"), "-o", str(binary), "-lm"],
                       check=True)
        with zipfile.ZipFile(out, "w") as fmu:
            fmu.writestr("modelDescription.xml", model_description())
            fmu.write(binary, f"binaries/linux64/{MODEL}.so")
    return out


if __name__ == "__main__":
    from bms.fil import header_path
    target = Path(sys.argv[1] if len(sys.argv) > 1 else f"{MODEL}.fmu")
    print(build(target, Path(str(header_path())).parent))
