"""The variant table: every TFLite variant gram_tf can export, each row carrying its builder.

The table is the bottom floor of the convert wing and imports nothing above it: the converter
toolkit registers the plain converter variants, and the two mixed-precision strategies
(int8-selective, int8-fast) register themselves when the package face imports them, as model files
do in gram_tf.models. Code that converts looks a variant up here and calls its builder; nothing
switches on variant names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import GramTFError, did_you_mean


@dataclass
class BuildRequest:
    """What a builder gets: the Keras model and everything the conversion needs."""
    model: object
    size: int
    preprocessing: dict
    representative: Optional[np.ndarray] = None  # uint8 training images (integer variants)
    io_type: str = "int8"
    batch_size: int = 1
    validation: Optional[tuple] = None  # (uint8 images, label indices), for accuracy-guarded builders
    options: dict = field(default_factory=dict)  # builder-specific settings (from ConvertConfig)
    recipe: Optional[object] = None  # the Int8Recipe (convert.recipe) of a full-integer variant


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    integer: bool  # needs a representative dataset
    build: Callable  # build(BuildRequest) -> (tflite bytes, report dict or None)
    training: Optional[str] = None  # "qat" | "pqat": quantization-aware training first
    io_types: tuple = ("float32",)  # allowed IO types; the first is used when io_type does not apply
    needs_validation: bool = False  # the builder cannot work without validation images
    uses_validation: bool = False  # the builder measures accuracy on validation images when given
    report_key: Optional[str] = None  # manifest key of the builder's report ("fast", "selective")
    config_options: Optional[Callable] = None  # ConvertConfig -> the builder's options
    per_channel: Optional[bool] = None  # full-integer variant the int8 recipe applies to (its weight granularity)


VARIANTS: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    if variant.name in VARIANTS:
        raise ValueError(f"variant {variant.name} registered twice")
    VARIANTS[variant.name] = variant
    return variant


def variant_names() -> list[str]:
    """Every variant, in table order (the order reports list them in)."""
    return list(VARIANTS)


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise GramTFError(f"unknown variant '{name}'{did_you_mean(name, VARIANTS)}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name]
