"""Builds the compiled kernels only (every ext/*.pyx into bms._ext); all metadata lives in pyproject.toml."""
import os
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

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
