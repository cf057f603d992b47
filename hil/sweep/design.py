"""Designs over a sweep's parameters: a full grid, or points in the unit cube (Latin hypercube and Sobol from
``scipy.stats.qmc``, plain Monte Carlo) mapped through each parameter's distribution.

Every draw comes from a ``numpy.random.SeedSequence`` of the sweep's seed, so a design is the same on every
machine. Sobol and Monte-Carlo designs grow without moving their first points (a sweep is extended by asking
for more members); a Latin hypercube of another size is another design.
"""
from __future__ import annotations

import inspect
import itertools
import math

import numpy as np

__all__ = ["design_points", "unit_points", "from_unit"]

# spawn keys of the independent streams one sweep seed feeds
STREAM_LHS, STREAM_SOBOL, STREAM_RANDOM, STREAM_MEMBER = 1, 2, 3, 4
_EDGE = 1e-12  # keeps an unbounded inverse CDF finite at the unit cube's faces


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _qmc_seed_keyword(cls) -> str:
    """scipy >= 1.15 calls it ``rng``; older releases ``seed``."""
    return "rng" if "rng" in inspect.signature(cls).parameters else "seed"


def unit_points(design: str, n: int, d: int, seed: int) -> np.ndarray:
    """``n`` points of ``[0, 1)^d``: ``lhs`` (one point per stratum of 1/n in every dimension), ``sobol``
    (scrambled, balanced for n = 2^m), ``random`` (each member its own stream: member k is the same whatever n)."""
    from scipy.stats import qmc

    if design == "lhs":
        engine = qmc.LatinHypercube(d, **{_qmc_seed_keyword(qmc.LatinHypercube): _rng(seed, STREAM_LHS)})
        return engine.random(n)
    if design == "sobol":
        engine = qmc.Sobol(d, scramble=True, **{_qmc_seed_keyword(qmc.Sobol): _rng(seed, STREAM_SOBOL)})
        return engine.random_base2(int(math.log2(n))) if n & (n - 1) == 0 else engine.random(n)
    if design == "random":
        return np.array([_rng(seed, STREAM_RANDOM, k).random(d) for k in range(n)]).reshape(n, d)
    raise ValueError(f"unknown design {design!r}")


def from_unit(parameter, u: float):
    """A parameter's value at ``u`` in [0, 1): the inverse of its distribution's CDF."""
    p = parameter
    u = min(max(float(u), _EDGE), 1.0 - _EDGE)
    if p.distribution == "choice":
        return p.values[min(int(u * len(p.values)), len(p.values) - 1)]
    if p.distribution == "uniform":
        value = p.min + u * (p.max - p.min)
    elif p.distribution == "loguniform":
        value = math.exp(math.log(p.min) + u * (math.log(p.max) - math.log(p.min)))
    elif p.distribution == "normal":
        from scipy.stats import norm, truncnorm
        if p.min is None and p.max is None:
            value = float(norm.ppf(u, loc=p.mean, scale=p.sigma))
        else:
            low = -math.inf if p.min is None else (p.min - p.mean) / p.sigma
            high = math.inf if p.max is None else (p.max - p.mean) / p.sigma
            value = float(truncnorm.ppf(u, low, high, loc=p.mean, scale=p.sigma))
    else:
        raise ValueError(f"unknown distribution {p.distribution!r}")
    return int(round(value)) if p.integer else float(value)


def grid_levels(parameter) -> list:
    p = parameter
    if p.values is not None:
        return list(p.values)
    levels = [float(v) for v in np.linspace(p.min, p.max, p.levels)]
    return [int(round(v)) for v in levels] if p.integer else levels


def design_points(sweep) -> list[tuple]:
    """The sweep's design points in order: one tuple of values per point, in the order of its parameters."""
    params = sweep.parameters
    if sweep.design == "grid":
        return list(itertools.product(*(grid_levels(p) for p in params)))
    u = unit_points(sweep.design, sweep.points, len(params), sweep.seed)
    return [tuple(from_unit(p, x) for p, x in zip(params, row)) for row in u]
