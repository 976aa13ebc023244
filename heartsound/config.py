"""The params.yaml schema: typed defaults per section and validation that names the bad key."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or impossible."""


@dataclass(frozen=True)
class DataParams:
    dataset: str = "pascal"  # pascal | physionet2016 | yaseen2018 | circor2022 | folder
    root: str = "data/raw/pascal"


@dataclass(frozen=True)
class PrepareParams:
    min_duration_s: float = 0.5
    # Keep at most this many recordings per class (None = all): small end-to-end runs.
    max_per_class: int | None = None
    train_fraction: float = 0.7
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42


@dataclass(frozen=True)
class FeaturizeParams:
    # Heart sounds and murmurs carry little energy above ~800 Hz: 2 kHz keeps that band
    # (Nyquist 1 kHz) and makes decoding and MFCC cheaper than at 22.05 kHz.
    sample_rate_hz: int = 2000
    n_mfcc: int = 40
    n_mels: int = 64
    n_fft: int = 256
    hop_length: int = 32
    fmin_hz: float = 20.0
    fmax_hz: float = 1000.0
    window_s: float = 4.0
    window_hop_s: float = 2.0
    # Use only the first max_duration_s of each recording (None = whole recording).
    max_duration_s: float | None = None
    jobs: int = 0  # worker processes; 0 = all cores
    cache_dir: str = ".heartsound-cache/features"


@dataclass(frozen=True)
class TrainParams:
    model: str = "seed_cnn"
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.001
    patience: int = 15
    class_weight: str = "balanced"  # balanced | none
    seed: int = 42


@dataclass(frozen=True)
class EvaluateParams:
    aggregation: str = "mean"  # how window probabilities become a recording's: mean | max


@dataclass(frozen=True)
class CrossvalParams:
    folds: int = 5
    seed: int = 42
    # Share of each fold's training groups held out for early stopping.
    val_fraction: float = 0.15


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    featurize: FeaturizeParams = field(default_factory=FeaturizeParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    crossval: CrossvalParams = field(default_factory=CrossvalParams)


DATASETS = ("pascal", "physionet2016", "yaseen2018", "circor2022", "folder")
MODELS = ("seed_cnn",)
CHOICES = {
    "data.dataset": DATASETS,
    "train.model": MODELS,
    "train.class_weight": ("balanced", "none"),
    "evaluate.aggregation": ("mean", "max"),
}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check one value against its annotation (int, float, str, bool, X | None)."""
    options = get_args(annotation) if get_origin(annotation) is not None else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ParamsError(f"params: '{key}' must not be empty")
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ParamsError(f"params: '{key}' must be a finite number, got {value!r}")
            return float(value)
        if option is str and isinstance(value, str):
            return value
    names = " or ".join("null" if o is type(None) else o.__name__ for o in options)
    raise ParamsError(f"params: '{key}' must be {names}, got {value!r} ({type(value).__name__})")


def _section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params: '{name}' must be a mapping of keys to values")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ParamsError(
            f"params: unknown key '{name}.{unknown[0]}' (allowed in '{name}': {', '.join(sorted(known))})"
        )
    values = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in raw.items()}
    return cls(**values)


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ParamsError(f"params: '{key}' {message}")


def validate(params: Params) -> Params:
    """Check cross-field constraints; raise ParamsError naming the key."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(params, section), name)
        _require(value in allowed, key, f"must be one of {', '.join(allowed)}, got {value!r}")
    p, f, t = params.prepare, params.featurize, params.train
    _require(p.min_duration_s >= 0, "prepare.min_duration_s", "must be >= 0")
    _require(p.max_per_class is None or p.max_per_class >= 1, "prepare.max_per_class", "must be >= 1 or null")
    for key in ("train_fraction", "val_fraction", "test_fraction"):
        _require(0 < getattr(p, key) < 1, f"prepare.{key}", "must be between 0 and 1 (exclusive)")
    total = p.train_fraction + p.val_fraction + p.test_fraction
    _require(
        abs(total - 1) < 1e-6, "prepare.train_fraction", f"+ val_fraction + test_fraction must sum to 1, got {total:g}"
    )
    _require(f.sample_rate_hz >= 500, "featurize.sample_rate_hz", "must be >= 500")
    _require(f.n_mfcc >= 1, "featurize.n_mfcc", "must be >= 1")
    _require(f.n_mels >= f.n_mfcc, "featurize.n_mels", f"must be >= featurize.n_mfcc ({f.n_mfcc})")
    _require(f.n_fft >= 16, "featurize.n_fft", "must be >= 16")
    _require(1 <= f.hop_length <= f.n_fft, "featurize.hop_length", f"must be between 1 and n_fft ({f.n_fft})")
    _require(0 <= f.fmin_hz < f.fmax_hz, "featurize.fmin_hz", "must be >= 0 and below featurize.fmax_hz")
    _require(
        f.fmax_hz <= f.sample_rate_hz / 2,
        "featurize.fmax_hz",
        f"must be <= sample_rate_hz / 2 ({f.sample_rate_hz / 2:g})",
    )
    _require(f.window_s * f.sample_rate_hz >= f.n_fft, "featurize.window_s", "must hold at least n_fft samples")
    _require(0 < f.window_hop_s, "featurize.window_hop_s", "must be > 0")
    _require(
        f.max_duration_s is None or f.max_duration_s >= f.window_s,
        "featurize.max_duration_s",
        f"must be >= featurize.window_s ({f.window_s:g}) or null",
    )
    _require(f.jobs >= 0, "featurize.jobs", "must be >= 0 (0 = all cores)")
    _require(t.epochs >= 1, "train.epochs", "must be >= 1")
    _require(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _require(t.learning_rate > 0, "train.learning_rate", "must be > 0")
    _require(t.patience >= 0, "train.patience", "must be >= 0")
    _require(params.crossval.folds >= 2, "crossval.folds", "must be >= 2")
    _require(0 < params.crossval.val_fraction < 1, "crossval.val_fraction", "must be between 0 and 1 (exclusive)")
    return params


def parse(raw: Any) -> Params:
    """Build validated Params from a parsed params.yaml mapping."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError("params: the file must be a mapping of sections")
    sections = {f.name: f.type for f in fields(Params)}
    hints = get_type_hints(Params)
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ParamsError(f"params: unknown section '{unknown[0]}' (allowed: {', '.join(sections)})")
    values = {name: _section(name, hints[name], raw.get(name)) for name in sections}
    return validate(Params(**values))


def load(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ParamsError(f"params: {path} is not valid YAML: {e}") from e
    return parse(raw)


def as_dict(section: Any) -> dict[str, Any]:
    """A params section as a plain dict (for metadata files and cache keys)."""
    return dataclasses.asdict(section)
