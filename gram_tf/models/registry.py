"""Backbone registry: every backbone gram_tf can build, with its preprocessing, size limits, the
file name of its ImageNet weights, and its parameter and MAC counts (data, checked against a build
by tests/test_registry.py, so listing the catalogue never builds a model).

The registry imports no model file: model files (keras_apps, efficientnet_lite, vit) register
themselves, and the package face imports them, as timm does.

Models are built flat: one functional graph from the input image to the softmax, no model nested in
a model, so TF-MOT pruning and quantization-aware training can wrap every layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from ..config import GELU_FORMS
from ..errors import GramTFError, did_you_mean
from .sizes import SIZES

# Preprocessing specs applied to 0..255 RGB pixels outside the model: (x - mean) / std after an
# optional RGB->BGR swap. They travel with every exported model.
PRE_TF = {"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}  # -> [-1, 1]
PRE_CAFFE = {"channel_order": "BGR", "mean": [103.939, 116.779, 123.68], "std": [1.0] * 3}
PRE_TORCH = {"channel_order": "RGB", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
PRE_RAW = {"channel_order": "RGB", "mean": [0.0] * 3, "std": [1.0] * 3}  # model rescales itself

@dataclass(frozen=True)
class Backbone:
    name: str
    family: str
    build: Callable  # build(input_tensor, options) -> feature tensor (4-D map or 2-D vector)
    default_size: int
    min_size: int = 32
    preprocessing: dict = field(default_factory=lambda: dict(PRE_TF))
    imagenet_files: tuple = ()  # standard Keras cache names, best first
    source: str = "keras.applications"
    requires: Optional[str] = None  # optional package needed (keras_cv)
    patch_size: Optional[int] = None  # transformers: the input size must be a multiple of it
    notes: str = ""
    app: Optional[str] = None  # tf_keras.applications constructor, for the Keras download path
    app_kwargs: dict = field(default_factory=dict)
    params: Optional[int] = None  # at default_size with a 2-class head (registered data)
    macs: Optional[int] = None


_REGISTRY: dict[str, Backbone] = {}
# modules that define gram_tf's own Keras layers (each has CUSTOM_OBJECTS); imported only when a
# model is loaded or cloned, since they import TensorFlow
_LAYER_MODULES: list[str] = ["gram_tf.models.common_layers"]


def register_layer_module(module: str) -> None:
    """A model file names the module of its custom layers, so loading a saved model finds them."""
    if module not in _LAYER_MODULES:
        _LAYER_MODULES.append(module)


def layer_modules() -> list[str]:
    return list(_LAYER_MODULES)


def gelu_choice(options: dict) -> str:
    """The transformers' GELU option (train.gelu): one of config.GELU_FORMS, the first by default."""
    gelu = options.get("gelu") or GELU_FORMS[0]
    if gelu not in GELU_FORMS:
        raise GramTFError(f"gelu must be one of {', '.join(GELU_FORMS)}, got {gelu!r}")
    return gelu


def register(backbone: Backbone) -> Backbone:
    """Add a backbone; its params/MACs come from `sizes.SIZES` unless given."""
    if backbone.name in _REGISTRY:
        raise ValueError(f"backbone {backbone.name} registered twice")
    measured = SIZES.get(backbone.name, {})
    if backbone.params is None and measured:
        backbone = replace(backbone, params=measured["params"], macs=measured["macs"])
    _REGISTRY[backbone.name] = backbone
    return backbone


def list_backbones() -> list[Backbone]:
    return list(_REGISTRY.values())


def get_backbone(name: str) -> Backbone:
    if name not in _REGISTRY:
        raise GramTFError(f"unknown backbone '{name}'{did_you_mean(name, _REGISTRY, 3)}; 'gram-tf backbones' lists them all")
    return _REGISTRY[name]


def check_input_size(bb: Backbone, size: int) -> None:
    if size < bb.min_size:
        raise GramTFError(
            f"input size {size} px is below {bb.name}'s minimum of {bb.min_size} px; use --input-size {bb.min_size} or more")
    if bb.patch_size and size % bb.patch_size:
        raise GramTFError(
            f"input size {size} px is not a multiple of {bb.patch_size} px, which {bb.name} needs "
            f"(its patch grid); use --input-size {max(bb.min_size, size // bb.patch_size * bb.patch_size)}")
