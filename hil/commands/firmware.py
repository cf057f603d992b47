"""``bms-emu firmware``: the firmware slot's C header, the process transport's C side, the I/O contract,
and a conformance check of a firmware library."""
from __future__ import annotations

import argparse
import json
import sys


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "firmware", help="the firmware slot: C header, process-side C file, I/O contract, conformance check",
        description="Tools for putting a team's firmware into the emulator's firmware slot (BMS or VCU role).",
        epilog="examples:\n  bms-emu firmware header -o bms_fil.h\n  bms-emu firmware process-c -o bms_fil_process.c\n"
               "  bms-emu firmware contract\n  bms-emu firmware check build/libmy_vcu.so --role vcu\n"
               "  bms-emu run default --firmware build/libmy_vcu.so --firmware-role vcu",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("header", "write bms_fil.h (the C ABI)"),
                       ("process-c", "write bms_fil_process.c (the firmware side of the process transport)")):
        p = sub.add_parser(name, help=text, description=text, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=f"examples:\n  bms-emu firmware {name}\n  bms-emu firmware {name} -o "
                                  f"{'bms_fil.h' if name == 'header' else 'bms_fil_process.c'}")
        p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
        p.set_defaults(func=_write, what=name)
    p = sub.add_parser("contract", help="print the I/O contract (Markdown table)")
    p.add_argument("--cells", type=int, default=192, help="series groups (default 192)")
    p.add_argument("--temperatures", type=int, default=24, help="temperature sensors (default 24)")
    p.set_defaults(func=_contract)
    p = sub.add_parser("check", help="conformance: two instances of a library in one process do not interfere",
                       description="Steps one instance alone and the same beside a second instance; exit 1 when "
                                   "they differ (the library keeps globals).",
                       epilog="examples:\n  bms-emu firmware check build/libmy_bms.so\n"
                              "  bms-emu firmware check build/libmy_vcu.so --role vcu",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("library", help="the firmware shared library")
    p.add_argument("--role", choices=("bms", "vcu"), default="bms",
                   help="the slot the library is built for (default: bms)")
    p.add_argument("--config", default="", help="configuration string for create()")
    p.set_defaults(func=_check)


def _write(args) -> int:
    from importlib import resources
    from pathlib import Path

    from bms.fil import header_text
    text = header_text() if args.what == "header" else \
        (resources.files("bms.fil") / "c" / "bms_fil_process.c").read_text(encoding="utf-8")
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _contract(args) -> int:
    from bms.fil import contract_table
    print(contract_table(args.cells, args.temperatures))
    return 0


def _check(args) -> int:
    from bms.fil.conformance import check_instances
    from bms.fil.library import LibraryFirmware
    report = check_instances(lambda: LibraryFirmware(args.library, args.role, config=args.config), args.role)
    print(json.dumps(report, indent=2))
    return 0 if report["independent"] else 1
