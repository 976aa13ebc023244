"""prepare (and featurize after it) on the bad-input corpus: every file used or rejected for its reason."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from badaudio import write_corpus

from heartsound import audio, features, manifest
from heartsound.config import DataParams, FeaturizeParams, PrepareParams
from heartsound.datasets import Candidate

LONG_DURATION_S = 20 * 60.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    items = write_corpus(root, long_duration_s=LONG_DURATION_S)
    used, rejected = manifest.prepare(DataParams(dataset="pascal", root=str(root)), PrepareParams())
    return root, items, used, rejected


def test_every_item_is_used_or_rejected_for_its_reason(prepared):
    root, items, used, rejected = prepared
    assert len(used) + len(rejected) == len(items)
    used_paths = set(used["path"])
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    for item in items:
        path = str(root / item.path)
        if item.used:
            assert path in used_paths and path not in reasons, item.what
        else:
            assert path not in used_paths, item.what
            assert item.reason in reasons[path], (item.what, reasons[path])
    audio_reasons = rejected.loc[~rejected["reason"].str.startswith("conflicting labels"), "reason"]
    assert not audio_reasons.str.contains(str(root), regex=False).any()


def test_identical_audio_under_two_labels_is_rejected_naming_the_other_copy(prepared):
    root, _, _, rejected = prepared
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert reasons[str(root / "set_a/normal__047_conflict.wav")] == (
        f"conflicting labels: identical audio in {root / 'set_a/murmur__048_conflict.wav'} (murmur)"
    )


def test_manifest_describes_what_was_decoded(prepared):
    root, items, used, _ = prepared
    row = used.set_index("path").loc
    stereo = row[str(root / "set_a/murmur__011_stereo.wav")]
    assert (stereo["channels"], stereo["sample_rate_hz"], stereo["label"]) == (2, 4000, "murmur")
    long_file = row[str(root / "set_a/normal__043_long.wav")]
    assert (long_file["duration_s"], long_file["sample_rate_hz"]) == (LONG_DURATION_S, 44100)
    assert row[str(root / "set_a/murmur__045_café_Ünïcødé_心音.wav")]["recording_id"] == (
        "set_a/murmur__045_café_Ünïcødé_心音"
    )
    assert row[str(root / "set_a/normal__044_ with  spaces .wav")]["label"] == "normal"
    assert set(used["split"]) <= {"train", "val", "test"}
    assert list(used.columns) == manifest.MANIFEST_COLUMNS


def test_duplicates_are_flagged_and_share_a_split(prepared):
    root, items, used, _ = prepared
    by_path = used.set_index("path")
    for item in (i for i in items if i.duplicate_of):
        copy, original = by_path.loc[str(root / item.path)], by_path.loc[str(root / item.duplicate_of)]
        assert copy["duplicate_of"] == str(root / item.duplicate_of)
        assert original["duplicate_of"] == ""
        assert copy["sha256"] == original["sha256"]
        assert copy["group"] == original["group"]
    # The copy's patient (302) joins the original's (301): its other recording follows.
    patients = used[used["path"].str.contains("set_b/murmur__30")]
    assert len(patients) == 3
    assert patients["group"].nunique() == 1 and patients["split"].nunique() == 1
    assert (used["duplicate_of"] != "").sum() == sum(1 for i in items if i.duplicate_of)


def test_no_group_and_no_audio_in_two_splits(prepared):
    _, _, used, _ = prepared
    assert used.groupby("group")["split"].nunique().max() == 1
    assert used.groupby("sha256")["split"].nunique().max() == 1


def test_prepare_is_deterministic(prepared):
    root, _, used, rejected = prepared
    again_used, again_rejected = manifest.prepare(DataParams(dataset="pascal", root=str(root)), PrepareParams())
    pd.testing.assert_frame_equal(used, again_used)
    pd.testing.assert_frame_equal(rejected, again_rejected)


def test_max_per_class_decodes_only_a_seeded_sample(prepared, monkeypatch):
    root, items, _, _ = prepared
    data = DataParams(dataset="pascal", root=str(root))
    scanned = []
    real_scan = manifest.audio.scan
    monkeypatch.setattr(manifest.audio, "scan", lambda path: scanned.append(path) or real_scan(path))
    used, rejected = manifest.prepare(data, PrepareParams(max_per_class=2))
    assert used["label"].value_counts().to_dict() == {"murmur": 2, "normal": 2}
    assert len(used) + len(rejected) == len(items)
    not_examined = rejected[rejected["reason"] == "over prepare.max_per_class (not examined)"]
    assert set(scanned).isdisjoint(not_examined["path"])
    assert len(scanned) < len(items) // 2
    again, _ = manifest.prepare(data, PrepareParams(max_per_class=2))
    pd.testing.assert_frame_equal(used, again)
    other_seed, _ = manifest.prepare(data, PrepareParams(max_per_class=2, seed=7))
    assert set(other_seed["path"]) != set(used["path"])


def test_featurize_uses_every_prepared_recording(prepared, tmp_path):
    """Features of every used file, the 20-min one included (one window per window_hop_s)."""
    _, _, used, _ = prepared
    params = FeaturizeParams(jobs=1, cache_dir=str(tmp_path / "cache"))
    summary = features.featurize(used, params, tmp_path / "features")
    assert summary["computed"] == used["sha256"].nunique()
    assert sum(summary[s]["recordings"] for s in ("train", "val", "test")) == len(used)
    windows = pd.concat(
        features.load_split(tmp_path / "features", s)[1] for s in ("train", "val", "test") if summary[s]["recordings"]
    )
    assert set(windows["recording_id"]) == set(used["recording_id"])
    per_recording = windows.groupby("recording_id").size()
    assert per_recording["set_a/normal__043_long"] == 1 + (LONG_DURATION_S - params.window_s) / params.window_hop_s
    assert per_recording.drop("set_a/normal__043_long").eq(1).all()  # 3-s files: one zero-padded window
    for split in ("train", "val", "test"):
        x, _ = features.load_split(tmp_path / "features", split)
        assert np.isfinite(x).all()
    assert json.loads((tmp_path / "features/meta.json").read_text())["classes"] == ["murmur", "normal"]


def test_featurize_gives_windows_or_an_audio_error_for_every_item(prepared):
    """The worker featurize runs per file, on every corpus file, prepare's rejects included."""
    root, items, _, _ = prepared
    params = FeaturizeParams(max_duration_s=60.0)  # the 20-min file's whole length is covered above
    for item in items:
        if item.decodes:
            windows = features.recording_features(root / item.path, params)
            assert windows.shape[1:] == features.feature_shape(params) and np.isfinite(windows).all(), item.what
        else:
            with pytest.raises(audio.AudioError, match=item.reason):
                features.recording_features(root / item.path, params)


# How much a fresh interpreter's peak RSS grows while featurizing one file, as featurize's worker does.
_FEATURIZE_PEAK_RSS = """
import json, sys
from heartsound import features
from heartsound.config import FeaturizeParams
def peak_mb():  # VmHWM: this process's own high-water mark (ru_maxrss would include the parent's, as of fork)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
before = peak_mb()
windows = features.recording_features(sys.argv[1], FeaturizeParams())
grown_mb = peak_mb() - before
print(json.dumps({"windows": len(windows), "grown_mb": grown_mb}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from Linux /proc")
def test_featurize_memory_on_the_long_recording_is_modest(prepared):
    root, items, _, _ = prepared
    long_item = next(i for i in items if i.what == "20-min recording")
    out = subprocess.run(
        [sys.executable, "-c", _FEATURIZE_PEAK_RSS, str(root / long_item.path)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(out.stdout)
    assert run["windows"] == 1197
    # The 1197 windows' MFCC are 38 MB, the recording's frames 10 MB and its samples at 2 kHz 10 MB;
    # 100 MB leaves room for one batch of spectra.
    assert run["grown_mb"] < 100, run


def _candidates(*paths):
    return [Candidate(path=p, label="normal", group=p, source="s") for p in paths]


def test_check_accounting_accepts_each_input_once():
    used = pd.DataFrame({"path": ["a.wav", "b.wav"]})
    rejected = pd.DataFrame({"path": ["c.wav"], "reason": ["silent"]})
    manifest.check_accounting(_candidates("a.wav", "b.wav", "c.wav"), used, rejected)


@pytest.mark.parametrize(
    ("used", "rejected", "message"),
    [
        (["a.wav"], ["b.wav"], r"missing=\['c.wav'\]"),  # lost
        (["a.wav", "b.wav"], ["b.wav", "c.wav"], r"twice-or-unknown=\['b.wav'\]"),  # used and rejected
        (["a.wav", "b.wav", "c.wav", "d.wav"], [], r"twice-or-unknown=\['d.wav'\]"),  # never an input
    ],
)
def test_check_accounting_names_lost_and_doubled_inputs(used, rejected, message):
    with pytest.raises(RuntimeError, match=message):
        manifest.check_accounting(
            _candidates("a.wav", "b.wav", "c.wav"),
            pd.DataFrame({"path": used}),
            pd.DataFrame({"path": rejected, "reason": "x"}),
        )


def test_prepare_itself_checks_the_accounting(prepared, monkeypatch):
    """A step that silently drops a recording makes prepare fail, not write a short manifest."""
    root, _, _, _ = prepared
    real_merge = manifest._merge_duplicate_groups
    monkeypatch.setattr(manifest, "_merge_duplicate_groups", lambda rows: real_merge(rows).iloc[1:])
    with pytest.raises(RuntimeError, match="lost track of inputs"):
        manifest.prepare(DataParams(dataset="pascal", root=str(root)), PrepareParams())


def test_prepare_records_an_unexpected_decoder_failure(tmp_path, monkeypatch):
    """A decoder bug on one file becomes its rejection reason instead of ending the run."""
    write_corpus(tmp_path, long_duration_s=5.0)
    real_scan = manifest.audio.scan

    def flaky_scan(path):
        if "rate_8000" in str(path):
            raise ValueError("decoder bug")
        return real_scan(path)

    monkeypatch.setattr(manifest.audio, "scan", flaky_scan)
    used, rejected = manifest.prepare(DataParams(dataset="pascal", root=str(tmp_path)), PrepareParams())
    reasons = dict(zip(rejected["path"], rejected["reason"]))
    assert (
        reasons[str(tmp_path / "set_a/murmur__023_rate_8000.wav")] == "unexpected decode error: ValueError: decoder bug"
    )
    assert len(used) + len(rejected) == len(list(tmp_path.rglob("*.wav")))


def test_prepare_with_nothing_usable_gives_an_empty_manifest(tmp_path):
    (tmp_path / "set_a").mkdir()
    (tmp_path / "set_a/normal__1.wav").write_bytes(b"")
    used, rejected = manifest.prepare(DataParams(dataset="pascal", root=str(tmp_path)), PrepareParams())
    assert len(used) == 0 and list(used.columns) == manifest.MANIFEST_COLUMNS
    assert rejected.to_dict("records") == [
        {"path": str(tmp_path / "set_a/normal__1.wav"), "reason": "empty file (0 bytes)"}
    ]
