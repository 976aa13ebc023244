"""Dataset-specific metrics: PhysioNet 2016 Se/Sp/MAcc and CirCor 2022 patient-level weighted accuracy."""

import pytest

from heartsound import evaluation


def test_physionet2016_screening_has_abnormal_as_positive():
    y_true = ["abnormal", "abnormal", "abnormal", "abnormal", "normal", "normal"]
    y_pred = ["abnormal", "abnormal", "abnormal", "normal", "normal", "abnormal"]
    metrics = evaluation.dataset_metrics("physionet2016", y_true, y_pred)["screening"]
    assert metrics["sensitivity"] == pytest.approx(3 / 4)
    assert metrics["specificity"] == pytest.approx(1 / 2)
    assert metrics["macc"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert metrics["n_recordings"] == 6


def test_physionet2016_screening_left_out_when_one_side_is_missing():
    assert evaluation.dataset_metrics("physionet2016", ["normal", "normal"], ["normal", "abnormal"]) == {}


def test_pascal_screening_unchanged():
    y_true = ["murmur", "extrastole", "normal", "artifact"]
    y_pred = ["normal", "extrahls", "normal", "murmur"]
    metrics = evaluation.dataset_metrics("pascal", y_true, y_pred)["screening"]
    # artifact is neither side: left out; extrastole predicted extrahls is still abnormal.
    assert (metrics["sensitivity"], metrics["specificity"], metrics["n_recordings"]) == (0.5, 1.0, 3)


@pytest.mark.parametrize(
    "recordings, patient",
    [
        (["Absent", "Present", "Absent"], "Present"),
        (["Absent", "Unknown", "Present"], "Present"),
        (["Absent", "Unknown"], "Unknown"),
        (["Absent", "Absent"], "Absent"),
        (["Unknown"], "Unknown"),
    ],
)
def test_patient_murmur_from_recordings(recordings, patient):
    assert evaluation.patient_murmur(recordings) == patient


@pytest.mark.parametrize(
    "true, pred, expected",
    [
        (["Present", "Unknown", "Absent"], ["Present", "Unknown", "Absent"], 1.0),
        (["Present", "Unknown", "Absent"], ["Absent", "Absent", "Absent"], 1 / 9),
        # Missing the one Present patient costs 5 of 5 + 3 + 1.
        (["Present", "Unknown", "Absent"], ["Absent", "Unknown", "Absent"], 4 / 9),
        (["Present", "Unknown", "Absent"], ["Present", "Present", "Present"], 5 / 9),
        # Weights follow the true class: a wrong Absent costs only 1 of 5 + 1 + 1.
        (["Present", "Absent", "Absent"], ["Present", "Present", "Absent"], 6 / 7),
        (["Absent", "Absent"], ["Absent", "Unknown"], 1 / 2),
    ],
)
def test_weighted_murmur_accuracy_known_cases(true, pred, expected):
    assert evaluation.weighted_murmur_accuracy(true, pred) == pytest.approx(expected)


def test_weighted_murmur_accuracy_rejects_other_labels():
    with pytest.raises(ValueError, match="murmur labels"):
        evaluation.weighted_murmur_accuracy(["normal"], ["normal"])


def test_circor2022_murmur_is_scored_per_patient():
    # Patient 1: murmur heard at TV only; predicted Present at MV -> patient correct (Present).
    # Patient 2: Absent everywhere; one recording predicted Unknown -> patient Unknown (wrong).
    # Patient 3: Unknown; predicted Absent everywhere -> wrong.
    y_true = ["Absent", "Present", "Absent", "Absent", "Unknown", "Unknown"]
    y_pred = ["Present", "Absent", "Unknown", "Absent", "Absent", "Absent"]
    groups = ["p1", "p1", "p2", "p2", "p3", "p3"]
    murmur = evaluation.dataset_metrics("circor2022", y_true, y_pred, groups)["murmur"]
    assert murmur["n_patients"] == 3
    assert murmur["weighted_accuracy"] == pytest.approx(5 / (5 + 1 + 3))
    assert murmur["accuracy"] == pytest.approx(1 / 3)
    # Recording by recording the same predictions would score differently: the patient level matters.
    assert murmur["weighted_accuracy"] != pytest.approx(evaluation.weighted_murmur_accuracy(y_true, y_pred))


def test_circor2022_murmur_needs_groups():
    assert evaluation.dataset_metrics("circor2022", ["Present"], ["Present"]) == {}


def test_score_merges_dataset_metrics_beside_common_ones():
    y_true, y_pred = ["Present", "Absent", "Absent"], ["Present", "Absent", "Present"]
    metrics = evaluation.score(y_true, y_pred, ["Absent", "Present", "Unknown"], "circor2022", ["a", "a", "b"])
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["murmur"] == {"weighted_accuracy": pytest.approx(5 / 6), "accuracy": 0.5, "n_patients": 2}
    assert "murmur" not in evaluation.score(y_true, y_pred, ["Absent", "Present", "Unknown"], "yaseen2018", None)
