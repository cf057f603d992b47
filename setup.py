"""Builds the compiled kernels only (every ext/*.pyx into bms._ext); all metadata lives in pyproject.toml."""
import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(f"bms._ext.{source.stem}", [str(source)],
              extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math"])
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
