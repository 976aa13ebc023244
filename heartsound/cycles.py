"""Per-recording heart-cycle features from a segmentation (heartsound.segmentation): rhythm and per-phase energy.

Rhythm: how many cycles, how regular (RR interval mean, sd, coefficient of variation, and the largest deviation of
one RR interval from the median: an early beat or an extrasystole shows there), and the S1-to-S2 (systolic) and
S2-to-S1 (diastolic) interval statistics. Energy: the log10 ratio of systolic to diastolic mean power in five
bands; a murmur fills systole (or diastole) with sound that the other phase does not have.

Per cycle: the same ratios taken one cycle (S1, systole, S2, diastole) at a time, and summarised by their median
and interquartile range over the cycles, with systole against its S1 and diastole against its S2, S1 against S2,
and the share of cycles whose systole is twice as loud as their diastole. A noise burst in one cycle moves the
recording's mean power, not the median of its cycles; a murmur is in every beat, noise is not. Every one is a
ratio of powers in one band of one recording, so a stethoscope's gain and frequency response cancel out.

The vector has a fixed order (FEATURE_NAMES) and no NaN: a recording without rhythm gets FILL_VALUE everywhere and
rhythm_found 0; a band the sample rate cannot hold, or a phase never decoded, gets FILL_VALUE for its ratio.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from heartsound import audio, features, filters
from heartsound.segmentation import DIASTOLE, S1, S2, SYSTOLE, Segmentation, segment

ENERGY_BANDS_HZ = ((25, 45), (45, 80), (80, 200), (200, 400), (400, 800))
# Rate the energy is measured at: 800 Hz is then 0.8 of Nyquist, and a 44.1 kHz recording costs no more than 4 kHz.
ENERGY_RATE_HZ = 2000
# Phases are measured 20 ms (one decoder frame) in from each boundary: the tail of S1 or S2 stays out of them.
PHASE_MARGIN_S = 0.02
FILL_VALUE = 0.0

RHYTHM_NAMES = (
    "rhythm_found",
    "cycle_count",
    "heart_rate_bpm",
    "rr_mean_s",
    "rr_std_s",
    "rr_cv",
    "rr_max_relative_deviation",
    "systolic_interval_mean_s",
    "systolic_interval_std_s",
    "diastolic_interval_mean_s",
    "diastolic_interval_std_s",
    "systolic_fraction",
)
ENERGY_NAMES = tuple(f"systolic_diastolic_log10_power_ratio_{low}_{high}hz" for low, high in ENERGY_BANDS_HZ)
# Per cycle, in each band; then in one band (S1 against S2) and in the two bands murmurs fill most.
S1_S2_BAND_HZ = (80, 200)
LOUD_SYSTOLE_BANDS_HZ = ((80, 200), (200, 400))
LOUD_SYSTOLE_LOG10 = math.log10(2.0)  # a systole twice as loud (in power) as its diastole
PER_CYCLE_RATIOS = (
    "systolic_diastolic_log10_power_ratio_median",
    "systolic_diastolic_log10_power_ratio_iqr",
    "systolic_s1_log10_power_ratio_median",
    "diastolic_s2_log10_power_ratio_median",
)
CYCLE_NAMES = (
    *(f"{ratio}_{low}_{high}hz" for ratio in PER_CYCLE_RATIOS for low, high in ENERGY_BANDS_HZ),
    "s1_s2_log10_power_ratio_median_{}_{}hz".format(*S1_S2_BAND_HZ),
    *(f"loud_systole_share_{low}_{high}hz" for low, high in LOUD_SYSTOLE_BANDS_HZ),
)
FEATURE_NAMES = RHYTHM_NAMES + ENERGY_NAMES + CYCLE_NAMES


def cycle_features(segmentation: Segmentation, samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """The FEATURE_NAMES vector (float64) of a recording and its segmentation."""
    features = np.full(len(FEATURE_NAMES), FILL_VALUE)
    if not segmentation.rhythm_found:
        return features
    features[: len(RHYTHM_NAMES)] = _rhythm(segmentation)
    features[len(RHYTHM_NAMES) :] = _energy_ratios(segmentation, samples, sample_rate_hz)
    # Whatever slipped through (a degenerate segmentation) is filled, never passed on as NaN.
    return np.where(np.isfinite(features), features, FILL_VALUE)


def recording_cycle_features(samples: np.ndarray, sample_rate_hz: int) -> tuple[np.ndarray, Segmentation]:
    """Segment a recording and return its cycle features with the segmentation."""
    segmentation = segment(samples, sample_rate_hz)
    return cycle_features(segmentation, samples, sample_rate_hz), segmentation


def file_cycle_features(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """(features, why no rhythm was found or "") of one audio file; an unreadable file is flagged, not raised."""
    try:
        samples, rate = audio.load(path, ENERGY_RATE_HZ)
    except audio.AudioError as e:
        return np.full(len(FEATURE_NAMES), FILL_VALUE), f"unreadable: {e}"
    features, segmentation = recording_cycle_features(samples, rate)
    return features, "" if segmentation.rhythm_found else segmentation.reason


def recordings_table(recording_ids, paths, jobs: int = 0) -> pd.DataFrame:
    """One row per recording, in the given order: recording_id, no_rhythm_reason ("" when found), FEATURE_NAMES.

    Computed in `jobs` processes (0 = all cores); the rows do not depend on how many.
    """
    paths = [str(p) for p in paths]
    workers = min(jobs or os.cpu_count() or 1, max(1, len(paths)))
    if workers == 1:
        results = [file_cycle_features(p) for p in paths]
    else:
        with features.worker_pool(workers) as pool:
            results = list(pool.map(file_cycle_features, paths, chunksize=8))
    table = pd.DataFrame([f for f, _ in results], columns=list(FEATURE_NAMES))
    table.insert(0, "no_rhythm_reason", [reason for _, reason in results])
    table.insert(0, "recording_id", list(recording_ids))
    return table


def as_dict(features: np.ndarray) -> dict[str, float]:
    return {name: float(value) for name, value in zip(FEATURE_NAMES, features)}


def _rhythm(segmentation: Segmentation) -> list[float]:
    s1, s2 = segmentation.s1_onsets_s, segmentation.s2_onsets_s
    rr = np.diff(s1)
    # Within each full cycle [S1, next S1): its S2 gives the systolic and the diastolic interval.
    systolic, diastolic = [], []
    for start, end in zip(s1[:-1], s1[1:]):
        inside = s2[(s2 > start) & (s2 < end)]
        if len(inside):
            systolic.append(inside[0] - start)
            diastolic.append(end - inside[0])
    median_rr = float(np.median(rr)) if len(rr) else math.nan
    return [
        1.0,
        float(len(rr)),
        segmentation.heart_rate_bpm,
        _mean(rr),
        _std(rr),
        _std(rr) / _mean(rr) if len(rr) else math.nan,
        float(np.max(np.abs(rr - median_rr)) / median_rr) if len(rr) else math.nan,
        _mean(systolic),
        _std(systolic),
        _mean(diastolic),
        _std(diastolic),
        _mean(systolic) / _mean(rr) if systolic else math.nan,
    ]


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _std(values) -> float:
    return float(np.std(values)) if len(values) else math.nan


def _energy_ratios(segmentation: Segmentation, samples: np.ndarray, sample_rate_hz: int) -> list[float]:
    """ENERGY_NAMES then CYCLE_NAMES: the whole recording's systolic/diastolic power ratios, and the per-cycle ones."""
    x = np.asarray(samples, dtype=np.float64)
    rate = int(sample_rate_hz)
    if rate > ENERGY_RATE_HZ:
        x, rate = filters.resample(x, rate, ENERGY_RATE_HZ), ENERGY_RATE_HZ
    systole = _phase_samples(segmentation.intervals, SYSTOLE, rate, len(x))
    diastole = _phase_samples(segmentation.intervals, DIASTOLE, rate, len(x))
    if not systole.any() or not diastole.any():
        return [math.nan] * (len(ENERGY_NAMES) + len(CYCLE_NAMES))
    bands = [band for band in ENERGY_BANDS_HZ if band[1] < 0.45 * rate]
    filtered = dict(zip(bands, filters.zero_phase_bands(x, rate, 4, bands)))
    bounds = _cycle_bounds(segmentation.intervals, rate, len(x))
    ratios = []
    per_cycle = np.full((len(bounds), len(ENERGY_BANDS_HZ), 4), math.nan)  # [cycle, band, ratio]
    padded = np.zeros(len(x) + 1)  # the power and a zero after it: a phase may end at the last sample
    for b, band in enumerate(ENERGY_BANDS_HZ):
        if band not in filtered:
            ratios.append(math.nan)
            continue
        power = np.square(filtered[band], out=padded[:-1])
        floor = 1e-9 * float(power.mean()) + 1e-30  # silence in both phases gives a ratio of 1, not 0 / 0
        ratios.append(math.log10((power[systole].mean() + floor) / (power[diastole].mean() + floor)))
        s1, systolic, s2, diastolic = (_phase_means(padded, bounds) + floor).T
        per_cycle[:, b] = np.log10(np.stack([systolic / diastolic, systolic / s1, diastolic / s2, s1 / s2], axis=1))
    return ratios + _cycle_summary(per_cycle)


def _cycle_bounds(intervals: np.ndarray, rate_hz: int, n_samples: int) -> np.ndarray:
    """Sample bounds [n_cycles, 4 phases, (start, end)] of the complete cycles: each four consecutive intervals
    S1, systole, S2, diastole; systole and diastole PHASE_MARGIN_S in from their ends, as _phase_samples."""
    states = intervals[:, 2].astype(int)
    n = len(states) - 3
    if n <= 0:
        return np.zeros((0, 4, 2), dtype=np.int64)
    firsts = np.flatnonzero(
        (states[:n] == S1) & (states[1 : n + 1] == SYSTOLE) & (states[2 : n + 2] == S2) & (states[3:] == DIASTOLE)
    )
    cycles = intervals[firsts[:, None] + np.arange(4), :2]  # [n_cycles, 4, (start_s, end_s)]
    margin = np.array([0.0, PHASE_MARGIN_S, 0.0, PHASE_MARGIN_S])
    return np.stack(_sample_bounds(cycles[:, :, 0], cycles[:, :, 1], margin, rate_hz, n_samples), axis=2)


def _phase_means(padded_power: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Mean power of each phase [n_cycles, 4] from the power with a zero appended; NaN where a phase holds no
    sample. One reduceat over all bounds, which are in time order (consecutive phases)."""
    if not len(bounds):
        return np.zeros((0, 4))
    sums = np.add.reduceat(padded_power, bounds.reshape(-1))[::2]
    counts = (bounds[:, :, 1] - bounds[:, :, 0]).reshape(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, math.nan).reshape(-1, 4)


def _cycle_summary(per_cycle: np.ndarray) -> list[float]:
    """CYCLE_NAMES from the per-cycle log10 ratios [cycle, band, ratio] (NaN where not measured: no such band at
    this rate, a phase too short, or no complete cycle)."""
    names = {band: b for b, band in enumerate(ENERGY_BANDS_HZ)}
    if not len(per_cycle):
        return [math.nan] * len(CYCLE_NAMES)
    median, q75, q25 = _nan_quantiles(per_cycle, (0.5, 0.75, 0.25))  # each [band, ratio]
    loud = np.mean(per_cycle[:, :, 0] > LOUD_SYSTOLE_LOG10, axis=0)
    loud = np.where(np.isnan(per_cycle[:, :, 0]).all(axis=0), math.nan, loud)  # a band the rate cannot hold
    return [
        *median[:, 0],
        *(q75[:, 0] - q25[:, 0]),
        *median[:, 1],
        *median[:, 2],
        median[names[S1_S2_BAND_HZ], 3],
        *(loud[names[band]] for band in LOUD_SYSTOLE_BANDS_HZ),
    ]


def _nan_quantiles(values: np.ndarray, qs) -> list[np.ndarray]:
    """np.nanquantile(values, q, axis=0) (linear interpolation) for each q, NaN where a column has no number, from
    one sort: numpy's loops over the columns in Python when there are NaNs, slower than the rest of this module."""
    ordered = np.sort(values, axis=0)  # NaN last
    last = np.maximum(np.sum(~np.isnan(values), axis=0) - 1, 0)
    empty = np.isnan(ordered[0])
    out = []
    for q in qs:
        position = q * last
        below = np.floor(position).astype(np.int64)
        low = np.take_along_axis(ordered, below[None], axis=0)[0]
        high = np.take_along_axis(ordered, np.minimum(below + 1, last)[None], axis=0)[0]
        out.append(np.where(empty, math.nan, low + (high - low) * (position - below)))
    return out


def _phase_samples(intervals: np.ndarray, state: int, rate_hz: int, n_samples: int) -> np.ndarray:
    """Boolean mask of the samples inside the intervals of one state, PHASE_MARGIN_S in from their ends."""
    phase = intervals[intervals[:, 2] == state]
    mask = np.zeros(n_samples, dtype=bool)
    for start, end in zip(*_sample_bounds(phase[:, 0], phase[:, 1], PHASE_MARGIN_S, rate_hz, n_samples)):
        mask[start:end] = True
    return mask


def _sample_bounds(start_s, end_s, margin_s, rate_hz: int, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample bounds (start, end) of intervals given in seconds, margin_s in from each end, within the recording;
    an interval shorter than its margins gets end == start (no sample)."""
    start = np.minimum(np.ceil((start_s + margin_s) * rate_hz).astype(np.int64), n_samples)
    end = np.minimum(((end_s - margin_s) * rate_hz).astype(np.int64), n_samples)
    return start, np.maximum(end, start)
