"""Builds the example C VCU (examples/firmware/vcu.c) with the system C compiler, once per session: as it ships,
and with its deliberately seeded bug (-DVCU_SEEDED_BUG: regeneration below 5 degC ignores the charge limit).
A firmware team replaces this with its own build, or passes --bms-firmware."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bms.fil import header_path
from hil.testing import firmware_spec

VCU_C = Path(__file__).resolve().parent.parent / "firmware" / "vcu.c"


def _build(folder: Path, name: str, *defines: str) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler on this machine (the example VCU is built by the tests)")
    out = folder / f"lib{name}.so"
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", *defines, "-I", str(Path(str(header_path())).parent),
                    "-shared", "-fPIC", str(VCU_C), "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def example_vcu(tmp_path_factory):
    """The example C VCU as a library in the VCU slot."""
    return firmware_spec(str(_build(tmp_path_factory.mktemp("vcu"), "vcu")), role="vcu")


@pytest.fixture(scope="session")
def buggy_vcu(tmp_path_factory):
    """The example C VCU with its seeded bug."""
    return firmware_spec(str(_build(tmp_path_factory.mktemp("vcu-bug"), "vcu_bug", "-DVCU_SEEDED_BUG")), role="vcu")
