"""Hypothesis settings profiles for kit tests, registered when the plugin loads; pick one with pytest's
``--hypothesis-profile NAME`` (or ``settings.load_profile``):

* ``bms-ci``: derandomised (the same examples on every machine and run), no example database, 25 examples,
  no deadline (a lockstep example's wall time depends on the machine's load, never on the firmware);
* ``bms-dev``: random, with the local example database (a failure found once is tried first next time), 50;
* ``bms-nightly``: random, 1,000 examples, and a failure's reproduction blob printed.
"""
from __future__ import annotations

from hypothesis import HealthCheck, settings

__all__ = ["register"]

_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


def register() -> None:
    settings.register_profile("bms-ci", derandomize=True, database=None, max_examples=25, deadline=None,
                              suppress_health_check=_QUIET, print_blob=True)
    settings.register_profile("bms-dev", max_examples=50, deadline=None, suppress_health_check=_QUIET)
    settings.register_profile("bms-nightly", max_examples=1000, deadline=None, suppress_health_check=_QUIET,
                              print_blob=True)
