"""Featurize and crossval on a Dask cluster.

featurize.scheduler: the recordings missing from the feature cache become tasks for dask.distributed workers,
which decode and featurize them into the same cache the local worker pool fills. crossval.scheduler: each
training of crossval (a fold and a seed) becomes a task; the workers read the features themselves and send back
the test recordings' probabilities, the same numbers a local run computes.

features.fill_cache and crossval.run import this module only when a scheduler is set, so a default run never
imports Dask. Workers need the client's files at the same absolute paths (audio and features in, cache entries
out) and the same code and pinned environment; docs/scaling.md says how to start them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import queue
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dask
from distributed import Client, Future, KilledWorker, LocalCluster

from heartsound import codedeps, features
from heartsound.config import FeaturizeParams, Params

LOCAL_CLUSTER = "local-cluster"
FEATURIZE, CROSSVAL = "featurize.scheduler", "crossval.scheduler"
CONNECT_TIMEOUT_S = 15
# How long a run waits for its first worker, and how long it waits for work while the cluster has none left.
NO_WORKERS_TIMEOUT_S = 60
WATCH_INTERVAL_S = 5
# A Dask task costs ~1.9 ms of CPU in the scheduler, client and worker (no-op tasks, measured on 2 cores) against
# ~3.7 ms for a recording: one task per recording would add half. Tasks of up to 32 recordings keep it to ~2 %,
# while at least TASKS_PER_WORKER tasks per worker still spread the work evenly.
RECORDINGS_PER_TASK = 32
TASKS_PER_WORKER = 8
# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_ set, which also pins glibc's mmap threshold at
# 128 KiB: every array of a recording is then a fresh mmap, and the page faults doubled a recording's CPU time.
MALLOC_VARIABLE = "MALLOC_TRIM_THRESHOLD_"


class ClusterError(RuntimeError):
    """The scheduler cannot be reached, no worker can take the work, or a recording failed on a worker."""


def compute_entries(todo: list[tuple[str, str]], params: FeaturizeParams) -> Iterator[tuple[str, int]]:
    """Featurize every (path, sha256) of todo into the feature cache on the cluster params.scheduler names.

    Yields (sha256, n_frames) as recordings are stored, as features._compute_entry returns them. A worker
    that dies takes its tasks with it and the scheduler runs them again elsewhere (cache entries are written
    atomically, so nothing it leaves behind is ever read); a task that kills every worker it runs on, or a
    recording that fails, stops the run with a ClusterError naming the recordings.
    """
    # Workers may run elsewhere: they get absolute paths, the same as the client's on a shared filesystem.
    params = dataclasses.replace(params, cache_dir=os.path.abspath(params.cache_dir))
    todo = [(os.path.abspath(path), sha) for path, sha in todo]
    cache = features.FeatureCache(params.cache_dir, params)
    local_workers = max(1, min(params.jobs or os.cpu_count() or 1, len(todo)))
    with _connect(params.scheduler, FEATURIZE, local_workers) as client:
        workers = _check_workers(client, params.scheduler, FEATURIZE)
        futures, batch_of = _map(client, featurize_batch, _batches(todo, workers), params=params, cache_key=cache.key)
        for future in _as_completed(client, futures, params.scheduler, FEATURIZE):
            batch = batch_of[future.key]
            if future.status != "finished":
                paths = ", ".join(path for path, _ in batch)
                raise _failure(future, params.scheduler, FEATURIZE, f"recordings {paths}")
            for sha, n_frames in future.result():
                if cache.frames_in(sha) != n_frames:
                    raise ClusterError(
                        f"featurize.scheduler: a worker stored the features of {_path_of(batch, sha)} in "
                        f"{cache.path_for(sha)}, but this machine does not see them there: the feature cache "
                        "(featurize.cache_dir) must be on a filesystem the workers share at the same path"
                    )
                yield sha, n_frames
            future.release()


def crossval_trainings(todo: list, params: Params, features_dir, manifest, pretrained_dir) -> Iterator:
    """Run each crossval.Training of todo on the cluster params.crossval.scheduler names; yields their
    crossval.Trained as they finish. The workers read the features (and pre-trained weights) at the client's
    absolute paths, and must run the client's training code: the numbers are then the local run's.
    """
    scheduler = params.crossval.scheduler
    features_dir = os.path.abspath(features_dir)
    pretrained_dir = os.path.abspath(pretrained_dir) if pretrained_dir is not None else None
    # One worker per train.threads cores: each training runs TensorFlow on that many threads.
    local_workers = max(1, min((os.cpu_count() or 1) // params.train.threads, len(todo)))
    with _connect(scheduler, CROSSVAL, local_workers) as client:
        _check_workers(client, scheduler, CROSSVAL)
        futures, training_of = _map(
            client,
            train_on_worker,
            todo,
            params=params,
            features_dir=features_dir,
            manifest=manifest,
            pretrained_dir=pretrained_dir,
            code_digest=codedeps.source_digest("heartsound.crossval"),
        )
        for future in _as_completed(client, futures, scheduler, CROSSVAL):
            if future.status != "finished":
                training = training_of[future.key]
                raise _failure(future, scheduler, CROSSVAL, f"fold {training.fold}, seed {training.seed}")
            yield future.result()
            future.release()


def _map(client: Client, task, items: list, **kwargs) -> tuple[list[Future], dict]:
    """A task per item (keyed by the task's name, this run and the item's place); the futures, and each one's item
    by key."""
    run = uuid.uuid4().hex[:8]
    keys = [f"{task.__name__}-{run}-{i:06d}" for i in range(len(items))]
    # The shared arguments go to the workers once, as data. Given to client.map, one over 100 kB (PhysioNet 2016's
    # manifest) became a task keyed by the argument's name alone, which distributed's scheduler failed to send.
    shared = {name: client.scatter(value, broadcast=True) for name, value in kwargs.items()}
    futures = client.map(task, items, key=keys, **shared)
    return futures, {future.key: item for future, item in zip(futures, items)}


@contextlib.contextmanager
def _connect(scheduler: str, key: str, local_workers: int) -> Iterator[Client]:
    """A client of the scheduler named by key (featurize.scheduler, crossval.scheduler), or of a LocalCluster of
    local_workers started for this run."""
    if scheduler == LOCAL_CLUSTER:
        with (
            _nanny_environment(),
            LocalCluster(
                n_workers=local_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # its HTTP routes on a free loopback port, not 8787 on every interface
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as e:
        raise ClusterError(
            f"{key}: cannot reach the Dask scheduler at {scheduler} within "
            f"{CONNECT_TIMEOUT_S} s ({e}); is `dask scheduler` running there, and is its port open to this machine?"
        ) from e
    with client:
        yield client


@contextlib.contextmanager
def _nanny_environment() -> Iterator[None]:
    """Dask config for the LocalCluster's nannies, and this process's environment put back afterwards.

    A nanny sets its pre-spawn variables in its own process (here, the client's) before starting a worker;
    left there, OMP_NUM_THREADS=1 would reach whatever this process runs next.
    """
    saved = dict(os.environ)
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{MALLOC_VARIABLE}": None}):
            yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


def _check_workers(client: Client, scheduler: str, key: str) -> int:
    """Wait for a worker, check the workers can run heartsound; returns the number of worker threads."""
    try:
        client.wait_for_workers(1, timeout=NO_WORKERS_TIMEOUT_S)
    except TimeoutError:
        raise ClusterError(
            f"{key}: no Dask worker joined the scheduler at {scheduler} within {NO_WORKERS_TIMEOUT_S} s; "
            f"start some with `dask worker {scheduler} --nthreads 1 --nworkers N` (docs/scaling.md)"
        ) from None
    try:
        malloc_settings = client.run(worker_malloc_setting)
    except ImportError as e:
        raise ClusterError(
            f"{key}: the workers of {scheduler} cannot import heartsound ({e}); start them in the "
            "project's environment, from a clone at the same path as this one"
        ) from e
    slow = sorted(worker for worker, setting in malloc_settings.items() if setting is not None)
    if slow and key == FEATURIZE:
        print(
            f"featurize: workers {', '.join(slow)} run with {MALLOC_VARIABLE} set, which makes featurize ~2x "
            "slower there; docs/scaling.md says how to start them without it",
            file=sys.stderr,
            flush=True,
        )
    return sum(client.nthreads().values())


def worker_malloc_setting() -> str | None:
    """A worker's MALLOC_TRIM_THRESHOLD_ (run on each worker: unpickling it also checks heartsound imports)."""
    return os.environ.get(MALLOC_VARIABLE)


def _path_of(batch: list[tuple[str, str]], sha: str) -> str:
    return next(path for path, content in batch if content == sha)


def _batches(todo: list[tuple[str, str]], workers: int) -> list[list[tuple[str, str]]]:
    """Consecutive runs of todo (largest files first), each one task: the biggest recordings start first."""
    size = min(RECORDINGS_PER_TASK, max(1, math.ceil(len(todo) / (max(1, workers) * TASKS_PER_WORKER))))
    return [todo[i : i + size] for i in range(0, len(todo), size)]


def _as_completed(client: Client, futures: list[Future], scheduler: str, key: str) -> Iterator[Future]:
    """The futures as they finish or fail; a ClusterError once the cluster has had no worker for too long."""
    done: queue.SimpleQueue[Future] = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(done.put)
    no_workers_since = None
    for _ in futures:
        while True:
            try:
                yield done.get(timeout=WATCH_INTERVAL_S)
                break
            except queue.Empty:
                pass
            if client.nthreads():
                no_workers_since = None
                continue
            no_workers_since = no_workers_since or time.monotonic()
            if time.monotonic() - no_workers_since > NO_WORKERS_TIMEOUT_S:
                waiting = sum(not future.done() for future in futures)
                raise ClusterError(
                    f"{key}: the scheduler at {scheduler} has had no worker for "
                    f"{NO_WORKERS_TIMEOUT_S} s, with {waiting} tasks still to run"
                )


def _failure(future: Future, scheduler: str, key: str, work: str) -> ClusterError:
    """The ClusterError for a failed task: what went wrong, and which work it held (recordings, a training)."""
    kept = "the recordings stored before are kept: run featurize again to finish" if key == FEATURIZE else "run again"
    if future.cancelled():
        return ClusterError(
            f"{key} ({scheduler}): the scheduler dropped the task of {work} (connection lost or scheduler "
            f"restarted); {kept}"
        )
    error = future.exception()
    if isinstance(error, ClusterError):
        return ClusterError(f"{key} ({scheduler}): {error}")
    if isinstance(error, KilledWorker):
        return ClusterError(
            f"{key} ({scheduler}): the workers running {work} died as many times as the scheduler allows "
            f"(distributed.scheduler.allowed-failures): out of memory, or killed? {kept[0].upper()}{kept[1:]}"
        )
    return ClusterError(f"{key} ({scheduler}): {type(error).__name__}: {error}; {work}")


# --- on the workers ---


@functools.cache
def _one_blas_thread() -> None:
    """features.limit_threads once per worker process: bit-identical to a local run, and each call costs
    ~3 ms in a worker (threadpoolctl scans every loaded library)."""
    features.limit_threads()


def featurize_batch(batch: list[tuple[str, str]], params: FeaturizeParams, cache_key: str) -> list[tuple[str, int]]:
    """One task, run on a worker: featurize each (path, sha256) into the cache; [(sha256, n_frames), ...].

    The worker's own cache key must be the client's: a worker on other code or library versions would store
    other numbers under the client's entries.
    """
    if features.cache_key(params) != cache_key:
        raise ClusterError(
            f"the worker on {socket.gethostname()} (pid {os.getpid()}) computes other features than the client "
            "(its feature code or numeric library versions differ): run the workers from the same commit and "
            "pinned environment"
        )
    _one_blas_thread()
    results = []
    for path, sha in batch:
        try:
            results.append(features._compute_entry(params, (path, sha)))
        except Exception as e:
            raise ClusterError(f"{path}: {type(e).__name__}: {e}") from None
    return results


# A worker keeps the last features it read (load_all's arrays and tables): every training of a run reads the same.
_loaded: dict[tuple, tuple] = {}


def train_on_worker(training, params: Params, features_dir: str, manifest, pretrained_dir, code_digest: str):
    """One task, run on a worker: crossval.train_and_predict of one training; its crossval.Trained."""
    import pandas as pd

    from heartsound import crossval

    if codedeps.source_digest("heartsound.crossval") != code_digest:
        raise ClusterError(
            f"the worker on {socket.gethostname()} (pid {os.getpid()}) runs other training code than the client: "
            "run the workers from the same commit and pinned environment"
        )
    try:
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(features_dir).iterdir())
    except FileNotFoundError:
        raise ClusterError(
            f"the worker on {socket.gethostname()} does not see the features at {features_dir}: crossval's "
            "workers need them on a filesystem they share at the same path"
        ) from None
    key = (features_dir, tuple(files), int(pd.util.hash_pandas_object(manifest).sum()))
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = crossval.load_all(features_dir, manifest)
    classes = features.load_meta(features_dir)["classes"]
    return crossval.train_and_predict(_loaded[key], classes, training, params, pretrained_dir)
