"""``bms-emu replay``: replay a recorded test drive against the emulated pack and BMS."""
from __future__ import annotations

import argparse
import contextlib
import json
import math


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "replay", help="replay a recorded drive (any python-can log) through the emulated pack and BMS",
        description="Replay a recorded test drive closed loop: the recorded demand (pack current, DC power or "
                    "current × voltage, motor torque and speed, or vehicle speed) drives the emulated pack "
                    "through the emulated BMS's limits. Recorded BMS signals named in the mapping are compared "
                    "with the emulated BMS's; energy, charge, power and ΔSOC side by side. The log is checked "
                    "(cut or damaged files, frames that fail to decode, gaps, signals that never appear) and "
                    "the mapping's tolerances are pass/fail. Exit status: 0 passed; 1 a check or tolerance "
                    "failed (reports written); 2 a mapping, DBC or log that cannot be used at all; 4 the replay "
                    "did not finish (a report not written); 128 + N stopped by signal N (reports marked "
                    "incomplete).",
        epilog="examples:\n  bms-emu replay drive.blf --dbc vehicle.dbc --map mapping.toml\n"
               "  bms-emu replay drive.asc.gz --dbc vehicle.dbc --map mapping.toml --out out/replay\n"
               "  python -c 'import hil.replay as r; print(r.example_path())'   # the shipped example mapping\n\n"
               "mapping file (every key: README, 'Replaying a recorded drive'):\n"
               "  [demand]\n  power_W = { product = [ { message = \"HV_BATT\", signal = \"PackCurrent\" },\n"
               "                            { message = \"HV_BATT\", signal = \"PackVoltage\" } ] }\n"
               "  [compare]\n  soc = { message = \"BMS_STATE\", signal = \"SOC\", scale = 0.01 }\n"
               "  [tolerance]\n  soc = { rms_max = 0.03 }",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="recorded log: .blf, .asc, .log (candump -L), .csv, .trc, .db, .mf4, or .gz")
    parser.add_argument("--dbc", required=True, help="the recording vehicle's DBC")
    parser.add_argument("--map", required=True, dest="mapping", help="mapping file (TOML)")
    parser.add_argument("--out", default="bms-emu-replay", help="folder for the reports (default: bms-emu-replay)")
    parser.add_argument("--dt", type=float, default=0.01, help="tick, s (0.001 … 0.1; default 0.01)")
    parser.add_argument("--no-plots", action="store_true", help="skip PNG plots and the HTML report")
    parser.set_defaults(func=_run, graceful_stop=True)


def _run(args) -> int:
    from pathlib import Path

    from bms import load_pack

    from .. import exit_status
    from ..replay import ReplayError, compare, load_mapping, read_recording, replay_scenario, verdicts
    from ..replay.plot import plot_comparison
    from ..report import write_text_atomic
    from ..runner import run_scenario

    if not (math.isfinite(args.dt) and 0.001 <= args.dt <= 0.1):
        raise ReplayError(f"--dt: expected a tick of 0.001 … 0.1 s, found {args.dt:g}")
    stop = getattr(args, "stop", None)
    from ..report import clear_reports
    with contextlib.suppress(OSError):  # an input refused below must not leave an earlier run's verdict
        clear_reports(Path(args.out))
        (Path(args.out) / "replay.json").unlink(missing_ok=True)
    mapping = load_mapping(args.mapping)
    drive = read_recording(args.log, args.dbc, mapping, stop=stop)
    scenario, inputs = replay_scenario(drive, mapping, name=mapping.name or f"replay of {Path(args.log).name}",
                                       dt_s=args.dt)
    params = load_pack(mapping.pack)
    out = Path(args.out)
    report: dict = {}

    def checks(recording):  # before any report of the run is written: its summary stays the last file
        comparison = compare(drive, recording, mapping, n_series=params.n_series, capacity_Ah=params.capacity_Ah)
        found = verdicts(drive, comparison, mapping)
        report.update(comparison)
        out.mkdir(parents=True, exist_ok=True)
        document = {"log": drive.log_info, "inputs": inputs, "messages": drive.messages, "signals": drive.signals,
                    "checks": [{"name": v.name, "passed": v.passed, "message": v.message} for v in found],
                    **comparison}
        write_text_atomic(out / "replay.json", json.dumps(document, indent=2, default=_plain) + "\n")
        if not args.no_plots and recording.time_s.size > 1:
            step = scenario.steps[0].options
            power = (step["time_s"], step["values"]) if mapping.demand_kind in ("speed_mps", "torque_Nm") else None
            plot_comparison(out / "replay_compare.png", drive, recording, mapping, comparison, params.n_series,
                            power)
        return found

    result = run_scenario(scenario, out_dir=out, mode="headless", plots=not args.no_plots, checks=checks, stop=stop)
    _print(result, report, inputs, out)
    return exit_status.of_run(result.summary, stop)


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print(result, report: dict, inputs: dict, out) -> None:
    s = result.summary
    for v in result.verdicts:
        print(f"{'PASS' if v.passed else 'FAIL'}  {v.name}: {v.message}")
    if not s["complete"]:
        print(f"INCOMPLETE: {s['stop_reason']}")
    start = ", ".join(f"{k} {v['value']:.4g} ({v['source']})" for k, v in inputs.items()
                      if isinstance(v.get("value"), float))
    print(f"{result.scenario.name}: {s['simulated_s']:.0f} s; {start}")
    for key, c in report.get("signals", {}).items():
        if "rms" in c:
            note = " [different pack]" if c.get("different_pack") else ""
            print(f"  {key}: emulated vs recorded rms {c['rms']:.4g}, max {c['max_abs']:.4g}{note}")
    for key, c in report.get("totals", {}).items():
        if isinstance(c, dict) and "recorded" in c:
            print(f"  {key}: recorded {c['recorded']:.4g}, emulated {c['emulated']:.4g}")
    print(f"  demand limited by the BMS for {report.get('time_limited_s', 0.0):.1f} s; "
          f"{sum(not v.passed for v in result.verdicts)} of {len(result.verdicts)} checks failed; reports in {out}")
