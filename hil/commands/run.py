"""``bms-emu run``: run a scenario (default: the built-in warm WLTC x3) and write its reports."""
from __future__ import annotations

import argparse
import contextlib
import math
import sys


def add_subparser(subparsers):
    from bms.can.logs import LOG_FORMATS_HELP
    parser = subparsers.add_parser(
        "run", help="run a scenario (default: built-in 'default', WLTC x3 on assb60-192s2p)",
        description="Run a scenario: the emulated pack and BMS with a VCU, a fault timeline and expectations. "
                    "Writes JUnit XML, a JSON summary (last, once everything else is written), PNG plots and an "
                    "HTML report. Ctrl-C, SIGTERM and SIGHUP stop the run at any instant: logs are flushed and "
                    "the reports written, marked incomplete; a second signal stops at once. Without a terminal "
                    "a status line is printed every --status-every seconds.",
        epilog="examples:\n  bms-emu run\n  bms-emu run cold-us06 --out out/cold\n"
               "  bms-emu run my_test.toml --mode lockstep --log out/bus.blf\n"
               "  bms-emu run fast-charge --max-sim-s 600      (truncated: reported incomplete, exit 4)\n"
               "  bms-emu run --list\n"
               "  bms-emu run --mode paced --live      (live page and bench control on 127.0.0.1:5006)\n"
               "exit status: 0 complete and passed; 1 an expectation failed; 2 bad scenario or arguments; "
               "3 the bus could not\n  be opened or failed; 4 incomplete (--max-sim-s, nothing simulated, a "
               "firmware in the slot failed, a log\n  or report not written); 128 + N stopped by signal N "
               "(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="default", help="built-in scenario name or TOML file")
    parser.add_argument("--out", default="bms-emu-out", help="folder for the reports (default: bms-emu-out)")
    parser.add_argument("--mode", choices=("headless", "lockstep", "paced"), default=None,
                        help="headless: no bus, fastest; lockstep: virtual CAN in simulated time; paced: real "
                             "time on a bus (default: lockstep on the virtual bus)")
    parser.add_argument("--max-sim-s", type=float, help="stop after this much simulated time")
    parser.add_argument("--no-plots", action="store_true", help="skip PNG plots and the HTML report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar and no status lines")
    parser.add_argument("--status-every", type=float, default=10.0, metavar="S",
                        help="without a terminal: print a status line every S seconds of wall time (default: 10)")
    parser.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    parser.add_argument("--log", action="append", metavar="FILE",
                        help=f"CAN log ({LOG_FORMATS_HELP}); repeatable; default: OUT/bus.blf on a bus")
    parser.add_argument("--matrix", metavar="MAP.toml",
                        help="the BMS (and the VCU model) speak the vehicle's CAN matrix through this signal map")
    parser.add_argument("--external-vcu", action="store_true",
                        help="the firmware under test on the bus is the VCU: no VCU model is put on the bus")
    fw = parser.add_argument_group("firmware in the loop (overrides the scenario's [firmware])")
    fw.add_argument("--firmware", metavar="PATH", help="a firmware library (.so), program or FMU (.fmu) to put in a "
                    "slot, or a TOML file whose [firmware] table describes it (a BMS firmware's DBC and "
                    "signals); stepped in lockstep (see bms-emu firmware)")
    fw.add_argument("--firmware-role", choices=("bms", "vcu"), help="its slot (default: the scenario's, else vcu)")
    fw.add_argument("--firmware-kind", choices=("library", "process", "fmu"),
                    help="its transport (default: library for .so/.dylib, fmu for .fmu, else process)")
    fw.add_argument("--firmware-config", metavar="TEXT", help="the configuration string its create() gets")
    fw.add_argument("--firmware-timeout", metavar="S", type=float, help="wall-clock deadline of each answer of a "
                    "firmware process (default 5 s)")
    from bms.can.busargs import add_bus_arguments
    add_bus_arguments(parser)
    from ..live.cli_args import add_live_arguments
    add_live_arguments(parser)
    parser.set_defaults(func=_run, graceful_stop=True)


def _run(args) -> int:
    from pathlib import Path

    from .. import exit_status
    from ..progress import StatusLines
    from ..runner import run_scenario
    from ..scenario import builtin_scenarios, load_scenario

    if args.list:
        for name in sorted(builtin_scenarios()):
            print(f"{name:<16}{load_scenario(name).description}")
        return 0
    if args.max_sim_s is not None and not 0 < args.max_sim_s < math.inf:
        raise SystemExit(f"bms-emu run: error: --max-sim-s {args.max_sim_s:g}: must be a number of seconds > 0 "
                         "(leave it out to run every step)")
    stop = getattr(args, "stop", None)
    from ..report import clear_reports
    with contextlib.suppress(OSError):  # a scenario refused below must not leave an earlier run's verdict
        clear_reports(Path(args.out))
    scenario = load_scenario(args.scenario)
    mode = args.mode or scenario.mode or "lockstep"
    if mode == "headless" and args.log:  # nothing would be written: no bus in headless mode
        raise SystemExit(f"bms-emu run: error: --log {args.log[0]}: headless runs have no bus to log; "
                         "run in lockstep or paced mode (--mode lockstep)")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemExit(f"bms-emu run: error: --out {args.out}: cannot create the report folder: "
                         f"{exc.strerror or exc}") from None
    from bms.can.busargs import bus_options
    can_options = None
    if mode != "headless":
        can_options = {**bus_options(args), "log": args.log or [str(Path(args.out) / "bus.blf")],
                       "external_vcu": args.external_vcu}
        if args.matrix:
            can_options["matrix"] = args.matrix
    progress: object = False
    if not args.no_progress:
        if sys.stdout.isatty():
            progress = True
        else:  # CI logs: a plain line now and then
            progress = StatusLines(args.status_every)
            print(f"bms-emu run: {scenario.name} ({scenario.source}), {mode}; reports into {args.out}", flush=True)
    from ..live.cli_args import session_from_args
    live = session_from_args(args, Path(args.out) / "bench-audit.jsonl")
    try:
        result = run_scenario(scenario, out_dir=Path(args.out), mode=mode, plots=not args.no_plots,
                              progress=progress, max_sim_s=args.max_sim_s, can_options=can_options, stop=stop,
                              firmware=_firmware_spec(args, scenario), live=live)
    finally:
        if live is not None:
            live.close()
    _print_result(result)
    return exit_status.of_run(result.summary, stop)


def _firmware_spec(args, scenario):
    """``--firmware …`` as a FirmwareSpec (None: the scenario's own)."""
    if not args.firmware:
        return None
    from dataclasses import replace
    from pathlib import Path

    from bms.fil.loader import FirmwareSpec
    suffix = Path(args.firmware.split()[0]).suffix
    if suffix == ".toml":  # a firmware described once: its [firmware] table (path, role, DBC, signals ...)
        from ..scenario import load_firmware
        spec = load_firmware(args.firmware)
        for flag, given, own in (("--firmware-role", args.firmware_role, spec.role),
                                 ("--firmware-kind", args.firmware_kind, spec.kind)):
            if given is not None and given != own:
                raise SystemExit(f"bms-emu run: error: {flag} {given}: {args.firmware} says {own}")
    else:
        kind = args.firmware_kind or {".so": "library", ".dylib": "library", ".fmu": "fmu"}.get(suffix, "process")
        path = args.firmware if kind == "process" else str(Path(args.firmware).resolve())
        base = scenario.firmware or FirmwareSpec(role="vcu")
        role = args.firmware_role or base.role
        spec = replace(base, role=role, kind=kind, path=path) if base.role == role else FirmwareSpec(role, kind, path)
    if args.firmware_config is not None:
        spec = replace(spec, config=args.firmware_config)
    if args.firmware_timeout is not None:
        spec = replace(spec, timeout_s=args.firmware_timeout)
    return spec


def _print_result(result) -> None:
    from ..progress import sim_time
    s = result.summary
    for v in result.verdicts:
        where = f" (t = {v.t_s:.3f} s)" if (v.t_s is not None and not v.passed) else ""
        print(f"{'PASS' if v.passed else 'FAIL'}  {v.name}{where}: {v.message}")
    if not s["complete"]:
        print(f"{'TRUNCATED' if s.get('truncated') else 'INCOMPLETE'}: {s['stop_reason']}")
    for fault in s.get("faults_not_injected", ()):
        line = f" (line {fault['line']})" if fault["line"] else ""
        print(f"NOT INJECTED  fault {fault['name']}{line}: {fault['why']}")
    consumption = s["consumption_kWh_per_100km"]
    for slot, fw in s.get("firmware", {}).items():
        if fw.get("kind") != "builtin":
            print(f"firmware ({slot}): {fw['name']} {fw['version']} ({fw['kind']}: {fw['path']})")
    rate = f"{s['realtime_factor']:.0f}x real time, " if s["realtime_factor"] else ""
    soc = f"SOC {s['soc_start']:.3f} -> {s['soc_end']:.3f}; " if s["soc_start"] is not None else ""
    print(f"{s['scenario']}: {sim_time(s['simulated_s'])} s simulated in {s['wall_s']:.1f} s ({rate}{s['mode']}); {soc}"
          + (f"{consumption:.1f} kWh/100 km; " if consumption else "")
          + f"{s['expectations']['failed']} of {s['expectations']['total']} expectations failed"
          + ("" if s["complete"] else "; not passed: the run is incomplete"))
    for kind, path in result.reports.items():
        print(f"  {kind:<12}{path}")
    for path in s.get("logs") or ():
        print(f"  {'bus log':<12}{path}")
    for error in s.get("report_errors") or []:
        print(f"bms-emu run: error: a report could not be written: {error}", file=sys.stderr)
