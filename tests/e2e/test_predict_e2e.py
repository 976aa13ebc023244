"""`heartsound predict` on a model made by a real `dvc repro`: it must reproduce evaluate's test predictions."""

import io
import json

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.e2e


def held_out(project) -> pd.DataFrame:
    """The manifest rows of the test split."""
    manifest = pd.read_csv(project.path / "data/prepared/manifest.csv", dtype=str)
    return manifest[manifest["split"] == "test"]


def predict_csv(project, paths, *options: str) -> pd.DataFrame:
    """Run the installed `heartsound` console script in the project; parse its CSV."""
    result = project.run("heartsound", "predict", *paths, "--format", "csv", "--no-progress", *options)
    return pd.read_csv(io.StringIO(result.stdout))


@pytest.fixture(scope="module")
def evaluated(built_project) -> pd.DataFrame:
    """evaluate's recording-level test predictions, with each recording's file path."""
    split = held_out(built_project)
    reference = pd.read_csv(built_project.path / "metrics/test_predictions.csv", dtype={"recording_id": str})
    paths = split.set_index("recording_id")["path"]
    return reference.assign(path=paths.loc[reference["recording_id"]].to_numpy())


@pytest.fixture(scope="module")
def predicted(built_project, evaluated) -> dict[str, pd.DataFrame]:
    """{backend: `heartsound predict` over the test recordings, rows in evaluate's order}."""
    tables = {}
    for backend in ("tflite", "keras"):
        table = predict_csv(built_project, evaluated["path"], "--backend", backend)
        assert table["path"].tolist() == evaluated["path"].tolist()
        tables[backend] = table
    return tables


def probability_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("p_")]


@pytest.mark.parametrize("backend", ["tflite", "keras"])
def test_predict_reproduces_evaluate(evaluated, predicted, backend):
    table = predicted[backend]
    assert table["error"].isna().all()
    assert table["predicted"].tolist() == evaluated["predicted"].tolist()
    columns = probability_columns(evaluated)
    assert probability_columns(table) == columns
    # test_predictions.csv holds 6 decimals.
    np.testing.assert_allclose(table[columns].to_numpy(), evaluated[columns].to_numpy(), atol=1e-4)


def test_light_and_keras_backends_agree(predicted):
    light, keras = predicted["tflite"], predicted["keras"]
    assert light["predicted"].tolist() == keras["predicted"].tolist()
    columns = probability_columns(light)
    np.testing.assert_allclose(light[columns].to_numpy(), keras[columns].to_numpy(), atol=1e-4)


def test_directory_json_and_exit_codes(built_project, evaluated):
    project = built_project
    bad = project.path / "incoming"
    bad.mkdir(exist_ok=True)
    (bad / "empty.wav").write_bytes(b"")
    good = evaluated["path"].iloc[0]
    (bad / "good.wav").write_bytes((project.path / good).read_bytes())

    result = project.run("heartsound", "predict", "incoming", "--format", "json", check=False)
    assert result.returncode == 1
    records = {r["path"]: r for r in json.loads(result.stdout)}
    assert records["incoming/empty.wav"]["error"] == "empty file (0 bytes)"
    assert records["incoming/empty.wav"]["predicted"] is None
    assert records["incoming/good.wav"]["predicted"] == evaluated["predicted"].iloc[0]
    assert "heartsound predict: incoming/empty.wav: empty file" in result.stderr

    result = project.run("heartsound", "predict", "incoming/good.wav", check=False)
    assert result.returncode == 0
    assert evaluated["predicted"].iloc[0] in result.stdout.splitlines()[2]

    result = project.run("heartsound", "predict", good, "--model", "no-models", check=False)
    assert result.returncode == 2
    assert "dvc repro" in result.stderr and "dvc pull" in result.stderr
