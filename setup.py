"""Builds the compiled kernels only (every ext/*.pyx into bms._ext); all metadata lives in pyproject.toml."""
import os
import platform
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# opt-in, for the machine it runs on (never the default wheel): BMS_MARCH=native pip install . adds -march=native
# (AVX2/AVX-512, FMA contraction: results differ from the default build in the last bits, within the twins' 1e-9)
_MARCH = [f"-march={os.environ['BMS_MARCH']}"] if os.environ.get("BMS_MARCH") else []
extensions = [
    Extension(f"bms._ext.{source.stem}", [str(source)], include_dirs=["bms/fil/include"],
              extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math", *_MARCH])
    for source in sorted(Path("ext").glob("*.pyx"))
    # developers may rebuild a subset in place: BMS_BUILD_ONLY=plant,sensors python setup.py build_ext -i
    if not os.environ.get("BMS_BUILD_ONLY") or source.stem in os.environ["BMS_BUILD_ONLY"].split(",")
]

# the floating-point kernels once more with AVX2 (bms._ext.avx2), chosen at import where the CPU has it: gcc then
# vectorises 4 doubles wide; no FMA (-mavx2 alone), so the results are the baseline's bits. BMS_AVX2=0 skips them;
# a BMS_MARCH build has no need of them.
AVX2_KERNELS = ("plant", "sensors", "estimators", "protection", "bms_tick")
_AVX2 = (platform.machine().lower() in ("x86_64", "amd64") and not sys.platform.startswith("win") and not _MARCH
         and os.environ.get("BMS_AVX2", "1") != "0")
avx2_extensions = [
    Extension(f"bms._ext.avx2.{ext.name.rsplit('.', 1)[1]}", ext.sources, include_dirs=ext.include_dirs,
              extra_compile_args=[*ext.extra_compile_args, "-mavx2"])
    for ext in extensions if _AVX2 and ext.name.rsplit(".", 1)[1] in AVX2_KERNELS
]
DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False, "cdivision": True,
              "initializedcheck": False}

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES)
    # generated apart: the same .pyx under another module name gives another .c
    + (cythonize(avx2_extensions, compiler_directives=DIRECTIVES, build_dir="build/cython-avx2")
       if avx2_extensions else [])
)
