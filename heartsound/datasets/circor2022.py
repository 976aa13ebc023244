"""CirCor DigiScope 2022 (PhysioNet Challenge 2022): training_data.csv + training_data/<patient>_<loc>.wav.

Murmur is annotated per patient (Present / Unknown / Absent) with the auscultation locations
where it was heard (``Murmur locations``, e.g. ``AV+MV``). A recording is Present only where
its location is among them, else Absent; every recording of an Unknown patient is Unknown.
A patient's recordings form one group. Licence: ODC-By 1.0 (attribution).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from heartsound.datasets.candidate import Candidate, LayoutError, audio_files, recording_group

PATIENT_TABLE = "training_data.csv"
PATIENT_COLUMNS = ("Patient ID", "Murmur", "Murmur locations")
MURMUR_CLASSES = ("Present", "Unknown", "Absent")
LOCATIONS = ("AV", "PV", "TV", "MV", "Phc")
# <patient>_<location>, with _<n> when one location was recorded more than once (50216_Phc_1).
RECORDING_NAME = re.compile(r"^(?P<patient>\d+)_(?P<location>[A-Za-z]+)(?:_\d+)?$")


def read_patients(path: Path) -> pd.DataFrame:
    """training_data.csv -> one row per patient id (str index) with Murmur and the set of murmur locations."""
    if not path.is_file():
        raise LayoutError(f"{path} not found: CirCor's patient table must sit at data.root")
    try:
        # The table writes missing values as 'nan'; pandas reads them as NaN, filled with ''.
        table = pd.read_csv(path, dtype=str).fillna("")
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise LayoutError(f"{path} is not a readable CSV: {e}") from None
    missing = [c for c in PATIENT_COLUMNS if c not in table.columns]
    if missing:
        raise LayoutError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(table.columns)})")
    table = table[list(PATIENT_COLUMNS)].apply(lambda column: column.str.strip())
    repeated = table["Patient ID"][table["Patient ID"].duplicated()]
    if len(repeated):
        raise LayoutError(f"{path} lists patient {repeated.iloc[0]} more than once")
    table["Murmur locations"] = table["Murmur locations"].map(lambda s: frozenset(filter(None, s.split("+"))))
    return table.set_index("Patient ID")


def recording_label(murmur: str, murmur_locations: frozenset[str], location: str) -> str:
    """A recording's murmur class from its patient's annotation and its own location."""
    if murmur == "Present":
        return "Present" if location in murmur_locations else "Absent"
    return murmur


def label_of(name: str, patients: pd.DataFrame) -> tuple[str | None, str | None]:
    """(murmur class, None) for a recording file name (no suffix), or (None, why it cannot be labelled)."""
    match = RECORDING_NAME.match(name)
    if not match:
        return None, "name is not <patient>_<location>[_<n>]"
    patient, location = match["patient"], match["location"]
    if location not in LOCATIONS:
        return None, f"unknown auscultation location {location!r} (expected one of {', '.join(LOCATIONS)})"
    if patient not in patients.index:
        return None, f"patient {patient} is not in {PATIENT_TABLE}"
    murmur, murmur_locations = patients.loc[patient, ["Murmur", "Murmur locations"]]
    if murmur not in MURMUR_CLASSES:
        return (
            None,
            f"patient {patient} has Murmur {murmur!r} in {PATIENT_TABLE} (expected {', '.join(MURMUR_CLASSES)})",
        )
    if murmur == "Present" and not murmur_locations:
        return None, f"patient {patient} has Murmur Present but no 'Murmur locations' in {PATIENT_TABLE}"
    return recording_label(murmur, murmur_locations, location), None


def read(root: str) -> list[Candidate]:
    """Every WAV under root, labelled from its patient's row in training_data.csv."""
    paths = audio_files(root)
    patients = read_patients(Path(root) / PATIENT_TABLE)
    candidates = []
    for path in paths:
        label, rejection = label_of(path.stem, patients)
        match = RECORDING_NAME.match(path.stem)
        candidates.append(
            Candidate(
                path=str(path),
                label=label,
                # A name without a patient id still needs a group: the file alone.
                group=match["patient"] if match else recording_group(path, root),
                source=path.parent.name,
                rejection=rejection,
            )
        )
    return candidates
