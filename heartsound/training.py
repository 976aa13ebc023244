"""The train and evaluate steps: features on disk -> model directory -> metrics and plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from heartsound import evaluation, features, fusion, model
from heartsound.config import Params
from heartsound.model_dir import FORMAT


def model_metadata(params: Params, classes: list[str], features_meta: dict) -> dict:
    """What a model needs to be used correctly: classes, feature params, input shape, aggregation.

    The feature params and shape come from the features directory (featurize's meta.json), not from
    params.yaml: the train stage's output may only depend on what dvc.yaml lists for it.
    """
    import keras

    return {
        "format": FORMAT,
        "classes": list(classes),
        "featurize": features_meta["featurize"],
        "input_shape": [*features_meta["feature_shape"], 1],
        "aggregation": params.evaluate.aggregation,
        "model": params.train.model,
        "dataset": params.data.dataset,
        "cycle_weight": params.train.cycle_weight,
        "init": params.train.init,
        "keras_version": keras.__version__,
    }


def run_train(
    params: Params,
    features_dir: str,
    model_dir: str,
    live_dir: str,
    cycles_dir: str,
    pretrained_dir: str,
    manifest_path: str,
) -> dict:
    """Train on the train split, early-stop on val, save the model with its metadata (and, when
    train.cycle_weight > 0, the cycle head fitted on the train split's recordings). The manifest gives each
    recording's source (train.class_weight balanced_by_source)."""
    import pandas as pd
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    meta = features.load_meta(features_dir)
    classes = meta["classes"]
    x_train, w_train = features.load_split(features_dir, "train")
    x_val, w_val = features.load_split(features_dir, "val")
    source_of = pd.read_csv(manifest_path, dtype={"recording_id": str}).set_index("recording_id")["source"]
    # dvcyaml=None: dvc.yaml declares the plots itself; dvclive must not rewrite it mid-repro.
    with Live(live_dir, dvcyaml=None, save_dvc_exp=False, report=None) as live:
        trained, history = model.train(
            np.asarray(x_train),
            evaluation.encode(w_train["label"], classes),
            np.asarray(x_val),
            evaluation.encode(w_val["label"], classes),
            len(classes),
            params.train,
            callbacks=[DVCLiveCallback(live=live)],
            init_dir=pretrained_dir,
            n_mels=params.featurize.n_mels,
            sources=w_train["recording_id"].map(source_of).to_numpy(),
        )
        # Without early stopping (patience 0) the model kept is the last epoch's, whatever val_loss says.
        stopped = "val_loss" in history and params.train.patience > 0
        best = int(np.argmin(history["val_loss"])) if stopped else len(history["loss"]) - 1
        live.summary["best_epoch"] = best + 1
        live.summary["epochs_run"] = len(history["loss"])
    model.save(trained, model_metadata(params, classes, meta), model_dir)
    if params.train.cycle_weight > 0:
        recordings = w_train.drop_duplicates("recording_id")
        table = fusion.load_table(cycles_dir)
        head = fusion.fit_on(table, recordings["recording_id"], recordings["label"], classes, params.train.cycle_weight)
        head.save(model_dir)
    return {"epochs_run": len(history["loss"]), "best_epoch": best + 1}


def run_evaluate(
    params: Params, features_dir: str, model_dir: str, metrics_path: str, plots_dir: str, cycles_dir: str
) -> dict:
    """Score the test split at recording level; write metrics.json, the confusion PNG and its data."""
    with open(Path(model_dir) / model.METADATA_FILE, encoding="utf-8") as f:
        classes = json.load(f)["classes"]
    x_test, w_test = features.load_split(features_dir, "test")
    model.set_threads(params.train.threads)
    keras_model = model.load_keras(model_dir)
    probs = model.predict_windows(keras_model, np.asarray(x_test))
    ids, y_true, y_pred, rec_probs, groups = evaluation.recording_predictions(
        probs, w_test, classes, params.evaluate.aggregation
    )
    head = fusion.load(model_dir)
    if head is not None:
        y_pred, rec_probs = fusion.fused_predictions(head, fusion.load_table(cycles_dir), ids, rec_probs, classes)
    metrics = evaluation.score(y_true, y_pred, classes, params.data.dataset, groups, rec_probs)
    metrics["split"] = "test"
    os.makedirs(Path(metrics_path).parent, exist_ok=True)
    with open(metrics_path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    evaluation.plot_confusion(y_true, y_pred, classes, plots_dir / "confusion_matrix.png")
    with open(plots_dir / "confusion.json", "w", encoding="utf-8") as f:
        json.dump([{"actual": t, "predicted": p} for t, p in zip(y_true, y_pred)], f)
    # Recording-level test predictions: what predict must reproduce.
    table = evaluation.predictions_table(ids, y_true, y_pred, rec_probs, classes)
    table.to_csv(Path(metrics_path).parent / "test_predictions.csv", index=False, float_format="%.6f")
    return metrics
