"""The ``bms-emu`` command line: one entry point, one module per subcommand (hil/commands/).

The stop signals (SIGINT, SIGTERM, SIGHUP) are handled from the first line of ``main``, before the
emulator's packages are even imported: ``run`` and ``serve`` honour a stop at any instant with the same
clean ending (``hil.stopping``); the other commands stop as at Ctrl-C. Exit statuses: ``hil.exit_status``.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

from . import exit_status
from .commands import cycles, dbc, firmware, replay, run, serve, sweep, view
from .stopping import StopNow, StopRequest

SUBCOMMANDS = [run, replay, serve, view, dbc, cycles, firmware, sweep]


class _Version(argparse.Action):
    """``--version``: computed only when asked (it imports the libraries it names)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from .run_info import versions
        print(versions())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bms-emu", description="Battery-management-system emulator for "
                                     "all-solid-state EV packs.",
                                     epilog="exit status: 0 passed (run) or stopped (serve); 1 an expectation "
                                            "failed; 2 bad input; 3 the CAN bus could not be opened or failed; "
                                            "4 incomplete (--max-sim-s, nothing simulated, a log or report not "
                                            "written); 128 + N stopped by signal N (130 Ctrl-C, 143 SIGTERM)")
    parser.add_argument("--version", action=_Version, help="print the version (and the libraries') and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_subparser(subparsers)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"bms-emu: warning: {message}\n"  # what the run should know, not where in the code it was seen


class _Console:
    """A standard stream whose reader may go away (``| head``, a log collector that died): once a write or
    flush meets a broken pipe, the stream's descriptor is pointed at the null device and what follows is
    dropped, so the run goes on and its logs and reports are still written (exit status as the run earns)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._lost()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._lost()

    def _lost(self) -> None:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())  # the buffered rest goes nowhere, also at exit
            os.close(null)
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    stop = StopRequest().install()
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Console(sys.stdout), _Console(sys.stderr)
    try:
        return _main(argv, stop)
    except StopNow as exc:
        print(f"bms-emu: stopped at once by {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("bms-emu: interrupted", file=sys.stderr)
        return exit_status.INTERRUPTED
    finally:
        sys.stdout, sys.stderr = streams
        stop.restore()


def _main(argv: list[str] | None, stop: StopRequest) -> int:
    from bms.can.node import BusError
    from bms.errors import BmsError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        args = parser.parse_args(["run", *(argv or [])])
    if getattr(args, "graceful_stop", False):
        args.stop = stop  # the command looks at it once per tick
    elif stop.requested:
        return stop.exit_status()
    else:
        stop.graceful = False  # no loop looks at the request: a signal stops at once, as Ctrl-C does
    try:
        return args.func(args)
    except BusError as exc:
        print(f"bms-emu: error: {exc}", file=sys.stderr)
        return exit_status.BUS
    except BmsError as exc:
        print(f"bms-emu: error: {exc}", file=sys.stderr)
        return exit_status.BAD_INPUT
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        print(exc.code, file=sys.stderr)  # a command's own check of its arguments: bad input, as argparse's
        return exit_status.BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
