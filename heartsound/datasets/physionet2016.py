"""PhysioNet/CinC Challenge 2016: folders training-a … training-f, each with its own REFERENCE.csv.

REFERENCE.csv has no header, one row per record: ``a0001,1`` (abnormal) or ``a0001,-1`` (normal).
The challenge publishes no patient ids, so each recording is its own group.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from heartsound.datasets.candidate import Candidate, LayoutError, audio_files, recording_group

REFERENCE = "REFERENCE.csv"
LABELS = {"1": "abnormal", "-1": "normal"}


def read_reference(path: Path) -> dict[str, str]:
    """REFERENCE.csv -> {record name: raw label as written}; LayoutError if it is not name,label rows."""
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise LayoutError(f"{path} is empty (expected rows of name,label)") from None
    except pd.errors.ParserError as e:
        raise LayoutError(f"{path} is not a two-column CSV of name,label: {e}") from None
    if table.shape[1] != 2:
        raise LayoutError(f"{path} has {table.shape[1]} columns, expected 2 (name,label)")
    names, labels = table[0].str.strip(), table[1].str.strip()
    repeated = names[names.duplicated()]
    if len(repeated):
        raise LayoutError(f"{path} lists record {repeated.iloc[0]!r} more than once")
    return dict(zip(names, labels))


def read(root: str) -> list[Candidate]:
    """Every WAV under root, labelled from the REFERENCE.csv in its own folder.

    A folder of WAVs without REFERENCE.csv, or a REFERENCE.csv naming a record with no WAV
    (an incomplete download), raises LayoutError; a WAV its REFERENCE.csv does not list, or
    with a label other than 1/-1, is rejected with the reason.
    """
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in audio_files(root):
        by_folder[path.parent].append(path)

    candidates = []
    for folder, paths in sorted(by_folder.items()):
        reference_path = folder / REFERENCE
        if not reference_path.is_file():
            raise LayoutError(
                f"{folder} has {len(paths)} WAV files but no {REFERENCE} (each training-* folder has one)"
            )
        reference = read_reference(reference_path)
        missing = sorted(set(reference) - {p.stem for p in paths})
        if missing:
            raise LayoutError(
                f"{reference_path} lists {len(missing)} record(s) with no WAV file beside it: "
                f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
            )
        for path in paths:
            raw = reference.get(path.stem)
            label, rejection = LABELS.get(raw), None
            if raw is None:
                rejection = f"not listed in {folder.name}/{REFERENCE}"
            elif label is None:
                rejection = f"label {raw!r} in {folder.name}/{REFERENCE} is neither 1 (abnormal) nor -1 (normal)"
            candidates.append(
                Candidate(
                    path=str(path),
                    label=label,
                    group=recording_group(path, root),
                    source=folder.name,
                    rejection=rejection,
                )
            )
    return candidates
