"""The whole pipeline with real `dvc repro` on a small PASCAL subset."""

import json

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.e2e

CROSSVAL_OUTPUTS = ("metrics/cv.json", "metrics/cv_predictions.csv")


def test_repro_builds_valid_outputs(built_project):
    p = built_project.path
    metrics = json.loads((p / "metrics/metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert 0.0 <= metrics[key] <= 1.0
    manifest = pd.read_csv(p / "data/prepared/manifest.csv")
    rejections = pd.read_csv(p / "data/prepared/rejections.csv")
    assert metrics["n_recordings"] == (manifest["split"] == "test").sum()
    assert len(manifest) + len(rejections) == 832
    assert manifest.groupby("group")["split"].nunique().max() == 1
    assert (p / "plots/confusion_matrix.png").stat().st_size > 1000
    assert (p / "metrics/train/plots/metrics/train/loss.tsv").exists()
    assert (p / "metrics/train/plots/metrics/eval/loss.tsv").exists()
    meta = json.loads((p / "models/model.json").read_text())
    assert meta["classes"] == sorted(manifest["label"].unique())

    # The saved HDF5 model loads and predicts one probability row per window.
    check = (
        "import numpy as np, keras; from heartsound.features import load_split;"
        "m = keras.models.load_model('models/model.h5', compile=False);"
        "x = load_split('data/features', 'test')[0][..., None];"
        "p = m.predict(x, verbose=0);"
        "assert p.shape == (len(x), %d) and np.allclose(p.sum(1), 1, atol=1e-4); print('ok')"
    ) % len(meta["classes"])
    assert built_project.run("python", "-c", check).stdout.strip().endswith("ok")


def test_second_repro_runs_nothing(built_project):
    out = built_project.dvc("repro").stdout
    assert built_project.stages_run(out) == []
    assert "up to date" in out


def test_cycle_weights_rescore_crossval_and_only_crossval_reruns_for_a_new_list(built_project):
    """cv.json's cycle_weights follow crossval.cycle_weights: the entry at train.cycle_weight repeats the headline
    figures, and a new list reruns crossval alone, whose same trainings give the same numbers."""
    p = built_project.path
    params = yaml.safe_load(built_project.params_path.read_text())
    cv = json.loads((p / "metrics/cv.json").read_text())
    assert list(cv["cycle_weights"]) == [f"{w:g}" for w in params["crossval"]["cycle_weights"]]
    current = cv["cycle_weights"][f"{params['train']['cycle_weight']:g}"]
    for figure in ("macro_f1", "balanced_accuracy", "accuracy"):
        assert current[figure]["mean"] == cv[figure]["mean"]
    kept = {name: (p / name).read_bytes() for name in ("params.yaml", "dvc.lock", *CROSSVAL_OUTPUTS)}
    try:
        built_project.set_params({"crossval": {"cycle_weights": [0.0, 0.9]}})
        assert built_project.stages_run(built_project.dvc("repro").stdout) == ["crossval"]
        rescored = json.loads((p / "metrics/cv.json").read_text())
        assert list(rescored["cycle_weights"]) == ["0", "0.9"]
        assert rescored["cycle_weights"]["0"] == cv["cycle_weights"]["0"]
        assert rescored["macro_f1"] == cv["macro_f1"]
    finally:
        for name, content in kept.items():
            (p / name).write_bytes(content)
    assert built_project.stages_run(built_project.dvc("repro").stdout) == []


def test_train_param_change_reruns_only_the_stages_that_read_it(built_project):
    built_project.set_params({"train": {"epochs": 2}})
    out = built_project.dvc("repro").stdout
    # prepare and featurize don't read train params; crossval trains models too.
    assert sorted(built_project.stages_run(out)) == ["crossval", "evaluate", "train"]
    built_project.git("checkout", "params.yaml")
    built_project.dvc("checkout", "-q")


def test_metrics_diff_between_commits(built_project):
    built_project.set_params({"train": {"learning_rate": 0.01}})
    built_project.dvc("repro")
    diff = built_project.dvc("metrics", "diff", "HEAD").stdout
    assert "metrics/metrics.json" in diff
    params_diff = built_project.dvc("params", "diff", "HEAD").stdout
    assert "train.learning_rate" in params_diff
    built_project.git("checkout", "params.yaml", "dvc.lock")
    built_project.dvc("checkout", "-q")


@pytest.mark.parametrize(
    ("module", "stages"),
    [
        # load_split lives here: every stage that reads the feature arrays reruns, not featurize alone; segment
        # computes its cycle features in features' worker pool.
        ("heartsound/features.py", ["crossval", "evaluate", "featurize", "pretrain", "segment", "train"]),
        # The model directory layout and to_input: every stage that trains or loads a model.
        ("heartsound/model_dir.py", ["crossval", "evaluate", "pretrain", "train"]),
        ("heartsound/splits.py", ["crossval", "prepare", "pretrain"]),
        # The segmenter's fitted parameters, a data file its module reads: segment alone (its table feeds the rest).
        ("heartsound/segmentation_model.json", ["segment"]),
        # Python runs the package's __init__ before any of its modules.
        ("heartsound/__init__.py", ["crossval", "evaluate", "featurize", "prepare", "pretrain", "segment", "train"]),
    ],
)
def test_editing_a_module_marks_the_stages_that_import_it(built_project, module, stages):
    path = built_project.path / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        status = json.loads(built_project.dvc("status", "--json").stdout)
    finally:
        path.write_text(original)
    # Stages whose changed deps name the module (other tests of this module may leave uncached outputs changed).
    changed = sorted(
        stage
        for stage, entries in status.items()
        if any(module in entry.get("changed deps", {}) for entry in entries if isinstance(entry, dict))
    )
    assert changed == stages
