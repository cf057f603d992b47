"""``python -m bms.fil.serve_library LIB``: a firmware library served in its own process.

For a library that keeps state in globals (``BMS_FIL_FLAG_GLOBALS``): each instance gets a process of its
own, so two of them never share that state.
"""
from __future__ import annotations

import sys

from .firmware_side import serve
from .library import LibraryFirmware


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bms.fil.serve_library LIBRARY.so", file=sys.stderr)
        return 2
    return serve(lambda layout, config: LibraryFirmware(args[0], layout.role, config=config))


if __name__ == "__main__":
    sys.exit(main())
