"""Heart-cycle segmentation: synthetic rhythms with known S1/S2 times, recordings without rhythm, onset scoring, and
the real CirCor annotations (held-out patients; refit determinism)."""

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import signal

from heartsound import cycles
from heartsound import segmentation as sg

# ../shared/samples beside the checkout (and beside CI's clone): real files in the original layouts.
REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = REPO_ROOT.parent / "shared" / "samples"
HELD_OUT = SAMPLES / "circor2022"  # 4 patients, 16 recordings: none of them in the committed model's fit
FIT_ON = SAMPLES / "circor2022-more"  # 26 patients, 77 recordings: what the committed model is fitted on
# Measured (docs/segmentation.md): held-out S1 F1 0.855, S2 F1 0.879; 5-fold patient CV S1 0.947, S2 0.959.
HELD_OUT_MIN_F1 = 0.82
CROSS_VALIDATED_MIN_F1 = 0.92


def synthetic_pcg(heart_rate_bpm, duration_s=12.0, rate_hz=4000, seed=0, noise=0.05):
    """Tone bursts on white noise: S1 100 ms of 45 Hz, S2 80 ms of 60 Hz and 0.7 as loud, S1 to S2 0.1 s + 0.28
    period (a child's systole); returns (samples, rate, S1 onsets, S2 onsets), the onsets 0.3 s or more inside."""
    period = 60.0 / heart_rate_bpm
    s1 = np.arange(0.25 - period, duration_s, period)  # the rhythm runs across both ends
    samples = pcg_from_onsets(s1, s1 + 0.1 + 0.28 * period, duration_s, rate_hz, seed, noise)
    return samples, rate_hz, _inner(s1, duration_s), _inner(s1 + 0.1 + 0.28 * period, duration_s)


def pcg_from_onsets(s1, s2, duration_s, rate_hz=4000, seed=0, noise=0.05, murmur=0.0):
    """S1 and S2 tone bursts at the given onsets on white noise; murmur > 0 adds 100-300 Hz noise of that RMS
    between each S1's end and the next S2 (a holosystolic murmur)."""
    rng = np.random.default_rng(seed)
    samples = noise * rng.standard_normal(int(duration_s * rate_hz))
    for onsets, length_s, freq_hz, gain in ((s1, 0.10, 45.0, 1.0), (s2, 0.08, 60.0, 0.7)):
        n = int(length_s * rate_hz)
        burst = gain * np.sin(2 * np.pi * freq_hz * np.arange(n) / rate_hz) * np.hanning(n)
        for onset in onsets:
            start = int(round(onset * rate_hz))
            low, high = max(start, 0), min(start + n, len(samples))
            if high > low:
                samples[low:high] += burst[low - start : high - start]
    if murmur:
        band = signal.butter(4, [100, 300], btype="bandpass", fs=rate_hz, output="sos")
        hiss = signal.sosfilt(band, rng.standard_normal(len(samples)))
        hiss *= murmur / hiss.std()
        for onset in s1:
            following = s2[s2 > onset]
            if len(following):
                low, high = np.clip([int((onset + 0.1) * rate_hz), int(following[0] * rate_hz)], 0, len(samples))
                samples[low:high] += hiss[low:high]
    return samples


def _inner(onsets, duration_s):
    """The onsets 0.3 s or more from both ends: the ones scored (like an annotated span inside a recording)."""
    onsets = np.asarray(onsets)
    return onsets[(onsets >= 0.3) & (onsets <= duration_s - 0.3)]


# --- synthetic rhythms ---


@pytest.mark.parametrize(("heart_rate_bpm", "rate_hz"), [(60, 4000), (120, 4000), (90, 44100), (150, 2000)])
def test_synthetic_onsets_and_heart_rate(heart_rate_bpm, rate_hz):
    samples, rate, s1, s2 = synthetic_pcg(heart_rate_bpm, rate_hz=rate_hz)
    result = sg.segment(samples, rate)
    assert result.rhythm_found, result.reason
    assert result.reason == ""
    assert abs(result.heart_rate_bpm - heart_rate_bpm) < 3
    assert abs(result.systolic_interval_s - (0.1 + 0.28 * 60 / heart_rate_bpm)) < 0.04
    for predicted, reference in ((result.s1_onsets_s, s1), (result.s2_onsets_s, s2)):
        predicted = _inner(predicted, len(samples) / rate)
        precision, recall, f1 = sg.score_onsets(predicted, reference, tolerance_s=0.06)
        assert f1 >= 0.95, (precision, recall)
        # Not swapped, nor off by a beat: every onset is within 60 ms of a true one of its kind.
        assert np.all(np.min(np.abs(predicted[:, None] - reference[None, :]), axis=1) <= 0.06)


def test_a_short_clip_is_segmented():
    # Yaseen 2018 clips are 1.5 to 4 s long.
    samples, rate, s1, _ = synthetic_pcg(80, duration_s=2.5, seed=3)
    result = sg.segment(samples, rate)
    assert result.rhythm_found, result.reason
    assert abs(result.heart_rate_bpm - 80) < 5
    assert sg.score_onsets(_inner(result.s1_onsets_s, 2.5), s1)[2] == 1.0


def test_intervals_tile_the_recording_in_cyclic_order():
    samples, rate, _, _ = synthetic_pcg(80, duration_s=10.0)
    result = sg.segment(samples, rate)
    intervals = result.intervals
    assert intervals[0, 0] == 0.0 and intervals[-1, 1] == pytest.approx(10.0)
    assert np.allclose(intervals[1:, 0], intervals[:-1, 1])
    assert np.all(intervals[:, 1] > intervals[:, 0])
    states = intervals[:, 2].astype(int)
    assert set(states) == {1, 2, 3, 4}
    assert np.all(states[1:] == states[:-1] % 4 + 1)  # S1 -> systole -> S2 -> diastole -> S1
    assert np.array_equal(result.s1_onsets_s, intervals[1:][states[1:] == 1, 0])
    assert result.cycle_count == len(result.s1_onsets_s)


def test_onsets_do_not_depend_on_loudness():
    samples, rate, _, _ = synthetic_pcg(100)
    quiet, loud = sg.segment(samples * 1e-3, rate), sg.segment(samples * 30, rate)
    assert np.array_equal(quiet.s1_onsets_s, loud.s1_onsets_s)
    assert quiet.heart_rate_bpm == pytest.approx(loud.heart_rate_bpm)


# --- no rhythm: a flag and a reason, never an exception ---


def _white_noise(seed, duration_s=20.0, rate_hz=4000):
    return np.random.default_rng(seed).standard_normal(int(duration_s * rate_hz)), rate_hz


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _white_noise(0), "no heart sounds"),
        (lambda: _white_noise(1, duration_s=6.0), ""),
        (lambda: (np.cumsum(np.random.default_rng(2).standard_normal(80000)), 4000), ""),
        (lambda: (np.zeros(80000), 4000), "silent"),
        (lambda: (np.full(80000, 0.3), 4000), "no sound between 25 and 400 Hz"),
        (lambda: (np.sin(2 * np.pi * 50 * np.arange(80000) / 4000), 4000), "no periodic envelope"),
        (lambda: (synthetic_pcg(80)[0][:4000], 4000), "too short"),
        (lambda: (np.zeros(0), 4000), "too short"),
        (lambda: (np.where(np.arange(80000) == 5, np.nan, synthetic_pcg(80, duration_s=20)[0]), 4000), "NaN"),
    ],
    ids=["white-noise", "white-noise-6s", "brown-noise", "zeros", "dc", "hum-50hz", "1s-clip", "empty", "nan"],
)
def test_no_rhythm_is_flagged_not_raised(make, reason):
    samples, rate = make()
    result = sg.segment(samples, rate)
    assert not result.rhythm_found
    assert reason in result.reason and result.reason
    assert result.intervals.shape == (0, 3) and len(result.s1_onsets_s) == 0 and len(result.s2_onsets_s) == 0
    assert math.isnan(result.heart_rate_bpm) and math.isnan(result.systolic_interval_s)


@pytest.mark.parametrize("seed", range(5))
def test_white_noise_of_any_seed_has_no_rhythm(seed):
    assert not sg.segment(*_white_noise(seed + 10)).rhythm_found


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mono"):
        sg.segment(np.zeros((100, 2)), 4000)
    with pytest.raises(ValueError, match="positive"):
        sg.segment(np.zeros(100), 0)


# --- scoring ---


def test_score_onsets_hand_made_cases():
    reference = [1.0, 2.0, 3.0, 4.0]
    assert sg.score_onsets(reference, reference) == (1.0, 1.0, 1.0)
    assert sg.score_onsets([1.05, 1.95, 3.059, 3.941], reference) == (1.0, 1.0, 1.0)  # shifted within 60 ms
    assert sg.score_onsets([1.07, 2.0, 3.0, 4.0], reference) == (0.75, 0.75, 0.75)  # one shifted beyond
    assert sg.score_onsets([1.0, 2.0], reference) == (1.0, 0.5, pytest.approx(2 / 3))  # missing
    assert sg.score_onsets([1.0, 1.5, 2.0, 3.0, 4.0, 5.0], reference) == (4 / 6, 1.0, 0.8)  # extra
    # One prediction answers one reference only, the closest pair first.
    assert sg.score_onsets([1.0, 1.01], [1.0]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert sg.score_onsets([1.04], [1.0, 1.05]) == (1.0, 0.5, pytest.approx(2 / 3))
    assert sg.score_onsets([1.1], [1.0], tolerance_s=0.1) == (1.0, 1.0, 1.0)
    assert sg.score_onsets([], reference) == (1.0, 0.0, 0.0)
    assert sg.score_onsets(reference, []) == (0.0, 1.0, 0.0)
    assert sg.score_onsets([], []) == (1.0, 1.0, 1.0)


def test_onsets_count_only_inside_the_annotated_span():
    annotation = np.array(
        [[0.0, 1.0, 0], [1.0, 1.1, 1], [1.1, 1.4, 2], [1.4, 1.5, 3], [1.5, 2.0, 4], [2.0, 2.1, 1], [2.1, 3.0, 0]]
    )
    assert sg.annotated_spans(annotation) == [(1.0, 2.1)]
    # 0.5 and 2.5 fall outside the span: neither counted as false positives; 0.97 matches the onset at the edge.
    assert sg.onset_counts([0.5, 0.97, 2.0, 2.5], annotation, sg.S1) == (2, 2, 2)
    assert sg.onset_counts([1.0, 1.7, 2.0], annotation, sg.S1) == (2, 3, 2)  # 1.7 inside: a false positive
    assert sg.onset_counts([1.4], annotation, sg.S2) == (1, 1, 1)
    assert sg.reference_heart_rate(annotation) == pytest.approx(60.0)


# --- the decoder on its own ---


def test_hsmm_viterbi_follows_the_emissions_and_the_cycle():
    truth = np.repeat([0, 1, 2, 3, 0, 1, 2, 3, 0], [3, 5, 2, 6, 3, 5, 2, 6, 4])
    log_emission = np.where(np.arange(4)[None, :] == truth[:, None], 0.0, -3.0)
    means, sds = np.array([[3.0, 5.0, 2.0, 6.0]]), np.array([1.0, 1.0, 1.0, 1.0])
    log_duration, log_survival = sg._duration_tables(means[0], sds, 12)
    [(states, log_likelihood)] = sg.hsmm_viterbi(log_emission, log_duration[None], log_survival[None], means)
    assert np.array_equal(states, truth)
    assert np.isfinite(log_likelihood)
    # A lone contrary frame inside a long segment is outvoted by the durations.
    noisy = log_emission.copy()
    noisy[12] = [-3.0, 0.0, -3.0, -3.0]
    [(states, _)] = sg.hsmm_viterbi(noisy, log_duration[None], log_survival[None], means)
    assert np.array_equal(states, truth)


def test_packaged_model_loads_and_rejects_other_formats(tmp_path):
    model = sg.load_model()
    assert model.emission_means.shape == (4, len(sg.FEATURE_NAMES))
    data = json.loads(sg.MODEL_PATH.read_text())
    assert data["format"] == sg.MODEL_FORMAT
    data["format"] = "heartsound-segmentation/0"
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format"):
        sg.load_model(tmp_path / "old.json")


# --- real CirCor recordings ---


@pytest.fixture(scope="module")
def circor():
    """Features of every annotated recording of both CirCor sample sets, computed once."""
    if not (HELD_OUT.is_dir() and FIT_ON.is_dir()):
        message = f"CirCor samples not found at {HELD_OUT} and {FIT_ON}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    recordings = sg.annotated_recordings([HELD_OUT, FIT_ON])
    return [(recording, sg._load_features(recording)) for recording in recordings]


def _scores(pairs, model_for):
    scores = sg.Scores()
    for recording, (features, rhythm_envelope, duration_s) in pairs:
        result = sg.segment_features(features, rhythm_envelope, model_for(recording), duration_s)
        scores.add(result, recording.annotation)
    return scores.summary()


def test_held_out_patients_reach_the_target(circor):
    model = sg.load_model()
    fitted_patients = set(json.loads(sg.MODEL_PATH.read_text())["fitted_on"]["patients"])
    held_out = [(r, f) for r, f in circor if r.wav.is_relative_to(HELD_OUT)]
    assert len(held_out) == 16 and not {r.patient for r, _ in held_out} & fitted_patients
    summary = _scores(held_out, lambda _: model)
    assert summary["S1_f1"] >= HELD_OUT_MIN_F1, summary
    assert summary["S2_f1"] >= HELD_OUT_MIN_F1, summary
    assert summary["heart_rate_mae_bpm"] < 10, summary


def test_leave_patients_out_cross_validation_reaches_the_target(circor):
    fold_of = sg.patient_folds([r.patient for r, _ in circor], 5)
    models = {k: sg.fit_model([(f[0], r.annotation) for r, f in circor if fold_of[r.patient] != k]) for k in range(5)}
    summary = _scores(circor, lambda recording: models[fold_of[recording.patient]])
    assert summary["recordings"] == 93
    assert summary["S1_f1"] >= CROSS_VALIDATED_MIN_F1, summary
    assert summary["S2_f1"] >= CROSS_VALIDATED_MIN_F1, summary
    assert summary["heart_rate_mae_bpm"] < 6, summary


def test_refit_is_deterministic_and_reproduces_the_committed_model(circor, tmp_path):
    out = tmp_path / "refit.json"
    assert sg.main(["fit", str(FIT_ON), "--out", str(out)]) == 0
    refit, committed = json.loads(out.read_text()), json.loads(sg.MODEL_PATH.read_text())
    _assert_same(refit, committed)
    # Same data, same bytes: the features from the fixture give the same JSON as the command's own loading.
    pairs = [(f[0], r.annotation) for r, f in circor if r.wav.is_relative_to(FIT_ON)]
    again = sg.fit_model(pairs).to_json(sg._fitted_on([r for r, _ in circor if r.wav.is_relative_to(FIT_ON)]))
    assert json.dumps(again, indent=1) + "\n" == out.read_text()


def _assert_same(a, b, path="model"):
    """Equal structure and values; floats to the 6 significant digits the JSON keeps (a last-bit difference in a
    sum on another CPU may round the other way)."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=2e-6, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b, path


# --- heart-cycle features ---


def _regular_onsets(period_s=0.75, duration_s=15.0):
    s1 = np.arange(0.25 - period_s, duration_s, period_s)
    return s1, s1 + 0.1 + 0.28 * period_s


def test_cycle_features_of_a_regular_rhythm():
    s1, s2 = _regular_onsets()
    samples = pcg_from_onsets(s1, s2, 15.0)
    features, segmentation = cycles.recording_cycle_features(samples, 4000)
    named = cycles.as_dict(features)
    assert features.shape == (len(cycles.FEATURE_NAMES),) and np.isfinite(features).all()
    assert named["rhythm_found"] == 1.0
    assert named["heart_rate_bpm"] == segmentation.heart_rate_bpm == pytest.approx(80, abs=2)
    assert named["cycle_count"] == len(segmentation.s1_onsets_s) - 1 >= 17
    assert named["rr_mean_s"] == pytest.approx(0.75, abs=0.02)
    assert named["rr_cv"] < 0.05 and named["rr_max_relative_deviation"] < 0.1
    assert named["systolic_interval_mean_s"] == pytest.approx(0.31, abs=0.03)
    assert named["diastolic_interval_mean_s"] == pytest.approx(0.44, abs=0.03)
    assert named["systolic_interval_mean_s"] + named["diastolic_interval_mean_s"] == pytest.approx(0.75, abs=0.02)
    # Above the tones the phases hold the same noise. (Below 80 Hz the band filters' ringing around the unit-loud
    # tones outweighs the quiet noise, and diastole comes out louder.)
    for name in cycles.ENERGY_NAMES[2:]:
        assert abs(named[name]) < 0.2, name


def test_an_early_beat_shows_in_the_rr_deviation():
    s1, s2 = _regular_onsets()
    s1, s2 = s1.copy(), s2.copy()
    s1[10] -= 0.25  # an extrasystole, 250 ms early, with its S2
    s2[10] -= 0.25
    named = cycles.as_dict(cycles.recording_cycle_features(pcg_from_onsets(s1, s2, 15.0), 4000)[0])
    assert named["rr_max_relative_deviation"] > 0.25
    assert named["rr_std_s"] > 0.05


def test_a_systolic_murmur_shows_in_the_systolic_energy():
    s1, s2 = _regular_onsets()
    plain = cycles.as_dict(cycles.recording_cycle_features(pcg_from_onsets(s1, s2, 15.0), 4000)[0])
    murmur = cycles.as_dict(cycles.recording_cycle_features(pcg_from_onsets(s1, s2, 15.0, murmur=0.1), 4000)[0])
    assert murmur["rhythm_found"] == 1.0
    for band in ("80_200hz", "200_400hz"):  # the murmur's band: systole clearly louder than diastole
        name = f"systolic_diastolic_log10_power_ratio_{band}"
        assert murmur[name] > 1.0 and abs(plain[name]) < 0.2, name
    # 400-800 Hz holds no murmur (only the filter's skirt) and no more than 4 kHz / 2 in a 2 kHz recording.
    low_rate = cycles.as_dict(cycles.recording_cycle_features(pcg_from_onsets(s1, s2, 15.0, rate_hz=1000), 1000)[0])
    assert low_rate["rhythm_found"] == 1.0
    assert low_rate["systolic_diastolic_log10_power_ratio_400_800hz"] == cycles.FILL_VALUE


def test_a_murmur_shows_in_every_cycle_and_a_noise_burst_in_one_does_not():
    s1, s2 = _regular_onsets()
    plain = cycles.as_dict(cycles.recording_cycle_features(pcg_from_onsets(s1, s2, 15.0), 4000)[0])
    murmur = cycles.as_dict(cycles.recording_cycle_features(pcg_from_onsets(s1, s2, 15.0, murmur=0.1), 4000)[0])
    band = "80_200hz"
    median, iqr = (
        f"systolic_diastolic_log10_power_ratio_median_{band}",
        f"systolic_diastolic_log10_power_ratio_iqr_{band}",
    )
    assert murmur[median] > 1.0 and abs(plain[median]) < 0.2
    assert murmur[f"loud_systole_share_{band}"] > 0.9 and plain[f"loud_systole_share_{band}"] < 0.1
    assert (
        murmur[f"systolic_s1_log10_power_ratio_median_{band}"]
        > plain[f"systolic_s1_log10_power_ratio_median_{band}"] + 0.5
    )
    assert (
        abs(
            murmur[f"diastolic_s2_log10_power_ratio_median_{band}"]
            - plain[f"diastolic_s2_log10_power_ratio_median_{band}"]
        )
        < 0.2
    )
    assert plain[iqr] < 0.3
    # One loud burst of 100-300 Hz noise in one systole of the plain recording: it moves the recording's mean power
    # ratio, not the median over cycles, nor the share of loud systoles by more than that one cycle.
    samples = pcg_from_onsets(s1, s2, 15.0)
    one_systole = slice(int((s1[8] + 0.12) * 4000), int((s2[8] - 0.02) * 4000))
    samples[one_systole] += pcg_from_onsets(s1, s2, 15.0, noise=0.0, murmur=3.0)[one_systole]
    burst = cycles.as_dict(cycles.recording_cycle_features(samples, 4000)[0])
    assert burst["rhythm_found"] == 1.0
    assert (
        burst[f"systolic_diastolic_log10_power_ratio_{band}"]
        > plain[f"systolic_diastolic_log10_power_ratio_{band}"] + 0.5
    )
    assert abs(burst[median] - plain[median]) < 0.1
    assert burst[f"loud_systole_share_{band}"] <= plain[f"loud_systole_share_{band}"] + 1 / burst["cycle_count"] + 1e-9


def test_no_rhythm_gives_the_fill_value_and_the_flag():
    features, segmentation = cycles.recording_cycle_features(*_white_noise(3))
    assert not segmentation.rhythm_found
    assert np.array_equal(features, np.full(len(cycles.FEATURE_NAMES), cycles.FILL_VALUE))
    assert cycles.as_dict(features)["rhythm_found"] == 0.0


def _run_segment_stage(tmp_path, manifest_text):
    (tmp_path / "manifest.csv").write_text(manifest_text)
    command = [sys.executable, str(REPO_ROOT / "stages" / "segment.py"), "manifest.csv", "cycles"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)


def test_segment_stage_keeps_every_recording_and_refuses_an_empty_manifest(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "noise.wav", _white_noise(0, duration_s=4.0)[0].astype(np.float32) * 0.1, 4000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    result = _run_segment_stage(tmp_path, "recording_id,path\nnoise,noise.wav\nbroken,broken.wav\n")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "cycles" / "cycle_features.csv", keep_default_na=False)
    assert list(table["recording_id"]) == ["noise", "broken"]  # every input accounted for, each with its reason
    assert table.loc[1, "no_rhythm_reason"].startswith("unreadable") and table.loc[0, "no_rhythm_reason"] != ""
    assert (table["rhythm_found"] == 0).all()

    shutil.rmtree(tmp_path / "cycles")
    result = _run_segment_stage(tmp_path, "recording_id,path\n")
    assert result.returncode != 0 and "manifest.csv lists no recordings" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "cycles").exists()


def test_the_cycle_quantiles_are_numpys_nanquantile():
    rng = np.random.default_rng(0)
    for _ in range(100):
        values = rng.normal(size=(int(rng.integers(1, 30)), 5, 4))
        values[rng.random(values.shape) < 0.3] = np.nan
        values[:, 0, 0] = np.nan  # a band the sample rate cannot hold
        for q in (0.25, 0.5, 0.75):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # numpy's all-NaN column
                expected = np.nanquantile(values, q, axis=0)
            np.testing.assert_allclose(cycles._nan_quantiles(values, [q])[0], expected, rtol=1e-12, atol=1e-12)
