"""Stage crossval: all featurized recordings -> patient-grouped k-fold scores (metrics/cv.json, recording level)."""

import argparse
import json
from pathlib import Path

import pandas as pd

from heartsound import config, environment
from heartsound.crossval import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest", help="prepare's manifest.csv (groups, durations)")
    parser.add_argument("features_dir")
    parser.add_argument("metrics", help="cv metrics JSON to write")
    parser.add_argument("--predictions", default="metrics/cv_predictions.csv", help="out-of-fold predictions CSV")
    parser.add_argument("--cycles", default="data/cycles", help="the segment stage's output (the cycle head's input)")
    parser.add_argument("--pretrained", default="data/pretrained", help="the pretrain stage's output (train.init)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    environment.require_pinned()

    params = config.load_or_exit(args.params)
    manifest = pd.read_csv(args.manifest, dtype={"recording_id": str, "label": str, "group": str})
    metrics, predictions = run(params, args.features_dir, manifest, args.cycles, args.pretrained)
    Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
    with open(args.metrics, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    predictions.to_csv(args.predictions, index=False, float_format="%.6f")
    print({k: round(metrics[k]["mean"], 4) for k in ("macro_f1", "balanced_accuracy", "accuracy")})


if __name__ == "__main__":
    main()
