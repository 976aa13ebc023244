"""Pre-training: the configured CNN trained on a larger data set (PhysioNet/CinC 2016 by default, its own
.dvc and its own params section), so train and crossval can start from its weights (train.init: pretrained).

The windows are the featurize params' (so the weights fit the main pipeline's input), with the pretrain
section's window hop; every recording of the data set is used, none held out: this model is never scored.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from heartsound import evaluation, features, model
from heartsound.config import DataParams, Params, PrepareParams, TrainParams
from heartsound.manifest import prepare

REJECTIONS_FILE = "rejections.csv"


def dataset_windows(params: Params) -> tuple[np.ndarray, list[str], list[str], object]:
    """(windows [n, n_mfcc, frames], window labels, classes, rejections table) of the pretrain data set."""
    pre = params.pretrain
    manifest, rejections = prepare(DataParams(pre.dataset, pre.root), PrepareParams())
    feature_params = dataclasses.replace(params.featurize, window_hop_s=pre.window_hop_s)
    jobs = min(params.featurize.jobs or os.cpu_count() or 1, max(1, len(manifest)))
    tasks = list(manifest["path"])
    if jobs > 1:
        with features.worker_pool(jobs) as pool:
            arrays = list(pool.map(features.recording_features, tasks, [feature_params] * len(tasks), chunksize=8))
    else:
        arrays = [features.recording_features(path, feature_params) for path in tasks]
    labels = np.repeat(manifest["label"].to_numpy(), [len(a) for a in arrays]).tolist()
    return np.concatenate(arrays), labels, sorted(set(manifest["label"])), rejections


def run(params: Params, out_dir: str | os.PathLike, log=print) -> dict:
    """Train on every recording of the pretrain data set; write the weights, their metadata and the rejections."""
    x, labels, classes, rejections = dataset_windows(params)
    y = evaluation.encode(labels, classes)
    pre = params.pretrain
    # The architecture must be train's (its weights are copied); the schedule is the pretrain section's.
    train_params = TrainParams(
        model=params.train.model,
        epochs=pre.epochs,
        batch_size=pre.batch_size,
        learning_rate=pre.learning_rate,
        lr_schedule="cosine",
        patience=0,
        class_weight="balanced",
        augment=True,
        seed=pre.seed,
        threads=params.train.threads,
    )
    log(f"pretrain: {len(x)} windows of {params.pretrain.dataset}, classes {classes}, {train_params.epochs} epochs")
    trained, history = model.train(
        x, y, x[:0], y[:0], len(classes), train_params, verbose=2, n_mels=params.featurize.n_mels
    )
    meta = {
        "model": params.train.model,
        "dataset": params.pretrain.dataset,
        "classes": classes,
        "feature_shape": list(x.shape[1:]),
        "windows": int(len(x)),
        "rejected": int(len(rejections)),
        "final_loss": round(float(history["loss"][-1]), 4),
        "final_accuracy": round(float(history["accuracy"][-1]), 4),
    }
    model.save_pretrained(trained, meta, out_dir)
    rejections.to_csv(Path(out_dir) / REJECTIONS_FILE, index=False)
    return meta
