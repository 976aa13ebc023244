"""The prepare step: candidates -> manifest of usable recordings + rejections, then the split."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from heartsound import audio, splits
from heartsound.config import DataParams, PrepareParams
from heartsound.datasets import get_reader

MANIFEST_COLUMNS = [
    "recording_id",
    "path",
    "label",
    "group",
    "split",
    "duration_s",
    "sample_rate_hz",
    "channels",
    "source",
    "noisy",
    "sha256",
    "duplicate_of",
]
REJECTION_COLUMNS = ["path", "reason"]


def sha256_of(path: str | Path) -> str:
    """Content hash of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_recording(path: str, min_duration_s: float) -> tuple[audio.AudioInfo | None, str | None]:
    """Decode the whole recording once; return (info, None) or (None, reason)."""
    try:
        info = audio.scan(path)
    except audio.AudioError as e:
        return None, str(e)
    except OSError as e:
        return None, f"cannot open: {e.strerror or e}"
    except Exception as e:
        # A decoder bug on one odd file must not cost the other 3000 their run: record it.
        return None, f"unexpected decode error: {type(e).__name__}: {e}"
    if info.duration_s < min_duration_s:
        return None, f"too short: {info.duration_s:.2f} s < prepare.min_duration_s = {min_duration_s:g} s"
    return info, None


def _split_label_conflicts(manifest: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Identical audio under different labels: which label is right is unknown, so no copy is used.

    Returns (manifest without those rows, their rejections naming the other copies and labels).
    """
    labels_per_audio = manifest.groupby("sha256")["label"].transform("nunique")
    conflicted = manifest[labels_per_audio > 1]
    reasons = []
    for path, sha in zip(conflicted["path"], conflicted["sha256"]):
        others = conflicted[(conflicted["sha256"] == sha) & (conflicted["path"] != path)]
        named = ", ".join(f"{p} ({label})" for p, label in zip(others["path"], others["label"]))
        reasons.append(f"conflicting labels: identical audio in {named}")
    rejections = pd.DataFrame({"path": conflicted["path"].tolist(), "reason": reasons}, columns=REJECTION_COLUMNS)
    return manifest[labels_per_audio <= 1].reset_index(drop=True), rejections


def _merge_duplicate_groups(manifest: pd.DataFrame) -> pd.DataFrame:
    """Identical audio under several names: flag it and give all copies one group."""
    first_path = manifest.groupby("sha256")["path"].transform("first")
    manifest["duplicate_of"] = first_path.where(first_path != manifest["path"], "")
    parent = {g: g for g in manifest["group"]}

    def find(g):
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for _, groups in manifest.groupby("sha256")["group"]:
        roots = sorted({find(g) for g in groups})
        for r in roots[1:]:
            parent[r] = roots[0]
    manifest["group"] = manifest["group"].map(find)
    return manifest


def _examination_order(candidates: list, max_per_class: int | None, seed: int) -> list[int]:
    """Indices of candidates in the order prepare decodes them.

    With max_per_class, a seeded shuffle: the first max_per_class usable recordings of each label
    in that order are a random sample of its usable ones, and the rest need not be decoded at all
    (a 30-recording subset of 3000 files costs 30 decodes, not 3000).
    """
    if max_per_class is None:
        return list(range(len(candidates)))
    return [int(i) for i in np.random.default_rng(seed).permutation(len(candidates))]


def prepare(data: DataParams, params: PrepareParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the dataset, keep usable recordings, split them by group.

    Returns (manifest, rejections); every audio file found is in exactly one of them.
    """
    candidates = get_reader(data.dataset)(data.root)
    rows, rejected = [], []
    used_per_label = Counter()
    order = _examination_order(candidates, params.max_per_class, params.seed)
    for i in tqdm(order, desc="prepare", unit="file", mininterval=1.0):
        c = candidates[i]
        if c.rejection:
            rejected.append((c.path, c.rejection))
            continue
        if params.max_per_class is not None and used_per_label[c.label] >= params.max_per_class:
            rejected.append((c.path, "over prepare.max_per_class (not examined)"))
            continue
        info, reason = check_recording(c.path, params.min_duration_s)
        if reason:
            rejected.append((c.path, reason))
            continue
        used_per_label[c.label] += 1
        rows.append(
            {
                "order": i,
                "recording_id": Path(c.path).relative_to(data.root).with_suffix("").as_posix(),
                "path": c.path,
                "label": c.label,
                "group": c.group,
                "duration_s": round(info.duration_s, 4),
                "sample_rate_hz": info.sample_rate_hz,
                "channels": info.channels,
                "source": c.source,
                "noisy": c.noisy,
                "sha256": sha256_of(c.path),
            }
        )
    # The reader's order, whatever the examination order was: the split depends on row order.
    columns = ["order", *(c for c in MANIFEST_COLUMNS if c not in ("split", "duplicate_of"))]
    manifest = pd.DataFrame(rows, columns=columns).sort_values("order").drop(columns="order").reset_index(drop=True)
    manifest, conflicts = _split_label_conflicts(manifest)
    rejections = pd.concat([pd.DataFrame(rejected, columns=REJECTION_COLUMNS), conflicts], ignore_index=True)
    manifest = _merge_duplicate_groups(manifest)
    manifest["split"] = splits.split_train_val_test(
        manifest["label"], manifest["group"], params.val_fraction, params.test_fraction, params.seed
    )
    check_accounting(candidates, manifest, rejections)
    return manifest[MANIFEST_COLUMNS], rejections.sort_values("path").reset_index(drop=True)


def check_accounting(candidates, manifest: pd.DataFrame, rejections: pd.DataFrame) -> None:
    """Every input is used or rejected, exactly once; raise RuntimeError if the invariant breaks."""
    inputs = Counter(c.path for c in candidates)
    accounted = Counter(manifest["path"]) + Counter(rejections["path"])
    if inputs != accounted:
        missing = sorted(inputs - accounted)
        extra = sorted(accounted - inputs)  # listed twice, or never an input
        raise RuntimeError(
            f"prepare lost track of inputs ({sum(inputs.values())} found, {sum(accounted.values())} accounted for): "
            f"missing={missing[:5]} twice-or-unknown={extra[:5]}"
        )
