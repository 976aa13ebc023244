"""Benchmark what the determinism settings cost in training time, against TensorFlow's own defaults, in one run.

- project: what the train stage does (heartsound.model: oneDNN kernels capped at AVX2, train.threads intra-op
  threads, one inter-op thread);
- reference: TensorFlow's defaults on this machine (oneDNN picks the widest instruction set, thread pools sized
  by the core count).

Each trains the default model (params.yaml's train section, --epochs epochs) on the featurized train split in a
fresh process, --repeats times, alternating, and prints the median wall time of each and their ratio, and
whether repeated runs of each gave identical predictions. Needs `dvc repro featurize` first.

    python benchmarks/train.py [--epochs 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import hashlib, json, os, sys, time, dataclasses
from heartsound import config, evaluation, features, model
if sys.argv[1] == "reference":
    # Undo what importing heartsound.model pinned, before TensorFlow loads, and let TensorFlow size its pools.
    for name in model.DETERMINISM_ENV:
        if name != "TF_DETERMINISTIC_OPS":
            os.environ.pop(name, None)
    model.set_threads = lambda threads: None
params = config.load_or_exit("params.yaml")
meta = features.load_meta("data/features")
x, w = features.load_split("data/features", "train")
y = evaluation.encode(w["label"], meta["classes"])
train = dataclasses.replace(params.train, epochs=int(sys.argv[2]))
started = time.perf_counter()
trained, _ = model.train(x, y, x[:0], y[:0], len(meta["classes"]), train, verbose=0)
seconds = time.perf_counter() - started
probs = model.predict_windows(trained, x[:512])
print(json.dumps({"seconds": seconds, "predictions": hashlib.md5(probs.tobytes()).hexdigest()}))
"""


def run(setting: str, epochs: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, setting, str(epochs)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    runs = {"project": [], "reference": []}
    for _ in range(args.repeats):
        for setting in runs:
            runs[setting].append(run(setting, args.epochs))
    seconds = {setting: statistics.median(r["seconds"] for r in results) for setting, results in runs.items()}
    print(f"training, {args.epochs} epochs, median of {args.repeats} fresh processes")
    print("| setting | wall [s] | repeated runs identical |")
    print("| --- | --- | --- |")
    for setting, results in runs.items():
        identical = len({r["predictions"] for r in results}) == 1
        print(f"| {setting} | {seconds[setting]:.1f} | {'yes' if identical else 'no'} |")
    print(f"project / reference: {seconds['project'] / seconds['reference']:.2f}x the time")
    same = runs["project"][0]["predictions"] == runs["reference"][0]["predictions"]
    print(f"project and reference predictions identical: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
