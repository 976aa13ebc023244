"""Patient-grouped, label-stratified splits and folds: no group ever lands in two parts."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def _holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a stratified group holdout of about `fraction` of the rows."""
    n_splits = max(2, int(round(1 / fraction)))
    # StratifiedGroupKFold needs some class with at least n_splits members (tiny subsets).
    _, class_counts = np.unique(labels, return_counts=True)
    n_splits = min(n_splits, len(np.unique(groups)), int(class_counts.max()))
    if n_splits < 2:
        return np.zeros(len(labels), bool)
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare classes with fewer groups than folds are expected in small subsets.
        warnings.simplefilter("ignore", UserWarning)
        _, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    return mask


def split_train_val_test(labels, groups, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Assign 'train' / 'val' / 'test' per row, stratified by label, grouped by group."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    split = np.full(len(labels), "train", dtype=object)
    if len(labels) == 0:
        return split
    test = _holdout(labels, groups, test_fraction, seed)
    split[test] = "test"
    rest = np.flatnonzero(~test)
    if len(rest):
        val = _holdout(labels[rest], groups[rest], val_fraction / (1 - test_fraction), seed + 1)
        split[rest[val]] = "val"
    return split


def crossval_folds(labels, groups, n_folds: int, val_fraction: float, seed: int):
    """Yield (train_idx, val_idx, test_idx) per fold.

    Test parts partition the rows by group; each fold's validation groups are drawn
    from its own training groups only, never from its test part.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = list(folds.split(np.zeros(len(labels)), labels, groups))
    for fold, (rest, test) in enumerate(parts):
        val = _holdout(labels[rest], groups[rest], val_fraction, seed + 1 + fold)
        yield rest[~val], rest[val], test


def source_folds(labels, groups, sources, val_fraction: float, seed: int):
    """Yield (source, train_idx, val_idx, test_idx) per source, sorted: each fold holds out one source entirely
    (a PhysioNet site, a PASCAL set: another device), so the scores say how the model does on a device it never
    heard. Validation groups come from the training sources only."""
    labels, groups, sources = np.asarray(labels), np.asarray(groups), np.asarray(sources)
    for fold, source in enumerate(sorted(set(sources))):
        rest, test = np.flatnonzero(sources != source), np.flatnonzero(sources == source)
        val = _holdout(labels[rest], groups[rest], val_fraction, seed + 1 + fold)
        yield source, rest[~val], rest[val], test
