"""Stage featurize: manifest.csv -> MFCC per split (<split>.npy frames, <split>_windows.csv, meta.json, layout.json).

The outputs persist between runs (dvc.yaml): featurize updates them in place from its per-recording cache.
"""

import argparse

from heartsound import config, environment
from heartsound.features import featurize, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest", help="prepare's manifest.csv")
    parser.add_argument("out_dir", help="where the feature arrays go")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    environment.require_pinned()

    params = config.load_or_exit(args.params)
    summary = featurize(read_manifest(args.manifest), params.featurize, args.out_dir)
    print(summary)


if __name__ == "__main__":
    main()
