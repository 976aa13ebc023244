"""Cross-validation folds on real PASCAL names, and the cv.json aggregation."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartsound import config, crossval, fusion, splits
from heartsound.datasets import pascal


@pytest.fixture
def pascal_recordings(pascal_root) -> pd.DataFrame:
    """A manifest-like table (label, group) of every labelled PASCAL file on disk."""
    labelled = [c for c in pascal.read(str(pascal_root)) if c.rejection is None]
    return pd.DataFrame({"label": [c.label for c in labelled], "group": [c.group for c in labelled]})


def test_real_pascal_folds_are_grouped_and_cover_every_recording(pascal_recordings):
    table = pascal_recordings
    params = config.parse({"crossval": {"folds": 5, "seed": 42, "val_fraction": 0.15}})
    folds = crossval.fold_indices(table, params)
    assert len(folds) == 5
    groups = table["group"].to_numpy()
    tested = np.concatenate([test for _, _, _, test in folds])
    # Test parts partition the recordings: each one scored exactly once.
    assert sorted(tested) == list(range(len(table)))
    test_groups = [set(groups[test]) for _, _, _, test in folds]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not test_groups[i] & test_groups[j]
    assert [name for name, *_ in folds] == list(range(5))
    for _, train, val, test in folds:
        assert len(val) > 0
        assert not set(groups[val]) & set(groups[test])
        assert not set(groups[val]) & set(groups[train])
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(val) + len(test) == len(table)
        # Stratified: every class with enough patients appears in every test part.
        assert set(table["label"].iloc[test]) >= {"normal", "murmur", "extrastole", "artifact"}
    # set_b patient 106 has several recordings; they share one test part.
    patient = np.flatnonzero(groups == "set_b:patient106")
    assert len(patient) > 1
    assert sum(bool(set(patient) & set(test)) for _, _, _, test in folds) == 1


def test_folds_depend_on_the_seed_only():
    labels = np.repeat(["a", "b", "c"], 40)
    groups = np.array([f"g{i // 2}" for i in range(120)])
    first = list(splits.crossval_folds(labels, groups, 4, 0.2, seed=1))
    again = list(splits.crossval_folds(labels, groups, 4, 0.2, seed=1))
    other = list(splits.crossval_folds(labels, groups, 4, 0.2, seed=2))
    assert all((a[2] == b[2]).all() for a, b in zip(first, again))
    assert any(len(a[2]) != len(b[2]) or (a[2] != b[2]).any() for a, b in zip(first, other))


def _fold(macro_f1, bal_acc, acc, f1_a, f1_b, se, sp, n):
    return {
        "macro_f1": macro_f1,
        "balanced_accuracy": bal_acc,
        "accuracy": acc,
        "n_recordings": n,
        "per_class": {"a": {"f1": f1_a}, "b": {"f1": f1_b}},
        "screening": {"sensitivity": se, "specificity": sp, "macc": (se + sp) / 2},
    }


def test_summary_gives_mean_population_std_and_fold_values():
    folds = [_fold(0.5, 0.6, 0.7, 0.2, 0.8, 1.0, 0.5, 10), _fold(0.7, 0.8, 0.9, 0.4, 1.0, 0.5, 0.5, 12)]
    out = crossval.summary([folds], ["a", "b"])
    assert "seed_std" not in out["macro_f1"]  # one seed: no seed noise to report
    assert out["macro_f1"]["mean"] == pytest.approx(0.6)
    assert out["macro_f1"]["std"] == pytest.approx(0.1)  # population std, not the sample one (0.141)
    assert out["macro_f1"]["folds"] == [0.5, 0.7]
    assert out["balanced_accuracy"]["mean"] == pytest.approx(0.7)
    assert out["accuracy"]["std"] == pytest.approx(0.1)
    assert out["per_class_f1"]["a"]["mean"] == pytest.approx(0.3)
    assert out["per_class_f1"]["b"]["folds"] == [0.8, 1.0]
    assert out["screening"]["macc"]["mean"] == pytest.approx(0.625)
    assert out["n_recordings"] == 22
    json.dumps(out)  # plain floats: cv.json must serialise


def test_summary_leaves_out_screening_when_a_fold_has_none():
    folds = [_fold(0.5, 0.6, 0.7, 0.2, 0.8, 1.0, 0.5, 10), _fold(0.7, 0.8, 0.9, 0.4, 1.0, 0.5, 0.5, 12)]
    folds[1].pop("screening")
    assert "screening" not in crossval.summary([folds], ["a", "b"])


def test_summary_over_seeds_separates_fold_spread_from_seed_noise():
    # Two seeds on the same two folds: fold 1 is easier by 0.2 under both seeds, seed 2 is better by 0.1 on both.
    seed_1 = [_fold(0.5, 0.6, 0.7, 0.2, 0.8, 1.0, 0.5, 10), _fold(0.7, 0.8, 0.9, 0.4, 1.0, 0.5, 0.5, 12)]
    seed_2 = [_fold(0.6, 0.6, 0.7, 0.2, 0.8, 1.0, 0.5, 10), _fold(0.8, 0.8, 0.9, 0.4, 1.0, 0.5, 0.5, 12)]
    out = crossval.summary([seed_1, seed_2], ["a", "b"])["macro_f1"]
    assert out["mean"] == pytest.approx(0.65)
    assert out["folds"] == pytest.approx([0.55, 0.75])
    assert out["std"] == pytest.approx(0.1)  # over folds, after averaging the seeds
    assert out["seeds"] == pytest.approx([0.6, 0.7])
    assert out["seed_std"] == pytest.approx(0.0707107, abs=1e-6)  # sample std of the two cv means


def save_split(features_dir: Path, split: str, x: np.ndarray, table: pd.DataFrame) -> None:
    """Write windows x [n, n_mfcc, frames] as featurize does: their frames end to end, one start frame each."""
    n, n_mfcc, window_frames = x.shape
    np.save(features_dir / f"{split}.npy", x.transpose(0, 2, 1).reshape(-1, n_mfcc))
    table = table.assign(window=range(n), frame=np.arange(n) * window_frames)
    table.to_csv(features_dir / f"{split}_windows.csv", index=False)
    if not (features_dir / "meta.json").exists():
        (features_dir / "meta.json").write_text(json.dumps({"feature_shape": [n_mfcc, window_frames]}))


def test_load_all_concatenates_splits_and_takes_groups_from_the_manifest_and_tables_need_no_features(tmp_path):
    manifest = pd.DataFrame(
        {
            "recording_id": ["r1", "r2", "r3"],
            "group": ["g1", "g1", "g2"],
            "duration_s": [9.0, 3.0, 5.0],
            "source": ["a", "a", "b"],
        }
    )
    rows = {"train": [("r1", "normal"), ("r1", "normal")], "val": [("r2", "normal")], "test": [("r3", "murmur")]}
    for split, windows in rows.items():
        x = np.full((len(windows), 2, 3), len(split), np.float32)
        save_split(tmp_path, split, x, pd.DataFrame(windows, columns=["recording_id", "label"]))
    x, windows, recordings = crossval.load_all(tmp_path, manifest)
    assert x.shape == (4, 2, 3)
    assert list(windows["window"]) == [0, 1, 2, 3]
    assert x[3, 0, 0] == len("test")
    assert list(windows["group"]) == ["g1", "g1", "g1", "g2"]
    assert list(recordings["recording_id"]) == ["r1", "r2", "r3"]
    assert list(recordings["duration_s"]) == [9.0, 3.0, 5.0]
    assert list(recordings["source"]) == ["a", "a", "b"]
    assert list(windows["recording"]) == [0, 0, 1, 2]  # each window's row in recordings
    # The tables alone (a client whose workers train) read no features.
    for split in rows:
        (tmp_path / f"{split}.npy").unlink()
    tables, tables_recordings = crossval.load_tables(tmp_path, manifest)
    pd.testing.assert_frame_equal(tables, windows)
    pd.testing.assert_frame_equal(tables_recordings, recordings)


def tiny_features(tmp_path) -> pd.DataFrame:
    """20 recordings of tiny synthetic windows (murmur shifted by +1) in two sources, written as featurize does;
    returns the manifest. Source "clinic" holds both classes, source "phone" normal only."""
    rng = np.random.default_rng(0)
    classes = ["murmur", "normal"]
    rows, manifest = [], []
    for r in range(20):
        label, duration = classes[r % 2], 2.0 if r < 4 else 6.0
        source = "phone" if r >= 12 and label == "normal" else "clinic"
        manifest.append((f"r{r}", f"g{r % 2}-{r // 4}", duration, source))  # two recordings per group, one label
        rows += [(f"r{r}", label)] * (1 if duration < 4 else 3)
    windows = pd.DataFrame(rows, columns=["recording_id", "label"])
    x = rng.normal(size=(len(windows), 4, 16)).astype(np.float32)
    x[windows["label"] == "murmur"] += 1.0
    for split, part in (("train", slice(0, 30)), ("val", slice(30, 40)), ("test", slice(40, None))):
        save_split(tmp_path, split, x[part], windows.iloc[part].reset_index(drop=True))
    (tmp_path / "meta.json").write_text(json.dumps({"classes": classes, "feature_shape": list(x.shape[1:])}))
    return pd.DataFrame(manifest, columns=["recording_id", "group", "duration_s", "source"])


def tiny_params(**crossval):
    return config.parse(
        {
            "train": {"model": "cnn1d", "epochs": 2, "batch_size": 8, "patience": 0},
            "crossval": {"folds": 2, "seed": 0, **crossval},
            "data": {"dataset": "folder"},
        }
    )


def test_run_scores_every_recording_once_on_tiny_features(tmp_path):
    """The whole loop on tiny synthetic windows: cv.json's shape, out-of-fold predictions, short recordings."""
    manifest = tiny_features(tmp_path)
    metrics, predictions = crossval.run(tiny_params(seeds=2), tmp_path, manifest, log=lambda _: None)
    assert sorted(set(predictions["recording_id"])) == sorted(manifest["recording_id"])
    # Every recording scored once per seed, always in the same fold.
    assert predictions.groupby("recording_id")["seed"].nunique().min() == 2
    assert len(predictions) == 2 * len(manifest)
    assert predictions.groupby("recording_id")["fold"].nunique().max() == 1
    groups = manifest.set_index("recording_id").loc[predictions["recording_id"], "group"].to_numpy()
    assert predictions.groupby(groups)["fold"].nunique().max() == 1
    assert metrics["by"] == "group" and len(metrics["macro_f1"]["folds"]) == 2
    assert metrics["seeds"] == [42, 142] and len(metrics["macro_f1"]["seeds"]) == 2
    assert metrics["macro_f1"]["seed_std"] >= 0
    assert set(metrics["per_class_f1"]) == {"murmur", "normal"}
    assert metrics["n_recordings"] == 20
    assert metrics["long_only"]["n_recordings"] == 16
    # Each source scored on its own recordings and classes, from the same out-of-fold predictions.
    clinic, phone = metrics["per_source"]["clinic"], metrics["per_source"]["phone"]
    assert (clinic["n_recordings"], phone["n_recordings"]) == (16, 4)
    assert phone["classes"] == ["normal"] and phone["missing_classes"] == ["murmur"]
    phone_rows = predictions[predictions["source"] == "phone"]
    assert phone["accuracy"]["mean"] == pytest.approx((phone_rows["predicted"] == "normal").mean())
    json.dumps(metrics)


def cycle_table_naming_the_class(tmp_path, manifest) -> tuple[Path, pd.DataFrame]:
    """A segment stage output whose cycle feature names each recording's class, and CNN training windows that
    hear nothing: the head alone can be right."""
    window_tables = pd.concat(pd.read_csv(tmp_path / f"{s}_windows.csv") for s in ("train", "val", "test"))
    labels = window_tables.groupby("recording_id")["label"].first().loc[manifest["recording_id"]]
    rng = np.random.default_rng(1)
    table = pd.DataFrame(
        {
            "recording_id": manifest["recording_id"],
            "no_rhythm_reason": "",
            "murmur_sign": (labels.to_numpy() == "murmur") * 3.0 + 0.1 * rng.normal(size=len(manifest)),
            "noise": rng.normal(size=len(manifest)),
        }
    )
    cycles_dir = tmp_path / "cycles"
    cycles_dir.mkdir()
    table.to_csv(cycles_dir / fusion.TABLE_FILE, index=False)
    x = np.load(tmp_path / "train.npy")
    np.save(tmp_path / "train.npy", np.zeros_like(x))
    return cycles_dir, table


def head_params(cycle_weight: float, cycle_weights=()):
    return config.parse(
        {
            "train": {"model": "cnn1d", "epochs": 1, "batch_size": 8, "patience": 0, "cycle_weight": cycle_weight},
            "crossval": {"folds": 2, "seed": 0, "seeds": 1, "cycle_weights": list(cycle_weights)},
            "data": {"dataset": "folder"},
        }
    )


def test_cycle_head_is_fitted_per_fold_and_fused(tmp_path):
    """With a heavy head every fold is right, where the CNN alone hears nothing."""
    manifest = tiny_features(tmp_path)
    cycles_dir, table = cycle_table_naming_the_class(tmp_path, manifest)
    metrics, predictions = crossval.run(head_params(0.9), tmp_path, manifest, cycles_dir, log=lambda _: None)
    assert metrics["balanced_accuracy"]["mean"] == 1.0
    assert "cycle_weights" not in metrics
    assert np.allclose(predictions[["p_murmur", "p_normal"]].sum(axis=1), 1, atol=1e-5)
    table.iloc[:-1].to_csv(cycles_dir / fusion.TABLE_FILE, index=False)
    with pytest.raises(ValueError, match="r19 has no cycle features"):
        crossval.run(head_params(0.9), tmp_path, manifest, cycles_dir, log=lambda _: None)


def test_cycle_weights_score_the_same_trainings_as_runs_at_each_weight(tmp_path):
    """crossval.cycle_weights rescored from one run's trainings give what a run at that weight gives."""
    manifest = tiny_features(tmp_path)
    cycles_dir, _ = cycle_table_naming_the_class(tmp_path, manifest)

    def run(cycle_weight, cycle_weights=()):
        return crossval.run(
            head_params(cycle_weight, cycle_weights), tmp_path, manifest, cycles_dir, log=lambda _: None
        )[0]

    # The CNN alone (weight 0) fits no head of its own; the sweep fits one per fold for its other weights.
    alone = run(0.0, [0.0, 0.5, 0.9])
    swept = alone.pop("cycle_weights")
    assert list(swept) == ["0", "0.5", "0.9"]
    heavy = run(0.9, [0.0, 0.9])
    swept_heavy = heavy.pop("cycle_weights")
    # Each run's sweep rescores the other run's weight; its own weight's entry is its headline.
    for key, metrics, sweep in (("0", alone, swept_heavy), ("0.9", heavy, swept)):
        for figure in ("macro_f1", "balanced_accuracy", "accuracy"):
            assert sweep[key][figure]["mean"] == metrics[figure]["mean"]
        for source, figures in metrics["per_source"].items():
            assert sweep[key]["per_source"][source]["balanced_accuracy"]["mean"] == figures["balanced_accuracy"]["mean"]
    assert swept["0"] == crossval.weight_summary(alone) and swept_heavy["0.9"] == crossval.weight_summary(heavy)
    assert swept["0.9"]["balanced_accuracy"]["mean"] == 1.0 > swept["0"]["balanced_accuracy"]["mean"]
    # Every fold's other fold is right with the heavy head only: each fold is scored at 0.9, as the headline is.
    chosen = heavy["cycle_weight_chosen"]
    assert chosen.pop("weights") == {"0": 0.9, "1": 0.9}
    assert chosen.pop("chosen_by") == "balanced_accuracy of the other folds"
    assert chosen == swept_heavy["0.9"]
    # A run with one weight has nothing to choose from.
    assert "cycle_weight_chosen" not in run(0.9, [0.9])


def test_each_folds_weight_is_chosen_by_the_other_folds_alone():
    def results(*balanced_accuracies):  # folds 0, 1, 2, two seeds each
        return {
            (fold, seed): ({"balanced_accuracy": ba + 0.01 * (seed == 142)},)
            for fold, ba in enumerate(balanced_accuracies)
            for seed in (42, 142)
        }

    # Fold 0 is best at 0 on its own recordings, but the other two folds prefer 0.5; folds 1 and 2 see fold 0's 0.9.
    by_weight = {0.0: results(0.9, 0.5, 0.5), 0.5: results(0.6, 0.7, 0.6)}
    assert crossval.choose_weights(by_weight) == {0: 0.5, 1: 0.0, 2: 0.0}
    # A tie goes to the weight listed first.
    tied = {0.7: results(0.6, 0.6, 0.6), 0.3: results(0.6, 0.6, 0.6)}
    assert crossval.choose_weights(tied) == {0: 0.7, 1: 0.7, 2: 0.7}


def test_leave_one_source_out_holds_out_each_source_and_leaves_incomplete_ones_out_of_the_mean(tmp_path):
    manifest = tiny_features(tmp_path)
    metrics, predictions = crossval.run(tiny_params(by="source"), tmp_path, manifest, log=lambda _: None)
    # One fold per source, named by it, holding all of that source's recordings and nothing else.
    assert sorted(predictions["fold"].unique()) == ["clinic", "phone"]
    assert (predictions["fold"] == predictions["source"]).all()
    assert len(predictions) == len(manifest)
    assert metrics["by"] == "source" and metrics["folds"] == 2
    # "phone" has no murmur: reported on its own, kept out of the headline mean, and the output says why.
    assert metrics["mean_over"] == ["clinic"]
    assert metrics["left_out_of_mean"] == {"phone": "lacks murmur"}
    assert metrics["balanced_accuracy"]["mean"] == metrics["per_source"]["clinic"]["balanced_accuracy"]["mean"]
    json.dumps(metrics)


def test_leave_one_source_out_needs_two_sources(tmp_path):
    manifest = tiny_features(tmp_path).assign(source="clinic")
    with pytest.raises(ValueError, match="at least two sources"):
        crossval.run(tiny_params(by="source"), tmp_path, manifest, log=lambda _: None)


def test_subset_scores_score_what_a_source_has():
    from heartsound import evaluation

    out = evaluation.subset_scores(["normal", "normal", "murmur"], ["normal", "murmur", "murmur"], "pascal")
    assert out["classes"] == ["murmur", "normal"]
    assert out["recall"] == {"murmur": 1.0, "normal": 0.5}
    assert out["balanced_accuracy"] == pytest.approx(0.75)
    assert out["screening"] == {"sensitivity": 1.0, "specificity": 0.5, "macc": 0.75}
    # Only normal recordings: specificity can be scored, sensitivity and MAcc cannot.
    only_normal = evaluation.subset_scores(["normal", "normal"], ["normal", "extrastole"], "pascal")
    assert only_normal["screening"] == {"specificity": 0.5}
    # With scores, the ranking too: one normal scored above the murmur, one below.
    ranked = evaluation.subset_scores(
        ["normal", "normal", "murmur"], ["normal", "murmur", "murmur"], "pascal", [0.1, 0.9, 0.6]
    )
    assert ranked["screening"]["roc_auc"] == pytest.approx(0.5)
    assert "roc_auc" not in evaluation.subset_scores(["normal"], ["normal"], "pascal", [0.2])["screening"]


def test_abnormal_score_ranks_by_abnormal_against_normal_alone():
    from heartsound import evaluation

    classes = ["artifact", "extrahls", "extrastole", "murmur", "normal"]
    probs = [[0.0, 0.05, 0.05, 0.1, 0.8], [0.9, 0.0, 0.0, 0.05, 0.05], [1.0, 0.0, 0.0, 0.0, 0.0]]
    # The artifact-heavy recording is as likely abnormal as normal given a heart class; no heart class: 0.5.
    assert evaluation.abnormal_score(probs, classes, "pascal") == pytest.approx([0.2, 0.5, 0.5])
    assert evaluation.abnormal_score(probs, classes, "folder") is None


def test_grouped_summary_averages_the_folds_screening_ranking_when_every_fold_has_one():
    from heartsound import evaluation

    classes = ["abnormal", "normal"]
    y_true = ["abnormal", "abnormal", "normal", "normal"]

    def fold(p_abnormal, with_probs=True):
        probs = np.column_stack([p_abnormal, 1 - np.asarray(p_abnormal)])
        y_pred = np.asarray(classes)[probs.argmax(axis=1)]
        return evaluation.score(y_true, y_pred, classes, "physionet2016", probs=probs if with_probs else None)

    perfect, half = fold([0.9, 0.8, 0.3, 0.2]), fold([0.9, 0.2, 0.3, 0.1])
    out = crossval.summary([[perfect, half]], classes)
    assert out["screening"]["roc_auc"]["folds"] == pytest.approx([1.0, 0.75])
    assert out["screening"]["roc_auc"]["mean"] == pytest.approx(0.875)
    # A fold scored without probabilities: no mean that would hide it.
    assert "roc_auc" not in crossval.summary([[perfect, fold([0.9, 0.2, 0.3, 0.1], False)]], classes)["screening"]


def test_leave_one_source_out_reports_each_sources_ranking_and_its_mean():
    """cv.json's screening ROC AUC per held-out source, from the out-of-fold probabilities, and over sources."""
    rows = []
    for seed, flip in ((42, False), (142, True)):
        for source, p_abnormal in (("site-a", [0.9, 0.8, 0.3, 0.2]), ("site-b", [0.6, 0.4, 0.3, 0.5])):
            for label, p in zip(["abnormal", "abnormal", "normal", "normal"], p_abnormal):
                p = 1 - p if flip and source == "site-b" else p
                rows.append((label, "abnormal" if p > 0.5 else "normal", seed, source, p, 1 - p))
    predictions = pd.DataFrame(rows, columns=["label", "predicted", "seed", "source", "p_abnormal", "p_normal"])
    classes = ["abnormal", "normal"]
    scores = crossval.source_scores(predictions, classes, "physionet2016")
    assert [run["screening"]["roc_auc"] for run in scores["site-a"]] == [1.0, 1.0]
    assert [run["screening"]["roc_auc"] for run in scores["site-b"]] == [0.75, 0.25]
    summary = crossval.leave_one_source_out_summary(scores, classes)
    assert summary["screening"]["roc_auc"]["mean"] == pytest.approx(0.75)
    assert summary["screening"]["roc_auc"]["folds"] == pytest.approx([1.0, 0.5])
    per_source = crossval.per_source_summary(scores, classes)
    assert per_source["site-b"]["screening"]["roc_auc"]["mean"] == pytest.approx(0.5)
