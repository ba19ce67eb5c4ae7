"""Weight-free Keras-2 layers shared by gram_tf's own backbones (imported only when one is built or
loaded): the TF-MOT mixin that says "nothing here to prune", and GELU.
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


CUSTOM_OBJECTS = {c.__name__: c for c in (GELU,)}
