"""The cycle head: a logistic regression on each recording's heart-cycle features (heartsound.cycles), fused
with the CNN's recording probabilities.

The CNN hears 4-s MFCC windows; the head sees what the segmentation measures over the whole recording (rhythm,
RR irregularity, systolic against diastolic energy per band), which no window holds. Their log-probabilities are
mixed with train.cycle_weight: 0 leaves the CNN alone (no head is fitted), 0.5 weighs both equally.

The head is stored as plain numbers (cycle_head.json in the model directory), so predicting needs numpy only.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEAD_FILE = "cycle_head.json"
# The segment stage's output in its directory: recording_id, no_rhythm_reason, heartsound.cycles.FEATURE_NAMES.
TABLE_FILE = "cycle_features.csv"
HEAD_FORMAT = "heartsound-cycle-head/1"
# L2 strength of the logistic regression (sklearn's C): a few hundred recordings and 40 correlated features.
REGULARISATION_C = 0.1
# Probability floor before the logarithm: a class the head never saw in training must not veto the CNN.
PROBABILITY_FLOOR = 1e-6


@dataclass(frozen=True)
class CycleHead:
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    mean: np.ndarray  # [n_features]: standardisation, as fitted
    scale: np.ndarray  # [n_features]
    coef: np.ndarray  # [n_classes, n_features]: softmax weights over all classes
    intercept: np.ndarray  # [n_classes]
    weight: float  # train.cycle_weight

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities [n, n_classes] of feature rows [n, n_features] (columns in feature_names order)."""
        z = (np.asarray(features, np.float64) - self.mean) / self.scale @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def fuse(self, cnn_probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The fused recording probabilities: normalised exp((1 - w) log p_cnn + w log p_head)."""
        head = self.probabilities(features)
        log_p = (1 - self.weight) * np.log(np.maximum(cnn_probs, PROBABILITY_FLOOR))
        log_p += self.weight * np.log(np.maximum(head, PROBABILITY_FLOOR))
        log_p -= log_p.max(axis=1, keepdims=True)
        p = np.exp(log_p)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "format": HEAD_FORMAT,
            "classes": list(self.classes),
            "feature_names": list(self.feature_names),
            "weight": self.weight,
            **{k: getattr(self, k).tolist() for k in ("mean", "scale", "coef", "intercept")},
        }

    def save(self, model_dir: str | os.PathLike) -> None:
        with open(Path(model_dir) / HEAD_FILE, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)


def from_dict(raw: dict) -> CycleHead:
    """A head from its JSON form; ValueError naming what is wrong."""
    if raw.get("format") != HEAD_FORMAT:
        raise ValueError(f"format is {raw.get('format')!r}, expected {HEAD_FORMAT!r}")
    try:
        head = CycleHead(
            tuple(raw["classes"]),
            tuple(raw["feature_names"]),
            *(np.asarray(raw[k], np.float64) for k in ("mean", "scale", "coef", "intercept")),
            float(raw["weight"]),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"malformed head: {e!r}") from e
    n_classes, n_features = len(head.classes), len(head.feature_names)
    shapes_ok = (
        head.mean.shape == head.scale.shape == (n_features,)
        and head.coef.shape == (n_classes, n_features)
        and head.intercept.shape == (n_classes,)
    )
    if not shapes_ok:
        raise ValueError("array shapes do not match its classes and feature names")
    return head


def load(model_dir: str | os.PathLike) -> CycleHead | None:
    """The model directory's head, or None if the model has none."""
    path = Path(model_dir) / HEAD_FILE
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        return from_dict(json.load(f))


def fit(features: np.ndarray, labels, classes, feature_names, weight: float) -> CycleHead:
    """A class-balanced logistic regression of labels on standardised feature rows, over all `classes`.

    A class absent from the labels (a tiny subset) gets a large negative intercept: the head never votes for it.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    present = sorted(set(labels))
    coef = np.zeros((len(classes), x.shape[1]))
    intercept = np.full(len(classes), -30.0)
    if len(present) >= 2:
        model = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=5000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on tiny subsets
            model.fit((x - mean) / scale, labels)
        rows = [list(classes).index(c) for c in model.classes_]
        if len(present) == 2:  # sklearn's binary form: one row z; softmax([-z/2, z/2]) = sigmoid(z)
            coef[rows] = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
            intercept[rows] = [-model.intercept_[0] / 2, model.intercept_[0] / 2]
        else:
            coef[rows], intercept[rows] = model.coef_, model.intercept_
    else:
        intercept[[list(classes).index(c) for c in present]] = 0.0
    return CycleHead(tuple(classes), tuple(feature_names), mean, scale, coef, intercept, float(weight))


def load_table(cycles_dir: str | os.PathLike):
    """The segment stage's table, indexed by recording_id."""
    import pandas as pd

    table = pd.read_csv(
        Path(cycles_dir) / TABLE_FILE, dtype={"recording_id": str, "no_rhythm_reason": str}, keep_default_na=False
    )
    return table.set_index("recording_id")


def fit_on(table, recording_ids, labels, classes, weight: float) -> CycleHead:
    """fit() on these recordings' rows of the segment stage's table (every feature column)."""
    names = [c for c in table.columns if c != "no_rhythm_reason"]
    return fit(head_features(table, recording_ids, names), labels, classes, names, weight)


def fused_predictions(head: CycleHead, table, recording_ids, cnn_probs: np.ndarray, classes):
    """(predicted class names, fused probabilities) of recordings from their CNN probabilities."""
    probs = head.fuse(cnn_probs, head_features(table, recording_ids, head.feature_names))
    return np.asarray(classes)[probs.argmax(axis=1)], probs


def head_features(table, recording_ids, feature_names) -> np.ndarray:
    """Rows of the segment stage's table (indexed by recording_id) for these recordings, in the head's columns."""
    missing = [r for r in dict.fromkeys(recording_ids) if r not in table.index]
    if missing:
        raise ValueError(
            f"recording {missing[0]} has no cycle features ({len(missing)} missing): rerun the segment stage"
        )
    return table.loc[list(recording_ids), list(feature_names)].to_numpy(np.float64)
