"""Cross-validation over every featurized recording: patient-grouped k folds, or leave-one-source-out (a fold per
device); fold scores, their mean +- std, the seed noise of the mean, and every source's own figures."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from heartsound import evaluation, features, fusion, model, splits
from heartsound.config import Params

# Recordings at least this long: the reference drops shorter ones, so this subset compares like for like.
LONG_MIN_S = 4.0
SUMMARY_KEYS = ("macro_f1", "balanced_accuracy", "accuracy")
SCREENING_KEYS = ("sensitivity", "specificity", "macc")
# Training seeds of a fold are train.seed, +SEED_STEP, ...: clear of the train.ensemble members' seed, seed+1, ...
SEED_STEP = 100


def load_all(features_dir, manifest: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """All splits' windows in one array, and the window and recording tables.

    Returns (x [n_windows, n_mfcc, frames], windows with a row per window of x,
    recordings with recording_id, label, group, duration_s, source in first-appearance order).
    Group, duration and source come from the manifest, so older window tables without a group column work too.
    """
    arrays, tables, offset = [], [], 0
    for split in ("train", "val", "test"):
        x, windows = features.load_split(features_dir, split)
        windows = windows.assign(window=windows["window"] + offset)
        arrays.append(np.asarray(x))
        tables.append(windows)
        offset += len(x)
    x = np.concatenate(arrays)
    info = manifest.set_index("recording_id")[["group", "duration_s", "source"]]
    windows = pd.concat(tables, ignore_index=True).drop(columns=["group"], errors="ignore")
    windows = windows.join(info, on="recording_id")
    if windows["group"].isna().any():
        missing = windows.loc[windows["group"].isna(), "recording_id"].iloc[0]
        raise ValueError(f"recording {missing} has features but is not in the manifest")
    columns = ["label", "group", "duration_s", "source"]
    recordings = windows.groupby("recording_id", sort=False)[columns].first().reset_index()
    return x, windows, recordings


def summarise(values) -> dict:
    """{"mean", "std", "folds"} of [seeds][folds] values, and "seed_std", "seeds" when there are several seeds.

    std is the population std over the folds of each fold's seed-averaged score: how much the folds differ.
    seed_std is the sample std over the seeds of the cv mean: how far a rerun with other seeds would move the
    mean, the noise floor a difference between two runs has to clear.
    """
    values = np.asarray(values, dtype=float).reshape(len(values), -1)
    per_fold = values.mean(axis=0)
    out = {"mean": float(values.mean()), "std": float(per_fold.std()), "folds": per_fold.tolist()}
    if len(values) > 1:
        per_seed = values.mean(axis=1)
        out["seed_std"] = float(per_seed.std(ddof=1))
        out["seeds"] = per_seed.tolist()
    return out


def summary(scores: list[list[dict]], classes) -> dict:
    """Score dicts (evaluation.score output) per seed and fold, [seeds][folds] -> cv.json's shape."""

    def over_all(get) -> dict:
        return summarise([[get(fold) for fold in seed] for seed in scores])

    out = {key: over_all(lambda s, key=key: s[key]) for key in SUMMARY_KEYS}
    out["per_class_f1"] = {c: over_all(lambda s, c=c: s["per_class"][c]["f1"]) for c in classes}
    if all(fold.get("screening") for seed in scores for fold in seed):
        out["screening"] = {key: over_all(lambda s, key=key: s["screening"][key]) for key in SCREENING_KEYS}
    out["n_recordings"] = int(sum(fold["n_recordings"] for fold in scores[0]))
    return out


def fold_indices(recordings: pd.DataFrame, params: Params) -> list[tuple]:
    """(name, train, val, test) recording indices per fold: patient-grouped folds (crossval.by: group, named by
    number; see splits.crossval_folds) or one fold per held-out source (by: source, named by the source)."""
    labels, groups = recordings["label"].to_numpy(), recordings["group"].to_numpy()
    cv = params.crossval
    if cv.by == "source":
        sources = recordings["source"].to_numpy()
        if len(set(sources)) < 2:
            raise ValueError(
                f"crossval.by: source needs recordings from at least two sources; all are from {sources[0]!r} "
                "(a folder dataset's labels.csv can name them in a source column)"
            )
        return list(splits.source_folds(labels, groups, sources, cv.val_fraction, cv.seed))
    return [
        (fold, *part)
        for fold, part in enumerate(splits.crossval_folds(labels, groups, cv.folds, cv.val_fraction, cv.seed))
    ]


def over_seeds(values) -> dict:
    """{"mean"} of one figure per training seed, and "seed_std" (sample std) when there are several."""
    values = [float(v) for v in values]
    out = {"mean": float(np.mean(values))}
    if len(values) > 1:
        out["seed_std"] = float(np.std(values, ddof=1))
    return out


def source_scores(predictions: pd.DataFrame, dataset: str) -> dict[str, list[dict]]:
    """{source: [evaluation.subset_scores of its out-of-fold predictions, one per seed]}, sources sorted."""
    return {
        source: [
            evaluation.subset_scores(rows["label"], rows["predicted"], dataset)
            for _, rows in by_source.groupby("seed", sort=True)
        ]
        for source, by_source in predictions.groupby("source", sort=True)
    }


def per_source_summary(scores: dict[str, list[dict]], classes) -> dict:
    """cv.json's per_source: each source's figures, averaged over seeds, and the classes it lacks."""
    out = {}
    for source, runs in scores.items():
        first = runs[0]
        out[source] = {
            "n_recordings": first["n_recordings"],
            "classes": first["classes"],
            "missing_classes": [c for c in classes if c not in first["classes"]],
            **{key: over_seeds([r[key] for r in runs]) for key in SUMMARY_KEYS},
            "recall": {c: over_seeds([r["recall"][c] for r in runs]) for c in first["classes"]},
        }
        if "screening" in first:
            out[source]["screening"] = {k: over_seeds([r["screening"][k] for r in runs]) for k in first["screening"]}
    return out


def leave_one_source_out_summary(scores: dict[str, list[dict]], classes) -> dict:
    """cv.json's headline figures for crossval.by: source: the mean over the held-out sources that have every
    class (a source lacking one cannot be scored on it), or over all of them when none has; which is stated."""
    complete = [s for s, runs in scores.items() if not set(classes) - set(runs[0]["classes"])]
    chosen = complete or list(scores)
    n_seeds = len(next(iter(scores.values())))
    out = {key: summarise([[scores[s][i][key] for s in chosen] for i in range(n_seeds)]) for key in SUMMARY_KEYS}
    out["mean_over"] = chosen
    out["left_out_of_mean"] = {
        s: "lacks " + ", ".join(sorted(set(classes) - set(runs[0]["classes"])))
        for s, runs in scores.items()
        if s not in chosen
    }
    if not complete:
        out["note"] = "no held-out source has every class: the means are over all sources, each on its own classes"
    screened = [s for s, runs in scores.items() if "macc" in runs[0].get("screening", {})]
    if screened:
        out["screening"] = {
            key: summarise([[scores[s][i]["screening"][key] for s in screened] for i in range(n_seeds)])
            for key in SCREENING_KEYS
        }
        out["screening"]["mean_over"] = screened
    out["n_recordings"] = int(sum(runs[0]["n_recordings"] for runs in scores.values()))
    return out


def run(
    params: Params, features_dir, manifest: pd.DataFrame, cycles_dir=None, pretrained_dir=None, log=print
) -> tuple[dict, pd.DataFrame]:
    """Train and score the configured model on every fold, once per training seed (crossval.seeds); with
    train.cycle_weight > 0, each fold's cycle head is fitted on its training recordings (cycles_dir's table).

    Returns (cv metrics as written to cv.json, out-of-fold recording predictions of every seed).
    """
    classes = features.load_meta(features_dir)["classes"]
    x, windows, recordings = load_all(features_dir, manifest)
    y = evaluation.encode(windows["label"], classes)
    seeds = [params.train.seed + SEED_STEP * i for i in range(params.crossval.seeds)]
    scores, long_scores = [[] for _ in seeds], [[] for _ in seeds]
    predictions = []
    by_id = recordings.set_index("recording_id")
    table = fusion.load_table(cycles_dir) if params.train.cycle_weight > 0 else None
    started = time.monotonic()
    for fold, train_r, val_r, test_r in fold_indices(recordings, params):
        if params.train.patience == 0:
            # No early stopping: the validation groups would only be data withheld from training.
            train_r, val_r = np.concatenate([train_r, val_r]), val_r[:0]
        part = {
            name: windows["recording_id"].isin(recordings["recording_id"].iloc[idx]).to_numpy()
            for name, idx in (("train", train_r), ("val", val_r), ("test", test_r))
        }
        test_windows = windows[part["test"]]
        head = None
        if table is not None:
            fitted_on = recordings.iloc[train_r]
            head = fusion.fit_on(
                table, fitted_on["recording_id"], fitted_on["label"], classes, params.train.cycle_weight
            )
        for nth, seed in enumerate(seeds):
            trained, history = model.train(
                x[part["train"]],
                y[part["train"]],
                x[part["val"]],
                y[part["val"]],
                len(classes),
                dataclasses.replace(params.train, seed=seed),
                verbose=0,
                init_dir=pretrained_dir,
                n_mels=params.featurize.n_mels,
                sources=windows["source"].to_numpy()[part["train"]],
            )
            probs = model.predict_windows(trained, x[part["test"]])
            ids, y_true, y_pred, rec_probs, groups = evaluation.recording_predictions(
                probs, test_windows, classes, params.evaluate.aggregation
            )
            if head is not None:
                y_pred, rec_probs = fusion.fused_predictions(head, table, ids, rec_probs, classes)
            scores[nth].append(evaluation.score(y_true, y_pred, classes, params.data.dataset, groups))
            long = by_id.loc[ids, "duration_s"].to_numpy() >= LONG_MIN_S
            if long.any():
                long_scores[nth].append(evaluation.score(y_true[long], y_pred[long], classes, params.data.dataset))
            fold_table = evaluation.predictions_table(ids, y_true, y_pred, rec_probs, classes)
            fold_table.insert(3, "fold", fold)
            fold_table.insert(4, "seed", seed)
            fold_table.insert(5, "source", by_id.loc[ids, "source"].to_numpy())
            predictions.append(fold_table)
            log(
                f"fold {fold}, seed {seed}: {len(train_r)}/{len(val_r)}/{len(test_r)} recordings, "
                f"{len(history['loss'])} epochs, macro-F1 {scores[nth][-1]['macro_f1']:.3f}, "
                f"balanced acc {scores[nth][-1]['balanced_accuracy']:.3f}, {time.monotonic() - started:.0f} s"
            )
    predictions = pd.concat(predictions, ignore_index=True)
    by_source = source_scores(predictions, params.data.dataset)
    if params.crossval.by == "source":
        metrics = {"by": "source", **leave_one_source_out_summary(by_source, classes)}
    else:
        metrics = {"by": "group", **summary(scores, classes)}
        if all(long_scores):  # over the folds that have recordings of LONG_MIN_S or more
            metrics["long_only"] = {"min_duration_s": LONG_MIN_S, **summary(long_scores, classes)}
    metrics["per_source"] = per_source_summary(by_source, classes)
    metrics["folds"] = len(scores[0])
    metrics["seeds"] = seeds
    return metrics, predictions
