"""An S3 remote for real: SeaweedFS's S3 gateway on 127.0.0.1, with keys it checks, driven by `dvc` (dvc-s3).

The workflows of docs/remotes.md, each on a fresh `git clone` as a teammate would get it: the pipeline's outputs
pushed to S3 come back without recomputing; the remote's URL and endpoint are committed, its keys never are (they
live in `.dvc/config.local` or `AWS_*` variables); wrong keys are refused; a damaged object is refused with
`verify = true`; a push or pull killed half-way completes when rerun.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import yaml
from servers import S3Server
from test_remotes import (
    assert_dir_matches,
    assert_outputs_as_locked,
    assert_workspace_matches,
    cached_outputs,
    dir_listing,
    md5_of,
    objects,
)

pytestmark = pytest.mark.e2e

# Variables through which a developer's own AWS setup could stand in for the keys under test.
AWS_CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


def isolate_from_aws(project) -> None:
    """Only the keys a test gives count: no ~/.aws files, no AWS_* keys from outside, no metadata-service
    lookup (botocore's last resort, a request to a non-loopback address)."""
    for var in AWS_CREDENTIAL_VARS:
        project.env.pop(var, None)
    empty = project.path.parent / "empty-aws-config"  # botocore wants a regular file, not /dev/null
    empty.touch()
    project.env.update(
        AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty)
    )


def add_s3_remote(project, server: S3Server, name: str, prefix: str, local: bool = False) -> None:
    """Remote `name` at s3://bucket/prefix on server, configured as docs/remotes.md says: URL, endpoint and
    `verify` in .dvc/config (or config.local with local=True), the keys in config.local."""
    scope = ["--local"] if local else []
    project.dvc("remote", "add", *scope, name, server.url(prefix))
    project.dvc("remote", "modify", *scope, name, "endpointurl", server.endpoint)
    project.dvc("remote", "modify", *scope, name, "verify", "true")
    set_keys(project, server, name)


def set_keys(project, server: S3Server, name: str, secret_key: str | None = None) -> None:
    project.dvc("remote", "modify", "--local", name, "access_key_id", server.access_key)
    project.dvc("remote", "modify", "--local", name, "secret_access_key", secret_key or server.secret_key)


def s3_clone(clone: Callable, source, name: str):
    project = clone(source, name)
    isolate_from_aws(project)
    return project


def listing(server: S3Server, prefix: str) -> dict[str, str]:
    """{key below prefix/: ETag} of every object under prefix in the bucket."""
    client = server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) + 1 :]] = item["ETag"].strip('"')
    return found


def md5_key(md5: str) -> str:
    """Key of an object in a DVC 3 remote, below the remote's prefix."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def damaged_keys(server: S3Server, prefix: str, found: dict[str, str]) -> list[str]:
    """Objects whose content is not the MD5 their key names (a .dir listing's key is its MD5 plus '.dir')."""
    damaged = []
    for key, etag in found.items():
        expected = key.removeprefix("files/md5/").replace("/", "").removesuffix(".dir")
        if "-" in etag:  # a multipart upload's ETag is not the content's MD5: read the object
            body = server.client().get_object(Bucket=server.bucket, Key=f"{prefix}/{key}")["Body"].read()
            etag = hashlib.md5(body).hexdigest()
        if etag != expected:
            damaged.append(key)
    return damaged


def raw_data_keys(project) -> set[str]:
    """Keys of the raw PASCAL data's objects: each file and the directory's listing."""
    dir_md5 = yaml.safe_load((project.path / "data/raw/pascal.dvc").read_text())["outs"][0]["md5"]
    return {md5_key(dir_md5)} | {md5_key(e["md5"]) for e in dir_listing(project, dir_md5)}


@pytest.fixture(scope="module")
def s3_storage(built_project, s3) -> str:
    """built_project with remote `storage` on S3 committed (URL, endpoint, verify; keys in config.local only) and
    its pipeline outputs pushed there. Returns the remote's prefix in the bucket."""
    isolate_from_aws(built_project)
    add_s3_remote(built_project, s3, "storage", "heartsound")
    built_project.git("add", ".dvc/config")
    built_project.git("commit", "-q", "-m", "DVC remote: S3 storage")
    built_project.dvc("push", "-r", "storage", "dvc.yaml")
    return "heartsound"


def test_committed_config_names_the_remote_but_holds_no_secret(built_project, s3, s3_storage):
    committed = built_project.git("show", "HEAD:.dvc/config").stdout
    assert s3.url(s3_storage) in committed and s3.endpoint in committed
    assert s3.secret_key not in committed and s3.access_key not in committed
    # The keys are in config.local, which git ignores: no commit can pick it up.
    local = (built_project.path / ".dvc" / "config.local").read_text()
    assert s3.secret_key in local
    assert built_project.git("check-ignore", ".dvc/config.local").returncode == 0
    assert built_project.git("status", "--short").stdout == ""
    assert built_project.git("log", "--all", "-S", s3.secret_key, "--oneline").stdout == ""


def test_s3_push_then_fresh_clone_gets_outputs_without_recomputing(built_project, s3, s3_storage, clone):
    outs = [o for stage_outs in cached_outputs(built_project).values() for o in stage_outs]
    assert {o["path"] for o in outs} >= {"data/prepared", "data/features", "models"}
    # Every file of every cached output (and each directory's listing) is now an object in the bucket, intact.
    expected = {md5_key(o["md5"]) for o in outs}
    for out in outs:
        if out["md5"].endswith(".dir"):
            expected |= {md5_key(e["md5"]) for e in dir_listing(built_project, out["md5"])}
    found = listing(s3, s3_storage)
    assert set(found) == expected
    assert damaged_keys(s3, s3_storage, found) == []
    assert "in sync" in built_project.dvc("status", "-c", "-r", "storage", "dvc.yaml").stdout

    # The teammate's clone knows the remote from the committed config; the keys come from the environment.
    teammate = s3_clone(clone, built_project, "teammate")
    assert (
        not (teammate.path / ".dvc" / "config.local").exists()
        or "storage" not in (teammate.path / ".dvc" / "config.local").read_text()
    )
    teammate.env.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key)
    # raw data: from the team remote, as in every clone
    teammate.dvc("pull", "-q", "data/raw/pascal.dvc", "data/raw/physionet2016.dvc")
    teammate.dvc("pull", "-r", "storage", "dvc.yaml")
    assert_outputs_as_locked(teammate, outs)

    assert teammate.stages_run(teammate.dvc("repro").stdout) == []
    assert "Data and pipelines are up to date" in teammate.dvc("status").stdout


def test_s3_refuses_wrong_or_missing_keys(built_project, s3, s3_storage, clone):
    teammate = s3_clone(clone, built_project, "wrong-keys")
    # No keys anywhere: nothing to sign with, nothing downloaded.
    pull = teammate.dvc("pull", "-r", "storage", "models", check=False)
    assert pull.returncode != 0 and "Unable to locate credentials" in pull.stderr
    assert not (teammate.path / "models" / "model.h5").exists()
    # A wrong secret: the server checks the signature and says no, to pulls and to pushes.
    set_keys(teammate, s3, "storage", secret_key="wrong" + s3.secret_key)
    pull = teammate.dvc("pull", "-r", "storage", "models", check=False)
    assert pull.returncode != 0 and "Forbidden" in pull.stderr
    assert not (teammate.path / "models" / "model.h5").exists()
    before = listing(s3, s3_storage)
    (teammate.path / "notes.txt").write_text("not for the remote\n")
    teammate.dvc("add", "-q", "notes.txt")
    push = teammate.dvc("push", "-r", "storage", "notes.txt.dvc", check=False)
    assert push.returncode != 0 and "Forbidden" in push.stderr
    assert listing(s3, s3_storage) == before
    # The right keys (in config.local) work.
    set_keys(teammate, s3, "storage")
    teammate.dvc("pull", "-r", "storage", "models")
    assert md5_of(teammate.path / "models" / "model.h5") == md5_of(built_project.path / "models" / "model.h5")


def test_damaged_object_on_s3_is_detected_and_never_used(built_project, s3, s3_storage, clone):
    # A copy of the pushed outputs under another prefix, made on the server, with one byte of the model flipped.
    client = s3.client()
    for key in listing(s3, s3_storage):
        client.copy_object(
            Bucket=s3.bucket, Key=f"damaged/{key}", CopySource={"Bucket": s3.bucket, "Key": f"{s3_storage}/{key}"}
        )
    model = next(o for o in cached_outputs(built_project)["train"] if o["path"] == "models")
    entry = next(e for e in dir_listing(built_project, model["md5"]) if e["relpath"] == "model.h5")
    key = f"damaged/{md5_key(entry['md5'])}"
    good = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # same size: only a hash can tell
    client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(bad))

    teammate = s3_clone(clone, built_project, "verify")
    teammate.dvc("remote", "modify", "--local", "storage", "url", s3.url("damaged"))
    set_keys(teammate, s3, "storage")
    pull = teammate.dvc("pull", "-v", "-r", "storage", "models", check=False)
    assert pull.returncode != 0
    log = pull.stdout + pull.stderr
    assert "corrupted cache file" in log and entry["md5"][2:] in log
    assert "Checkout failed for following targets:\nmodels" in log
    # Neither the workspace nor the cache holds the damaged bytes.
    in_workspace = teammate.path / "models" / "model.h5"
    assert not in_workspace.exists() or md5_of(in_workspace) == entry["md5"]
    assert [p for p in objects(teammate.path / ".dvc" / "cache") if md5_of(p) == hashlib.md5(bad).hexdigest()] == []

    # Once the remote is repaired, the same pull completes with the right content.
    client.put_object(Bucket=s3.bucket, Key=key, Body=good)
    teammate.dvc("pull", "-r", "storage", "models")
    assert_dir_matches(teammate, teammate.path / "models", model["md5"])


def kill_when(process: subprocess.Popen, progress: Callable[[], int], at_least: int, timeout_s: float = 120) -> None:
    """SIGKILL process (like a crash or a lost machine: no clean-up) once progress() reaches at_least."""
    try:
        deadline = time.monotonic() + timeout_s
        while process.poll() is None and progress() < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the transfer finished before it could be interrupted"
        process.kill()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def start_dvc(project, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=project.path,
        env=project.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_interrupted_push_and_pull_complete_when_rerun(built_project, s3, s3_storage, clone):
    # The raw data (835 recordings) to its own remote, all of it configured locally this time.
    add_s3_remote(built_project, s3, "raw", "raw", local=True)
    expected = raw_data_keys(built_project)
    assert len(expected) == 836

    push = start_dvc(built_project, "push", "-r", "raw", "data/raw/pascal.dvc")
    kill_when(push, lambda: len(listing(s3, "raw")), at_least=30)
    found = listing(s3, "raw")
    assert 0 < len(found) < len(expected)
    # S3 stores an object whole or not at all: what the killed push left is intact, just incomplete.
    assert set(found) <= expected and damaged_keys(s3, "raw", found) == []
    assert "in sync" not in built_project.dvc("status", "-c", "-r", "raw", "data/raw/pascal.dvc").stdout
    built_project.dvc("push", "-r", "raw", "data/raw/pascal.dvc")
    found = listing(s3, "raw")
    assert set(found) == expected and damaged_keys(s3, "raw", found) == []
    assert "in sync" in built_project.dvc("status", "-c", "-r", "raw", "data/raw/pascal.dvc").stdout

    teammate = s3_clone(clone, built_project, "interrupted")
    add_s3_remote(teammate, s3, "raw", "raw", local=True)
    cache = teammate.path / ".dvc" / "cache"
    pull = start_dvc(teammate, "pull", "-r", "raw", "data/raw/pascal.dvc")
    kill_when(pull, lambda: len(objects(cache)), at_least=30)
    assert 0 < len(objects(cache)) < len(expected)
    raw = teammate.path / "data/raw/pascal"
    assert not raw.exists() or sum(1 for p in raw.rglob("*") if p.is_file()) < len(expected) - 1

    teammate.dvc("pull", "-r", "raw", "data/raw/pascal.dvc")
    assert_workspace_matches(teammate, "data/raw/pascal.dvc")
    assert "up to date" in teammate.dvc("status", "data/raw/pascal.dvc").stdout
