"""PASCAL Classifying Heart Sounds 2011: set_a (44.1 kHz, one file per group) and set_b (patients).

Labels come from the file-name prefix before the first '_'; the challenge CSVs are not used
because their names do not match the files on disk.
"""

from __future__ import annotations

from pathlib import Path

from heartsound.datasets.candidate import Candidate

LABELS = ("normal", "murmur", "extrahls", "artifact", "extrastole")
UNLABELLED = ("Aunlabelledtest", "Bunlabelledtest")
AUDIO_SUFFIXES = (".wav",)


def label_of(name: str) -> str:
    """The label part of a file name: 'normal__106_..._B1.wav' -> 'normal'."""
    return Path(name).name.split("_", 1)[0]


def is_noisy(name: str) -> bool:
    """set_b marks noisy recordings with a second token: 'normal_noisynormal_...'."""
    tokens = Path(name).stem.split("_")
    return len(tokens) > 1 and tokens[1].startswith("noisy")


def patient_of(name: str) -> str | None:
    """First all-digit token after the label: 'normal__106_1306776721273_B1.wav' -> '106'."""
    for token in Path(name).stem.split("_")[1:]:
        if token.isdigit():
            return token
    return None


def group_of(path: Path) -> str:
    """set_b groups by patient; set_a (and anything without a patient id) by file."""
    source = path.parent.name
    patient = patient_of(path.name) if source == "set_b" else None
    return f"{source}:patient{patient}" if patient else f"{source}:{path.stem}"


def read(root: str) -> list[Candidate]:
    """Every audio file under root as a Candidate."""
    candidates = []
    for path in sorted(Path(root).rglob("*")):
        if not path.is_file() or path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        label = label_of(path.name)
        rejection = None
        if label in UNLABELLED:
            label, rejection = None, "unlabelled (challenge test file)"
        elif label not in LABELS:
            label, rejection = None, f"unknown label prefix {label!r} (expected one of {', '.join(LABELS)})"
        candidates.append(
            Candidate(
                path=str(path),
                label=label,
                group=group_of(path),
                source=path.parent.name,
                noisy=is_noisy(path.name),
                rejection=rejection,
            )
        )
    return candidates
