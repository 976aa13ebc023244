"""Dataset readers on the real sample files, and on malformed copies of them."""

import shutil
from collections import Counter
from pathlib import Path

import pytest
from missing import skip_or_fail

from heartsound.datasets import READERS, LayoutError, circor2022, folder, get_reader, physionet2016, yaseen2018

# ../shared/samples beside the checkout (and beside CI's clone): real files in the original layouts.
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"


@pytest.fixture
def samples() -> Path:
    if not SAMPLES.is_dir():
        skip_or_fail(f"sample datasets not found at {SAMPLES}")
    return SAMPLES


def copy_sample(samples: Path, name: str, tmp_path: Path) -> Path:
    """A writable copy of one sample set, to break."""
    return Path(shutil.copytree(samples / name, tmp_path / name))


def usable(candidates):
    return [c for c in candidates if c.rejection is None]


def test_every_dataset_in_params_has_a_reader():
    from heartsound.config import DATASETS

    assert set(DATASETS) == set(READERS)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        get_reader("nope")


@pytest.mark.parametrize("name", ["physionet2016", "yaseen2018", "circor2022", "folder"])
def test_missing_root_stops_with_its_name(name, tmp_path):
    with pytest.raises(LayoutError, match="not a directory"):
        get_reader(name)(str(tmp_path / "not-pulled"))


# --- PhysioNet 2016 ---


def test_physionet2016_labels_and_groups(samples):
    candidates = physionet2016.read(str(samples / "physionet2016"))
    assert len(candidates) == 10 and len(usable(candidates)) == 10
    by_name = {Path(c.path).stem: c for c in candidates}
    # REFERENCE.csv: a0001..a0005 are 1 (abnormal), a0007..a0016 are -1 (normal).
    assert {n for n, c in by_name.items() if c.label == "abnormal"} == {"a0001", "a0002", "a0003", "a0004", "a0005"}
    assert Counter(c.label for c in candidates) == {"abnormal": 5, "normal": 5}
    assert len({c.group for c in candidates}) == 10  # no patient ids: one group per recording
    assert {c.source for c in candidates} == {"training-a"}


def test_physionet2016_wav_not_in_reference_is_rejected(samples, tmp_path):
    root = copy_sample(samples, "physionet2016", tmp_path)
    shutil.copy(root / "training-a/a0001.wav", root / "training-a/a9999.wav")
    reference = root / "training-a/REFERENCE.csv"
    reference.write_text(reference.read_text().replace("a0007,-1", "a0007,0"))
    rejected = {Path(c.path).stem: c.rejection for c in physionet2016.read(str(root)) if c.rejection}
    assert rejected == {
        "a9999": "not listed in training-a/REFERENCE.csv",
        "a0007": "label '0' in training-a/REFERENCE.csv is neither 1 (abnormal) nor -1 (normal)",
    }


def test_physionet2016_missing_reference_names_the_folder(samples, tmp_path):
    root = copy_sample(samples, "physionet2016", tmp_path)
    (root / "training-b").mkdir()
    shutil.copy(root / "training-a/a0001.wav", root / "training-b/b0001.wav")
    with pytest.raises(LayoutError, match=r"training-b has 1 WAV files but no REFERENCE\.csv"):
        physionet2016.read(str(root))


def test_physionet2016_reference_row_without_wav_stops(samples, tmp_path):
    root = copy_sample(samples, "physionet2016", tmp_path)
    (root / "training-a/a0016.wav").unlink()
    with pytest.raises(LayoutError, match=r"REFERENCE\.csv lists 1 record\(s\) with no WAV file beside it: a0016"):
        physionet2016.read(str(root))


def test_physionet2016_malformed_reference_stops(samples, tmp_path):
    root = copy_sample(samples, "physionet2016", tmp_path)
    (root / "training-a/REFERENCE.csv").write_text("a0001;1\na0002;1\n")
    with pytest.raises(LayoutError, match="has 1 columns, expected 2"):
        physionet2016.read(str(root))


# --- Yaseen 2018 ---


def test_yaseen2018_labels_from_class_folders(samples):
    candidates = yaseen2018.read(str(samples / "yaseen2018"))
    assert len(usable(candidates)) == 15
    assert Counter(c.label for c in candidates) == {"N": 3, "AS": 3, "MR": 3, "MS": 3, "MVP": 3}
    assert all(Path(c.path).parent.name == f"{c.label}_New" for c in candidates)
    assert len({c.group for c in candidates}) == 15


def test_yaseen2018_unknown_folder_and_loose_files_are_rejected(samples, tmp_path):
    root = copy_sample(samples, "yaseen2018", tmp_path)
    (root / "XX_New").mkdir()
    shutil.copy(root / "N_New/New_N_001.wav", root / "XX_New/New_XX_001.wav")
    shutil.copy(root / "N_New/New_N_001.wav", root / "loose.wav")
    candidates = yaseen2018.read(str(root))
    rejected = {Path(c.path).name: c.rejection for c in candidates if c.rejection}
    assert set(rejected) == {"New_XX_001.wav", "loose.wav"}
    assert rejected["New_XX_001.wav"].startswith("unknown class folder 'XX_New'")
    assert rejected["loose.wav"].startswith("not inside a class folder")
    assert len(usable(candidates)) == 15


def test_yaseen2018_archive_unpacked_one_level_deeper_stops(samples, tmp_path):
    copy_sample(samples, "yaseen2018", tmp_path / "outer")
    with pytest.raises(LayoutError, match=r"none of the Yaseen class folders .* \(found: yaseen2018\)"):
        yaseen2018.read(str(tmp_path / "outer"))


# --- CirCor 2022 ---


def test_circor2022_labels_by_location_and_groups_by_patient(samples):
    candidates = circor2022.read(str(samples / "circor2022"))
    assert len(usable(candidates)) == 16  # 4 patients x 4 locations; .hea/.tsv/.txt are not audio
    labels = {Path(c.path).stem: c.label for c in candidates}
    # 9979: Present, heard at AV+MV+PV+TV -> all four Present.
    assert [labels[f"9979_{loc}"] for loc in ("AV", "MV", "PV", "TV")] == ["Present"] * 4
    # 13918: Present, heard at TV only -> TV Present, the other locations Absent.
    assert labels["13918_TV"] == "Present"
    assert [labels[f"13918_{loc}"] for loc in ("AV", "MV", "PV")] == ["Absent"] * 3
    assert {labels[f"2530_{loc}"] for loc in ("AV", "MV", "PV", "TV")} == {"Absent"}
    assert {labels[f"9983_{loc}"] for loc in ("AV", "MV", "PV", "TV")} == {"Unknown"}
    assert Counter(c.group for c in candidates) == {"9979": 4, "13918": 4, "2530": 4, "9983": 4}


def test_circor2022_numbered_and_unlisted_recordings(samples, tmp_path):
    root = copy_sample(samples, "circor2022", tmp_path)
    data = root / "training_data"
    shutil.copy(data / "13918_TV.wav", data / "13918_TV_2.wav")  # a second take at one location
    shutil.copy(data / "13918_TV.wav", data / "77777_AV.wav")  # patient not in the table
    shutil.copy(data / "13918_TV.wav", data / "13918_XY.wav")
    shutil.copy(data / "13918_TV.wav", data / "notes.wav")
    by_name = {Path(c.path).stem: c for c in circor2022.read(str(root))}
    assert (by_name["13918_TV_2"].label, by_name["13918_TV_2"].group) == ("Present", "13918")
    assert by_name["77777_AV"].rejection == "patient 77777 is not in training_data.csv"
    assert by_name["13918_XY"].rejection.startswith("unknown auscultation location 'XY'")
    assert by_name["notes"].rejection.startswith("name is not <patient>_<location>")


def test_circor2022_missing_table_or_column_stops(samples, tmp_path):
    root = copy_sample(samples, "circor2022", tmp_path)
    table = root / "training_data.csv"
    table.write_text(table.read_text().replace("Murmur locations", "Where"))
    with pytest.raises(LayoutError, match="lacks column.*Murmur locations"):
        circor2022.read(str(root))
    table.unlink()
    with pytest.raises(LayoutError, match=r"training_data\.csv not found"):
        circor2022.read(str(root))


# --- a user's folder ---


def test_folder_class_folders_use_the_folder_name(samples):
    candidates = folder.read(str(samples / "yaseen2018"))
    assert Counter(c.label for c in usable(candidates)) == {
        "N_New": 3,
        "AS_New": 3,
        "MR_New": 3,
        "MS_New": 3,
        "MVP_New": 3,
    }


def test_folder_class_folders_reject_loose_and_hidden_files(samples, tmp_path):
    root = copy_sample(samples, "yaseen2018", tmp_path)
    shutil.copy(root / "N_New/New_N_001.wav", root / "loose.wav")
    (root / "__MACOSX/N_New").mkdir(parents=True)
    (root / "__MACOSX/N_New/._New_N_001.wav").write_bytes(b"\0" * 10)
    rejected = {Path(c.path).name: c.rejection for c in folder.read(str(root)) if c.rejection}
    assert rejected == {"loose.wav": "not inside a class folder", "._New_N_001.wav": "hidden file or folder"}


def test_folder_single_class_stops(samples, tmp_path):
    root = tmp_path / "mine"
    shutil.copytree(samples / "yaseen2018/N_New", root / "normal")
    with pytest.raises(LayoutError, match="1 class"):
        folder.read(str(root))


def write_labels(root: Path, text: str) -> None:
    (root / "labels.csv").write_text(text)


def test_folder_labels_csv_with_groups(samples, tmp_path):
    root = copy_sample(samples, "physionet2016", tmp_path)
    write_labels(
        root,
        "path,label,group\n"
        "training-a/a0001.wav,sick,alice\n"
        "./training-a/a0002.wav,sick,alice\n"
        "training-a/a0007.wav,well,bob\n"
        "training-a/a0009.wav,well,\n"
        "training-a/a0011.wav,,carol\n",
    )
    candidates = folder.read(str(root))
    assert len(candidates) == 10  # every WAV under root: listed or not
    by_name = {Path(c.path).stem: c for c in candidates}
    assert [(by_name[n].label, by_name[n].group) for n in ("a0001", "a0002", "a0007")] == [
        ("sick", "alice"),
        ("sick", "alice"),
        ("well", "bob"),
    ]
    assert by_name["a0009"].group == "training-a/a0009"  # no group: the recording alone
    assert by_name["a0011"].rejection == "no label in labels.csv"
    assert {by_name[n].rejection for n in ("a0003", "a0004", "a0005", "a0012", "a0016")} == {"not listed in labels.csv"}


def test_folder_labels_csv_row_pointing_at_missing_file_stops(samples, tmp_path):
    root = copy_sample(samples, "physionet2016", tmp_path)
    write_labels(root, "path,label\ntraining-a/a0001.wav,sick\ntraining-a/a0099.wav,well\n")
    with pytest.raises(LayoutError, match=r"points at 1 missing file\(s\): line 3: training-a/a0099\.wav"):
        folder.read(str(root))


@pytest.mark.parametrize(
    "text, message",
    [
        ("file,class\ntraining-a/a0001.wav,sick\n", "lacks column.*path, label"),
        ("path,label\n../elsewhere.wav,sick\n", "line 2: path '../elsewhere.wav' must be a file path relative"),
        ("path,label\ntraining-a/a0001.wav,sick\ntraining-a/a0001.wav,well\n", "line 3: .* listed more than once"),
    ],
)
def test_folder_labels_csv_malformed_rows_stop(samples, tmp_path, text, message):
    root = copy_sample(samples, "physionet2016", tmp_path)
    write_labels(root, text)
    with pytest.raises(LayoutError, match=message):
        folder.read(str(root))
