"""The replay's comparison plot: the recording as recorded (its own samples, its own units) beside the
emulated pack: current with the published limits, DC power, then each compared signal."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..expectations import Recording
from .compare import _emulated, recorded_series
from .mapping import ReplayMapping
from .recording import RecordedDrive

__all__ = ["plot_comparison", "comparison_figure"]

MAX_POINTS = 20_000          # recorded samples drawn per line (every k-th beyond that)
_UNITS = {"soc": ("SOC", 1.0), "pack_voltage_V": ("pack voltage (V)", 1.0), "cell_voltage_V": ("cell voltage (V)", 1.0),
          "cell_voltage_min_V": ("lowest cell (V)", 1.0), "cell_voltage_max_V": ("highest cell (V)", 1.0),
          "temp_max_C": ("hottest sensor (°C)", 1.0)}


def _thin(t: np.ndarray, v: np.ndarray):
    step = max(1, t.size // MAX_POINTS)
    return t[::step], v[::step]


def plot_comparison(path: Path, *args, **kwargs) -> Path:
    """The comparison figure (``comparison_figure``'s arguments) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = comparison_figure(*args, **kwargs)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def comparison_figure(drive: RecordedDrive, recording: Recording, mapping: ReplayMapping, comparison: dict,
                      n_series: int, demand_power: tuple | None = None):
    """``demand_power``: (time_s, W) the vehicle model made of a recorded speed or torque demand."""
    import matplotlib.pyplot as plt

    recorded = recorded_series(drive, mapping)
    emulated = _emulated(recording, n_series)
    keys = [k for k in _UNITS if k in recorded and k in comparison["signals"]]
    fig, axes = plt.subplots(len(keys) + 2, 1, figsize=(10, 2.6 * (len(keys) + 2)), sharex=True, squeeze=False)
    t, s = recording.time_s, recording.signals
    demand = f"demand.{mapping.demand_kind}"

    ax = axes[0][0]
    if "current_A" in recorded:
        tr, vr, source, _ = recorded["current_A"]
        label = "recorded demand" if source.startswith("demand.") else "recorded pack current"
        ax.plot(*_thin(tr, vr), color="0.45", lw=0.8, drawstyle="steps-post", label=f"{label} ({source})")
    ax.plot(t, s["current_A"], color="tab:blue", lw=1.0, label="emulated pack current")
    ax.plot(t, s["discharge_limit_A"], color="tab:red", lw=0.8, label="emulated discharge limit")
    ax.plot(t, -s["charge_limit_A"], color="tab:green", lw=0.8, label="emulated charge limit")
    ax.set(ylabel="current (A, > 0 out)", title="Replay: the recorded drive through the emulated pack's limits")
    ax.legend(loc="best", fontsize=7)

    ax = axes[1][0]
    if "power_W" in recorded:
        tr, vr, source, _ = recorded["power_W"]
        label = "recorded demand" if source.startswith("demand.") else "recorded DC power"
        ax.plot(*_thin(tr, vr / 1e3), color="0.45", lw=0.8, drawstyle="steps-post", label=f"{label} ({source})")
    elif demand_power is not None:
        tp, vp = demand_power
        ax.plot(*_thin(tp, vp / 1e3), color="0.45", lw=0.8, drawstyle="steps-post",
                label=f"demanded DC power (vehicle model of the recorded {demand}, {drive[demand][0].size} samples)")
    ax.plot(t, emulated["power_W"] / 1e3, color="tab:purple", lw=1.0, label="emulated pack power")
    ax.set(ylabel="DC power (kW, > 0 out)")
    ax.legend(loc="best", fontsize=7)

    for ax, key in zip((row[0] for row in axes[2:]), keys):
        tr, vr, source, _ = recorded[key]
        ax.plot(*_thin(tr, vr), color="black", lw=1.0, drawstyle="steps-post", label=f"recorded ({source})")
        ax.plot(t, emulated[key], color="tab:orange", lw=1.0, label="emulated")
        entry = comparison["signals"][key]
        title = f"{key}: rms {entry['rms']:.4g}, max {entry['max_abs']:.4g}" if "rms" in entry else key
        if entry.get("different_pack"):
            title += " — DIFFERENT PACK: not comparable"
        ax.set(ylabel=_UNITS[key][0], title=title)
        ax.legend(loc="best", fontsize=7)
    axes[-1][0].set_xlabel("time from the log's first frame (s)")
    fig.tight_layout()
    return fig
