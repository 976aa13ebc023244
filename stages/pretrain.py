"""Stage pretrain: the pretrain data set (PhysioNet/CinC 2016) -> weights that train and crossval can start from."""

import argparse

from heartsound import config, environment
from heartsound.datasets import LayoutError
from heartsound.pretraining import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", help="where pretrained.weights.h5 and pretrained.json go")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    environment.require_pinned()

    params = config.load_or_exit(args.params)
    try:
        print(run(params, args.out_dir))
    except LayoutError as e:
        pre = params.pretrain
        raise SystemExit(f"pretrain: {pre.root} is not a {pre.dataset} dataset: {e}") from None


if __name__ == "__main__":
    main()
