"""heartsound predict: model checks, bad files, aggregation, output formats, and the TensorFlow-free path.

The model is a tiny untrained CNN saved by heartsound.model.save (h5 + tflite + model.json) in a
subprocess, so this process never imports TensorFlow and its worker pools can fork.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from heartsound import cli, features, inference
from heartsound.model_dir import METADATA_FILE, TFLITE_FILE
from heartsound.prediction import find_recordings, predict

CLASSES = ["murmur", "normal", "other"]
# Small windows keep the model and the features tiny: input (13, 32, 1).
TINY_FEATURIZE = {
    "sample_rate_hz": 2000,
    "n_mfcc": 13,
    "n_mels": 26,
    "n_fft": 128,
    "hop_length": 64,
    "fmin_hz": 20.0,
    "fmax_hz": 1000.0,
    "window_s": 1.0,
    "window_hop_s": 0.5,
    "max_duration_s": None,
}
RATE_HZ = 4000

BUILD_TINY_MODEL = """
import sys
from heartsound import config, features, model, training
out_dir, classes = sys.argv[1], sys.argv[2].split(",")
params = config.parse({"featurize": %r, "train": {"seed": 1}})
model.seed_everything(1)
cnn = model.build_model("seed_cnn", (*features.feature_shape(params.featurize), 1), len(classes), 1e-3)
meta = training.model_metadata(params, classes, features.feature_description(params.featurize))
model.save(cnn, meta, out_dir)
"""


def run(*args: str) -> subprocess.CompletedProcess:
    """This Python in a fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A model directory as the train stage writes it, for a 3-class CNN on tiny windows."""
    out = tmp_path_factory.mktemp("tiny") / "models"
    result = run("-c", BUILD_TINY_MODEL % (TINY_FEATURIZE,), str(out), ",".join(CLASSES))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    """A copy of the tiny model that a test may break."""
    return Path(shutil.copytree(tiny_model, tmp_path / "models"))


def heart_like(duration_s: float, seed: int) -> np.ndarray:
    """A noisy 'lub-dub' pulse train: bursts of 50-150 Hz tone at ~1.2 beats per second."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * RATE_HZ)) / RATE_HZ
    beat = (np.sin(2 * np.pi * 1.2 * t) > 0.9).astype(np.float32)
    tone = np.sin(2 * np.pi * rng.uniform(50, 150) * t)
    return (0.4 * beat * tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def recordings(tmp_path) -> list[Path]:
    """Four good recordings of 1.5-4 s (1 to 7 windows of 1 s every 0.5 s)."""
    paths = []
    for i, duration_s in enumerate((1.5, 2.0, 3.0, 4.0)):
        path = tmp_path / "good" / f"rec{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, heart_like(duration_s, i), RATE_HZ)
        paths.append(path)
    return paths


@pytest.fixture
def bad_files(tmp_path) -> dict[str, str]:
    """{path: a substring its error must contain}."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "notes.wav").write_text("not audio at all\n")
    sf.write(bad / "silent.wav", np.zeros(2 * RATE_HZ, np.float32), RATE_HZ)
    sf.write(bad / "short.wav", heart_like(0.2, 0), RATE_HZ)
    nan = heart_like(2.0, 0)
    nan[100] = np.nan
    sf.write(bad / "nan.wav", nan, RATE_HZ, subtype="FLOAT")
    return {
        str(bad / "empty.wav"): "empty",
        str(bad / "notes.wav"): "unreadable",
        str(bad / "silent.wav"): "silent",
        str(bad / "short.wav"): "too short",
        str(bad / "nan.wav"): "NaN",
        str(tmp_path / "missing.wav"): "no such file",
    }


def test_import_heartsound_is_light():
    code = (
        "import sys, heartsound;"
        "assert callable(heartsound.predict);"
        "print(sorted(m for m in ('numpy', 'pandas', 'tensorflow', 'keras', 'librosa') if m in sys.modules))"
    )
    result = run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_tflite_path_never_imports_tensorflow(tiny_model, recordings):
    code = (
        "import sys, heartsound;"
        f"table = heartsound.predict([{str(recordings[0])!r}], model={str(tiny_model)!r});"
        "assert table['error'].isna().all(), table;"
        "print(sorted(m for m in ('tensorflow', 'keras', 'heartsound.model') if m in sys.modules))"
    )
    result = run("-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_predict_rows_are_evaluates_aggregation_of_window_probabilities(tiny_model, recordings):
    table = predict(recordings, model=tiny_model)
    info, runner = inference.load(tiny_model)
    assert list(table.columns) == ["path", "predicted", "confidence", *(f"p_{c}" for c in CLASSES), "error"]
    assert table["path"].tolist() == [str(p) for p in recordings]
    for path, row in zip(recordings, table.itertuples(index=False)):
        windows = features.recording_features(path, info.featurize)
        expected = runner.predict(windows).mean(axis=0)
        got = np.array([getattr(row, f"p_{c}") for c in CLASSES])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert row.predicted == CLASSES[int(expected.argmax())]
        assert row.confidence == pytest.approx(expected.max())
        assert row.error is None
    assert len({len(features.recording_features(p, info.featurize)) for p in recordings}) > 1


def test_a_cycle_head_in_the_model_directory_is_fused_as_evaluate_does(model_copy, recordings):
    from heartsound import cycles, fusion

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, len(cycles.FEATURE_NAMES)))
    head = fusion.fit(rows, np.array(CLASSES)[np.arange(30) % 3], CLASSES, cycles.FEATURE_NAMES, weight=0.6)
    head.save(model_copy)
    plain = predict(recordings, model=model_copy, jobs=1)
    (model_copy / fusion.HEAD_FILE).unlink()
    cnn_only = predict(recordings, model=model_copy, jobs=1)
    columns = [f"p_{c}" for c in CLASSES]
    expected = head.fuse(cnn_only[columns].to_numpy(), np.stack([cycles.file_cycle_features(p)[0] for p in recordings]))
    np.testing.assert_allclose(plain[columns].to_numpy(), expected, atol=1e-5)
    assert not np.allclose(plain[columns].to_numpy(), cnn_only[columns].to_numpy(), atol=1e-3)


def test_a_head_for_other_classes_is_refused(model_copy, recordings):
    from heartsound import cycles, fusion

    rows = np.random.default_rng(0).normal(size=(20, len(cycles.FEATURE_NAMES)))
    fusion.fit(rows, np.array(["a", "b"])[np.arange(20) % 2], ["a", "b"], cycles.FEATURE_NAMES, 0.5).save(model_copy)
    with pytest.raises(inference.ModelError, match="classes"):
        predict(recordings, model=model_copy)


def test_max_aggregation_from_metadata_is_used(model_copy, recordings):
    meta_path = model_copy / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["aggregation"] = "max"
    meta_path.write_text(json.dumps(meta))
    info, runner = inference.load(model_copy)
    windows = features.recording_features(recordings[3], info.featurize)
    window_max = runner.predict(windows).max(axis=0)
    row = predict([recordings[3]], model=model_copy).iloc[0]
    np.testing.assert_allclose([row[f"p_{c}"] for c in CLASSES], window_max / window_max.sum(), atol=1e-6)


def test_bad_files_get_reasons_and_good_ones_are_still_classified(tiny_model, recordings, bad_files):
    table = predict([*bad_files, recordings[0]], model=tiny_model).set_index("path")
    for path, reason in bad_files.items():
        assert reason in table.loc[path, "error"], (path, table.loc[path, "error"])
        assert pd.isna(table.loc[path, "predicted"]) and np.isnan(table.loc[path, "p_normal"])
    good = table.loc[str(recordings[0])]
    assert good["error"] is None and good["predicted"] in CLASSES


def test_min_duration_is_adjustable(tiny_model, tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, heart_like(0.3, 1), RATE_HZ)
    assert "too short" in predict([path], model=tiny_model)["error"][0]
    assert predict([path], model=tiny_model, min_duration_s=0.1)["error"][0] is None


def test_worker_pool_gives_the_same_rows(tiny_model, tmp_path):
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"r{i}.wav")
        sf.write(paths[-1], heart_like(1.0 + 0.5 * i, i), RATE_HZ)
    serial = predict(paths, model=tiny_model, jobs=1)
    pooled = predict(paths, model=tiny_model, jobs=2)
    pd.testing.assert_frame_equal(serial, pooled)


def test_find_recordings_expands_directories_and_globs(tmp_path):
    (tmp_path / "a/deep").mkdir(parents=True)
    for name in ("a/x.wav", "a/deep/y.FLAC", "a/deep/notes.txt", "b.wav"):
        (tmp_path / name).write_bytes(b"x")
    found = find_recordings([tmp_path / "a", str(tmp_path / "*.wav"), tmp_path / "a/x.wav", tmp_path / "nope.wav"])
    assert found == [
        (str(tmp_path / "a/deep/y.FLAC"), None),
        (str(tmp_path / "a/x.wav"), None),
        (str(tmp_path / "b.wav"), None),
        (str(tmp_path / "nope.wav"), "no such file or directory"),
    ]
    assert find_recordings(str(tmp_path / "zz*.wav"))[0][1] == "no file matches this pattern"
    (tmp_path / "empty").mkdir()
    assert "no audio files" in find_recordings(tmp_path / "empty")[0][1]
    # A file named explicitly is tried whatever its suffix (and then fails with a reason if not audio).
    assert find_recordings(tmp_path / "a/deep/notes.txt") == [(str(tmp_path / "a/deep/notes.txt"), None)]


def _edit_metadata(model_dir: Path, change) -> None:
    path = model_dir / METADATA_FILE
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(format="heartsound-model/0"), "format"),
        (lambda m: m.pop("featurize"), "lacks featurize"),
        (lambda m: m["featurize"].pop("hop_length"), "lacks hop_length"),
        (lambda m: m["featurize"].update(n_fft="big"), "featurize.n_fft"),
        (lambda m: m.update(input_shape=[40, 251, 1]), "input_shape [40, 251, 1] does not match"),
        (lambda m: m.update(classes=["a", "b"]), "outputs 3 probabilities, but its metadata lists 2 classes"),
        (lambda m: m.update(classes=["a", "a", "b"]), "distinct"),
        (lambda m: m.update(aggregation="median"), "aggregation"),
    ],
)
def test_inconsistent_metadata_is_refused(model_copy, recordings, change, message):
    _edit_metadata(model_copy, change)
    with pytest.raises(inference.ModelError, match="model.json|model.tflite") as error:
        predict(recordings[:1], model=model_copy)
    assert message in str(error.value)


def test_missing_model_says_how_to_get_one(tmp_path, model_copy, recordings):
    with pytest.raises(inference.ModelError, match=r"'.*nowhere' does not exist.*dvc repro.*dvc pull"):
        predict(recordings[:1], model=tmp_path / "nowhere")
    (model_copy / METADATA_FILE).unlink()
    with pytest.raises(inference.ModelError, match=r"model.json is missing.*dvc repro.*dvc pull"):
        predict(recordings[:1], model=model_copy)


def test_missing_tflite_points_to_the_keras_backend(model_copy, recordings):
    (model_copy / TFLITE_FILE).unlink()
    with pytest.raises(inference.ModelError, match="--backend keras"):
        predict(recordings[:1], model=model_copy)


def cli_run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["predict", "--no-progress", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_formats_parse_and_exit_codes(tiny_model, recordings, bad_files, capsys, tmp_path):
    paths = [str(p) for p in recordings]
    code, out, err = cli_run(capsys, *paths, "--model", str(tiny_model), "--format", "json")
    assert code == 0 and err == ""
    records = json.loads(out)
    assert [r["path"] for r in records] == paths
    assert all(r["error"] is None and abs(sum(r[f"p_{c}"] for c in CLASSES) - 1) < 1e-5 for r in records)

    code, out, err = cli_run(capsys, *paths, "--model", str(tiny_model), "--format", "csv")
    assert code == 0
    table = pd.read_csv(io.StringIO(out))
    assert table["predicted"].tolist() == [r["predicted"] for r in records]
    np.testing.assert_allclose(table["p_normal"], [r["p_normal"] for r in records], atol=1e-6)

    code, out, err = cli_run(capsys, *paths, "--model", str(tiny_model))
    assert code == 0
    assert out.splitlines()[0].split() == ["path", "predicted", "confidence", *(f"p_{c}" for c in CLASSES)]
    assert len(out.splitlines()) == 2 + len(paths)

    # A bad file: its own line on stderr, the others still in the output, exit 1.
    output = tmp_path / "out.csv"
    code, out, err = cli_run(
        capsys, *bad_files, paths[0], "--model", str(tiny_model), "--format", "csv", "-o", str(output)
    )
    assert code == cli.EXIT_FILES_FAILED and out == ""
    lines = err.splitlines()
    assert len(lines) == len(bad_files)
    for path, reason in bad_files.items():
        assert any(line.startswith(f"heartsound predict: {path}: ") and reason in line for line in lines)
    written = pd.read_csv(output)
    assert written["error"].isna().sum() == 1 and written["error"].notna().sum() == len(bad_files)

    code, out, err = cli_run(capsys, paths[0], "--model", str(tmp_path / "nowhere"))
    assert code == cli.EXIT_UNUSABLE and out == ""
    assert "dvc repro" in err


def test_keras_and_tflite_backends_agree(tiny_model, recordings):
    # The Keras path imports TensorFlow: run it in a subprocess, through the CLI.
    result = run(
        "-c",
        "import sys; from heartsound.cli import main; sys.exit(main(sys.argv[1:]))",
        "predict",
        *map(str, recordings),
        "--model",
        str(tiny_model),
        "--backend",
        "keras",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    keras = pd.DataFrame(json.loads(result.stdout))
    light = predict(recordings, model=tiny_model)
    assert keras["predicted"].tolist() == light["predicted"].tolist()
    columns = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(keras[columns].to_numpy(float), light[columns].to_numpy(float), atol=1e-4)
