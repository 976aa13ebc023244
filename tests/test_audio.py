"""audio.py on the bad-input corpus: every file decodes to its known tone or fails with its reason."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from badaudio import AMPLITUDE, DURATION_S, TONE_HZ, dominant_hz, tone, tone_amplitude, write_corpus

from heartsound import audio

FEATURE_RATE_HZ = 2000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(root)


def test_used_files_decode_to_their_tone(corpus):
    """Any format, depth, rate and channel count comes out as the same mono tone at the feature rate."""
    root, items = corpus
    problems = []
    for item in (i for i in items if i.used):
        samples, rate = audio.load(root / item.path, FEATURE_RATE_HZ)
        duration_s = len(samples) / rate
        # Resampler edges and codec delay blur the ends; judge the middle.
        middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
        got = {
            "rate": rate,
            "dtype": str(samples.dtype),
            "ndim": samples.ndim,
            "duration_s": round(duration_s, 3),
            "hz": dominant_hz(middle, rate),
            "amplitude": round(tone_amplitude(middle), 4),
        }
        ok = (
            rate == FEATURE_RATE_HZ
            and samples.dtype == np.float32
            and samples.ndim == 1
            and abs(duration_s - item.duration_s) < 0.1
            and abs(got["hz"] - item.tone_hz) < 1.0
            and abs(got["amplitude"] - item.amplitude) <= item.amplitude_tolerance
        )
        if not ok:
            problems.append(f"{item.path} ({item.what}): {got}")
    assert not problems, "\n".join(problems)


def test_broken_files_raise_audio_error_with_their_reason(corpus):
    root, items = corpus
    for item in (i for i in items if not i.decodes):
        for decode in (audio.scan, lambda p: audio.load(p, FEATURE_RATE_HZ)):
            with pytest.raises(audio.AudioError) as error:
                decode(root / item.path)
            assert item.reason in str(error.value), item.what
            # Reasons go to rejections.csv next to the path: they must not repeat it.
            assert str(root) not in str(error.value)


def test_scan_reports_decoded_channels_rate_and_length(corpus):
    root, items = corpus
    by_what = {i.what: i for i in items}
    stereo = audio.scan(root / by_what["stereo, channels 0.8 and 0.2"].path)
    assert (stereo.channels, stereo.sample_rate_hz, stereo.frames) == (2, 4000, 4000 * DURATION_S)
    low = audio.scan(root / by_what["1000 Hz sample rate"].path)
    assert (low.sample_rate_hz, low.duration_s) == (1000, DURATION_S)
    assert audio.scan(root / by_what["24-bit PCM"].path).subtype == "PCM_24"


def test_stereo_is_the_mean_of_its_channels(tmp_path):
    left, right = tone(4000, amplitude=0.6), np.zeros(4000 * 3, np.float32)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 4000, subtype="FLOAT")
    samples, _ = audio.load(tmp_path / "s.wav")
    np.testing.assert_allclose(samples, left / 2, atol=1e-7)


def test_max_duration_keeps_only_the_start(tmp_path):
    sf.write(tmp_path / "a.wav", tone(4000), 4000, subtype="PCM_16")
    samples, rate = audio.load(tmp_path / "a.wav", FEATURE_RATE_HZ, max_duration_s=1.0)
    assert (len(samples), rate) == (FEATURE_RATE_HZ, FEATURE_RATE_HZ)


def _wav_bytes(tmp_path) -> bytes:
    sf.write(tmp_path / "ref.wav", tone(4000), 4000, subtype="PCM_16")
    data = (tmp_path / "ref.wav").read_bytes()
    assert data[36:40] == b"data"  # libsndfile's plain 44-byte header
    return data


def test_truncation_is_found_behind_other_chunks(tmp_path):
    data = _wav_bytes(tmp_path)
    chunk = b"LIST" + struct.pack("<I", 5) + b"INFO!" + b"\0"  # odd size: padded to even
    cut = data[:36] + chunk + data[36 : 44 + 4000]
    (tmp_path / "cut.wav").write_bytes(cut)
    with pytest.raises(
        audio.AudioError, match=r"truncated: the header announces 3.00 s of audio, the file holds 0.50 s"
    ):
        audio.load(tmp_path / "cut.wav")


def test_streamed_wav_with_unknown_data_size_is_used(tmp_path):
    """Streaming writers leave 0xFFFFFFFF as the data size: that is not a truncation."""
    data = bytearray(_wav_bytes(tmp_path))
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    (tmp_path / "streamed.wav").write_bytes(data)
    assert audio.scan(tmp_path / "streamed.wav").frames == 4000 * DURATION_S


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(audio.AudioError, match="cannot open"):
        audio.load(tmp_path / "nope.wav")


# How much a fresh interpreter's peak RSS grows while decoding one file; audio.load streams blocks,
# so a 20-min 44.1 kHz file (53 M samples: 212 MB as float32) must cost little more than its 2-kHz result.
_PEAK_RSS = """
import json, sys
from heartsound import audio
def peak_mb():  # VmHWM: this process's own high-water mark (ru_maxrss would include the parent's, as of fork)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
before = peak_mb()
samples, _ = audio.load(sys.argv[1], 2000)
info = audio.scan(sys.argv[1])
grown_mb = peak_mb() - before
print(json.dumps({"samples": len(samples), "frames": info.frames, "grown_mb": grown_mb}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak memory is read from Linux /proc")
def test_long_recording_decodes_in_bounded_memory(corpus):
    root, items = corpus
    long_item = next(i for i in items if i.duration_s and i.duration_s >= 600)
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(root / long_item.path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    run = json.loads(out.stdout)
    assert run["samples"] == long_item.duration_s * FEATURE_RATE_HZ
    assert run["frames"] == long_item.duration_s * 44100
    # The 2-kHz result is 9.6 MB; 40 MB of slack still fails a whole-file decode (212 MB).
    assert run["grown_mb"] < 40, run


def test_amplitude_helpers_measure_the_reference_tone():
    assert abs(tone_amplitude(tone(2000)) - AMPLITUDE) < 1e-3
    assert abs(dominant_hz(tone(2000), 2000) - TONE_HZ) < 0.5


def test_cut_or_corrupted_headers_only_ever_raise_audio_error(tmp_path):
    """Every prefix of a WAV's first 120 bytes, and 200 seeded byte corruptions of its header."""
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([tone(4000, 0.2)] * 2, axis=1), 4000, subtype="PCM_24")
    full = path.read_bytes()
    rng = np.random.default_rng(0)
    cases = [full[:n] for n in range(120)]
    for _ in range(200):
        header = np.frombuffer(full[:200], np.uint8).copy()
        flips = rng.random(len(header)) < 0.02
        header[flips] ^= rng.integers(1, 256, flips.sum(), dtype=np.uint8)
        cases.append(header.tobytes() + full[200:])
    unexpected = []
    for data in cases:
        path.write_bytes(data)
        for decode in (audio.scan, lambda p: audio.load(p, FEATURE_RATE_HZ)):
            try:
                decode(path)
            except audio.AudioError:
                pass
            except Exception as e:  # collected and reported below
                unexpected.append(f"{len(data)} bytes: {type(e).__name__}: {e}")
    assert not unexpected, "\n".join(unexpected[:10])
