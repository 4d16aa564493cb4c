"""Benchmark: NEWS2 observation sets scored per second, scalar ``score`` and vectorised ``score_batch``.

Run from the repository root (the process pins itself to one CPU core):

    .venv/bin/python bench/bench_news2.py
    .venv/bin/python bench/bench_news2.py --vectorized-sets 10000000 --scalar-sets 200000 --seed 2017

The synthetic sets are mostly whole numbers and 0.1 °C, as charted, with some device decimals,
about 2 % of values missing, a few impossible values and a third of the residents on SpO2 Scale 2.
Timing covers scoring only, not generating the input. Each path reports its best of ``--repeats``.
"""

import argparse
import contextlib
import os
import platform
import time

import numpy as np

from indicators.news2 import ImpossibleValue, ObservationSet, score, score_batch

MEASURED = ("respiration_rate", "spo2", "systolic_bp", "pulse", "temperature")
# (mean, standard deviation, decimals recorded) of a care-home population, roughly.
DISTRIBUTIONS = {
    "respiration_rate": (18.0, 5.0, 0),
    "spo2": (95.0, 3.0, 0),
    "systolic_bp": (130.0, 25.0, 0),
    "pulse": (80.0, 18.0, 0),
    "temperature": (37.0, 0.8, 1),
}


def pin_to_one_core() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this platform)"
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"pinned to CPU {core}"


def synthetic_columns(sets: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    columns = {}
    for name, (mean, sd, decimals) in DISTRIBUTIONS.items():
        values = np.round(rng.normal(mean, sd, sets), decimals)
        device = rng.random(sets) < 0.1  # readings straight from a device, not yet at chart precision
        values[device] = np.round(rng.normal(mean, sd, int(device.sum())), 2)
        values[rng.random(sets) < 0.02] = np.nan
        columns[name] = values
    columns["spo2"] = np.minimum(columns["spo2"], 100.0)
    columns["spo2_scale"] = rng.choice(np.array([1, 2], dtype=np.int64), sets, p=[0.67, 0.33])
    columns["on_oxygen"] = rng.choice(np.array([-1, 0, 1], dtype=np.int8), sets, p=[0.02, 0.78, 0.2])
    columns["consciousness"] = rng.choice(
        np.array([-1, 0, 1, 2, 3, 4], dtype=np.int8), sets, p=[0.02, 0.9, 0.05, 0.01, 0.01, 0.01]
    )
    return columns


def observation_sets(columns: dict[str, np.ndarray]) -> list[ObservationSet]:
    measured = {name: [None if np.isnan(x) else float(x) for x in columns[name]] for name in MEASURED}
    return [
        ObservationSet(
            **{name: measured[name][row] for name in MEASURED},
            spo2_scale=int(columns["spo2_scale"][row]),
            on_oxygen=None if columns["on_oxygen"][row] < 0 else bool(columns["on_oxygen"][row]),
            consciousness=None
            if columns["consciousness"][row] < 0
            else "ACVPU"[columns["consciousness"][row]],
        )
        for row in range(columns["spo2_scale"].size)
    ]


def best_seconds(repeats: int, scoring) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        scoring()
        timings.append(time.perf_counter() - started)
    return min(timings)


def score_all(observations: list[ObservationSet]) -> None:
    for obs in observations:
        # An impossible set counts like any other: rejecting it is the work.
        with contextlib.suppress(ImpossibleValue):
            score(obs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectorized-sets", type=int, default=10_000_000)
    parser.add_argument("--scalar-sets", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args()

    machine = platform.processor() or platform.machine()
    print(f"python {platform.python_version()}, numpy {np.__version__}, {machine}, {pin_to_one_core()}")

    columns = synthetic_columns(args.vectorized_sets, args.seed)
    seconds = best_seconds(args.repeats, lambda: score_batch(columns))
    print(
        f"vectorized score_batch: {args.vectorized_sets:>12,} sets in {seconds:8.3f} s = "
        f"{args.vectorized_sets / seconds:>14,.0f} sets/s"
    )

    observations = observation_sets(synthetic_columns(args.scalar_sets, args.seed + 1))
    seconds = best_seconds(args.repeats, lambda: score_all(observations))
    print(
        f"scalar score:           {args.scalar_sets:>12,} sets in {seconds:8.3f} s = "
        f"{args.scalar_sets / seconds:>14,.0f} sets/s"
    )


if __name__ == "__main__":
    main()
