"""Experiment configs: YAML files under configs/, loaded into a validated schema.

A config is a tree of dataclasses. Loading checks every key against the schema: unknown keys (with a
"did you mean" hint), wrong types and missing required values are errors naming the key and the
file. Any value can be overridden with `--set section.key=value` (the value is parsed as YAML).

Each numeric key declares its range next to its field (`_num(default, lo, hi)`); the validator and the
CLI's options read it from there, so a range is written once. Every value is finite.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import GramTFError

MAX_THREADS = (os.cpu_count() or 1) * 4  # more threads than 4x the cores only measures contention
MAX_DEPTH = 32  # YAML nesting: a config is 3 levels deep; the composer recurses (20 000 '[' overflow)
MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB; never read a device or a huge file into memory
MAX_VALUE_CHARS = 80  # values echoed in an error message are cut to this
MAX_NAME_CHARS = 100
MAX_COMPONENT_CHARS = 255  # the common file-system limit on one path component (NAME_MAX)


def _fmt(x) -> str:
    return str(int(x)) if isinstance(x, (int, float)) and math.isfinite(x) and float(x).is_integer() else f"{x:g}"


def _shown(name: str) -> str:
    """A mapping key inside a dotted key of a message: as typed when printable and short, else its repr."""
    return name if name.isprintable() and 0 < len(name) <= 40 else short(name, 40)


def short(value, limit: int = MAX_VALUE_CHARS) -> str:
    """repr(value) cut to `limit` characters: error messages never echo megabytes."""
    if isinstance(value, (list, dict, tuple)) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value)} items"  # its repr alone could be megabytes
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Range:
    """The values a numeric key (or each entry of a list key) may take: finite, lo..hi, either end open."""
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > self.lo if self.lo_open else v >= self.lo) and (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        if self.hi == math.inf:
            return f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        return f"in {'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"

    def check(self, value, what: str) -> None:
        """GramTFError naming `what` unless `value` (or each entry of a list) is in range."""
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v not in self:
                finite = "a finite number " if isinstance(v, float) and not math.isfinite(v) else ""
                raise GramTFError(f"{what} = {short(v)}: must be {finite}{self}")


def _num(default, lo=-math.inf, hi=math.inf, *, lo_open=False, hi_open=False):
    """A numeric field (or list of numbers: each entry) with its declared range; `default` may be a factory."""
    meta = {"range": Range(lo, hi, lo_open, hi_open)}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def _pick(default: str, choices: tuple):
    return field(default=default, metadata={"choices": choices})


def _path(default: Optional[str] = None):
    return field(default=default, metadata={"path": True})


_COUNT = 10 ** 6  # upper bound of counts (images, runs): beyond it a typo, not a study
_STEPS = 10 ** 9
_POS = dict(lo=0, lo_open=True)  # > 0: learning rates, temperature, time budgets
_FRACTION = dict(lo=0, lo_open=True, hi=1, hi_open=True)  # sparsity levels: strictly between 0 and 1
PERCENTILE = Range(50, 100, lo_open=True)  # convert.calibration_percentile; calibration.py checks the same
LEVELS = 256  # int8 steps: histogram calibration needs at least this many bins (calibration.py)

# The words a choice key takes. Each list is declared once, here, because the config is the floor
# every module that reads it can import: the module named beside it implements the words and
# imports the list from here, and the validator, the CLI's click.Choice and help and the error
# messages all derive from it (tests/test_cli.py checks the CLI offers exactly these).
AUTO, ALWAYS, NEVER = "auto", "always", "never"
POLICY = (AUTO, ALWAYS, NEVER)  # a step done when measured to help, always or never
CALIBRATION_METHODS = ("minmax", "percentile", "mse", "entropy", "meanmax")  # convert/calibration.py
CALIBRATION_SEARCH = "search"  # the most accurate of several methods on val (convert/recipe.py)
BIAS_CORRECTION_INPUTS = ("quantized", "float")  # what bias correction measures on (optimize/bias_correction.py)
IO_TYPES = ("uint8", "int8", "float32")  # full-integer variants' input/output type (convert/converter.py)
GELU_FORMS = ("erf", "tanh")  # transformers' GELU: exact | tanh approximation (models/registry.py)
# which sets' accuracy the "auto" choice must keep within report.max_drop_pp (report/stats.py): the in-domain
# test split, every external set, or both (worst: the largest drop of all; docs/generalization.md)
AUTO_ON = ("worst", "in_domain", "external")


@dataclass
class ExternalSet:
    """One external test set (data.external.NAME): an ImageFolder with the study's class names (`dir`), or
    a synthetic rendering in a shifted style the study makes itself (`synth_style`, a name of
    gram_tf.data.synth.STYLES; other specimens than the study's own: seed + 1). A plain string is `dir`."""
    dir: Optional[str] = _path()
    synth_style: Optional[str] = None
    synth_per_class: Optional[int] = _num(None, 1, _COUNT)  # None -> data.synth_per_class

# `gram-tf run --executor`: who runs the study's stage tasks (pipeline.py; not a config key: the same
# study, same keys and files, runs under either, and one can finish what the other started)
EXECUTORS = ("local", "ray")


@dataclass
class DataConfig:
    dir: Optional[str] = _path()  # ImageFolder root; None -> synthesise the built-in dataset
    manifest: Optional[str] = _path()  # an existing split file (CSV from `data split`) to reuse instead of splitting
    synth_per_class: int = _num(80, 1, _COUNT)
    synth_size: int = _num(160, 16, 4096)  # data/synth/render.py draws 16..4096 px
    val: float = _num(0.15, 0, 0.9)
    test: float = _num(0.2, 0, 0.9)
    group_pattern: Optional[str] = None  # regex; group(1) (or the match) is the specimen id
    stratify: bool = True
    # test sets from elsewhere (another lab, microscope, stain batch): every artifact is evaluated on each
    # (docs/generalization.md); {name: DIR} or {name: {synth_style: NAME}}
    external: dict[str, ExternalSet] = field(default_factory=dict)


@dataclass
class TrainConfig:
    input_size: Optional[int] = _num(None, 1, 4096)  # None -> the backbone's default size
    weights: str = _path("imagenet")  # imagenet | none | path to a weights file
    epochs: int = _num(30, 1, 10 ** 4)
    batch_size: int = _num(32, 1, 1 << 16)
    learning_rate: float = _num(1e-3, hi=10, **_POS)
    dropout: float = _num(0.2, 0, 0.95)
    label_smoothing: float = _num(0.0, 0, 1)
    class_weights: str = _pick("balanced", ("balanced", "none"))
    early_stopping_patience: int = _num(6, 0, 10 ** 4)
    cache: str = _pick("memory", ("memory", "disk", "none"))  # none: run the backbone every epoch
    augment: bool = True
    augment_views: int = _num(2, 1, 64)  # augmented copies per training image when features are cached
    unfreeze: float = _num(0.0, 0, 1)  # fraction of backbone layers (from the top) to fine-tune after the head
    fine_tune_epochs: int = _num(5, 0, 10 ** 4)
    fine_tune_learning_rate: float = _num(1e-5, hi=10, **_POS)
    train_batchnorm: bool = False  # True only when training from scratch (weights none, unfreeze 1)
    gelu: str = _pick(GELU_FORMS[0], GELU_FORMS)  # recorded in run.json
    # auto (random weights only) | always | never: see train.recalibrate_batchnorm
    recalibrate_bn: str = _pick(AUTO, POLICY)
    strategy: str = _pick("default", ("default", "mirrored", "multi_worker"))
    tensorboard: bool = True


@dataclass
class PruneConfig:
    levels: list[float] = _num(lambda: [0.5], **_FRACTION)  # final sparsities; [] = no pruning
    schedule: str = _pick("polynomial", ("polynomial", "constant"))
    initial_sparsity: float = _num(0.0, 0, 0.99)
    begin_step: int = _num(0, 0, _STEPS)
    end_step: Optional[int] = _num(None, 1, _STEPS)  # None -> 70% of the fine-tuning steps
    frequency: Optional[int] = _num(None, 1, _STEPS)  # None -> chosen so that at least 10 pruning updates happen
    epochs: int = _num(4, 1, 10 ** 4)
    scope: str = _pick("all", ("all", "head"))  # all (backbone + head) | head
    structured_2_4: bool = False
    learning_rate: float = _num(1e-4, hi=10, **_POS)
    batch_size: int = _num(16, 1, 1 << 16)
    # the recipe for pretrained backbones (docs/pruning.md has the measurements behind each default)
    # refit (one-shot masks + least-squares refit, then fine-tune) | gradual (TF-MOT ramp)
    method: str = _pick("refit", ("refit", "gradual"))
    batchnorm: str = _pick("fold", ("fold", "frozen", "train"))  # fold (prune the folded kernels) | frozen (the old recipe) | train
    distill: float = _num(0.5, 0, 1)  # weight of distillation from the dense model (0 = labels only)
    temperature: float = _num(2.0, hi=100, **_POS)
    lr_schedule: str = _pick("cosine", ("cosine", "constant"))  # cosine (linear warm-up, then cosine decay) | constant
    warmup_fraction: float = _num(0.1, 0, 0.9)
    keep: str = _pick("best", ("best", "last"))  # best (lowest val loss after the last mask update) | last
    # sensitivity (per-layer sparsity from the measured sensitivity) | uniform
    allocation: str = _pick("sensitivity", ("uniform", "sensitivity"))
    sensitivity_levels: list[float] = _num(lambda: [0.3, 0.5, 0.7, 0.8, 0.9, 0.95], **_FRACTION)
    max_layer_sparsity: float = _num(0.98, 0, 0.999)  # sensitivity allocation never prunes a layer further
    # validation accuracy lost, in percentage points (1 = 1 pp): pick the sparsest level within it
    max_drop_pp: Optional[float] = _num(None, 0, 100)


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
    representative_samples: int = _num(100, 1, _COUNT)
    # normalization (and a BGR backbone's channel flip) inside the graph: every artifact takes RGB pixels
    # 0-255, float or (integer variants) uint8 with scale 1, as MediaPipe and the Task Library feed them
    # (docs/phones.md has the measured cost: none); false = the caller normalizes (the old artifacts)
    pixel_input: bool = True
    io_type: str = _pick(IO_TYPES[0], IO_TYPES)  # input and output type of the full-integer variants
    check_samples: int = _num(32, 0, _COUNT)
    max_disagreement: float = _num(0.1, 0, 1)  # flag a variant whose top-1 disagrees with Keras on more
    selective_max_drop_pp: float = _num(1.0, 0, 100)  # int8-selective: accuracy points lost vs float allowed on val
    fast_threads: int = _num(2, 1, MAX_THREADS)  # int8-fast: threads the per-op profile is measured with (match deployment)
    fast_margin: float = _num(0.05, 0, 10)  # int8-fast: keep an op float when int8 is slower by more than this
    fast_max_drop_pp: float = _num(1.0, 0, 100)  # int8-fast: candidates must stay within this many points on val
    # int8 recipe of the full-integer variants (int8, int8-per-tensor, int8-selective, int8-fast):
    # "auto" = what docs/quantization.md and docs/pruning.md measured: per-tensor int8 gets cle + bc
    # + percentile (+ search instead of percentile in a pruned run with a validation split), a pruned
    # model's int8 cle + bc, dense per-channel int8 the converter's own min/max
    equalize: str = _pick(AUTO, POLICY)  # cross-layer equalization (convert/recipe.py)
    bias_correction: str = _pick(AUTO, (AUTO, NEVER) + BIAS_CORRECTION_INPUTS)  # int8 weight-error bias correction
    calibration: str = _pick(AUTO, (AUTO,) + CALIBRATION_METHODS + (CALIBRATION_SEARCH,))
    calibration_percentile: float = field(default=99.99, metadata={"range": PERCENTILE})  # the quantile kept
    calibration_bins: int = _num(2048, LEVELS, 1 << 20)  # histogram bins (percentile, mse, entropy)
    qat_epochs: int = _num(2, 1, 10 ** 4)
    qat_learning_rate: float = _num(1e-5, hi=10, **_POS)
    batch_size: int = _num(1, 1, 1024)  # static batch 1 keeps graphs fully delegable to XNNPACK
    metadata: ModelCardConfig = field(default_factory=ModelCardConfig)


@dataclass
class BenchConfig:
    threads: list[int] = _num(lambda: [1, 2], 1, MAX_THREADS)
    # every round times every (model, threads) once, in a rotated order (docs/benchmark-and-report.md); a p50 has
    # a 95 % CI from 6 rounds on (5 rounds: [min, max], 94 %)
    rounds: int = _num(7, 1, 1000)
    runs: int = _num(10, 1, _COUNT * 10)  # timed runs per round (a row has rounds x runs samples)
    warmup: int = _num(5, 0, _COUNT)  # untimed runs when a worker starts (and one before every visit)
    # time budget per (model, threads) over all rounds; None -> exactly `runs` per round (NaN would never
    # end a timing loop)
    max_seconds: Optional[float] = _num(None, hi=10 ** 6, **_POS)
    # round-to-round spread of the fp32 model above which latency conclusions are marked unreliable (%):
    # (benchmarks/results/bench_trust.summary.csv has what quiet and busy machines measured)
    max_noise_pct: float = _num(15.0, hi=1000, **_POS)
    # CPU other processes may use while timing (cores, averaged) before latencies are marked unreliable: a
    # steady neighbour slows every round alike, so it shows in no spread (docs/benchmark-and-report.md)
    max_busy_cores: float = _num(0.5, 0, 4096)
    keras_reference: bool = True
    device: Optional[str] = None  # label of this machine in result rows; None -> its CPU model


@dataclass
class ReportConfig:
    max_drop_pp: float = _num(1.0, 0, 100)  # accuracy points lost vs fp32 allowed for the "auto" choice
    # selective prediction: the accuracy (a fraction) whose coverage the report states per artifact;
    # None -> the dense fp32 model's in-domain accuracy (docs/generalization.md)
    selective_target: Optional[float] = _num(None, 0, 1, lo_open=True)
    # on which sets: worst = the test split and every external set (the same as in_domain without any)
    auto_on: str = _pick(AUTO_ON[0], AUTO_ON)


@dataclass
class StudyConfig:
    name: str = "study"  # one folder name: out/<name>, tflite_dir/<name>
    seed: int = _num(0, 0, 2 ** 32 - 1)  # numpy's seeds
    out: str = _path("runs")  # where data, runs and the report go (artifacts go to tflite_dir/<name>)
    tflite_dir: str = _path("tflite_models")
    weights_dir: Optional[str] = _path()  # folder searched for Keras ImageNet weight files
    backbones: list = field(default_factory=lambda: ["mobilenet_v2_035"])
    # per-backbone weights overriding train.weights, e.g. {deit_tiny: /models/deit_tiny.safetensors}
    backbone_weights: dict = field(default_factory=dict, metadata={"path": True})
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def _fields(cls=StudyConfig, prefix: str = ""):
    """(dotted key, dataclass field, annotation) of every leaf key of the schema."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]


def field_range(dotted: str) -> Range:
    """The declared range of a numeric key, e.g. field_range('bench.runs'); the CLI checks its options with it."""
    return next(f.metadata["range"] for key, f, _ in _fields() if key == dotted)


_CHOICES = {key: f.metadata["choices"] for key, f, _ in _fields() if "choices" in f.metadata}


def check_choice(key: str, value, source: Optional[str] = None) -> None:
    """GramTFError naming the key (and the file) unless `value` is one of the choice key's words."""
    if value not in _CHOICES[key]:
        where = f"{source}: " if source else ""
        raise GramTFError(f"{where}key '{key}' is {short(value)}; choose one of {', '.join(_CHOICES[key])}")


# Old keys still read, each with a one-line notice: old dotted key -> (new key, factor old -> new).
# Every user-facing accuracy budget is in percentage points (1 = 1 pp), as prune.max_drop_pp always was.
RENAMED = {
    "report.max_drop": ("report.max_drop_pp", 100),
    "convert.selective_max_drop": ("convert.selective_max_drop_pp", 100),
    "convert.fast_max_drop": ("convert.fast_max_drop_pp", 100),
}


def _renamed(data: dict, prefix: str, source: str) -> dict:
    """`data` with each deprecated key of RENAMED under `prefix` moved to its new key (value converted)."""
    out = dict(data)
    for old, (new, factor) in RENAMED.items():
        old_leaf, new_leaf = old[len(prefix):], new[len(prefix):]
        if not old.startswith(prefix) or "." in old_leaf or old_leaf not in out:
            continue
        if new_leaf in out:
            raise GramTFError(f"{source}: both '{old}' and '{new}' are set; keep '{new}' (percentage points)")
        value = out.pop(old_leaf)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = round(value * factor, 12)  # 0.07 * 100 is 7.000000000000001
        print(f"notice: {source}: '{old}' is deprecated; read as {new}={short(value)} (percentage points)",
              file=sys.stderr)
        out[new_leaf] = value
    return out


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader minus what a config never needs and a hostile file abuses: aliases (a 1 kB
    alias bomb expands to gigabytes), duplicate keys (the second `train:` silently replaced the first)
    and deep nesting (the composer recurses: 20 000 '[' were a RecursionError). Each is one line."""

    source = "config"
    depth = 0

    def _where(self, mark) -> str:
        return f"{self.source}: line {mark.line + 1}" if mark is not None else self.source

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise GramTFError(f"{self._where(event.start_mark)}: YAML aliases (&/*) are not allowed in configs; "
                              "write the value out")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise GramTFError(f"{self._where(event.start_mark)}: nested deeper than {MAX_DEPTH} levels; "
                                  "a config is a few levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node, deep=False):
        # PyYAML's own scalar parsers crash on `2001-02-30`, `!!int 0b`, `!!int ` (IndexError), `!!float abc`
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, IndexError, TypeError) as exc:
            raise GramTFError(f"{self._where(node.start_mark)}: {short(node.value if isinstance(node.value, str) else node.tag)} "
                              f"cannot be read ({short(str(exc), 60)})") from None

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise GramTFError(f"{self._where(key_node.start_mark)}: YAML merge keys (<<) are not allowed in "
                                  "configs; write the keys out")
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: PyYAML's own error below
            if first is not None:
                raise GramTFError(f"{self._where(key_node.start_mark)}: duplicate key {short(key)} (first on "
                                  f"line {first}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, source: str):
    loader = _Loader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_FLOAT_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


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
        item = (typing.get_args(tp) or [None])[0]
        return [_coerce(v, item, key, source) for v in value] if item else value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise GramTFError(f"{source}: key '{key}' must be a mapping, got {type(value).__name__} {short(value)}")
        item = (typing.get_args(tp) or [None, str])[1]
        if dataclasses.is_dataclass(item):  # {name: section}; a string is the section's first key (a path)
            first = dataclasses.fields(item)[0].name
            out = {}
            for k, v in value.items():
                name = _coerce(k, str, key, source)
                out[name] = _build(item, {first: v} if isinstance(v, str) else v, source, f"{key}.{_shown(name)}.")
            return out
        return {_coerce(k, str, key, source): _coerce(v, str, f"{key}.{k}", source) for k, v in value.items()}
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
    raise GramTFError(f"{source}: key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {short(value)}")


def _build(cls, data: dict, source: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise GramTFError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got "
                          f"{type(data).__name__} {short(data)}")
    data = _renamed(data, prefix, source)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            shown = short(f"{prefix}{key}")
            hint = difflib.get_close_matches(str(key), names, n=1) if len(str(key)) <= MAX_NAME_CHARS else []
            did = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise GramTFError(f"{source}: unknown key {shown}{did}; valid keys: {', '.join(names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}", source)
    return cls(**kwargs)


def check_path(value: str, what: str) -> None:
    """A path the OS can take: no NUL (a ValueError deep in os), no component over NAME_MAX (OSError)."""
    if "\0" in value:
        raise GramTFError(f"{what} = {short(value)} contains a NUL character")
    longest = max(value.replace("\\", "/").split("/"), key=len)
    if len(longest) > MAX_COMPONENT_CHARS:
        raise GramTFError(f"{what} has a path component of {len(longest)} characters "
                          f"({short(longest, 40)}); the limit is {MAX_COMPONENT_CHARS}")


def check_name(name: str, what: str) -> None:
    """`name` becomes out/<name> and tflite_dir/<name>: one folder name, never '..' (E9) or '.' (E10)."""
    if (not name or len(name) > MAX_NAME_CHARS or name in (".", "..") or any(c in name for c in "/\\ ")
            or not name.isprintable()):
        raise GramTFError(f"{what} = {short(name)} must be one folder name: 1-{MAX_NAME_CHARS} characters, no '/', "
                          "'\\', spaces or control characters, not '.' or '..'; e.g. name=my_study")


def _validate(cfg: StudyConfig, source: str) -> None:
    for key, f, _ in _fields():
        value = get_value(cfg, key)
        if "choices" in f.metadata:
            check_choice(key, value, source)
        if "range" in f.metadata:
            f.metadata["range"].check(value, f"{source}: key '{key}'")
        if f.metadata.get("path") and value is not None:
            for v in value.values() if isinstance(value, dict) else [value]:
                check_path(v, f"{source}: key '{key}'")
    if cfg.data.group_pattern is not None:
        try:
            re.compile(cfg.data.group_pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            raise GramTFError(f"{source}: key 'data.group_pattern' is not a regular expression ({short(str(exc), 60)})") from None
    if cfg.data.val + cfg.data.test >= 0.9:
        raise GramTFError(f"{source}: data.val + data.test must leave at least 10% for training")
    if not cfg.backbones:
        raise GramTFError(f"{source}: key 'backbones' needs at least one backbone name")
    for key in ("backbones", "convert.variants", "convert.pruned_variants"):
        for item in get_value(cfg, key):
            if not isinstance(item, str) or not item.strip() or len(item) > MAX_NAME_CHARS:
                raise GramTFError(f"{source}: key '{key}' must list names, got {short(item)}; "
                                  f"e.g. --set '{key}=[name]'")
    unknown = sorted(set(cfg.backbone_weights) - set(cfg.backbones))
    if unknown:
        raise GramTFError(f"{source}: backbone_weights names {', '.join(unknown)[:MAX_VALUE_CHARS]}, which is not in 'backbones'")
    check_name(cfg.name, f"{source}: key 'name'")
    for name, ext in cfg.data.external.items():
        _validate_external(name, ext, source)


def _validate_external(name: str, ext: ExternalSet, source: str) -> None:
    """A set's name becomes a folder and the `dataset` column of its rows; it is a folder or a style."""
    where = f"{source}: key 'data.external.{_shown(name)}"
    check_name(name, f"{source}: a name in 'data.external'")
    for f in dataclasses.fields(ext):
        value = getattr(ext, f.name)
        if "range" in f.metadata:
            f.metadata["range"].check(value, f"{where}.{f.name}'")
        if f.metadata.get("path") and value is not None:
            check_path(value, f"{where}.{f.name}'")
    if (ext.dir is None) == (ext.synth_style is None):
        raise GramTFError(f"{where}' needs exactly one of 'dir' (an ImageFolder) or 'synth_style' (a synthetic "
                          f"rendering), e.g. data.external.{_shown(name)}.synth_style=faded")
    if ext.dir is not None and ext.synth_per_class is not None:
        raise GramTFError(f"{where}.synth_per_class' is for a synthetic set; a 'dir' set has the images it has")


def get_value(cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def parse_overrides(pairs) -> dict:
    """['train.epochs=3', 'backbones=[a,b]'] -> nested dict (values parsed as YAML, by the config loader)."""
    tree: dict = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise GramTFError(f"--set {short(pair)}: expected key=value, e.g. --set train.epochs=3")
        key, raw = pair.split("=", 1)
        key = key.strip()
        try:
            value = _load_yaml(raw, f"--set {short(key, 40)}") if raw.strip() else None
        except yaml.YAMLError as exc:
            why = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise GramTFError(f"--set {short(pair)}: value is not valid YAML ({short(why, 60)})") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GramTFError(f"--set {short(pair)}: '{short(part, 40)}' is set twice with different shapes")
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
        check_path(str(path), "config path")
        path = Path(path)
        source = str(path)
        if not path.is_file():  # also a FIFO or a device: reading one would block or never end
            raise GramTFError(f"config file {path} not found (or not a regular file); see configs/ for examples")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise GramTFError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few kB of YAML")
        try:
            loaded = _load_yaml(raw.decode("utf-8"), source) or {}
        except UnicodeDecodeError:
            raise GramTFError(f"{path}: not a text file (YAML config expected); see configs/ for examples") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            why = getattr(exc, "problem", None) or " ".join(str(exc).split())
            raise GramTFError(f"{path}:{where} is not valid YAML ({short(why, 60)}); "
                              "fix the syntax") from None
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
