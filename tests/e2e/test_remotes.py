"""DVC remotes for real: SSH (OpenSSH sshd) and HTTP (http.server) on 127.0.0.1, integrity, interrupted pulls.

What docs/remotes.md promises, each on a fresh `git clone` as a teammate would get it: the pipeline's outputs
pushed over SSH come back without recomputing; raw data comes over read-only HTTP; a damaged object on a remote
is refused (with `verify = true`); a killed pull completes when rerun; a remote without the pipeline's outputs
still lets the README's first command run.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from missing import skip_or_fail
from servers import find_sshd, run_http_server, run_sshd

pytestmark = pytest.mark.e2e

# Object files of a DVC 3 cache or remote: files/md5/ab/<30 hex>[.dir]; anything else is a temp file.
OBJECT_NAME = re.compile(r"^[0-9a-f]{30}(\.dir)?$")


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def objects(odb: Path) -> list[Path]:
    """Object files under a cache or local remote root (the dir holding files/md5)."""
    return [p for p in (odb / "files" / "md5").glob("*/*") if OBJECT_NAME.match(p.name)]


def object_path(odb: Path, md5: str) -> Path:
    return odb / "files" / "md5" / md5[:2] / md5[2:]


def dir_listing(project, dir_md5: str) -> list[dict]:
    """A tracked directory's listing (relpath and md5 per file), read from the project's cache."""
    return json.loads(object_path(project.path / ".dvc" / "cache", dir_md5).read_text())


def tracked_dir(project, dvc_file: str) -> tuple[Path, list[dict]]:
    """A `dvc add`ed directory and its listing."""
    out = yaml.safe_load((project.path / dvc_file).read_text())["outs"][0]
    return (project.path / dvc_file).parent / out["path"], dir_listing(project, out["md5"])


def cached_outputs(project) -> dict[str, list[dict]]:
    """dvc.lock's entries for the stage outputs that go to the cache (not `cache: false`), by stage."""
    uncached = {
        path
        for stage in yaml.safe_load((project.path / "dvc.yaml").read_text())["stages"].values()
        for section in ("outs", "metrics", "plots")
        for out in stage.get(section, [])
        if isinstance(out, dict)
        for path, flags in out.items()
        if flags and flags.get("cache") is False
    }
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    by_stage = {name: [o for o in s.get("outs", []) if o["path"] not in uncached] for name, s in lock["stages"].items()}
    return {name: outs for name, outs in by_stage.items() if outs}


def assert_dir_matches(project, root: Path, dir_md5: str) -> None:
    """Every file of a tracked directory is in the workspace with the content DVC recorded, and nothing else."""
    listing = dir_listing(project, dir_md5)
    on_disk = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted(e["relpath"] for e in listing)
    assert [e["relpath"] for e in listing if md5_of(root / e["relpath"]) != e["md5"]] == []


def assert_outputs_as_locked(project, outs: list[dict]) -> None:
    """Every output of a dvc.lock outs list is in the workspace with the recorded content."""
    for out in outs:
        if out["md5"].endswith(".dir"):
            assert_dir_matches(project, project.path / out["path"], out["md5"])
        else:
            assert md5_of(project.path / out["path"]) == out["md5"]


def assert_workspace_matches(project, dvc_file: str) -> None:
    """The `dvc add`ed directory of dvc_file is complete and intact in the workspace."""
    out = yaml.safe_load((project.path / dvc_file).read_text())["outs"][0]
    assert_dir_matches(project, (project.path / dvc_file).parent / out["path"], out["md5"])


def add_ssh_remote(project, server, store: Path) -> None:
    """Remote `storage` at store over SSH, the way docs/remotes.md configures one (all local: a temp server)."""
    project.dvc("remote", "add", "--local", "storage", server.url(store))
    project.dvc("remote", "modify", "--local", "storage", "keyfile", str(server.keyfile))
    project.dvc("remote", "modify", "--local", "storage", "verify", "true")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if find_sshd() is None:
        skip_or_fail("OpenSSH sshd not found: install openssh-server (.ci/run does) to run the SSH remote tests")
    with run_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def ssh_store(built_project, sshd, tmp_path_factory) -> Path:
    """The directory behind remote `storage`, holding built_project's pipeline outputs pushed over SSH."""
    store = tmp_path_factory.mktemp("ssh-store")
    add_ssh_remote(built_project, sshd, store)
    # dvc.yaml as target: the stages' cached outputs (prepared data, features, model), not the raw data.
    built_project.dvc("push", "-r", "storage", "dvc.yaml")
    return store


def test_ssh_push_then_fresh_clone_gets_outputs_without_recomputing(built_project, sshd, ssh_store, clone):
    outs = [o for stage_outs in cached_outputs(built_project).values() for o in stage_outs]
    assert {o["path"] for o in outs} >= {"data/prepared", "data/features", "models"}
    # Every file of every cached output (and each directory's listing) is now an object on the server.
    expected = {o["md5"] for o in outs}
    for out in outs:
        if out["md5"].endswith(".dir"):
            expected |= {e["md5"] for e in dir_listing(built_project, out["md5"])}
    assert {p.parent.name + p.name for p in objects(ssh_store)} == expected
    assert "in sync" in built_project.dvc("status", "-c", "-r", "storage", "dvc.yaml").stdout

    teammate = clone(built_project, "teammate")
    add_ssh_remote(teammate, sshd, ssh_store)
    # raw data: from the team remote, as in every clone
    teammate.dvc("pull", "-q", "data/raw/pascal.dvc", "data/raw/physionet2016.dvc")
    teammate.dvc("pull", "-r", "storage", "dvc.yaml")
    assert_outputs_as_locked(teammate, outs)

    out = teammate.dvc("repro").stdout
    assert teammate.stages_run(out) == []
    assert "Data and pipelines are up to date" in teammate.dvc("status").stdout


def test_interrupted_pull_can_be_rerun_to_completion(built_project, clone):
    teammate = clone(built_project, "interrupted")
    cache = teammate.path / ".dvc" / "cache"
    pull = subprocess.Popen(
        [sys.executable, "-m", "dvc", "pull", "data/raw/pascal.dvc"],
        cwd=teammate.path,
        env=teammate.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while pull.poll() is None and len(objects(cache)) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pull.poll() is None, "the pull finished before it could be interrupted"
        pull.kill()  # SIGKILL, like a crash or a lost machine: DVC gets no chance to clean up
    finally:
        if pull.poll() is None:
            pull.kill()
        pull.wait(timeout=30)
    fetched = len(objects(cache))
    assert 0 < fetched < 835
    raw = teammate.path / "data/raw/pascal"
    assert not raw.exists() or sum(1 for p in raw.rglob("*") if p.is_file()) < 835

    teammate.dvc("pull", "data/raw/pascal.dvc")
    assert_workspace_matches(teammate, "data/raw/pascal.dvc")
    assert "up to date" in teammate.dvc("status", "data/raw/pascal.dvc").stdout


def test_fresh_clone_whose_remote_lacks_outputs_runs_readme_first_command(built_project, clone):
    teammate = clone(built_project, "readme")
    # The team remote holds the raw data only: a plain pull names the missing outputs and fails...
    plain = teammate.dvc("pull", check=False)
    assert plain.returncode != 0
    assert "data/features" in plain.stdout + plain.stderr
    # ... the README's `dvc pull --allow-missing && dvc repro` gets the data and rebuilds the rest.
    teammate.dvc("pull", "--allow-missing")
    assert_workspace_matches(teammate, "data/raw/pascal.dvc")
    ran = teammate.stages_run(teammate.dvc("repro").stdout)
    # Every stage with a cached output reran; stages whose outputs are all in git (metrics, plots) rerun only
    # if their inputs came out different.
    assert set(ran) >= set(cached_outputs(teammate)) >= {"prepare", "featurize", "train"}
    assert (teammate.path / "models/model.h5").stat().st_size > 0
    assert "Data and pipelines are up to date" in teammate.dvc("status").stdout


def test_http_remote_fresh_clone_pulls_raw_data(small_dataset, clone, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(small_dataset.store, served)
    with run_http_server(served, tmp_path / "http") as url:
        teammate = clone(small_dataset, "http-clone")
        teammate.dvc("remote", "modify", "--local", "store", "url", url)
        teammate.dvc("remote", "modify", "--local", "store", "verify", "true")
        teammate.dvc("pull")
        assert_workspace_matches(teammate, "data/sample.dvc")
        # The objects really came over HTTP.
        assert "GET /files/md5/" in (tmp_path / "http" / "http.log").read_text()

        # http.server takes no uploads: the remote is read-only, and a failed push says so.
        (teammate.path / "data/sample/new.wav").write_bytes(b"RIFF not really")
        teammate.dvc("add", "-q", "data/sample")
        push = teammate.dvc("push", check=False)
        assert push.returncode != 0
        assert "failed to push" in push.stderr.lower()
    assert sorted(p.name for p in objects(served)) == sorted(p.name for p in objects(small_dataset.store))


def damage_one_object(small_dataset, store: Path) -> tuple[str, str]:
    """Flip one byte in the middle of one file's object in store (same size, so only a hash can tell).
    Returns (relpath, recorded md5) of the damaged file."""
    _, listing = tracked_dir(small_dataset, "data/sample.dvc")
    victim = listing[0]
    path = object_path(store, victim["md5"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)  # DVC makes pushed objects read-only
    path.write_bytes(data)
    assert md5_of(path) != victim["md5"]
    return victim["relpath"], victim["md5"]


def test_damaged_object_on_remote_is_detected_and_never_used(small_dataset, clone, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_dataset.store, store)
    relpath, md5 = damage_one_object(small_dataset, store)

    teammate = clone(small_dataset, "verify")
    teammate.dvc("remote", "modify", "--local", "store", "url", str(store))
    teammate.dvc("remote", "modify", "--local", "store", "verify", "true")
    pull = teammate.dvc("pull", "-v", check=False)
    assert pull.returncode != 0
    log = pull.stdout + pull.stderr
    assert f"corrupted cache file '{object_path(teammate.path / '.dvc' / 'cache', md5)}'" in log  # -v names it
    assert "Checkout failed for following targets:\ndata/sample" in log
    # Neither the workspace nor the cache holds the damaged bytes.
    in_workspace = teammate.path / "data/sample" / relpath
    assert not in_workspace.exists() or md5_of(in_workspace) == md5
    in_cache = object_path(teammate.path / ".dvc" / "cache", md5)
    assert not in_cache.exists() or md5_of(in_cache) == md5

    # Once the remote is repaired, the same pull completes with the right content.
    shutil.copy(object_path(small_dataset.store, md5), object_path(store, md5))
    teammate.dvc("pull")
    assert_workspace_matches(teammate, "data/sample.dvc")


def test_without_verify_dvc_trusts_the_remote(small_dataset, clone, tmp_path):
    """Why docs/remotes.md asks for `verify = true`: DVC's default (false) copies a damaged object as is,
    and `dvc status` then reports the damaged workspace as up to date."""
    store = tmp_path / "store"
    shutil.copytree(small_dataset.store, store)
    relpath, md5 = damage_one_object(small_dataset, store)

    teammate = clone(small_dataset, "trusting")
    teammate.dvc("remote", "modify", "--local", "store", "url", str(store))
    teammate.dvc("pull")
    assert md5_of(teammate.path / "data/sample" / relpath) != md5
    assert "up to date" in teammate.dvc("status").stdout
