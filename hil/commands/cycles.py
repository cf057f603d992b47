"""``bms-emu cycles``: list the built-in drive cycles."""
from __future__ import annotations

import argparse


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "cycles", help="list the built-in drive cycles",
        description="List the built-in standard drive cycles (name, duration, distance, top speed). A "
                    "scenario's drive step names one of them, or a speed-time CSV (time_s,speed_mps) beside it.",
        epilog="examples:\n  bms-emu cycles\n"
               "  in a scenario:   [[step]]  kind = \"drive\"  cycle = \"us06\"  repeat = 2\n"
               "  your own cycle:  [[step]]  kind = \"drive\"  cycle = \"my_route.csv\"",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from ..cycles import builtin_cycles, load_cycle

    print(f"{'name':<8}{'duration_s':>12}{'distance_km':>13}{'max_kmh':>9}")
    for name in builtin_cycles():
        c = load_cycle(name)
        print(f"{name:<8}{c.duration_s:>12.0f}{c.distance_km:>13.2f}{c.speed_mps.max() * 3.6:>9.1f}")
    return 0
