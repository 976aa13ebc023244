"""Classify recording files with a trained model: training's features, evaluate's aggregation, one row per file.

Module-level imports stay light (`heartsound.predict` loads this module); numpy, pandas and the model
backends are imported when predict() runs.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from heartsound.config import PrepareParams

if TYPE_CHECKING:
    import pandas as pd

    from heartsound.config import FeaturizeParams

# Suffixes picked up when a directory is searched; a file named explicitly is tried whatever its name.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
# prepare.min_duration_s's default: shorter recordings never reached training, so the model
# has not seen one; a window of mostly zero padding would still get a confident-looking answer.
MIN_DURATION_S = PrepareParams.min_duration_s
# Windows buffered per model call and aggregation: amortises Keras's per-call cost and pandas's groupby.
BATCH_WINDOWS = 256
# Below this many files a worker pool costs more to start than it saves.
MIN_FILES_FOR_POOL = 8
MIN_FILES_FOR_PROGRESS = 10


def find_recordings(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """PATH arguments -> [(path, error or None)], in argument order, each file once.

    A file is taken as given; a directory is searched recursively for AUDIO_SUFFIXES; a
    pattern with * ? [ is globbed (** spans directories). A path that matches nothing
    comes back with an error instead of being dropped silently.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    found: list[tuple[str, str | None]] = []
    seen: set[str] = set()

    def add(path: str, error: str | None = None) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            found.append((path, error))

    for arg in map(os.fspath, paths):
        if os.path.isdir(arg):
            files = sorted(str(p) for p in Path(arg).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                add(arg, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in this directory")
            for f in files:
                add(f)
        elif os.path.exists(arg):
            add(arg)
        elif glob.has_magic(arg):
            matches = sorted(m for m in glob.glob(arg, recursive=True) if os.path.isfile(m))
            if not matches:
                add(arg, "no file matches this pattern")
            for m in matches:
                add(m)
        else:
            add(arg, "no such file or directory")
    return found


def recording_windows(task: tuple[str, FeaturizeParams, float, bool]) -> tuple[tuple | None, str | None]:
    """(path, feature params, minimum duration, with cycle features) -> ((windows, cycle features or None), None)
    or (None, reason it failed).

    Features come from features.recording_features and cycles.file_cycle_features, the functions the featurize
    and segment stages use for training.
    """
    from heartsound import audio, features

    path, params, min_duration_s, with_cycles = task
    try:
        info = audio.probe(path)
        if info.duration_s < min_duration_s:
            raise audio.AudioError(f"too short: {info.duration_s:.2f} s (the minimum is {min_duration_s:g} s)")
        if not with_cycles:
            return (features.recording_features(path, params), None), None
        from heartsound import cycles

        if params.sample_rate_hz == cycles.ENERGY_RATE_HZ and params.max_duration_s is None:
            # Both from one decoding: the same samples the featurize and segment stages decode separately.
            samples, rate = audio.load(path, params.sample_rate_hz)
            return (features.mfcc_windows(samples, params), cycles.recording_cycle_features(samples, rate)[0]), None
        return (features.recording_features(path, params), cycles.file_cycle_features(path)[0]), None
    except audio.AudioError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a batch; its reason is reported
        return None, f"failed: {type(e).__name__}: {e}"


def predict(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    model: str | os.PathLike = "models",
    backend: str = "tflite",
    jobs: int = 0,
    min_duration_s: float = MIN_DURATION_S,
    progress: bool = False,
) -> pd.DataFrame:
    """Classify recordings with the model in directory `model`.

    paths: files, directories (searched recursively) or glob patterns.
    backend: "tflite" (light, no TensorFlow import) or "keras" (model.h5, the reference).
    jobs: feature worker processes; 0 = all cores.
    Returns one row per file: path, predicted, confidence, p_<class> for every class, error
    (None, or why the file could not be classified; its other fields are then empty).
    Raises inference.ModelError if the model is missing or inconsistent.
    """
    import numpy as np
    import pandas as pd
    from tqdm import tqdm

    from heartsound import evaluation, features, inference

    info = inference.read_metadata(model)
    if info.cycle_head is not None:
        from heartsound import cycles

        if info.cycle_head.feature_names != cycles.FEATURE_NAMES:
            raise inference.ModelError(
                f"{model}: the cycle head was fitted on other cycle features than this version computes; retrain it"
            )
    found = find_recordings(paths)
    columns = ["path", "predicted", "confidence", *(f"p_{c}" for c in info.classes), "error"]
    rows: list[dict | None] = [None] * len(found)
    for i, (path, error) in enumerate(found):
        if error is not None:
            rows[i] = {"path": path, "error": error}
    todo = [i for i, (_, error) in enumerate(found) if error is None]
    tasks = [(found[i][0], info.featurize, min_duration_s, info.cycle_head is not None) for i in todo]

    jobs = min(jobs or os.cpu_count() or 1, len(tasks))
    inference.check_backend(backend)
    pool = features.worker_pool(jobs) if jobs > 1 and len(tasks) >= MIN_FILES_FOR_POOL else None
    try:
        # The pool is forked before a backend starts threads (or imports TensorFlow).
        runner = inference.BACKENDS[backend](info)
        if pool is None:
            features.limit_threads()
            results = map(recording_windows, tasks)
        else:
            results = pool.map(recording_windows, tasks, chunksize=max(1, min(16, len(tasks) // (jobs * 8))))
        pending: list[tuple[int, tuple]] = []  # (row, (feature windows, cycle features)) awaiting the model

        def classify_pending() -> None:
            """Run the buffered recordings' windows through the model; aggregate as evaluate does."""
            if not pending:
                return
            probs = runner.predict(np.concatenate([x for _, (x, _) in pending]))
            owners = np.repeat([i for i, _ in pending], [len(x) for _, (x, _) in pending])
            recording_probs = evaluation.aggregate(probs, owners, info.aggregation).to_numpy()
            if info.cycle_head is not None:
                recording_probs = info.cycle_head.fuse(recording_probs, np.stack([c for _, (_, c) in pending]))
            for i, p in zip([i for i, _ in pending], recording_probs):
                best = int(p.argmax())
                rows[i] = {
                    "path": found[i][0],
                    "predicted": info.classes[best],
                    "confidence": float(p[best]),
                    **{f"p_{c}": float(v) for c, v in zip(info.classes, p)},
                    "error": None,
                }
            pending.clear()

        # disable=None: tqdm draws only on a terminal, so logs and pipes stay clean.
        disable = None if progress and len(tasks) >= MIN_FILES_FOR_PROGRESS else True
        with tqdm(total=len(tasks), desc="predict", unit="file", file=sys.stderr, disable=disable) as bar:
            for i, (inputs, error) in zip(todo, results):
                if error is not None:
                    rows[i] = {"path": found[i][0], "error": error}
                else:
                    pending.append((i, inputs))
                    if sum(len(x) for _, (x, _) in pending) >= BATCH_WINDOWS:  # a few dozen recordings at most
                        classify_pending()
                bar.update()
            classify_pending()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    table = pd.DataFrame(rows, columns=columns)
    table["error"] = table["error"].astype(object).where(table["error"].notna(), None)
    return table


def failures(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a predict() table whose file could not be classified."""
    return table[table["error"].notna()]
