"""SIGKILL `dvc repro` while featurize runs, then rerun: the result equals a clean run's, nothing partial is kept."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytestmark = pytest.mark.e2e

CACHE_DIR = ".heartsound-cache/features"
POLL_S = 0.005


def _outs(project) -> dict[str, str]:
    """{out path: md5} of every stage output recorded in dvc.lock."""
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def _kill_when(project, args: list[str], started) -> subprocess.CompletedProcess:
    """Run dvc with args in its own process group; SIGKILL the whole group once started() is true."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=project.path,
        env=project.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # dvc, the stage script and its workers all get the SIGKILL
    )
    try:
        while not started():
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace")
                pytest.fail(f"dvc {' '.join(args)} ended (exit {process.returncode}) before the kill:\n{output}")
            time.sleep(POLL_S)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return process


def test_sigkill_during_featurize_then_rerun_completes_like_a_clean_run(project):
    # 4x the windows per recording: featurize lasts long enough for the kill to land inside it.
    project.set_params({"featurize": {"window_hop_s": 0.5}})
    project.commit("denser windows")
    cache = project.path / CACHE_DIR
    lock_path = project.path / "dvc.lock"
    committed = yaml.safe_load(lock_path.read_text())["stages"]["featurize"]  # the full-data run's
    # Killed as soon as featurize has stored its first feature entry.
    _kill_when(project, ["repro", "featurize"], lambda: any(cache.rglob("*.npy")))
    n_recordings = len((project.path / "data/prepared/manifest.csv").read_text().splitlines()) - 1
    entries = sorted(cache.rglob("*.npy"))
    assert 0 < len(entries) < n_recordings, "the kill must land while featurize fills its cache"
    assert not (project.path / "data/features/meta.json").exists()
    # Nothing of the killed featurize reached dvc.lock; the subset's prepare did.
    assert yaml.safe_load(lock_path.read_text())["stages"]["featurize"] == committed
    assert "featurize" in project.dvc("status", "featurize").stdout

    # A half-written entry under a real name (as a non-atomic writer would leave) must not be used.
    half = entries[0]
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])

    out = project.dvc("repro", "featurize").stdout
    assert project.stages_run(out) == ["featurize"]
    assert "up to date" in project.dvc("status", "featurize").stdout
    assert len(list(cache.rglob("*.npy"))) == n_recordings
    assert not list(cache.rglob("*.tmp"))
    rerun = _outs(project)

    # The clean reference: featurize again from an empty cache.
    subprocess.run(["rm", "-rf", str(cache)], check=True)
    out = project.dvc("repro", "--force", "--single-item", "featurize").stdout
    assert project.stages_run(out) == ["featurize"]
    assert _outs(project) == rerun
