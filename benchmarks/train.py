"""Benchmark what training costs against a reference measured in the same run: the determinism settings against
TensorFlow's own defaults, or the epoch budget (train.epoch_windows) against every window each epoch.

- project: what the train stage does (heartsound.model: oneDNN kernels capped at AVX2, train.threads intra-op
  threads, one inter-op thread; params.yaml's train section, epoch budget included);
- reference `tensorflow-defaults`: TensorFlow's defaults on this machine (oneDNN picks the widest instruction set,
  thread pools sized by the core count);
- reference `every-window`: the project's settings with train.epoch_windows 0, every training window each epoch.

Each trains the default model (params.yaml's train section, --epochs epochs) on the featurized train split in a
fresh process, --repeats times, alternating, and prints the median wall time of each and their ratio, and
whether repeated runs of each gave identical predictions. Needs `dvc repro featurize` first; the epoch budget only
bites on a data set with more training windows than it (PhysioNet 2016, not PASCAL).

    python benchmarks/train.py [--epochs 5] [--repeats 3] [--reference tensorflow-defaults | every-window]
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
if sys.argv[1] == "tensorflow-defaults":
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
if sys.argv[1] == "every-window":
    train = dataclasses.replace(train, epoch_windows=0)
started = time.perf_counter()
trained, _ = model.train(x, y, x[:0], y[:0], len(meta["classes"]), train, verbose=0)
seconds = time.perf_counter() - started
probs = model.predict_windows(trained, x[:512])
steps = int(trained.optimizer.iterations)
digest = hashlib.md5(probs.tobytes()).hexdigest()
print(json.dumps({"seconds": seconds, "steps": steps, "windows": len(x), "predictions": digest}))
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
    parser.add_argument("--reference", choices=("tensorflow-defaults", "every-window"), default="tensorflow-defaults")
    args = parser.parse_args()

    runs = {"project": [], args.reference: []}
    for _ in range(args.repeats):
        for setting in runs:
            runs[setting].append(run(setting, args.epochs))
    seconds = {setting: statistics.median(r["seconds"] for r in results) for setting, results in runs.items()}
    windows = runs["project"][0]["windows"]
    print(f"training on {windows} windows, {args.epochs} epochs, median of {args.repeats} fresh processes")
    print("| setting | wall [s] | optimizer steps | repeated runs identical |")
    print("| --- | --- | --- | --- |")
    for setting, results in runs.items():
        identical = len({r["predictions"] for r in results}) == 1
        print(f"| {setting} | {seconds[setting]:.1f} | {results[0]['steps']} | {'yes' if identical else 'no'} |")
    print(f"project / {args.reference}: {seconds['project'] / seconds[args.reference]:.2f}x the time")
    same = runs["project"][0]["predictions"] == runs[args.reference][0]["predictions"]
    print(f"project and reference predictions identical: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
