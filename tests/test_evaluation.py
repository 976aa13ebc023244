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
