"""Keras-applications backbones (tf_keras.applications, built with weights=None and loaded from the
standard Keras ImageNet files). Registers itself."""
from __future__ import annotations

from .registry import PRE_CAFFE, PRE_RAW, PRE_TORCH, Backbone, register


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

