"""heartsound.filters against scipy.signal, the reference it replaces in the segmenter and the cycle features."""

import subprocess
import sys

import numpy as np
import pytest
from scipy import signal

from heartsound import filters

FILTERS = [  # (order, low_hz, high_hz, rate_hz): the segmenter's two and the cycle features' bands
    (4, 25.0, 400.0, 1000),
    (1, None, 8.0, 1000),
    (4, 25.0, 45.0, 2000),
    (4, 400.0, 800.0, 2000),
    (2, 100.0, None, 4000),
]


def _scipy_sos(order, low_hz, high_hz, rate_hz):
    if low_hz is not None and high_hz is not None:
        return signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=rate_hz, output="sos")
    if low_hz is not None:
        return signal.butter(order, low_hz, btype="highpass", fs=rate_hz, output="sos")
    return signal.butter(order, high_hz, btype="lowpass", fs=rate_hz, output="sos")


def _noise(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n) + 0.05 * np.cumsum(rng.standard_normal(n))  # broadband, with a drift


@pytest.mark.parametrize("design", FILTERS)
def test_gain_is_the_squared_magnitude_of_scipys_butterworth(design):
    order, low_hz, high_hz, rate_hz = design
    freqs = np.linspace(0, rate_hz / 2, 257)
    _, response = signal.sosfreqz(_scipy_sos(*design), worN=freqs, fs=rate_hz)
    np.testing.assert_allclose(
        filters.butterworth_gain(freqs, rate_hz, order, low_hz, high_hz), np.abs(response) ** 2, atol=1e-9
    )


@pytest.mark.parametrize("n", [9001, 12000, 4099])  # 4099 is prime: padded to a fast length
@pytest.mark.parametrize("design", FILTERS)
def test_zero_phase_filter_equals_sosfiltfilt_away_from_the_ends(design, n):
    order, low_hz, high_hz, rate_hz = design
    x = _noise(n)
    expected = signal.sosfiltfilt(_scipy_sos(*design), x)
    got = filters.zero_phase_filter(x, rate_hz, order, low_hz, high_hz)
    assert got.shape == x.shape
    edge = int(6 * filters.PAD_PERIODS * rate_hz / min(e for e in (low_hz, high_hz) if e))
    inner = slice(edge, n - edge)
    np.testing.assert_allclose(got[inner], expected[inner], atol=1e-5 * expected.std())  # a narrow band rings longest
    # At the ends the two pad differently, but neither may blow up.
    assert np.abs(got).max() < 10 * np.abs(expected).max()


def test_bands_from_one_transform_equal_each_band_alone():
    x = _noise(7000, seed=3)
    bands = [(25.0, 45.0), (80.0, 200.0), (None, 30.0)]
    together = filters.zero_phase_bands(x, 2000, 4, bands)
    for (low, high), band in zip(bands, together):
        alone = filters.zero_phase_filter(x, 2000, 4, low, high)
        np.testing.assert_allclose(band[2000:-2000], alone[2000:-2000], atol=1e-9)
    assert filters.zero_phase_bands(x, 2000, 4, []) == []


def test_bad_cutoffs_raise_naming_the_cutoff():
    with pytest.raises(ValueError, match="1000 Hz is outside"):
        filters.butterworth_gain(np.zeros(3), 2000, 4, 20.0, 1000.0)
    with pytest.raises(ValueError, match="needs low_hz"):
        filters.zero_phase_filter(np.zeros(10), 2000, 4)


@pytest.mark.parametrize("n", [1000, 1001])
def test_analytic_amplitude_equals_scipys_hilbert(n):
    x = _noise(n, seed=n)
    np.testing.assert_allclose(filters.analytic_amplitude(x), np.abs(signal.hilbert(x)), atol=1e-10)


@pytest.mark.parametrize("factor", [2, 5, 20])
@pytest.mark.parametrize("n", [37, 12345])
def test_decimate_equals_resample_poly(factor, n):
    x = _noise(n, seed=factor)
    np.testing.assert_allclose(filters.decimate(x, factor), signal.resample_poly(x, 1, factor), atol=1e-9)


def test_resample_keeps_a_tone_and_its_length():
    t = np.arange(4000) / 4000
    tone = np.sin(2 * np.pi * 50 * t)
    down = filters.resample(tone, 4000, 1000)
    assert len(down) == 1000
    np.testing.assert_allclose(down[100:-100], np.sin(2 * np.pi * 50 * t[::4])[100:-100], atol=1e-3)
    np.testing.assert_array_equal(filters.resample(tone, 4000, 4000), tone)


@pytest.mark.parametrize("n", [1, 7, 97, 1001, 65537])
def test_fast_length_is_the_next_5_smooth_number(n):
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    assert filters._fast_length(n) == next(m for m in range(n, 2 * n + 2) if smooth(m))


def test_the_segmenter_and_cycle_features_do_not_import_scipy_signal():
    # Its import (0.7-1 s) would be most of a cold `heartsound predict` (benchmarks/README.md).
    code = "import sys, heartsound.cycles, heartsound.prediction; print('scipy.signal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
