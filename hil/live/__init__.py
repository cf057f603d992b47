"""The live view and bench control: a telemetry stream from the loop, a web page and a JSON API served by
Bokeh, fault injection from the page, the API or a CAN message, and interactive plots of a finished run.

The telemetry and control parts need only the core packages; the server, the page and the interactive
plots need the ``live`` extra (Bokeh).
"""
from .control import BenchControl, Command, ControlError, parse_command
from .ring import Ring
from .session import LiveSession
from .telemetry import Telemetry

__all__ = ["BenchControl", "Command", "ControlError", "LiveSession", "Ring", "Telemetry", "parse_command"]
