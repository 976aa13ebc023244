"""Same code, params and data: two forced `dvc repro` runs on CPU give byte-identical metrics."""

import shutil

import pytest
import yaml

pytestmark = pytest.mark.e2e

# Outputs whose bytes must repeat; model files are left out (HDF5 stores creation details).
REPEATABLE = ("data/prepared", "data/features", "metrics/test_predictions.csv")
# Up to evaluate (metrics.json); crossval trains a model per fold and would triple the time.
FORCED = ("repro", "--force", "evaluate")
STAGES = ["prepare", "featurize", "train", "evaluate"]


def _lock_md5(project) -> dict[str, str]:
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_two_forced_runs_give_identical_metrics(project):
    assert project.stages_run(project.dvc(*FORCED).stdout) == STAGES
    first_metrics = (project.path / "metrics/metrics.json").read_bytes()
    first = _lock_md5(project)

    # Without the feature cache the second run recomputes every feature, not just the model.
    shutil.rmtree(project.path / ".heartsound-cache")
    assert project.stages_run(project.dvc(*FORCED).stdout) == STAGES
    assert (project.path / "metrics/metrics.json").read_bytes() == first_metrics
    second = _lock_md5(project)
    assert {k: second[k] for k in REPEATABLE} == {k: first[k] for k in REPEATABLE}
