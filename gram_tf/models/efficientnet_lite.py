"""EfficientNet-Lite backbones (keras-cv 0.9, Keras-2 mode, built from explicit configs: its presets
need a hub download). Registers itself."""
from __future__ import annotations

from ..errors import GramTFError
from .registry import Backbone, register

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


