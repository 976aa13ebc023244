"""What a reader returns (one Candidate per audio file) and the checks every reader shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Candidate:
    path: str  # as found under the dataset root (root joined)
    label: str | None
    group: str  # recordings of one group (patient) never go to two splits
    source: str  # sub-collection, e.g. set_a
    noisy: bool = False
    rejection: str | None = None  # why it is not usable, decided from its name or layout


class LayoutError(ValueError):
    """The dataset root is not laid out as its reader expects; the message names the file or folder."""


def audio_files(root: str | Path, suffixes: tuple[str, ...] = (".wav",)) -> list[Path]:
    """Every file under root whose suffix is one of `suffixes` (any case), sorted.

    Raises LayoutError if root is not a directory or holds no such file, so a wrong
    data.root stops prepare instead of producing an empty manifest.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"data.root {str(root)!r} is not a directory (not pulled yet? try `dvc pull`)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise LayoutError(f"no audio files ({', '.join(suffixes)}) under data.root {str(root)!r}")
    return files


def recording_group(path: Path, root: str | Path) -> str:
    """The group of a recording that is its own group: its path under root without suffix."""
    return path.relative_to(root).with_suffix("").as_posix()
