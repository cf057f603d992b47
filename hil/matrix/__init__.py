"""The emulated BMS on a vehicle's own CAN matrix: a map file (TOML) validated against the matrix (DBC, ARXML,
KCD or SYM through cantools), bound to the CAN node (``bms.can.matrix``).

The format: README, "Speaking the vehicle's CAN matrix"; a complete example: ``examples/ev_fd_bms.toml`` on
``examples/ev_fd_bms.dbc`` (CAN FD, big-endian signals, 29-bit IDs, AUTOSAR E2E profile 5).
"""
from .mapfile import TABLES, load_matrix_map, parse_matrix_map

__all__ = ["TABLES", "example_path", "load_matrix_map", "parse_matrix_map"]


def example_path(name: str = "ev_fd_bms.toml"):
    """A file of the shipped example (``ev_fd_bms.toml``, ``ev_fd_bms.dbc``), as a path."""
    from importlib import resources
    from pathlib import Path
    return Path(str(resources.files("hil.matrix.examples") / name))
