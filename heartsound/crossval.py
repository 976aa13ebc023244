"""Cross-validation over every featurized recording: patient-grouped k folds, or leave-one-source-out (a fold per
device); fold scores, their mean +- std, the seed noise of the mean, and every source's own figures."""

from __future__ import annotations

import dataclasses
import importlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from heartsound import evaluation, features, fusion, model, splits
from heartsound.config import Params

# Recordings at least this long: the reference drops shorter ones, so this subset compares like for like.
LONG_MIN_S = 4.0
SUMMARY_KEYS = ("macro_f1", "balanced_accuracy", "accuracy")
SCREENING_KEYS = ("sensitivity", "specificity", "macc")
# cycle_weight_chosen picks each fold's weight by this figure: it is the screening MAcc on two classes.
CHOSEN_BY = "balanced_accuracy"
# Training seeds of a fold are train.seed, +SEED_STEP, ...: clear of the train.ensemble members' seed, seed+1, ...
SEED_STEP = 100
SPLITS = ("train", "val", "test")


def load_tables(features_dir, manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The window and recording tables of every split, without the windows' features: what a crossval client
    whose trainings run on workers needs.

    Returns (windows: a row per window of load_all's array, with its recording's group, duration and source, and
    its row in recordings (`recording`); recordings: recording_id, label, group, duration_s, source in
    first-appearance order). Group, duration and source come from the manifest, so older window tables without a
    group column work too.
    """
    tables, offset = [], 0
    for split in SPLITS:
        windows = pd.read_csv(Path(features_dir) / f"{split}_windows.csv", dtype={"recording_id": str, "label": str})
        tables.append(windows.assign(window=windows["window"] + offset))
        offset += len(windows)
    info = manifest.set_index("recording_id")[["group", "duration_s", "source"]]
    windows = pd.concat(tables, ignore_index=True).drop(columns=["group"], errors="ignore")
    windows = windows.join(info, on="recording_id")
    if windows["group"].isna().any():
        missing = windows.loc[windows["group"].isna(), "recording_id"].iloc[0]
        raise ValueError(f"recording {missing} has features but is not in the manifest")
    columns = ["label", "group", "duration_s", "source"]
    recordings = windows.groupby("recording_id", sort=False)[columns].first().reset_index()
    windows["recording"] = pd.Index(recordings["recording_id"]).get_indexer(windows["recording_id"])
    return windows, recordings


def load_all(features_dir, manifest: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """All splits' windows in one array [n_windows, n_mfcc, frames], and load_tables' window and recording
    tables."""
    windows, recordings = load_tables(features_dir, manifest)
    x = np.concatenate([features.load_split(features_dir, split)[0] for split in SPLITS])
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
        keys = screening_keys(fold["screening"] for seed in scores for fold in seed)
        out["screening"] = {key: over_all(lambda s, key=key: s["screening"][key]) for key in keys}
    out["n_recordings"] = int(sum(fold["n_recordings"] for fold in scores[0]))
    return out


def screening_keys(screenings) -> tuple:
    """The screening figures to average: SCREENING_KEYS, and the ROC AUC when every one of these screening
    dicts has it (a mean over some folds only would hide the others)."""
    return SCREENING_KEYS + (("roc_auc",) if all("roc_auc" in s for s in screenings) else ())


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


def source_scores(predictions: pd.DataFrame, classes, dataset: str) -> dict[str, list[dict]]:
    """{source: [evaluation.subset_scores of its out-of-fold predictions, one per seed]}, sources sorted; the
    screening ROC AUC from the predictions' p_<class> columns."""
    scores = evaluation.abnormal_score(predictions[[f"p_{c}" for c in classes]], classes, dataset)
    predictions = predictions.assign(abnormal_score=scores)
    return {
        source: [
            evaluation.subset_scores(
                rows["label"], rows["predicted"], dataset, None if scores is None else rows["abnormal_score"]
            )
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
            for key in screening_keys(scores[s][0]["screening"] for s in screened)
        }
        out["screening"]["mean_over"] = screened
    out["n_recordings"] = int(sum(runs[0]["n_recordings"] for runs in scores.values()))
    return out


@dataclasses.dataclass(frozen=True)
class Training:
    """One training of the loop: a fold's recording indices (train, val, test) and a training seed."""

    fold: object
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclasses.dataclass(frozen=True)
class Trained:
    """What a training gives back: its test recordings' CNN probabilities, before the cycle head."""

    training: Training
    recording_ids: list[str]
    y_true: np.ndarray
    probs: np.ndarray
    groups: np.ndarray
    epochs: int


def trainings(recordings: pd.DataFrame, params: Params) -> list[Training]:
    """Every (fold, seed) training of crossval, folds first; without early stopping (patience 0) a fold's
    validation groups train too: they would only be data withheld from training."""
    seeds = [params.train.seed + SEED_STEP * i for i in range(params.crossval.seeds)]
    out = []
    for fold, train_r, val_r, test_r in fold_indices(recordings, params):
        if params.train.patience == 0:
            train_r, val_r = np.concatenate([train_r, val_r]), val_r[:0]
        out += [Training(fold, seed, train_r, val_r, test_r) for seed in seeds]
    return out


def train_and_predict(data: tuple, classes: list[str], training: Training, params: Params, pretrained_dir) -> Trained:
    """Train on a fold's training windows with its seed; its test recordings' probabilities. data: load_all's."""
    x, windows, recordings = data
    of_window = windows["recording"].to_numpy()
    part = {}
    for name, idx in (("train", training.train), ("val", training.val), ("test", training.test)):
        chosen = np.zeros(len(recordings), dtype=bool)
        chosen[idx] = True
        part[name] = chosen[of_window]
    y = evaluation.encode(recordings["label"], classes)[of_window]
    trained, history = model.train(
        x[part["train"]],
        y[part["train"]],
        x[part["val"]],
        y[part["val"]],
        len(classes),
        dataclasses.replace(params.train, seed=training.seed),
        verbose=0,
        init_dir=pretrained_dir,
        n_mels=params.featurize.n_mels,
        sources=windows["source"].to_numpy()[part["train"]],
    )
    probs = model.predict_windows(trained, x[part["test"]])
    ids, y_true, _, rec_probs, groups = evaluation.recording_predictions(
        probs, windows[part["test"]], classes, params.evaluate.aggregation
    )
    return Trained(training, list(ids), np.asarray(y_true), rec_probs, np.asarray(groups), len(history["loss"]))


def _scored(done: Trained, head, table, by_id: pd.DataFrame, classes, dataset: str) -> tuple:
    """(score, score of the recordings of LONG_MIN_S or more or None, predictions table) of one training's test
    recordings, fused with its fold's cycle head when there is one."""
    t, ids = done.training, done.recording_ids
    y_pred, rec_probs = np.asarray(classes)[done.probs.argmax(axis=1)], done.probs
    if head is not None:
        y_pred, rec_probs = fusion.fused_predictions(head, table, ids, rec_probs, classes)
    score = evaluation.score(done.y_true, y_pred, classes, dataset, done.groups, rec_probs)
    long = by_id.loc[ids, "duration_s"].to_numpy() >= LONG_MIN_S
    long_score = None
    if long.any():
        long_score = evaluation.score(done.y_true[long], y_pred[long], classes, dataset, probs=rec_probs[long])
    fold_table = evaluation.predictions_table(ids, done.y_true, y_pred, rec_probs, classes)
    fold_table.insert(3, "fold", t.fold)
    fold_table.insert(4, "seed", t.seed)
    fold_table.insert(5, "source", by_id.loc[ids, "source"].to_numpy())
    return score, long_score, fold_table


def run(
    params: Params, features_dir, manifest: pd.DataFrame, cycles_dir=None, pretrained_dir=None, log=print
) -> tuple[dict, pd.DataFrame]:
    """Train and score the configured model on every fold, once per training seed (crossval.seeds); with
    train.cycle_weight > 0, each fold's cycle head is fitted on its training recordings (cycles_dir's table).
    The trainings run here one after another, or on the Dask cluster crossval.scheduler names.

    With crossval.cycle_weights, the same trainings' predictions are also scored fused at each of those weights.

    Returns (cv metrics as written to cv.json, out-of-fold recording predictions of every seed).
    """
    classes = features.load_meta(features_dir)["classes"]
    # With workers, only they need the windows themselves.
    if params.crossval.scheduler is None:
        data = load_all(features_dir, manifest)
        recordings = data[2]
    else:
        recordings = load_tables(features_dir, manifest)[1]
    todo = trainings(recordings, params)
    by_id = recordings.set_index("recording_id")
    sweep = params.crossval.cycle_weights
    # Heads are fitted once per fold, whatever their weight: only the fusion depends on it.
    table = fusion.load_table(cycles_dir) if params.train.cycle_weight > 0 or any(sweep) else None
    heads = {}
    if table is not None:
        for t in todo:
            if t.fold not in heads:
                fitted_on = recordings.iloc[t.train]
                heads[t.fold] = fusion.fit_on(
                    table, fitted_on["recording_id"], fitted_on["label"], classes, params.train.cycle_weight
                )
    if params.crossval.scheduler is None:
        results = (train_and_predict(data, classes, t, params, pretrained_dir) for t in todo)
    else:
        # Imported by name, as features does: where the trainings run does not change their numbers
        # (tests/test_cluster.py), so the Dask module is not part of the stage's code.
        cluster = importlib.import_module("heartsound.cluster")
        results = cluster.crossval_trainings(todo, params, features_dir, manifest, pretrained_dir)
    started = time.monotonic()
    finished, scored = {}, {}
    for done in results:  # in the order they finish
        t = done.training
        finished[t.fold, t.seed] = done
        scored[t.fold, t.seed] = _scored(
            done, _weighed(heads, t.fold, params.train.cycle_weight), table, by_id, classes, params.data.dataset
        )
        score = scored[t.fold, t.seed][0]
        log(
            f"fold {t.fold}, seed {t.seed}: {len(t.train)}/{len(t.val)}/{len(t.test)} recordings, "
            f"{done.epochs} epochs, macro-F1 {score['macro_f1']:.3f}, "
            f"balanced acc {score['balanced_accuracy']:.3f}, {time.monotonic() - started:.0f} s"
        )
    metrics, predictions = _metrics(scored, todo, classes, params)
    if sweep:
        by_weight = {}
        metrics["cycle_weights"] = {}
        for weight in sweep:
            if weight == params.train.cycle_weight:  # the headline's own fusion
                by_weight[weight] = scored
                metrics["cycle_weights"][f"{weight:g}"] = weight_summary(metrics)
                continue
            by_weight[weight] = {
                key: _scored(done, _weighed(heads, key[0], weight), table, by_id, classes, params.data.dataset)
                for key, done in finished.items()
            }
            metrics["cycle_weights"][f"{weight:g}"] = weight_summary(
                _metrics(by_weight[weight], todo, classes, params)[0]
            )
        if len(by_weight) > 1:
            metrics["cycle_weight_chosen"] = chosen_weight_summary(by_weight, todo, classes, params)
    return metrics, predictions


def choose_weights(by_weight: dict, key: str = CHOSEN_BY) -> dict:
    """{fold: the weight whose mean `key` over the other folds (and seeds) is highest}: no fold's weight is
    chosen on its own test recordings. by_weight: {weight: {(fold, seed): (score, ...)}}; ties go to the weight
    listed first."""
    folds = dict.fromkeys(fold for scored in by_weight.values() for fold, _ in scored)
    chosen = {}
    for fold in folds:

        def others(weight, fold=fold):
            return np.mean([result[0][key] for (f, _), result in by_weight[weight].items() if f != fold])

        chosen[fold] = max(by_weight, key=others)
    return chosen


def chosen_weight_summary(by_weight: dict, todo: list[Training], classes, params: Params) -> dict:
    """cv.json's cycle_weight_chosen: each fold scored at the weight the other folds choose (choose_weights),
    the figure a weight chosen by this cv would give on data it did not choose by."""
    chosen = choose_weights(by_weight)
    scored = {(t.fold, t.seed): by_weight[chosen[t.fold]][t.fold, t.seed] for t in todo}
    return {
        "chosen_by": f"{CHOSEN_BY} of the other folds",
        "weights": {str(fold): weight for fold, weight in chosen.items()},
        **weight_summary(_metrics(scored, todo, classes, params)[0]),
    }


def _weighed(heads: dict, fold, weight: float):
    """The fold's cycle head at this weight, or None (the CNN alone) at 0."""
    return dataclasses.replace(heads[fold], weight=weight) if weight > 0 else None


def _metrics(scored: dict, todo: list[Training], classes, params: Params) -> tuple[dict, pd.DataFrame]:
    """cv.json's figures and the out-of-fold predictions table from _scored's results per (fold, seed)."""
    seeds = list(dict.fromkeys(t.seed for t in todo))
    # Assembled in (fold, seed) order, however the trainings finished.
    scores = [[scored[t.fold, t.seed][0] for t in todo if t.seed == seed] for seed in seeds]
    long_scores = [[scored[t.fold, t.seed][1] for t in todo if t.seed == seed] for seed in seeds]
    long_scores = [[s for s in per_seed if s is not None] for per_seed in long_scores]
    predictions = pd.concat([scored[t.fold, t.seed][2] for t in todo], ignore_index=True)
    by_source = source_scores(predictions, classes, params.data.dataset)
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


def weight_summary(metrics: dict) -> dict:
    """One entry of cv.json's cycle_weights: the headline means (and seed noise) and each source's figure, from
    the metrics of the predictions fused at that weight."""

    def brief(figure: dict) -> dict:
        return {k: figure[k] for k in ("mean", "seed_std") if k in figure}

    out = {key: brief(metrics[key]) for key in SUMMARY_KEYS}
    out |= {key: brief(metrics["screening"][key]) for key in ("macc", "roc_auc") if key in metrics.get("screening", {})}
    out["per_source"] = {}
    for source, figures in metrics["per_source"].items():
        out["per_source"][source] = {"balanced_accuracy": brief(figures["balanced_accuracy"])}
        screening = figures.get("screening", {})
        out["per_source"][source] |= {key: brief(screening[key]) for key in ("macc", "roc_auc") if key in screening}
    return out
