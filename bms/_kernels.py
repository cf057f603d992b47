"""Chooses the compiled kernels or their NumPy twins, never falling back silently.

``BMS_KERNELS=numpy`` selects the twins on purpose; the default, ``compiled``, imports the Cython
build (``bms._ext``) and fails loudly if it is missing or broken. Each kernel module has the same name
in ``bms._ext`` and ``bms._twin``: ``KERNELS.plant``, ``KERNELS.sensors`` …
"""
from __future__ import annotations

import importlib
import importlib.util
import os

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
                raise KernelBuildError(
                    f"the compiled kernel bms._ext.{module} cannot be imported: {exc}. Reinstall the "
                    f"package (pip install .) so the Cython extensions are built, or set {ENV_VAR}=numpy "
                    "to run the slow NumPy twins on purpose.") from exc
            raise
        setattr(self, module, loaded)
        return loaded

    def __repr__(self):
        return f"KernelSet({self.name!r})"


def load(choice: str | None = None) -> KernelSet:
    return KernelSet((choice or os.environ.get(ENV_VAR) or "compiled").strip().lower())


KERNELS = load()
KERNELS.plant  # a broken build fails at import, loudly
