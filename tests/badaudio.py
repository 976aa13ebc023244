"""A corpus of bad and odd heart-sound files, generated at test time (no committed binaries).

`write_corpus(root)` writes every item under a PASCAL-style layout (`root/set_a`, `root/set_b`)
with PASCAL-style names, so the pascal reader labels them, and returns the items with the
outcome each must have: used (with the tone it must decode to) or rejected (with a substring
of the reason).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

TONE_HZ = 150.0  # inside the heart-sound band and below the Nyquist of the lowest rate (1 kHz)
AMPLITUDE = 0.5
DURATION_S = 3.0
RATES_HZ = (1000, 2000, 4000, 8000, 11025, 16000, 22050, 44100, 48000, 96000)
LONG_RATE_HZ = 44100
LONG_DURATION_S = 20 * 60.0
# Rejections about a file's label, not its audio (predict ignores labels).
LABEL_REASONS = ("unknown label", "conflicting labels")


@dataclass(frozen=True)
class Item:
    """One corpus file and the outcome prepare must give it."""

    path: str  # relative to the corpus root
    what: str
    reason: str | None = None  # None = used; else a substring of the rejection reason
    decodes: bool = True  # False: audio.load itself raises AudioError with `reason`
    tone_hz: float | None = TONE_HZ  # the sine a used file must decode to
    amplitude: float | None = AMPLITUDE  # its peak after mix-down and scaling
    amplitude_tolerance: float = 0.01  # lossy codecs and 8-bit PCM need more
    duration_s: float | None = DURATION_S
    duplicate_of: str | None = None  # the item (path) whose audio it repeats

    @property
    def used(self) -> bool:
        return self.reason is None

    @property
    def predict_reason(self) -> str | None:
        """What `heartsound predict` must report: labels play no part there, only the audio."""
        return None if self.reason is None or self.reason.startswith(LABEL_REASONS) else self.reason


def tone(rate_hz: int, duration_s: float = DURATION_S, amplitude: float = AMPLITUDE, start: int = 0) -> np.ndarray:
    """A float32 sine of TONE_HZ; `start` (in samples) lets long files be written block by block."""
    n = np.arange(start, start + int(round(duration_s * rate_hz)))
    return (amplitude * np.sin(2 * np.pi * TONE_HZ * n / rate_hz)).astype(np.float32)


def _write(root: Path, rel: str, samples: np.ndarray, rate_hz: int, **kwargs) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate_hz, **kwargs)


def _write_long(path: Path, rate_hz: int, duration_s: float) -> None:
    """Written in 10-s blocks, so making the file needs as little memory as reading it should."""
    path.parent.mkdir(parents=True, exist_ok=True)
    total, block = int(round(duration_s * rate_hz)), 10 * rate_hz
    with sf.SoundFile(path, "w", rate_hz, 1, subtype="PCM_16") as f:
        for start in range(0, total, block):
            f.write(tone(rate_hz, min(block, total - start) / rate_hz, start=start))


def write_corpus(root: str | Path, long_duration_s: float = LONG_DURATION_S) -> list[Item]:
    """Write the corpus under root; return its items (a 20-min file by default)."""
    root = Path(root)
    items: list[Item] = []
    add = items.append
    rate = 4000
    phase = iter(range(1, 1000))

    def fresh_tone(rate_hz: int, duration_s: float = DURATION_S, amplitude: float = AMPLITUDE) -> np.ndarray:
        """The tone from a new phase, so no two files hold identical audio unless meant to."""
        return tone(rate_hz, duration_s, amplitude, start=next(phase))

    # Not audio at all, or broken.
    (root / "set_a").mkdir(parents=True, exist_ok=True)
    (root / "set_a/normal__001_zero_bytes.wav").write_bytes(b"")
    add(Item("set_a/normal__001_zero_bytes.wav", "zero-byte file", reason="empty file", decodes=False))

    _write(root, "set_a/full.tmp.wav", fresh_tone(rate), rate, subtype="PCM_16")
    full = (root / "set_a/full.tmp.wav").read_bytes()
    (root / "set_a/full.tmp.wav").unlink()
    (root / "set_a/normal__002_truncated_header.wav").write_bytes(full[:30])
    add(
        Item(
            "set_a/normal__002_truncated_header.wav",
            "header cut before the data chunk",
            reason="unreadable audio",
            decodes=False,
        )
    )
    # Cut mid-sample too: 44 header bytes + an odd number of data bytes.
    (root / "set_a/normal__003_truncated_data.wav").write_bytes(full[: 44 + (len(full) - 44) // 2 + 1])
    add(Item("set_a/normal__003_truncated_data.wav", "data cut at half", reason="truncated", decodes=False))
    (root / "set_a/normal__004_text.wav").write_text("this is a text file, not a recording\n" * 20)
    add(Item("set_a/normal__004_text.wav", "text named .wav", reason="unreadable audio", decodes=False))

    # Other formats under a .wav name: libsndfile decodes by content, so they are used.
    _write(root, "set_a/normal__005_ogg_vorbis.wav", fresh_tone(8000), 8000, format="OGG", subtype="VORBIS")
    add(Item("set_a/normal__005_ogg_vorbis.wav", "OGG Vorbis named .wav", amplitude_tolerance=0.05))
    _write(root, "set_a/normal__006_mp3.wav", fresh_tone(8000), 8000, format="MP3", subtype="MPEG_LAYER_III")
    # MP3 frames add encoder delay and padding: the duration grows by a few hundredths of a second.
    add(Item("set_a/normal__006_mp3.wav", "MP3 named .wav", amplitude_tolerance=0.05))

    # Bit depths: libsndfile scales every integer depth to [-1, 1).
    _write(root, "set_a/murmur__007_pcm_u8.wav", fresh_tone(rate), rate, subtype="PCM_U8")
    add(Item("set_a/murmur__007_pcm_u8.wav", "8-bit unsigned PCM", amplitude_tolerance=0.02))
    _write(root, "set_a/murmur__008_pcm_24.wav", fresh_tone(rate), rate, subtype="PCM_24")
    add(Item("set_a/murmur__008_pcm_24.wav", "24-bit PCM"))
    _write(root, "set_a/murmur__009_float.wav", fresh_tone(rate), rate, subtype="FLOAT")
    add(Item("set_a/murmur__009_float.wav", "32-bit float PCM"))
    _write(root, "set_a/murmur__010_pcm_32.wav", fresh_tone(rate), rate, subtype="PCM_32")
    add(Item("set_a/murmur__010_pcm_32.wav", "32-bit integer PCM"))

    # Stereo with unequal channels: the mix-down (mean) has amplitude (0.8 + 0.2) / 2.
    start = next(phase)
    stereo = np.stack([tone(rate, amplitude=0.8, start=start), tone(rate, amplitude=0.2, start=start)], axis=1)
    _write(root, "set_a/murmur__011_stereo.wav", stereo, rate, subtype="PCM_16")
    add(Item("set_a/murmur__011_stereo.wav", "stereo, channels 0.8 and 0.2", amplitude=0.5))

    for i, r in enumerate(RATES_HZ):
        name = f"set_a/{('normal', 'murmur')[i % 2]}__{20 + i:03d}_rate_{r}.wav"
        _write(root, name, fresh_tone(r), r, subtype="PCM_16")
        add(Item(name, f"{r} Hz sample rate"))

    # Decodable but unusable.
    _write(root, "set_a/murmur__040_silent.wav", np.zeros(rate * 3, np.float32), rate, subtype="PCM_16")
    add(Item("set_a/murmur__040_silent.wav", "all-zero audio", reason="silent", decodes=False))
    for kind, value in (("nan", np.nan), ("inf", np.inf)):
        samples = fresh_tone(rate)
        samples[rate] = value
        _write(root, f"set_a/murmur__041_{kind}.wav", samples, rate, subtype="FLOAT")
        add(
            Item(
                f"set_a/murmur__041_{kind}.wav",
                f"a {kind} sample in a float WAV",
                reason="NaN or infinite",
                decodes=False,
            )
        )
    _write(root, "set_a/normal__042_short.wav", fresh_tone(rate, 0.2), rate, subtype="PCM_16")
    add(Item("set_a/normal__042_short.wav", "0.2-s recording", reason="too short"))

    _write_long(root / "set_a/normal__043_long.wav", LONG_RATE_HZ, long_duration_s)
    add(Item("set_a/normal__043_long.wav", f"{long_duration_s / 60:g}-min recording", duration_s=long_duration_s))

    # Names.
    _write(root, "set_a/normal__044_ with  spaces .wav", fresh_tone(rate), rate, subtype="PCM_16")
    add(Item("set_a/normal__044_ with  spaces .wav", "spaces in the name"))
    _write(root, "set_a/murmur__045_café_Ünïcødé_心音.wav", fresh_tone(rate), rate, subtype="PCM_16")
    add(Item("set_a/murmur__045_café_Ünïcødé_心音.wav", "non-ASCII name"))
    _write(root, "set_a/heartbeat__046.wav", fresh_tone(rate), rate, subtype="PCM_16")
    add(Item("set_a/heartbeat__046.wav", "unknown label prefix", reason="unknown label prefix 'heartbeat'"))

    # Identical audio under two labels: neither can be trusted.
    _write(root, "set_a/normal__047_conflict.wav", fresh_tone(rate), rate, subtype="PCM_16")
    shutil.copyfile(root / "set_a/normal__047_conflict.wav", root / "set_a/murmur__048_conflict.wav")
    add(Item("set_a/normal__047_conflict.wav", "labelled normal, a copy labelled murmur", reason="conflicting labels"))
    add(Item("set_a/murmur__048_conflict.wav", "labelled murmur, a copy labelled normal", reason="conflicting labels"))

    # Identical audio under two names of two set_b patients (301, 302); patient 302 has a
    # second, different recording, which must follow its patient into the duplicates' split.
    _write(root, "set_b/murmur__301_1001_B.wav", fresh_tone(rate, amplitude=0.3), rate, subtype="PCM_16")
    add(Item("set_b/murmur__301_1001_B.wav", "original of a duplicate", amplitude=0.3))
    shutil.copyfile(root / "set_b/murmur__301_1001_B.wav", root / "set_b/murmur__302_1002_B.wav")
    add(
        Item(
            "set_b/murmur__302_1002_B.wav",
            "byte-identical copy under another name",
            amplitude=0.3,
            duplicate_of="set_b/murmur__301_1001_B.wav",
        )
    )
    _write(root, "set_b/murmur__302_1003_B.wav", fresh_tone(rate, amplitude=0.4), rate, subtype="PCM_16")
    add(Item("set_b/murmur__302_1003_B.wav", "another recording of the copy's patient", amplitude=0.4))
    return items


def dominant_hz(samples: np.ndarray, rate_hz: int) -> float:
    """Frequency of the strongest FFT bin."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate_hz)[np.argmax(spectrum)])


def tone_amplitude(samples: np.ndarray) -> float:
    """Amplitude of a sine from its RMS (robust to the resampler's edge ringing)."""
    return float(np.sqrt(2 * np.mean(np.square(samples, dtype=np.float64))))
