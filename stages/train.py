"""Stage train: feature windows -> models/ (model.h5, model.tflite, model.json) + training curves."""

import argparse

from heartsound import config, environment
from heartsound.training import run_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("features_dir")
    parser.add_argument("model_dir")
    parser.add_argument("--live-dir", default="metrics/train", help="dvclive output (training curves)")
    parser.add_argument("--cycles", default="data/cycles", help="the segment stage's output (the cycle head's input)")
    parser.add_argument("--pretrained", default="data/pretrained", help="the pretrain stage's output (train.init)")
    parser.add_argument("--manifest", default="data/prepared/manifest.csv", help="prepare's manifest (sources)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    environment.require_pinned()

    params = config.load_or_exit(args.params)
    print(
        run_train(params, args.features_dir, args.model_dir, args.live_dir, args.cycles, args.pretrained, args.manifest)
    )


if __name__ == "__main__":
    main()
