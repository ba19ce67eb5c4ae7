"""Backbone registry: every backbone gram_tf can build, with its preprocessing, size limits and the
file name of its ImageNet weights.

Models are built flat: one functional graph from the input image to the softmax, no model nested in
a model, so TF-MOT pruning and quantization-aware training can wrap every layer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..errors import GramTFError

# Preprocessing specs applied to 0..255 RGB pixels outside the model: (x - mean) / std after an
# optional RGB->BGR swap. They travel with every exported model.
PRE_TF = {"channel_order": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3}  # -> [-1, 1]
PRE_CAFFE = {"channel_order": "BGR", "mean": [103.939, 116.779, 123.68], "std": [1.0] * 3}
PRE_TORCH = {"channel_order": "RGB", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
PRE_RAW = {"channel_order": "RGB", "mean": [0.0] * 3, "std": [1.0] * 3}  # model rescales itself

WEIGHTS_ENV = "GRAM_TF_WEIGHTS_DIR"


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


_REGISTRY: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    if backbone.name in _REGISTRY:
        raise ValueError(f"backbone {backbone.name} registered twice")
    _REGISTRY[backbone.name] = backbone
    return backbone


def _apps():
    import tf_keras

    return tf_keras.applications


def _build_keras_app(bb: "Backbone", inp, options):
    fn = getattr(_apps(), bb.app)
    base = fn(include_top=False, weights=None, input_tensor=inp, **bb.app_kwargs)
    return base, base.output


def _keras_app(app: str, **app_kwargs) -> dict:
    return dict(app=app, app_kwargs=app_kwargs, build=_build_keras_app)


_ROWS = (224, 192, 160, 128)

for _alpha, _tag, _text in ((0.25, "025", "2_5"), (0.5, "050", "5_0"), (0.75, "075", "7_5"), (1.0, "100", "1_0")):
    register(Backbone(
        name=f"mobilenet_v1_{_tag}", family="MobileNet v1", default_size=224,
        **_keras_app("MobileNet", alpha=_alpha),
        imagenet_files=tuple(f"mobilenet_{_text}_{r}_tf_no_top.h5" for r in _ROWS),
        notes="the study's MobileNet" if _tag == "100" else "",
    ))

for _alpha, _tag in ((0.35, "035"), (0.5, "050"), (0.75, "075"), (1.0, "100"), (1.3, "130"), (1.4, "140")):
    register(Backbone(
        name=f"mobilenet_v2_{_tag}", family="MobileNetV2", default_size=224,
        **_keras_app("MobileNetV2", alpha=_alpha),
        imagenet_files=tuple(
            f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{_alpha}_{r}_no_top.h5" for r in _ROWS),
    ))

for _kind in ("small", "large"):
    register(Backbone(
        name=f"mobilenet_v3_{_kind}", family="MobileNetV3", default_size=224,
        **_keras_app(f"MobileNetV3{_kind.capitalize()}", include_preprocessing=True),
        preprocessing=dict(PRE_RAW),
        imagenet_files=(f"weights_mobilenet_v3_{_kind}_224_1.0_float_no_top_v2.h5",),
        notes="rescaling layer inside the model; hard-swish",
    ))

for _b, _size in ((0, 224), (1, 240), (2, 260), (3, 300)):
    register(Backbone(
        name=f"efficientnet_b{_b}", family="EfficientNet", default_size=_size,
        **_keras_app(f"EfficientNetB{_b}"), preprocessing=dict(PRE_RAW),
        imagenet_files=(f"efficientnetb{_b}_notop.h5",),
        notes="normalisation layers inside the model",
    ))

register(Backbone(
    name="efficientnet_v2_b0", family="EfficientNetV2", default_size=224,
    **_keras_app("EfficientNetV2B0", include_preprocessing=True), preprocessing=dict(PRE_RAW),
    imagenet_files=("efficientnetv2-b0_notop.h5",),
))
register(Backbone(
    name="resnet50", family="ResNet", default_size=224, **_keras_app("ResNet50"),
    preprocessing=dict(PRE_CAFFE),
    imagenet_files=("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",),
    notes="the study's ResNet50",
))
register(Backbone(
    name="resnet50_v2", family="ResNetV2", default_size=224, **_keras_app("ResNet50V2"),
    imagenet_files=("resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",),
))
register(Backbone(
    name="inception_v3", family="InceptionV3", default_size=299, min_size=75,
    **_keras_app("InceptionV3"),
    imagenet_files=("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",),
    notes="the study's InceptionV3",
))
register(Backbone(
    name="densenet121", family="DenseNet", default_size=224, **_keras_app("DenseNet121"),
    preprocessing=dict(PRE_TORCH),
    imagenet_files=("densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",),
))
register(Backbone(
    name="xception", family="Xception", default_size=299, min_size=71, **_keras_app("Xception"),
    imagenet_files=("xception_weights_tf_dim_ordering_tf_kernels_notop.h5",),
))
register(Backbone(
    name="convnext_tiny", family="ConvNeXt", default_size=224,
    **_keras_app("ConvNeXtTiny", include_preprocessing=True), preprocessing=dict(PRE_RAW),
    imagenet_files=("convnext_tiny_notop.h5",), notes="LayerNormalization stays float under QAT",
))

# EfficientNet-Lite (keras-cv, built from explicit configs: its presets need a hub download).
# Lite drops squeeze-excite and swish (ReLU6 instead) so that it quantizes well.
_LITE_STACK = dict(
    stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
    stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
    stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
    stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
    stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
    stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
)


def _lite(width: float, depth: float):
    def build(bb, inp, options):
        try:
            import keras_cv
        except ImportError:
            raise GramTFError(
                "EfficientNet-Lite backbones need keras-cv: pip install 'gram-tf[cv]'") from None
        base = keras_cv.models.EfficientNetLiteBackbone(
            include_rescaling=False, width_coefficient=width, depth_coefficient=depth,
            dropout_rate=0.0, drop_connect_rate=0.0, input_tensor=inp, **_LITE_STACK)
        return base, base.output

    return build


for _i, (_w, _d, _s) in enumerate(((1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260), (1.2, 1.4, 280), (1.4, 1.8, 300))):
    register(Backbone(
        name=f"efficientnet_lite{_i}", family="EfficientNet-Lite", default_size=_s,
        build=_lite(_w, _d), source="keras-cv", requires="keras_cv",
        notes="no Keras ImageNet file: --weights none or a weights file",
    ))


def _load_vit():
    from . import vit  # noqa: F401  (registers the transformers)


def list_backbones() -> list[Backbone]:
    _load_vit()
    return list(_REGISTRY.values())


def get_backbone(name: str) -> Backbone:
    _load_vit()
    if name not in _REGISTRY:
        import difflib

        hint = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        did = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise GramTFError(f"unknown backbone '{name}'{did}; 'gram-tf backbones' lists them all")
    return _REGISTRY[name]


def check_input_size(bb: Backbone, size: int) -> None:
    if size < bb.min_size:
        raise GramTFError(
            f"input size {size} px is below {bb.name}'s minimum of {bb.min_size} px; use --input-size {bb.min_size} or more")
    if bb.patch_size and size % bb.patch_size:
        raise GramTFError(
            f"input size {size} px is not a multiple of {bb.name}'s patch size {bb.patch_size}")


def weights_search_dirs(weights_dir=None) -> list[Path]:
    dirs = []
    for d in (weights_dir, os.environ.get(WEIGHTS_ENV)):
        if d:
            dirs.append(Path(d).expanduser())
    dirs.append(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models")
    return dirs


def resolve_weights(bb: Backbone, weights: Optional[str], weights_dir=None) -> Optional[Path]:
    """Map 'imagenet' | 'none' | a path to a weights file on disk (or None for random init)."""
    if weights is None or str(weights).lower() in ("none", "random", ""):
        return None
    if str(weights).lower() != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise GramTFError(f"weights file {path} not found; pass 'imagenet', 'none' or an existing file")
        return path
    if not bb.imagenet_files:
        raise GramTFError(
            f"backbone {bb.name} has no standard Keras ImageNet weights file; use --weights none or --weights FILE")
    dirs = weights_search_dirs(weights_dir)
    for d in dirs:
        for fname in bb.imagenet_files:
            if (d / fname).is_file():
                return d / fname
    return _download_imagenet(bb, dirs)


def _download_imagenet(bb: Backbone, dirs) -> Path:
    """Let Keras fetch the weights into its cache (~/.keras/models); offline this is a clear error."""
    fname = bb.imagenet_files[0]
    try:
        import tf_keras

        # Keras applications download on weights="imagenet"; build the backbone that way once.
        inp = tf_keras.Input((bb.default_size, bb.default_size, 3))
        getattr(tf_keras.applications, bb.app)(include_top=False, weights="imagenet", input_tensor=inp, **bb.app_kwargs)
    except Exception as exc:  # URLError, HTTP errors, no network
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise GramTFError(
            f"ImageNet weights for {bb.name} are not on this machine and could not be downloaded "
            f"({reason}); place {fname} in {dirs[0]} (or set {WEIGHTS_ENV} / weights_dir / --weights-dir)"
        ) from None
    for d in dirs:
        for f in bb.imagenet_files:
            if (d / f).is_file():
                return d / f
    raise GramTFError(f"Keras downloaded the weights for {bb.name} but {fname} is not in {dirs[-1]}")
