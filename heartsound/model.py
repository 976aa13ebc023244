"""Keras models and their training; the only module (with export) that imports TensorFlow."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np

from heartsound import features
from heartsound.config import FeaturizeParams, TrainParams
from heartsound.model_dir import METADATA_FILE, MODEL_FILE, TFLITE_FILE, to_input

# The same params must give the same numbers on any x86-64 machine, whatever its environment says. TensorFlow's
# matrix products and convolutions run oneDNN kernels chosen by the CPU's instruction set: AVX-512 and AVX2
# kernels round differently (measured: different predictions after 3 epochs). Capping oneDNN at AVX2, which every
# x86-64 CPU of the last decade has, makes every machine run the same kernels. Read when TensorFlow loads,
# so set here, in the one module that imports it, before it does; set, not defaulted, so no environment
# variable that DVC cannot see changes a result. docs/compare.md has the measurements.
DETERMINISM_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "1", "TF_DETERMINISTIC_OPS": "1"}
os.environ.update(DETERMINISM_ENV)


def set_threads(threads: int) -> None:
    """TensorFlow's thread pools from params (train.threads), not from the machine's core count: how a product
    is split across threads changes its rounding. Only before TensorFlow's first op; the same value again is a no-op.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow already ran an op in this process (a notebook, a test session): its pools are fixed now.
        # Stages are fresh processes and never get here.
        warnings.warn(
            f"TensorFlow started before train.threads={threads} could be applied; this process keeps its thread "
            "pools, so its numbers may differ in the last digits from a stage run",
            RuntimeWarning,
            stacklevel=2,
        )


def seed_everything(seed: int, threads: int = TrainParams.threads) -> None:
    """Fixed seeds, thread counts and deterministic ops: same params, same weights, on CPU."""
    import keras
    import tensorflow as tf

    set_threads(threads)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def layer_seeds(seed: int | None):
    """Seeds for a model's random layers (kernel initializers, dropout), in the order they are built.

    Keras draws an unseeded layer's seed from Python's global `random` when the layer is built: any other thread
    drawing from it in between (a Dask worker's event loop does) changes the initial weights. A private generator
    seeded as keras.utils.set_random_seed(seed) seeds the global one gives the same seeds, out of other threads'
    reach. None: keras's own draws.
    """
    if seed is None:
        return lambda: None
    draws = random.Random(seed)
    return lambda: draws.randint(1, int(1e9))  # as keras.random.make_default_seed draws


def build_seed_cnn(input_shape: tuple[int, ...], n_classes: int, name: str = "seed_cnn", seed: int | None = None):
    """The reference notebook's CNN: Conv2D 16/32/128 (kernel 2), each with 2x2 max-pool and dropout."""
    import keras
    from keras import layers

    next_seed = layer_seeds(seed)
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=input_shape))
    for filters, dropout in ((16, 0.2), (32, 0.2), (128, 0.5)):
        kernel = keras.initializers.GlorotUniform(seed=next_seed())
        model.add(layers.Conv2D(filters, kernel_size=2, activation="relu", padding="same", kernel_initializer=kernel))
        model.add(layers.MaxPooling2D(pool_size=2, padding="same"))
        model.add(layers.Dropout(dropout, seed=next_seed()))
    model.add(layers.GlobalAveragePooling2D())
    kernel = keras.initializers.GlorotUniform(seed=next_seed())
    model.add(layers.Dense(n_classes, activation="softmax", kernel_initializer=kernel))
    return model


def build_cnn1d(input_shape: tuple[int, ...], n_classes: int, name: str = "cnn1d", seed: int | None = None):
    """A 1-D CNN over time with the MFCC coefficients as channels, batch-normalised throughout.

    Cepstral coefficients are not translation-invariant along the coefficient axis, so the
    convolutions slide over time only; that is also ~10x cheaper than 2-D. The first
    BatchNormalization standardises each coefficient (MFCC 0 is ~100x the others), inside
    the model so the exported TFLite takes the raw MFCC windows. Kernels of 5 frames can
    learn deltas themselves.
    """
    import keras
    from keras import layers

    next_seed = layer_seeds(seed)
    n_mfcc, frames = input_shape[0], input_shape[1]
    inputs = keras.Input(shape=input_shape)
    x = layers.Reshape((n_mfcc, frames))(inputs)
    x = layers.Permute((2, 1))(x)  # [frames, n_mfcc]
    x = layers.BatchNormalization()(x)
    for filters in (64, 64, 128, 128):
        kernel = keras.initializers.GlorotUniform(seed=next_seed())
        x = layers.Conv1D(filters, 5, padding="same", use_bias=False, kernel_initializer=kernel)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling1D(2, padding="same")(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.5, seed=next_seed())(x)
    kernel = keras.initializers.GlorotUniform(seed=next_seed())
    outputs = layers.Dense(n_classes, activation="softmax", kernel_initializer=kernel)(x)
    return keras.Model(inputs, outputs, name=name)


BUILDERS = {"seed_cnn": build_seed_cnn, "cnn1d": build_cnn1d}


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    learning_rate,
    model_name: str | None = None,
    loss="sparse",
    seed: int | None = None,
):
    """A compiled model from its params name (train.model); learning_rate may be a keras schedule.
    loss: "sparse" (integer labels), or "crossentropy" / "focal" on one-hot (or mixed) labels. seed: layer_seeds'.
    """
    try:
        model = BUILDERS[name](input_shape, n_classes, model_name or name, seed)
    except KeyError:
        raise ValueError(f"unknown train.model {name!r} (known: {', '.join(BUILDERS)})") from None
    compile_model(model, learning_rate, loss)
    return model


def compile_model(model, learning_rate, loss="sparse") -> None:
    """Adam at learning_rate (a float or a keras schedule) on the loss build_model names, with accuracy."""
    import keras

    losses = {
        "sparse": "sparse_categorical_crossentropy",
        "crossentropy": "categorical_crossentropy",
        # alpha 1: the class balance is train.class_weight's; focal only down-weights the easy windows.
        "focal": keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=2.0),
    }
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=losses[loss], metrics=["accuracy"])


def with_source_adversary(classifier, n_sources: int, strength: float, seed: int | None = None):
    """The training model of domain-adversarial training (Ganin et al., JMLR 2016): inputs (windows, one-hot
    sources), output the classifier's. A small source classifier reads the embedding the classifier's last layer
    reads; its loss is added to the class loss, and its gradient reaches the embedding reversed and scaled by
    strength: it learns to name the source, the CNN learns to leave the source out of the embedding. Every layer
    of `classifier` is shared, so training this trains it; `classifier` alone is what is saved. All-zero source
    rows (validation) add no loss.
    """
    import keras
    import tensorflow as tf
    from keras import layers

    next_seed = layer_seeds(None if seed is None else seed + 1)

    @tf.custom_gradient
    def reverse_gradient(x):
        return tf.identity(x), lambda upstream: -strength * upstream

    class SourceAdversary(layers.Layer):
        def __init__(self):
            super().__init__(name="source_adversary")
            kernel = keras.initializers.GlorotUniform
            self.hidden = layers.Dense(64, activation="relu", kernel_initializer=kernel(seed=next_seed()))
            self.source = layers.Dense(n_sources, activation="softmax", kernel_initializer=kernel(seed=next_seed()))

        def call(self, embedding, sources):
            predicted = self.source(self.hidden(reverse_gradient(embedding)))
            self.add_loss(keras.ops.mean(keras.losses.categorical_crossentropy(sources, predicted)))
            return embedding  # unchanged: the class output reads it through this layer, so its loss is in the graph

    head = classifier.layers[-1]
    embedding = keras.Model(classifier.inputs, head.input)
    windows = keras.Input(shape=classifier.input_shape[1:])
    sources = keras.Input(shape=(n_sources,))
    outputs = head(SourceAdversary()(embedding(windows), sources))
    return keras.Model([windows, sources], outputs, name=f"{classifier.name}_source_adversarial")


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced weights over the classes present in y (train.class_weight balanced); None for none."""
    if mode == "none":
        return None
    present = np.unique(y)
    from sklearn.utils.class_weight import compute_class_weight

    weights = compute_class_weight("balanced", classes=present, y=y)
    mapping = {int(c): 1.0 for c in range(n_classes)}
    mapping.update({int(c): float(w) for c, w in zip(present, weights)})
    return mapping


def window_weights(y: np.ndarray, n_classes: int, mode: str, sources=None) -> np.ndarray:
    """Each training window's loss weight (train.class_weight), float32 [n].

    balanced: n / (classes * n_class), every class weighs the same in total. balanced_by_source: the same class
    totals, each shared equally by the sources that have the class, n / (classes * sources_with_class * n_cell).
    Where sources differ in their class mix (a site that is mostly abnormal), the plain weights let the model
    answer by recognising the site; here, within each class, no source outweighs another.
    """
    if mode != "balanced_by_source":
        weights = class_weights(y, n_classes, mode)
        return np.array([weights[c] if weights else 1.0 for c in y], np.float32)
    if sources is None or len(sources) != len(y):
        raise ValueError("train.class_weight balanced_by_source needs each training window's source")
    import pandas as pd

    table = pd.DataFrame({"label": np.asarray(y), "source": np.asarray(sources)})
    cell_size = table.groupby(["label", "source"])["label"].transform("size").to_numpy()
    sources_with_class = table.groupby("label")["source"].transform("nunique").to_numpy()
    n_present = table["label"].nunique()
    return (len(y) / (n_present * sources_with_class * cell_size)).astype(np.float32)


def augment(
    x: np.ndarray, rng: np.random.Generator, params: TrainParams, n_mels: int = FeaturizeParams.n_mels
) -> np.ndarray:
    """Augmented copies of MFCC windows [n, n_mfcc, frames], as params asks (train.augment, eq_db, noise_snr_db,
    time_mask, freq_mask).

    A window starts at an arbitrary point of the cardiac cycle, so a circular time shift is label-preserving.
    MFCCs are the orthonormal DCT of log-mel bands in dB, so anything a microphone does to the spectrum, a gain
    or a frequency response (EQ), adds the DCT of its dB curve to every frame: gain g adds g * sqrt(n_mels)
    to MFCC 0 only, and a random smooth curve stands for a stethoscope the model never heard.
    """
    out = x.copy()
    n, n_mfcc, frames = x.shape
    if params.augment:
        shifts = rng.integers(0, frames, n)
        for i, shift in enumerate(shifts):
            out[i] = np.roll(x[i], shift, axis=1)
        out[:, 0, :] += (rng.uniform(-6, 6, n) * np.sqrt(n_mels)).astype(x.dtype)[:, None]
    if params.eq_db > 0:
        out += _cepstrum(random_eq(n, n_mels, params.eq_db, rng), n_mfcc).astype(x.dtype)[:, :, None]
    if params.noise_snr_db is not None:
        out = _add_noise(out, rng, params.noise_snr_db, n_mels)
    if params.time_mask > 0:
        masked = _random_runs(n, frames, params.time_mask, rng)  # [n, frames]
        out = np.where(masked[:, None, :], out.mean(axis=2, keepdims=True), out)
    if params.freq_mask > 0:
        out = _mask_bands(out, rng, params.freq_mask, n_mels)
    return out


# An EQ curve's knots over the mel bands (about one per 200 Hz at 20-1000 Hz): a stethoscope's response is smooth.
EQ_KNOTS = 6


def random_eq(n: int, n_mels: int, std_db: float, rng: np.random.Generator) -> np.ndarray:
    """n smooth random responses over the mel bands [n, n_mels] in dB: normal knots, linearly interpolated."""
    knots = rng.normal(0.0, std_db, (n, EQ_KNOTS))
    grid = np.linspace(0, EQ_KNOTS - 1, n_mels)
    return np.stack([np.interp(grid, np.arange(EQ_KNOTS), k) for k in knots])


def _random_runs(n: int, length: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask [n, length]: in each row one run of up to share * length positions, at a random place."""
    widths = rng.integers(0, int(share * length) + 1, n)
    starts = rng.integers(0, length - widths + 1)
    position = np.arange(length)
    return (position >= starts[:, None]) & (position < (starts + widths)[:, None])


def _cepstrum(curves_db: np.ndarray, n_mfcc: int) -> np.ndarray:
    """What adding dB curves over the mel bands [n, n_mels] adds to the MFCCs [n, n_mfcc]."""
    return curves_db @ features.dct_matrix(curves_db.shape[1], n_mfcc)


def _mask_bands(x: np.ndarray, rng: np.random.Generator, share: float, n_mels: int) -> np.ndarray:
    """SpecAugment's frequency mask in the cepstral domain: back to (smoothed) log-mel bands, a run of bands set to
    the window's mean band level, and back to MFCCs. Coefficients above n_mfcc stay zero, as the features keep them.
    """
    n, n_mfcc, _ = x.shape
    dct = features.dct_matrix(n_mels, n_mfcc).astype(x.dtype)  # [n_mels, n_mfcc]
    bands = dct @ x  # [n, n_mels, frames]
    masked = _random_runs(n, n_mels, share, rng)  # [n, n_mels]
    bands = np.where(masked[:, :, None], bands.mean(axis=1, keepdims=True), bands)
    return dct.T @ bands


# Noise levels: an SNR from noise_snr_db to this much above it; the noise's colour, a smooth curve of this std (dB).
NOISE_SNR_RANGE_DB = 20.0
NOISE_COLOUR_DB = 6.0


def _add_noise(x: np.ndarray, rng: np.random.Generator, min_snr_db: float, n_mels: int) -> np.ndarray:
    """Stationary coloured noise added in power: back to (smoothed) log-mel bands, each window's noise a random
    smooth spectrum at an SNR drawn from [min_snr_db, min_snr_db + NOISE_SNR_RANGE_DB] below the window's mean band
    power, summed with the bands' power, and back to MFCCs. Quiet bands and frames rise, loud ones barely move.
    """
    n, n_mfcc, _ = x.shape
    dct = features.dct_matrix(n_mels, n_mfcc).astype(np.float64)
    to_ln = np.log(10.0) / 10.0  # dB -> natural log of power
    bands = (dct @ x.astype(np.float64)) * to_ln  # [n, n_mels, frames]
    # Means of power, taken in the log domain (log-sum-exp) so that loud windows do not overflow.
    level = np.logaddexp.reduce(bands, axis=(1, 2)) - np.log(bands[0].size)  # [n]
    snr = rng.uniform(min_snr_db, min_snr_db + NOISE_SNR_RANGE_DB, n)
    colour = random_eq(n, n_mels, NOISE_COLOUR_DB, rng) * to_ln
    colour -= np.logaddexp.reduce(colour, axis=1, keepdims=True) - np.log(n_mels)  # mean power 1: level sets it
    noise = level[:, None] + colour - snr[:, None] * to_ln  # [n, n_mels]
    noisy = np.logaddexp(bands, noise[:, :, None]) / to_ln
    return (dct.T @ noisy).astype(x.dtype)


def _soft_labels(params: TrainParams) -> bool:
    """Mixup and the focal loss train on one-hot (mixed) labels; otherwise labels stay integers."""
    return params.mixup > 0 or params.loss == "focal"


def _augmenting(params: TrainParams) -> bool:
    return (
        params.augment
        or params.eq_db > 0
        or params.noise_snr_db is not None
        or params.time_mask > 0
        or params.freq_mask > 0
        or params.mixup > 0
    )


def epoch_size(n: int, params: TrainParams) -> int:
    """Training windows per epoch: all n, or at most train.epoch_windows of them."""
    return min(n, params.epoch_windows) if params.epoch_windows > 0 else n


def _batches(x, y, weights, params: TrainParams, n_mels: int, size: int, sources=None):
    """A keras PyDataset of shuffled, augmented batches with per-sample class weights (mixed too with mixup);
    each epoch a fresh random draw of size windows (epoch_size: all of them, shuffled, without a budget).
    sources: one-hot rows per window for with_source_adversary's second input (mixed as the labels are), or None.
    """
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(params.seed)
            self.order = self.rng.permutation(len(x))[:size]

        def __len__(self):
            return int(np.ceil(size / params.batch_size))

        def __getitem__(self, i):
            idx = np.sort(self.order[i * params.batch_size : (i + 1) * params.batch_size])
            xb, yb, wb = augment(x[idx], self.rng, params, n_mels), y[idx], weights[idx]
            sb = None if sources is None else sources[idx]
            if params.mixup > 0:
                lam = self.rng.beta(params.mixup, params.mixup, len(idx)).astype(np.float32)
                other = self.rng.permutation(len(idx))
                xb = lam[:, None, None] * xb + (1 - lam[:, None, None]) * xb[other]
                yb = lam[:, None] * yb + (1 - lam[:, None]) * yb[other]
                wb = lam * wb + (1 - lam) * wb[other]
                sb = None if sb is None else lam[:, None] * sb + (1 - lam[:, None]) * sb[other]
            return (to_input(xb) if sb is None else (to_input(xb), sb)), yb, wb

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))[:size]

    return Batches()


def train(
    x_train,
    y_train,
    x_val,
    y_val,
    n_classes: int,
    params: TrainParams,
    callbacks=(),
    verbose: int = 2,
    init_dir=None,
    n_mels: int = FeaturizeParams.n_mels,
    sources=None,
):
    """Fit params.ensemble models (seeds seed, seed + 1, ...) and average their probabilities in one model; each
    early-stops on val (best weights restored; patience 0 = all epochs).
    With train.init: pretrained, each starts from the pretrain stage's weights in init_dir (all but the classifier).
    n_mels: featurize.n_mels, the band count the augmentations of MFCCs work in. sources: each training window's
    source (train.class_weight balanced_by_source, train.source_adversary; the adversary needs two sources or more
    and is left out with fewer: there is nothing to tell apart).

    Returns (model, history of the first member); callbacks (e.g. live logging) see the first member only.
    """
    x_train = np.asarray(x_train)
    size = epoch_size(len(x_train), params)
    soft = _soft_labels(params)
    targets = np.eye(n_classes, dtype=np.float32)[y_train] if soft else np.asarray(y_train)
    validation = None
    if len(x_val) > 0:
        validation = (to_input(x_val), np.eye(n_classes, dtype=np.float32)[y_val] if soft else y_val)
    source_rows = _source_rows(sources, len(x_train)) if params.source_adversary > 0 else None
    if source_rows is not None and validation is not None:
        validation = ((validation[0], np.zeros((len(x_val), source_rows.shape[1]), np.float32)), validation[1])
    batched = _augmenting(params) or size < len(x_train) or source_rows is not None
    if batched:
        weights = window_weights(y_train, n_classes, params.class_weight, sources)
    else:
        whole = {"x": to_input(x_train), "y": targets, "batch_size": params.batch_size, "shuffle": True}
        if params.class_weight == "balanced_by_source":
            whole["sample_weight"] = window_weights(y_train, n_classes, params.class_weight, sources)
        else:  # as keras weighs classes
            whole["class_weight"] = class_weights(y_train, n_classes, params.class_weight)
    input_shape = to_input(x_train[:1]).shape[1:]
    members, first_history = [], None
    for i in range(params.ensemble):
        member_params = dataclasses.replace(params, seed=params.seed + i)
        member, trainer = _compiled(member_params, input_shape, n_classes, size, init_dir, soft, source_rows)
        # shuffle=False: the batches draw their own order each epoch; keras would reorder them with Python's global
        # random, which other threads draw from too (a Dask worker's event loop): the weights would depend on them.
        if batched:
            batches = _batches(x_train, targets, weights, member_params, n_mels, size, source_rows)
            data = {"x": batches, "shuffle": False}
        else:
            data = whole
        history = trainer.fit(
            **data,
            validation_data=validation,
            epochs=params.epochs,
            callbacks=_with_stopping(callbacks if i == 0 else (), params, validation is not None),
            verbose=verbose,
        ).history
        members.append(member)
        if i == 0:
            first_history = history
    return (members[0] if len(members) == 1 else average(members)), first_history


def _source_rows(sources, n: int) -> np.ndarray | None:
    """One-hot source rows [n, sources] of the training windows (sorted source names), None for fewer than two."""
    if sources is None or len(sources) != n:
        raise ValueError("train.source_adversary needs each training window's source")
    names, index = np.unique(np.asarray(sources).astype(str), return_inverse=True)
    return np.eye(len(names), dtype=np.float32)[index] if len(names) >= 2 else None


def _compiled(
    params: TrainParams, input_shape, n_classes: int, windows_per_epoch: int, init_dir, soft: bool, source_rows=None
):
    """(classifier, the model to fit): a seeded, compiled model, pre-trained if train.init asks, and itself or, with
    source_rows, its source-adversarial training model; the cosine decay runs over the steps taken."""
    import keras

    seed_everything(params.seed, params.threads)
    learning_rate = params.learning_rate
    if params.lr_schedule == "cosine":
        steps = params.epochs * int(np.ceil(windows_per_epoch / params.batch_size))
        learning_rate = keras.optimizers.schedules.CosineDecay(params.learning_rate, decay_steps=steps)
    model = build_model(
        params.model,
        input_shape,
        n_classes,
        learning_rate,
        f"{params.model}_{params.seed}",
        params.loss if soft else "sparse",
        params.seed,
    )
    if params.init == "pretrained":
        if init_dir is None:
            raise ValueError("train.init is pretrained but no pretrained model directory was given")
        load_pretrained(model, params.model, init_dir)
    if source_rows is None:
        return model, model
    trainer = with_source_adversary(model, source_rows.shape[1], params.source_adversary, params.seed)
    compile_model(trainer, learning_rate, params.loss if soft else "sparse")
    return model, trainer


def _with_stopping(callbacks, params: TrainParams, has_val: bool) -> list:
    """callbacks, led by early stopping on val_loss when there is a val set and train.patience > 0."""
    import keras

    callbacks = list(callbacks)
    if has_val and params.patience > 0:
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.patience, restore_best_weights=True, verbose=0
        )
        callbacks.insert(0, stop)
    return callbacks


def average(members):
    """One Keras model whose output is the mean of the members' class probabilities (one file to export)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=members[0].input_shape[1:])
    outputs = layers.Average()([member(inputs) for member in members])
    return keras.Model(inputs, outputs, name=f"ensemble_of_{len(members)}")


PRETRAINED_WEIGHTS_FILE = "pretrained.weights.h5"
PRETRAINED_METADATA_FILE = "pretrained.json"


def save_pretrained(model, metadata: dict, out_dir: str | os.PathLike) -> None:
    """The pretrain stage's output: the weights and what load_pretrained checks them by (model, feature_shape)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_weights(out_dir / PRETRAINED_WEIGHTS_FILE)
    with open(out_dir / PRETRAINED_METADATA_FILE, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)


def load_pretrained(model, model_name: str, init_dir) -> None:
    """Copy every layer's weights but the classifier's from the pretrain stage's model (save_pretrained)."""
    init_dir = Path(init_dir)
    try:
        meta = json.loads((init_dir / PRETRAINED_METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"train.init is pretrained but {init_dir} has no usable {PRETRAINED_METADATA_FILE} ({e})"
        ) from e
    if meta.get("model") != model_name or meta.get("feature_shape") != list(model.input_shape[1:3]):
        raise ValueError(
            f"{init_dir}: pre-trained {meta.get('model')} on windows {meta.get('feature_shape')}, but train wants "
            f"{model_name} on {list(model.input_shape[1:3])}; rerun the pretrain stage (`dvc repro pretrain`)"
        )
    source = BUILDERS[meta["model"]](model.input_shape[1:], len(meta["classes"]), "pretrained")
    source.load_weights(init_dir / PRETRAINED_WEIGHTS_FILE)
    for target_layer, source_layer in zip(model.layers[:-1], source.layers[:-1]):
        target_layer.set_weights(source_layer.get_weights())


def predict_windows(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities per window."""
    if len(x) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return model.predict(to_input(x), batch_size=batch_size, verbose=0)


def save(model, metadata: dict, out_dir: str | os.PathLike) -> None:
    """Write model.h5 (the reference artefact), model.tflite (fast inference) and model.json."""
    import tensorflow as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / MODEL_FILE)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (out_dir / TFLITE_FILE).write_bytes(converter.convert())
    with open(out_dir / METADATA_FILE, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)


def load_keras(model_dir: str | os.PathLike):
    """Load models/model.h5 for inference."""
    import keras

    return keras.models.load_model(Path(model_dir) / MODEL_FILE, compile=False)
