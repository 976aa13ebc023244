"""Benchmark crossval on Dask workers (crossval.scheduler: local-cluster) against the same crossval run one training
after another in one process (crossval.scheduler: null), measured in the same run.

Both run params.yaml's crossval on the featurized data in a fresh process, with --epochs epochs, one training seed
and --threads TensorFlow threads per training (train.threads); the local cluster starts one worker per --threads
cores. Prints the wall time of each, their ratio, and whether the two wrote the same out-of-fold predictions (they
must: where a training runs does not change its numbers). Needs `dvc repro segment pretrain` first (the features,
the cycle table and the pre-trained weights the crossval stage reads).

    python benchmarks/crossval.py [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import dataclasses, hashlib, json, sys, time
import pandas as pd
from heartsound import config, crossval
scheduler, epochs, threads = (None if sys.argv[1] == "null" else sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
params = config.load_or_exit("params.yaml")
params = dataclasses.replace(
    params,
    train=dataclasses.replace(params.train, epochs=epochs, threads=threads),
    crossval=dataclasses.replace(params.crossval, seeds=1, scheduler=scheduler),
)
manifest = pd.read_csv("data/prepared/manifest.csv", dtype={"recording_id": str, "label": str, "group": str})
started = time.perf_counter()
quiet = lambda _: None
metrics, predictions = crossval.run(params, "data/features", manifest, "data/cycles", "data/pretrained", log=quiet)
seconds = time.perf_counter() - started
digest = hashlib.md5(predictions.to_csv(index=False).encode()).hexdigest()
print(json.dumps({"seconds": seconds, "trainings": params.crossval.folds, "predictions": digest}))
"""


def run(scheduler: str, epochs: int, threads: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, scheduler, str(epochs), str(threads)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="train.threads of every training")
    args = parser.parse_args()

    workers = max(1, (os.cpu_count() or 1) // args.threads)
    local = run("null", args.epochs, args.threads)
    cluster = run("local-cluster", args.epochs, args.threads)
    print(
        f"crossval: {local['trainings']} trainings of {args.epochs} epochs, {args.threads} TensorFlow thread(s) each, "
        f"{os.cpu_count()} cores"
    )
    print("| setting | wall [s] |")
    print("| --- | --- |")
    print(f"| crossval.scheduler: null (one process, one training after another) | {local['seconds']:.1f} |")
    print(f"| crossval.scheduler: local-cluster ({workers} workers) | {cluster['seconds']:.1f} |")
    print(f"local-cluster / one process: {cluster['seconds'] / local['seconds']:.2f}x the time")
    same = local["predictions"] == cluster["predictions"]
    print(f"out-of-fold predictions identical: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
