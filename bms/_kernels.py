"""Chooses the compiled kernels or their NumPy twins, never falling back silently.

``BMS_KERNELS=numpy`` selects the twins on purpose; the default, ``compiled``, imports the Cython
build (``bms._ext``) and fails loudly if it is missing or broken. Each kernel module has the same name
in ``bms._ext`` and ``bms._twin``: ``KERNELS.plant``, ``KERNELS.sensors`` …

Of the compiled ones, the floating-point kernels also come built with AVX2 (``bms._ext.avx2``, no FMA: the same
bits); ``BMS_ISA`` chooses: ``auto`` (the default: AVX2 where the CPU has it and the build made them),
``baseline`` or ``avx2`` (an error where it cannot run). ``KERNELS.isa`` says which.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .errors import KernelBuildError

ENV_VAR = "BMS_KERNELS"
CHOICES = ("compiled", "numpy")
ISA_VAR = "BMS_ISA"
ISA_CHOICES = ("auto", "baseline", "avx2")
AVX2_KERNELS = ("plant", "sensors", "estimators", "protection", "bms_tick")   # as setup.py builds them


class KernelSet:
    """Kernel modules of one backend, imported on first use."""

    def __init__(self, name: str, isa: str | None = None):
        if name not in CHOICES:
            raise KernelBuildError(f"{ENV_VAR}={name!r}: expected one of {CHOICES}")
        self.name = name
        self._package = "bms._ext" if name == "compiled" else "bms._twin"
        self.isa = _choose_isa((isa or os.environ.get(ISA_VAR) or "auto").strip().lower()) \
            if name == "compiled" else "numpy"

    def __getattr__(self, module: str):
        if module.startswith("_") or importlib.util.find_spec(f"bms._twin.{module}") is None:
            raise AttributeError(f"no kernel named {module!r}")
        package = "bms._ext.avx2" if self.isa == "avx2" and module in AVX2_KERNELS else self._package
        try:
            loaded = importlib.import_module(f"{package}.{module}")
        except ImportError as exc:
            if self.name == "compiled":
                other = f" ({ISA_VAR}=baseline takes the baseline build)" if package != self._package else ""
                raise KernelBuildError(f"the compiled kernel {package}.{module} cannot be imported ({exc}): "
                                       f"{_why_not_built()}{other} Or set {ENV_VAR}=numpy to run the slow NumPy "
                                       "twins on purpose.") from exc
            raise
        setattr(self, module, loaded)
        return loaded

    def __repr__(self):
        return f"KernelSet({self.name!r}, isa={self.isa!r})"


def _choose_isa(choice: str) -> str:
    """``baseline`` or ``avx2`` for ``BMS_ISA=choice``."""
    if choice not in ISA_CHOICES:
        raise KernelBuildError(f"{ISA_VAR}={choice!r}: expected one of {ISA_CHOICES}")
    if choice == "baseline":
        return choice
    try:
        from ._ext.cpu import has_avx2
    except ImportError:  # a tree built before the AVX2 kernels: the baseline ones (their import says if broken)
        cpu = False
    else:
        cpu = has_avx2()
    built = cpu and importlib.util.find_spec("bms._ext.avx2.plant") is not None
    if choice == "avx2" and not built:
        raise KernelBuildError(f"{ISA_VAR}=avx2: " + ("the AVX2 kernels were not built (pip install -e . builds them "
                                                        "on x86-64 unless BMS_AVX2=0 or BMS_MARCH is set)" if cpu
                                                        else "this CPU (or its OS) has no AVX2"))
    return "avx2" if built else "baseline"


def _why_not_built() -> str:
    """What is really wrong when the kernels do not import, and what to do (a source tree that shadows an
    installed package, a tree never built, a build for another Python)."""
    import json
    from importlib import metadata
    from pathlib import Path
    from urllib.parse import unquote

    here = Path(__file__).resolve().parent            # the bms package Python imported
    root = here.parent
    built = sorted(p.name for p in (here / "_ext").glob("*.so")) + sorted(p.name for p in (here / "_ext").glob("*.pyd"))
    if built:
        return (f"{here / '_ext'} holds {', '.join(built)}, built for another Python or from other sources than "
                f"this {sys.version.split()[0]}; rebuild them: pip install -e . in {root}.")
    installed = None
    try:
        dist = metadata.distribution("assb-bms-emulator")
        for file in dist.files or ():
            if file.name.startswith("plant.") and file.suffix in (".so", ".pyd"):
                installed = Path(str(dist.locate_file(file))).resolve().parent.parent
        origin = json.loads(dist.read_text("direct_url.json") or "{}")
        if origin.get("dir_info", {}).get("editable") and origin.get("url", "").startswith("file://"):
            tree = Path(unquote(origin["url"][len("file://"):])) / "bms"   # an editable install elsewhere
            installed = tree if any((tree / "_ext").glob("plant.*")) else installed
    except metadata.PackageNotFoundError:
        pass
    if installed is not None and installed != here:
        return (f"Python imported the source tree {here} (it puts the current folder or the script's folder first "
                f"on its path), which has no compiled kernels, ahead of the installed package {installed}, which "
                f"has them. Install in place instead (pip install -e . in {root} builds the kernels into the "
                f"tree), or run from another folder (python -P ignores the current folder).")
    return (f"the kernels were never built in {here / '_ext'}; in {root}: pip install -e . (a C compiler is "
            "needed; the build's errors are in pip's output, pip install -v -e . shows them all).")


def load(choice: str | None = None, isa: str | None = None) -> KernelSet:
    return KernelSet((choice or os.environ.get(ENV_VAR) or "compiled").strip().lower(), isa)


KERNELS = load()
KERNELS.plant  # noqa: B018 - a broken build fails at import, loudly
