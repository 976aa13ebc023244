"""Each sample dataset through the whole pipeline with real `dvc repro`, switching data.dataset in one project."""

import json
import re
import shutil

import pandas as pd
import pytest
from conftest import REPO_ROOT, make_project
from missing import skip_or_fail
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.e2e

SAMPLES = REPO_ROOT.parent / "shared" / "samples"
SAMPLE_SETS = ("physionet2016", "yaseen2018", "circor2022")
# What switching data.* reruns up to evaluate. pretrain is left out: it reads its own data set (here the PhysioNet
# sample set, as pretrain.root says) and runs on the first repro only.
ALL_STAGES = ["evaluate", "featurize", "prepare", "segment", "train"]

# A few recordings per class: 0.4/0.3/0.3 keeps one group per class in every split (at the default
# 0.15, splits.py asks StratifiedGroupKFold for 7 folds, more than any sample class has recordings).
TINY_PARAMS = {
    "prepare": {"max_per_class": None, "train_fraction": 0.4, "val_fraction": 0.3, "test_fraction": 0.3},
    "featurize": {"jobs": 1, "cache_dir": ".heartsound-cache/features"},
    # The PhysioNet sample set is both a data set under test and pretrain's: pre-trained on it, a model would have
    # heard its test recordings (params validation refuses that).
    "train": {"epochs": 2, "patience": 2, "init": "none"},
}


@pytest.fixture(scope="module")
def samples_project(tmp_path_factory):
    """A project with each sample set `dvc add`-ed under data/raw/<name>, nothing run yet."""
    if not SAMPLES.is_dir():
        skip_or_fail(f"sample datasets not found at {SAMPLES}")
    project = make_project(tmp_path_factory.mktemp("datasets") / "project", params=TINY_PARAMS, pull=False)
    for name in SAMPLE_SETS:
        shutil.copytree(SAMPLES / name, project.path / "data" / "raw" / name)
        project.dvc("add", "-q", f"data/raw/{name}")
    project.commit("sample datasets")
    return project


def repro_on(project, dataset: str, root: str, seed: int = 42):
    """Point data.* at one dataset and `dvc repro evaluate`.

    Returns (stages run, manifest, rejections, metrics, model metadata).
    """
    project.set_params({"data": {"dataset": dataset, "root": f"data/raw/{root}"}, "prepare": {"seed": seed}})
    # The main line up to evaluate; crossval's k folds need more groups per class than the samples have.
    stages = project.stages_run(project.dvc("repro", "evaluate").stdout)
    p = project.path
    return (
        sorted(set(stages) - {"pretrain"}),
        pd.read_csv(p / "data/prepared/manifest.csv", dtype={"group": str}),
        pd.read_csv(p / "data/prepared/rejections.csv"),
        json.loads((p / "metrics/metrics.json").read_text()),
        json.loads((p / "models/model.json").read_text()),
    )


def check_common(manifest, rejections, metrics, meta, dataset: str, labels: set, n_recordings: int) -> None:
    assert len(manifest) == n_recordings and rejections.empty
    assert set(manifest["label"]) == labels and meta["classes"] == sorted(labels)
    assert meta["dataset"] == dataset
    assert manifest.groupby("group")["split"].nunique().max() == 1
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert metrics["n_recordings"] == (manifest["split"] == "test").sum()
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_physionet2016_end_to_end(samples_project):
    stages, manifest, rejections, metrics, meta = repro_on(samples_project, "physionet2016", "physionet2016")
    assert stages == ALL_STAGES
    check_common(manifest, rejections, metrics, meta, "physionet2016", {"abnormal", "normal"}, 10)
    test = manifest[manifest["split"] == "test"]
    screening = metrics["screening"]
    assert screening["n_recordings"] == len(test)
    assert screening["macc"] == pytest.approx((screening["sensitivity"] + screening["specificity"]) / 2)
    # The ranking of the test recordings' written probabilities.
    predictions = pd.read_csv(samples_project.path / "metrics/test_predictions.csv")
    assert screening["roc_auc"] == pytest.approx(
        roc_auc_score(predictions["label"] == "abnormal", predictions["p_abnormal"])
    )


def test_circor2022_end_to_end(samples_project):
    # Seed 2 puts patient 9979 (murmur at every location) in test and all three classes in train.
    stages, manifest, rejections, metrics, meta = repro_on(samples_project, "circor2022", "circor2022", seed=2)
    assert stages == ALL_STAGES
    check_common(manifest, rejections, metrics, meta, "circor2022", {"Present", "Absent", "Unknown"}, 16)
    assert manifest.groupby("group").size().to_dict() == {"13918": 4, "2530": 4, "9979": 4, "9983": 4}
    murmur = metrics["murmur"]
    assert murmur["n_patients"] == manifest.loc[manifest["split"] == "test", "group"].nunique() == 1
    # One Present patient: the weighted accuracy is 1 if predicted Present, else 0.
    assert murmur["weighted_accuracy"] in (0.0, 1.0) and murmur["weighted_accuracy"] == murmur["accuracy"]


def test_switching_data_dataset_alone_reruns_prepare_and_everything_after(samples_project):
    stages, manifest, rejections, metrics, meta = repro_on(samples_project, "yaseen2018", "yaseen2018")
    assert stages == ALL_STAGES
    check_common(manifest, rejections, metrics, meta, "yaseen2018", {"N", "AS", "MR", "MS", "MVP"}, 15)
    assert "screening" not in metrics and "murmur" not in metrics
    samples_project.commit("yaseen2018 run")

    # Same root, another reader: only the data.dataset param changes.
    samples_project.set_params({"data": {"dataset": "folder"}})
    # prepare depends on the whole data section; featurize on, train and evaluate follow its outputs.
    status = samples_project.dvc("status", "prepare").stdout
    assert re.search(r"params\.yaml:\s+modified:\s+data\b", status), status
    stages, manifest, rejections, metrics, meta = repro_on(samples_project, "folder", "yaseen2018")
    assert stages == ALL_STAGES
    check_common(manifest, rejections, metrics, meta, "folder", {"N_New", "AS_New", "MR_New", "MS_New", "MVP_New"}, 15)
