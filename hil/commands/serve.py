"""``bms-emu serve``: the emulated BMS on a CAN bus until stopped (HIL benches, CI with virtual CAN)."""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "serve", help="run the emulated BMS on a CAN bus until Ctrl-C",
        description="Run the emulated BMS (pack model, sensors, estimators, BMS logic) as a node on a CAN bus, "
                    "paced by the wall clock (absolute 10 ms deadlines) or, with --lockstep, as fast as "
                    "possible with frame timestamps in simulated time. It sends every cyclic message of the "
                    "DBC (bms-emu dbc), obeys VCU_Command, CHG_Status and DIAG_Request, and takes the load "
                    "current from HIL_Load (or --load-current). Ctrl-C stops cleanly: logs are flushed and "
                    "per-message cycle-time statistics printed. The bus is opened like python-can's tools "
                    "open one: the arguments, then python-can's environment (CAN_INTERFACE, CAN_CHANNEL, "
                    "CAN_BITRATE, CAN_CONFIG) and config file; the interface defaults to 'virtual'.",
        epilog="examples:\n"
               "  bms-emu serve -i socketcan -c can0 --log run.blf\n"
               "  bms-emu serve -i pcan -c PCAN_USBBUS1 -b 500000 --log run.asc --log run.log\n"
               "  bms-emu serve -i udp_multicast -c 239.74.163.2 --lockstep --duration 60 --log ci.blf\n"
               "exit status: 0 stopped (duration, Ctrl-C, SIGTERM); 2 bad arguments; 3 the bus failed",
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
                     help="log every frame; format by extension: .blf .asc .log (candump) .csv .trc .txt "
                          "(.mf4 with the mf4 extra); repeat for several files")
    run.add_argument("--dbc", metavar="FILE",
                     help="use this DBC instead of the shipped one (same message and signal names; other IDs, "
                          "layouts or cycle times are fine)")
    run.add_argument("--arm-timeouts", choices=("first-rx", "start"), default="first-rx",
                     help="watch a received message's timeout once it was heard (default) or from the start")
    run.add_argument("--spin-ms", type=float, default=0.3,
                     help="wall clock: busy-wait this long before each deadline (default: 0.3)")
    run.add_argument("--rt-priority", type=int, default=50, metavar="N",
                     help="wall clock: run the loop thread SCHED_FIFO at priority N where permitted (root or "
                          "CAP_SYS_NICE; default: 50; 0: normal scheduling)")
    run.add_argument("--json", metavar="FILE", help="also write the run report (with cycle times) as JSON")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the end-of-run report")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from bms.can import BusFailure, CanNode, Codec, VirtualClock, WallClock
    from bms.can.busargs import bus_options
    from bms.emulator import Emulator

    if args.duration is not None and args.duration <= 0:
        raise SystemExit("bms-emu serve: error: --duration must be > 0")
    emulator = Emulator(args.pack, seed=args.seed, initial_soc=args.soc, temp_C=args.temp, dt_s=args.dt)
    if not 0 <= args.rt_priority <= 99:
        raise SystemExit("bms-emu serve: error: --rt-priority must be in 0..99")
    clock = VirtualClock() if args.lockstep else WallClock(spin_s=max(args.spin_ms, 0.0) / 1000.0,
                                                           rt_priority=args.rt_priority or None)
    stop = threading.Event()
    codec = Codec(path=args.dbc) if args.dbc else None
    node = CanNode(emulator, clock=clock, codec=codec, log=args.log or None, load_current_A=args.load_current,
                   arm_timeouts=args.arm_timeouts, **bus_options(args))
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if hasattr(signal, "SIGTERM") else None
    status = 0
    report = None
    try:
        if not args.quiet:
            duration = f"for {args.duration:g} s" if args.duration else "until Ctrl-C"
            print(f"bms-emu serve: BMS on {node.bus.channel_info} ({type(node.bus).__name__}), "
                  f"{clock.kind} clock, {args.pack}, tick {args.dt * 1000:g} ms, {duration}", flush=True)
            if type(node.bus).__name__ == "VirtualBus":
                print("bms-emu serve: note: python-can's 'virtual' interface reaches this process only; for "
                      "other processes use e.g. -i udp_multicast -c 239.74.163.2 or -i socketcan -c vcan0",
                      flush=True)
        try:
            node.start()
            if not args.quiet and getattr(clock, "rt_priority", None):
                print(f"bms-emu serve: {clock.rt_error or f'loop thread SCHED_FIFO {clock.rt_priority}'}",
                      flush=True)
            report = node.run(args.duration, stop=stop)
        except BusFailure as exc:
            report = exc.report
            print(f"bms-emu serve: the bus failed: {exc}; logs flushed"
                  + (f" ({', '.join(report.logs)})" if report and report.logs else ""), file=sys.stderr)
            status = 3
    finally:
        node.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if report is not None:
        print(report.summary())
        print(node.stats.table())
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    return status
