"""The patient-grouped, stratified train/val/test split."""

import numpy as np
import pandas as pd
import pytest

from heartsound import splits
from heartsound.datasets import pascal


def _toy(n_groups=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = ["normal", "murmur", "extrastole"][g % 3]
        for _ in range(rng.integers(1, 5)):
            rows.append((label, f"g{g}"))
    return pd.DataFrame(rows, columns=["label", "group"])


def test_no_group_in_two_splits_and_fractions_roughly_kept():
    table = _toy()
    table["split"] = splits.split_train_val_test(table["label"], table["group"], 0.15, 0.15, seed=1)
    assert table.groupby("group")["split"].nunique().max() == 1
    shares = table["split"].value_counts(normalize=True)
    assert 0.55 < shares["train"] < 0.85 and 0.05 < shares["val"] < 0.3 and 0.05 < shares["test"] < 0.3
    for split in ("train", "val", "test"):
        assert set(table.loc[table["split"] == split, "label"]) == {"normal", "murmur", "extrastole"}


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    table = _toy()
    a = splits.split_train_val_test(table["label"], table["group"], 0.15, 0.15, seed=3)
    b = splits.split_train_val_test(table["label"], table["group"], 0.15, 0.15, seed=3)
    c = splits.split_train_val_test(table["label"], table["group"], 0.15, 0.15, seed=4)
    assert list(a) == list(b)
    assert list(a) != list(c)


def test_real_pascal_split_keeps_patients_together(pascal_root):
    labelled = [c for c in pascal.read(str(pascal_root)) if c.rejection is None]
    labels = [c.label for c in labelled]
    groups = [c.group for c in labelled]
    split = splits.split_train_val_test(labels, groups, 0.15, 0.15, seed=42)
    table = pd.DataFrame({"label": labels, "group": groups, "split": split})
    assert table.groupby("group")["split"].nunique().max() == 1
    assert set(table.loc[table["split"] == "train", "label"]) == set(pascal.LABELS)
    # Patient 106 has several recordings in set_b; they share one split.
    assert table.loc[table["group"] == "set_b:patient106", "split"].nunique() == 1


@pytest.mark.parametrize("seed", [0, 7])
def test_every_row_gets_exactly_one_split(seed):
    table = _toy(seed=seed)
    split = splits.split_train_val_test(table["label"], table["group"], 0.2, 0.2, seed=seed)
    assert len(split) == len(table) and set(split) <= {"train", "val", "test"}
