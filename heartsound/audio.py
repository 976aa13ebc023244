"""Audio I/O: probe, decode to mono float32, resample; every failure is an AudioError with a reason."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

# Reading in blocks keeps memory flat for long recordings (a 20-min 44.1 kHz file is 53 M samples).
BLOCK_FRAMES = 1 << 16


class AudioError(Exception):
    """A recording that cannot be used; str(error) is the reason."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate_hz: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz if self.sample_rate_hz else 0.0


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header; raise AudioError if it is empty or not decodable audio."""
    if os.path.getsize(path) == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"unreadable audio: {_clean(e)}") from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError("no audio frames")
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.subtype))


def _mono_blocks(path: str | os.PathLike, max_frames: int):
    """Yield the recording as mono float32 blocks; raise AudioError on bad data."""
    try:
        with sf.SoundFile(str(path)) as f:
            for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True, frames=max_frames):
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                if not np.isfinite(mono).all():
                    raise AudioError("contains NaN or infinite samples")
                yield mono
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"unreadable audio data: {_clean(e)}") from e


def _check_decoded(frames: int, peak: float) -> None:
    if frames == 0:
        raise AudioError("no audio frames could be decoded")
    if peak == 0.0:
        raise AudioError("silent (all samples are zero)")


def scan(path: str | os.PathLike) -> AudioInfo:
    """Decode the whole file without keeping it; return its info with the decoded frame count.

    The decoded length wins over the header: a truncated file announces more frames than it holds.
    """
    info = probe(path)
    frames, peak = 0, 0.0
    for mono in _mono_blocks(path, -1):
        frames += len(mono)
        peak = max(peak, float(np.abs(mono).max(initial=0.0)))
    _check_decoded(frames, peak)
    return AudioInfo(info.sample_rate_hz, info.channels, frames, info.subtype)


def load(
    path: str | os.PathLike,
    sample_rate_hz: int | None = None,
    max_duration_s: float | None = None,
) -> tuple[np.ndarray, int]:
    """Decode a file to mono float32 in [-1, 1], resampled to sample_rate_hz if given.

    Returns (samples, rate); only the resampled signal is held in memory.
    Raises AudioError for unreadable, truncated, empty, non-finite or silent audio.
    """
    info = probe(path)
    rate = sample_rate_hz or info.sample_rate_hz
    max_frames = -1 if max_duration_s is None else int(round(max_duration_s * info.sample_rate_hz))
    resampler = None
    if rate != info.sample_rate_hz:
        resampler = soxr.ResampleStream(info.sample_rate_hz, rate, 1, dtype="float32", quality="HQ")
    chunks, frames, peak = [], 0, 0.0
    for mono in _mono_blocks(path, max_frames):
        frames += len(mono)
        peak = max(peak, float(np.abs(mono).max(initial=0.0)))
        chunks.append(resampler.resample_chunk(mono) if resampler else mono.copy())
    _check_decoded(frames, peak)
    if resampler is not None:
        chunks.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(chunks).astype(np.float32, copy=False), rate


def _clean(error: Exception) -> str:
    return " ".join(str(error).split())[:200]
