"""The ``bms-emu`` command line: one entry point, one module per subcommand (hil/commands/)."""
from __future__ import annotations

import argparse
import sys

from bms.errors import BmsError

from .commands import cycles, dbc, replay, run, serve

SUBCOMMANDS = [run, replay, serve, dbc, cycles]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bms-emu", description="Battery-management-system emulator for "
                                     "all-solid-state EV packs.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_subparser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        args = parser.parse_args(["run", *(argv or [])])
    try:
        return args.func(args)
    except BmsError as exc:
        print(f"bms-emu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bms-emu: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
