"""Model builders, class weights, augmentation and deterministic training (tiny data, few epochs)."""

import dataclasses
import functools
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from heartsound import features, model
from heartsound.config import TrainParams

SHAPE = (8, 32)  # (n_mfcc, frames): small enough for a seconds-long test


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, *SHAPE)).astype(np.float32) + y[:, None, None].astype(np.float32)
    return x, y


@pytest.mark.parametrize("name", sorted(model.BUILDERS))
def test_models_take_mfcc_windows_and_output_class_probabilities(name):
    net = model.build_model(name, (*SHAPE, 1), 5, 1e-3)
    assert tuple(net.input_shape[1:]) == (*SHAPE, 1)
    probs = net.predict(model.to_input(_data(4)[0]), verbose=0)
    assert probs.shape == (4, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="bogus"):
        model.build_model("bogus", (*SHAPE, 1), 5, 1e-3)


def test_balanced_class_weights_favour_rare_classes_and_fill_absent_ones():
    y = np.array([0] * 6 + [1] * 2)
    weights = model.class_weights(y, 3, "balanced")
    assert weights[0] == pytest.approx(8 / (2 * 6))
    assert weights[1] == pytest.approx(8 / (2 * 2))
    assert weights[2] == 1.0
    assert model.class_weights(y, 3, "none") is None


def test_weights_balanced_by_source_keep_class_totals_and_take_the_source_out_of_the_label():
    # Site a is mostly class 1, site b mostly class 0: with plain balanced weights the site predicts the label.
    y = np.array([1] * 30 + [0] * 10 + [1] * 5 + [0] * 35)
    sources = np.array(["a"] * 40 + ["b"] * 40)
    plain = model.window_weights(y, 2, "balanced")
    by_source = model.window_weights(y, 2, "balanced_by_source", sources)
    assert by_source.dtype == np.float32 and by_source.shape == y.shape
    for c in (0, 1):  # every class weighs the same in total, as with balanced
        assert by_source[y == c].sum() == pytest.approx(plain[y == c].sum(), rel=1e-5)
        # ... and within a class the two sites weigh the same
        assert by_source[(y == c) & (sources == "a")].sum() == pytest.approx(
            by_source[(y == c) & (sources == "b")].sum(), rel=1e-5
        )
    # Weighted, each site is half class 1: the site no longer tells the label; with plain weights it does.

    def share(w, site):
        return w[(sources == site) & (y == 1)].sum() / w[sources == site].sum()

    assert share(by_source, "a") == pytest.approx(0.5) and share(by_source, "b") == pytest.approx(0.5)
    assert share(plain, "a") > 0.6 > 0.3 > share(plain, "b")


def test_weights_balanced_by_source_with_one_source_are_the_balanced_ones():
    y = np.array([0] * 6 + [1] * 2 + [2] * 4)
    np.testing.assert_allclose(
        model.window_weights(y, 3, "balanced_by_source", np.array(["only"] * 12)),
        model.window_weights(y, 3, "balanced"),
        rtol=1e-6,
    )
    # A class only one source has keeps its whole share there (PASCAL: extrastole only in set_b).
    sources = np.array(["a"] * 3 + ["b"] * 3 + ["b"] * 2 + ["a"] * 4)
    weights = model.window_weights(y, 3, "balanced_by_source", sources)
    assert weights[6:8].sum() == pytest.approx(12 / 3)
    np.testing.assert_array_equal(model.window_weights(y, 3, "none"), np.ones(12, np.float32))
    with pytest.raises(ValueError, match="balanced_by_source"):
        model.window_weights(y, 3, "balanced_by_source")


def test_training_balanced_by_source_uses_the_sources_in_both_input_paths():
    x, y = _data()
    sources = np.where(np.arange(len(y)) < 25, "a", "b")
    for augment in (True, False):
        params = TrainParams(model="cnn1d", epochs=2, batch_size=16, patience=0, augment=augment, seed=3)
        weighted = dataclasses.replace(params, class_weight="balanced_by_source")
        # Training is deterministic (test_same_seed_same_weights), so any difference is the weights'.
        by_source, _ = model.train(x, y, x[:0], y[:0], 3, weighted, verbose=0, sources=sources)
        plain, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0, sources=sources)
        assert any(not np.array_equal(a, b) for a, b in zip(by_source.get_weights(), plain.get_weights()))


def test_augment_shifts_in_time_and_changes_gain_through_mfcc0_only():
    x, _ = _data(6)
    out = model.augment(x, np.random.default_rng(0), TrainParams(augment=True))
    assert out.shape == x.shape and out is not x
    # A circular shift keeps each coefficient's values; gain moves MFCC 0 by one constant per window.
    np.testing.assert_allclose(np.sort(out[:, 1:], axis=2), np.sort(x[:, 1:], axis=2))
    assert not np.allclose(out[:, 1:], x[:, 1:])
    gain = out[:, 0].mean(axis=1) - x[:, 0].mean(axis=1)
    np.testing.assert_allclose(np.sort(out[:, 0], axis=1), np.sort(x[:, 0], axis=1) + gain[:, None], atol=1e-4)
    assert np.abs(gain).min() > 0
    np.testing.assert_array_equal(model.augment(x, np.random.default_rng(0), TrainParams(augment=False)), x)


def test_cepstrum_of_an_eq_curve_is_what_librosa_mfccs_move_by():
    """Filtering a recording by an EQ curve (dB per mel band) moves its MFCCs by _cepstrum(curve), every frame."""
    import librosa

    rng = np.random.default_rng(1)
    mel_power = rng.uniform(0.1, 10.0, (64, 30))
    curve = model.random_eq(1, 64, 6.0, rng)[0]
    before = librosa.feature.mfcc(S=librosa.power_to_db(mel_power, top_db=None), n_mfcc=40)
    filtered = mel_power * 10 ** (curve[:, None] / 10)
    after = librosa.feature.mfcc(S=librosa.power_to_db(filtered, top_db=None), n_mfcc=40)
    np.testing.assert_allclose(after - before, np.repeat(model._cepstrum(curve[None], 40).T, 30, axis=1), atol=1e-6)


def test_random_eq_is_a_smooth_per_window_response():
    x, _ = _data(6)
    out = model.augment(x, np.random.default_rng(0), TrainParams(eq_db=6.0))
    moved = out - x
    # One constant per coefficient and window (a filter does not change over time), different per window.
    np.testing.assert_allclose(moved, moved[:, :, :1].repeat(x.shape[2], axis=2), atol=1e-5)
    assert not np.allclose(moved[0], moved[1])
    # Smooth curves live in the low coefficients: MFCCs 0-3 carry most of the change.
    energy = (moved[:, :, 0] ** 2).sum(axis=0)
    assert energy[:4].sum() > 0.8 * energy.sum()


def test_time_mask_sets_a_run_of_frames_to_the_window_mean():
    x, _ = _data(20)
    out = model.augment(x, np.random.default_rng(0), TrainParams(time_mask=0.25))
    masked = ~np.isclose(out, x).all(axis=1)  # [windows, frames]
    widths = masked.sum(axis=1)
    assert widths.max() <= 0.25 * x.shape[2] and widths.max() > 0
    for window, frames in zip(range(len(x)), masked):
        where = np.flatnonzero(frames)
        if len(where):
            assert where[-1] - where[0] + 1 == len(where)  # one contiguous run
            np.testing.assert_allclose(out[window][:, where], np.repeat(x[window].mean(axis=1)[:, None], len(where), 1))


def test_frequency_mask_flattens_a_run_of_mel_bands():
    """With as many coefficients as bands the cepstral round trip is exact: the masked bands are flat, the rest kept."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 16, 12)).astype(np.float32)
    out = model.augment(x, np.random.default_rng(3), TrainParams(freq_mask=0.3), n_mels=16)
    dct = features.dct_matrix(16, 16)  # [bands, coefficients]
    bands_before, bands_after = dct @ x, dct @ out
    changed = ~np.isclose(bands_before, bands_after, atol=1e-4).all(axis=2)  # [windows, bands]
    assert changed.any() and changed.sum(axis=1).max() <= 0.3 * 16
    for window in range(len(x)):
        bands = np.flatnonzero(changed[window])
        if len(bands) > 1:
            np.testing.assert_allclose(
                bands_after[window, bands], bands_after[window, bands[:1]].repeat(len(bands), 0), atol=1e-4
            )


def test_noise_adds_stationary_power_at_the_chosen_snr():
    """With as many coefficients as bands the cepstral round trip is exact: in power, every band gains one noise
    level for all frames, at an SNR in [min, min + 20] dB below the window's mean power; nothing gets quieter."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 8, size=(12, 16, 30)).astype(np.float32)
    x[:, 0] += 40
    out = model.augment(x, np.random.default_rng(3), TrainParams(noise_snr_db=10.0), n_mels=16)
    dct = features.dct_matrix(16, 16).astype(np.float64)
    before, after = 10 ** ((dct @ x) / 10), 10 ** ((dct @ out) / 10)  # [windows, bands, frames] in power
    added = after - before
    assert (added > -1e-3 * before).all()
    np.testing.assert_allclose(added, added[:, :, :1].repeat(30, axis=2), rtol=1e-2)
    snr = 10 * np.log10(before.mean(axis=(1, 2)) / added[:, :, 0].mean(axis=1))
    assert (snr > 10 - 0.1).all() and (snr < 30 + 0.1).all() and np.ptp(snr) > 2
    # Quiet frames rise more than loud ones.
    rise = (dct @ out) - (dct @ x)
    quiet = (dct @ x) < np.median(dct @ x)
    assert rise[quiet].mean() > 3 * rise[~quiet].mean()
    np.testing.assert_array_equal(model.augment(x, np.random.default_rng(3), TrainParams(), n_mels=16), x)


def test_mixup_batches_mix_windows_labels_and_weights_alike():
    x, y = _data(16)
    onehot = np.eye(3, dtype=np.float32)[y]
    weights = np.linspace(1, 2, 16).astype(np.float32)
    batches = model._batches(x, onehot, weights, TrainParams(mixup=0.4, batch_size=16, seed=0), 64, len(x))
    xb, yb, wb = batches[0]
    np.testing.assert_allclose(yb.sum(axis=1), 1, rtol=1e-6)
    mixed = (yb.max(axis=1) < 0.999).sum()
    assert mixed > 0
    # Each mixed window is lam * one + (1 - lam) * another, with the lam its labels and weight carry.
    for label, weight in zip(yb, wb):
        lams = label[label > 0]
        assert weights.min() - 1e-6 <= weight <= weights.max() + 1e-6
        assert len(lams) <= 2 and np.isclose(lams.sum(), 1)
    assert not np.allclose(xb[..., 0], x)


def test_an_epoch_budget_draws_fresh_windows_each_epoch_and_without_one_every_window():
    x, y = _data(40)
    weights = np.ones(40, np.float32)
    params = TrainParams(epoch_windows=24, batch_size=8, seed=0)
    budget = model._batches(x, y, weights, params, 64, model.epoch_size(len(x), params))
    assert len(budget) == 3

    def epoch(batches):
        # Without augmentation a batch holds the windows themselves: find which ones by their first frame.
        seen = [
            np.flatnonzero((x[:, 0, 0] == xb[:, 0, 0][:, None]).any(axis=0))
            for xb, _, _ in (batches[i] for i in range(len(batches)))
        ]
        return np.concatenate(seen)

    first = epoch(budget)
    budget.on_epoch_end()
    second = epoch(budget)
    assert len(first) == len(set(first)) == 24 and len(second) == 24
    assert set(first) != set(second)  # a fresh draw, so over the epochs every window is heard
    every = model._batches(x, y, weights, TrainParams(batch_size=8, seed=0), 64, len(x))
    assert len(every) == 5 and sorted(epoch(every)) == list(range(40))
    assert model.epoch_size(40, TrainParams(epoch_windows=100)) == 40


def test_an_epoch_budget_trains_fewer_steps_deterministically():
    x, y = _data(64)
    params = TrainParams(model="cnn1d", epochs=2, batch_size=16, patience=0, lr_schedule="cosine", seed=3)
    budget = dataclasses.replace(params, epoch_windows=32)
    first, _ = model.train(x, y, x[:0], y[:0], 3, budget, verbose=0)
    second, _ = model.train(x, y, x[:0], y[:0], 3, budget, verbose=0)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(first.optimizer.iterations) == 2 * 2  # 32 of the 64 windows per epoch, batches of 16
    full, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0)
    assert int(full.optimizer.iterations) == 2 * 4


AUGMENTED = TrainParams(model="cnn1d", epochs=2, batch_size=16, patience=0, augment=True, seed=3)


@functools.cache
def _augmented_weights() -> tuple:
    """The weights of AUGMENTED trained on _data(), without the options under test (trained once per worker)."""
    x, y = _data()
    return tuple(model.train(x, y, x[:8], y[:8], 3, AUGMENTED, verbose=0)[0].get_weights())


@pytest.mark.parametrize(
    "options",
    [{"mixup": 0.2}, {"loss": "focal"}, {"eq_db": 3.0, "time_mask": 0.2, "freq_mask": 0.2}, {"noise_snr_db": 5.0}],
)
def test_training_with_each_augmentation_and_loss_is_deterministic_and_takes_effect(options):
    x, y = _data()
    params = dataclasses.replace(AUGMENTED, **options)
    first, history = model.train(x, y, x[:8], y[:8], 3, params, verbose=0)
    second, _ = model.train(x, y, x[:8], y[:8], 3, params, verbose=0)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_loss"]).all()
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), _augmented_weights()))


def test_same_seed_same_weights():
    x, y = _data()
    # augment=True: the shuffling and augmentation draw from the seed too.
    params = TrainParams(model="cnn1d", epochs=2, batch_size=16, patience=0, augment=True, seed=3)
    first, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0)
    second, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    other, _ = model.train(x, y, x[:0], y[:0], 3, dataclasses.replace(params, seed=4), verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights()))


def test_early_stopping_restores_the_best_epoch_and_patience_zero_runs_all():
    x, y = _data()
    params = TrainParams(model="seed_cnn", epochs=6, batch_size=16, patience=1, seed=0)
    _, history = model.train(x, y, x, y, 3, params, verbose=0)
    assert len(history["loss"]) <= 6 and "val_loss" in history
    _, history = model.train(x, y, x, y, 3, dataclasses.replace(params, patience=0, epochs=3), verbose=0)
    assert len(history["loss"]) == 3


def test_ensemble_averages_members_trained_with_consecutive_seeds():
    x, y = _data()
    params = TrainParams(model="cnn1d", epochs=2, batch_size=16, patience=0, augment=True, seed=3)
    ensemble, history = model.train(x, y, x[:0], y[:0], 3, dataclasses.replace(params, ensemble=2), verbose=0)
    members = [model.train(x, y, x[:0], y[:0], 3, dataclasses.replace(params, seed=s), verbose=0)[0] for s in (3, 4)]
    expected = np.mean([model.predict_windows(m, x) for m in members], axis=0)
    np.testing.assert_allclose(model.predict_windows(ensemble, x), expected, atol=1e-6)
    assert len(history["loss"]) == 2


@pytest.mark.parametrize("ensemble", [1, 2])
def test_saved_model_predicts_like_the_trained_one(tmp_path, ensemble):
    """model.h5 and model.tflite (normalisation inside) give the trained model's probabilities."""
    import tensorflow as tf

    x, y = _data()
    params = TrainParams(model="cnn1d", epochs=1, batch_size=16, patience=0, seed=0, ensemble=ensemble)
    trained, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0)
    model.save(trained, {"classes": ["a", "b", "c"]}, tmp_path)
    expected = model.predict_windows(trained, x[:4])
    np.testing.assert_allclose(model.predict_windows(model.load_keras(tmp_path), x[:4]), expected, atol=1e-5)
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / model.TFLITE_FILE))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], (1, *SHAPE, 1))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], model.to_input(x[:1]))
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"])[0], expected[0], atol=1e-4)


LATE_THREADS = """
import warnings
import tensorflow as tf
from heartsound import features, model

model.set_threads(3)
tf.constant(1.0) + 1.0  # TensorFlow starts: its pools are fixed from here on
assert tf.config.threading.get_intra_op_parallelism_threads() == 3
assert tf.config.threading.get_inter_op_parallelism_threads() == 1
model.set_threads(3)  # the same value again: nothing to change
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model.set_threads(4)
assert [w.category for w in caught] == [RuntimeWarning], caught
assert tf.config.threading.get_intra_op_parallelism_threads() == 3
print("ok")
"""


def test_threads_are_set_before_tensorflow_starts_and_a_late_call_warns():
    # A fresh process: the pools take train.threads; once TensorFlow has run an op they cannot change, and a
    # process that asks for other counts then (a notebook, a test session) is warned, not stopped.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", LATE_THREADS], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def _pretrained(tmp_path, name="cnn1d", shape=SHAPE):
    """A 2-class model trained one epoch and written as the pretrain stage writes it."""
    x, y = _data()
    params = TrainParams(model=name, epochs=1, batch_size=16, patience=0, seed=5)
    trained, _ = model.train(x, y % 2, x[:0], y[:0], 2, params, verbose=0)
    meta = {"model": name, "classes": ["abnormal", "normal"], "feature_shape": list(shape)}
    model.save_pretrained(trained, meta, tmp_path)
    return trained


def test_pretrained_init_copies_every_layer_but_the_classifier(tmp_path):
    source = _pretrained(tmp_path)
    target = model.build_model("cnn1d", (*SHAPE, 1), 3, 1e-3)
    model.load_pretrained(target, "cnn1d", tmp_path)
    for mine, theirs in zip(target.layers[:-1], source.layers[:-1]):
        for a, b in zip(mine.get_weights(), theirs.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert target.layers[-1].get_weights()[0].shape[-1] == 3
    # And train.init: pretrained starts there: one epoch from it differs from one epoch from random weights.
    x, y = _data()
    params = TrainParams(model="cnn1d", epochs=1, batch_size=16, patience=0, seed=5)
    scratch, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0)
    pretrained = dataclasses.replace(params, init="pretrained")
    tuned, _ = model.train(x, y, x[:0], y[:0], 3, pretrained, verbose=0, init_dir=tmp_path)
    assert not np.array_equal(scratch.layers[3].get_weights()[0], tuned.layers[3].get_weights()[0])


def test_pretrained_weights_of_another_model_or_window_are_refused(tmp_path):
    _pretrained(tmp_path, shape=(8, 16))
    target = model.build_model("cnn1d", (*SHAPE, 1), 3, 1e-3)
    with pytest.raises(ValueError, match="rerun the pretrain stage"):
        model.load_pretrained(target, "cnn1d", tmp_path)
    with pytest.raises(ValueError, match="no usable pretrained.json"):
        model.load_pretrained(target, "cnn1d", tmp_path / "missing")
    x, y = _data()
    with pytest.raises(ValueError, match="no pretrained model directory"):
        model.train(x, y, x[:0], y[:0], 3, TrainParams(model="cnn1d", epochs=1, init="pretrained"), verbose=0)


def test_training_does_not_depend_on_pythons_global_random(monkeypatch):
    """Other threads draw from Python's global random (a Dask worker's event loop does, between a task's seeding
    and its training): neither the initial weights nor the order of the augmented batches may follow it."""
    x, y = _data(48)
    params = TrainParams(model="cnn1d", epochs=1, batch_size=16, seed=3, augment=True, epoch_windows=32)
    first, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0)
    seed_everything = model.seed_everything

    def then_another_thread_draws(*args):
        seed_everything(*args)
        random.random()

    monkeypatch.setattr(model, "seed_everything", then_another_thread_draws)
    second, _ = model.train(x, y, x[:0], y[:0], 3, params, verbose=0)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_source_adversary_reverses_its_gradient_into_the_shared_classifier():
    """Its loss reaches the CNN's weights reversed and scaled by the strength; the class output is the classifier's."""
    import tensorflow as tf

    x, _ = _data(16)
    sources = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    gradients = {}
    for strength in (1.0, 2.0):
        classifier = model.build_model("cnn1d", (*SHAPE, 1), 3, 1e-3, seed=1)
        trainer = model.with_source_adversary(classifier, 2, strength, seed=1)
        assert {v.path for v in classifier.trainable_variables} <= {v.path for v in trainer.trainable_variables}
        with tf.GradientTape() as tape:
            outputs = trainer([model.to_input(x), sources], training=False)
            adversary_loss = tf.add_n(trainer.losses)
        first_conv = next(v for v in classifier.trainable_variables if "conv1d" in v.path)
        # The adversary's own variables get the plain gradient (it learns to name the source).
        source_head = next(v for v in trainer.trainable_variables if "source_adversary" in v.path)
        conv_gradient, head_gradient = tape.gradient(adversary_loss, [first_conv, source_head])
        gradients[strength] = conv_gradient.numpy()
        np.testing.assert_allclose(outputs, classifier(model.to_input(x), training=False), atol=1e-6)
        assert float(tf.reduce_sum(tf.abs(head_gradient))) > 0
    assert np.abs(gradients[1.0]).max() > 0
    # Only the reversal lies between the loss and the CNN: twice the strength, twice the (reversed) gradient.
    np.testing.assert_allclose(gradients[2.0], 2 * gradients[1.0], rtol=1e-4, atol=1e-8)


def test_training_with_a_source_adversary_is_deterministic_and_scores_validation_on_classes_only():
    x, y = _data()
    sources = np.array(["site-a", "site-b"])[np.arange(len(y)) // 2 % 2]
    params = dataclasses.replace(AUGMENTED, source_adversary=0.5)
    first, history = model.train(x, y, x[:8], y[:8], 3, params, verbose=0, sources=sources)
    second, _ = model.train(x, y, x[:8], y[:8], 3, params, verbose=0, sources=sources)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(first.inputs) == 1  # the classifier alone is returned (and saved): no source input at prediction
    assert any(not np.array_equal(a, b) for a, b in zip(first.get_weights(), _augmented_weights()))
    # The training loss carries the adversary's; validation rows have no source, so val_loss is the class loss.
    first.compile(loss="sparse_categorical_crossentropy")
    class_loss = np.ravel(first.evaluate(model.to_input(x[:8]), y[:8], verbose=0))[0]
    assert history["val_loss"][-1] == pytest.approx(class_loss, rel=1e-4)


def test_a_source_adversary_with_one_source_is_left_out_and_without_sources_refused():
    x, y = _data()
    params = dataclasses.replace(AUGMENTED, source_adversary=0.5)
    alone, _ = model.train(x, y, x[:8], y[:8], 3, params, verbose=0, sources=np.full(len(y), "set_b"))
    for a, b in zip(alone.get_weights(), _augmented_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="source_adversary needs each training window's source"):
        model.train(x, y, x[:8], y[:8], 3, params, verbose=0)
