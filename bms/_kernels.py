"""Chooses the compiled kernels or their NumPy twins, never falling back silently.

``BMS_KERNELS=numpy`` selects the twins on purpose; the default, ``compiled``, imports the Cython
build (``bms._ext``) and fails loudly if it is missing or broken. Each kernel module has the same name
in ``bms._ext`` and ``bms._twin``: ``KERNELS.plant``, ``KERNELS.sensors`` …
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .errors import KernelBuildError

ENV_VAR = "BMS_KERNELS"
CHOICES = ("compiled", "numpy")


class KernelSet:
    """Kernel modules of one backend, imported on first use."""

    def __init__(self, name: str):
        if name not in CHOICES:
            raise KernelBuildError(f"{ENV_VAR}={name!r}: expected one of {CHOICES}")
        self.name = name
        self._package = "bms._ext" if name == "compiled" else "bms._twin"

    def __getattr__(self, module: str):
        if module.startswith("_") or importlib.util.find_spec(f"bms._twin.{module}") is None:
            raise AttributeError(f"no kernel named {module!r}")
        try:
            loaded = importlib.import_module(f"{self._package}.{module}")
        except ImportError as exc:
            if self.name == "compiled":
                raise KernelBuildError(f"the compiled kernel bms._ext.{module} cannot be imported ({exc}): "
                                       f"{_why_not_built()} Or set {ENV_VAR}=numpy to run the slow NumPy twins "
                                       "on purpose.") from exc
            raise
        setattr(self, module, loaded)
        return loaded

    def __repr__(self):
        return f"KernelSet({self.name!r})"


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


def load(choice: str | None = None) -> KernelSet:
    return KernelSet((choice or os.environ.get(ENV_VAR) or "compiled").strip().lower())


KERNELS = load()
KERNELS.plant  # noqa: B018 - a broken build fails at import, loudly
