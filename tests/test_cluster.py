"""featurize and crossval on Dask (featurize.scheduler, crossval.scheduler, heartsound/cluster.py): a real
scheduler and worker processes on 127.0.0.1, compared byte for byte with the local run; a worker killed mid-run;
failures that name what went wrong."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from dask.sizeof import sizeof
from distributed import Client
from test_crossval import tiny_features, tiny_params
from test_features import manifest_of, write_recording

from heartsound import cluster, codedeps, config, crossval, features
from heartsound.config import FeaturizeParams

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every wait in this file is bounded (scheduler and workers start in ~1-5 s on a busy 2-core machine).
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 90
# Workers as docs/scaling.md starts them: importing this checkout, without the nanny's MALLOC_TRIM_THRESHOLD_.
DASK_ENV = {
    "PYTHONPATH": str(REPO_ROOT),
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": str({cluster.MALLOC_VARIABLE: None}),
}


def featurize_files(manifest, params: FeaturizeParams, out: Path) -> dict[str, bytes]:
    """Run featurize into out; every output file's bytes by name."""
    features.featurize(manifest, params, out)
    return {path.name: path.read_bytes() for path in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """120 recordings of 30 s at 4 kHz (and a few at 44.1 kHz): a run of ~1-2 s on two workers, long enough
    to kill one of them in the middle."""
    root = tmp_path_factory.mktemp("raw")
    for i in range(120):
        rate_hz = 44100 if i % 20 == 0 else 4000
        write_recording(root / f"rec{i:03d}.wav", duration_s=[30.0, 12.5, 3.0][i % 3], rate_hz=rate_hz, seed=i)
    return root


@pytest.fixture(scope="module")
def local_result(dataset, tmp_path_factory) -> dict[str, bytes]:
    """The default path's outputs (one process, no Dask): what every cluster run must write byte for byte."""
    base = tmp_path_factory.mktemp("local")
    params = FeaturizeParams(jobs=1, cache_dir=str(base / "cache"))
    return featurize_files(manifest_of(dataset), params, base / "features")


def start(args: list[str]) -> subprocess.Popen:
    """A `dask` CLI process in its own process group (so the nanny's workers go with it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *args],
        env={**os.environ, **DASK_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> str:
    """A `dask scheduler` and a `dask worker --nworkers 2 --nthreads 1` on 127.0.0.1, as a user would start
    them (docs/scaling.md); the scheduler's tcp:// address."""
    scheduler_file = tmp_path_factory.mktemp("dask") / "scheduler.json"
    loopback = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    common = ["--scheduler-file", str(scheduler_file), *loopback]
    processes = [start(["scheduler", "--port", "0", *common])]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists():
            assert processes[0].poll() is None and time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        processes.append(start(["worker", "--nworkers", "2", "--nthreads", "1", *common]))
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(2, timeout=START_TIMEOUT_S)
        yield address
    finally:
        for process in reversed(processes):
            stop(process)


def worker_pids(address: str) -> dict[str, int]:
    with Client(address, timeout=START_TIMEOUT_S) as client:
        return client.run(os.getpid)


# --- params ---


@pytest.mark.parametrize("section", ["featurize", "crossval"])
@pytest.mark.parametrize("value", [None, "local-cluster", "tcp://127.0.0.1:8786", "tls://scheduler.example:8786"])
def test_scheduler_values_accepted(section, value):
    assert getattr(config.parse({section: {"scheduler": value}}), section).scheduler == value


@pytest.mark.parametrize("section", ["featurize", "crossval"])
@pytest.mark.parametrize(
    "value", ["localhost:8786", "tcp://127.0.0.1", "http://host:8786", "tcp://:8786", "tcp://host:99999", "local"]
)
def test_bad_scheduler_is_a_params_error_naming_the_key(section, value):
    with pytest.raises(config.ParamsError, match=rf"'{section}.scheduler' must be null, local-cluster or a Dask"):
        config.parse({section: {"scheduler": value}})


def test_scheduler_is_not_part_of_the_feature_key():
    params = FeaturizeParams()
    on_cluster = dataclasses.replace(params, scheduler="tcp://10.0.0.1:8786")
    assert features.cache_key(on_cluster) == features.cache_key(params)
    assert "scheduler" not in features.feature_description(on_cluster)["featurize"]


def test_default_featurize_does_not_import_dask(dataset, tmp_path):
    manifest_of(dataset).head(3).to_csv(tmp_path / "manifest.csv", index=False)
    script = (
        "import sys; from heartsound import config, features\n"
        f"params = config.FeaturizeParams(jobs=2, cache_dir={str(tmp_path / 'cache')!r})\n"
        f"manifest = features.read_manifest({str(tmp_path / 'manifest.csv')!r})\n"
        f"assert features.featurize(manifest, params, {str(tmp_path / 'out')!r})['computed'] == 3\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True
    )
    assert result.stdout.strip() == "[]"


def test_unreachable_scheduler_fails_clearly_and_soon(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    params = FeaturizeParams(jobs=1, cache_dir=str(tmp_path / "cache"), scheduler="tcp://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(cluster.ClusterError, match=r"cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 2 s"):
        features.featurize(manifest_of(dataset).head(2), params, tmp_path / "out")
    assert time.monotonic() - started < 20


# --- a real scheduler and workers ---


def test_cluster_writes_what_the_local_pool_writes(dataset, local_result, scheduler, tmp_path):
    params = FeaturizeParams(cache_dir=str(tmp_path / "cache"), scheduler=scheduler)
    assert featurize_files(manifest_of(dataset), params, tmp_path / "features") == local_result
    # A second run finds every entry the workers stored, without a cluster round trip.
    assert features.featurize(manifest_of(dataset), params, tmp_path / "again")["computed"] == 0


def test_relative_paths_reach_workers_as_absolute_ones(dataset, local_result, scheduler, tmp_path, monkeypatch):
    # prepare's manifest and params.yaml's cache_dir are relative to the project, not to the workers' directory.
    monkeypatch.chdir(dataset.parent)
    manifest = manifest_of(dataset).head(4)
    manifest["path"] = [os.path.relpath(path) for path in manifest["path"]]
    params = FeaturizeParams(cache_dir=os.path.relpath(tmp_path / "cache"), scheduler=scheduler)
    assert features.featurize(manifest, params, tmp_path / "features")["computed"] == 4
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4


def test_a_worker_killed_mid_run_costs_a_retry_not_the_run(dataset, local_result, scheduler, tmp_path):
    params = FeaturizeParams(cache_dir=str(tmp_path / "cache"), scheduler=scheduler)
    victim_address, victim_pid = sorted(worker_pids(scheduler).items())[0]
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["files"] = featurize_files(manifest_of(dataset), params, tmp_path / "features")
        except cluster.ClusterError as e:  # allowed, if clear: then the rerun below must finish the work
            outcome["error"] = e

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not any(Path(params.cache_dir).rglob("*.npy")):
        assert runner.is_alive() and time.monotonic() < deadline, "the run stored nothing"
        time.sleep(0.005)
    os.kill(victim_pid, signal.SIGKILL)
    stored_at_kill = len(list(Path(params.cache_dir).rglob("*.npy")))
    assert runner.is_alive() and stored_at_kill < 120, "the worker was killed after the run, not during it"
    runner.join(RUN_TIMEOUT_S)
    assert not runner.is_alive(), "the run did not finish after a worker died"

    if "error" in outcome:
        assert "run featurize again" in str(outcome["error"])
    else:
        assert outcome["files"] == local_result
    # The nanny replaced the dead worker; a rerun on the same cache completes and matches the local run.
    assert victim_pid not in worker_pids(scheduler).values()
    assert featurize_files(manifest_of(dataset), params, tmp_path / "rerun") == local_result


def test_a_recording_that_fails_is_named_and_a_fixed_rerun_finishes(dataset, scheduler, tmp_path):
    root = tmp_path / "raw"
    for i in range(3):
        write_recording(root / f"ok{i}.wav", duration_s=6.0, rate_hz=4000, seed=i)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    params = FeaturizeParams(cache_dir=str(tmp_path / "cache"), scheduler=scheduler)
    with pytest.raises(cluster.ClusterError, match=r"broken\.wav: AudioError"):
        features.featurize(manifest_of(root), params, tmp_path / "features")

    write_recording(root / "broken.wav", duration_s=6.0, rate_hz=4000, seed=9)
    assert features.featurize(manifest_of(root), params, tmp_path / "features")["computed"] >= 1


def test_workers_of_another_environment_are_refused(dataset, scheduler, tmp_path):
    # The key a worker computes for itself must be the client's: here the client claims a different one.
    params = FeaturizeParams(cache_dir=str(tmp_path / "cache"), scheduler=scheduler)
    with Client(scheduler, timeout=START_TIMEOUT_S) as client:
        path, sha = manifest_of(dataset).iloc[0][["path", "sha256"]]
        future = client.submit(cluster.featurize_batch, [(path, sha)], params, "0123456789abcdef")
        with pytest.raises(cluster.ClusterError, match=r"computes other features than the client"):
            future.result(timeout=RUN_TIMEOUT_S)
    assert not any(Path(params.cache_dir).rglob("*.npy"))


def test_local_cluster_end_to_end_through_featurize(dataset, local_result, tmp_path):
    environment = dict(os.environ)
    params = FeaturizeParams(jobs=2, cache_dir=str(tmp_path / "cache"), scheduler=cluster.LOCAL_CLUSTER)
    assert featurize_files(manifest_of(dataset), params, tmp_path / "features") == local_result
    # The LocalCluster's nannies set OMP_NUM_THREADS=1 & co. in this process; featurize puts them back.
    assert dict(os.environ) == environment


# --- crossval ---


def crossval_outputs(params, features_dir, manifest) -> tuple[str, pd.DataFrame]:
    metrics, predictions = crossval.run(params, features_dir, manifest, log=lambda _: None)
    return json.dumps(metrics, sort_keys=True), predictions


@pytest.fixture(scope="module")
def tiny_cv(tmp_path_factory) -> tuple:
    """Tiny features, params with the default's augmented batches (their own order each epoch, not only keras's
    shuffled arrays), and the local run's outputs: what every cluster run must give. Two folds, two trainings."""
    features_dir = tmp_path_factory.mktemp("tiny")
    manifest = tiny_features(features_dir)
    params = tiny_params(seeds=1)
    augmented = dataclasses.replace(params.train, augment=True, time_mask=0.2, freq_mask=0.2)
    params = dataclasses.replace(params, train=augmented)
    return features_dir, manifest, params, crossval_outputs(params, features_dir, manifest)


def on(params, scheduler: str):
    return dataclasses.replace(params, crossval=dataclasses.replace(params.crossval, scheduler=scheduler))


# Trainings on a real cluster take ~30 s: in the full suite, not the fast tier.
@pytest.mark.e2e
def test_crossval_on_the_cluster_gives_the_local_numbers(scheduler, tiny_cv):
    features_dir, manifest, params, local = tiny_cv
    remote = crossval_outputs(on(params, scheduler), features_dir, manifest)
    assert remote[0] == local[0]
    pd.testing.assert_frame_equal(remote[1], local[1], check_exact=True)
    # The trainings ran on the workers (each keeps the features it read), not in this process.
    with Client(scheduler, timeout=START_TIMEOUT_S) as client:
        assert any(client.run(lambda: bool(cluster._loaded)).values())
    assert not cluster._loaded


@pytest.mark.e2e
def test_crossval_workers_of_other_training_code_are_refused(scheduler, tiny_cv, monkeypatch):
    features_dir, manifest, params, _ = tiny_cv
    real = codedeps.source_digest
    # The client claims other code than the workers run (they are other processes, unpatched).
    monkeypatch.setattr(
        codedeps, "source_digest", lambda module: "0" * 64 if module == "heartsound.crossval" else real(module)
    )
    with pytest.raises(cluster.ClusterError, match=r"crossval.scheduler .*runs other training code than the client"):
        crossval.run(on(params, scheduler), features_dir, manifest, log=lambda _: None)


def test_arguments_over_100_kb_reach_every_task(scheduler):
    # client.map puts an argument over 100 kB (PhysioNet 2016's 1,099-row manifest) into a task keyed by the
    # argument's name, which the scheduler failed to send (AssertionError); PASCAL's 585 rows stayed under it.
    table = pd.DataFrame({"path": [f"data/raw/site/recording{i:05d}.wav" for i in range(20000)]})
    assert sizeof(table) > 1e5  # client.map's threshold
    with Client(scheduler, timeout=START_TIMEOUT_S) as client:
        futures, item_of = cluster._map(client, lambda i, table: (i, len(table)), [0, 1, 2], table=table)
        results = [future.result(timeout=RUN_TIMEOUT_S) for future in futures]
    assert results == [(0, 20000), (1, 20000), (2, 20000)]
    assert sorted(item_of.values()) == [0, 1, 2]
