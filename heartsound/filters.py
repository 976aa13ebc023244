"""Zero-phase Butterworth filtering, the analytic amplitude and resampling, with numpy's FFT and soxr.

What the segmenter and the cycle features need from signal processing, without importing scipy.signal: that import
alone (0.7-1 s) costs more than classifying a recording, and `heartsound predict` pays it on every cold start.

Filtering forwards and backwards with a Butterworth filter (scipy.signal.sosfiltfilt of scipy.signal.butter) applies
the filter's squared magnitude with no phase shift; here that gain multiplies the spectrum directly. The two agree
away from the ends of a recording (tests/test_filters.py); at the ends this pads with the signal's odd reflection,
as sosfiltfilt does, only longer.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

# Reflected samples at each end, in periods of the lowest cutoff: the filter's response has died out within them.
PAD_PERIODS = 3


def butterworth_gain(
    freqs_hz: np.ndarray, rate_hz: float, order: int, low_hz: float | None = None, high_hz: float | None = None
) -> np.ndarray:
    """Squared magnitude response at freqs_hz of the digital Butterworth filter of this order (bilinear transform, as
    scipy.signal.butter designs it): a band-pass with both edges, a high-pass with low_hz only, a low-pass with
    high_hz only. For a band-pass, `order` is that of the low-pass prototype (scipy's convention)."""
    _check_band(low_hz, high_hz)
    nyquist = rate_hz / 2
    for edge in (low_hz, high_hz):
        if edge is not None and not 0 < edge < nyquist:
            raise ValueError(f"cutoff {edge:g} Hz is outside (0, {nyquist:g}) Hz at {rate_hz:g} Hz")
    # Frequencies warped as the bilinear transform maps them: the analog prototype's response at tan(pi f / rate).
    warped = np.tan(np.pi * np.minimum(np.asarray(freqs_hz, dtype=np.float64), nyquist * (1 - 1e-12)) / rate_hz)
    with np.errstate(divide="ignore", invalid="ignore"):
        if low_hz is not None and high_hz is not None:
            w1, w2 = math.tan(math.pi * low_hz / rate_hz), math.tan(math.pi * high_hz / rate_hz)
            ratio = np.abs(warped**2 - w1 * w2) / (warped * (w2 - w1))
        elif low_hz is not None:
            ratio = math.tan(math.pi * low_hz / rate_hz) / warped
        else:
            ratio = warped / math.tan(math.pi * high_hz / rate_hz)
        gain = 1.0 / (1.0 + ratio ** (2 * order))
    return np.where(np.isfinite(ratio), gain, 0.0)


def zero_phase_filter(
    x: np.ndarray, rate_hz: float, order: int, low_hz: float | None = None, high_hz: float | None = None
) -> np.ndarray:
    """x filtered forwards and backwards by a Butterworth filter (see butterworth_gain), as a float64 array."""
    return zero_phase_bands(x, rate_hz, order, [(low_hz, high_hz)])[0]


def zero_phase_bands(
    x: np.ndarray, rate_hz: float, order: int, bands: list[tuple[float | None, float | None]]
) -> list[np.ndarray]:
    """x through each (low_hz, high_hz) Butterworth filter of zero_phase_filter, from one transform of x."""
    for band in bands:
        _check_band(*band)
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2 or not bands:
        return [x.copy() for _ in bands]
    lowest = min(edge for band in bands for edge in band if edge is not None)
    pad = min(n - 1, math.ceil(PAD_PERIODS * rate_hz / lowest))
    padded = np.concatenate([2 * x[0] - x[pad:0:-1], x, 2 * x[-1] - x[-2 : -pad - 2 : -1]])
    # Zeros after the reflection up to a length the FFT is fast at; they lie beyond the pad, out of x's reach.
    length = _fast_length(len(padded))
    spectrum = np.fft.rfft(padded, length)
    freqs = np.fft.rfftfreq(length, 1 / rate_hz)
    return [
        np.fft.irfft(spectrum * butterworth_gain(freqs, rate_hz, order, low, high), length)[pad : pad + n]
        for low, high in bands
    ]


def _check_band(low_hz: float | None, high_hz: float | None) -> None:
    if low_hz is None and high_hz is None:
        raise ValueError("a Butterworth filter needs low_hz, high_hz or both")


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: numpy's FFT is several times slower on lengths with a large prime factor."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35 * (1 << max(math.ceil(math.log2(n / power35)), 0))
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


def analytic_amplitude(x: np.ndarray) -> np.ndarray:
    """|x + i H(x)|, H the Hilbert transform: the amplitude envelope (as np.abs(scipy.signal.hilbert(x)))."""
    n = len(x)
    weights = np.zeros(n)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[n // 2] = 1.0
        weights[1 : n // 2] = 2.0
    else:
        weights[1 : (n + 1) // 2] = 2.0
    return np.abs(np.fft.ifft(np.fft.fft(x) * weights))


def decimate(x: np.ndarray, factor: int) -> np.ndarray:
    """Every factor-th sample of x (the first at x[0]) after a linear-phase anti-aliasing low-pass: a Kaiser-windowed
    sinc (beta 5, ten zero crossings each side), the FIR scipy.signal.resample_poly designs. It rings less at a
    sharp onset than soxr's steeper filter, whose envelope frames cost the segmenter 0.01-0.04 S2 F1
    (docs/segmentation.md)."""
    x = np.asarray(x, dtype=np.float64)
    half = 10 * factor
    taps = np.arange(-half, half + 1)
    kernel = np.sinc(taps / factor) * np.kaiser(len(taps), 5.0)
    kernel /= kernel.sum()
    padded = np.pad(x, half)
    # Only the kept outputs: each is the kernel's dot product with the samples around it.
    windows = np.lib.stride_tricks.sliding_window_view(padded, len(kernel))[::factor]
    return windows @ kernel[::-1]


def resample(x: np.ndarray, rate_hz: int, new_rate_hz: int) -> np.ndarray:
    """x at new_rate_hz (soxr, high quality, as audio.load resamples), float64."""
    x = np.asarray(x, dtype=np.float64)
    if rate_hz == new_rate_hz:
        return x
    return soxr.resample(x, rate_hz, new_rate_hz, quality="HQ")
