"""``bms-emu run``: drive the emulated pack through a drive cycle and print a summary."""
from __future__ import annotations

import json


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "run", help="drive the pack through a cycle (default: WLTC x3 on assb60-192s2p)",
        description="Drive the emulated pack through a standard or user drive cycle, headless, and print "
                    "a JSON summary.",
        epilog="examples:\n  bms-emu run\n  bms-emu run --cycle us06 --temp -10 --soc 0.5\n"
               "  bms-emu run --cycle my_drive.csv --json out/summary.json",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    parser.add_argument("--cycle", default="wltc", help="built-in cycle name or speed-time CSV (default: wltc)")
    parser.add_argument("--repeat", type=int, default=3, help="how many times to drive the cycle (default: 3)")
    parser.add_argument("--pack", default="assb60-192s2p", help="pack preset or TOML file")
    parser.add_argument("--soc", type=float, default=0.9, help="initial SOC, 0..1 (default: 0.9)")
    parser.add_argument("--temp", type=float, default=25.0, help="ambient and coolant temperature, degC")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run's random generator")
    parser.add_argument("--dt", type=float, default=0.01, help="tick, s (default: 0.01)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary to FILE")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from bms import load_pack

    from ..cycles import load_cycle
    from ..drive import drive

    cycle = load_cycle(args.cycle).repeated(args.repeat)
    summary = drive(load_pack(args.pack), cycle, dt_s=args.dt, initial_soc=args.soc, temp_C=args.temp,
                    seed=args.seed).as_dict()
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0
