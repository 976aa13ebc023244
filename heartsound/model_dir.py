"""A trained model directory: its file names, its metadata and the checks that make a model safe to use.

heartsound.model writes such a directory, heartsound.inference runs one; both read the layout from here,
so neither imports the other for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heartsound import config, features, fusion
from heartsound.config import FeaturizeParams

MODEL_FILE = "model.h5"
TFLITE_FILE = "model.tflite"
METADATA_FILE = "model.json"
FORMAT = "heartsound-model/1"

REQUIRED_KEYS = ("classes", "featurize", "input_shape", "aggregation")
HOW_TO_GET_ONE = "run `dvc repro` to train one, or `dvc pull` to fetch the team's"


class ModelError(Exception):
    """A model directory that cannot be used for prediction; str(error) says why and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """What model.json says about a trained model, checked for consistency."""

    directory: Path
    classes: tuple[str, ...]
    featurize: FeaturizeParams
    input_shape: tuple[int, int, int]  # (n_mfcc, frames per window, 1)
    aggregation: str  # window probabilities -> recording: mean | max
    metadata: dict
    cycle_head: fusion.CycleHead | None = None  # fused with the CNN's recording probabilities when present


def read_metadata(model_dir: str | os.PathLike) -> ModelInfo:
    """Read and check model_dir/model.json; raise ModelError naming the problem."""
    directory = Path(model_dir)
    path = directory / METADATA_FILE
    if not directory.is_dir():
        raise ModelError(f"no trained model: directory '{directory}' does not exist; {HOW_TO_GET_ONE}")
    if not path.is_file():
        raise ModelError(f"no trained model in '{directory}' ({METADATA_FILE} is missing); {HOW_TO_GET_ONE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable model metadata ({e})") from e
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: model metadata must be a JSON object")
    if meta.get("format") != FORMAT:
        raise ModelError(
            f"{path}: metadata format is {meta.get('format')!r}, expected {FORMAT!r}; "
            "retrain the model with this version of heartsound (`dvc repro`)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise ModelError(f"{path}: metadata lacks {', '.join(missing)}; retrain the model (`dvc repro`)")

    classes = meta["classes"]
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelError(f"{path}: 'classes' must be a non-empty list of distinct names, got {classes!r}")

    # The feature params must all travel with the model: a missing one would silently take
    # today's default and the model would see features unlike those it was trained on.
    raw = meta["featurize"]
    expected = features.feature_key_params(FeaturizeParams())
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: 'featurize' must be a mapping of feature params")
    absent = sorted(set(expected) - set(raw))
    if absent:
        raise ModelError(f"{path}: 'featurize' lacks {', '.join(absent)}; retrain the model (`dvc repro`)")
    try:
        params = config.parse({"featurize": raw}).featurize
    except config.ParamsError as e:
        raise ModelError(f"{path}: invalid feature params in metadata: {e}") from e

    shape = [*features.feature_shape(params), 1]
    if meta["input_shape"] != shape:
        raise ModelError(
            f"{path}: input_shape {meta['input_shape']} does not match the featurize params, "
            f"which give windows of shape {shape}"
        )
    allowed = config.CHOICES["evaluate.aggregation"]
    if meta["aggregation"] not in allowed:
        raise ModelError(f"{path}: aggregation must be one of {', '.join(allowed)}, got {meta['aggregation']!r}")
    try:
        head = fusion.load(directory)
    except (OSError, ValueError) as e:
        raise ModelError(f"{directory / fusion.HEAD_FILE}: unusable cycle head ({e}); retrain the model") from e
    if head is not None and head.classes != tuple(classes):
        raise ModelError(f"{directory / fusion.HEAD_FILE}: classes {list(head.classes)} differ from the model's")
    return ModelInfo(directory, tuple(classes), params, tuple(shape), meta["aggregation"], meta, head)


def to_input(windows: np.ndarray) -> np.ndarray:
    """Feature windows [n, n_mfcc, frames] -> model input [n, n_mfcc, frames, 1], float32, contiguous."""
    return np.ascontiguousarray(windows[..., np.newaxis], dtype=np.float32)
