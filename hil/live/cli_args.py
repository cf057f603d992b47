"""The ``--live`` options ``run`` and ``serve`` share, and the session they make (needs the ``live`` extra)."""
from __future__ import annotations

__all__ = ["add_live_arguments", "session_from_args"]


def add_live_arguments(parser) -> None:
    group = parser.add_argument_group("live view and bench control (pip install 'assb-bms-emulator[live]')")
    group.add_argument("--live", action="store_true",
                       help="serve the live page and the bench-control API while it runs (a token is printed)")
    group.add_argument("--live-port", type=int, default=5006, metavar="PORT",
                       help="port of the live page and API (default: 5006; 0: any free port)")
    group.add_argument("--live-host", default="127.0.0.1", metavar="ADDRESS",
                       help="address to listen on (default: 127.0.0.1, this machine only)")
    group.add_argument("--live-allow-remote", action="store_true",
                       help="allow --live-host to be an address other machines reach (prints a warning)")
    group.add_argument("--live-period", type=float, default=0.1, metavar="S",
                       help="simulated time between telemetry snapshots (default: 0.1)")


def _fail(message: str):
    """A bad argument: the message and exit status 2, as argparse does."""
    import sys
    print(message, file=sys.stderr)
    raise SystemExit(2)


def session_from_args(args, audit_path):
    """A ``LiveSession`` for ``--live``, or None; exits with a message when the extra is missing or an
    option is wrong."""
    if not getattr(args, "live", False):
        return None
    prog = f"bms-emu {args.command}"
    try:
        import bokeh  # noqa: F401
    except ImportError:
        _fail(f"{prog}: error: --live needs the live extra: pip install 'assb-bms-emulator[live]'")
    from .server import is_loopback
    from .session import LiveSession
    if not 0 <= args.live_port <= 65535:
        _fail(f"{prog}: error: --live-port: expected 0..65535, found {args.live_port}")
    if not is_loopback(args.live_host) and not args.live_allow_remote:
        _fail(f"{prog}: error: --live-host {args.live_host}: not a loopback address; the bench control "
                         "would be reachable from the network: add --live-allow-remote to do it anyway")
    if not args.live_period > 0:
        _fail(f"{prog}: error: --live-period: expected a time > 0 s, found {args.live_period}")
    session = LiveSession(audit_path=audit_path, host=args.live_host, port=args.live_port,
                          allow_remote=args.live_allow_remote, period_s=args.live_period)
    session.announce = True
    return session
