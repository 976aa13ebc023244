"""A user's own recordings: one folder per class, or a labels.csv of path,label[,group] at the root.

With labels.csv, paths are relative to the root and group (e.g. a patient id) is optional;
without it, the first folder under the root names the class. A recording without a group is
its own group.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from heartsound.datasets.candidate import Candidate, LayoutError, audio_files, recording_group

LABELS_CSV = "labels.csv"
# What audio.py (libsndfile) decodes.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def is_hidden(relative: Path) -> bool:
    """Dot files and macOS archive leftovers (__MACOSX/, ._name.wav) are not recordings."""
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _require_two_classes(candidates: list[Candidate], where: str) -> None:
    labels = sorted({c.label for c in candidates if c.rejection is None})
    if len(labels) < 2:
        raise LayoutError(f"{where} gives {len(labels)} class(es) ({', '.join(labels)}); a classifier needs at least 2")


def read_class_folders(root: Path) -> list[Candidate]:
    """root/<class>/.../<file>: the class is the first folder under root."""
    candidates = []
    for path in audio_files(root, AUDIO_SUFFIXES):
        relative = path.relative_to(root)
        label, rejection = (relative.parts[0], None) if len(relative.parts) > 1 else (None, "not inside a class folder")
        if is_hidden(relative):
            label, rejection = None, "hidden file or folder"
        candidates.append(
            Candidate(
                path=str(path),
                label=label,
                group=recording_group(path, root),
                source=path.parent.name,
                rejection=rejection,
            )
        )
    _require_two_classes(candidates, f"the class folders under {root}")
    return candidates


def read_labels_csv(root: Path, csv_path: Path) -> dict[str, tuple[str, str]]:
    """labels.csv -> {path relative to root (posix): (label, group)}; LayoutError on a bad row.

    Raises for a missing column, a repeated path, a path outside root and a path whose file is
    missing; an empty label is kept as '' for the caller to reject.
    """
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise LayoutError(f"{csv_path} is not a readable CSV: {e}") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise LayoutError(
            f"{csv_path} lacks column(s) {', '.join(missing)}: the header must be path,label[,group] "
            f"(has: {', '.join(table.columns)})"
        )
    entries: dict[str, tuple[str, str]] = {}
    missing_files = []
    for index, row in table.iterrows():
        line = index + 2  # 1-based, after the header
        raw = row["path"].strip()
        relative = Path(os.path.normpath(raw)) if raw else None
        if relative is None or relative.is_absolute() or relative.parts[0] == "..":
            raise LayoutError(f"{csv_path} line {line}: path {raw!r} must be a file path relative to {root}")
        key = relative.as_posix()
        if key in entries:
            raise LayoutError(f"{csv_path} line {line}: {raw!r} is listed more than once")
        if not (root / relative).is_file():
            missing_files.append(f"line {line}: {raw}")
        group = row["group"].strip() if "group" in table.columns else ""
        entries[key] = (row["label"].strip(), group or relative.with_suffix("").as_posix())
    if missing_files:
        raise LayoutError(
            f"{csv_path} points at {len(missing_files)} missing file(s): "
            f"{'; '.join(missing_files[:5])}{' …' if len(missing_files) > 5 else ''}"
        )
    return entries


def read_csv_layout(root: Path, csv_path: Path) -> list[Candidate]:
    """Recordings listed in labels.csv, plus every unlisted audio file under root (rejected)."""
    entries = read_labels_csv(root, csv_path)
    found = {path.relative_to(root).as_posix() for path in audio_files(root, AUDIO_SUFFIXES)}
    candidates = []
    for key in sorted(found | set(entries)):
        path = root / key
        label, group = entries.get(key, ("", recording_group(path, root)))
        rejection = None
        if key not in entries:
            rejection = f"not listed in {LABELS_CSV}"
        elif not label:
            rejection = f"no label in {LABELS_CSV}"
        candidates.append(
            Candidate(
                path=str(path),
                label=label or None,
                group=group,
                source=path.parent.name,
                rejection=rejection,
            )
        )
    _require_two_classes(candidates, str(csv_path))
    return candidates


def read(root: str) -> list[Candidate]:
    """A user's folder: labels.csv at root if there is one, else one folder per class."""
    csv_path = Path(root) / LABELS_CSV
    if csv_path.is_file():
        return read_csv_layout(Path(root), csv_path)
    return read_class_folders(Path(root))
