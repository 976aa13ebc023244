"""A trained model directory for inference: metadata checks, then window batches through TFLite or Keras.

The TFLite backend never imports TensorFlow nor heartsound.model: a cold start costs a fraction of a
second instead of several. The Keras backend runs models/model.h5, the reference artefact, exactly as
evaluate does. What a model directory holds and how it is checked is heartsound.model_dir's.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from heartsound.model_dir import (
    HOW_TO_GET_ONE,
    MODEL_FILE,
    TFLITE_FILE,
    ModelError,
    ModelInfo,
    read_metadata,
    to_input,
)

__all__ = ["BACKENDS", "ModelError", "ModelInfo", "load"]


class TFLiteBackend:
    """model.tflite through the LiteRT interpreter: no TensorFlow import."""

    name = "tflite"

    def __init__(self, info: ModelInfo, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        path = info.directory / TFLITE_FILE
        if not path.is_file():
            raise ModelError(
                f"'{path}' is missing: the train stage writes it beside {MODEL_FILE} "
                f"(`dvc repro` or `dvc pull`), or use the Keras backend (--backend keras)"
            )
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"'{path}' is not a loadable TFLite model: {e}") from e
        source, target = self.interpreter.get_input_details()[0], self.interpreter.get_output_details()[0]
        self._input, self._output = source["index"], target["index"]
        _check_shapes(path, tuple(source["shape"][1:]), int(target["shape"][-1]), info)
        # One window per call, and the tensors are planned once: re-planning for another batch size
        # re-applies the XNNPACK delegate (~0.4 s at 64 windows), while a window costs ~0.5 ms either way.
        self.interpreter.resize_tensor_input(self._input, (1, *info.input_shape), strict=True)
        # The first allocation announces the XNNPACK delegate on stderr (from C++, once per process);
        # stderr is where predict reports bad files, so keep it for those.
        with _stderr_silenced():
            self.interpreter.allocate_tensors()
        self._n_classes = len(info.classes)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Feature windows [n, n_mfcc, frames] -> class probabilities [n, n_classes]."""
        x = to_input(windows)
        probs = np.empty((len(x), self._n_classes), np.float32)
        for i in range(len(x)):
            self.interpreter.set_tensor(self._input, x[i : i + 1])
            self.interpreter.invoke()
            probs[i] = self.interpreter.get_tensor(self._output)[0]
        return probs


class KerasBackend:
    """model.h5 through Keras, as evaluate runs it: the reference, at the price of importing TensorFlow."""

    name = "keras"

    def __init__(self, info: ModelInfo):
        from heartsound import model

        path = info.directory / MODEL_FILE
        if not path.is_file():
            raise ModelError(f"'{path}' is missing; {HOW_TO_GET_ONE}")
        self._model_module = model
        try:
            self.model = model.load_keras(info.directory)
        except (OSError, ValueError) as e:
            raise ModelError(f"'{path}' is not a loadable Keras model: {e}") from e
        _check_shapes(path, tuple(self.model.input_shape[1:]), int(self.model.output_shape[-1]), info)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Feature windows [n, n_mfcc, frames] -> class probabilities [n, n_classes]."""
        return np.asarray(self._model_module.predict_windows(self.model, windows))


BACKENDS = {"tflite": TFLiteBackend, "keras": KerasBackend}


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to the null device for a moment (C++ logging bypasses sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_shapes(path: Path, input_shape: tuple, n_outputs: int, info: ModelInfo) -> None:
    if tuple(int(d) for d in input_shape) != info.input_shape:
        raise ModelError(f"'{path}' takes input {list(input_shape)}, but its metadata says {list(info.input_shape)}")
    if n_outputs != len(info.classes):
        raise ModelError(
            f"'{path}' outputs {n_outputs} probabilities, but its metadata lists {len(info.classes)} classes"
        )


def check_backend(backend: str) -> None:
    """Raise ValueError for a backend name that is not in BACKENDS."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")


def load(model_dir: str | os.PathLike, backend: str = "tflite"):
    """(ModelInfo, backend) for a model directory; raise ModelError if it is missing or inconsistent."""
    check_backend(backend)
    info = read_metadata(model_dir)
    return info, BACKENDS[backend](info)
