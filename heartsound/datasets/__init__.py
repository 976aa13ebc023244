"""Dataset readers: each turns one dataset layout into candidate recordings.

A reader is a function ``read(root) -> list[Candidate]`` listing every audio file under
``root``, each with its label and group, or with the reason it cannot be used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from heartsound.datasets import pascal


@dataclass(frozen=True)
class Candidate:
    path: str  # as found under the dataset root (root joined)
    label: str | None
    group: str  # recordings of one group (patient) never go to two splits
    source: str  # sub-collection, e.g. set_a
    noisy: bool = False
    rejection: str | None = None  # why it is not usable, decided from its name or layout


Reader = Callable[[str], list[Candidate]]

READERS: dict[str, Reader] = {
    "pascal": pascal.read,
}


def get_reader(name: str) -> Reader:
    """The reader for a dataset name from params.yaml (data.dataset)."""
    try:
        return READERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(READERS)})") from None
