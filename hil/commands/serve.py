"""``bms-emu serve``: the emulated BMS on a CAN bus until stopped (HIL benches, CI with virtual CAN)."""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading

DEFAULT_DIAG_IDS = "0x7E0,0x7E8,0x7DF"


def add_subparser(subparsers):
    from bms.can.logs import LOG_FORMATS_HELP
    parser = subparsers.add_parser(
        "serve", help="run the emulated BMS on a CAN bus until Ctrl-C",
        description="Run the emulated BMS (pack model, sensors, estimators, BMS logic) as a node on a CAN bus, "
                    "paced by the wall clock (absolute 10 ms deadlines) or, with --lockstep, as fast as "
                    "possible with frame timestamps in simulated time. It sends every cyclic message of the "
                    "DBC (bms-emu dbc), obeys VCU_Command and CHG_Status, answers UDS diagnostics on ISO-TP "
                    "(requests 0x7E0, functional 0x7DF, responses 0x7E8), and takes the load "
                    "current from HIL_Load (or --load-current). Ctrl-C, SIGTERM and SIGHUP stop it cleanly at any "
                    "instant, also during power-on: logs are flushed and the run report with per-message "
                    "cycle-time statistics printed (a second signal stops at once). The bus is opened like "
                    "python-can's tools open one: the arguments, then python-can's environment (CAN_INTERFACE, "
                    "CAN_CHANNEL, CAN_BITRATE, CAN_CONFIG) and config file; the interface defaults to 'virtual'.",
        epilog="examples:\n"
               "  bms-emu serve -i socketcan -c can0 --log run.blf\n"
               "  bms-emu serve -i pcan -c PCAN_USBBUS1 -b 500000 --log run.asc --log run.log\n"
               "  bms-emu serve -i udp_multicast -c 239.74.163.2 --lockstep --duration 60 --log ci.blf\n"
               "  bms-emu serve -i socketcan -c can0 --diag-memory bms-nvm.json   # DTCs kept across restarts\n"
               "exit status: 0 stopped (--duration reached, Ctrl-C, SIGTERM, SIGHUP); 2 bad arguments, pack or DBC;\n"
               "  3 the bus could not be opened or failed; 4 a log could not be written (disk full)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from bms.can.busargs import add_bus_arguments
    add_bus_arguments(parser)
    sim = parser.add_argument_group("emulation")
    sim.add_argument("--pack", default="assb60-192s2p", help="pack preset or TOML file (default: assb60-192s2p)")
    sim.add_argument("--soc", type=float, default=0.5, help="initial SOC, 0..1 (default: 0.5)")
    sim.add_argument("--temp", type=float, default=25.0, help="initial and coolant temperature, degC")
    sim.add_argument("--seed", type=int, default=0, help="seed of the run's random generator")
    sim.add_argument("--dt", type=float, default=0.01, help="tick = BMS task period, s (default: 0.01)")
    sim.add_argument("--load-current", type=float, default=0.0, metavar="A",
                     help="load current until a HIL_Load frame sets it, A, > 0 discharging (default: 0)")
    run = parser.add_argument_group("run")
    run.add_argument("--lockstep", action="store_true",
                     help="virtual clock: as fast as possible, timestamps in simulated time, deterministic")
    run.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of simulated time")
    run.add_argument("--log", action="append", default=[], metavar="FILE",
                     help=f"log every frame; format by extension: {LOG_FORMATS_HELP}; repeat for several files")
    run.add_argument("--dbc", metavar="FILE",
                     help="use this DBC instead of the shipped one (same message and signal names; other IDs, "
                          "layouts or cycle times are fine; CHG_Status and HIL_Load may be left out); a DBC "
                          "without what the BMS sends and reads is refused, naming each gap")
    run.add_argument("--matrix", metavar="MAP.toml",
                     help="speak the vehicle's own CAN matrix (the DBC, ARXML, KCD or SYM the map names) through "
                          "this signal map instead of the shipped DBC")
    run.add_argument("--arm-timeouts", choices=("first-rx", "start"), default="first-rx",
                     help="watch a received message's timeout once it was heard (default) or from the start")
    run.add_argument("--spin-ms", type=float, default=0.3,
                     help="wall clock: busy-wait this long before each deadline (default: 0.3)")
    run.add_argument("--rt-priority", type=int, default=50, metavar="N",
                     help="wall clock: run the loop thread SCHED_FIFO at priority N where permitted (root or "
                          "CAP_SYS_NICE; default: 50; 0: normal scheduling)")
    run.add_argument("--json", metavar="FILE", help="also write the run report (with cycle times) as JSON")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the end-of-run report")
    diag = parser.add_argument_group("diagnostics (UDS on ISO-TP)")
    diag.add_argument("--diag-memory", metavar="FILE",
                      help="the BMS's non-volatile memory (DTCs with snapshots, written DIDs, counters, security "
                           "attempts) as a JSON file, read at start and kept up to date, so it survives restarts")
    diag.add_argument("--diag-ids", metavar="REQ,RESP[,FUNC]", default=DEFAULT_DIAG_IDS,
                      help="physical request, response and functional request identifiers (default: "
                           "0x7E0,0x7E8,0x7DF, or the --matrix map's [diagnostics]; 29-bit identifiers above 0x7FF)")
    diag.add_argument("--dids", metavar="FILE", help="data identifier table (TOML) instead of the shipped one")
    diag.add_argument("--no-diag", action="store_true", help="no diagnostic server")
    from ..live.cli_args import add_live_arguments
    add_live_arguments(parser)
    parser.add_argument("--live-audit", metavar="FILE", help="with --live: the bench-control audit log (default: "
                        "bench-audit.jsonl beside --json, else in the current folder)")
    parser.set_defaults(func=_run, graceful_stop=True)


def _run(args) -> int:
    from bms.can import BusFailure, CanNode, Codec, VirtualClock, WallClock
    from bms.can.busargs import bus_options
    from bms.can.logs import LogError
    from bms.emulator import Emulator

    from .. import exit_status

    if args.duration is not None and not 0 < args.duration < math.inf:
        raise SystemExit(f"bms-emu serve: error: --duration {args.duration:g}: must be a number of seconds > 0 "
                         "(leave it out to run until Ctrl-C)")
    if not 0.001 <= args.dt <= 0.1:  # NaN too; a nanosecond tick would never reach --duration
        raise SystemExit(f"bms-emu serve: error: --dt: expected a tick of 0.001 ... 0.1 s, found {args.dt:g}")
    if not 0 <= args.rt_priority <= 99:
        raise SystemExit("bms-emu serve: error: --rt-priority must be in 0..99")
    if not 0 <= args.soc <= 1:  # NaN too (the emulator's own message names its parameter, not the flag)
        raise SystemExit(f"bms-emu serve: error: --soc: expected a state of charge in 0 ... 1, found {args.soc:g}")
    if not -60 < args.temp < 120:
        raise SystemExit(f"bms-emu serve: error: --temp: expected a temperature in (-60, 120) degC, found "
                         f"{args.temp:g}")
    if args.json:
        _check_writable(args.json)
    stop = getattr(args, "stop", None) or threading.Event()
    emulator = Emulator(args.pack, seed=args.seed, initial_soc=args.soc, temp_C=args.temp, dt_s=args.dt)
    clock = VirtualClock() if args.lockstep else WallClock(spin_s=max(args.spin_ms, 0.0) / 1000.0,
                                                           rt_priority=args.rt_priority or None)
    codec = Codec(path=args.dbc) if args.dbc else None
    matrix = None
    if args.matrix:
        if args.dbc:
            from bms.errors import BmsError
            raise BmsError("--dbc and --matrix exclude each other (the map names its matrix)")
        from ..matrix import load_matrix_map
        matrix = load_matrix_map(args.matrix, n_cells=emulator.pack.params.n_series,
                                 n_temperatures=len(emulator.sensors.temperature_C))
    _check_fd_logs(args.log, matrix.codec if matrix is not None else codec)
    diag = None if args.no_diag else _diag_config(args, matrix)
    node = CanNode(emulator, clock=clock, codec=codec, log=args.log or None, load_current_A=args.load_current,
                   arm_timeouts=args.arm_timeouts, diag=diag, matrix=matrix, **bus_options(args))
    status = exit_status.OK
    report, error = None, None
    live = _live_session(args, node)
    try:
        if not args.quiet:
            duration = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
            where = node.bus.channel_info  # python-can's default is "unknown" (udp_multicast keeps it)
            if where == "unknown" and bus_options(args).get("channel") is not None:
                where = f"channel {bus_options(args)['channel']}"
            print(f"bms-emu serve: BMS on {where} ({type(node.bus).__name__}), "
                  f"{clock.kind} clock, {args.pack}, tick {args.dt * 1000:g} ms, {duration}", flush=True)
            if diag is not None:
                functional = f", functional 0x{diag.functional_id:X}" if diag.functional_id is not None else ""
                print(f"bms-emu serve: UDS on ISO-TP, requests 0x{diag.physical_id:X}{functional}, responses "
                      f"0x{diag.response_id:X}" + (f", memory {diag.memory_path}" if diag.memory_path else ""),
                      flush=True)
            if type(node.bus).__name__ == "VirtualBus":
                print("bms-emu serve: note: python-can's 'virtual' interface reaches this process only; for "
                      "other processes use e.g. -i udp_multicast -c 239.74.163.2 (on a trusted host or in a "
                      "network namespace: it listens on every address) or -i socketcan -c vcan0", flush=True)
        try:
            if live is not None:  # its server (a process of its own) is up before the clock runs, so its
                live.attach(emulator, node=node, info={"scenario": "serve", "mode": clock.kind,  # start-up
                                                       "pack": args.pack})  # costs no deadline
                live.start()
            node.start()  # power-on: the BMS's first task, the estimator's initialisation
            if not args.quiet:
                rt = getattr(clock, "rt_priority", None)
                if rt:
                    print(f"bms-emu serve: {getattr(clock, 'rt_error', None) or f'loop thread SCHED_FIFO {rt}'}",
                          flush=True)
                print("bms-emu serve: powered on, running", flush=True)
            report = node.run(args.duration, stop=stop, on_tick=live.every_tick if live is not None else None)
        except BusFailure as exc:
            target = live.target if live is not None else None  # a bus-off from the bench control
            why = target.timeline.explain_bus_failure(str(exc)) if target is not None else str(exc)
            report, error, status = exc.report, f"the bus failed: {why}", exit_status.BUS
            if report is not None and report.stop_reason == f"bus failure: {exc}":
                report.stop_reason = ""  # the same words as the error, said once
        except LogError as exc:  # the disk filled up under a log: the run ends, the report still says why
            report, error, status = None, f"a log could not be written: {exc}", exit_status.INCOMPLETE
    finally:
        try:
            closing = node.close()
        except LogError as exc:
            closing = node.close()  # closed now: the report of the run
            if error is None:
                error, status = f"a log could not be written: {exc}", exit_status.INCOMPLETE
        report = report or closing
        if live is not None:
            live.close(report.stop_reason if report is not None else "stopped")
    memory_error = getattr(node.diag, "memory_error", None)
    if memory_error:
        print(f"bms-emu serve: error: {memory_error}", file=sys.stderr)
        status = status or exit_status.INCOMPLETE
    if error is not None:
        report.stop_reason = f"{error}; {report.stop_reason}" if report.stop_reason else error
        print(f"bms-emu serve: {error}; logs flushed" + (f" ({', '.join(report.logs)})" if report.logs else ""),
              file=sys.stderr)
    complete = _settle(report, stop)
    print(report.summary())
    print(node.stats.table())
    if args.json:
        from pathlib import Path

        from ..report import write_text_atomic
        try:
            while True:
                write_text_atomic(Path(args.json), json.dumps({"complete": complete, **report.as_dict()},
                                                              indent=2) + "\n")
                if complete == _settle(report, stop):
                    break
                complete = False  # a stop while it was written: written again, saying so
        except OSError as exc:
            print(f"bms-emu serve: error: {args.json}: cannot write the run report: {exc}", file=sys.stderr)
            status = status or exit_status.INCOMPLETE
    return status


def _check_writable(path_text: str) -> None:
    """``--json``'s folder made and a file written there at the start: a bench session of hours must not find
    out only at its end that its report cannot be written (exit 2 now, nothing run)."""
    import os
    from pathlib import Path
    path = Path(path_text)
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder")
        if path.parent.exists() and not path.parent.is_dir():
            raise NotADirectoryError(f"{path.parent} is a file, not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"bms-emu serve: error: --json {path_text}: the run report cannot be written there: "
                         f"{exc.strerror or exc}") from None


def _live_session(args, node):
    """``--live``: the session (its audit log beside --json, or where --live-audit says), else None."""
    from pathlib import Path

    from ..live.cli_args import session_from_args
    audit = args.live_audit or (Path(args.json).with_name("bench-audit.jsonl") if args.json else "bench-audit.jsonl")
    try:
        return session_from_args(args, audit)
    except BaseException:
        node.close()
        raise


def _diag_config(args, matrix=None):
    """The diagnostic server's configuration from the command line, else the matrix map's [diagnostics]
    (exits with a message when malformed)."""
    from bms.diag import DiagConfig
    from bms.errors import BmsError

    try:
        ids = [int(x, 0) for x in args.diag_ids.split(",")]
        if len(ids) not in (2, 3):
            raise ValueError("two or three identifiers")
    except ValueError as exc:
        raise SystemExit(f"bms-emu serve: error: --diag-ids: expected REQ,RESP[,FUNC] such as 0x7E0,0x7E8,0x7DF, "
                         f"found {args.diag_ids!r} ({exc})") from None
    given = getattr(matrix, "diagnostics", None)
    if given and args.diag_ids == DEFAULT_DIAG_IDS:
        ids = [given["request_id"], given["response_id"]] + (
            [given["functional_id"]] if "functional_id" in given else [])
    try:
        return DiagConfig(physical_id=ids[0], response_id=ids[1], functional_id=ids[2] if len(ids) == 3 else None,
                          extended_id=max(ids) > 0x7FF, memory_path=args.diag_memory, did_table=args.dids)
    except BmsError as exc:
        raise SystemExit(f"bms-emu serve: error: {exc}") from None


def _check_fd_logs(logs, codec) -> None:
    """A log that cannot keep the CAN FD frames it would get is refused before the bus opens; one that drops
    their flags is named."""
    from bms.can.logs import fd_log_problems
    from bms.errors import BmsError

    if codec is None or not any(m.is_fd for m in codec.messages.values()):
        return
    for path, why, fatal in fd_log_problems(logs):
        if fatal:
            raise BmsError(f"--log {path}: {why}; use .blf, .asc or .log")
        print(f"bms-emu serve: warning: --log {path}: {why}", file=sys.stderr)


def _settle(report, stop) -> bool:
    """Whether the run did all it was asked (its --duration); a stop request is named in the report with
    the simulated time it ended at."""
    from ..stopping import describe_stop

    why = describe_stop(stop)
    if stop.is_set() and why not in report.stop_reason:
        at = f"{why} at t = {report.simulated_s:.2f} s"
        report.stop_reason = at if report.stop_reason in ("stopped", "not started") else \
            f"{report.stop_reason}; {at} while the report was written"
    return report.stop_reason == "duration reached"
