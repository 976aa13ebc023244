"""Benchmark `heartsound predict`: the Keras/HDF5 path against the light (TFLite, no TensorFlow) path.

One run measures, for both backends:
- cold single-file latency: `heartsound predict one.wav` in a fresh process, wall clock, median of
  --repeats runs (after one unmeasured run of each, so both read files from a warm page cache);
- batch throughput in recordings/s: predict() over the test split, and over --long-count 10-s recordings
  cut from the test recordings at their own sample rates, in a process that has already imported
  everything and classified two files (steady state, not start-up).

Each figure also gets its CPU time (the process and its workers, user + system). On a machine shared
with other work, wall clock measures the share of the cores we were given as much as predict; the CPU
time does not, and cores / (CPU seconds per recording) bounds the throughput on idle cores.

Run at the repository root after `dvc repro` (or `dvc pull`):  python benchmarks/predict.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

BACKENDS = ("keras", "tflite")
LABELS = {"keras": "Keras/HDF5", "tflite": "TFLite (light)"}
LONG_DURATION_S = 10.0
CLI = "import sys; from heartsound.cli import main; sys.exit(main(sys.argv[1:]))"
# Run in a fresh process per backend: TensorFlow, once imported, changes how predict starts workers.
BATCH = """
import json, resource, sys, time
import heartsound
paths, backend, model, jobs = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
heartsound.predict(paths[:2], model=model, backend=backend, jobs=1)  # imports, model load, caches
def cpu_s():  # this process and its finished workers
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
start, start_cpu = time.perf_counter(), cpu_s()
table = heartsound.predict(paths, model=model, backend=backend, jobs=jobs)
seconds, cpu = time.perf_counter() - start, cpu_s() - start_cpu
assert table["error"].isna().all(), table[table["error"].notna()]
print(json.dumps({"seconds": seconds, "cpu_s": cpu, "recordings": len(table)}))
"""


def python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold_latency_s(path: str, model: str, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median (wall-clock seconds, CPU seconds) of `heartsound predict path` in a fresh process, per backend."""
    wall: dict[str, list[float]] = {b: [] for b in BACKENDS}
    cpu: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for round_index in range(repeats + 1):
        # Alternate the order so that load from others on the machine hits both alike.
        for backend in BACKENDS if round_index % 2 else BACKENDS[::-1]:
            start, start_cpu = time.perf_counter(), children_cpu_s()
            python("-c", CLI, "predict", path, "--model", model, "--backend", backend, "--no-progress")
            if round_index > 0:
                wall[backend].append(time.perf_counter() - start)
                cpu[backend].append(children_cpu_s() - start_cpu)
    return {b: statistics.median(t) for b, t in wall.items()}, {b: statistics.median(t) for b, t in cpu.items()}


def throughput(paths: list[str], model: str, backend: str, jobs: int) -> tuple[float, float]:
    """(recordings per wall-clock second, CPU milliseconds per recording) of predict() in a warm process."""
    out = python("-c", BATCH, json.dumps(paths), backend, model, str(jobs)).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    return result["recordings"] / result["seconds"], 1000 * result["cpu_s"] / result["recordings"]


def write_long_recordings(sources: list[str], count: int, out_dir: Path) -> list[str]:
    """count recordings of exactly LONG_DURATION_S, each a test recording looped, at its own rate."""
    paths = []
    for i in range(count):
        samples, rate_hz = sf.read(sources[i % len(sources)], dtype="float32", always_2d=True)
        length = int(LONG_DURATION_S * rate_hz)
        looped = np.resize(samples[:, 0], length)
        path = out_dir / f"long_{i:04d}.wav"
        sf.write(path, looped, rate_hz, subtype="PCM_16")
        paths.append(str(path))
    return paths


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models", help="model directory (default: models)")
    parser.add_argument("--manifest", default="data/prepared/manifest.csv", help="prepare's manifest")
    parser.add_argument("--repeats", type=int, default=5, help="cold runs per backend (median)")
    parser.add_argument("--long-count", type=int, default=200, help="10-s recordings for the second batch")
    parser.add_argument("--jobs", type=int, default=0, help="feature workers, 0 = all cores")
    args = parser.parse_args()

    manifest = pd.read_csv(args.manifest)
    test = manifest[manifest["split"] == "test"]
    test_paths = test["path"].tolist()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    label = commit()

    cold_wall, cold_cpu = cold_latency_s(test_paths[0], args.model, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        long_paths = write_long_recordings(test_paths, args.long_count, Path(tmp))
        batch = {b: throughput(test_paths, args.model, b, args.jobs) for b in BACKENDS}
        long = {b: throughput(long_paths, args.model, b, args.jobs) for b in BACKENDS}

    rate_mix = ", ".join(
        f"{n} at {r / 1000:g} kHz" for r, n in test["sample_rate_hz"].value_counts().sort_index().items()
    )
    print(
        f"commit {label}; {cores} cores; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"test split: {rate_mix}\n"
    )
    k, t = "keras", "tflite"
    rows = [
        (f"cold `heartsound predict one.wav`, median of {args.repeats}: wall [s]", cold_wall, k, t, "{:.2f}"),
        ("... its CPU time [s]", cold_cpu, k, t, "{:.2f}"),
    ]
    for name, results in (
        (f"test split ({len(test_paths)} recordings)", batch),
        (f"{args.long_count} 10-s recordings", long),
    ):
        rows.append((f"batch, {name}: wall [rec/s]", {b: r[0] for b, r in results.items()}, t, k, "{:.0f}"))
        rows.append(("... CPU per recording [ms]", {b: r[1] for b, r in results.items()}, k, t, "{:.1f}"))
        rows.append(
            (
                f"... {cores} idle cores / CPU per recording [rec/s]",
                {b: cores * 1000 / r[1] for b, r in results.items()},
                t,
                k,
                "{:.0f}",
            )
        )
    print(f"| measure | {LABELS[k]} | {LABELS[t]} | light vs Keras |")
    print("| --- | ---: | ---: | ---: |")
    for name, values, better, worse, fmt in rows:
        print(f"| {name} | {fmt.format(values[k])} | {fmt.format(values[t])} | {values[better] / values[worse]:.1f}x |")
    speedup = cold_wall[k] / cold_wall[t]
    print(
        f"\ntargets: cold light path >= 3x faster (wall): {'met' if speedup >= 3 else 'NOT met'} ({speedup:.2f}x); ",
        end="",
    )
    wall_rate, cpu_ms = long[t]
    print(
        f"10-s batch >= 100 rec/s on {cores} cores: {'met' if wall_rate >= 100 else 'NOT met'} on the wall clock "
        f"({wall_rate:.0f} rec/s), {cores * 1000 / cpu_ms:.0f} rec/s from CPU time"
    )


if __name__ == "__main__":
    main()
