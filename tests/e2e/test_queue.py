"""Experiments in parallel with DVC's queue, and shared through a git remote and the S3 remote.

What docs/compare.md shows: `dvc exp run --queue` for a small grid, `dvc queue start -j 2`, `dvc exp show --json`;
each experiment runs in its own temporary copy of the repository, so both get their own params and metrics and the
workspace stays as it was. Then `dvc exp push` of one experiment (git ref to a bare repo, outputs to S3) and
`dvc exp pull` in another clone, where it can be applied with its model.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time

import pytest
import yaml
from conftest import Project
from test_remote_s3 import add_s3_remote, isolate_from_aws, listing, md5_key

pytestmark = pytest.mark.e2e

# The grid: train.epochs around the subset's 3 (a value equal to the baseline's would be restored from the
# run-cache instead of trained).
GRID = {"epochs-2": 2, "epochs-4": 4}
QUEUE_TIMEOUT_S = 600


def file_digests(project: Project, *paths: str) -> dict[str, str]:
    """MD5 of every file under the given workspace paths."""
    found = {}
    for rel in paths:
        root = project.path / rel
        for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
            found[str(path.relative_to(project.path))] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def queue_statuses(project: Project) -> tuple[dict[str, str], int]:
    """({experiment name: status}, active workers) from `dvc queue status`."""
    out = project.dvc("queue", "status").stdout
    statuses = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] in GRID:
            statuses[fields[1]] = fields[-1]
    active = re.search(r"Worker status: (\d+) active", out)
    return statuses, int(active.group(1)) if active else 0


def experiments_by_name(show: list[dict]) -> dict[str, dict]:
    """{name: data} of the experiments under the baseline commit in `dvc exp show --json`."""
    baseline = next(row for row in show if row["rev"] != "workspace")
    return {exp["name"]: exp["revs"][0]["data"] for exp in baseline["experiments"] or []}


@pytest.fixture(scope="module")
def queued(built_project):
    """The grid queued and run by two workers. Returns the workspace's state before, `dvc exp show --json`
    after, and the most workers seen busy at once."""
    tracked = ("params.yaml", "dvc.lock", "metrics", "plots", "models")
    before = file_digests(built_project, *tracked)
    for name, epochs in GRID.items():
        out = built_project.dvc("exp", "run", "--queue", "-n", name, "-S", f"train.epochs={epochs}").stdout
        assert f"Queued experiment '{name}'" in out
    statuses, _ = queue_statuses(built_project)
    assert statuses == dict.fromkeys(GRID, "Queued")
    # Queueing only stashes the params change: the workspace is as it was.
    assert file_digests(built_project, *tracked) == before

    # The workers are detached processes that inherit stdout and stderr: given pipes (as Project.run does), the
    # call would not return before they exit. A file lets it return at once, as in a terminal.
    log = built_project.path.parent / "queue-start.log"
    with open(log, "wb") as out:
        start = subprocess.run(
            [sys.executable, "-m", "dvc", "queue", "start", "-j", "2"],
            cwd=built_project.path,
            env=built_project.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert start.returncode == 0, log.read_text()
    most_active = 0
    try:
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while True:
            statuses, active = queue_statuses(built_project)
            most_active = max(most_active, active)
            if all(s in ("Success", "Failed") for s in statuses.values()) or time.monotonic() > deadline:
                break
            time.sleep(2)  # each poll is a dvc process: often enough to see both busy, sparing the cores
    finally:
        built_project.dvc("queue", "stop", "--kill", check=False)  # no worker outlives the test, even on failure
    logs = {name: built_project.dvc("queue", "logs", name, check=False).stdout[-3000:] for name in GRID}
    assert statuses == dict.fromkeys(GRID, "Success"), f"{statuses}\n{logs}"
    show = json.loads(built_project.dvc("exp", "show", "--json").stdout)
    return {"before": before, "tracked": tracked, "show": show, "most_active": most_active}


def test_queued_grid_runs_two_at_once_each_with_its_own_params_and_metrics(built_project, queued):
    assert queued["most_active"] == 2  # -j 2: both workers busy at the same time
    experiments = experiments_by_name(queued["show"])
    assert set(experiments) == set(GRID)
    trained = {}
    for name, epochs in GRID.items():
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == epochs
        train_metrics = data["metrics"]["metrics/train/metrics.json"]["data"]
        # The metrics are the experiment's own: dvclive counted the epochs it was given.
        assert train_metrics["epochs_run"] == epochs
        assert set(data["metrics"]) >= {"metrics/metrics.json", "metrics/cv.json"}
        trained[name] = train_metrics["train"]
    assert trained["epochs-2"] != trained["epochs-4"]
    # The workspace row is still the committed baseline (3 epochs).
    workspace = next(row for row in queued["show"] if row["rev"] == "workspace")["data"]
    assert workspace["params"]["params.yaml"]["data"]["train"]["epochs"] == 3
    assert workspace["metrics"]["metrics/train/metrics.json"]["data"]["epochs_run"] == 3


def test_queue_leaves_the_workspace_untouched(built_project, queued):
    assert built_project.git("status", "--short").stdout == ""
    assert file_digests(built_project, *queued["tracked"]) == queued["before"]
    assert "Data and pipelines are up to date" in built_project.dvc("status").stdout
    # The results live in experiment refs, not on a branch.
    refs = built_project.git("for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    assert sorted(ref.rsplit("/", 1)[-1] for ref in refs) == sorted(GRID)
    assert built_project.git("branch", "--list").stdout.split() == ["*", "main"]


def test_exp_push_to_git_and_s3_then_exp_pull_in_another_clone(built_project, queued, s3, tmp_path):
    name = "epochs-4"
    # A git remote (a bare repo, as on a git server) for the experiment's ref, S3 for its data.
    origin = tmp_path / "origin.git"
    built_project.git("init", "-q", "--bare", "-b", "main", str(origin))
    built_project.git("remote", "add", "origin", str(origin))
    built_project.git("push", "-q", "origin", "main")
    isolate_from_aws(built_project)
    add_s3_remote(built_project, s3, "storage", "heartsound", local=True)
    built_project.dvc("exp", "push", "-r", "storage", "origin", name)

    ref = built_project.git("for-each-ref", "--format=%(refname)", f"refs/exps/*/*/{name}").stdout.strip()
    assert ref and built_project.git("ls-remote", "origin", ref).stdout.split()[1:] == [ref]
    lock = yaml.safe_load(built_project.git("show", f"{ref}:dvc.lock").stdout)
    model_md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models")
    assert md5_key(model_md5) in listing(s3, "heartsound")

    # A teammate on another machine: a clone of the git remote, its own S3 keys, nothing else.
    teammate = Project(tmp_path / "teammate")
    built_project.git("clone", "-q", str(origin), str(teammate.path))
    isolate_from_aws(teammate)
    add_s3_remote(teammate, s3, "storage", "heartsound", local=True)
    assert experiments_by_name(json.loads(teammate.dvc("exp", "show", "--json").stdout)) == {}
    teammate.dvc("exp", "pull", "-r", "storage", "origin", name)
    pulled = experiments_by_name(json.loads(teammate.dvc("exp", "show", "--json").stdout))
    assert set(pulled) == {name}
    ours = experiments_by_name(queued["show"])[name]
    assert pulled[name]["params"] == ours["params"] and pulled[name]["metrics"] == ours["metrics"]

    # Its outputs came with it: applying it checks out the experiment's model, nothing to recompute.
    teammate.dvc("exp", "apply", name)
    assert yaml.safe_load(teammate.params_path.read_text())["train"]["epochs"] == 4
    model_listing = json.loads((teammate.path / ".dvc/cache/files/md5" / model_md5[:2] / model_md5[2:]).read_text())
    for entry in model_listing:
        assert file_digests(teammate, f"models/{entry['relpath']}") == {f"models/{entry['relpath']}": entry["md5"]}
    assert "Data and pipelines are up to date" in teammate.dvc("status").stdout
