"""Stages run only on the pinned libraries: requirements.txt (a dep of every stage) against what is installed."""

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from heartsound import environment

REPO_ROOT = Path(__file__).resolve().parents[1]
NUMPY = metadata.version("numpy")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return path


def test_pins_read_name_equals_version_lines_and_skip_comments(tmp_path):
    path = write(tmp_path, "# the lock\n\nnumpy==2.4.6\nBackports.StrEnum==1.2.8  # a comment\n")
    assert environment.pins(path) == {"numpy": "2.4.6", "Backports.StrEnum": "1.2.8"}
    for line, reason in (("numpy>=2", "not pinned"), ("numpy==1,!=2", "not pinned"), ("numpy ==", "line 2")):
        with pytest.raises(ValueError, match=reason):
            environment.pins(write(tmp_path, f"# x\n{line}\n"))


def test_the_projects_pins_are_what_is_installed():
    # The README installs requirements.txt; a venv on other versions would write outputs the lock does not describe.
    assert environment.mismatches(REPO_ROOT / "requirements.txt") == []


def test_a_package_at_another_version_or_missing_is_named(tmp_path):
    path = write(tmp_path, f"numpy=={NUMPY}\nnumpy-not-a-real-package==1.0\npandas==0.0.1\n")
    problems = environment.mismatches(path)
    assert problems == [
        "numpy-not-a-real-package: pinned 1.0, not installed",
        f"pandas: pinned 0.0.1, installed {metadata.version('pandas')}",
    ]
    assert environment.mismatches(write(tmp_path, f"NumPy=={NUMPY}.0\n")) == []  # names and versions normalised


def run_segment(project: Path) -> subprocess.CompletedProcess:
    """`python -m stages.segment` in a copy of the project's code: the stage checks the copy's requirements.txt."""
    for package in ("heartsound", "stages"):
        if not (project / package).exists():
            shutil.copytree(REPO_ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "stages.segment", "manifest.csv", "cycles"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, cwd=project, capture_output=True, text=True, env=env)


def test_a_stage_refuses_to_run_on_other_libraries_and_writes_nothing(tmp_path):
    write(tmp_path, "pandas==0.0.1\n")
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "noise.wav", rng.normal(0, 0.1, 3 * 4000).astype(np.float32), 4000)
    (tmp_path / "manifest.csv").write_text("recording_id,path\nnoise,noise.wav\n")
    result = run_segment(tmp_path)
    assert result.returncode == 2, result.stderr
    assert "pandas: pinned 0.0.1, installed" in result.stderr and "pip install -r requirements.txt" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cycles").exists()
    (tmp_path / "requirements.txt").unlink()
    result = run_segment(tmp_path)
    assert result.returncode == 2 and "cannot check the pinned libraries" in result.stderr
    # The project's own pins: the stage runs and writes its table (noise: a row flagged without rhythm).
    shutil.copy(REPO_ROOT / "requirements.txt", tmp_path / "requirements.txt")
    result = run_segment(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cycles" / "cycle_features.csv").is_file()
