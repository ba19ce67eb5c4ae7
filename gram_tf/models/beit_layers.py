"""Keras-2 layers of the BEiT backbone (imported only when BEiT is built or loaded).

Like the ViT layers, every weighted projection is a plain Dense / Conv2D / LayerNormalization that
TF-MOT can prune and quantize. BEiT adds three things to a ViT block, each in a small NoPrune layer:

* the attention core adds a per-block relative position bias to the logits. The learned table
  ((2g-1)^2 + 3 rows, heads) is the layer's weight; the (tokens, tokens) index into it is a numpy
  constant computed from the grid, so once the model is frozen for export `table[index]` is a
  constant (heads, tokens, tokens) tensor the converter folds: no GATHER runs on device;
* layer scale (timm's `gamma_1`, `gamma_2`): a learned per-channel multiplier on each residual branch;
* pooling: the mean of the patch tokens (the class token excluded), before `fc_norm`.

The class token is vit_layers' ClassToken; BEiT has no absolute position embedding.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras

from .common_layers import GELU, LayerScale, NoPrune
from .vit_layers import ClassToken


def relative_position_index(grid: int) -> np.ndarray:
    """(g*g+1, g*g+1) int32 rows of the relative-position table for query i, key j (token 0 = class).

    Patch pairs use the offset (dy, dx) in [-(g-1), g-1]^2, stored row-major in a (2g-1, 2g-1)
    grid; the three extra rows at the end of the table are class->patch, patch->class, class->class.
    """
    side = 2 * grid - 1
    n_rel = side * side
    ys, xs = np.divmod(np.arange(grid * grid), grid)
    dy = ys[:, None] - ys[None, :] + grid - 1
    dx = xs[:, None] - xs[None, :] + grid - 1
    index = np.empty((grid * grid + 1,) * 2, np.int32)
    index[1:, 1:] = dy * side + dx
    index[0, 1:] = n_rel  # class token attending to a patch
    index[1:, 0] = n_rel + 1  # a patch attending to the class token
    index[0, 0] = n_rel + 2
    return index


def table_rows(grid: int) -> int:
    return (2 * grid - 1) ** 2 + 3


@tf_keras.utils.register_keras_serializable("gram_tf")
class RelPosSelfAttention(tf_keras.layers.Layer, NoPrune):
    """Multi-head attention core on a fused qkv tensor (B, T, 3D) -> (B, T, D), with BEiT's learned
    relative position bias added to the logits. Its only weight is the bias table (not a kernel)."""

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def build(self, input_shape):
        tokens = int(input_shape[1])
        grid = math.isqrt(tokens - 1)
        if grid * grid + 1 != tokens:
            raise ValueError(f"{self.name}: {tokens} tokens are not a square patch grid plus a class token")
        self.grid = grid
        self._index = relative_position_index(grid).reshape(-1)  # constant: folded at export
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table", shape=(table_rows(grid), self.num_heads),
            initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02))
        super().build(input_shape)

    def position_bias(self):
        """(heads, T, T) bias: table[index], a constant once the weights are frozen."""
        tokens = self.grid * self.grid + 1
        bias = tf.gather(self.relative_position_bias_table, tf.constant(self._index))
        return tf.transpose(tf.reshape(bias, [tokens, tokens, self.num_heads]), [2, 0, 1])

    def call(self, qkv):
        tokens, dim3 = int(qkv.shape[1]), int(qkv.shape[2])
        dim = dim3 // 3
        head_dim = dim // self.num_heads

        def heads(t):  # (B, T, D) -> (B, H, T, hd)
            return tf.transpose(tf.reshape(t, [-1, tokens, self.num_heads, head_dim]), [0, 2, 1, 3])

        # one SPLIT on the channel axis (see vit_layers.SelfAttention: no shrink-axis slices)
        q, k, v = (heads(t) for t in tf.split(qkv, 3, axis=-1))
        q = q * (head_dim ** -0.5)
        logits = tf.matmul(q, k, transpose_b=True) + self.position_bias()
        attn = tf.nn.softmax(logits, axis=-1)
        out = tf.transpose(tf.matmul(attn, v), [0, 2, 1, 3])
        return tf.reshape(out, [-1, tokens, dim])

    def count_macs(self) -> int:
        tokens, dim3 = int(self.input_shape[1]), int(self.input_shape[2])
        return 2 * tokens * tokens * (dim3 // 3)  # q.k^T and attn.v

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@tf_keras.utils.register_keras_serializable("gram_tf")
class PatchMeanPool(tf_keras.layers.Layer, NoPrune):
    """Mean of the patch tokens, the `n_prefix` leading (class) tokens excluded: (B, T, D) -> (B, D)."""

    def __init__(self, n_prefix: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.n_prefix = n_prefix

    def call(self, x):
        return tf.reduce_mean(x[:, self.n_prefix:], axis=1)

    def get_config(self):
        return {**super().get_config(), "n_prefix": self.n_prefix}


CUSTOM_OBJECTS = {c.__name__: c for c in (RelPosSelfAttention, PatchMeanPool)}


def beit_backbone(inp, dim: int, depth: int, heads: int, patch: int = 16, mlp_ratio: int = 4,
                  gelu: str = "erf", eps: float = 1e-6, init_values: float = 0.1):
    """Flat pre-norm BEiT on `inp`; returns fc_norm(mean of the patch tokens) (B, dim)."""
    L = tf_keras.layers
    size = int(inp.shape[1])
    grid = size // patch
    x = L.Conv2D(dim, patch, strides=patch, name="patch_embed")(inp)
    x = L.Reshape((grid * grid, dim), name="patch_tokens")(x)
    x = ClassToken(1, name="class_token")(x)
    for i in range(depth):
        y = L.LayerNormalization(epsilon=eps, name=f"block{i}_norm1")(x)
        # qkv bias = concat(q_bias, 0, v_bias), set by the importer (see beit.py)
        y = L.Dense(3 * dim, name=f"block{i}_qkv")(y)
        y = RelPosSelfAttention(heads, name=f"block{i}_attn")(y)
        y = L.Dense(dim, name=f"block{i}_proj")(y)
        y = LayerScale(init_values, name=f"block{i}_gamma1")(y)
        x = L.Add(name=f"block{i}_add1")([x, y])
        y = L.LayerNormalization(epsilon=eps, name=f"block{i}_norm2")(x)
        y = L.Dense(mlp_ratio * dim, name=f"block{i}_fc1")(y)
        y = GELU(approximate=(gelu == "tanh"), name=f"block{i}_gelu")(y)
        y = L.Dense(dim, name=f"block{i}_fc2")(y)
        y = LayerScale(init_values, name=f"block{i}_gamma2")(y)
        x = L.Add(name=f"block{i}_add2")([x, y])
    x = PatchMeanPool(1, name="patch_pool")(x)
    return L.LayerNormalization(epsilon=eps, name="fc_norm")(x)
