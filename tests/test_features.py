"""features.py: MFCC (against librosa) and its windows, the per-recording cache, per-split arrays."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import scipy.fft
import soundfile as sf

from heartsound import features
from heartsound.config import FeaturizeParams
from heartsound.manifest import sha256_of

SPLITS = ("train", "val", "test")


def heartbeat(duration_s: float, rate_hz: int, seed: int) -> np.ndarray:
    """A heart-sound-like test signal: decaying 40-120 Hz bursts (S1/S2) about once a second, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    period_s = rng.uniform(0.7, 1.1)
    phase_s = t % period_s
    s1 = np.exp(-phase_s / 0.03) * np.sin(2 * np.pi * rng.uniform(40, 70) * t)
    s2 = np.exp(-np.clip(phase_s - 0.3, 0, None) / 0.02) * (phase_s > 0.3) * np.sin(2 * np.pi * 100 * t)
    return (0.4 * s1 + 0.3 * s2 + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_recording(path: Path, duration_s: float, rate_hz: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, heartbeat(duration_s, rate_hz, seed), rate_hz, subtype="PCM_16")


@pytest.fixture
def params(tmp_path) -> FeaturizeParams:
    return FeaturizeParams(jobs=1, cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Eight short recordings, 4 kHz and 44.1 kHz, one shorter than a window."""
    root = tmp_path / "raw"
    for i in range(8):
        write_recording(
            root / f"rec{i}.wav", duration_s=[9.0, 3.0, 6.5, 12.0][i % 4], rate_hz=[4000, 44100][i % 2], seed=i
        )
    return root


def manifest_of(root: Path) -> pd.DataFrame:
    """A manifest like prepare's for every WAV under root (split by index, so every split has rows)."""
    paths = sorted(root.glob("*.wav"))
    return pd.DataFrame(
        {
            "recording_id": [p.stem for p in paths],
            "path": [str(p) for p in paths],
            "label": ["normal" if i % 2 else "murmur" for i in range(len(paths))],
            "group": [f"g{i}" for i in range(len(paths))],
            "split": [SPLITS[min(i % 4, 2)] for i in range(len(paths))],
            "sha256": [sha256_of(p) for p in paths],
        }
    )


def cache_files(params: FeaturizeParams) -> dict[Path, int]:
    """Every file in the cache with its modification time (ns)."""
    return {p: p.stat().st_mtime_ns for p in Path(params.cache_dir).rglob("*") if p.is_file()}


def assert_same_outputs(a: Path, b: Path) -> None:
    for split in SPLITS:
        xa, wa = features.load_split(a, split)
        xb, wb = features.load_split(b, split)
        assert xa.dtype == xb.dtype == np.float32
        assert np.array_equal(xa, xb), split
        pd.testing.assert_frame_equal(wa, wb)


# --- windows and MFCC ---


def test_windows_are_frame_slices_every_hop(params):
    samples = heartbeat(10.0, params.sample_rate_hz, seed=0)
    frames = features.recording_mfcc(samples, params)
    assert frames.shape == (1 + len(samples) // params.hop_length, params.n_mfcc) == (501, 40)
    windows = features.mfcc_windows(samples, params)
    # 1 s hop = 50 frames of 40 samples; windows start at 0..6 s, one at 7 s would run past the last frame
    assert windows.shape == (7, *features.feature_shape(params)) == (7, 40, 201)
    assert features.window_count(len(frames), params) == 7
    assert np.array_equal(windows[2], frames[100:301].T)


def test_window_hop_is_rounded_to_whole_frames(params):
    assert features.window_hop_frames(dataclasses.replace(params, window_hop_s=1.02)) == 51
    assert features.window_hop_frames(dataclasses.replace(params, hop_length=32)) == 62  # 62.5 frames
    assert features.window_hop_frames(dataclasses.replace(params, window_hop_s=0.001)) == 1


def test_short_recording_is_zero_padded_to_one_window(params):
    short = heartbeat(0.5, params.sample_rate_hz, seed=1)
    windows = features.mfcc_windows(short, params)
    padded = np.pad(short, (0, 4 * params.sample_rate_hz - len(short)))
    assert windows.shape == (1, 40, 201)
    assert np.array_equal(windows, features.mfcc_windows(padded, params))


def test_mfcc_shape_dtype_and_determinism(params):
    samples = heartbeat(9.0, params.sample_rate_hz, seed=1)
    mfcc = features.mfcc_windows(samples, params)
    assert mfcc.shape == (6, *features.feature_shape(params))
    assert mfcc.dtype == np.float32 and np.isfinite(mfcc).all() and mfcc.flags.c_contiguous
    assert np.array_equal(mfcc, features.mfcc_windows(samples.copy(), params))


def test_cepstral_normalisation_removes_a_device_filter_and_gain(params):
    """A stethoscope's EQ and gain are a fixed filter: cmn/cmvn features barely move, plain MFCCs do."""
    from scipy import signal

    samples = heartbeat(9.0, params.sample_rate_hz, seed=3)
    sos = signal.butter(2, 150, btype="lowpass", fs=params.sample_rate_hz, output="sos")
    device = (4.0 * signal.sosfilt(sos, samples) + 0.5 * samples).astype(np.float32)
    change = {}
    for how in ("none", "cmn", "cmvn"):
        p = dataclasses.replace(params, normalise=how)
        a, b = features.mfcc_windows(samples, p), features.mfcc_windows(device, p)
        change[how] = float(np.abs(a - b).mean() / np.abs(a).mean())
        if how != "none":
            frames = features.recording_mfcc(samples, p)[: 1 + len(samples) // p.hop_length]
            assert np.allclose(frames.mean(axis=0), 0, atol=1e-3)
            if how == "cmvn":
                assert np.allclose(frames.std(axis=0), 1, atol=1e-3)
    assert change["cmn"] < 0.5 * change["none"], change
    assert change["cmvn"] < 0.5 * change["none"], change


def test_normalisation_ignores_a_short_recordings_padding(params):
    p = dataclasses.replace(params, normalise="cmn")
    short = heartbeat(1.5, p.sample_rate_hz, seed=4)
    frames = features.recording_mfcc(short, p)
    signal_frames = 1 + len(short) // p.hop_length
    assert len(frames) > signal_frames  # padded to one window
    assert np.allclose(frames[:signal_frames].mean(axis=0), 0, atol=1e-3)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"n_mfcc": 20, "n_mels": 40, "n_fft": 512, "hop_length": 64, "fmin_hz": 0.0},
        {"sample_rate_hz": 4000},
        {"window_s": 3.0, "window_hop_s": 0.5, "hop_length": 50},
    ],
)
def test_mfcc_matches_librosa_on_the_whole_recording(params, overrides):
    params = dataclasses.replace(params, **overrides)
    samples = heartbeat(8.5, params.sample_rate_hz, seed=2)
    samples[: params.sample_rate_hz] = 0  # a silent second, so the top_db floor is exercised
    ours = features.recording_mfcc(samples, params)
    reference = librosa.feature.mfcc(
        y=samples,
        sr=params.sample_rate_hz,
        n_mfcc=params.n_mfcc,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
        fmin=params.fmin_hz,
        fmax=params.fmax_hz,
    )
    assert ours.shape == reference.T.shape
    # float32 rounding only: coefficients reach hundreds of dB-units, differences stay below 0.01.
    np.testing.assert_allclose(ours, reference.T, rtol=0, atol=1e-2)


def test_batches_of_frames_give_the_same_mfcc(params, monkeypatch):
    samples = heartbeat(20.0, params.sample_rate_hz, seed=3)
    whole = features.recording_mfcc(samples, params)
    monkeypatch.setattr(features, "FRAMES_PER_BATCH", 7)  # 1001 frames: a short last batch
    batched = features.recording_mfcc(samples, params)
    assert batched.shape == whole.shape == (1001, 40)
    np.testing.assert_allclose(batched, whole, rtol=0, atol=1e-3)


def test_mel_filterbank_and_dct_match_librosa_and_scipy():
    ours = features.mel_filterbank(22050, 2048, 128, 0.0, 11025.0)  # crosses Slaney's 1 kHz break
    np.testing.assert_allclose(ours, librosa.filters.mel(sr=22050, n_fft=2048, n_mels=128), rtol=1e-5, atol=1e-8)
    x = np.random.default_rng(0).standard_normal((3, 64))
    np.testing.assert_allclose(x @ features.dct_matrix(64, 40), scipy.fft.dct(x, norm="ortho")[:, :40], atol=1e-5)


# --- cache and incremental runs ---


def test_featurize_writes_split_arrays_and_window_table(params, dataset, tmp_path):
    manifest = manifest_of(dataset)
    summary = features.featurize(manifest, params, tmp_path / "out")
    assert summary["computed"] == 8 and summary["cached"] == 0
    for split in SPLITS:
        x, windows = features.load_split(tmp_path / "out", split)
        assert list(windows.columns) == features.WINDOW_COLUMNS
        assert x.shape == (len(windows), 40, 201) and list(windows["window"]) == list(range(len(x)))
        assert set(windows["recording_id"]) == set(manifest.loc[manifest["split"] == split, "recording_id"])
    x, windows = features.load_split(tmp_path / "out", "train")
    # rec0 (9 s, 451 frames) has windows at 0-5 s and they hold exactly its cached features.
    rec0 = windows[windows["recording_id"] == "rec0"]
    assert list(rec0["start_s"]) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(rec0["frame"] - rec0["frame"].iloc[0]) == [0, 50, 100, 150, 200, 250]
    expected = features.recording_features(dataset / "rec0.wav", params)
    assert np.array_equal(x[rec0["window"].to_numpy()], expected)
    meta = features.load_meta(tmp_path / "out")
    assert meta["classes"] == ["murmur", "normal"] and meta["feature_shape"] == [40, 201]


def test_one_changed_recording_recomputes_exactly_one_entry(params, dataset, tmp_path):
    features.featurize(manifest_of(dataset), params, tmp_path / "first")
    before = cache_files(params)
    write_recording(dataset / "rec3.wav", duration_s=7.0, rate_hz=44100, seed=99)
    summary = features.featurize(manifest_of(dataset), params, tmp_path / "second")
    after = cache_files(params)
    assert (summary["computed"], summary["cached"]) == (1, 7)
    new_or_rewritten = [p for p, mtime in after.items() if before.get(p) != mtime]
    assert len(new_or_rewritten) == 1
    # The incremental result equals a run from an empty cache.
    fresh = dataclasses.replace(params, cache_dir=str(tmp_path / "fresh-cache"))
    features.featurize(manifest_of(dataset), fresh, tmp_path / "fresh")
    assert_same_outputs(tmp_path / "second", tmp_path / "fresh")


def test_added_and_removed_recordings_recompute_only_the_new_one(params, dataset, tmp_path):
    features.featurize(manifest_of(dataset), params, tmp_path / "out")
    write_recording(dataset / "rec8.wav", duration_s=5.0, rate_hz=4000, seed=8)
    assert features.featurize(manifest_of(dataset), params, tmp_path / "out")["computed"] == 1
    (dataset / "rec0.wav").unlink()
    summary = features.featurize(manifest_of(dataset), params, tmp_path / "out")
    assert (summary["computed"], summary["cached"]) == (0, 8)
    assert "rec0" not in set(features.load_split(tmp_path / "out", "train")[1]["recording_id"])


def fresh_outputs(dataset: Path, params: FeaturizeParams, tmp_path: Path) -> Path:
    """Outputs of a run from an empty cache into an empty directory."""
    out = tmp_path / "fresh"
    shutil.rmtree(out, ignore_errors=True)
    features.featurize(manifest_of(dataset), dataclasses.replace(params, cache_dir=str(tmp_path / "fresh-cache")), out)
    return out


@pytest.mark.parametrize(
    "change",
    [
        lambda root: write_recording(root / "rec4.wav", 9.0, 4000, seed=40),  # same length: patched in place
        lambda root: write_recording(root / "rec4.wav", 13.0, 4000, seed=40),  # more windows: tail rewritten
        lambda root: write_recording(root / "rec00.wav", 6.0, 44100, seed=41),  # added near the start
        lambda root: (root / "rec4.wav").unlink(),
    ],
    ids=["changed", "longer", "added", "removed"],
)
def test_updated_outputs_equal_a_fresh_run(params, dataset, tmp_path, change):
    out = tmp_path / "out"
    features.featurize(manifest_of(dataset), params, out)
    inode = (out / "train.npy").stat().st_ino
    change(dataset)
    features.featurize(manifest_of(dataset), params, out)
    assert_same_outputs(out, fresh_outputs(dataset, params, tmp_path))
    assert (out / "train.npy").stat().st_ino == inode  # updated, not rewritten


def test_outputs_linked_into_dvc_cache_are_replaced_not_written_through(params, dataset, tmp_path):
    out = tmp_path / "out"
    features.featurize(manifest_of(dataset), params, out)
    dvc_cache_copy = tmp_path / "dvc-cache-object"
    os.link(out / "train.npy", dvc_cache_copy)  # what DVC's hardlink cache type does
    before = dvc_cache_copy.read_bytes()
    write_recording(dataset / "rec4.wav", 9.0, 4000, seed=40)
    features.featurize(manifest_of(dataset), params, out)
    assert dvc_cache_copy.read_bytes() == before
    assert_same_outputs(out, fresh_outputs(dataset, params, tmp_path))


def test_damaged_outputs_or_missing_layout_are_rewritten(params, dataset, tmp_path):
    out = tmp_path / "out"
    features.featurize(manifest_of(dataset), params, out)
    with open(out / "val.npy", "r+b") as f:  # an array cut short, e.g. by a killed run
        f.truncate(1000)
    (out / "test.npy").write_bytes(b"not an array")
    write_recording(dataset / "rec4.wav", 9.0, 4000, seed=40)
    features.featurize(manifest_of(dataset), params, out)
    assert_same_outputs(out, fresh_outputs(dataset, params, tmp_path))
    (out / features.LAYOUT_FILE).unlink()  # an interrupted run removes it first and writes it last
    with open(out / "train.npy", "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 100)
    features.featurize(manifest_of(dataset), params, out)
    assert_same_outputs(out, fresh_outputs(dataset, params, tmp_path))


def test_feature_param_change_recomputes_all_and_other_params_none(params, dataset, tmp_path):
    manifest = manifest_of(dataset)
    features.featurize(manifest, params, tmp_path / "out")
    assert features.featurize(manifest, dataclasses.replace(params, fmin_hz=25.0), tmp_path / "out")["computed"] == 8
    # jobs only changes how features are computed, not what they are.
    assert features.featurize(manifest, dataclasses.replace(params, jobs=2), tmp_path / "out")["computed"] == 0


def test_parallel_and_sequential_arrays_are_bit_identical(params, dataset, tmp_path):
    manifest = manifest_of(dataset)
    features.featurize(manifest, params, tmp_path / "sequential")
    parallel = dataclasses.replace(params, jobs=2, cache_dir=str(tmp_path / "parallel-cache"))
    assert features.featurize(manifest, parallel, tmp_path / "parallel")["computed"] == 8
    assert_same_outputs(tmp_path / "sequential", tmp_path / "parallel")


def test_interrupted_or_corrupt_entries_are_never_used(params, dataset, tmp_path):
    manifest = manifest_of(dataset)
    features.featurize(manifest, params, tmp_path / "clean")
    cache = features.FeatureCache(params.cache_dir, params)
    truncated = cache.path_for(manifest["sha256"][0])
    truncated.write_bytes(truncated.read_bytes()[:-100])
    garbled = cache.path_for(manifest["sha256"][1])
    garbled.write_bytes(b"\x93NUMPY garbage" + garbled.read_bytes()[14:])
    wrong_shape = cache.path_for(manifest["sha256"][2])
    np.save(wrong_shape, np.zeros((300, 13), np.float32))
    # A temp file left by a killed writer sits next to its entry and is never read.
    leftover = cache.path_for(manifest["sha256"][3])
    leftover.with_name(leftover.stem + "abc123.tmp").write_bytes(b"half an array")
    killed_writer = truncated.with_name(truncated.stem + "xyz789.tmp")
    killed_writer.write_bytes(b"half an array")
    summary = features.featurize(manifest, params, tmp_path / "repaired")
    assert (summary["computed"], summary["cached"]) == (3, 5)
    assert_same_outputs(tmp_path / "clean", tmp_path / "repaired")
    assert not killed_writer.exists()  # removed once its entry was stored


def test_interrupted_write_leaves_no_entry(params, monkeypatch):
    cache = features.FeatureCache(params.cache_dir, params)

    def killed(file, array, allow_pickle):
        file.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.put("ab" * 32, np.zeros((201, 40), np.float32))
    assert cache.frames_in("ab" * 32) is None and cache.get("ab" * 32) is None
    assert cache_files(params) == {}


def test_duplicate_content_is_computed_once(params, dataset, tmp_path):
    (dataset / "copy.wav").write_bytes((dataset / "rec1.wav").read_bytes())
    summary = features.featurize(manifest_of(dataset), params, tmp_path / "out")
    assert summary["computed"] == 8
    assert sum(1 for p in cache_files(params) if p.suffix == ".npy") == 8


def test_feature_key_ignores_how_not_what(params):
    key = features.feature_key_params(params)
    assert "jobs" not in key and "cache_dir" not in key and key["sample_rate_hz"] == 2000
    assert os.fspath(features.FeatureCache("c", params).path_for("ff" * 32)).endswith(".npy")


def test_window_table_quotes_recording_fields(params, dataset, tmp_path):
    manifest = manifest_of(dataset)
    manifest.loc[0, ["recording_id", "group"]] = ['odd, "quoted" id', "group,1"]
    features.featurize(manifest, params, tmp_path / "out")
    _, windows = features.load_split(tmp_path / "out", manifest.loc[0, "split"])
    assert set(windows.loc[windows["group"] == "group,1", "recording_id"]) == {'odd, "quoted" id'}
