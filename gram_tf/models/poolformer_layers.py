"""Keras-2 layers of PoolFormer (imported only when one is built or loaded).

The 1x1 convolutions of the MLP are plain Conv2D (TF-MOT prunes and quantizes them); the pooling
token mixer, GroupNorm with one group and the layer scale hold no kernel and declare no prunable
weights.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from .common_layers import LayerScale, NoPrune


@tf_keras.utils.register_keras_serializable("gram_tf")
class GroupNorm1(tf_keras.layers.Layer, NoPrune):
    """GroupNorm with one group (PyTorch's GroupNorm(1, C)): statistics over H, W and C of each
    image, scale and shift per channel."""

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        centred = x - mean
        var = tf.reduce_mean(tf.square(centred), axis=[1, 2, 3], keepdims=True)
        return centred * tf.math.rsqrt(var + self.epsilon) * self.gamma + self.beta

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@tf_keras.utils.register_keras_serializable("gram_tf")
class PoolMixer(tf_keras.layers.Layer, NoPrune):
    """PoolFormer's token mixer: average pool (stride 1, padding excluded from the mean, as
    PyTorch's count_include_pad=False) minus the input.

    Computed as a depthwise convolution with a constant all-ones kernel times a constant map of
    1 / (pixels in each window), not as AVERAGE_POOL_2D: XNNPACK has no int8 average pool, so the
    pool op falls out of the delegate in every int8 model, while int8 DEPTHWISE_CONV_2D and MUL
    stay in it. Same function (float tolerance), no trainable weights.
    """

    def __init__(self, pool_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def build(self, input_shape):
        import numpy as np

        h, w, c = (int(d) for d in input_shape[1:])
        k = self.pool_size
        self._kernel = tf.constant(np.ones((k, k, c, 1), np.float32))
        ones = np.pad(np.ones((h, w), np.float32), k // 2)
        count = sum(ones[i:i + h, j:j + w] for i in range(k) for j in range(k))
        self._inverse_count = tf.constant((1.0 / count)[None, :, :, None].astype(np.float32))
        super().build(input_shape)

    def call(self, x):
        window_sum = tf.nn.depthwise_conv2d(x, self._kernel, [1, 1, 1, 1], "SAME")
        return window_sum * self._inverse_count - x

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


CUSTOM_OBJECTS = {c.__name__: c for c in (GroupNorm1, PoolMixer)}


def poolformer_backbone(inp, depths, dims, gelu: str = "erf", layer_scale: float = 1e-5, norm_first: bool = False):
    """PoolFormer (v1) on `inp`; returns the pre-logits features (B, dims[-1]): timm's global
    average pool then LayerNorm, or with `norm_first` Hugging Face's (and the original
    implementation's) GroupNorm on the map then average pool."""
    from .common_layers import GELU

    L = tf_keras.layers
    # PyTorch's Conv2d(k=7, s=4, padding=2): symmetric padding, then a valid convolution ('same'
    # would pad asymmetrically and shift every feature)
    x = L.ZeroPadding2D(2, name="stem_pad")(inp)
    x = L.Conv2D(dims[0], 7, strides=4, name="stem")(x)
    for s, (depth, dim) in enumerate(zip(depths, dims)):
        if s > 0:
            x = L.ZeroPadding2D(1, name=f"stage{s}_down_pad")(x)
            x = L.Conv2D(dim, 3, strides=2, name=f"stage{s}_down")(x)
        for b in range(depth):
            p = f"stage{s}_block{b}"
            y = GroupNorm1(name=f"{p}_norm1")(x)
            y = PoolMixer(3, name=f"{p}_mix")(y)
            y = LayerScale(layer_scale, name=f"{p}_ls1")(y)
            x = L.Add(name=f"{p}_add1")([x, y])
            y = GroupNorm1(name=f"{p}_norm2")(x)
            y = L.Conv2D(4 * dim, 1, name=f"{p}_fc1")(y)
            y = GELU(approximate=(gelu == "tanh"), name=f"{p}_gelu")(y)
            y = L.Conv2D(dim, 1, name=f"{p}_fc2")(y)
            y = LayerScale(layer_scale, name=f"{p}_ls2")(y)
            x = L.Add(name=f"{p}_add2")([x, y])
    if norm_first:
        x = GroupNorm1(name="features_norm")(x)
        return L.GlobalAveragePooling2D(name="features_pool")(x)
    x = L.GlobalAveragePooling2D(name="features_pool")(x)
    return L.LayerNormalization(epsilon=1e-6, name="features_norm")(x)
