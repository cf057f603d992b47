"""Command-line options of a CAN bus, the way python-can's own tools take them.

``add_bus_arguments(parser)`` adds ``-i/--interface``, ``-c/--channel``, ``-b/--bitrate``, ``--fd``,
``--data-bitrate``, ``--timing`` and ``--bus-kwargs`` (python-can's ``can.cli`` helpers where this
python-can has them, 4.5 and later; the same flags otherwise) and ``--can-config-context``.
``bus_options(args)`` turns the parsed namespace into keyword arguments of ``open_bus`` / ``CanNode``:
only what the user gave, so python-can's environment (``CAN_INTERFACE``, ``CAN_CHANNEL``, ``CAN_BITRATE``,
``CAN_CONFIG``) and config file fill in the rest, and the interface defaults to ``virtual``.
"""
from __future__ import annotations

import argparse

__all__ = ["add_bus_arguments", "bus_options"]

_KEYS = ("channel", "interface", "bitrate", "fd", "data_bitrate", "can_filters", "timing")


def add_bus_arguments(parser: argparse.ArgumentParser, *, filter_arg: bool = False) -> None:
    try:
        from can.cli import add_bus_arguments as _python_can_bus_arguments
    except ImportError:  # python-can < 4.5
        _python_can_bus_arguments = None  # type: ignore[assignment]
    if _python_can_bus_arguments is not None:
        _python_can_bus_arguments(parser, filter_arg=filter_arg)
        group = next((g for g in parser._action_groups if g.title == "bus arguments"), parser)
    else:
        group = parser.add_argument_group("bus arguments")
        sup = argparse.SUPPRESS
        group.add_argument("-c", "--channel", default=sup,
                           help="channel, e.g. can0, vcan0, PCAN_USBBUS1, 239.74.163.2 (udp_multicast)")
        group.add_argument("-i", "--interface", default=sup,
                           help="python-can interface (default: python-can's config, else virtual)")
        group.add_argument("-b", "--bitrate", type=int, default=sup, help="bit rate")
        group.add_argument("--fd", action="store_true", default=sup, help="activate CAN FD")
        group.add_argument("--data-bitrate", type=int, default=sup, help="CAN FD data-phase bit rate")
    group.add_argument("--can-config-context", dest="config_context", default=argparse.SUPPRESS,
                       metavar="SECTION", help="section of python-can's config file to read (default: default)")


def bus_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for ``open_bus``/``CanNode`` from the parsed options (only those given)."""
    options: dict = {}
    for key in _KEYS:
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    options.update(getattr(args, "bus_kwargs", None) or {})
    context = getattr(args, "config_context", None)
    if context:
        options["config_context"] = context
    return options
