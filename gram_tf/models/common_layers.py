"""Weight-free Keras-2 layers shared by gram_tf's own backbones (imported only when one is built or
loaded): the TF-MOT mixin that says "nothing here to prune", GELU and layer scale.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras


class NoPrune(tfmot.sparsity.keras.PrunableLayer):
    """Glue without weights (or with weights that are not kernels): TF-MOT wraps it, prunes nothing."""

    def get_prunable_weights(self):
        return []


@tf_keras.utils.register_keras_serializable("gram_tf")
class GELU(tf_keras.layers.Layer, NoPrune):
    """GELU, exact (erf) or tanh approximation: both become TFLite's GELU op and export to ONNX."""

    def __init__(self, approximate: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.approximate = approximate

    def call(self, x):
        if self.approximate:
            return tf.nn.gelu(x, approximate=True)
        # The erf form, not tf.nn.gelu(approximate=False): TF lowers that one to Erfc, which tf2onnx
        # cannot export. This form exports to ONNX as Erf, and TFLite still fuses it into GELU.
        return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))

    def get_config(self):
        return {**super().get_config(), "approximate": self.approximate}


@tf_keras.utils.register_keras_serializable("gram_tf")
class LayerScale(tf_keras.layers.Layer, NoPrune):
    """Per-channel learned scale of a residual branch (timm's layer_scale / gamma); not a kernel."""

    def __init__(self, init_value: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = init_value

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(int(input_shape[-1]),),
                                     initializer=tf_keras.initializers.Constant(self.init_value))
        super().build(input_shape)

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


CUSTOM_OBJECTS = {c.__name__: c for c in (GELU, LayerScale)}
