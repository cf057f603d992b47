"""Replay of a recorded test drive: a python-can log, the recording vehicle's DBC and a mapping file.

The recorded demand (pack current, DC power or a product such as current × voltage, motor torque and speed,
or vehicle speed) drives the emulated pack through the emulated BMS's limits, closed loop. Recorded BMS
signals are compared with what the emulated BMS reports, and energy, charge, power and ΔSOC side by side.
The log is checked against what its container promises, every mapped frame is counted, every mapped signal
is checked for gaps and absence; tolerances in the mapping are pass/fail verdicts (JUnit test cases).

The mapping format: README, "Replaying a recorded drive"; a complete example: ``examples/mapping.toml``.
"""
from .compare import compare, recorded_series, verdicts
from .drive import replay_scenario
from .mapping import COMPARE, DEMANDS, ReplayMapping, load_mapping, parse_mapping
from .recording import Finding, RecordedDrive, ReplayError, read_recording

__all__ = ["COMPARE", "DEMANDS", "Finding", "RecordedDrive", "ReplayError", "ReplayMapping", "compare",
           "example_path", "load_mapping", "parse_mapping", "read_recording", "recorded_series",
           "replay_scenario", "verdicts"]


def example_path(name: str = "mapping.toml"):
    """A file of the shipped example (``mapping.toml``, ``vehicle.dbc`` …), as a path."""
    from importlib import resources
    from pathlib import Path
    return Path(str(resources.files("hil.replay.examples") / name))
