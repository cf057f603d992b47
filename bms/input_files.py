"""Reading a user's input file (scenario, parameters, drive cycle, DBC) without letting it exhaust memory.

A path may name a directory, a device (``/dev/zero`` never ends), a FIFO or a file of gigabytes: each is
refused before it is read, saying why, and no error ever quotes the file's contents.
"""
from __future__ import annotations

import difflib
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import BmsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["InputFileError", "read_input_text", "parse_error_text", "parse_toml", "suggest", "MAX_INPUT_BYTES"]

MAX_INPUT_BYTES = 64 * 1024 * 1024   # a 10 Hz drive cycle of a week is 6 MB; a DBC of a whole vehicle a few MB


class InputFileError(BmsError, ValueError):
    """An input file cannot be read as text: which file, what it is, why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def read_input_text(path: str | Path, *, what: str = "input file", max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``max_bytes`` long."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(path, f"no such file (the {what})") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot read the {what}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
        raise InputFileError(path, f"expected a {what} (a regular file), found {kind}")
    if info.st_size > max_bytes:
        raise InputFileError(path, f"the {what} is {info.st_size:,} bytes, more than the {max_bytes:,} bytes "
                                   "an input file may have")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)   # a file that grows while read is bounded too
    except OSError as exc:
        raise InputFileError(path, f"cannot read the {what}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise InputFileError(path, f"the {what} is more than the {max_bytes:,} bytes an input file may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputFileError(f"{path}:{line}", f"the {what} is not UTF-8 text (byte {exc.start})") from None


def parse_error_text(exc: BaseException) -> str:
    """A parser's message without the text it quotes from the file (cantools, tomllib: "line 2, column 5: ...")."""
    text = str(exc)
    return re.sub(r'(line \d+, column \d+)\s*:\s*["\'].*', r"\1", text, flags=re.S).strip(' "') or type(exc).__name__


def parse_toml(text: str, source: str, error: Callable[[str, int | None, str, str], Exception], what: str) -> dict:
    """``tomllib.loads``, its failures raised as ``error(source, line, "file", message)`` with the line tomllib
    names; a file nested too deeply for tomllib's recursion gets the same clear error instead of a crash."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise error(source, int(match.group(1)) if match else None, "file", f"not valid TOML: {exc}") from exc
    except RecursionError:  # tomllib recurses once per nesting level
        raise error(source, None, "file", f"not a usable {what}: arrays or tables nested too deeply") from None


def suggest(word: str, options, *, list_all: bool = True) -> str:
    """"; did you mean 'x'?" for the option nearest ``word``; without one, the options (``list_all``) or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if not list_all:
        return ""
    return f"; expected one of {', '.join(o if o.isprintable() else repr(o) for o in sorted(options))}"
