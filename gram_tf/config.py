"""Experiment configs: YAML files under configs/, loaded into a validated schema.

A config is a tree of dataclasses. Loading checks every key against the schema: unknown keys (with a
"did you mean" hint), wrong types and missing required values are errors naming the key and the
file. Any value can be overridden with `--set section.key=value` (the value is parsed as YAML).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import GramTFError


@dataclass
class DataConfig:
    dir: Optional[str] = None  # ImageFolder root; None -> synthesise the built-in dataset
    manifest: Optional[str] = None  # an existing split manifest (CSV) to reuse instead of splitting
    synth_per_class: int = 80
    synth_size: int = 160
    val: float = 0.15
    test: float = 0.2
    group_pattern: Optional[str] = None  # regex; group(1) (or the match) is the specimen id
    stratify: bool = True


@dataclass
class TrainConfig:
    input_size: Optional[int] = None  # None -> the backbone's default size
    weights: str = "imagenet"  # imagenet | none | path to a weights file
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    dropout: float = 0.2
    label_smoothing: float = 0.0
    class_weights: str = "balanced"  # balanced | none
    early_stopping_patience: int = 6
    cache: str = "memory"  # memory | disk | none  (none: run the backbone every epoch)
    augment: bool = True
    augment_views: int = 2  # augmented copies per training image when features are cached
    unfreeze: float = 0.0  # fraction of backbone layers (from the top) to fine-tune after the head
    fine_tune_epochs: int = 5
    fine_tune_learning_rate: float = 1e-5
    train_batchnorm: bool = False  # True only when training from scratch (weights none, unfreeze 1)
    gelu: str = "erf"  # transformers: erf (exact) | tanh (approximation); recorded in run.json
    recalibrate_bn: str = "auto"  # auto (random weights only) | always | never: see train.recalibrate_batchnorm
    strategy: str = "default"  # default | mirrored | multi_worker
    tensorboard: bool = True


@dataclass
class PruneConfig:
    levels: list = field(default_factory=lambda: [0.5])  # final sparsities; [] = no pruning
    schedule: str = "polynomial"  # polynomial | constant
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: Optional[int] = None  # None -> 70% of the fine-tuning steps
    frequency: Optional[int] = None  # None -> chosen so that at least 10 pruning updates happen
    epochs: int = 4
    scope: str = "all"  # all (backbone + head) | head
    structured_2_4: bool = False
    learning_rate: float = 1e-4
    batch_size: int = 16
    # the recipe for pretrained backbones (docs/pruning.md has the measurements behind each default)
    method: str = "refit"  # refit (one-shot masks + least-squares refit, then fine-tune) | gradual (TF-MOT ramp)
    batchnorm: str = "fold"  # fold (prune the folded kernels) | frozen (the old recipe) | train
    distill: float = 0.5  # weight of distillation from the dense model (0 = labels only)
    temperature: float = 2.0
    lr_schedule: str = "cosine"  # cosine (linear warm-up, then cosine decay) | constant
    warmup_fraction: float = 0.1
    keep: str = "best"  # best (lowest val loss after the last mask update) | last
    allocation: str = "sensitivity"  # sensitivity (per-layer sparsity from the measured sensitivity) | uniform
    sensitivity_levels: list = field(default_factory=lambda: [0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
    max_layer_sparsity: float = 0.98  # sensitivity allocation never prunes a layer further
    max_drop_pp: Optional[float] = None  # val accuracy points (1 = 1 pp): pick the sparsest level within it


@dataclass
class ModelCardConfig:
    """What the standard TFLite metadata says of every artifact (shown by Android Studio, read by the Task
    Library); empty -> derived from the run (name and description from backbone, variant and labels,
    version from the trained model's sha256); author and license are left out unless set."""
    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""


@dataclass
class ConvertConfig:
    variants: list = field(
        default_factory=lambda: ["fp32", "fp16", "dynamic", "int8", "int8-per-tensor", "int8-fast"]
    )
    # int8-per-tensor: no per-channel scales, the smallest artifact of a pruned model (docs/pruning.md)
    pruned_variants: list = field(default_factory=lambda: ["fp32", "int8", "int8-per-tensor"])
    representative_samples: int = 100
    # normalization (and a BGR backbone's channel flip) inside the graph: every artifact takes RGB pixels
    # 0-255, float or (integer variants) uint8 with scale 1, as MediaPipe and the Task Library feed them
    # (docs/phones.md has the measured cost: none); false = the caller normalizes (the old artifacts)
    pixel_input: bool = True
    io_type: str = "uint8"  # uint8 | int8 | float32: input and output type of the full-integer variants
    check_samples: int = 32
    max_disagreement: float = 0.1  # flag a variant whose top-1 disagrees with Keras on more
    selective_max_drop: float = 0.01  # int8-selective: accuracy loss vs float allowed on val
    fast_threads: int = 2  # int8-fast: threads the per-op profile is measured with (match deployment)
    fast_margin: float = 0.05  # int8-fast: keep an op float when int8 is slower by more than this
    fast_max_drop: float = 0.01  # int8-fast: candidates must stay within this accuracy loss on val
    # int8 recipe of the full-integer variants (int8, int8-per-tensor, int8-selective, int8-fast):
    # "auto" = what docs/quantization.md and docs/pruning.md measured: per-tensor int8 gets cle + bc
    # + percentile (+ search instead of percentile in a pruned run with a validation split), a pruned
    # model's int8 cle + bc, dense per-channel int8 the converter's own min/max
    equalize: str = "auto"  # auto | always | never: cross-layer equalization
    bias_correction: str = "auto"  # auto | never | quantized | float: int8 weight-error bias correction
    calibration: str = "auto"  # auto | minmax | percentile | mse | entropy | meanmax | search (best on val)
    calibration_percentile: float = 99.99  # percentile calibration: the quantile kept
    calibration_bins: int = 2048  # histogram bins (percentile, mse, entropy)
    qat_epochs: int = 2
    qat_learning_rate: float = 1e-5
    batch_size: int = 1  # static batch 1 keeps graphs fully delegable to XNNPACK
    metadata: ModelCardConfig = field(default_factory=ModelCardConfig)


@dataclass
class BenchConfig:
    threads: list = field(default_factory=lambda: [1, 2])
    runs: int = 50
    warmup: int = 5
    max_seconds: Optional[float] = None  # time budget per (model, threads); None -> exactly `runs`
    keras_reference: bool = True
    device: Optional[str] = None  # label of this machine in result rows; None -> its CPU model


@dataclass
class ReportConfig:
    max_drop: float = 0.01  # accuracy loss vs fp32 allowed for the "auto" choice (0.01 = 1 pp)


@dataclass
class StudyConfig:
    name: str = "study"
    seed: int = 0
    out: str = "runs"  # where data, runs and the report go (artifacts go to tflite_dir/<name>)
    tflite_dir: str = "tflite_models"
    weights_dir: Optional[str] = None  # folder searched for Keras ImageNet weight files
    backbones: list = field(default_factory=lambda: ["mobilenet_v2_035"])
    # per-backbone weights overriding train.weights, e.g. {deit_tiny: /models/deit_tiny.safetensors}
    backbone_weights: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


_CHOICES = {
    "train.cache": ("memory", "disk", "none"),
    "train.class_weights": ("balanced", "none"),
    "train.strategy": ("default", "mirrored", "multi_worker"),
    "train.recalibrate_bn": ("auto", "always", "never"),
    "train.gelu": ("erf", "tanh"),
    "prune.schedule": ("polynomial", "constant"),
    "prune.scope": ("all", "head"),
    "prune.batchnorm": ("fold", "frozen", "train"),
    "prune.method": ("refit", "gradual"),
    "prune.lr_schedule": ("cosine", "constant"),
    "prune.keep": ("best", "last"),
    "prune.allocation": ("uniform", "sensitivity"),
    "convert.io_type": ("uint8", "int8", "float32"),
    "convert.equalize": ("auto", "always", "never"),
    "convert.bias_correction": ("auto", "never", "quantized", "float"),
    "convert.calibration": ("auto", "minmax", "percentile", "mse", "entropy", "meanmax", "search"),
}
_RANGES = {
    "data.val": (0.0, 0.9),
    "data.test": (0.0, 0.9),
    "train.dropout": (0.0, 0.95),
    "train.unfreeze": (0.0, 1.0),
    "prune.initial_sparsity": (0.0, 0.99),
    "prune.distill": (0.0, 1.0),
    "prune.warmup_fraction": (0.0, 0.9),
    "prune.max_layer_sparsity": (0.0, 0.999),
    "report.max_drop": (0.0, 1.0),
    "convert.calibration_percentile": (50.0, 100.0),
}


_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
# keys whose value must be a finite number > 0 (a learning rate of -1 or .nan trains garbage)
_POSITIVE = ("train.learning_rate", "train.fine_tune_learning_rate", "prune.learning_rate", "convert.qat_learning_rate",
             "prune.temperature")
# keys that are counts and must be >= their minimum
_AT_LEAST = {"train.epochs": 1, "train.batch_size": 1, "bench.runs": 1, "convert.representative_samples": 1,
             "train.augment_views": 1, "train.fine_tune_epochs": 0, "train.early_stopping_patience": 0,
             "prune.epochs": 1, "prune.batch_size": 1, "convert.check_samples": 0, "convert.qat_epochs": 1,
             "convert.fast_threads": 1, "bench.warmup": 0, "convert.batch_size": 1,
             "convert.calibration_bins": 256}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str, source: str):
    """Check `value` against annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if tp is list or origin is list:
        if not isinstance(value, list):
            value = [value]  # a scalar from --set is a one-element list
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise GramTFError(f"{source}: key '{key}' must be a mapping, got {type(value).__name__} {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string; people type it as a number
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise GramTFError(
        f"{source}: key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _build(cls, data: dict, source: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise GramTFError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            did = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise GramTFError(
                f"{source}: unknown key '{prefix}{key}'{did}; valid keys: {', '.join(names)}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}", source)
    return cls(**kwargs)


def _validate(cfg: StudyConfig, source: str) -> None:
    for dotted, choices in _CHOICES.items():
        value = get_value(cfg, dotted)
        if value not in choices:
            raise GramTFError(f"{source}: key '{dotted}' is {value!r}; choose one of {choices}")
    for dotted, (lo, hi) in _RANGES.items():
        value = get_value(cfg, dotted)
        if not lo <= value <= hi:
            raise GramTFError(f"{source}: key '{dotted}' = {value} is outside [{lo}, {hi}]")
    if cfg.data.val + cfg.data.test >= 0.9:
        raise GramTFError(f"{source}: data.val + data.test must leave at least 10% for training")
    if not cfg.backbones:
        raise GramTFError(f"{source}: key 'backbones' needs at least one backbone name")
    for key in ("backbones", "convert.variants", "convert.pruned_variants"):
        for item in get_value(cfg, key):
            if not isinstance(item, str) or not item.strip():
                raise GramTFError(f"{source}: key '{key}' must list names, got {item!r}; e.g. --set '{key}=[name]'")
    if cfg.prune.max_drop_pp is not None and not 0 <= cfg.prune.max_drop_pp <= 100:
        raise GramTFError(f"{source}: key 'prune.max_drop_pp' = {cfg.prune.max_drop_pp} is outside [0, 100] (percentage points)")
    for level in cfg.prune.sensitivity_levels:
        if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
            raise GramTFError(f"{source}: prune.sensitivity_levels entries must be in (0, 1), got {level!r}")
    for level in cfg.prune.levels:
        if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
            raise GramTFError(f"{source}: prune.levels entries must be in (0, 1), got {level!r}")
    unknown = sorted(set(cfg.backbone_weights) - set(cfg.backbones))
    if unknown:
        raise GramTFError(f"{source}: backbone_weights names {', '.join(unknown)}, which is not in 'backbones'")
    for t in cfg.bench.threads:
        if not isinstance(t, int) or t < 1:
            raise GramTFError(f"{source}: bench.threads entries must be positive ints, got {t!r}")
    for key, least in _AT_LEAST.items():
        if get_value(cfg, key) < least:
            raise GramTFError(f"{source}: key '{key}' = {get_value(cfg, key)} must be >= {least}")
    for key in _POSITIVE:
        value = get_value(cfg, key)
        if not math.isfinite(value) or value <= 0:
            raise GramTFError(f"{source}: key '{key}' = {value} must be a finite number > 0, e.g. 1e-4")
    if cfg.train.input_size is not None and cfg.train.input_size < 1:
        raise GramTFError(f"{source}: key 'train.input_size' = {cfg.train.input_size} must be a positive pixel "
                          "size (or leave it unset for the backbone's default)")
    if not cfg.name or any(c in cfg.name for c in "/\\ "):
        raise GramTFError(f"{source}: key 'name' must be a non-empty name without slashes or spaces")


def get_value(cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def parse_overrides(pairs) -> dict:
    """['train.epochs=3', 'backbones=[a,b]'] -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise GramTFError(f"--set {pair!r}: expected key=value, e.g. --set train.epochs=3")
        key, raw = pair.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise GramTFError(f"--set {pair!r}: value is not valid YAML ({exc.problem})") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GramTFError(f"--set {pair!r}: '{part}' is set twice with different shapes")
        node[parts[-1]] = value
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path=None, overrides=None, base: Optional[dict] = None) -> StudyConfig:
    """Load a YAML config (or the defaults when `path` is None), apply overrides, validate."""
    data: dict = dict(base or {})
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise GramTFError(f"config file {path} not found; see configs/ for examples")
        try:
            loaded = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError:
            raise GramTFError(f"{path}: not a text file (YAML config expected); see configs/ for examples") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise GramTFError(f"{path}:{where} is not valid YAML; fix the syntax") from None
        if not isinstance(loaded, dict):
            raise GramTFError(f"{path}: the top level must be a mapping of keys")
        data = _merge(data, loaded)
    if overrides:
        data = _merge(data, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
        source += " + --set"
    cfg = _build(StudyConfig, data, source)
    _validate(cfg, source)
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(section) -> str:
    """A stable short hash of a config (section); stages record it to know when to redo work."""
    blob = json.dumps(dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section,
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def dump_yaml(cfg, path) -> None:
    from .io_utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
