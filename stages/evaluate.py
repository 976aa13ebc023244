"""Stage evaluate: model + test windows -> metrics/metrics.json and the confusion matrix (recording level)."""

import argparse

from heartsound import config, environment
from heartsound.training import run_evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("features_dir")
    parser.add_argument("model_dir")
    parser.add_argument("metrics", help="metrics JSON to write")
    parser.add_argument("plots_dir")
    parser.add_argument("--cycles", default="data/cycles", help="the segment stage's output (the cycle head's input)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    environment.require_pinned()

    params = config.load_or_exit(args.params)
    metrics = run_evaluate(params, args.features_dir, args.model_dir, args.metrics, args.plots_dir, args.cycles)
    print({k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "n_recordings")})


if __name__ == "__main__":
    main()
