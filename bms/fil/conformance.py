"""Conformance of a firmware library: two instances in one process must not share state.

Instance A is stepped alone on one input sequence; then a fresh A' is stepped on the same sequence,
interleaved tick by tick with an instance B on another sequence. A library whose state lives in its
instances gives A' exactly A's outputs and frames; one that keeps globals makes them diverge.
"""
from __future__ import annotations

import numpy as np

from .contract import Role, SlotLayout, bms_layout, vcu_layout
from .slot import BmsActuators, Firmware

__all__ = ["check_instances", "InstanceReport"]


class InstanceReport(dict):
    """``independent`` (bool), ``ticks``, ``first_divergence_tick`` (None if none), ``detail``."""


def _inputs(layout: SlotLayout, rng: np.random.Generator, ticks: int) -> np.ndarray:
    """A plausible, varied input sequence: a pack at 3.2..4.2 V per cell, currents both ways, or a VCU demand."""
    n = layout.n_inputs
    seq = np.zeros((ticks, n))
    if layout.role == Role.BMS:
        nc, nt = layout.n_cells, layout.n_temperatures
        base = rng.uniform(3.4, 4.0)
        seq[:, :nc] = base + 0.01 * rng.standard_normal((ticks, nc))
        seq[:, nc:nc + nt] = rng.uniform(10, 40) + rng.standard_normal((ticks, nt))
        seq[:, nc + nt] = 100.0 * np.sin(np.arange(ticks) / 50.0) * rng.uniform(0.5, 2)
        seq[:, nc + nt + 1] = seq[:, :nc].sum(1)
        seq[:, nc + nt + 2] = np.minimum(seq[:, nc + nt + 1], np.arange(ticks) * 20.0)
    else:
        seq[:, 0] = 2.0
        seq[:, 1] = rng.uniform(-200, 300) * np.sin(np.arange(ticks) / 30.0)
        seq[:, 2] = rng.uniform(600, 800)
    return seq


def _frames_for(layout: SlotLayout, tick: int, rng: np.random.Generator):
    """A VCU command every tick (BMS role) or a BMS status and limits frame (VCU role)."""
    from ..can.node import Frame
    if layout.role == Role.BMS:
        return [Frame.build(0x200, bytes([0, (tick % 16) | (2 << 4), 2, 0, 0, 0, 0, 0]))]
    return [Frame.build(0x100, bytes([0, 3 << 4, 0, 0, 0, 0, 0, 0])),
            Frame.build(0x120, rng.integers(0, 256, 8, dtype=np.uint8).tobytes())]


def check_instances(make, role: Role | str = Role.BMS, *, n_cells: int = 12, n_temperatures: int = 4,
                    ticks: int = 400, dt_ns: int = 10_000_000, seed: int = 1) -> InstanceReport:
    """``make()`` builds an unopened firmware (e.g. ``lambda: LibraryFirmware(path, "bms")``)."""
    role = Role.parse(role)
    layout = bms_layout(n_cells, n_temperatures) if role == Role.BMS else vcu_layout()
    rng = np.random.default_rng(seed)
    seq_a, seq_b = _inputs(layout, rng, ticks), _inputs(layout, rng, ticks)
    frames_a = [_frames_for(layout, k, rng) for k in range(ticks)]
    frames_b = [_frames_for(layout, k + 7, rng) for k in range(ticks)]

    def run(firmwares: list[Firmware], seqs, frame_lists):
        for fw in firmwares:
            fw.open(layout, dt_ns)
        ins = [np.zeros(layout.n_inputs) for _ in firmwares]
        outs: list = [BmsActuators(n_cells) if role == Role.BMS else np.zeros(1) for _ in firmwares]
        trace: list = []
        try:
            for k in range(ticks):
                for j, fw in enumerate(firmwares):
                    ins[j][:] = seqs[j][k]
                    for frame in frame_lists[j][k]:
                        fw.receive(frame, k * dt_ns)
                    fw.step((k + 1) * dt_ns, dt_ns, ins[j], outs[j])
                    sent = [(f.arbitration_id, bytes(f.data)) for f in fw.transmit()]
                    if j == 0:
                        out = (outs[0].contactor_command.tobytes() + outs[0].balancing.tobytes()
                               if role == Role.BMS else outs[0].tobytes())
                        trace.append((out, sent))
        finally:
            for fw in firmwares:
                fw.close()
        return trace

    alone = run([make()], [seq_a], [frames_a])
    together = run([make(), make()], [seq_a, seq_b], [frames_a, frames_b])
    first = next((k for k, (x, y) in enumerate(zip(alone, together)) if x != y), None)
    detail = ("the instance stepped beside another gave the same outputs and frames as alone" if first is None else
              f"at tick {first} the instance stepped beside another differs from the same instance alone: the "
              "library keeps state outside its instances (globals); run it in the process transport "
              "(kind = \"process\" or declare BMS_FIL_FLAG_GLOBALS)")
    return InstanceReport(independent=first is None, ticks=ticks, first_divergence_tick=first, detail=detail)
