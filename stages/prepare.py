"""Stage prepare: raw recordings -> manifest.csv (usable, split by patient) + rejections.csv."""

import argparse
from pathlib import Path

from heartsound import config, environment
from heartsound.datasets import LayoutError
from heartsound.manifest import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", help="where manifest.csv and rejections.csv go")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    environment.require_pinned()

    params = config.load_or_exit(args.params)
    try:
        manifest, rejections = prepare(params.data, params.prepare)
    except LayoutError as e:
        raise SystemExit(f"prepare: {params.data.root} is not a {params.data.dataset} dataset: {e}") from None
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out / "manifest.csv", index=False)
    rejections.to_csv(out / "rejections.csv", index=False)
    counts = manifest.groupby("split")["label"].value_counts().unstack(fill_value=0)
    print(f"{len(manifest)} recordings used, {len(rejections)} rejected (see {out / 'rejections.csv'})")
    print(counts.to_string())


if __name__ == "__main__":
    main()
