"""PASCAL labelling and grouping rules, on the real file names."""

from collections import Counter

import pytest

from heartsound.datasets import pascal


@pytest.mark.parametrize(
    "name, label, patient, noisy",
    [
        ("normal__106_1306776721273_B1.wav", "normal", "106", False),
        ("normal_noisynormal_108_1305654420093_B.wav", "normal", "108", True),
        ("murmur_noisymurmur_165_1307109069581_C1.wav", "murmur", "165", True),
        ("extrastole__209_1308162216750_D.wav", "extrastole", "209", False),
        ("Bunlabelledtest__101_1305030823364_A.wav", "Bunlabelledtest", "101", False),
        ("artifact__201012172012.wav", "artifact", "201012172012", False),
    ],
)
def test_label_patient_and_noisy_flag_from_name(name, label, patient, noisy):
    assert pascal.label_of(name) == label
    assert pascal.patient_of(name) == patient
    assert pascal.is_noisy(name) is noisy


def test_groups_set_b_by_patient_and_set_a_by_file(tmp_path):
    from pathlib import Path

    assert pascal.group_of(Path("x/set_b/normal__106_1306776721273_B1.wav")) == "set_b:patient106"
    assert pascal.group_of(Path("x/set_b/murmur__106_1306776721273_D.wav")) == "set_b:patient106"
    # set_a names carry a timestamp, not a patient: each file is its own group.
    a1, a2 = Path("x/set_a/normal__201102081321.wav"), Path("x/set_a/normal__201102081152.wav")
    assert pascal.group_of(a1) != pascal.group_of(a2)


def test_reader_on_real_pascal_files(pascal_root):
    candidates = pascal.read(str(pascal_root))
    assert len(candidates) == 832
    labelled = [c for c in candidates if c.rejection is None]
    counts = Counter(c.label for c in labelled)
    assert counts == {"normal": 351, "murmur": 129, "extrastole": 46, "artifact": 40, "extrahls": 19}
    unlabelled = [c for c in candidates if c.rejection]
    assert len(unlabelled) == 247 and all(c.label is None and "unlabelled" in c.rejection for c in unlabelled)
    assert sum(c.noisy for c in labelled) == sum("noisy" in c.path for c in labelled) > 0
    set_b_patients = {c.group for c in labelled if c.source == "set_b"}
    # Several recordings per patient in set_b: far fewer groups than files.
    assert len(set_b_patients) < sum(c.source == "set_b" for c in labelled) / 2


def test_unknown_prefix_is_rejected_with_reason(tmp_path):
    (tmp_path / "set_b").mkdir()
    (tmp_path / "set_b" / "wheeze__12_3_A.wav").write_bytes(b"")
    (candidate,) = pascal.read(str(tmp_path))
    assert candidate.label is None and "wheeze" in candidate.rejection
