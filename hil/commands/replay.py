"""``bms-emu replay``: replay a recorded test drive against the emulated pack and BMS."""
from __future__ import annotations

import argparse
import json


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "replay", help="replay a recorded drive (any python-can log) through the emulated pack and BMS",
        description="Replay a recorded test drive closed loop: the recorded demand (current, DC power, motor "
                    "torque and speed, or vehicle speed) drives the emulated plant through the emulated BMS's "
                    "limits. Recorded BMS signals named in the mapping are compared side by side.",
        epilog="examples:\n  bms-emu replay drive.blf --dbc vehicle.dbc --map mapping.toml\n"
               "  bms-emu replay drive.asc --dbc vehicle.dbc --map mapping.toml --out out/replay\n\n"
               "mapping file:\n  [demand]\n  current_A = { message = \"HV_BATT\", signal = \"PackCurrent\", "
               "scale = 1.0 }\n  [compare]\n  soc = { message = \"BMS_STATE\", signal = \"SOC\", scale = 0.01 }\n"
               "  [replay]\n  pack = \"assb60-192s2p\"\n  initial_soc = 0.8",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="recorded log: .blf, .asc, .log (candump), .csv, .trc, .mf4")
    parser.add_argument("--dbc", required=True, help="the recording vehicle's DBC")
    parser.add_argument("--map", required=True, dest="mapping", help="mapping file (TOML)")
    parser.add_argument("--out", default="bms-emu-replay", help="folder for the reports")
    parser.add_argument("--dt", type=float, default=0.01, help="tick, s")
    parser.add_argument("--no-plots", action="store_true", help="skip PNG plots and the HTML report")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from pathlib import Path

    from ..replay import compare, load_mapping, read_recording, replay_scenario
    from ..runner import run_scenario

    mapping = load_mapping(args.mapping)
    recorded = read_recording(args.log, args.dbc, mapping)
    scenario = replay_scenario(recorded, mapping, name=f"replay of {Path(args.log).name}", dt_s=args.dt)
    result = run_scenario(scenario, out_dir=Path(args.out), mode="headless", plots=not args.no_plots)
    comparison = compare(recorded, result.recording)
    (Path(args.out) / "replay.json").write_text(json.dumps(comparison, indent=2) + "\n", encoding="utf-8")
    if not args.no_plots:
        _plot_comparison(Path(args.out) / "replay_compare.png", result.recording, comparison)
    s = result.summary
    print(f"{scenario.name}: {s['simulated_s']:.0f} s; SOC {s['soc_start']:.3f} -> {s['soc_end']:.3f}; demand "
          f"limited by the BMS for {comparison['time_limited_s']:.1f} s; faults: {len(s['faults'])}")
    for key, c in comparison.items():
        if isinstance(c, dict):
            print(f"  {key}: emulated vs recorded rms {c['rms']:.4g}, max {c['max_abs']:.4g}")
    print(f"  reports in {args.out}")
    return 0 if s["complete"] else 1


def _plot_comparison(path, recording, comparison) -> None:
    """Recorded BMS signals beside the emulated BMS's, and the recorded demand against what was delivered."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..replay import COMPARE

    keys = [k for k in COMPARE if isinstance(comparison.get(k), dict)]
    fig, axes = plt.subplots(len(keys) + 1, 1, figsize=(10, 2.6 * (len(keys) + 1)), sharex=True, squeeze=False)
    t, s = recording.time_s, recording.signals
    ax = axes[0][0]
    ax.plot(t, s["current_demand_A"], color="0.5", lw=0.8, label="recorded demand")
    ax.plot(t, s["current_A"], color="tab:blue", lw=1.0, label="emulated pack current")
    ax.plot(t, s["discharge_limit_A"], color="tab:red", lw=0.8, label="discharge limit")
    ax.plot(t, -s["charge_limit_A"], color="tab:green", lw=0.8, label="charge limit")
    ax.set(ylabel="current (A)", title="Replay: where the solid-state pack's limits bite")
    ax.legend(loc="best", fontsize=8)
    for ax, key in zip((row[0] for row in axes[1:]), keys):
        ax.plot(t, s[f"recorded_{key}"], color="black", lw=1.0, label=f"recorded {key}")
        ax.plot(t, s[COMPARE[key]], color="tab:orange", lw=1.0, label=f"emulated {key}")
        ax.legend(loc="best", fontsize=8)
    axes[-1][0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
