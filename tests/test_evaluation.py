"""Recording-level metrics on small known cases."""

import numpy as np
import pytest

from heartsound import evaluation

CLASSES = ["murmur", "normal"]


def test_metrics_use_truth_and_prediction_in_the_right_order():
    # 3 true murmurs, 1 true normal; the model calls everything murmur.
    y_true = ["murmur", "murmur", "murmur", "normal"]
    y_pred = ["murmur", "murmur", "murmur", "murmur"]
    m = evaluation.classification_metrics(y_true, y_pred, CLASSES)
    # Swapped arguments would give murmur recall 0.75 and precision 1.0.
    assert m["per_class"]["murmur"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["murmur"]["precision"] == pytest.approx(0.75)
    assert m["per_class"]["murmur"]["support"] == 3
    assert m["per_class"]["normal"]["support"] == 1
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 * 0.75 / 1.75 + 0.0) / 2)
    assert m["n_recordings"] == 4


def test_aggregate_means_window_probabilities_per_recording():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    rec = evaluation.aggregate(probs, ["a", "a", "b", "b"], "mean")
    assert list(rec.index) == ["a", "b"]
    np.testing.assert_allclose(rec.to_numpy(), [[0.55, 0.45], [0.35, 0.65]])
    rec_max = evaluation.aggregate(probs, ["a", "a", "b", "b"], "max")
    np.testing.assert_allclose(rec_max.to_numpy().sum(axis=1), 1.0)


def test_screening_treats_abnormal_classes_as_positive_and_skips_artifact():
    y_true = ["murmur", "extrastole", "normal", "normal", "artifact"]
    y_pred = ["murmur", "normal", "normal", "extrahls", "normal"]
    s = evaluation.screening_metrics(y_true, y_pred)
    assert s["sensitivity"] == pytest.approx(0.5)
    assert s["specificity"] == pytest.approx(0.5)
    assert s["macc"] == pytest.approx(0.5)
    assert s["n_recordings"] == 4


def test_confusion_plot_is_written(tmp_path):
    path = tmp_path / "cm.png"
    evaluation.plot_confusion(["murmur", "normal"], ["normal", "normal"], CLASSES, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_ranks_abnormal_against_normal_with_the_probabilities_leaving_artifact_out():
    classes = ["abnormal", "normal"]
    y_true = ["abnormal", "normal", "abnormal", "normal"]
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    y_pred = np.asarray(classes)[probs.argmax(axis=1)]
    scored = evaluation.score(y_true, y_pred, classes, "physionet2016", probs=probs)
    # Abnormal above normal in 3 of the 4 pairs; without probabilities, no ranking.
    assert scored["screening"]["roc_auc"] == pytest.approx(0.75)
    assert "roc_auc" not in evaluation.score(y_true, y_pred, classes, "physionet2016")["screening"]
    # PASCAL: an artifact recording is neither side, whatever its score.
    pascal = ["artifact", "extrahls", "extrastole", "murmur", "normal"]
    # The artifact recording scores highest (1.0): counted as a normal, it would halve the AUC.
    probs = np.array([[0.0, 0.0, 0.0, 0.9, 0.1], [0.0, 0.0, 0.0, 0.2, 0.8], [0.05, 0.0, 0.0, 0.95, 0.0]])
    y_true, y_pred = ["murmur", "normal", "artifact"], ["murmur", "normal", "artifact"]
    assert evaluation.score(y_true, y_pred, pascal, "pascal", probs=probs)["screening"]["roc_auc"] == 1.0
