"""``bms-emu view OUT_DIR``: a finished run's recording as zoomable plots (one offline HTML file)."""
from __future__ import annotations

import argparse


def add_subparser(subparsers):
    parser = subparsers.add_parser(
        "view", help="open a finished run's recording as interactive, zoomable plots",
        description="Write OUT_DIR/report-interactive.html from the run's recording.npz and summary.json (SOC "
                    "truth and estimate with 3 sigma, current and limits, cell voltages, core and surface "
                    "temperature, state, contactors, events and injections on linked zoomable time axes; BokehJS "
                    "inline, so the file opens offline) and open it in the default browser. Needs the live "
                    "extra: pip install 'assb-bms-emulator[live]'.",
        epilog="examples:\n  bms-emu view bms-emu-out\n  bms-emu view out/cold --no-open\n"
               "exit status: 0 written; 2 not a run's folder, or the live extra missing",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a run's output folder (bms-emu run --out)")
    parser.add_argument("--no-open", action="store_true", help="only write the file, do not open a browser")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        raise SystemExit("bms-emu view: error: needs the live extra: pip install 'assb-bms-emulator[live]'") from None
    from ..live.report_plots import interactive_from_folder

    path = interactive_from_folder(args.folder)
    print(f"bms-emu view: {path}")
    if not args.no_open:
        import webbrowser
        webbrowser.open(path.resolve().as_uri())
    return 0
