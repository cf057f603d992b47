"""Builds the example firmware (examples/firmware/) and the test firmware (tests/firmware/) with the system C
compiler: each as a shared library (kind "library") and as a program with bms_fil_process.c (kind "process")."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from bms.fil import header_path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {"vcu": ROOT / "examples" / "firmware" / "vcu.c", "bms": ROOT / "examples" / "firmware" / "bms.c",
           "misbehave": ROOT / "tests" / "firmware" / "misbehave.c"}
EXAMPLE_DBC = ROOT / "examples" / "firmware" / "example_bms.dbc"


def compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler on this machine (the firmware examples are built by the tests)")
    return cc


def build(folder: Path) -> dict[str, Path]:
    """``{name}.so`` and ``{name}`` (a process) for every source; compiler warnings are errors."""
    cc = compiler()
    include = Path(str(header_path())).parent
    process_c = include.parent / "c" / "bms_fil_process.c"
    out = {}
    for name, source in SOURCES.items():
        lib, exe = folder / f"lib{name}.so", folder / name
        flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-I", str(include)]
        subprocess.run([cc, *flags, "-shared", "-fPIC", str(source), "-o", str(lib), "-lm"], check=True)
        subprocess.run([cc, *flags, str(source), str(process_c), "-o", str(exe), "-lm"], check=True)
        out[f"lib{name}"], out[name] = lib, exe
    try:  # the VCU as an FMU too, where fmpy (the fmu extra) is installed
        import fmpy  # noqa: F401
    except ImportError:
        return out
    spec = importlib.util.spec_from_file_location("build_fmu", ROOT / "examples" / "firmware" / "build_fmu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out["vcu.fmu"] = module.build(folder / "example_vcu.fmu", include)
    return out
