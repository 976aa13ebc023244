"""`heartsound predict` on the bad-input corpus: a result or a per-file error for every file, never a traceback."""

import json
import os
import subprocess
import sys

import pytest
from badaudio import write_corpus

# A tiny untrained CNN as the train stage saves it (h5 + tflite + model.json), built in a
# subprocess so this process never imports TensorFlow.
BUILD_TINY_MODEL = """
import sys
from heartsound import config, features, model, training
params = config.parse({"featurize": {"n_mfcc": 13, "n_mels": 26, "n_fft": 128, "hop_length": 64,
                                     "window_s": 1.0, "window_hop_s": 0.5}})
model.seed_everything(1)
classes = ["murmur", "normal"]
cnn = model.build_model("seed_cnn", (*features.feature_shape(params.featurize), 1), len(classes), 1e-3)
model.save(cnn, training.model_metadata(params, classes, features.feature_description(params.featurize)), sys.argv[1])
"""
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """(corpus root, items, CLI result) of one `heartsound predict <corpus> --format json` run."""
    tmp = tmp_path_factory.mktemp("predict")
    built = subprocess.run(
        [sys.executable, "-c", BUILD_TINY_MODEL, str(tmp / "models")], capture_output=True, text=True, env=ENV
    )
    assert built.returncode == 0, built.stderr[-3000:]
    root = tmp / "corpus"
    items = write_corpus(root)
    result = subprocess.run(
        [sys.executable, "-m", "heartsound.cli", "predict", str(root), "--model", str(tmp / "models")]
        + ["--format", "json", "--no-progress", "--jobs", "1"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    return root, items, result


def test_no_traceback_and_exit_code_says_some_files_failed(predicted):
    _, _, result = predicted
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1, result.stderr[-3000:]


def test_every_file_has_a_result_or_its_error(predicted):
    root, items, result = predicted
    records = json.loads(result.stdout)
    by_path = {r["path"]: r for r in records}
    assert len(by_path) == len(records) == len(items)
    problems = []
    for item in items:
        record = by_path[str(root / item.path)]
        if item.predict_reason is None:
            ok = record["error"] is None and record["predicted"] in ("murmur", "normal")
            ok = ok and abs(record["p_murmur"] + record["p_normal"] - 1) < 1e-4
        else:
            ok = record["predicted"] is None and item.predict_reason in (record["error"] or "")
            # Each failed file is also named on stderr, with its reason.
            ok = ok and f"heartsound predict: {root / item.path}: {record['error']}" in result.stderr
        if not ok:
            problems.append(f"{item.what}: {record}")
    assert not problems, "\n".join(problems)


def test_identical_audio_gets_identical_predictions(predicted):
    root, items, result = predicted
    by_path = {r["path"]: r for r in json.loads(result.stdout)}
    for item in (i for i in items if i.duplicate_of):
        copy, original = by_path[str(root / item.path)], by_path[str(root / item.duplicate_of)]
        assert {k: v for k, v in copy.items() if k != "path"} == {k: v for k, v in original.items() if k != "path"}
