"""The source probe: it must see a device that is in the features, and not one that is not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from test_crossval import save_split

from heartsound import probe


def features_with_device(tmp_path, offset: float, sources=("a", "b")) -> pd.DataFrame:
    """Two sources x two shared labels (30 recordings each, 2 windows each) plus a label only source a has;
    source b's coefficient 1 is shifted by `offset` (a device's EQ). Returns the manifest."""
    rng = np.random.default_rng(0)
    rows, manifest = [], []
    cells = [(s, label, 30) for s in sources for label in ("murmur", "normal")] + [("a", "artifact", 12)]
    for source, label, n in cells:
        for i in range(n):
            rid = f"{source}-{label}-{i}"
            manifest.append((rid, f"{rid}-patient", 5.0, source))
            rows += [(rid, label)] * 2
    windows = pd.DataFrame(rows, columns=["recording_id", "label"])
    x = rng.normal(size=(len(windows), 4, 20)).astype(np.float32)
    x[windows["recording_id"].str.startswith("b-").to_numpy(), 1] += offset
    save_split(tmp_path, "train", x, windows)
    for split in ("val", "test"):
        save_split(tmp_path, split, x[:0], windows.iloc[:0])
    return pd.DataFrame(manifest, columns=["recording_id", "group", "duration_s", "source"])


def test_probe_names_a_device_the_features_carry_and_not_one_they_do_not(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "none").mkdir()
    with_device = probe.run(features_with_device(tmp_path / "dev", offset=1.5), tmp_path / "dev")
    without = probe.run(features_with_device(tmp_path / "none", offset=0.0), tmp_path / "none")
    assert set(with_device["per_label"]) == {"murmur", "normal"}  # artifact: one source only, left out
    assert with_device["per_label"]["normal"]["sources"] == ["a", "b"]
    assert with_device["per_label"]["normal"]["recordings"] == 60
    assert with_device["mean_chance"] == 0.5
    assert with_device["mean"] > 0.9
    assert without["mean"] < 0.7


def test_probe_cli_fails_clearly_when_no_label_has_two_sources(tmp_path, capsys):
    features_with_device(tmp_path, offset=1.0, sources=("a",)).to_csv(tmp_path / "manifest.csv", index=False)
    assert probe.main([str(tmp_path / "manifest.csv"), str(tmp_path)]) == 1
    assert "no label has at least 10 recordings from each of two sources" in capsys.readouterr().err


def test_probe_cli_writes_json(tmp_path):
    manifest = features_with_device(tmp_path, offset=1.0)
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "probe.json"
    assert probe.main([str(tmp_path / "manifest.csv"), str(tmp_path), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["per_label"]["murmur"]["recordings"] == 60
