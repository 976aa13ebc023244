"""The source probe: how well a simple classifier tells the recording device (source) from the features.

A model can only use what its inputs carry. If a logistic regression on a summary of each recording's MFCC windows
(per coefficient: 10th, 50th and 90th percentile and the spread of its frame-to-frame change, so per-recording
normalisation does not remove the summary by construction) names the PhysioNet site or the PASCAL set far above
chance, the device is in the input and a classifier can learn it as a shortcut; a device-robust input
(featurize.normalise) should bring the probe down towards chance. With --model, the probe reads the trained
model's embedding (its pooled last convolution, averaged over a recording's windows) instead: what the model
kept of the device.

The class mix differs between sources (PASCAL set_a has classes set_b lacks), so the label alone would give the
source away; the probe is therefore run within each label that at least two sources share, and the figure
reported is the mean of those balanced accuracies (chance: 1 / the number of sources in that label).

    python -m heartsound.probe data/prepared/manifest.csv data/features [--model models] [--json probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from heartsound import crossval

FOLDS = 5
MIN_PER_SOURCE = 10  # recordings of a source within a label; fewer cannot be split into folds


def window_summary(x: np.ndarray) -> np.ndarray:
    """Per window [n, n_mfcc, frames]: each coefficient's 10th, 50th, 90th percentile and std of its change."""
    percentiles = np.percentile(x, (10, 50, 90), axis=2)  # [3, n, n_mfcc]
    return np.concatenate([*percentiles, np.diff(x, axis=2).std(axis=2)], axis=1)


def window_embeddings(x: np.ndarray, model_dir) -> np.ndarray:
    """The trained model's input to its classifier layer, per window."""
    import keras

    from heartsound import model as keras_model
    from heartsound.model_dir import to_input

    trained = keras_model.load_keras(model_dir)
    embed = keras.Model(trained.inputs, trained.layers[-2].output)
    return embed.predict(to_input(x), batch_size=256, verbose=0)


def per_recording(values: np.ndarray, windows: pd.DataFrame) -> pd.DataFrame:
    """Window rows averaged per recording_id."""
    return pd.DataFrame(values, index=windows["recording_id"].to_numpy()).groupby(level=0, sort=False).mean()


def source_probe(summary: np.ndarray, sources: np.ndarray, groups: np.ndarray, seed: int = 0) -> float:
    """Out-of-fold balanced accuracy of a logistic regression predicting the source (patient-grouped folds)."""
    n_splits = min(FOLDS, int(pd.Series(sources).value_counts().min()))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    predicted = np.empty(len(sources), dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for train, test in folds.split(summary, sources, groups):
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
            predicted[test] = probe.fit(summary[train], sources[train]).predict(summary[test])
    return float(balanced_accuracy_score(sources, predicted.astype(str)))


def run(manifest: pd.DataFrame, features_dir, model_dir=None) -> dict:
    """{"per_label": {label: {"balanced_accuracy", "chance", "sources", "recordings"}}, "mean", "mean_chance"}."""
    x, windows, recordings = crossval.load_all(features_dir, manifest)
    values = window_summary(x) if model_dir is None else window_embeddings(x, model_dir)
    summary = per_recording(values, windows).loc[recordings["recording_id"]].to_numpy()
    per_label = {}
    for label, rows in recordings.groupby("label").groups.items():
        rows = recordings.index.get_indexer(rows)
        counts = recordings["source"].iloc[rows].value_counts()
        kept = counts[counts >= MIN_PER_SOURCE].index
        rows = rows[recordings["source"].iloc[rows].isin(kept).to_numpy()]
        if len(kept) < 2:
            continue
        sources = recordings["source"].to_numpy()[rows]
        per_label[label] = {
            "balanced_accuracy": round(source_probe(summary[rows], sources, recordings["group"].to_numpy()[rows]), 4),
            "chance": round(1 / len(kept), 4),
            "sources": sorted(kept),
            "recordings": len(rows),
        }
    if not per_label:
        raise ValueError(f"no label has at least {MIN_PER_SOURCE} recordings from each of two sources")
    return {
        "per_label": per_label,
        "mean": round(float(np.mean([v["balanced_accuracy"] for v in per_label.values()])), 4),
        "mean_chance": round(float(np.mean([v["chance"] for v in per_label.values()])), 4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heartsound.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", help="data/prepared/manifest.csv")
    parser.add_argument("features", help="data/features (featurize's output)")
    parser.add_argument("--model", help="probe this trained model's embeddings (models/) instead of the features")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    try:
        result = run(pd.read_csv(args.manifest, dtype={"recording_id": str}), args.features, args.model)
    except (OSError, ValueError) as e:
        print(f"heartsound.probe: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
