"""Keras models and their training; the only module (with export) that imports TensorFlow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from heartsound.config import TrainParams

MODEL_FILE = "model.h5"
TFLITE_FILE = "model.tflite"
METADATA_FILE = "model.json"


def seed_everything(seed: int) -> None:
    """Fixed seeds and deterministic ops: same params, same weights, on CPU."""
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_seed_cnn(input_shape: tuple[int, ...], n_classes: int):
    """The reference notebook's CNN: Conv2D 16/32/128 (kernel 2), each with 2x2 max-pool and dropout."""
    import keras
    from keras import layers

    model = keras.Sequential(name="seed_cnn")
    model.add(keras.Input(shape=input_shape))
    for filters, dropout in ((16, 0.2), (32, 0.2), (128, 0.5)):
        model.add(layers.Conv2D(filters, kernel_size=2, activation="relu", padding="same"))
        model.add(layers.MaxPooling2D(pool_size=2, padding="same"))
        model.add(layers.Dropout(dropout))
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dense(n_classes, activation="softmax"))
    return model


BUILDERS = {"seed_cnn": build_seed_cnn}


def build_model(name: str, input_shape: tuple[int, ...], n_classes: int, learning_rate: float):
    """A compiled model from its params name (train.model)."""
    import keras

    try:
        model = BUILDERS[name](input_shape, n_classes)
    except KeyError:
        raise ValueError(f"unknown train.model {name!r} (known: {', '.join(BUILDERS)})") from None
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    """Balanced weights over the classes present in y (train.class_weight)."""
    if mode == "none":
        return None
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    mapping = {int(c): 1.0 for c in range(n_classes)}
    mapping.update({int(c): float(w) for c, w in zip(present, weights)})
    return mapping


def to_input(x: np.ndarray) -> np.ndarray:
    """Feature windows [n, n_mfcc, frames] -> model input [n, n_mfcc, frames, 1]."""
    return x[..., np.newaxis].astype(np.float32, copy=False)


def train(x_train, y_train, x_val, y_val, n_classes: int, params: TrainParams, callbacks=(), verbose: int = 2):
    """Fit on train, early-stop on val (best weights restored; patience 0 = all epochs). Returns (model, history)."""
    import keras

    seed_everything(params.seed)
    model = build_model(params.model, to_input(x_train).shape[1:], n_classes, params.learning_rate)
    has_val = len(x_val) > 0
    callbacks = list(callbacks)
    if has_val and params.patience > 0:
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=params.patience, restore_best_weights=True, verbose=0
        )
        callbacks.insert(0, stop)
    history = model.fit(
        to_input(x_train),
        y_train,
        validation_data=(to_input(x_val), y_val) if has_val else None,
        epochs=params.epochs,
        batch_size=params.batch_size,
        class_weight=class_weights(y_train, n_classes, params.class_weight),
        callbacks=callbacks,
        shuffle=True,
        verbose=verbose,
    )
    return model, history.history


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
