"""Dataset readers: each turns one dataset layout into candidate recordings.

A reader is a function ``read(root) -> list[Candidate]`` listing every audio file under
``root``, each with its label and group, or with the reason it cannot be used. A root
that does not have the reader's layout at all raises LayoutError naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

from heartsound.datasets import circor2022, folder, pascal, physionet2016, yaseen2018
from heartsound.datasets.candidate import Candidate, LayoutError

__all__ = ["Candidate", "LayoutError", "READERS", "get_reader"]

Reader = Callable[[str], list[Candidate]]

READERS: dict[str, Reader] = {
    "pascal": pascal.read,
    "physionet2016": physionet2016.read,
    "yaseen2018": yaseen2018.read,
    "circor2022": circor2022.read,
    "folder": folder.read,
}


def get_reader(name: str) -> Reader:
    """The reader for a dataset name from params.yaml (data.dataset)."""
    try:
        return READERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(READERS)})") from None
