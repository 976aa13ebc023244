"""Stage segment: manifest.csv -> cycle_features.csv, each recording's heart-cycle features (heartsound.cycles).

A recording where no rhythm is found (noise, artifact, too short) keeps its row, flagged with the reason.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from heartsound import cycles, environment, fusion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("manifest", help="prepare's manifest.csv")
    parser.add_argument("out_dir", help="where cycle_features.csv goes")
    args = parser.parse_args()
    environment.require_pinned()

    manifest = pd.read_csv(args.manifest, dtype={"recording_id": str, "path": str})
    if manifest.empty:
        sys.exit(f"segment: {args.manifest} lists no recordings (did prepare find any?)")
    table = cycles.recordings_table(manifest["recording_id"], manifest["path"])
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    table.to_csv(Path(args.out_dir) / fusion.TABLE_FILE, index=False, float_format="%.6g")
    reasons = table.loc[table["no_rhythm_reason"] != "", "no_rhythm_reason"].str.split(r":| \(", regex=True).str[0]
    print(f"{len(table)} recordings, rhythm found in {int((table['no_rhythm_reason'] == '').sum())}")
    if len(reasons):
        print("no rhythm:", reasons.value_counts().to_dict())


if __name__ == "__main__":
    main()
