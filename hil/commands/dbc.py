"""``bms-emu dbc``: write the emulated BMS's CAN database."""
from __future__ import annotations

import argparse
import sys

FORMATS = ("dbc", "kcd", "sym")


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "dbc", help="write the BMS's CAN database (DBC) to a file or stdout",
        description="Write the CAN database of the emulated BMS: every message it sends and receives, with "
                    "cycle times, units, ranges, value tables, counters and CRCs. The DBC is the file the "
                    "emulator itself uses; kcd and sym are cantools conversions of it.",
        epilog="examples:\n  bms-emu dbc -o assb_bms.dbc\n  bms-emu dbc --list\n"
               "  bms-emu dbc --format kcd > assb_bms.kcd",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    parser.add_argument("--format", choices=FORMATS, default="dbc", help="file format (default: dbc)")
    parser.add_argument("--list", action="store_true", help="print a table of the messages instead")
    parser.add_argument("--fd", action="store_true",
                        help="the CAN FD variant: cell voltages (24 a frame) and temperatures (all 24) in 64- and "
                             "48-byte CAN FD frames with the bit-rate switch (serve --dbc FILE --fd uses it)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from bms.can import Codec, dbc_text, fd_dbc_path

    if args.list:
        codec = Codec(path=fd_dbc_path()) if args.fd else Codec()
        lines = [f"{'id':>6}  {'message':<22}{'sender':<9}{'cycle ms':>9}  {'pages':>5}  e2e  signals"]
        for m in sorted(codec.messages.values(), key=lambda m: m.frame_id):
            cycle = f"{m.cycle_time_s * 1000:g}" if m.cycle_time_s else "event"
            lines.append(f"0x{m.frame_id:03X}  {m.name:<22}{','.join(m.senders):<9}{cycle:>9}  "
                         f"{len(m.pages) if m.multiplexer else '':>5}  {'yes' if m.e2e else 'no ':<3}  "
                         f"{len(m.signals)}")
        text = "\n".join(lines) + "\n"
    elif args.format == "dbc":
        text = dbc_text(fd=args.fd)
    else:
        db = (Codec(path=fd_dbc_path()) if args.fd else Codec()).db
        text = db.as_kcd_string() if args.format == "kcd" else db.as_sym_string()
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
