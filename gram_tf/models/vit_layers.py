"""Keras-2 layers of the ViT/DeiT backbones (imported only when a transformer is built or loaded).

Every weighted projection is a plain Dense or Conv2D, which TF-MOT can prune and quantize; the
weight-free glue (token concat, position add, attention core, token pooling, GELU) lives in small
layers that declare no prunable weights. Shapes are static apart from the batch dimension, so a
batch-1 export is a fully static graph.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from .common_layers import GELU, NoPrune


@tf_keras.utils.register_keras_serializable("gram_tf")
class ClassToken(tf_keras.layers.Layer, NoPrune):
    """Prepends the class token (and DeiT's distillation token) to the patch tokens."""

    def __init__(self, n_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.n_tokens = n_tokens

    def build(self, input_shape):
        dim = int(input_shape[-1])
        init = tf_keras.initializers.TruncatedNormal(stddev=0.02)
        self.cls_token = self.add_weight(name="cls_token", shape=(1, 1, dim), initializer=init)
        self.dist_token = (self.add_weight(name="dist_token", shape=(1, 1, dim), initializer=init)
                           if self.n_tokens == 2 else None)
        super().build(input_shape)

    def call(self, x):
        batch = tf.shape(x)[0]
        tokens = [tf.tile(self.cls_token, [batch, 1, 1])]
        if self.dist_token is not None:
            tokens.append(tf.tile(self.dist_token, [batch, 1, 1]))
        return tf.concat(tokens + [x], axis=1)

    def get_config(self):
        return {**super().get_config(), "n_tokens": self.n_tokens}


@tf_keras.utils.register_keras_serializable("gram_tf")
class PositionEmbedding(tf_keras.layers.Layer, NoPrune):
    """Adds a learned position embedding (1, tokens, dim)."""

    def build(self, input_shape):
        self.pos_embed = self.add_weight(name="pos_embed", shape=(1, int(input_shape[1]), int(input_shape[2])),
                                         initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02))
        super().build(input_shape)

    def call(self, x):
        return x + self.pos_embed


@tf_keras.utils.register_keras_serializable("gram_tf")
class SelfAttention(tf_keras.layers.Layer, NoPrune):
    """Multi-head attention core on a fused qkv tensor (B, T, 3D) -> (B, T, D); no weights."""

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def call(self, qkv):
        tokens, dim3 = int(qkv.shape[1]), int(qkv.shape[2])
        dim = dim3 // 3
        head_dim = dim // self.num_heads
        # Split on the channel axis (one SPLIT op) instead of indexing a stacked (3, B, H, T, hd)
        # tensor: x[0] becomes a STRIDED_SLICE with a shrink mask, which XNNPACK does not take, and
        # those 37 fallbacks cost DeiT-tiny a quarter of its fp32 time (measured, gram_tf.profile).
        def heads(t):  # (B, T, D) -> (B, H, T, hd)
            return tf.transpose(tf.reshape(t, [-1, tokens, self.num_heads, head_dim]), [0, 2, 1, 3])

        q, k, v = (heads(t) for t in tf.split(qkv, 3, axis=-1))
        q = q * (head_dim ** -0.5)
        attn = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)
        out = tf.transpose(tf.matmul(attn, v), [0, 2, 1, 3])
        return tf.reshape(out, [-1, tokens, dim])

    def count_macs(self) -> int:
        tokens, dim3 = int(self.input_shape[1]), int(self.input_shape[2])
        return 2 * tokens * tokens * (dim3 // 3)  # q.k^T and attn.v

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


@tf_keras.utils.register_keras_serializable("gram_tf")
class TokenPool(tf_keras.layers.Layer, NoPrune):
    """The class token's features; with a distillation token, the mean of both (DeiT inference)."""

    def __init__(self, n_tokens: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.n_tokens = n_tokens

    def call(self, x):
        # x[:, :n] then mean/squeeze, not x[:, 0]: a shrink-axis STRIDED_SLICE (or a SLICE with a
        # -1 size) falls out of XNNPACK
        tokens = x[:, : self.n_tokens]
        return tf.reduce_mean(tokens, axis=1) if self.n_tokens == 2 else tf.squeeze(tokens, axis=1)

    def get_config(self):
        return {**super().get_config(), "n_tokens": self.n_tokens}


CUSTOM_OBJECTS = {c.__name__: c for c in (ClassToken, PositionEmbedding, SelfAttention, GELU, TokenPool)}


def vit_backbone(inp, dim: int, depth: int, heads: int, patch: int = 16, mlp_ratio: int = 4,
                 distilled: bool = False, gelu: str = "erf", eps: float = 1e-6):
    """Flat pre-norm ViT on `inp`; returns the pooled token features (B, dim)."""
    L = tf_keras.layers
    size = int(inp.shape[1])
    grid = size // patch
    x = L.Conv2D(dim, patch, strides=patch, name="patch_embed")(inp)
    x = L.Reshape((grid * grid, dim), name="patch_tokens")(x)
    n_tokens = 2 if distilled else 1
    x = ClassToken(n_tokens, name="class_token")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    for i in range(depth):
        y = L.LayerNormalization(epsilon=eps, name=f"block{i}_norm1")(x)
        y = L.Dense(3 * dim, name=f"block{i}_qkv")(y)
        y = SelfAttention(heads, name=f"block{i}_attn")(y)
        y = L.Dense(dim, name=f"block{i}_proj")(y)
        x = L.Add(name=f"block{i}_add1")([x, y])
        y = L.LayerNormalization(epsilon=eps, name=f"block{i}_norm2")(x)
        y = L.Dense(mlp_ratio * dim, name=f"block{i}_fc1")(y)
        y = GELU(approximate=(gelu == "tanh"), name=f"block{i}_gelu")(y)
        y = L.Dense(dim, name=f"block{i}_fc2")(y)
        x = L.Add(name=f"block{i}_add2")([x, y])
    x = L.LayerNormalization(epsilon=eps, name="norm")(x)
    return TokenPool(n_tokens, name="token_pool")(x)
