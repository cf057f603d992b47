"""The shipped replay example: ``vehicle.dbc`` (a 96s 400 V EV), mappings for each kind of demand
(``mapping.toml`` uses every other key of the format), and ``synthetic`` to write a recording of it."""
