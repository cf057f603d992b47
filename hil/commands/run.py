"""``bms-emu run``: run a scenario (default: the built-in warm WLTC x3) and write its reports."""
from __future__ import annotations

import argparse
import sys


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "run", help="run a scenario (default: built-in 'default', WLTC x3 on assb60-192s2p)",
        description="Run a scenario: the emulated pack and BMS with a VCU, a fault timeline and expectations. "
                    "Writes JUnit XML, a JSON summary, PNG plots and an HTML report. Exit status 1 when an "
                    "expectation fails, 2 on a bad scenario.",
        epilog="examples:\n  bms-emu run\n  bms-emu run cold-us06 --out out/cold\n"
               "  bms-emu run my_test.toml --mode lockstep --log out/bus.blf\n"
               "  bms-emu run fast-charge --max-sim-s 600\n  bms-emu run --list",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="default", help="built-in scenario name or TOML file")
    parser.add_argument("--out", default="bms-emu-out", help="folder for the reports (default: bms-emu-out)")
    parser.add_argument("--mode", choices=("headless", "lockstep", "paced"), default=None,
                        help="headless: no bus, fastest; lockstep: virtual CAN in simulated time; paced: real "
                             "time on a bus (default: lockstep on the virtual bus)")
    parser.add_argument("--max-sim-s", type=float, help="stop after this much simulated time")
    parser.add_argument("--no-plots", action="store_true", help="skip PNG plots and the HTML report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    parser.add_argument("--log", action="append", metavar="FILE",
                        help="CAN log (.blf, .asc, .log, .csv, .trc; repeatable; default: OUT/bus.blf on a bus)")
    parser.add_argument("--external-vcu", action="store_true",
                        help="the firmware under test on the bus is the VCU: no VCU model is put on the bus")
    from bms.can.busargs import add_bus_arguments
    add_bus_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from ..runner import run_scenario
    from ..scenario import builtin_scenarios, load_scenario

    if args.list:
        for name in sorted(builtin_scenarios()):
            print(f"{name:<16}{load_scenario(name).description}")
        return 0
    scenario = load_scenario(args.scenario)
    mode = args.mode or scenario.mode or "lockstep"
    from bms.can.busargs import bus_options
    can_options = None
    if mode != "headless":
        Path(args.out).mkdir(parents=True, exist_ok=True)
        can_options = {**bus_options(args), "log": args.log or [str(Path(args.out) / "bus.blf")],
                       "external_vcu": args.external_vcu}
    result = run_scenario(scenario, out_dir=Path(args.out), mode=mode, plots=not args.no_plots,
                          progress=not args.no_progress and sys.stderr.isatty(), max_sim_s=args.max_sim_s,
                          can_options=can_options)
    _print_result(result)
    return 0 if result.passed else 1


def _print_result(result) -> None:
    s = result.summary
    for v in result.verdicts:
        where = f" (t = {v.t_s:.3f} s)" if (v.t_s is not None and not v.passed) else ""
        print(f"{'PASS' if v.passed else 'FAIL'}  {v.name}{where}: {v.message}")
    if not s["complete"]:
        print(f"INCOMPLETE: {s['stop_reason']}")
    consumption = s["consumption_kWh_per_100km"]
    print(f"{s['scenario']}: {s['simulated_s']:.0f} s simulated in {s['wall_s']:.1f} s "
          f"({s['realtime_factor']:.0f}x real time, {s['mode']}); SOC {s['soc_start']:.3f} -> {s['soc_end']:.3f}; "
          + (f"{consumption:.1f} kWh/100 km; " if consumption else "")
          + f"{s['expectations']['failed']} of {s['expectations']['total']} expectations failed")
    for kind, path in result.reports.items():
        print(f"  {kind:<10}{path}")
