"""The prepare step: candidates -> manifest of usable recordings + rejections, then the split."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

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


def _limit_per_class(manifest: pd.DataFrame, max_per_class: int | None, seed: int) -> pd.DataFrame:
    if max_per_class is None:
        return manifest
    keep = manifest.groupby("label", group_keys=False).apply(
        lambda rows: rows.sample(min(len(rows), max_per_class), random_state=seed)
    )
    return manifest.loc[sorted(keep.index)]


def prepare(data: DataParams, params: PrepareParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the dataset, keep usable recordings, split them by group.

    Returns (manifest, rejections); every audio file found is in exactly one of them.
    """
    candidates = get_reader(data.dataset)(data.root)
    rows, rejected = [], []
    for c in tqdm(candidates, desc="prepare", unit="file", mininterval=1.0):
        if c.rejection:
            rejected.append((c.path, c.rejection))
            continue
        info, reason = check_recording(c.path, params.min_duration_s)
        if reason:
            rejected.append((c.path, reason))
            continue
        rows.append(
            {
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
    manifest = pd.DataFrame(rows, columns=[c for c in MANIFEST_COLUMNS if c not in ("split", "duplicate_of")])
    manifest, conflicts = _split_label_conflicts(manifest)
    rejections = pd.concat([pd.DataFrame(rejected, columns=REJECTION_COLUMNS), conflicts], ignore_index=True)
    manifest = _merge_duplicate_groups(manifest)
    kept = _limit_per_class(manifest, params.max_per_class, params.seed)
    over_limit = manifest.drop(kept.index)
    if len(over_limit):
        extra = pd.DataFrame({"path": over_limit["path"], "reason": "over prepare.max_per_class"})
        rejections = pd.concat([rejections, extra], ignore_index=True)
    manifest = kept.reset_index(drop=True)
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
