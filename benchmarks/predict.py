"""Benchmark `heartsound predict`: the Keras/HDF5 path against the light (TFLite, no TensorFlow) path.

One run measures, for both backends:
- cold single-file latency: `heartsound predict one.wav` in a fresh process, wall clock, median of
  --repeats runs (after one unmeasured run of each, so both read files from a warm page cache);
- batch throughput in recordings/s: predict() over the test split, and over --long-count 10-s recordings
  cut from the test recordings at their own sample rates, in a process that has already imported
  everything and classified two files (steady state, not start-up).

Run at the repository root after `dvc repro` (or `dvc pull`):  python benchmarks/predict.py
"""

from __future__ import annotations

import argparse
import json
import os
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
import json, sys, time
import heartsound
paths, backend, model, jobs = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
heartsound.predict(paths[:2], model=model, backend=backend, jobs=1)  # imports, model load, caches
start = time.perf_counter()
table = heartsound.predict(paths, model=model, backend=backend, jobs=jobs)
seconds = time.perf_counter() - start
assert table["error"].isna().all(), table[table["error"].notna()]
print(json.dumps({"seconds": seconds, "recordings": len(table)}))
"""


def python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def cold_latency_s(path: str, model: str, repeats: int) -> dict[str, float]:
    """Median wall-clock seconds of `heartsound predict path` in a fresh process, per backend."""
    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for round_index in range(repeats + 1):
        # Alternate the order so that load from others on the machine hits both alike.
        for backend in BACKENDS if round_index % 2 else BACKENDS[::-1]:
            start = time.perf_counter()
            python("-c", CLI, "predict", path, "--model", model, "--backend", backend, "--no-progress")
            if round_index > 0:
                times[backend].append(time.perf_counter() - start)
    return {b: statistics.median(t) for b, t in times.items()}


def throughput(paths: list[str], model: str, backend: str, jobs: int) -> float:
    """Recordings per second of predict() over paths, in a warm process."""
    out = python("-c", BATCH, json.dumps(paths), backend, model, str(jobs)).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    return result["recordings"] / result["seconds"]


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
    test_paths = manifest.loc[manifest["split"] == "test", "path"].tolist()
    rates = manifest.loc[manifest["split"] == "test", "sample_rate_hz"]
    print(f"commit {commit()}, {os.cpu_count()} cores, {len(test_paths)} test recordings", file=sys.stderr)

    cold = cold_latency_s(test_paths[0], args.model, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        long_paths = write_long_recordings(test_paths, args.long_count, Path(tmp))
        batch = {b: throughput(test_paths, args.model, b, args.jobs) for b in BACKENDS}
        long = {b: throughput(long_paths, args.model, b, args.jobs) for b in BACKENDS}

    rate_mix = ", ".join(f"{n} at {r / 1000:g} kHz" for r, n in rates.value_counts().sort_index().items())
    rows = [
        (f"cold `heartsound predict one.wav`, median of {args.repeats} [s]", cold, cold["keras"] / cold["tflite"]),
        (f"batch, test split ({len(test_paths)} recordings) [rec/s]", batch, batch["tflite"] / batch["keras"]),
        (f"batch, {args.long_count} 10-s recordings [rec/s]", long, long["tflite"] / long["keras"]),
    ]
    print(f"commit {commit()}; {os.cpu_count()} cores; test split: {rate_mix}\n")
    print(f"| measure | {LABELS['keras']} | {LABELS['tflite']} | light vs Keras |")
    print("| --- | ---: | ---: | ---: |")
    for name, values, ratio in rows:
        print(f"| {name} | {values['keras']:.2f} | {values['tflite']:.2f} | {ratio:.1f}x |")
    met_cold = cold["keras"] / cold["tflite"] >= 3
    met_batch = long["tflite"] >= 100
    print(f"\ntargets: cold light path >= 3x faster: {'met' if met_cold else 'NOT met'}; ", end="")
    print(f"10-s batch >= 100 rec/s: {'met' if met_batch else 'NOT met'} ({long['tflite']:.0f} rec/s)")


if __name__ == "__main__":
    main()
