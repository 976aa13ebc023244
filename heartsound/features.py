"""MFCC features: fixed-length windows over whole recordings, a per-recording cache, per-split arrays."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
from tqdm import tqdm

from heartsound import audio
from heartsound.config import FeaturizeParams, as_dict

# Params that change the numbers; jobs and cache_dir only change how they are computed.
NOT_IN_KEY = ("jobs", "cache_dir")
WINDOW_COLUMNS = ["window", "recording_id", "label", "group", "start_s"]


def feature_key_params(params: FeaturizeParams) -> dict:
    """The params a feature array depends on (what travels with a model)."""
    return {k: v for k, v in as_dict(params).items() if k not in NOT_IN_KEY}


def window_samples(params: FeaturizeParams) -> tuple[int, int]:
    """(window length, window hop) in samples at the feature rate."""
    rate = params.sample_rate_hz
    return int(round(params.window_s * rate)), max(1, int(round(params.window_hop_s * rate)))


def frames_per_window(params: FeaturizeParams) -> int:
    length, _ = window_samples(params)
    return 1 + length // params.hop_length


def feature_shape(params: FeaturizeParams) -> tuple[int, int]:
    """Shape of one window's MFCC array: (n_mfcc, frames)."""
    return params.n_mfcc, frames_per_window(params)


def split_windows(samples: np.ndarray, params: FeaturizeParams) -> tuple[np.ndarray, np.ndarray]:
    """Cut a signal into windows of window_s every window_hop_s; a short signal is zero-padded to one.

    Returns (windows [n, length], start times in seconds [n]).
    """
    length, hop = window_samples(params)
    if len(samples) < length:
        samples = np.pad(samples, (0, length - len(samples)))
    windows = np.lib.stride_tricks.sliding_window_view(samples, length)[::hop]
    starts = np.arange(len(windows)) * hop / params.sample_rate_hz
    return np.ascontiguousarray(windows), starts


def mfcc_windows(samples: np.ndarray, params: FeaturizeParams) -> np.ndarray:
    """MFCC of every window of a signal at the feature rate: float32 [n_windows, n_mfcc, frames]."""
    windows, _ = split_windows(samples, params)
    # librosa computes a batch of windows in one vectorised call.
    mfcc = librosa.feature.mfcc(
        y=windows,
        sr=params.sample_rate_hz,
        n_mfcc=params.n_mfcc,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
        fmin=params.fmin_hz,
        fmax=params.fmax_hz,
    )
    return mfcc.astype(np.float32)


def recording_features(path: str | os.PathLike, params: FeaturizeParams) -> np.ndarray:
    """Decode, resample and featurize one recording file."""
    samples, _ = audio.load(path, params.sample_rate_hz, params.max_duration_s)
    return mfcc_windows(samples, params)


class FeatureCache:
    """Per-recording feature arrays keyed by the recording's content hash and the feature params.

    Entries are written atomically (temp file + rename), so an interrupted run leaves no
    half-written entry; an entry that fails to load or has the wrong shape is recomputed.
    """

    def __init__(self, directory: str | os.PathLike, params: FeaturizeParams):
        self.directory = Path(directory)
        self.params = params
        blob = json.dumps(feature_key_params(params), sort_keys=True).encode()
        self.params_digest = hashlib.sha256(blob).hexdigest()[:16]

    def path_for(self, content_sha256: str) -> Path:
        key = hashlib.sha256(f"{content_sha256}:{self.params_digest}".encode()).hexdigest()
        return self.directory / key[:2] / f"{key}.npy"

    def get(self, content_sha256: str) -> np.ndarray | None:
        path = self.path_for(content_sha256)
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.ndim != 3 or array.shape[1:] != feature_shape(self.params) or array.dtype != np.float32:
            return None
        return array

    def put(self, content_sha256: str, array: np.ndarray) -> None:
        path = self.path_for(content_sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _featurize_one(task: tuple[str, str, FeaturizeParams]) -> tuple[str, int, bool]:
    """Worker: make sure one recording's cache entry exists. Returns (sha, n_windows, computed)."""
    path, sha, params = task
    cache = FeatureCache(params.cache_dir, params)
    cached = cache.get(sha)
    if cached is not None:
        return sha, len(cached), False
    array = recording_features(path, params)
    cache.put(sha, array)
    return sha, len(array), True


def fill_cache(manifest: pd.DataFrame, params: FeaturizeParams) -> tuple[dict[str, int], dict[str, int]]:
    """Compute every recording missing from the cache, in parallel.

    Returns ({sha256: n_windows}, {"computed": n, "cached": m}). Only window counts cross
    process boundaries, so memory stays flat however many recordings there are.
    """
    tasks = [(p, s, params) for p, s in manifest[["path", "sha256"]].drop_duplicates("sha256").itertuples(index=False)]
    jobs = params.jobs or os.cpu_count() or 1
    counts = {"computed": 0, "cached": 0}
    n_windows = {}
    progress = tqdm(total=len(tasks), desc="featurize", unit="file", mininterval=1.0)
    if jobs == 1 or len(tasks) <= 1:
        results = map(_featurize_one, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        results = pool.map(_featurize_one, tasks, chunksize=max(1, min(32, len(tasks) // (jobs * 8))))
    try:
        for sha, n, computed in results:
            n_windows[sha] = n
            counts["computed" if computed else "cached"] += 1
            progress.update()
    finally:
        progress.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return n_windows, counts


def write_split_arrays(
    manifest: pd.DataFrame, n_windows: dict[str, int], params: FeaturizeParams, out_dir: str | os.PathLike
) -> dict:
    """Stream cached entries into out_dir/<split>.npy plus <split>_windows.csv (window -> recording).

    Arrays are written through a memory map, one recording at a time.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache(params.cache_dir, params)
    shape = feature_shape(params)
    summary = {}
    for split in ("train", "val", "test"):
        rows = manifest[manifest["split"] == split]
        counts = [n_windows[sha] for sha in rows["sha256"]]
        total = int(sum(counts))
        out = np.lib.format.open_memmap(out_dir / f"{split}.npy", mode="w+", dtype=np.float32, shape=(total, *shape))
        windows, offset = [], 0
        _, hop = window_samples(params)
        for row, n in zip(rows.itertuples(index=False), counts):
            array = cache.get(row.sha256)
            if array is None or len(array) != n:
                raise RuntimeError(f"feature cache entry for {row.path} vanished or changed during featurize")
            out[offset : offset + n] = array
            for i in range(n):
                windows.append(
                    (offset + i, row.recording_id, row.label, row.group, round(i * hop / params.sample_rate_hz, 4))
                )
            offset += n
        out.flush()
        del out
        pd.DataFrame(windows, columns=WINDOW_COLUMNS).to_csv(out_dir / f"{split}_windows.csv", index=False)
        summary[split] = {"recordings": len(rows), "windows": total}
    return summary


def featurize(manifest: pd.DataFrame, params: FeaturizeParams, out_dir: str | os.PathLike) -> dict:
    """The featurize step: fill the cache, then write per-split arrays and their metadata."""
    n_windows, counts = fill_cache(manifest, params)
    summary = write_split_arrays(manifest, n_windows, params, out_dir)
    classes = sorted(manifest["label"].unique())
    meta = {
        "classes": classes,
        "featurize": feature_key_params(params),
        "feature_shape": list(feature_shape(params)),
        "splits": summary,
    }
    with open(Path(out_dir) / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return {**counts, **summary}


def load_split(features_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """(windows array [n, n_mfcc, frames], window table) of one split written by featurize."""
    features_dir = Path(features_dir)
    x = np.load(features_dir / f"{split}.npy", mmap_mode="r")
    windows = pd.read_csv(
        features_dir / f"{split}_windows.csv", dtype={"recording_id": str, "label": str, "group": str}
    )
    return x, windows


def load_meta(features_dir: str | os.PathLike) -> dict:
    with open(Path(features_dir) / "meta.json", encoding="utf-8") as f:
        return json.load(f)
