"""Estimator accuracy and speed: the BMS's beliefs against the plant's truth, and what they cost.

Drives bms.Pack + bms.SensorLayer (realistic mismatch: the preset's cell spread and hysteresis, current
offset 0.2 A and gain error 0.5 %, 1 mV cell-voltage noise, +-2 mV channel offsets, +-1 K temperature
sensors) and bms.estimators.PackEstimator (nominal parameters, sensors only). Prints JSON.

    python bench/bench_estimators.py                 # everything (the cold seeds alone: ~6 min on 2 busy cores)
    python bench/bench_estimators.py --quick         # shorter cycles, fewer cases and seeds (a few minutes)
    python bench/bench_estimators.py --only speed    # one section: accuracy, cold, convergence, sop, soh, speed
    python bench/bench_estimators.py --only cold --cold-seeds 0 1 2 3 4 5 6 7

The ``cold`` section drives an hour at -10 degC (WLTC twice) once per seed (each seed draws another
pack: cell spread, sensor offsets and noise) and reports every seed, the worst one and whether every seed
meets the targets; ``accuracy`` is the cycle x temperature table for ``--seed``.

Accuracy figures are taken after a convergence window (--converge-s, default 120 s) and sampled every
second over all 192 groups; core temperature over the whole run.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from bms import Pack, SensorLayer, _kernels, load_pack
from bms.estimators import PackEstimator
from hil.cycles import load_cycle
from hil.drive import precharge_and_close
from hil.vehicle import Vehicle, power_profile

DT = 0.01


def _group_truth(pack):
    n_p = pack.params.n_parallel
    s = pack.state
    core = s.temp_core_C.reshape(-1, n_p).mean(1)
    return pack.group_soc, core


KEY_ON_S = 0.5  # contactors open after wake-up (the emulator's BMS: self-check, then STANDBY)


def _setup(params, soc, temp_C, seed, kernels=None, **estimator_kw):
    """Pack, sensors and estimator from key-on, as in a vehicle: the estimator wakes with the contactors
    open (it initialises and takes the current sensor's zero), then the pack precharges and closes.
    Returns the pack, the sensors, the estimator and the time of the close."""
    rng = np.random.default_rng(seed)
    pack = Pack(params, initial_soc=soc, temp_C=temp_C, seed=rng, kernels=kernels)
    sensors = SensorLayer(pack, seed=rng, kernels=kernels)
    sensors.sample(0.0)
    est = PackEstimator(params, sensors, kernels=kernels, **estimator_kw)
    t = 0.0

    def tick():
        nonlocal t
        t += DT
        pack.step(DT, 0.0, temp_C)
        sensors.sample(t)
        est.update(t, DT)

    for _ in range(int(round(KEY_ON_S / DT))):
        tick()
    pack.command_contactors(main_negative=True, precharge=True)
    while pack.link_voltage_V < 0.95 * pack.pack_voltage_V:
        tick()
        if t > KEY_ON_S + 2.0:
            raise RuntimeError("precharge did not reach 95 % within 2 s")
    pack.command_contactors(main_positive=True)
    tick()
    pack.command_contactors(precharge=False)
    return pack, sensors, est, t


def drive_case(params, cycle_name, temp_C, *, soc=0.8, repeat=1, seconds=None, seed=0, initial_soc=None,
               converge_s=120.0):
    """One cycle at one temperature: SOC and core-temperature error statistics."""
    pack, sensors, est, t0 = _setup(params, soc, temp_C, seed, initial_soc=initial_soc)
    power, _ = power_profile(load_cycle(cycle_name).repeated(repeat), Vehicle(), DT)
    if seconds:
        power = power[:int(seconds / DT)]
    err, sig, terr, pack_err = [], [], [], []
    first = None
    step, sample, update = pack.step, sensors.sample, est.update
    for k, p_W in enumerate(power):
        t = (k + 1) * DT  # drive time; the estimator's clock also counts the key-on before it
        step(DT, p_W / max(pack.link_voltage_V, 1.0), temp_C)
        sample(t0 + t)
        update(t0 + t, DT)
        if k % 100 == 99:
            soc_true, core_true = _group_truth(pack)
            e = est.group_soc - soc_true
            if first is None:
                first = float(np.abs(e).max())
            terr.append(est.core_temp_C - core_true)
            if t >= converge_s:
                err.append(e)
                sig.append(est.group_soc_3sigma.copy())
                pack_err.append(est.pack_soc - pack.soc)
    err, sig, terr = np.array(err), np.array(sig), np.array(terr)
    return {
        "cycle": cycle_name, "temp_C": temp_C, "simulated_s": round(len(power) * DT, 1),
        "soc_start": soc, "soc_end": round(pack.soc, 4),
        "soc_rms_pct": round(100 * float(np.sqrt((err ** 2).mean())), 3),
        "soc_max_pct": round(100 * float(np.abs(err).max()), 3),
        "inside_3sigma_pct": round(100 * float((np.abs(err) <= sig).mean()), 2),
        "mean_3sigma_pct": round(100 * float(sig.mean()), 3),
        "pack_soc_rms_pct": round(100 * float(np.sqrt(np.mean(np.square(pack_err)))), 3),
        "core_temp_rms_K": round(float(np.sqrt((terr ** 2).mean())), 3),
        "core_temp_max_K": round(float(np.abs(terr).max()), 3),
        "core_temp_rise_K": round(float(pack.state.temp_core_C.max() - temp_C), 2),
        "inputs_flagged": int((~est.input_valid).sum()), "innovations_gated": est.innovations_gated,
    }


TARGETS = {"soc_rms_pct": 0.5, "soc_max_pct": 1.5}


def cold_seeds(params, seeds, *, seconds=None, converge_s=120.0):
    """An hour at -10 degC (WLTC twice) for every seed: each seed's SOC figures, the worst seed, the verdict."""
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        row = drive_case(params, "wltc", -10.0, repeat=2, seconds=seconds, seed=seed, converge_s=converge_s)
        rows.append({"seed": seed, **row, "wall_s": round(time.perf_counter() - start, 1)})
    worst_max = max(rows, key=lambda r: r["soc_max_pct"])
    worst_rms = max(rows, key=lambda r: r["soc_rms_pct"])
    return {"cases": rows, "seeds": list(seeds),
            "worst_seed_by_max": {"seed": worst_max["seed"], "soc_max_pct": worst_max["soc_max_pct"],
                                  "soc_rms_pct": worst_max["soc_rms_pct"]},
            "worst_seed_by_rms": {"seed": worst_rms["seed"], "soc_max_pct": worst_rms["soc_max_pct"],
                                  "soc_rms_pct": worst_rms["soc_rms_pct"]},
            "targets": TARGETS,
            "every_seed_within_targets": all(r["soc_max_pct"] <= TARGETS["soc_max_pct"]
                                             and r["soc_rms_pct"] <= TARGETS["soc_rms_pct"] for r in rows)}


def convergence_case(params, true_soc, offset, *, seconds=120.0, temp_C=25.0, seed=3):
    """Start the estimator ``offset`` away from the truth; error after ``seconds`` of UDDS."""
    pack, sensors, est, t0 = _setup(params, true_soc, temp_C, seed, initial_soc=true_soc + offset)
    power, _ = power_profile(load_cycle("udds"), Vehicle(), DT)
    trace = {}
    for k in range(int(seconds / DT)):
        t = (k + 1) * DT
        pack.step(DT, power[k] / max(pack.link_voltage_V, 1.0), temp_C)
        sensors.sample(t0 + t)
        est.update(t0 + t, DT)
        if k + 1 in (100, 500, 1000, 3000, 6000, int(seconds / DT)):
            trace[f"{t:.0f}s"] = round(100 * float(np.abs(est.group_soc - pack.group_soc).max()), 3)
    return {"true_soc": true_soc, "initial_error_pct": 100 * offset, "max_group_error_pct_at": trace,
            "within_2pct_after_s": seconds,
            "passed": bool(np.abs(est.group_soc - pack.group_soc).max() <= 0.02)}


def sop_case(params, direction, soc, temp_C, *, horizon_s=10.0, seed=5, rest_s=60.0, which="model"):
    """Rest, read the predicted 10 s limit, drive the plant at it for 10 s: where does the voltage end?"""
    pack, sensors, est, t = _setup(params, soc, temp_C, seed)
    for _ in range(int(rest_s / DT)):
        t += DT
        pack.step(DT, 1.0, temp_C)
        sensors.sample(t)
        est.update(t, DT)
    est.update_slow()
    k = est.sop.horizons_s.index(horizon_s)
    if direction == "discharge":
        model = float(est.sop.discharge_current_model_A[k])
        combined = float(est.sop.discharge_current_A[k])
    else:
        model = float(est.sop.charge_current_model_A[k])
        combined = float(est.sop.charge_current_A[k])
    current = model if which == "model" else combined
    load = current if direction == "discharge" else -current
    for _ in range(int(round(horizon_s / DT))):
        t += DT
        pack.step(DT, load, temp_C)
        sensors.sample(t)
        est.update(t, DT)
    v = pack.state.group_voltage_V
    cell = params.cell
    end = float(v.min()) if direction == "discharge" else float(v.max())
    limit = cell.voltage_min_V if direction == "discharge" else cell.voltage_max_V
    margin_mV = 1000 * (end - limit) if direction == "discharge" else 1000 * (limit - end)
    return {"direction": direction, "soc": soc, "temp_C": temp_C, "horizon_s": horizon_s, "driven_at": which,
            "model_limit_A": round(model, 1), "combined_limit_A": round(combined, 1),
            "end_voltage_V": round(end, 4), "margin_to_limit_mV": round(margin_mV, 1),
            "within_0_30mV": bool(0.0 <= margin_mV <= 30.0)}


def soh_case(params, *, capacity_factor=0.9, resistance_factor=1.3, dt=0.1, c_rate=0.5, rest_s=720.0,
             seed=7):
    """A faded (capacity) and aged (resistance) pack through one full discharge-charge cycle with rests."""
    rng = np.random.default_rng(seed)
    pack = Pack(params, initial_soc=0.95, temp_C=25.0, seed=rng)
    pack.state.capacity_Ah[:] *= capacity_factor
    for name in ("r0_scale", "r1_scale", "r2_scale"):
        getattr(pack.state, name)[:] *= resistance_factor
    sensors = SensorLayer(pack, seed=rng)
    precharge_and_close(pack, 0.01)
    sensors.sample(0.0)
    est = PackEstimator(params, sensors)
    current = c_rate * params.capacity_Ah
    t = 0.0

    def run(load, until):
        nonlocal t
        while not until():
            t += dt
            pack.step(dt, load, 25.0)
            sensors.sample(t)
            est.update(t, dt)

    start = t
    run(0.5, lambda: t - start >= rest_s)
    run(current, lambda: pack.group_soc.min() <= 0.1)
    start = t
    run(0.5, lambda: t - start >= rest_s)
    run(-current, lambda: pack.group_soc.max() >= 0.92)
    start = t
    run(0.5, lambda: t - start >= rest_s)
    n_p = params.n_parallel
    true_cap = pack.state.capacity_Ah.reshape(-1, n_p).sum(1)
    cap_err = est.capacity_Ah_estimate / true_cap - 1.0
    s = pack.state
    true_r0 = params.cell.r0_ohm / (1.0 / s.r0_scale.reshape(-1, n_p)).sum(1)
    r_err = est.resistance_ohm_estimate / true_r0 - 1.0
    return {"capacity_factor": capacity_factor, "resistance_factor": resistance_factor,
            "simulated_h": round(t / 3600, 2),
            "dt_s": dt, "c_rate": c_rate, "rest_s": rest_s,
            "capacity_error_pct_mean": round(100 * float(cap_err.mean()), 3),
            "capacity_error_pct_max_abs": round(100 * float(np.abs(cap_err).max()), 3),
            "capacity_within_2pct": bool(np.abs(cap_err).max() <= 0.02),
            "resistance_error_pct_mean": round(100 * float(r_err.mean()), 2),
            "resistance_error_pct_rms": round(100 * float(np.sqrt((r_err ** 2).mean())), 2),
            "final_soc_rms_pct": round(100 * float(np.sqrt(((est.group_soc - pack.group_soc) ** 2).mean())), 3)}


def speed(ticks: int, twin_ticks: int, slow_calls: int) -> dict:
    params = load_pack()
    out = {}
    rng = np.random.default_rng(0)
    currents = rng.normal(40.0, 80.0, max(ticks, twin_ticks)).tolist()
    for name, kernels, n in (("compiled", _kernels.load("compiled"), ticks),
                             ("twin", _kernels.load("numpy"), twin_ticks)):
        pack = Pack(params, initial_soc=0.6, seed=1, kernels=kernels)
        sensors = SensorLayer(pack, seed=2, kernels=kernels)
        sensors.sample(0.0)
        est = PackEstimator(params, sensors, kernels=kernels)
        est.update(0.0, DT)
        tick, slow = est._tick.tick, est._slow.update
        start = time.perf_counter()
        for k in range(n):
            tick(DT, currents[k], True, k % 10 == 0)
        wall = time.perf_counter() - start
        m = slow_calls if name == "compiled" else max(slow_calls // 100, 5)
        start = time.perf_counter()
        for k in range(m):
            tick(DT, currents[k], True, False)
            slow()
        slow_wall = time.perf_counter() - start - wall / n * m
        start = time.perf_counter()
        for k in range(min(n, 20000)):
            est.update(k * DT, DT)
        upd = time.perf_counter() - start
        out[name] = {"ticks": n, "us_per_tick": round(wall / n * 1e6, 3),
                     "group_steps_per_s": round(n * params.n_series / wall),
                     "slow_update_us": round(slow_wall / m * 1e6, 1),
                     "slow_update_us_per_tick_at_100ms": round(slow_wall / m * 1e6 / 10, 2),
                     "update_us_per_tick_incl_slow_and_wrapper": round(upd / min(n, 20000) * 1e6, 2)}
    out["speedup_tick"] = round(out["compiled"]["group_steps_per_s"] / out["twin"]["group_steps_per_s"], 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter cycles, fewer cases")
    parser.add_argument("--only", choices=["accuracy", "cold", "convergence", "sop", "soh", "speed"], action="append",
                        help="run only these sections (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="drive each cycle this many times (default 1)")
    parser.add_argument("--converge-s", type=float, default=120.0, help="convergence window, s (default 120)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the accuracy table")
    parser.add_argument("--cold-seeds", type=int, nargs="+", help="seeds of the cold section (default 0-4; quick: 0 1)")
    args = parser.parse_args()
    sections = set(args.only or ["accuracy", "cold", "convergence", "sop", "soh", "speed"])
    params = load_pack("assb60-192s2p")
    result = {"pack": params.name, "groups": params.n_series, "dt_s": DT, "python": platform.python_version(),
              "kernels": _kernels.KERNELS.name}
    started = time.perf_counter()
    if "accuracy" in sections:
        cycles = ["udds", "us06", "wltc"]
        temps = [-10.0, 25.0, 45.0]
        seconds = 400.0 if args.quick else None
        rows = [drive_case(params, c, t, repeat=args.repeat, seconds=seconds, seed=args.seed,
                           converge_s=args.converge_s) for c in cycles for t in temps]
        result["accuracy"] = rows
        result["accuracy_summary"] = {
            "soc_rms_pct_worst": max(r["soc_rms_pct"] for r in rows),
            "soc_max_pct_worst": max(r["soc_max_pct"] for r in rows),
            "inside_3sigma_pct_worst": min(r["inside_3sigma_pct"] for r in rows),
            "core_temp_rms_K_worst": max(r["core_temp_rms_K"] for r in rows),
            "core_temp_max_K_worst": max(r["core_temp_max_K"] for r in rows),
            "targets": {"soc_rms_pct": 0.5, "soc_max_pct": 1.5, "inside_3sigma_pct": 95.0, "core_temp_rms_K": 0.5,
                        "core_temp_max_K": 1.0},
        }
    if "cold" in sections:
        seeds = args.cold_seeds if args.cold_seeds else ([0, 1] if args.quick else [0, 1, 2, 3, 4])
        result["cold"] = cold_seeds(params, seeds, seconds=600.0 if args.quick else None,
                                    converge_s=args.converge_s)
    if "convergence" in sections:
        result["convergence"] = [convergence_case(params, 0.5, 0.2), convergence_case(params, 0.8, -0.2)]
        if not args.quick:
            result["convergence"].append(convergence_case(params, 0.3, 0.2, temp_C=-10.0))
    if "sop" in sections:
        cases = [("discharge", 0.3, -10.0), ("discharge", 0.1, 25.0), ("discharge", 0.1, 45.0),
                 ("charge", 0.5, -10.0), ("charge", 0.9, 25.0), ("charge", 0.8, 45.0)]
        if args.quick:
            cases = [cases[0], cases[1], cases[4]]
        result["sop_validation"] = [sop_case(params, d, s, t) for d, s, t in cases]
        result["sop_validation"].append(sop_case(params, "discharge", 0.3, -10.0, which="combined"))
    if "soh" in sections:
        result["soh"] = soh_case(params, dt=0.2 if args.quick else 0.1)
    if "speed" in sections:
        result["speed"] = speed(20000 if args.quick else 100000, 300 if args.quick else 1000,
                                200 if args.quick else 1000)
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
