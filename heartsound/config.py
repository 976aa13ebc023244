"""The params.yaml schema: typed defaults per section and validation that names the bad key."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import urllib.parse
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
    hop_length: int = 40
    fmin_hz: float = 20.0
    fmax_hz: float = 1000.0
    window_s: float = 4.0
    window_hop_s: float = 1.0
    # Use only the first max_duration_s of each recording (None = whole recording).
    max_duration_s: float | None = None
    # Per-recording normalisation of the MFCC frames: "cmn" subtracts each coefficient's mean over the recording,
    # "cmvn" also divides by its std. A stethoscope's frequency response and gain add a constant to every frame's
    # cepstrum, so the mean carries the device more than the heart (docs/experiments.md, leave-one-source-out).
    normalise: str = "none"
    jobs: int = 0  # worker processes; 0 = all cores
    cache_dir: str = ".heartsound-cache/features"
    # Where recordings are featurized: None = the local worker pool; "local-cluster" = a Dask LocalCluster of
    # `jobs` worker processes; "tcp://host:8786" (or tls://) = the Dask scheduler of a cluster (docs/scaling.md).
    scheduler: str | None = None


@dataclass(frozen=True)
class TrainParams:
    model: str = "seed_cnn"
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.001
    patience: int = 15
    class_weight: str = "balanced"  # balanced | balanced_by_source (within each class, sources alike) | none
    seed: int = 42
    augment: bool = False  # random time shift and gain of training windows
    # More augmentation of training windows (0 = off), each drawn per window after shift and gain:
    eq_db: float = 0.0  # a random stethoscope response: a smooth EQ curve over the mel bands, std in dB
    # Stationary coloured noise at an SNR of this to 20 dB above it, relative to the window's power (None = off).
    noise_snr_db: float | None = None
    time_mask: float = 0.0  # SpecAugment time mask: up to this share of a window's frames set to its mean
    freq_mask: float = 0.0  # SpecAugment frequency mask: up to this share of the mel bands set to their mean
    mixup: float = 0.0  # mixup's Beta(alpha, alpha): windows and labels mixed within a batch
    loss: str = "crossentropy"  # crossentropy | focal (focal cross-entropy, gamma 2)
    lr_schedule: str = "constant"  # constant | cosine (decay to 0 over the epochs)
    ensemble: int = 1  # models trained with seeds seed, seed + 1, ...; their probabilities averaged
    # At most this many training windows per epoch, a fresh random draw each epoch (0 = all): an epoch's cost stops
    # growing with the data set, where overlapping windows of the same recordings add little.
    epoch_windows: int = 0
    # TensorFlow's intra-op threads (inter-op: 1). The numbers depend on it, so it is a param, not the core count.
    threads: int = 2
    # Weight of the cycle head (heartsound.fusion) in the recording's log-probability; 0 = the CNN alone.
    cycle_weight: float = 0.0
    # none: random initial weights; pretrained: every layer but the classifier from the pretrain stage's model.
    init: str = "none"
    # Domain-adversarial training (DANN): a source classifier on the CNN's embedding whose gradient reaches the CNN
    # reversed and scaled by this, so the CNN learns what does not tell the sources apart. 0 = off.
    source_adversary: float = 0.0


@dataclass(frozen=True)
class EvaluateParams:
    aggregation: str = "mean"  # how window probabilities become a recording's: mean | max


@dataclass(frozen=True)
class CrossvalParams:
    folds: int = 5
    seed: int = 42
    # Share of each fold's training groups held out for early stopping.
    val_fraction: float = 0.15
    # Training seeds per fold (train.seed, +100, +200, ...): the spread of the cv mean over them is the noise
    # floor that a difference between two runs must clear.
    seeds: int = 1
    # group: patient-grouped folds over every source; source: leave-one-source-out, a fold per source (device).
    by: str = "group"
    # Where the trainings (a fold and a seed each) run: null = one after another in this process; local-cluster =
    # Dask workers on this machine, one per train.threads cores; "tcp://host:8786" = a Dask cluster's scheduler
    # (docs/scaling.md). The results are the same wherever they run.
    scheduler: str | None = None
    # Cycle-head weights the out-of-fold predictions are also scored at, from the same trainings (the head is
    # refitted per fold; only the fusion changes): cv.json's cycle_weights, to choose train.cycle_weight by.
    cycle_weights: tuple[float, ...] = ()


@dataclass(frozen=True)
class PretrainParams:
    # The larger data set the pretrain stage trains on (its own .dvc); features as featurize makes them.
    dataset: str = "physionet2016"
    root: str = "data/raw/physionet2016"
    # Non-overlapping windows: a quarter of the windows of a 1-s hop, for a few more minutes of training.
    window_hop_s: float = 4.0
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001
    seed: int = 42


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    featurize: FeaturizeParams = field(default_factory=FeaturizeParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    crossval: CrossvalParams = field(default_factory=CrossvalParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)


DATASETS = ("pascal", "physionet2016", "yaseen2018", "circor2022", "folder")
MODELS = ("seed_cnn", "cnn1d")
CHOICES = {
    "data.dataset": DATASETS,
    "featurize.normalise": ("none", "cmn", "cmvn"),
    "train.model": MODELS,
    "train.init": ("none", "pretrained"),
    "pretrain.dataset": DATASETS,
    "train.class_weight": ("balanced", "balanced_by_source", "none"),
    "train.lr_schedule": ("constant", "cosine"),
    "train.loss": ("crossentropy", "focal"),
    "crossval.by": ("group", "source"),
    "evaluate.aggregation": ("mean", "max"),
}


def _type_name(option: Any) -> str:
    return "null" if option is type(None) else option.__name__


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check one value against its annotation (int, float, str, bool, X | None, and tuple[X, ...] from a YAML
    list, each item checked as X and named key[i])."""
    if get_origin(annotation) is tuple:  # tuple[X, ...]: a YAML list of X
        if not isinstance(value, list):
            raise ParamsError(f"params: '{key}' must be a list, got {value!r} ({type(value).__name__})")
        return tuple(_coerce(f"{key}[{i}]", item, get_args(annotation)[0]) for i, item in enumerate(value))
    options = get_args(annotation) if get_origin(annotation) is not None else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ParamsError(f"params: '{key}' must not be empty (allowed: {_type_name(options[0])})")
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
    names = " or ".join(_type_name(o) for o in options)
    hint = ""
    if float in options and isinstance(value, str) and _looks_numeric(value):
        # YAML 1.1 (PyYAML) reads 1e-3 as text: a float needs a dot, as in 1.0e-3.
        hint = "; YAML reads a number without a dot before its exponent as text, write e.g. 1.0e-3"
    raise ParamsError(f"params: '{key}' must be {names}, got {value!r} ({type(value).__name__}){hint}")


def _is_scheduler(value: str) -> bool:
    """featurize.scheduler, crossval.scheduler: "local-cluster", or a Dask scheduler address tcp://host:port or tls://host:port."""
    if value == "local-cluster":
        return True
    try:
        address = urllib.parse.urlsplit(value)
        port = address.port
    except ValueError:  # a port out of range or not a number
        return False
    rest = (address.path, address.query, address.fragment, address.username)
    return address.scheme in ("tcp", "tls") and bool(address.hostname) and port is not None and not any(rest)


def _require_scheduler(checks: _Checks, key: str, value: str | None) -> None:
    checks.require(
        value is None or _is_scheduler(value),
        key,
        "must be null, local-cluster or a Dask scheduler address tcp://host:port (or tls://host:port)",
        value,
    )


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unknown(key: str, allowed: list[str]) -> ParamsError:
    """'unknown key' naming the allowed keys, with the closest one as a guess (typos are the usual cause)."""
    section, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, allowed, n=1)
    guess = f"; did you mean '{close[0]}'?" if close else ""
    if section:
        return ParamsError(f"params: unknown key '{key}' (allowed in '{section}': {', '.join(allowed)}){guess}")
    return ParamsError(f"params: unknown section '{key}' (allowed: {', '.join(allowed)}){guess}")


def _section(name: str, cls: type, raw: Any, errors: list[str]) -> Any:
    """Build one section's dataclass; append every problem to errors (returns None if any)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"params: '{name}' must be a mapping of keys to values, got {raw!r}")
        return None
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    values, before = {}, len(errors)
    for key, value in raw.items():
        if key not in known:
            errors.append(str(_unknown(f"{name}.{key}", known)))
            continue
        try:
            values[key] = _coerce(f"{name}.{key}", value, hints[key])
        except ParamsError as e:
            errors.append(str(e))
    return cls(**values) if len(errors) == before else None


class _Checks:
    """Collects every violated constraint, so one run reports all of them."""

    def __init__(self):
        self.errors: list[str] = []

    def require(self, ok: bool, key: str, message: str, value: Any) -> None:
        if not ok:
            self.errors.append(f"params: '{key}' {message}, got {value!r}")


def _check(params: Params) -> list[str]:
    c = _Checks()
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(params, section), name)
        c.require(value in allowed, key, f"must be one of {', '.join(allowed)}", value)
    d, p, f, t = params.data, params.prepare, params.featurize, params.train
    c.require(d.root.strip() != "", "data.root", "must name the dataset directory", d.root)
    c.require(p.min_duration_s >= 0, "prepare.min_duration_s", "must be >= 0", p.min_duration_s)
    c.require(
        p.max_per_class is None or p.max_per_class >= 1,
        "prepare.max_per_class",
        "must be >= 1 or null",
        p.max_per_class,
    )
    fractions = ("train_fraction", "val_fraction", "test_fraction")
    for key in fractions:
        c.require(0 < getattr(p, key) < 1, f"prepare.{key}", "must be between 0 and 1 (exclusive)", getattr(p, key))
    total = sum(getattr(p, key) for key in fractions)
    c.require(abs(total - 1) < 1e-6, "prepare.train_fraction", "+ val_fraction + test_fraction must sum to 1", total)
    c.require(f.sample_rate_hz >= 500, "featurize.sample_rate_hz", "must be >= 500", f.sample_rate_hz)
    c.require(f.n_mfcc >= 1, "featurize.n_mfcc", "must be >= 1", f.n_mfcc)
    c.require(f.n_mels >= f.n_mfcc, "featurize.n_mels", f"must be >= featurize.n_mfcc ({f.n_mfcc})", f.n_mels)
    c.require(f.n_fft >= 16, "featurize.n_fft", "must be >= 16", f.n_fft)
    # More mel bands than FFT bins leaves empty filters (all-zero MFCC inputs).
    c.require(
        f.n_mels <= f.n_fft // 2 + 1, "featurize.n_mels", f"must be <= n_fft / 2 + 1 ({f.n_fft // 2 + 1})", f.n_mels
    )
    c.require(
        1 <= f.hop_length <= f.n_fft, "featurize.hop_length", f"must be between 1 and n_fft ({f.n_fft})", f.hop_length
    )
    c.require(f.fmin_hz >= 0, "featurize.fmin_hz", "must be >= 0", f.fmin_hz)
    c.require(f.fmin_hz < f.fmax_hz, "featurize.fmin_hz", f"must be below featurize.fmax_hz ({f.fmax_hz:g})", f.fmin_hz)
    c.require(
        f.fmax_hz <= f.sample_rate_hz / 2,
        "featurize.fmax_hz",
        f"must be <= sample_rate_hz / 2 ({f.sample_rate_hz / 2:g})",
        f.fmax_hz,
    )
    c.require(
        f.window_s * f.sample_rate_hz >= f.n_fft,
        "featurize.window_s",
        f"must hold at least n_fft samples (>= {f.n_fft / f.sample_rate_hz:g} s)",
        f.window_s,
    )
    # A hop longer than the window would skip audio between windows.
    c.require(
        0 < f.window_hop_s <= f.window_s,
        "featurize.window_hop_s",
        f"must be > 0 and <= featurize.window_s ({f.window_s:g})",
        f.window_hop_s,
    )
    c.require(
        f.max_duration_s is None or f.max_duration_s >= f.window_s,
        "featurize.max_duration_s",
        f"must be >= featurize.window_s ({f.window_s:g}) or null",
        f.max_duration_s,
    )
    c.require(f.jobs >= 0, "featurize.jobs", "must be >= 0 (0 = all cores)", f.jobs)
    c.require(f.cache_dir.strip() != "", "featurize.cache_dir", "must name a directory", f.cache_dir)
    _require_scheduler(c, "featurize.scheduler", f.scheduler)
    c.require(t.epochs >= 1, "train.epochs", "must be >= 1", t.epochs)
    c.require(t.batch_size >= 1, "train.batch_size", "must be >= 1", t.batch_size)
    c.require(t.learning_rate > 0, "train.learning_rate", "must be > 0", t.learning_rate)
    c.require(t.patience >= 0, "train.patience", "must be >= 0", t.patience)
    c.require(
        t.epoch_windows >= 0, "train.epoch_windows", "must be >= 0 (0 = every window each epoch)", t.epoch_windows
    )
    c.require(1 <= t.ensemble <= 20, "train.ensemble", "must be between 1 and 20", t.ensemble)
    c.require(1 <= t.threads <= 64, "train.threads", "must be between 1 and 64", t.threads)
    c.require(t.eq_db >= 0, "train.eq_db", "must be >= 0 (0 = off)", t.eq_db)
    c.require(
        t.noise_snr_db is None or -20 <= t.noise_snr_db <= 60,
        "train.noise_snr_db",
        "must be null (off) or an SNR in dB between -20 and 60",
        t.noise_snr_db,
    )
    for key in ("time_mask", "freq_mask"):
        value = getattr(t, key)
        c.require(0 <= value < 1, f"train.{key}", "must be >= 0 and < 1 (0 = off)", value)
    c.require(t.mixup >= 0, "train.mixup", "must be >= 0 (0 = off)", t.mixup)
    c.require(t.source_adversary >= 0, "train.source_adversary", "must be >= 0 (0 = off)", t.source_adversary)
    pre = params.pretrain
    c.require(pre.epochs >= 1, "pretrain.epochs", "must be >= 1", pre.epochs)
    c.require(pre.batch_size >= 1, "pretrain.batch_size", "must be >= 1", pre.batch_size)
    c.require(pre.learning_rate > 0, "pretrain.learning_rate", "must be > 0", pre.learning_rate)
    c.require(pre.window_hop_s > 0, "pretrain.window_hop_s", "must be > 0", pre.window_hop_s)
    c.require(pre.root.strip() != "", "pretrain.root", "must name the dataset directory", pre.root)
    # Pre-trained on the recordings it is then tested on, a model's test and cv figures would be worth nothing.
    c.require(
        t.init != "pretrained" or os.path.normpath(pre.root) != os.path.normpath(d.root),
        "train.init",
        f"must be none when pretrain.root is data.root ({d.root}): the pre-trained model would have heard the "
        "recordings train and crossval test on",
        t.init,
    )
    c.require(0 <= t.cycle_weight < 1, "train.cycle_weight", "must be >= 0 and < 1 (0 = no cycle head)", t.cycle_weight)
    cv = params.crossval
    c.require(cv.folds >= 2, "crossval.folds", "must be >= 2", cv.folds)
    c.require(1 <= cv.seeds <= 10, "crossval.seeds", "must be between 1 and 10", cv.seeds)
    c.require(0 < cv.val_fraction < 1, "crossval.val_fraction", "must be between 0 and 1 (exclusive)", cv.val_fraction)
    _require_scheduler(c, "crossval.scheduler", cv.scheduler)
    for i, weight in enumerate(cv.cycle_weights):
        c.require(0 <= weight <= 1, f"crossval.cycle_weights[{i}]", "must be between 0 (CNN) and 1 (head)", weight)
    c.require(
        len(set(cv.cycle_weights)) == len(cv.cycle_weights),
        "crossval.cycle_weights",
        "must not list a weight twice",
        list(cv.cycle_weights),
    )
    return c.errors


def validate(params: Params) -> Params:
    """Check value ranges and cross-field constraints; raise ParamsError naming every bad key."""
    errors = _check(params)
    if errors:
        raise ParamsError("\n".join(errors))
    return params


def parse(raw: Any) -> Params:
    """Build validated Params from a parsed params.yaml mapping; ParamsError lists every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError("params: the file must be a mapping of sections (data, prepare, featurize, ...)")
    hints = get_type_hints(Params)
    names = [f.name for f in fields(Params)]
    errors = [str(_unknown(str(key), names)) for key in raw if key not in names]
    values = {name: _section(name, hints[name], raw.get(name), errors) for name in names}
    if errors:
        raise ParamsError("\n".join(errors))
    return validate(Params(**values))


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice (PyYAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ParamsError(f"params: key '{key}' is given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: str | os.PathLike = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError (or OSError if it cannot be read)."""
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.load(f, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as e:
            raise ParamsError(f"params: {path} is not valid YAML: {e}") from e
    return parse(raw)


def load_or_exit(path: str | os.PathLike = "params.yaml") -> Params:
    """load() for stage scripts: a bad params file stops the stage with its message, no traceback (exit 2)."""
    try:
        return load(path)
    except ParamsError as e:
        print(f"{path}: invalid parameters\n{e}", file=sys.stderr)
    except OSError as e:
        print(f"params: cannot read {path}: {e.strerror or e}", file=sys.stderr)
    raise SystemExit(2)


def as_dict(section: Any) -> dict[str, Any]:
    """A params section as a plain dict (for metadata files and cache keys)."""
    return dataclasses.asdict(section)
