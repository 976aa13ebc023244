"""Yaseen, Son & Kwon 2018: one folder per class (N_New, AS_New, MR_New, MS_New, MVP_New).

Labels are the paper's abbreviations: N normal, AS aortic stenosis, MR mitral regurgitation,
MS mitral stenosis, MVP mitral valve prolapse. No patient ids are published, so each recording
is its own group.
"""

from __future__ import annotations

from pathlib import Path

from heartsound.datasets.candidate import Candidate, LayoutError, audio_files, recording_group

CLASS_FOLDERS = {"N_New": "N", "AS_New": "AS", "MR_New": "MR", "MS_New": "MS", "MVP_New": "MVP"}


def read(root: str) -> list[Candidate]:
    """Every WAV under root, labelled by the class folder it sits in.

    Raises LayoutError if root holds none of the class folders (e.g. the archive unpacked one
    level deeper); WAVs outside a class folder or in an unknown folder are rejected.
    """
    paths = audio_files(root)
    present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    if not set(present) & set(CLASS_FOLDERS):
        raise LayoutError(
            f"data.root {root!r} has none of the Yaseen class folders {', '.join(CLASS_FOLDERS)} "
            f"(found: {', '.join(present) or 'no folders'})"
        )
    expected = ", ".join(CLASS_FOLDERS)
    candidates = []
    for path in paths:
        parts = path.relative_to(root).parts
        folder = parts[0] if len(parts) > 1 else None
        label, rejection = CLASS_FOLDERS.get(folder), None
        if folder is None:
            rejection = f"not inside a class folder ({expected})"
        elif label is None:
            rejection = f"unknown class folder {folder!r} (expected one of {expected})"
        candidates.append(
            Candidate(
                path=str(path),
                label=label,
                group=recording_group(path, root),
                source=folder or "",
                rejection=rejection,
            )
        )
    return candidates
