"""The package's exceptions: one root, specific subclasses that say where and what."""
from __future__ import annotations


class BmsError(Exception):
    """Root of every error this package raises on purpose."""


class ParameterError(BmsError, ValueError):
    """A parameter is missing, malformed or out of range.

    ``key`` is the dotted name (``cell.ocv_V``), ``source`` the file it came from (if any)
    and ``line`` its line in that file (if known).
    """

    def __init__(self, key: str, expected: str, found: object, *, source: str | None = None,
                 line: int | None = None, hint: str | None = None):
        self.key, self.expected, self.found = key, expected, found
        self.source, self.line, self.hint = source, line, hint
        where = ""
        if source:
            where = f"{source}:{line}: " if line else f"{source}: "
        message = f"{where}{key}: expected {expected}, found {found!r}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class InputError(BmsError, ValueError):
    """A value passed to a step (current, dt, temperature …) is not usable."""

    def __init__(self, key: str, expected: str, found: object):
        self.key, self.expected, self.found = key, expected, found
        super().__init__(f"{key}: expected {expected}, found {found!r}")


class KernelBuildError(BmsError, ImportError):
    """The compiled kernels are missing or broken (never silently replaced by the twin)."""
