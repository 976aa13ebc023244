"""The params.yaml schema: unknown keys, wrong types and impossible values stop a stage with a clear message."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
import yaml

from heartsound import config

REPO_ROOT = Path(__file__).resolve().parents[1]
# Each stage script with placeholder positional arguments (params are read before any of them).
STAGE_ARGS = {
    "prepare": ["out"],
    "featurize": ["m.csv", "out"],
    "train": ["f", "m"],
    "evaluate": ["f", "m", "j", "p"],
    "crossval": ["m.csv", "f", "cv.json"],
    "pretrain": ["out"],
}
# Stages that read no params (dvc.yaml lists none for them): nothing in params.yaml can change their output.
PARAMLESS_STAGES = {"segment"}


def _error(raw) -> str:
    with pytest.raises(config.ParamsError) as error:
        config.parse(raw)
    return str(error.value)


def test_repo_params_and_defaults_are_valid():
    assert isinstance(config.load(REPO_ROOT / "params.yaml"), config.Params)
    assert config.validate(config.Params()) == config.Params()
    assert config.parse(None) == config.Params()


def test_every_section_is_typed():
    sections = get_type_hints(config.Params)
    assert set(sections) == {"data", "prepare", "featurize", "train", "evaluate", "crossval", "pretrain"}
    for cls in sections.values():
        hints = get_type_hints(cls)
        assert hints and set(hints) == {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prepare": {"train_frac": 0.7}}, "unknown key 'prepare.train_frac'"),
        ({"prepare": {"train_frac": 0.7}}, "did you mean 'train_fraction'?"),
        ({"prepare": {"train_frac": 0.7}}, "allowed in 'prepare': min_duration_s, max_per_class, train_fraction"),
        ({"featurise": {}}, "unknown section 'featurise' (allowed: data, prepare, featurize, train"),
        ({"featurise": {}}, "did you mean 'featurize'?"),
        ({1: {}}, "unknown section '1'"),
    ],
)
def test_unknown_keys_name_the_allowed_ones(raw, expected):
    assert expected in _error(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"train": {"epochs": "10"}}, "'train.epochs' must be int, got '10' (str)"),
        ({"train": {"epochs": 10.0}}, "'train.epochs' must be int, got 10.0 (float)"),
        ({"train": {"epochs": True}}, "'train.epochs' must be int, got True (bool)"),
        ({"train": {"epochs": None}}, "'train.epochs' must not be empty (allowed: int)"),
        ({"train": {"learning_rate": "1e-3"}}, "write e.g. 1.0e-3"),
        ({"train": {"learning_rate": float("nan")}}, "'train.learning_rate' must be a finite number"),
        ({"prepare": {"max_per_class": "all"}}, "'prepare.max_per_class' must be int or null"),
        ({"data": {"root": ["a", "b"]}}, "'data.root' must be str"),
        ({"prepare": 3}, "'prepare' must be a mapping"),
        (["prepare"], "must be a mapping of sections"),
    ],
)
def test_wrong_types_name_the_key_and_the_allowed_type(raw, expected):
    assert expected in _error(raw)


def test_an_int_is_a_valid_float():
    assert config.parse({"featurize": {"window_s": 4}}).featurize.window_s == 4.0


@pytest.mark.parametrize(
    ("section", "values", "expected"),
    [
        ("prepare", {"train_fraction": 0.8}, "'prepare.train_fraction' + val_fraction + test_fraction must sum to 1"),
        ("prepare", {"val_fraction": 0.0, "train_fraction": 0.85}, "'prepare.val_fraction' must be between 0 and 1"),
        ("prepare", {"min_duration_s": -1.0}, "'prepare.min_duration_s' must be >= 0, got -1.0"),
        ("prepare", {"max_per_class": 0}, "'prepare.max_per_class' must be >= 1 or null, got 0"),
        ("featurize", {"n_mfcc": 0}, "'featurize.n_mfcc' must be >= 1, got 0"),
        ("featurize", {"n_mels": 20}, "'featurize.n_mels' must be >= featurize.n_mfcc (40), got 20"),
        ("featurize", {"n_mels": 200}, "'featurize.n_mels' must be <= n_fft / 2 + 1 (129), got 200"),
        ("featurize", {"max_duration_s": 2.0}, "'featurize.max_duration_s' must be >= featurize.window_s (4)"),
        ("featurize", {"window_hop_s": 5.0}, "'featurize.window_hop_s' must be > 0 and <= featurize.window_s (4)"),
        ("featurize", {"window_hop_s": 0.0}, "'featurize.window_hop_s' must be > 0"),
        ("featurize", {"window_s": 0.1}, "'featurize.window_s' must hold at least n_fft samples (>= 0.128 s)"),
        ("featurize", {"fmax_hz": 4000.0}, "'featurize.fmax_hz' must be <= sample_rate_hz / 2 (1000)"),
        ("featurize", {"fmin_hz": 1000.0}, "'featurize.fmin_hz' must be below featurize.fmax_hz (1000)"),
        ("featurize", {"hop_length": 512}, "'featurize.hop_length' must be between 1 and n_fft (256)"),
        ("featurize", {"sample_rate_hz": 100}, "'featurize.sample_rate_hz' must be >= 500"),
        ("featurize", {"jobs": -1}, "'featurize.jobs' must be >= 0 (0 = all cores)"),
        ("featurize", {"cache_dir": " "}, "'featurize.cache_dir' must name a directory"),
        ("data", {"dataset": "mnist"}, "'data.dataset' must be one of pascal, physionet2016"),
        ("data", {"root": ""}, "'data.root' must name the dataset directory"),
        ("train", {"model": "resnet"}, "'train.model' must be one of seed_cnn"),
        (
            "train",
            {"class_weight": "auto"},
            "'train.class_weight' must be one of balanced, balanced_by_source, none, got 'auto'",
        ),
        ("train", {"epochs": 0}, "'train.epochs' must be >= 1"),
        ("train", {"epoch_windows": -1}, "'train.epoch_windows' must be >= 0 (0 = every window each epoch), got -1"),
        ("train", {"learning_rate": 0.0}, "'train.learning_rate' must be > 0"),
        ("evaluate", {"aggregation": "median"}, "'evaluate.aggregation' must be one of mean, max, got 'median'"),
        ("crossval", {"folds": 1}, "'crossval.folds' must be >= 2, got 1"),
        ("crossval", {"val_fraction": 1.0}, "'crossval.val_fraction' must be between 0 and 1 (exclusive), got 1.0"),
        ("crossval", {"cycle_weights": 0.5}, "'crossval.cycle_weights' must be a list, got 0.5 (float)"),
        ("crossval", {"cycle_weights": [0.5, "x"]}, "'crossval.cycle_weights[1]' must be float, got 'x' (str)"),
        ("crossval", {"cycle_weights": [0.0, 1.5]}, "'crossval.cycle_weights[1]' must be between 0 (CNN) and 1 (head)"),
        (
            "crossval",
            {"cycle_weights": [0.5, 0.5]},
            "'crossval.cycle_weights' must not list a weight twice, got [0.5, 0.5]",
        ),
        ("train", {"lr_schedule": "step"}, "'train.lr_schedule' must be one of constant, cosine, got 'step'"),
        ("train", {"ensemble": 0}, "'train.ensemble' must be between 1 and 20"),
        ("train", {"augment": "yes"}, "'train.augment' must be bool, got 'yes' (str)"),
        ("train", {"eq_db": -1.0}, "'train.eq_db' must be >= 0 (0 = off), got -1.0"),
        (
            "train",
            {"noise_snr_db": 90},
            "'train.noise_snr_db' must be null (off) or an SNR in dB between -20 and 60, got 90",
        ),
        ("train", {"noise_snr_db": "loud"}, "train.noise_snr_db"),
        ("train", {"time_mask": 1.0}, "'train.time_mask' must be >= 0 and < 1 (0 = off), got 1.0"),
        ("train", {"freq_mask": -0.1}, "'train.freq_mask' must be >= 0 and < 1 (0 = off)"),
        ("train", {"mixup": -0.2}, "'train.mixup' must be >= 0 (0 = off)"),
        ("train", {"source_adversary": -0.1}, "'train.source_adversary' must be >= 0 (0 = off)"),
        ("train", {"loss": "hinge"}, "'train.loss' must be one of crossentropy, focal, got 'hinge'"),
    ],
)
def test_impossible_values_name_the_key_and_the_allowed_values(section, values, expected):
    assert expected in _error({section: values})


def test_a_list_param_is_read_as_a_tuple_of_its_items_type():
    assert config.parse({"crossval": {"cycle_weights": [0, 0.5, 1]}}).crossval.cycle_weights == (0.0, 0.5, 1.0)
    assert config.parse({}).crossval.cycle_weights == ()


def test_params_yaml_survives_dvc_exp_run_set_rewriting_it_again_and_again(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml in place, comments kept; a list rewritten twice must leave the
    file readable and every other value as it was."""
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` calls

    path = tmp_path / "params.yaml"
    path.write_text((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    before = config.load(path)
    for value, expected in (("[0.4,0.5,0.6]", (0.4, 0.5, 0.6)), ("[]", ()), ("[0.5]", (0.5,))):
        apply_overrides(str(path), [f"crossval.cycle_weights={value}"])
        after = config.load(path)
        assert after.crossval.cycle_weights == expected
        assert dataclasses.replace(after, crossval=before.crossval) == before


def test_pretraining_on_the_data_under_test_is_refused():
    same = {"dataset": "physionet2016", "root": "data/raw/physionet2016"}
    message = _error({"data": same, "pretrain": {"root": "./data/raw/physionet2016/"}, "train": {"init": "pretrained"}})
    assert "'train.init' must be none when pretrain.root is data.root (data/raw/physionet2016)" in message
    assert config.parse({"data": same, "train": {"init": "none"}}).train.init == "none"
    assert config.parse({"train": {"init": "pretrained"}}).train.init == "pretrained"


def test_every_problem_is_reported_at_once():
    message = _error({"train": {"epochs": 0, "batch_size": 0}, "featurize": {"n_mfcc": 0}})
    assert len(message.splitlines()) == 3
    message = _error({"train": {"epochs": "x", "bogus": 1}, "prepar": {}})
    assert {"'train.epochs'", "'train.bogus'", "'prepar'"} <= {w for w in message.split() if w.startswith("'")}


def test_a_key_given_twice_is_an_error(tmp_path):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 10\n  seed: 1\n  epochs: 20\n")
    with pytest.raises(config.ParamsError, match=r"key 'epochs' is given twice \(line 4\)"):
        config.load(tmp_path / "params.yaml")


def test_invalid_yaml_is_a_params_error(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [epochs: 1\n")
    with pytest.raises(config.ParamsError, match="is not valid YAML"):
        config.load(tmp_path / "params.yaml")


def test_load_or_exit_prints_the_message_and_exits_2(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"featurize": {"n_mfcc": 0}}))
    with pytest.raises(SystemExit) as exit_:
        config.load_or_exit(tmp_path / "params.yaml")
    assert exit_.value.code == 2
    assert "'featurize.n_mfcc' must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config.load_or_exit(tmp_path / "missing.yaml")
    assert "cannot read" in capsys.readouterr().err


def test_load_or_exit_returns_valid_params(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 3}}))
    assert config.load_or_exit(tmp_path / "params.yaml").train.epochs == 3


@pytest.mark.parametrize("stage", STAGE_ARGS)
def test_stage_stops_cleanly_on_bad_params(stage, tmp_path):
    """`python stages/<stage>.py ... --params bad.yaml`: exit 2, the key in stderr, no traceback."""
    stages = {p.stem for p in (REPO_ROOT / "stages").glob("*.py")}
    assert stages == set(STAGE_ARGS) | PARAMLESS_STAGES, "a stage to add here"
    dvc_stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert all("params" not in dvc_stages[name] for name in PARAMLESS_STAGES)
    script = REPO_ROOT / "stages" / f"{stage}.py"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"prepare": {"train_fraction": 0.9}}))
    result = subprocess.run(
        [sys.executable, str(script), *STAGE_ARGS[stage], "--params", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 2, result.stderr
    assert "'prepare.train_fraction'" in result.stderr
    assert "Traceback" not in result.stderr
