"""MFCC features: whole-recording MFCC frames, a per-recording cache, per-split arrays, fixed-length windows.

The MFCC is computed with numpy alone (mel filterbank and DCT built once per process), equal within float32
rounding to ``librosa.feature.mfcc`` on the whole recording; workers therefore start in milliseconds, with no
librosa import or numba compilation. Windows are slices of a recording's frames (the window hop is a whole
number of frames), so overlapping windows share their frames in memory, in the cache and on disk.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import importlib
import io
import json
import multiprocessing
import os
import stat
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from heartsound import audio, codedeps
from heartsound.config import FeaturizeParams, as_dict

if TYPE_CHECKING:
    import pandas as pd

# Params that change the numbers; jobs, cache_dir and scheduler only change how (and where) they are computed.
NOT_IN_KEY = ("jobs", "cache_dir", "scheduler")
WINDOW_COLUMNS = ["window", "recording_id", "label", "group", "start_s", "frame"]
SPLITS = ("train", "val", "test")
# As librosa.power_to_db: power floor and the dynamic range kept below the recording's peak.
AMIN = 1e-10
TOP_DB = 80.0
DTYPE = np.dtype("<f4")
# Written last into the features directory: which cache entries each split array holds, in order.
LAYOUT_FILE = "layout.json"
# Frames transformed together: bounds the spectra held at once (a few MB) however long the recording.
FRAMES_PER_BATCH = 4096


def feature_key_params(params: FeaturizeParams) -> dict:
    """The params a feature array depends on (what travels with a model)."""
    return {k: v for k, v in as_dict(params).items() if k not in NOT_IN_KEY}


def feature_description(params: FeaturizeParams) -> dict:
    """The feature params and one window's shape, as meta.json records them and a model carries them."""
    return {"featurize": feature_key_params(params), "feature_shape": list(feature_shape(params))}


def window_samples(params: FeaturizeParams) -> int:
    """Window length in samples at the feature rate."""
    return int(round(params.window_s * params.sample_rate_hz))


def frames_per_window(params: FeaturizeParams) -> int:
    """MFCC frames in one window: centred frames every hop_length samples, as librosa counts them."""
    return 1 + window_samples(params) // params.hop_length


def window_hop_frames(params: FeaturizeParams) -> int:
    """Window hop in whole frames (window_hop_s rounded to the frame grid), so windows share every frame."""
    return max(1, int(round(params.window_hop_s * params.sample_rate_hz / params.hop_length)))


def feature_shape(params: FeaturizeParams) -> tuple[int, int]:
    """Shape of one window's MFCC array: (n_mfcc, frames)."""
    return params.n_mfcc, frames_per_window(params)


def window_count(n_frames: int, params: FeaturizeParams) -> int:
    """Windows cut from a recording of n_frames frames (at least one window's worth, see recording_mfcc)."""
    return 1 + (n_frames - frames_per_window(params)) // window_hop_frames(params)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear_mel_per_hz = 3.0 / 200.0
    log_step = np.log(6.4) / 27.0  # 27 mels per factor 6.4 in frequency above the 1 kHz break
    mel = hz * linear_mel_per_hz
    above = hz >= 1000.0
    return np.where(above, 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) / log_step, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of _hz_to_mel."""
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (np.maximum(mel, 15.0) - 15.0)), mel * 200.0 / 3.0)


def mel_filterbank(sample_rate_hz: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float) -> np.ndarray:
    """Triangular mel filters with Slaney area normalisation, as librosa.filters.mel: float32 [n_mels, 1 + n_fft//2]."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate_hz)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin_hz), _hz_to_mel(fmax_hz), n_mels + 2))
    widths_hz = np.diff(edges_hz)
    rising = (fft_hz[None, :] - edges_hz[:-2, None]) / widths_hz[:-1, None]
    falling = (edges_hz[2:, None] - fft_hz[None, :]) / widths_hz[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Equal area per filter, so wide high-frequency filters do not dominate.
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: x [..., n_in] @ M -> the first n_out coefficients. float32 [n_in, n_out]."""
    n = np.arange(n_in)
    k = np.arange(n_out)
    basis = np.cos(np.pi * k[None, :] * (2 * n[:, None] + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    basis[:, 0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _mfcc_basis(
    sample_rate_hz: int, n_fft: int, n_mels: int, n_mfcc: int, fmin_hz: float, fmax_hz: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(periodic Hann window [n_fft], mel filters transposed [freqs, n_mels], DCT [n_mels, n_mfcc]), built once."""
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    mel = mel_filterbank(sample_rate_hz, n_fft, n_mels, fmin_hz, fmax_hz)
    return hann, np.ascontiguousarray(mel.T), dct_matrix(n_mels, n_mfcc)


def recording_mfcc(samples: np.ndarray, params: FeaturizeParams) -> np.ndarray:
    """MFCC of a whole signal at the feature rate, time first: float32 [frames, n_mfcc].

    As librosa.feature.mfcc(y=signal) with the params' n_fft, hop_length, n_mels, fmin/fmax, centred
    zero-padded frames and power_to_db(top_db=80) over the recording. A signal shorter than one window
    is zero-padded to one, so every recording gives at least one window. Then featurize.normalise (see
    normalised).
    """
    signal = np.asarray(samples, dtype=np.float32)
    length = window_samples(params)
    n_fft, hop = params.n_fft, params.hop_length
    padded = np.pad(signal, (n_fft // 2, n_fft // 2 + max(0, length - len(signal))))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # a view: no copy
    hann, mel_t, dct = _mfcc_basis(
        params.sample_rate_hz, n_fft, params.n_mels, params.n_mfcc, params.fmin_hz, params.fmax_hz
    )
    log_mel = np.empty((len(frames), params.n_mels), np.float32)
    for first in range(0, len(frames), FRAMES_PER_BATCH):
        batch = frames[first : first + FRAMES_PER_BATCH] * hann
        # numpy's FFT: scipy's is ~1.5x faster, but importing scipy.fft costs more than featurizing a few files.
        spectrum = np.fft.rfft(batch, axis=-1)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        np.log10(np.maximum(power @ mel_t, AMIN), out=log_mel[first : first + FRAMES_PER_BATCH])
    log_mel *= np.float32(10.0)
    np.maximum(log_mel, log_mel.max() - np.float32(TOP_DB), out=log_mel)
    return normalised(log_mel @ dct, 1 + len(signal) // hop, params.normalise)


def normalised(mfcc: np.ndarray, n_signal_frames: int, how: str) -> np.ndarray:
    """Cepstral mean (cmn) or mean and variance (cmvn) normalisation over a recording's frames, in place.

    The statistics are taken over the frames that hold the signal, not the zero padding of a short recording.
    """
    if how == "none":
        return mfcc
    signal_frames = mfcc[: max(1, n_signal_frames)]
    mean, std = signal_frames.mean(axis=0), signal_frames.std(axis=0)
    mfcc -= mean
    if how == "cmvn":
        mfcc /= np.maximum(std, np.float32(1e-3))
    return mfcc


def windows_of(frames: np.ndarray, params: FeaturizeParams) -> np.ndarray:
    """The windows of a recording's MFCC frames [frames, n_mfcc]: float32 [n_windows, n_mfcc, frames_per_window].

    Windows of window_s every window_hop_s (on the frame grid), so a frame shared by overlapping windows is
    computed once.
    """
    view = np.lib.stride_tricks.sliding_window_view(frames, frames_per_window(params), axis=0)
    return np.ascontiguousarray(view[:: window_hop_frames(params)])


def mfcc_windows(samples: np.ndarray, params: FeaturizeParams) -> np.ndarray:
    """MFCC windows of a signal at the feature rate: float32 [n_windows, n_mfcc, frames_per_window]."""
    return windows_of(recording_mfcc(samples, params), params)


def recording_frames(path: str | os.PathLike, params: FeaturizeParams) -> np.ndarray:
    """Decode, resample and featurize one recording file: its MFCC frames, float32 [frames, n_mfcc]."""
    samples, _ = audio.load(path, params.sample_rate_hz, params.max_duration_s)
    return recording_mfcc(samples, params)


def recording_features(path: str | os.PathLike, params: FeaturizeParams) -> np.ndarray:
    """Decode, resample and featurize one recording file: its windows, float32 [n_windows, n_mfcc, frames]."""
    return windows_of(recording_frames(path, params), params)


def cache_key(params: FeaturizeParams) -> str:
    """What a cached recording's features are a function of, besides its content: the feature params, the
    source of this module and of everything it imports (so any edit to the feature or audio code, not only a
    remembered version bump, invalidates the cache) and the versions of the numeric libraries it calls."""
    key = {
        "params": feature_key_params(params),
        "code": codedeps.source_digest(__name__),
        "libraries": {
            "numpy": np.__version__,
            "soxr": audio.soxr.__version__,
            "soundfile": audio.sf.__version__,
            "libsndfile": audio.sf.__libsndfile_version__,
        },
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """Per-recording feature arrays keyed by the recording's content hash and cache_key (params, code, libraries).

    Layout: <directory>/<cache key>/<sha[:2]>/<sha>.npy. Entries are written to a temp file and renamed,
    so an interrupted run leaves no half-written entry under a real name; an entry whose header, shape,
    dtype or size is wrong is treated as missing and recomputed.
    """

    def __init__(self, directory: str | os.PathLike, params: FeaturizeParams):
        self.directory = Path(directory)
        self.params = params
        self.n_mfcc = params.n_mfcc
        self.min_frames = frames_per_window(params)
        self.header_bytes = len(_npy_header((1, self.n_mfcc)))  # 128: the same for any frame count
        self.key = cache_key(params)

    def path_for(self, content_sha256: str) -> Path:
        return self.directory / self.key / content_sha256[:2] / f"{content_sha256}.npy"

    def _check(self, fd: int) -> tuple[int, int] | None:
        """(n_frames, data offset) of an open entry if it is complete and as put() writes it, else None.

        The frame count follows from the file size; the header must then be byte for byte the one np.save
        writes for that shape. No parsing: checking every entry of a large cache is most of a run that has
        one changed recording.
        """
        n_frames, rest = divmod(os.fstat(fd).st_size - self.header_bytes, self.frame_bytes)
        if rest or n_frames < self.min_frames:
            return None  # truncated, trailing garbage, or too short for a window
        header = _npy_header((n_frames, self.n_mfcc))
        if len(header) != self.header_bytes or os.pread(fd, len(header), 0) != header:
            return None
        return n_frames, len(header)

    def frames_in(self, content_sha256: str) -> int | None:
        """Number of frames of a valid entry, or None if it is missing or unusable (reads the header only)."""
        try:
            fd = os.open(self.path_for(content_sha256), os.O_RDONLY)
        except OSError:
            return None
        try:
            checked = self._check(fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        return None if checked is None else checked[0]

    def get(self, content_sha256: str) -> np.ndarray | None:
        """The entry's array, or None if it is missing or unusable."""
        if self.frames_in(content_sha256) is None:
            return None
        try:
            return np.load(self.path_for(content_sha256), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None

    def put(self, content_sha256: str, array: np.ndarray) -> None:
        """Store an entry atomically (temp file in the same directory, then rename).

        Temp files of the same entry left by killed writers are removed once the entry is stored.
        """
        path = self.path_for(content_sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(array, dtype=DTYPE), allow_pickle=False)
            os.replace(tmp, path)
        except FileNotFoundError:
            # Another run storing the same entry removed our temp file after storing it: same content, done.
            if self.frames_in(content_sha256) != len(array):
                raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # A plain listing, not glob(): compiling a glob pattern per entry cost ~10% of a cold run.
        for name in os.listdir(path.parent):
            if name.startswith(path.stem) and name.endswith(".tmp"):
                (path.parent / name).unlink(missing_ok=True)

    @property
    def frame_bytes(self) -> int:
        return self.n_mfcc * DTYPE.itemsize

    def copy_data(self, content_sha256: str, n_frames: int, out_fd: int, out_offset: int) -> int:
        """Write an entry's raw array bytes into out_fd at out_offset (kernel-side copy where possible).

        Returns the offset just after them.
        """
        path = self.path_for(content_sha256)
        with open(path, "rb") as f:
            checked = self._check(f.fileno())
            if checked is None or checked[0] != n_frames:
                raise RuntimeError(f"feature cache entry {path} vanished or changed during featurize")
            count = n_frames * self.frame_bytes
            _copy_range(f.fileno(), checked[1], out_fd, out_offset, count)
        return out_offset + count


def _copy_range(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, count: int) -> None:
    """Copy count bytes between two files at the given offsets."""
    try:
        while count > 0:
            copied = os.copy_file_range(src_fd, dst_fd, count, src_offset, dst_offset)
            if copied == 0:
                raise RuntimeError("source ended early")
            src_offset, dst_offset, count = src_offset + copied, dst_offset + copied, count - copied
    except (AttributeError, OSError):
        # No copy_file_range (not Linux) or not between these file systems: copy through user space.
        data = os.pread(src_fd, count, src_offset)
        if len(data) != count:
            raise RuntimeError("source ended early") from None
        os.pwrite(dst_fd, data, dst_offset)


def _compute_entry(params: FeaturizeParams, task: tuple[str, str]) -> tuple[str, int]:
    """Featurize one recording into the cache. task = (path, sha256); returns (sha256, n_frames)."""
    path, sha = task
    array = recording_frames(path, params)
    FeatureCache(params.cache_dir, params).put(sha, array)
    return sha, len(array)


def limit_threads() -> None:
    """One BLAS thread per process: workers already use every core the run was given, and the MFCC
    matrix products are small (on a busy machine OpenBLAS's thread pool made them ~3x slower)."""
    threadpool_limits(1)


def worker_pool(jobs: int) -> ProcessPoolExecutor:
    """Feature worker processes (featurize, predict).

    Fork (where available) starts them in milliseconds with everything already imported; but forking a
    process that runs TensorFlow's threads is unsafe, so a process that imported it spawns instead.
    """
    fork = "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"
    method = "fork" if fork and "tensorflow" not in sys.modules else "spawn"
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(method), initializer=limit_threads)


def read_manifest(path: str | os.PathLike) -> list[dict[str, str]]:
    """prepare's manifest.csv as a list of rows (column -> text)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _rows(manifest: list[dict] | pd.DataFrame) -> list[dict]:
    """Manifest rows as dicts, from read_manifest or a DataFrame. The featurize stage does not import pandas:
    its import alone (~0.25 s) would be most of a run that has one changed recording to featurize."""
    return manifest.to_dict("records") if hasattr(manifest, "to_dict") else list(manifest)


def fill_cache(manifest: list[dict] | pd.DataFrame, params: FeaturizeParams) -> tuple[dict[str, int], dict[str, int]]:
    """Compute every recording missing from the cache, in parallel.

    Valid entries are found from their headers alone; only the missing ones go to workers, so a run with
    one new recording costs one recording. Returns ({sha256: n_frames}, {"computed": n, "cached": m}).
    """
    cache = FeatureCache(params.cache_dir, params)
    n_frames, todo = {}, []
    paths = {row["sha256"]: row["path"] for row in reversed(_rows(manifest))}  # the first path of each content
    for sha, path in paths.items():
        n = cache.frames_in(sha)
        if n is None:
            todo.append((path, sha))
        else:
            n_frames[sha] = n
    counts = {"computed": len(todo), "cached": len(n_frames)}
    # Largest files first, so no worker is left with one long file at the end.
    todo.sort(key=lambda task: os.path.getsize(task[0]), reverse=True)
    jobs = min(params.jobs or os.cpu_count() or 1, len(todo))
    work = functools.partial(_compute_entry, params)
    if params.scheduler is not None and todo:
        # The Dask path lives in its own module, imported only here: a default run never imports Dask. It is
        # imported by name, not by an import statement, so codedeps keeps it out of the cache key and the stage's
        # DVC deps: where recordings are featurized does not change their features (tests/test_cluster.py).
        cluster = importlib.import_module("heartsound.cluster")
        _collect(cluster.compute_entries(todo, params), n_frames, len(todo))
    elif jobs <= 1:
        with threadpool_limits(1):  # the same BLAS set-up as a worker, so results are bit-identical
            _collect(map(work, todo), n_frames, len(todo))
    else:
        with worker_pool(jobs) as pool:
            _collect(pool.map(work, todo, chunksize=2), n_frames, len(todo))
    return n_frames, counts


def _collect(results, n_frames: dict[str, int], total: int) -> None:
    with tqdm(total=total, desc="featurize", unit="file", mininterval=1.0, disable=total == 0) as progress:
        for sha, n in results:
            n_frames[sha] = n
            progress.update()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(DTYPE), "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def _read_layout(out_dir: Path, digest: str) -> dict[str, list[list]]:
    """The per-split [(sha256, n_frames), ...] the arrays in out_dir were written with, if for these params."""
    try:
        layout = json.loads((out_dir / LAYOUT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return layout.get("splits", {}) if layout.get("cache_key") == digest else {}


def _writable_in_place(path: Path, header: bytes, size: int) -> bool:
    """An existing array we alone own (not a link into DVC's cache, not read-only) with the expected header."""
    try:
        st = os.lstat(path)
        with open(path, "rb") as f:
            existing = f.read(len(header))
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_nlink == 1
        and bool(st.st_mode & stat.S_IWUSR)
        and (existing == header and st.st_size == size)
    )


def _write_split_array(path: Path, layout: list[tuple[str, int]], old: list | None, cache: FeatureCache) -> None:
    """Make path the .npy of the layout's entries, end to end, touching as few bytes as it can.

    With the previous layout (old) of an array still in place, the common prefix stays; after it, entries
    of unchanged frame counts are overwritten one by one where their content changed, otherwise the rest
    is rewritten. Without it, the file is replaced (unlinked first, so a hard link into DVC's cache is
    never written through).
    """
    total = sum(n for _, n in layout)
    header = _npy_header((total, cache.n_mfcc))
    old_header = _npy_header((sum(n for _, n in old), cache.n_mfcc)) if old else b""
    old_size = len(old_header) + sum(n for _, n in old or []) * cache.frame_bytes
    if old and len(old_header) == len(header) and _writable_in_place(path, old_header, old_size):
        keep = 0
        while keep < min(len(old), len(layout)) and tuple(old[keep]) == tuple(layout[keep]):
            keep += 1
        fd = os.open(path, os.O_WRONLY)
        try:
            offset = len(header) + sum(n for _, n in layout[:keep]) * cache.frame_bytes
            same_counts = [n for _, n in old[keep:]] == [n for _, n in layout[keep:]]
            if not same_counts:
                os.ftruncate(fd, offset)
            for (sha, n), previous in zip(layout[keep:], old[keep:] if same_counts else [None] * len(layout)):
                if previous is not None and previous[0] == sha:
                    offset += n * cache.frame_bytes
                else:
                    offset = cache.copy_data(sha, n, fd, offset)
            os.pwrite(fd, header, 0)
        finally:
            os.close(fd)
        return
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, header)
        offset = len(header)
        for sha, n in layout:
            offset = cache.copy_data(sha, n, fd, offset)
    finally:
        os.close(fd)


def write_split_arrays(
    manifest: list[dict] | pd.DataFrame, n_frames: dict[str, int], params: FeaturizeParams, out_dir: str | os.PathLike
) -> dict:
    """Write out_dir/<split>.npy (the split's MFCC frames, cached entries end to end) and <split>_windows.csv
    (window -> recording, and the window's first frame in the array).

    Entries are copied byte for byte, so memory stays flat and no MFCC is re-parsed. Arrays left by the
    previous run are updated rather than rewritten (see _write_split_array): the stage's outputs persist
    between runs, and one changed recording then costs its own bytes, not the whole data set's.
    out_dir/layout.json records what the arrays hold; it is removed before any array is touched and
    written last, so an interrupted run leaves no layout and the next run rewrites everything.
    Returns {split: {"recordings": n, "windows": m}}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache(params.cache_dir, params)
    previous = _read_layout(out_dir, cache.key)
    (out_dir / LAYOUT_FILE).unlink(missing_ok=True)
    hop_frames = window_hop_frames(params)
    rows = _rows(manifest)
    summary, layouts = {}, {}
    for split in SPLITS:
        recordings = [row for row in rows if row["split"] == split]
        layouts[split] = [(row["sha256"], n_frames[row["sha256"]]) for row in recordings]
        _write_split_array(out_dir / f"{split}.npy", layouts[split], previous.get(split), cache)
        with open(out_dir / f"{split}_windows.csv", "w", newline="", encoding="utf-8") as f:
            f.write(",".join(WINDOW_COLUMNS) + "\n")
            window, first_frame = 0, 0
            for row, (_, frames) in zip(recordings, layouts[split]):
                # The recording's fields are quoted once, not once per window: the tables of a large
                # data set are most of the stage's time when one recording changed.
                fields = io.StringIO()
                csv.writer(fields, lineterminator="").writerow((row["recording_id"], row["label"], row["group"]))
                fields = fields.getvalue()
                for nth in range(window_count(frames, params)):
                    start_s = round(nth * hop_frames * params.hop_length / params.sample_rate_hz, 4)
                    f.write(f"{window},{fields},{start_s},{first_frame + nth * hop_frames}\n")
                    window += 1
                first_frame += frames
        summary[split] = {"recordings": len(recordings), "windows": window}
    layout = {"cache_key": cache.key, "splits": layouts}
    (out_dir / LAYOUT_FILE).write_text(json.dumps(layout), encoding="utf-8")
    return summary


def featurize(manifest: list[dict] | pd.DataFrame, params: FeaturizeParams, out_dir: str | os.PathLike) -> dict:
    """The featurize step: fill the cache, then write per-split arrays and their metadata.

    Returns {"computed": n, "cached": m, <split>: {"recordings", "windows"}}.
    """
    rows = _rows(manifest)
    n_frames, counts = fill_cache(rows, params)
    summary = write_split_arrays(rows, n_frames, params, out_dir)
    classes = sorted({row["label"] for row in rows})
    meta = {"classes": classes, **feature_description(params), "splits": summary}
    with open(Path(out_dir) / "meta.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
    return {**counts, **summary}


def load_split(features_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, pd.DataFrame]:
    """(windows array [n, n_mfcc, frames], window table) of one split written by featurize.

    The windows are cut from the split's frame array (read through a memory map) into one new array.
    """
    import pandas as pd

    features_dir = Path(features_dir)
    windows = pd.read_csv(
        features_dir / f"{split}_windows.csv", dtype={"recording_id": str, "label": str, "group": str}
    )
    n_mfcc, window_frames = load_meta(features_dir)["feature_shape"]
    if windows.empty:
        return np.empty((0, n_mfcc, window_frames), DTYPE), windows
    frames = np.load(features_dir / f"{split}.npy", mmap_mode="r")
    view = np.lib.stride_tricks.sliding_window_view(frames, window_frames, axis=0)
    return np.ascontiguousarray(view[windows["frame"].to_numpy()]), windows


def load_meta(features_dir: str | os.PathLike) -> dict:
    """The meta.json written by featurize: classes, feature params, feature shape, split sizes."""
    with open(Path(features_dir) / "meta.json", encoding="utf-8") as f:
        return json.load(f)
