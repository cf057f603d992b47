"""Sweeps: one base scenario run over a design of its parameters (grid, Latin hypercube, Sobol, Monte Carlo),
each member a reproducible scenario, on local worker processes, a Dask cluster or any Executor.

``pip install '.[sweep]'`` (Dask, pyarrow, scipy). The sweep file: ``hil.sweep.sweepfile``.
"""
from .members import Member, members
from .sweepfile import Parameter, Sweep, SweepError, load_sweep, parse_sweep

__all__ = ["Sweep", "Parameter", "Member", "SweepError", "load_sweep", "parse_sweep", "members", "run_sweep",
           "SweepResult"]


def __getattr__(name):  # the execution side needs the sweep extra: imported when used
    if name in ("run_sweep", "SweepResult"):
        from . import execute
        return getattr(execute, name)
    raise AttributeError(name)
