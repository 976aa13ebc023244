"""Audio I/O: probe, decode to mono float32, resample; every failure is an AudioError with a reason."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

# Reading in blocks keeps memory flat for long recordings (a 20-min 44.1 kHz file is 53 M samples).
BLOCK_FRAMES = 1 << 16
PCM16_SCALE = np.float32(1.0 / 32768.0)


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
    """Read a file's header; raise AudioError if it is missing, empty, truncated or not decodable audio."""
    try:
        size_bytes = os.path.getsize(path)
    except OSError as e:
        raise AudioError(f"cannot open: {e.strerror or e}") from e
    if size_bytes == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"unreadable audio: {_clean(e, path)}") from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError("no audio frames")
    if info.format in ("WAV", "WAVEX"):
        try:
            _check_wav_complete(path, size_bytes, info.samplerate)
        except OSError as e:
            raise AudioError(f"cannot read: {e.strerror or e}") from e
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames), str(info.subtype))


# Writers that stream (and never patch the header) leave the data size at 0 or 0xFFFFFFFF.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


def _check_wav_complete(path: str | os.PathLike, size_bytes: int, rate_hz: int) -> None:
    """Raise AudioError if a RIFF/WAVE file holds less audio than its header announces.

    libsndfile silently decodes what is there, so a cut download or copy would pass as a
    shorter recording; the header's data-chunk size is the only trace of the cut.
    """
    block_align = 0
    with open(path, "rb") as f:
        if f.read(4) != b"RIFF" or not f.read(4) or f.read(4) != b"WAVE":
            return
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            chunk_id, chunk_bytes = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk_id == b"fmt " and chunk_bytes >= 14:
                fmt = f.read(14)
                if len(fmt) < 14:
                    return
                block_align = struct.unpack("<H", fmt[12:14])[0]
                f.seek(chunk_bytes - 14 + (chunk_bytes & 1), os.SEEK_CUR)
            elif chunk_id == b"data":
                held_bytes = size_bytes - f.tell()
                if chunk_bytes not in _UNKNOWN_SIZES and chunk_bytes > held_bytes and block_align:
                    per_s = block_align * rate_hz
                    raise AudioError(
                        f"truncated: the header announces {chunk_bytes / per_s:.2f} s of audio, "
                        f"the file holds {held_bytes / per_s:.2f} s"
                    )
                return
            else:
                f.seek(chunk_bytes + (chunk_bytes & 1), os.SEEK_CUR)


def _mono_blocks(path: str | os.PathLike, max_frames: int):
    """Yield the recording as mono float32 blocks; raise AudioError on bad data."""
    try:
        with sf.SoundFile(str(path)) as f:
            # 16-bit PCM (most stethoscope recordings) is read as int16 and scaled by numpy: the same floats
            # as libsndfile's own conversion, in half the time; integer samples cannot be NaN or infinite.
            pcm16 = f.subtype == "PCM_16"
            for block in f.blocks(
                BLOCK_FRAMES, dtype="int16" if pcm16 else "float32", always_2d=True, frames=max_frames
            ):
                if pcm16:
                    block = np.multiply(block, PCM16_SCALE, dtype=np.float32)
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                if not pcm16 and not np.isfinite(mono).all():
                    raise AudioError("contains NaN or infinite samples")
                yield mono
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"unreadable audio data: {_clean(e, path)}") from e
    except OSError as e:
        raise AudioError(f"cannot read: {e.strerror or e}") from e


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


def _clean(error: Exception, path: str | os.PathLike) -> str:
    """libsndfile's message on one line, without the path (the rejections file already has it)."""
    message = str(error).replace(f"Error opening {str(path)!r}: ", "").replace(str(path), "<file>")
    return " ".join(message.split())[:200]
