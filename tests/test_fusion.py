"""The cycle head: a logistic regression on heart-cycle features, stored as numbers, fused with the CNN."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from heartsound import fusion

CLASSES = ["extrastole", "murmur", "normal"]


def separable(n: int = 60, seed: int = 0):
    """Feature rows whose first column tells the class (0, 1, 2 plus noise); the others are noise."""
    rng = np.random.default_rng(seed)
    y = np.array(CLASSES)[np.arange(n) % 3]
    x = rng.normal(size=(n, 4))
    x[:, 0] += 8 * (np.arange(n) % 3)
    return x, y


def test_head_learns_the_informative_feature_and_survives_json(tmp_path):
    x, y = separable()
    head = fusion.fit(x, y, CLASSES, ["a", "b", "c", "d"], weight=0.5)
    probs = head.probabilities(x)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(axis=1), 1)
    assert (np.array(CLASSES)[probs.argmax(axis=1)] == y).mean() > 0.95
    head.save(tmp_path)
    again = fusion.load(tmp_path)
    assert again.classes == tuple(CLASSES) and again.weight == 0.5
    assert np.array_equal(again.probabilities(x), probs)


def test_binary_head_gives_sklearns_probabilities():
    x, y = separable()
    keep = y != "extrastole"
    head = fusion.fit(x[keep], y[keep], ["murmur", "normal"], ["a", "b", "c", "d"], weight=0.3)
    z = (x[keep] - x[keep].mean(axis=0)) / x[keep].std(axis=0)
    reference = LogisticRegression(C=fusion.REGULARISATION_C, class_weight="balanced", max_iter=5000).fit(z, y[keep])
    assert np.allclose(head.probabilities(x[keep]), reference.predict_proba(z), atol=1e-6)


def test_a_class_missing_from_training_gets_no_vote():
    x, y = separable()
    keep = y != "extrastole"
    head = fusion.fit(x[keep], y[keep], CLASSES, ["a", "b", "c", "d"], weight=0.5)
    assert head.probabilities(x)[:, 0].max() < 1e-9
    cnn = np.tile([0.8, 0.1, 0.1], (len(x), 1))
    # The CNN's vote for the class stays: the head's floor weakens it but does not erase it.
    assert head.fuse(cnn, x)[:, 0].min() > 0


def test_fusion_weight_moves_the_decision_from_the_cnn_to_the_head():
    x, y = separable()
    cnn = np.tile([0.1, 0.1, 0.8], (len(x), 1)).astype(np.float32)  # a CNN that always says normal
    low = fusion.fit(x, y, CLASSES, ["a", "b", "c", "d"], weight=0.05).fuse(cnn, x)
    high = fusion.fit(x, y, CLASSES, ["a", "b", "c", "d"], weight=0.9).fuse(cnn, x)
    assert np.allclose(low.sum(axis=1), 1) and np.allclose(high.sum(axis=1), 1)
    assert (np.array(CLASSES)[low.argmax(axis=1)] == "normal").mean() > 0.6
    assert (np.array(CLASSES)[high.argmax(axis=1)] == y).mean() > 0.9


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw.update(format="other/1"), "format"),
        (lambda raw: raw.pop("coef"), "malformed"),
        (lambda raw: raw.update(intercept=[0.0]), "shapes"),
    ],
)
def test_damaged_head_file_is_refused_with_the_reason(tmp_path, damage, message):
    x, y = separable()
    raw = fusion.fit(x, y, CLASSES, ["a", "b", "c", "d"], weight=0.5).to_dict()
    damage(raw)
    (tmp_path / fusion.HEAD_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        fusion.load(tmp_path)


def test_head_features_name_a_recording_the_segment_stage_missed(tmp_path):
    table = pd.DataFrame({"recording_id": ["r1", "r2"], "no_rhythm_reason": ["", "too short"], "f": [1.0, 0.0]})
    table.to_csv(tmp_path / fusion.TABLE_FILE, index=False)
    loaded = fusion.load_table(tmp_path)
    assert loaded.loc["r1", "no_rhythm_reason"] == ""
    assert fusion.head_features(loaded, ["r2", "r1"], ["f"]).tolist() == [[0.0], [1.0]]
    with pytest.raises(ValueError, match="recording r3 has no cycle features .*rerun the segment stage"):
        fusion.head_features(loaded, ["r1", "r3"], ["f"])
