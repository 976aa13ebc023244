"""Heart-cycle segmentation: a phonocardiogram -> S1 / systole / S2 / diastole intervals and the heart rate.

The method follows Springer, Tarassenko and Clifford, "Logistic Regression-HSMM-Based Heart Sound Segmentation",
IEEE Trans. Biomed. Eng. 63(4):822-832, 2016 (written from the paper; no code of theirs is used):

1. resample to 1 kHz, band-pass 25-400 Hz, remove friction spikes (Schmidt et al. 2010);
2. envelope features at 50 Hz: homomorphic envelope, Hilbert envelope, 40-60 Hz power (the paper's PSD feature);
3. heart rate and systolic interval from the autocorrelation of the homomorphic envelope;
4. a hidden semi-Markov model with the four states in cyclic order S1 -> systole -> S2 -> diastole, Gaussian
   state durations set by the heart rate, per-state Gaussian emissions of the features, decoded by a
   duration-aware Viterbi that lets the first and last states run past the ends of the recording.

Differences from the paper: Gaussian emissions instead of logistic regression; the envelope's slope instead of a
wavelet envelope; cube-root compressed features; the heart period is chosen among the autocorrelation's peaks by
the decoder's likelihood, which resolves the half-period peaks of children's near-symmetric cycles; a second
decoding with the durations measured on the first; checks that flag recordings without rhythm. Each is measured
in docs/segmentation.md. The fitted parameters live in segmentation_model.json; refit them with

    python -m heartsound.segmentation fit ../shared/samples/circor2022-more --out heartsound/segmentation_model.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from heartsound import filters

MODEL_FORMAT = "heartsound-segmentation/1"
MODEL_PATH = Path(__file__).with_name("segmentation_model.json")

PROCESS_RATE_HZ = 1000
FEATURE_RATE_HZ = 50
FRAMES_PER_FEATURE = PROCESS_RATE_HZ // FEATURE_RATE_HZ
# The annotation's state codes (CirCor 2022 and PhysioNet 2016): 0 is "not annotated".
S1, SYSTOLE, S2, DIASTOLE = 1, 2, 3, 4
STATE_NAMES = ("S1", "systole", "S2", "diastole")
FEATURE_NAMES = ("homomorphic_envelope", "hilbert_envelope", "power_40_60hz", "homomorphic_slope")
# Weight of the emission log-likelihoods against the durations': frames 20 ms apart on an envelope smoothed at 8 Hz
# are far from independent, so their summed log-likelihoods overstate the evidence (0.5 chosen by patient-grouped
# cross-validation on circor2022-more; 1.0 costs ~0.01 F1).
EMISSION_WEIGHT = 0.5

# Two heart cycles at 80 bpm; the Yaseen 2018 clips are 1.5 to 4 s long.
MIN_DURATION_S = 1.5
# Candidate heart periods: 30 to ~220 bpm (children in CirCor reach 180 bpm).
MIN_PERIOD_S, MAX_PERIOD_S = 0.27, 2.0
# Rhythm checks. Below this autocorrelation peak the envelope has no period worth decoding: a 50 Hz hum is at 0.08,
# annotated CirCor recordings at 0.14 and up but one, whose annotated 2.5 s lie in 29 s of mostly noise (0.08).
MIN_RHYTHM_AUTOCORRELATION = 0.1
# White or brown noise has a period-like autocorrelation peak by chance (up to 0.16 in 20 s), but on average its
# decoded segmentation explains the features no better than one Gaussian for all frames does (gain <= 0 nats per
# frame); heart sounds gain 0.3 to 1.5. The chance gain of noise spreads as 1 / sqrt(duration): the threshold is
# GAIN_AT_1S / sqrt(duration_s), and at least MIN_GAIN (see docs/segmentation.md for the rates on noise and CirCor).
GAIN_AT_1S, MIN_GAIN = 0.6, 0.15
ONSET_TOLERANCE_S = 0.06


@dataclass(frozen=True)
class Segmentation:
    """Where the heart sounds are in one recording; times in seconds from its start.

    intervals: (n, 3) float array of (start_s, end_s, state), state 1 S1, 2 systole, 3 S2, 4 diastole, covering the
    recording without gaps; the first and last interval may be cut by the recording's ends.
    s1_onsets_s, s2_onsets_s: the starts of the S1 and S2 intervals that begin inside the recording.
    heart_rate_bpm: 60 / the mean S1-to-S1 interval (intervals more than 25% off their median left out: a missed
    or an extra beat); systolic_interval_s: the median S1-onset-to-S2-onset interval.
    rhythm_found False (reason says why): the arrays are empty and the two numbers NaN.
    """

    intervals: np.ndarray
    s1_onsets_s: np.ndarray
    s2_onsets_s: np.ndarray
    heart_rate_bpm: float
    systolic_interval_s: float
    rhythm_found: bool
    reason: str
    duration_s: float

    @property
    def cycle_count(self) -> int:
        return len(self.s1_onsets_s)


def _no_rhythm(reason: str, duration_s: float) -> Segmentation:
    empty = np.zeros(0)
    return Segmentation(np.zeros((0, 3)), empty, empty, float("nan"), float("nan"), False, reason, duration_s)


# --- signal processing ---------------------------------------------------------------------------------------------


# Band-pass 25-400 Hz (4th order) for the heart sounds, low-pass 8 Hz (1st order) for the homomorphic envelope.
BAND_HZ = (25.0, 400.0)
ENVELOPE_LOWPASS_HZ = 8.0


def remove_spikes(x: np.ndarray, rate_hz: int = PROCESS_RATE_HZ) -> np.ndarray:
    """Zero the friction spikes (Schmidt et al. 2010): while a 0.5 s window's peak exceeds 3x the median window
    peak, blank the loudest window's spike between the zero crossings around it."""
    window = rate_hz // 2
    n_windows = len(x) // window
    if n_windows < 2:
        return x
    x = x.copy()
    frames = x[: n_windows * window].reshape(n_windows, window)  # a view: edits reach x
    peaks = np.abs(frames).max(axis=1)
    for _ in range(n_windows):
        limit = 3 * np.median(peaks)
        loudest = int(np.argmax(peaks))
        if peaks[loudest] <= limit or limit <= 0:
            break
        frame = frames[loudest]
        at = int(np.argmax(np.abs(frame)))
        crossings = np.flatnonzero(np.diff(np.signbit(frame)))
        before, after = crossings[crossings < at], crossings[crossings >= at]
        start = before[-1] + 1 if len(before) else 0
        end = after[0] + 1 if len(after) else window
        frame[start:end] = 0.0
        peaks[loudest] = np.abs(frame).max()
    return x


def envelope_features(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 50 Hz feature frames (n_frames, len(FEATURE_NAMES)) of a band-passed 1 kHz signal, each normalised per
    recording, and the log homomorphic envelope the heart rate is measured on. Frame k is centred on sample 20k
    (time k / 50 s)."""
    amplitude = filters.analytic_amplitude(x)
    floor = 1e-6 * max(float(amplitude.max()), 1e-30)
    log_amplitude = np.log(amplitude + floor)
    log_homomorphic = filters.zero_phase_filter(log_amplitude, PROCESS_RATE_HZ, 1, high_hz=ENVELOPE_LOWPASS_HZ)
    log_homomorphic = log_homomorphic[::FRAMES_PER_FEATURE]
    n_frames = len(log_homomorphic)
    columns = [
        np.exp(log_homomorphic),
        # The resampling filter rings below zero around sharp onsets; an amplitude cannot.
        np.maximum(filters.decimate(amplitude, FRAMES_PER_FEATURE)[:n_frames], 0.0),
        _band_power(x, n_frames, 40, 60),
    ]
    features = [_normalise(c) for c in columns]
    # The envelope's slope: rising at a sound's onset, falling at its end, which sharpens the boundaries.
    slope = np.gradient(features[0])
    features.append(slope / max(float(np.percentile(np.abs(slope), 90)), 1e-12))
    return np.stack(features, axis=1), log_homomorphic


def _band_power(x: np.ndarray, n_frames: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Mean power in [low_hz, high_hz] of 50 ms Hann windows centred on each feature frame."""
    width = PROCESS_RATE_HZ // 20
    padded = np.pad(x, (width // 2, width + FRAMES_PER_FEATURE * n_frames - len(x)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)[::FRAMES_PER_FEATURE][:n_frames]
    n_fft = 2 * width
    spectrum = np.abs(np.fft.rfft(windows * np.hanning(width), n_fft)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / PROCESS_RATE_HZ)
    return spectrum[:, (freqs >= low_hz) & (freqs <= high_hz)].mean(axis=1)


def _normalise(values: np.ndarray, power: float = 1 / 3) -> np.ndarray:
    """Compress (cube root) and centre on the median, scaled by the spread between the 10th and 90th percentiles:
    loud artifacts then do not set the scale."""
    compressed = np.maximum(values, 0.0) ** power
    low, median, high = np.percentile(compressed, [10, 50, 90])
    return (compressed - median) / max(high - low, 1e-12)


def _prepare(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """The band-passed, de-spiked 1 kHz signal the features are computed on."""
    x = filters.resample(samples, int(sample_rate_hz), PROCESS_RATE_HZ)
    return remove_spikes(filters.zero_phase_filter(x, PROCESS_RATE_HZ, 4, *BAND_HZ))


# --- heart rate ----------------------------------------------------------------------------------------------------


def envelope_autocorrelation(envelope: np.ndarray, window_s: float = 5.0) -> np.ndarray:
    """Mean of the normalised autocorrelations of half-overlapping windows of a feature-rate envelope, up to
    MAX_PERIOD_S: a window of artifact weighs no more than a clean one."""
    window = int(window_s * FEATURE_RATE_HZ)
    max_lag = int(MAX_PERIOD_S * FEATURE_RATE_HZ) + 2
    window = max(min(window, len(envelope)), 1)
    starts = range(0, len(envelope) - window + 1, max(window // 2, 1))
    total = np.zeros(max_lag)
    for start in starts:
        part = envelope[start : start + window] - envelope[start : start + window].mean()
        spectrum = np.fft.rfft(part, 2 * window)
        acf = np.fft.irfft(np.abs(spectrum) ** 2)[:max_lag]
        if acf[0] > 0:
            acf = acf / acf[0]
        acf = np.pad(acf, (0, max_lag - len(acf)))
        total += acf
    return total / len(starts)


def period_candidates(acf: np.ndarray, count: int = 3) -> list[tuple[float, float]]:
    """The autocorrelation's highest local maxima in the heart-period range, as (period_s, autocorrelation),
    interpolated between frames; highest first."""
    low, high = int(MIN_PERIOD_S * FEATURE_RATE_HZ), int(MAX_PERIOD_S * FEATURE_RATE_HZ)
    inner = acf[low : high + 1]
    is_peak = (inner[1:-1] > inner[:-2]) & (inner[1:-1] >= inner[2:])
    lags = np.flatnonzero(is_peak) + low + 1
    lags = sorted(lags, key=lambda lag: -acf[lag])[:count]
    candidates = []
    for lag in lags:
        left, centre, right = acf[lag - 1], acf[lag], acf[lag + 1]
        curvature = left - 2 * centre + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        candidates.append(((lag + offset) / FEATURE_RATE_HZ, float(centre)))
    return candidates


# --- hidden semi-Markov model --------------------------------------------------------------------------------------


def _duration_tables(means_frames, sds_frames, max_frames: int):
    """Per-state log P(duration = d) and log P(duration >= d) for d = 1..max_frames, from discretised Gaussians cut
    at 4 sd (and at max_frames)."""
    durations = np.arange(1, max_frames + 1)
    log_p = np.full((4, max_frames), -np.inf)
    log_survival = np.full((4, max_frames), -np.inf)
    for state, (mean, sd) in enumerate(zip(means_frames, sds_frames)):
        inside = np.abs(durations - mean) <= 4 * sd + 1
        weights = np.where(inside, np.exp(-0.5 * ((durations - mean) / sd) ** 2), 0.0)
        if weights.sum() == 0:  # a mean beyond max_frames: the longest allowed duration only
            weights[-1] = 1.0
        p = weights / weights.sum()
        survival = np.cumsum(p[::-1])[::-1]
        with np.errstate(divide="ignore"):
            log_p[state], log_survival[state] = np.log(p), np.log(survival)
    return log_p, log_survival


def hsmm_viterbi(log_emission: np.ndarray, log_duration: np.ndarray, log_survival: np.ndarray, mean_durations):
    """The most likely state sequences of cyclic 4-state HSMMs (state k is followed by k+1 mod 4), one per duration
    model, decoded together: the frame loop is the cost, not the width of each step.

    log_emission: (T, 4) per-frame log-likelihoods, shared. log_duration, log_survival: (M, 4, D) log P(d) and
    log P(duration >= d) for d = 1..D of M duration models; mean_durations: (M, 4), in frames. The first segment may
    have started before frame 0 and the last may go on after frame T-1: their observed parts are scored by the
    survival function (for the first, the stationary renewal process gives P(in state k, elapsed d) =
    P(duration >= d) / sum of the mean durations). Returns [(states (T,) in 0..3, log-likelihood)] per model.
    """
    n_models, _, max_d = log_duration.shape
    n_frames, n_states = len(log_emission), 4 * n_models
    log_duration, log_survival = log_duration.reshape(n_states, max_d), log_survival.reshape(n_states, max_d)
    # cumulative[k, t]: summed log-emission of state k over frames [0, t); a segment [s, t) emits cum[t] - cum[s].
    cumulative = np.zeros((n_states, n_frames + 1))
    np.cumsum(np.tile(log_emission.T, (n_models, 1)), axis=1, out=cumulative[:, 1:])
    predecessor = (np.arange(n_states) // 4) * 4 + (np.arange(n_states) - 1) % 4
    # launch[k, s]: the best path over frames [0, s) ending in k's predecessor, minus cum[k, s]; a segment of state k
    # over [s, t) then scores launch[k, s] + cum[k, t] + log P(t - s): the argmax over s needs no emission sums.
    launch = np.full((n_states, n_frames + 1), -np.inf)
    start_score = log_survival - np.log(np.sum(mean_durations, axis=1)).repeat(4)[:, None]
    # Durations reversed, so that columns line up with launch[:, t - n : t] (starts t - n .. t - 1, d = n .. 1).
    duration_reversed = log_duration[:, ::-1].copy()
    survival_reversed = log_survival[:, ::-1].copy()
    best_duration = np.zeros((n_frames + 1, n_states), dtype=np.int64)
    rows = np.arange(n_states)
    final = None
    for t in range(1, n_frames + 1):
        n = min(max_d, t)
        # The last segment [s, T) may go on after the recording: survival instead of the duration's probability.
        durations = survival_reversed if t == n_frames else duration_reversed
        score = launch[:, t - n : t] + durations[:, max_d - n :]
        if t <= max_d:  # the segment that began before the recording: frames [0, t)
            score[:, 0] = start_score[:, t - 1]
        choice = score.argmax(axis=1)
        best = score[rows, choice] + cumulative[:, t]
        best_duration[t] = n - choice
        launch[:, t] = best[predecessor] - cumulative[:, t]
        final = best
    decoded = []
    for model in range(n_models):
        state = int(np.argmax(final[4 * model : 4 * model + 4]))
        log_likelihood = float(final[4 * model + state])
        states = np.empty(n_frames, dtype=np.int64)
        t = n_frames
        while t > 0:
            d = int(best_duration[t, 4 * model + state])
            states[t - d : t] = state
            t -= d
            state = (state - 1) % 4
        decoded.append((states, log_likelihood))
    return decoded


# --- the fitted model ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """The fitted parameters (see fit_model): per-state Gaussian emissions and the duration model."""

    emission_means: np.ndarray  # (4, n_features)
    emission_covariances: np.ndarray  # (4, n_features, n_features)
    s1_duration_s: tuple[float, float]  # mean, sd
    s2_duration_s: tuple[float, float]
    systolic_interval_s: tuple[float, float]  # intercept, slope of S1-onset-to-S2-onset on the heart period
    systolic_interval_sd_s: float  # spread of that prediction across recordings
    systole_sd_s: float  # within-recording spread of systole durations
    diastole_sd_fraction: float  # within-recording spread of diastole durations, relative to their mean
    null_mean: np.ndarray  # (n_features,) all annotated frames, whatever their state
    null_covariance: np.ndarray
    emission_weight: float = EMISSION_WEIGHT

    def log_emission(self, features: np.ndarray) -> np.ndarray:
        """(T, 4) weighted Gaussian log-likelihoods of the feature frames under each state."""
        per_state = [_gaussian_log_pdf(features, m, c) for m, c in zip(self.emission_means, self.emission_covariances)]
        return self.emission_weight * np.stack(per_state, axis=1)

    def log_null_emission(self, features: np.ndarray) -> np.ndarray:
        """(T,) unweighted log-likelihoods of the frames under one Gaussian fitted to all annotated frames."""
        return _gaussian_log_pdf(features, self.null_mean, self.null_covariance)

    def durations(self, period_s: float, systolic_interval_s: float, systole_sd_s: float):
        """Mean and sd (in frames) of the four states' durations for a heart period and systolic interval."""
        s1_mean, s1_sd = self.s1_duration_s
        s2_mean, s2_sd = self.s2_duration_s
        systole = max(systolic_interval_s - s1_mean, 0.02)
        diastole = max(period_s - systolic_interval_s - s2_mean, 0.02)
        means = np.array([s1_mean, systole, s2_mean, diastole]) * FEATURE_RATE_HZ
        sds = np.array([s1_sd, systole_sd_s, s2_sd, self.diastole_sd_fraction * diastole]) * FEATURE_RATE_HZ
        return means, np.maximum(sds, 0.5)

    def to_json(self, fitted_on: dict) -> dict:
        r = _round
        return {
            "format": MODEL_FORMAT,
            "feature_rate_hz": FEATURE_RATE_HZ,
            "features": list(FEATURE_NAMES),
            "states": list(STATE_NAMES),
            "emission": {
                "mean": r(self.emission_means),
                "covariance": r(self.emission_covariances),
                "weight": r(self.emission_weight),
                "all_states_mean": r(self.null_mean),
                "all_states_covariance": r(self.null_covariance),
            },
            "duration_s": {
                "s1_mean": r(self.s1_duration_s[0]),
                "s1_sd": r(self.s1_duration_s[1]),
                "s2_mean": r(self.s2_duration_s[0]),
                "s2_sd": r(self.s2_duration_s[1]),
                "systolic_interval_intercept": r(self.systolic_interval_s[0]),
                "systolic_interval_slope": r(self.systolic_interval_s[1]),
                "systolic_interval_sd": r(self.systolic_interval_sd_s),
                "systole_sd": r(self.systole_sd_s),
                "diastole_sd_fraction": r(self.diastole_sd_fraction),
            },
            "fitted_on": fitted_on,
        }

    @classmethod
    def from_json(cls, data: dict) -> Model:
        if data.get("format") != MODEL_FORMAT:
            raise ValueError(f"segmentation model format {data.get('format')!r}, expected {MODEL_FORMAT!r}")
        if tuple(data["features"]) != FEATURE_NAMES or data["feature_rate_hz"] != FEATURE_RATE_HZ:
            raise ValueError("segmentation model was fitted on other features; refit it")
        d = data["duration_s"]
        return cls(
            emission_means=np.array(data["emission"]["mean"], dtype=np.float64),
            emission_covariances=np.array(data["emission"]["covariance"], dtype=np.float64),
            s1_duration_s=(d["s1_mean"], d["s1_sd"]),
            s2_duration_s=(d["s2_mean"], d["s2_sd"]),
            systolic_interval_s=(d["systolic_interval_intercept"], d["systolic_interval_slope"]),
            systolic_interval_sd_s=d["systolic_interval_sd"],
            systole_sd_s=d["systole_sd"],
            diastole_sd_fraction=d["diastole_sd_fraction"],
            null_mean=np.array(data["emission"]["all_states_mean"], dtype=np.float64),
            null_covariance=np.array(data["emission"]["all_states_covariance"], dtype=np.float64),
            emission_weight=data["emission"]["weight"],
        )


def _gaussian_log_pdf(x: np.ndarray, mean: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    centred = x - mean
    _, log_det = np.linalg.slogdet(covariance)
    mahalanobis = np.einsum("ti,ij,tj->t", centred, np.linalg.inv(covariance), centred)
    return -0.5 * (mahalanobis + log_det + x.shape[1] * math.log(2 * math.pi))


def _round(value):
    """6 significant digits: the JSON stays small and the same on machines whose float sums differ in the last bit."""
    if isinstance(value, np.ndarray):
        return [_round(v) for v in value]
    return float(f"{float(value):.6g}")


@cache
def _default_model() -> Model:
    return load_model(MODEL_PATH)


def load_model(path: str | Path | None = None) -> Model:
    """The model in a JSON file written by `fit`; the packaged one by default."""
    if path is None:
        return _default_model()
    return Model.from_json(json.loads(Path(path).read_text()))


# --- segmentation --------------------------------------------------------------------------------------------------


def segment(samples: np.ndarray, sample_rate_hz: int, model: Model | None = None) -> Segmentation:
    """Segment one mono recording into S1 / systole / S2 / diastole.

    Never raises on bad audio: silence, noise, too short or non-finite input gives rhythm_found=False and a reason.
    """
    samples = np.asarray(samples, dtype=np.float64)  # also: abs() of the most negative int16 overflows
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}")
    if sample_rate_hz <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate_hz}")
    duration_s = len(samples) / sample_rate_hz
    if duration_s < MIN_DURATION_S:
        return _no_rhythm(f"too short: {duration_s:.2f} s < {MIN_DURATION_S} s", duration_s)
    if not np.isfinite(samples).all():
        return _no_rhythm("contains NaN or infinite samples", duration_s)
    if float(np.max(np.abs(samples))) == 0.0:
        return _no_rhythm("silent (all samples are zero)", duration_s)
    x = _prepare(samples, sample_rate_hz)
    if float(np.max(np.abs(x))) < 1e-6 * float(np.max(np.abs(samples))):
        return _no_rhythm("no sound between 25 and 400 Hz", duration_s)
    features, rhythm_envelope = envelope_features(x)
    return segment_features(features, rhythm_envelope, model or load_model(), duration_s)


def segment_features(
    features: np.ndarray, rhythm_envelope: np.ndarray, model: Model, duration_s: float
) -> Segmentation:
    """segment() from envelope_features(): decode with each candidate heart period, keep the likeliest decoding,
    decode again with the durations it measured, and check that the result is a rhythm."""
    candidates = period_candidates(envelope_autocorrelation(rhythm_envelope))
    peak = candidates[0][1] if candidates else 0.0
    if peak < MIN_RHYTHM_AUTOCORRELATION:
        return _no_rhythm(
            f"no periodic envelope (autocorrelation {peak:.2f} < {MIN_RHYTHM_AUTOCORRELATION})", duration_s
        )
    log_emission = model.log_emission(features)
    sd_first = math.hypot(model.systole_sd_s, model.systolic_interval_sd_s)
    intercept, slope = model.systolic_interval_s
    decoded = _decode_with(log_emission, model, [(p, intercept + slope * p, sd_first) for p, _ in candidates])
    states, _ = max(decoded, key=lambda d: d[1])
    period_s, systolic_s = _measured_period(states)
    if math.isnan(period_s):
        return _no_rhythm("no full heart cycle decoded", duration_s)
    redecoded, _ = _decode_with(log_emission, model, [(period_s, systolic_s, model.systole_sd_s)])[0]
    if not math.isnan(_measured_period(redecoded)[0]):
        states = redecoded
    # A cyclic segmentation of noise explains its envelope no better than one Gaussian for all frames does.
    explained = float(np.mean(log_emission[np.arange(len(states)), states])) / model.emission_weight
    gain = explained - float(np.mean(model.log_null_emission(features)))
    min_gain = max(GAIN_AT_1S / math.sqrt(duration_s), MIN_GAIN)
    if gain < min_gain:
        return _no_rhythm(
            f"no heart sounds: the segmentation explains the envelope {gain:.2f} < {min_gain:.2f} nats per frame "
            "better than no segmentation",
            duration_s,
        )
    return _to_segmentation(states, duration_s)


def _decode_with(log_emission: np.ndarray, model: Model, rhythms) -> list[tuple[np.ndarray, float]]:
    """hsmm_viterbi for each (period_s, systolic_interval_s, systole_sd_s)."""
    tables = [model.durations(*rhythm) for rhythm in rhythms]
    max_frames = int(np.ceil(max(np.max(means + 4 * sds) for means, sds in tables))) + 1
    log_duration, log_survival = zip(*(_duration_tables(means, sds, max_frames) for means, sds in tables))
    means = np.stack([means for means, _ in tables])
    return hsmm_viterbi(log_emission, np.stack(log_duration), np.stack(log_survival), means)


def _onset_frames(states: np.ndarray, state: int) -> np.ndarray:
    """Frames where a segment of `state` (0-based) starts, excluding a segment already running at frame 0."""
    return np.flatnonzero((states[1:] == state) & (states[:-1] != state)) + 1


def _measured_period(states: np.ndarray) -> tuple[float, float]:
    """The heart period and the systolic interval (s) of a decoding (see Segmentation); NaN without a full cycle
    (two S1 onsets)."""
    s1, s2 = _onset_frames(states, S1 - 1), _onset_frames(states, S2 - 1)
    if len(s1) < 2:
        return float("nan"), float("nan")
    after = np.searchsorted(s2, s1[:-1])
    valid = after < len(s2)
    systolic = s2[after[valid]] - s1[:-1][valid]
    # The mean of the typical intervals: finer than the 20 ms frames, unlike the median, yet not pulled by a
    # missed or an extra beat.
    intervals = np.diff(s1)
    typical = intervals[np.abs(intervals - np.median(intervals)) <= 0.25 * np.median(intervals)]
    period = float(np.mean(typical)) if len(typical) else float(np.median(intervals))
    return period / FEATURE_RATE_HZ, float(np.median(systolic)) / FEATURE_RATE_HZ


def _to_segmentation(states: np.ndarray, duration_s: float) -> Segmentation:
    # A state starting at frame k starts at k / 50 s: halfway to frame k - 1 put the onsets 10 ms early on average
    # on CirCor (the model is fitted on frames labelled by the state at their centre).
    change = np.flatnonzero(np.diff(states)) + 1
    bounds = np.concatenate([[0.0], change / FEATURE_RATE_HZ, [duration_s]])
    bounds = np.clip(bounds, 0.0, duration_s)
    segment_states = states[np.concatenate([[0], change])] + 1
    intervals = np.stack([bounds[:-1], bounds[1:], segment_states.astype(np.float64)], axis=1)
    s1_onsets = intervals[1:][intervals[1:, 2] == S1, 0]
    s2_onsets = intervals[1:][intervals[1:, 2] == S2, 0]
    period_s, systolic_s = _measured_period(states)
    return Segmentation(intervals, s1_onsets, s2_onsets, 60.0 / period_s, systolic_s, True, "", duration_s)


# --- scoring -------------------------------------------------------------------------------------------------------


def _matched_mask(predicted: np.ndarray, reference: np.ndarray, tolerance_s: float) -> np.ndarray:
    """Boolean mask of the predicted onsets matched one-to-one to a reference onset within tolerance_s, closest pairs
    first."""
    predicted, reference = np.asarray(predicted, float), np.asarray(reference, float)
    matched = np.zeros(len(predicted), dtype=bool)
    if not len(predicted) or not len(reference):
        return matched
    distance = np.abs(predicted[:, None] - reference[None, :])
    pairs = np.argwhere(distance <= tolerance_s + 1e-9)  # inclusive, whatever the float rounding of the times
    order = np.argsort(distance[pairs[:, 0], pairs[:, 1]], kind="stable")
    reference_used = np.zeros(len(reference), dtype=bool)
    for p, r in pairs[order]:
        if not matched[p] and not reference_used[r]:
            matched[p] = reference_used[r] = True
    return matched


def _precision_recall_f1(true_positives: int, n_predicted: int, n_reference: int) -> tuple[float, float, float]:
    # Nothing predicted has no false positive (precision 1); nothing to find is all found (recall 1).
    precision = true_positives / n_predicted if n_predicted else 1.0
    recall = true_positives / n_reference if n_reference else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score_onsets(predicted, reference, tolerance_s: float = ONSET_TOLERANCE_S) -> tuple[float, float, float]:
    """(precision, recall, F1) of predicted onset times against reference onset times (seconds), each reference
    matched by at most one prediction within +-tolerance_s. No predictions: precision 1; no references: recall 1."""
    matched = _matched_mask(predicted, reference, tolerance_s)
    return _precision_recall_f1(int(matched.sum()), len(matched), len(np.asarray(reference)))


def annotated_spans(annotation: np.ndarray) -> list[tuple[float, float]]:
    """The (start_s, end_s) runs of annotated rows (state != 0) of an annotation table (start_s, end_s, state)."""
    spans = []
    for start, end, state in annotation:
        if state == 0:
            continue
        if spans and abs(spans[-1][1] - start) < 1e-6:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def onset_counts(predicted, annotation: np.ndarray, state: int, tolerance_s: float = ONSET_TOLERANCE_S):
    """(true positives, predicted, reference) onsets of `state` inside the annotated spans.

    A prediction within tolerance_s outside a span may match an onset at the span's edge; an unmatched one there is
    not counted, as nothing says it is wrong.
    """
    predicted = np.asarray(predicted, float)
    reference = annotation[annotation[:, 2] == state, 0]
    true_positives = n_predicted = 0
    for start, end in annotated_spans(annotation):
        near = predicted[(predicted >= start - tolerance_s) & (predicted <= end + tolerance_s)]
        inside_reference = reference[(reference >= start) & (reference <= end)]
        matched = _matched_mask(near, inside_reference, tolerance_s)
        true_positives += int(matched.sum())
        n_predicted += int(matched.sum()) + int(np.sum(~matched & (near >= start) & (near <= end)))
    return true_positives, n_predicted, len(reference)


def reference_heart_rate(annotation: np.ndarray) -> float:
    """Heart rate (bpm) of an annotation: 60 / median interval between consecutive annotated S1 onsets."""
    intervals = []
    for start, end in annotated_spans(annotation):
        s1 = annotation[(annotation[:, 2] == S1) & (annotation[:, 0] >= start) & (annotation[:, 0] <= end), 0]
        intervals.extend(np.diff(s1))
    return 60.0 / float(np.median(intervals)) if intervals else float("nan")


# --- data, fitting and evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatedRecording:
    wav: Path
    patient: str
    annotation: np.ndarray  # (n, 3): start_s, end_s, state


def read_annotation(path: str | Path) -> np.ndarray:
    """A CirCor / PhysioNet segmentation TSV (start_s, end_s, state per row) as an (n, 3) array."""
    return np.loadtxt(path, delimiter="\t", ndmin=2, dtype=np.float64).reshape(-1, 3)


def annotated_recordings(roots) -> list[AnnotatedRecording]:
    """Every <patient>_<location>.wav with a .tsv segmentation beside it under the given directories, by path."""
    found = []
    for root in roots:
        for tsv in sorted(Path(root).rglob("*.tsv")):
            wav = tsv.with_suffix(".wav")
            if wav.is_file():
                found.append(AnnotatedRecording(wav, tsv.stem.split("_")[0], read_annotation(tsv)))
    return found


def _load_features(recording: AnnotatedRecording) -> tuple[np.ndarray, np.ndarray, float]:
    from heartsound.audio import load

    samples, rate = load(recording.wav)
    return *envelope_features(_prepare(samples, rate)), len(samples) / rate


def frame_states(annotation: np.ndarray, n_frames: int) -> np.ndarray:
    """The annotated state (0..4) at each feature frame's centre."""
    times = np.arange(n_frames) / FEATURE_RATE_HZ
    row = np.searchsorted(annotation[:, 0], times, side="right") - 1
    inside = (row >= 0) & (times < annotation[np.clip(row, 0, None), 1])
    return np.where(inside, annotation[np.clip(row, 0, None), 2], 0).astype(np.int64)


def fit_model(features_and_annotations) -> Model:
    """Fit the emissions on every annotated frame and the duration model on the annotated intervals, from pairs of
    (features from envelope_features, annotation table as read_annotation returns it). Deterministic."""
    per_state = [[] for _ in range(4)]
    s1, s2, systole_residuals, diastole_relative = [], [], [], []
    periods, systolic_intervals = [], []
    for features, annotation in features_and_annotations:
        labels = frame_states(annotation, len(features))
        for state in range(4):
            per_state[state].append(features[labels == state + 1])
        durations = {
            k: annotation[annotation[:, 2] == k, 1] - annotation[annotation[:, 2] == k, 0] for k in (1, 2, 3, 4)
        }
        s1.extend(durations[S1])
        s2.extend(durations[S2])
        if len(durations[SYSTOLE]) >= 2:
            systole_residuals.extend(durations[SYSTOLE] - durations[SYSTOLE].mean())
        if len(durations[DIASTOLE]) >= 2:
            diastole_relative.extend(durations[DIASTOLE] / durations[DIASTOLE].mean() - 1)
        period, systolic = _annotated_period(annotation)
        if not (math.isnan(period) or math.isnan(systolic)):
            periods.append(period)
            systolic_intervals.append(systolic)
    frames = [np.concatenate(p) for p in per_state]
    means = np.stack([f.mean(axis=0) for f in frames])
    covariances = np.stack([np.cov(f, rowvar=False) for f in frames])
    every_frame = np.concatenate(frames)
    slope, intercept = np.polyfit(periods, systolic_intervals, 1)
    residual = np.asarray(systolic_intervals) - (intercept + slope * np.asarray(periods))
    return Model(
        emission_means=means,
        emission_covariances=covariances,
        null_mean=every_frame.mean(axis=0),
        null_covariance=np.cov(every_frame, rowvar=False),
        s1_duration_s=(float(np.mean(s1)), float(np.std(s1))),
        s2_duration_s=(float(np.mean(s2)), float(np.std(s2))),
        systolic_interval_s=(float(intercept), float(slope)),
        systolic_interval_sd_s=float(np.std(residual)),
        systole_sd_s=float(np.std(systole_residuals)),
        diastole_sd_fraction=float(np.std(diastole_relative)),
    )


def _annotated_period(annotation: np.ndarray) -> tuple[float, float]:
    """Median S1-to-S1 and S1-onset-to-S2-onset intervals of an annotation (NaN without 2 consecutive cycles)."""
    s1, s2 = annotation[annotation[:, 2] == S1, 0], annotation[annotation[:, 2] == S2, 0]
    rr = np.diff(s1)
    rr = rr[rr < MAX_PERIOD_S]  # consecutive beats only, not across an unannotated gap
    if not len(rr):
        return float("nan"), float("nan")
    period = float(np.median(rr))
    after = np.searchsorted(s2, s1)
    systolic = [s2[a] - t for t, a in zip(s1, after) if a < len(s2) and s2[a] - t < period]
    return period, float(np.median(systolic)) if systolic else float("nan")


@dataclass
class Scores:
    """Onset counts and heart-rate errors summed over recordings."""

    counts: dict = field(default_factory=lambda: {S1: [0, 0, 0], S2: [0, 0, 0]})
    heart_rate_errors: list = field(default_factory=list)
    no_rhythm: int = 0
    recordings: int = 0

    def add(self, result: Segmentation, annotation: np.ndarray) -> dict:
        self.recordings += 1
        row = {}
        for state, onsets in ((S1, result.s1_onsets_s), (S2, result.s2_onsets_s)):
            counts = onset_counts(onsets, annotation, state)
            self.counts[state] = [a + b for a, b in zip(self.counts[state], counts)]
            row[STATE_NAMES[state - 1]] = _precision_recall_f1(*counts)[2]
        reference = reference_heart_rate(annotation)
        if result.rhythm_found and not math.isnan(reference):
            self.heart_rate_errors.append(abs(result.heart_rate_bpm - reference))
        self.no_rhythm += not result.rhythm_found
        row["heart_rate_bpm"], row["reference_bpm"] = result.heart_rate_bpm, reference
        return row

    def summary(self) -> dict:
        out = {"recordings": self.recordings, "no_rhythm": self.no_rhythm}
        for state in (S1, S2):
            precision, recall, f1 = _precision_recall_f1(*self.counts[state])
            name = STATE_NAMES[state - 1]
            out.update({f"{name}_precision": precision, f"{name}_recall": recall, f"{name}_f1": f1})
            out[f"{name}_reference_onsets"] = self.counts[state][2]
        errors = self.heart_rate_errors
        out["heart_rate_mae_bpm"] = float(np.mean(errors)) if errors else float("nan")
        return out


def patient_folds(patients, n_folds: int) -> dict[str, int]:
    """A deterministic patient -> fold map: patients sorted by id, dealt round-robin."""
    return {patient: i % n_folds for i, patient in enumerate(sorted(set(patients), key=_patient_key))}


def _patient_key(patient: str):
    return (0, int(patient), "") if patient.isdigit() else (1, 0, patient)


def _fitted_on(recordings) -> dict:
    patients = sorted({r.patient for r in recordings}, key=_patient_key)
    return {"recordings": len(recordings), "patients": patients}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heartsound.segmentation", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fit_parser = commands.add_parser("fit", help="fit the model on annotated recordings (<name>.wav + <name>.tsv)")
    fit_parser.add_argument("roots", nargs="+", type=Path)
    fit_parser.add_argument("--out", type=Path, default=MODEL_PATH)
    score_parser = commands.add_parser("score", help="score the onsets and heart rate on annotated recordings")
    score_parser.add_argument("roots", nargs="+", type=Path)
    score_parser.add_argument("--model", type=Path, default=None, help="a fitted JSON (default: the packaged one)")
    score_parser.add_argument(
        "--folds", type=int, default=0, help="instead: leave-patients-out cross-validation, refitting per fold"
    )
    score_parser.add_argument("--verbose", action="store_true", help="one line per recording")
    args = parser.parse_args(argv)

    if args.command == "score" and args.folds == 1:
        parser.error("--folds needs 2 or more (0: score the given model)")
    recordings = annotated_recordings(args.roots)
    if not recordings:
        parser.error(f"no annotated recordings (.wav with a .tsv beside it) under {', '.join(map(str, args.roots))}")
    if args.command == "fit":
        loaded = [(_load_features(r)[0], r.annotation) for r in recordings]
        model = fit_model(loaded)
        args.out.write_text(json.dumps(model.to_json(_fitted_on(recordings)), indent=1) + "\n")
        print(f"fitted on {len(recordings)} recordings of {len({r.patient for r in recordings})} patients: {args.out}")
        return 0

    loaded = [_load_features(r) for r in recordings]
    scores = Scores()
    if args.folds:
        fold_of = patient_folds([r.patient for r in recordings], args.folds)
        folds = [[i for i, r in enumerate(recordings) if fold_of[r.patient] == k] for k in range(args.folds)]
        models = []
        for held_out in folds:
            train = [(loaded[i][0], recordings[i].annotation) for i in range(len(recordings)) if i not in held_out]
            models.append((held_out, fit_model(train)))
    else:
        models = [(list(range(len(recordings))), load_model(args.model))]
    for held_out, model in models:
        for i in held_out:
            features, rhythm_envelope, duration_s = loaded[i]
            result = segment_features(features, rhythm_envelope, model, duration_s)
            row = scores.add(result, recordings[i].annotation)
            if args.verbose:
                print(recordings[i].wav.stem, " ".join(f"{k}={v:.3g}" for k, v in row.items()))
    for key, value in scores.summary().items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
