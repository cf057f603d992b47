"""SecurityAccess (0x27): seed and key with a configurable algorithm, an attempt counter and a delay timer.

``algorithm``: ``"xor"`` (key = seed XOR secret), ``"add"`` (key = seed + secret mod 2^32, big-endian),
``"module:function"`` (a function ``f(seed: bytes, level: int) -> bytes`` to import), or a callable.
Seeds come from their own ``numpy.random.Generator`` (seeded from ``seed``), so a lockstep session is the same
every run and the pack's noise draws are untouched. The failed-attempt counter lives in the ECU's
non-volatile memory: a reset does not buy a tester more tries; after ``max_attempts`` wrong keys the ECU
answers 0x36 and then 0x37 to every seed request until ``delay_s`` of simulated time has passed (also after
power-on while attempts are exhausted, as ISO 14229-1 allows).
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["SecurityConfig", "SecurityAccess", "key_for", "ALGORITHMS"]

NRC_SEQUENCE, NRC_INVALID_KEY, NRC_EXCEEDED, NRC_DELAY = 0x24, 0x35, 0x36, 0x37
ALGORITHMS = ("xor", "add")


@dataclass(frozen=True)
class SecurityConfig:
    levels: tuple[int, ...] = (1,)          # odd requestSeed sub-functions served (level n: seed n, key n + 1)
    algorithm: str | Callable = "xor"
    secret: int = 0x5A17C3E9
    seed_bytes: int = 4
    max_attempts: int = 3
    delay_s: float = 10.0
    seed: int = 0

    def __post_init__(self):
        for level in self.levels:
            if not (isinstance(level, int) and 1 <= level <= 0x41 and level % 2 == 1):
                raise InputError("security.levels", "odd requestSeed sub-functions 0x01..0x41", level)
        if not (isinstance(self.seed_bytes, int) and 1 <= self.seed_bytes <= 16):
            raise InputError("security.seed_bytes", "an integer 1..16", self.seed_bytes)
        if not (isinstance(self.max_attempts, int) and self.max_attempts >= 1):
            raise InputError("security.max_attempts", "an integer >= 1", self.max_attempts)
        if not (isinstance(self.delay_s, (int, float)) and math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise InputError("security.delay_s", "a time >= 0 s", self.delay_s)
        if isinstance(self.algorithm, str) and self.algorithm not in ALGORITHMS and ":" not in self.algorithm:
            raise InputError("security.algorithm", "xor, add, 'module:function' or a callable", self.algorithm)


def _resolve(algorithm: str | Callable) -> Callable[[bytes, int, int], bytes]:
    if callable(algorithm):
        fn = algorithm
        return lambda seed, level, secret: bytes(fn(seed, level))
    if algorithm == "xor":
        return lambda seed, level, secret: bytes(b ^ s for b, s in zip(seed, secret.to_bytes(len(seed) + 16, "big")
                                                                      [-len(seed):]))
    if algorithm == "add":
        return lambda seed, level, secret: ((int.from_bytes(seed, "big") + secret) % (1 << (8 * len(seed)))
                                            ).to_bytes(len(seed), "big")
    module, _, name = algorithm.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InputError("security.algorithm", "an importable 'module:function'", algorithm) from exc
    return lambda seed, level, secret: bytes(fn(seed, level))


def key_for(seed: bytes, level: int, config: SecurityConfig | None = None) -> bytes:
    """The key the ECU expects for ``seed`` at ``level`` (what a tester's key DLL computes)."""
    config = config or SecurityConfig()
    return _resolve(config.algorithm)(bytes(seed), level, config.secret)


class SecurityAccess:
    """The state of SecurityAccess: which level is unlocked, the seed asked for, attempts and delay."""

    def __init__(self, config: SecurityConfig, nvm: dict):
        self.config = config
        self._key = _resolve(config.algorithm)
        self._rng = np.random.default_rng([int(config.seed), 0x27])
        self.nvm = nvm                      # {"failed_attempts": n, "delay_until_s": t}
        nvm.setdefault("failed_attempts", 0)
        nvm.setdefault("delay_until_s", None)
        self.unlocked = 0                   # the unlocked level (0: locked)
        self._seed: tuple[int, bytes] | None = None

    def lock(self) -> None:
        self.unlocked = 0
        self._seed = None

    def power_on(self, t_s: float) -> None:
        """After power-on or reset: locked; a delay is pending while the attempts are used up."""
        self.lock()
        if self.nvm["failed_attempts"] >= self.config.max_attempts:
            self.nvm["delay_until_s"] = t_s + self.config.delay_s

    def request_seed(self, level: int, t_s: float) -> tuple[bytes | None, int]:
        """(seed, 0) or (None, NRC)."""
        until = self.nvm["delay_until_s"]
        if until is not None and t_s < until - 1e-9:
            return None, NRC_DELAY
        if until is not None:
            self.nvm["delay_until_s"] = None
            if self.nvm["failed_attempts"] >= self.config.max_attempts:
                self.nvm["failed_attempts"] = self.config.max_attempts - 1   # one more try after the delay
        if self.unlocked == level:
            return bytes(self.config.seed_bytes), 0   # already unlocked: a zero seed
        seed = bytes(self._rng.integers(0, 256, self.config.seed_bytes, dtype=np.uint8).tolist())
        if not any(seed):
            seed = b"\x01" + seed[1:]
        self._seed = (level, seed)
        return seed, 0

    def send_key(self, level: int, key: bytes, t_s: float) -> int:
        """0 when the key unlocks ``level``, else the NRC (0x24, 0x35, 0x36)."""
        if self._seed is None or self._seed[0] != level:
            return NRC_SEQUENCE
        _, seed = self._seed
        self._seed = None
        if bytes(key) == self._key(seed, level, self.config.secret):
            self.unlocked = level
            self.nvm["failed_attempts"] = 0
            return 0
        self.nvm["failed_attempts"] += 1
        if self.nvm["failed_attempts"] >= self.config.max_attempts:
            self.nvm["delay_until_s"] = t_s + self.config.delay_s
            return NRC_EXCEEDED
        return NRC_INVALID_KEY
