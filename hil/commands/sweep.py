"""``bms-emu sweep``: a base scenario over a design of its parameters, on local processes or a Dask cluster."""
from __future__ import annotations

import argparse
import sys


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "sweep", help="run a sweep: a scenario over a grid, Latin hypercube, Sobol or Monte-Carlo design",
        description="Run every member of a sweep file (a base scenario and a design over its parameters; each "
                    "member a scenario with a seed of its own) on local worker processes, or on an existing Dask "
                    "cluster with --scheduler. Writes manifest.jsonl (a line per finished member, as it "
                    "finishes), results.parquet and results.csv (a row per member), report.html. A rerun skips "
                    "finished members: an interrupted sweep resumes, a grown design runs only its new members. "
                    "Ctrl-C and SIGTERM stop it at once: the members in flight are dropped, every finished one "
                    "is kept. "
                    "Needs the sweep extra: pip install '.[sweep]'.",
        epilog="examples:\n  bms-emu sweep aged.toml --workers 2\n  bms-emu sweep aged.toml --scheduler "
               "tcp://10.0.0.5:8786\n  bms-emu sweep aged.toml --list\n  bms-emu sweep aged.toml --member 17    "
               "(one member alone, full reports)\n  bms-emu sweep aged.toml --write-member 17 > member17.toml\n"
               "exit status: 0 every member passed; 1 a member failed or raised; 2 bad sweep file or arguments; "
               "4 incomplete\n  (members lost with their workers: run again); 128 + N stopped by signal N",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="the sweep file (TOML)")
    parser.add_argument("--out", help="folder for the results (default: bms-emu-sweep/NAME)")
    parser.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core; "
                        "0: in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler (tcp://host:8786)")
    parser.add_argument("--chunk", type=int, metavar="N", help="members per task (default: from their length)")
    parser.add_argument("--member", type=int, metavar="K", help="run member K alone in this process, with the "
                        "reports of bms-emu run in OUT/member-K")
    parser.add_argument("--write-member", type=int, metavar="K", help="print member K's scenario TOML and exit")
    parser.add_argument("--shrink", type=int, metavar="K", help="hand failing member K to the testing kit: hypothesis "
                        "searches drives at its point and shrinks one that fails as it did to a minimal scenario "
                        "(OUT/shrink-K/shrunk.toml)")
    parser.add_argument("--max-examples", type=int, default=40, metavar="N",
                        help="--shrink: drives tried before shrinking stops (default: 40)")
    parser.add_argument("--list", action="store_true", help="list the members (inputs, seed, key) and exit")
    parser.add_argument("--no-report", action="store_true", help="no report.html (results are still written)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar and no status lines")
    parser.add_argument("--status-every", type=float, default=10.0, metavar="S",
                        help="without a terminal: a status line every S seconds (default: 10)")
    parser.set_defaults(func=_sweep, graceful_stop=True)


def _sweep(args) -> int:
    from pathlib import Path

    from .. import exit_status
    from ..sweep import load_sweep, members

    for name in ("workers", "chunk"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "workers" else 1):
            raise SystemExit(f"bms-emu sweep: error: --{name} must be >= {0 if name == 'workers' else 1}")
    sweep = load_sweep(args.sweep)
    missing = _missing_extra(sweep, args)
    if missing:
        print(f"bms-emu sweep: error: {missing} is not installed (the sweep extra): pip install "
              f"'assb-bms-emulator[sweep]'", file=sys.stderr)
        return exit_status.BAD_INPUT
    everyone = members(sweep)
    out = Path(args.out or Path("bms-emu-sweep") / sweep.name)
    for option in ("member", "write_member", "shrink"):
        k = getattr(args, option)
        if k is not None and not 0 <= k < len(everyone):
            raise SystemExit(f"bms-emu sweep: error: --{option.replace('_', '-')}: the sweep has members 0.."
                             f"{len(everyone) - 1}, found {k}")
    if args.list or args.write_member is not None:
        from ..sweep.members import describe_values, standalone_text
        try:
            if args.write_member is not None:
                sys.stdout.write(standalone_text(everyone[args.write_member]))
            for m in everyone if args.list else ():
                print(f"{m.index:>6}  {m.short_key}  seed {m.seed:<20} {describe_values(m)}")
            sys.stdout.flush()
        except BrokenPipeError:  # | head: the reader had enough
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_status.OK
    if args.member is not None:
        return _one(everyone[args.member], sweep, out, args)
    if args.shrink is not None:
        return _shrink(everyone[args.shrink], sweep, out, args)
    progress = None
    if not args.no_progress:
        from ..sweep.progress import SweepBar, SweepStatusLines
        progress = SweepBar() if sys.stdout.isatty() else SweepStatusLines(args.status_every)
    where = args.scheduler or (f"{args.workers} local workers" if args.workers else
                               "this process" if args.workers == 0 else "local workers")
    print(f"bms-emu sweep: {sweep.name} ({sweep.source}): {sweep.design}, {len(everyone)} members on {where}; "
          f"results into {out}", flush=True)
    from ..sweep.execute import run_sweep
    stop = getattr(args, "stop", None)
    result = run_sweep(sweep, out, workers=args.workers, scheduler=args.scheduler, chunk=args.chunk, stop=stop,
                       progress=progress, report=not args.no_report, sweep_members=everyone)
    _print(result)
    if stop is not None and stop.is_set():
        return stop.exit_status()
    if not result.complete:
        return exit_status.INCOMPLETE
    return exit_status.OK if result.passed else exit_status.FAILED


def _missing_extra(sweep, args) -> str:
    """The first library of the sweep extra this command needs and cannot import (empty: none)."""
    from importlib.util import find_spec
    needs = ["scipy"] if sweep.design != "grid" else []
    if args.shrink is not None:
        needs.append("hypothesis")
    elif args.member is None and args.write_member is None and not args.list:
        needs.append("pyarrow")
        if args.workers != 0:
            needs.append("distributed")
    return next((name for name in needs if find_spec(name) is None), "")


def _shrink(member, sweep, out, args) -> int:
    from .. import exit_status
    from ..sweep.shrink import shrink_member

    print(f"bms-emu sweep: member {member.index} of {sweep.name} to the testing kit (up to {args.max_examples} "
          f"drives, then shrinking)", flush=True)
    result = shrink_member(sweep, member, out, max_examples=args.max_examples)
    print(f"  {result.message}")
    if result.path is None:
        return exit_status.OK if not result.failed else exit_status.FAILED
    for segment in result.drive:
        print(f"    {segment}")
    print(f"  minimal scenario: {result.path}\n  replay: bms-emu run {result.path} --mode {sweep.mode}")
    return exit_status.FAILED


def _one(member, sweep, out, args) -> int:
    from .. import exit_status
    from ..runner import run_scenario
    from ..scenario import parse_scenario
    from ..sweep.results import member_row
    from .run import _print_result

    scenario = parse_scenario(member.text, member.source)
    folder = out / f"member-{member.index}"
    print(f"bms-emu sweep: member {member.index} of {sweep.name} alone (key {member.short_key}, seed "
          f"{member.seed}); reports into {folder}", flush=True)
    can_options = {"channel": f"sweep-{member.key[:12]}0", "log": []} if sweep.mode == "lockstep" else None
    result = run_scenario(scenario, out_dir=folder, mode=sweep.mode, plots=True, can_options=can_options,
                          stop=getattr(args, "stop", None))
    _print_result(result)
    row = member_row(result)
    print("  " + ", ".join(f"{k} = {v}" for k, v in row.items() if k in (
        "status", "energy_out_kWh", "limited_s", "cell_voltage_min_V", "temp_core_max_C", "soc_error_max_pct", "dtcs")))
    return exit_status.of_run(result.summary, getattr(args, "stop", None))


def _print(result) -> None:
    counts = ", ".join(f"{result.count(s)} {s}" for s in ("passed", "failed", "incomplete", "error", "lost",
                                                            "pending") if result.count(s))
    print(f"{result.sweep.name}: {len(result.rows)} members ({counts}); {result.ran} run now, {result.skipped} "
          f"finished before, in {result.wall_s:.1f} s")
    shown = 0
    for row in result.rows:
        if row["status"] in ("failed", "incomplete", "error"):
            if shown < 10:
                why = row.get("error") or next((k[5:] for k, v in row.items() if k.startswith("pass:") and v is False),
                                               row.get("stop_reason", ""))
                print(f"  {row['status'].upper():<10} member {row['member']}: {why}\n      rerun: {row['rerun']}")
            shown += 1
    if shown > 10:
        print(f"  ... and {shown - 10} more (results.csv)")
    from ..run_info import package_version
    older = sorted({r["version"] for r in result.rows if r.get("version") not in (None, package_version())})
    if older:
        print(f"note: some members were run by another version of the emulator ({', '.join(older)}; this is "
              f"{package_version()}): the 'version' column says which; remove their lines from manifest.jsonl to "
              f"run them again")
    if not result.complete:
        print(f"INCOMPLETE: {result.stop_reason}; run the same command again to finish it")
    for kind, path in result.files.items():
        print(f"  {kind:<10}{path}")
