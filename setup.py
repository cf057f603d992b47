"""Builds the compiled kernels only (every ext/*.pyx into bms._ext); all metadata lives in pyproject.toml."""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(f"bms._ext.{source.stem}", [str(source)],
              extra_compile_args=["-O3", "-fno-math-errno", "-fno-trapping-math"])
    for source in sorted(Path("ext").glob("*.pyx"))
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
