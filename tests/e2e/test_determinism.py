"""Same code, params and data: forced `dvc repro` runs on CPU give byte-identical metrics, whatever the machine's
core count or the environment's oneDNN and thread settings (heartsound.model pins what TensorFlow would pick)."""

import shutil

import pytest
import yaml

pytestmark = pytest.mark.e2e

# Outputs whose bytes must repeat; model files are left out (HDF5 stores creation details).
REPEATABLE = ("data/prepared", "data/features", "data/cycles", "metrics/test_predictions.csv")
# Up to evaluate (metrics.json); crossval trains a model per fold and would triple the time.
FORCED = ("repro", "--force", "evaluate")
STAGES = ["evaluate", "featurize", "prepare", "pretrain", "segment", "train"]


def _lock_md5(project) -> dict[str, str]:
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_two_forced_runs_give_identical_metrics(project):
    assert sorted(project.stages_run(project.dvc(*FORCED).stdout)) == STAGES
    first_metrics = (project.path / "metrics/metrics.json").read_bytes()
    first = _lock_md5(project)

    # Without the feature cache the second run recomputes every feature, not just the model.
    shutil.rmtree(project.path / ".heartsound-cache")
    assert sorted(project.stages_run(project.dvc(*FORCED).stdout)) == STAGES
    assert (project.path / "metrics/metrics.json").read_bytes() == first_metrics
    second = _lock_md5(project)
    assert {k: second[k] for k in REPEATABLE} == {k: first[k] for k in REPEATABLE}


def test_cores_and_cpu_environment_do_not_change_the_metrics(project):
    project.dvc(*FORCED)
    reference = _lock_md5(project)
    metrics = (project.path / "metrics/metrics.json").read_bytes()

    # Another machine, as far as one can be made here: one core visible to the process, and an environment
    # asking TensorFlow for other kernels (SSE4.1: an older CPU), no oneDNN ops and one thread.
    project.env = {
        **project.env,
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "OMP_NUM_THREADS": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
    }
    assert sorted(project.stages_run(project.run("taskset", "-c", "0", *["dvc", *FORCED]).stdout)) == STAGES
    assert (project.path / "metrics/metrics.json").read_bytes() == metrics
    other = _lock_md5(project)
    assert {k: other[k] for k in REPEATABLE} == {k: reference[k] for k in REPEATABLE}
