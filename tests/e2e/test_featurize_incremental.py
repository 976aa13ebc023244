"""Incremental featurize under real `dvc repro`: one changed recording recomputes one cache entry, changed feature
code recomputes them all."""

import ast

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

pytestmark = pytest.mark.e2e


def featurize_summary(output: str) -> dict:
    """The summary dict the featurize stage prints (the line starting with {'computed')."""
    lines = [line for line in output.splitlines() if line.startswith("{'computed'")]
    assert len(lines) == 1, output
    return ast.literal_eval(lines[0])


def test_one_changed_recording_is_the_only_one_recomputed(project):
    first = project.dvc("repro", "featurize").stdout
    manifest = pd.read_csv(project.path / "data/prepared/manifest.csv")
    assert featurize_summary(first)["computed"] == manifest["sha256"].nunique()
    project.commit("featurized")

    # New audio for one used recording: a new file (the old one may be linked to DVC's cache).
    path = project.path / manifest["path"].iloc[len(manifest) // 2]
    info = sf.info(path)
    t = np.arange(info.frames) / info.samplerate
    path.unlink()
    sf.write(path, 0.5 * np.sin(2 * np.pi * 50 * t) * np.exp(-(t % 0.9) / 0.05), info.samplerate)

    second = project.dvc("repro", "featurize").stdout
    assert project.stages_run(second) == ["prepare", "featurize"]
    summary = featurize_summary(second)
    assert (summary["computed"], summary["cached"]) == (1, manifest["sha256"].nunique() - 1)
    # The updated outputs are what a run from scratch would write, and DVC sees them as up to date.
    project.commit("one recording changed")
    assert project.stages_run(project.dvc("repro", "featurize").stdout) == []
    kept = {split: np.load(project.path / f"data/features/{split}.npy") for split in ("train", "val", "test")}
    project.run("rm", "-rf", ".heartsound-cache", "data/features")
    assert featurize_summary(project.dvc("repro", "-f", "-s", "featurize").stdout)["cached"] == 0
    for split, array in kept.items():
        assert np.array_equal(np.load(project.path / f"data/features/{split}.npy"), array), split


def test_changed_feature_code_recomputes_every_recording(project):
    first = project.dvc("repro", "featurize").stdout
    n_recordings = featurize_summary(first)["computed"]
    project.commit("featurized")
    before = np.load(project.path / "data/features/train.npy")

    # A constant of the feature code, with no version number bumped anywhere.
    source = project.path / "heartsound/features.py"
    source.write_text(source.read_text().replace("TOP_DB = 80.0", "TOP_DB = 40.0"))
    assert "featurize" in project.dvc("status", "featurize").stdout
    second = project.dvc("repro", "featurize").stdout
    assert (featurize_summary(second)["computed"], featurize_summary(second)["cached"]) == (n_recordings, 0)
    after = np.load(project.path / "data/features/train.npy")
    assert after.shape == before.shape and not np.array_equal(after, before)
    # A floor 40 dB below the peak instead of 80: the quietest log-mel bands are clipped higher.
    assert after[:, 0].min() > before[:, 0].min()
