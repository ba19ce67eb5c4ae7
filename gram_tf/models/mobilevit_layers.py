"""Keras-2 layers of MobileViT (v1), imported only when one is built or loaded.

Convolutions, BatchNorms and the transformer's projections are plain Keras layers (TF-MOT prunes
and quantizes them). The unfold / fold between the feature map and the patch sequences and the
attention core are weight-free glue. Tokens are kept as (B, P, N, C): P = pixels per patch (the
separate sequences), N = patches (the tokens of each sequence), so every layer still sees one
image per batch row and Dense / MAC counting stay per image.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from .common_layers import NoPrune


@tf_keras.utils.register_keras_serializable("gram_tf")
class Unfold(tf_keras.layers.Layer, NoPrune):
    """(B, H, W, C) -> (B, ph*pw, H/ph * W/pw, C): pixel (i, j) of every patch forms one sequence."""

    def __init__(self, patch: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.patch = patch

    def call(self, x):
        h, w, c = (int(d) for d in x.shape[1:])
        p = self.patch
        x = tf.reshape(x, [-1, h // p, p, w // p, p, c])
        x = tf.transpose(x, [0, 2, 4, 1, 3, 5])
        return tf.reshape(x, [-1, p * p, (h // p) * (w // p), c])

    def get_config(self):
        return {**super().get_config(), "patch": self.patch}


@tf_keras.utils.register_keras_serializable("gram_tf")
class Fold(tf_keras.layers.Layer, NoPrune):
    """Inverse of Unfold: (B, ph*pw, N, C) -> (B, H, W, C)."""

    def __init__(self, patch: int = 2, height: int = 2, width: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.patch, self.height, self.width = patch, height, width

    def call(self, x):
        p, h, w = self.patch, self.height, self.width
        c = int(x.shape[-1])
        x = tf.reshape(x, [-1, p, p, h // p, w // p, c])
        x = tf.transpose(x, [0, 3, 1, 4, 2, 5])
        return tf.reshape(x, [-1, h, w, c])

    def get_config(self):
        return {**super().get_config(), "patch": self.patch, "height": self.height, "width": self.width}


@tf_keras.utils.register_keras_serializable("gram_tf")
class PatchAttention(tf_keras.layers.Layer, NoPrune):
    """Multi-head self-attention core on fused qkv (B, P, N, 3D) -> (B, P, N, D), each of the P
    sequences separately; no weights."""

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads

    def call(self, qkv):
        seqs, tokens, dim = int(qkv.shape[1]), int(qkv.shape[2]), int(qkv.shape[3]) // 3
        hd = dim // self.num_heads

        def heads(t):  # (B, P, N, D) -> (B*P, H, N, hd)
            return tf.transpose(tf.reshape(t, [-1, tokens, self.num_heads, hd]), [0, 2, 1, 3])

        # a channel SPLIT, not indexing a stacked tensor (a shrink STRIDED_SLICE leaves XNNPACK)
        q, k, v = (heads(t) for t in tf.split(qkv, 3, axis=-1))
        attn = tf.nn.softmax(tf.matmul(q * (hd ** -0.5), k, transpose_b=True), axis=-1)
        out = tf.transpose(tf.matmul(attn, v), [0, 2, 1, 3])
        return tf.reshape(out, [-1, seqs, tokens, dim])

    def count_macs(self) -> int:
        seqs, tokens, dim3 = (int(d) for d in self.input_shape[1:])
        return 2 * seqs * tokens * tokens * (dim3 // 3)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


CUSTOM_OBJECTS = {c.__name__: c for c in (Unfold, Fold, PatchAttention)}

BN_EPS = 1e-5  # PyTorch's BatchNorm2d default, which timm's checkpoints were trained with
LN_EPS = 1e-5  # nn.LayerNorm default (timm's MobileViT transformer)


def _conv_bn(x, filters, kernel, name, stride=1, act=True, depthwise=False):
    """timm ConvNormAct: conv (no bias) -> BatchNorm -> SiLU, PyTorch's symmetric padding."""
    L = tf_keras.layers
    pad = "same"
    if stride > 1:  # symmetric (k-1)//2, as PyTorch; TF's 'same' would pad only bottom/right
        x = L.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x)
        pad = "valid"
    if depthwise:
        x = L.DepthwiseConv2D(kernel, strides=stride, padding=pad, use_bias=False, name=f"{name}_conv")(x)
    else:
        x = L.Conv2D(filters, kernel, strides=stride, padding=pad, use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(epsilon=BN_EPS, name=f"{name}_bn")(x)
    return L.Activation("swish", name=f"{name}_act")(x) if act else x


def inverted_residual(x, out_chs, stride, mid, name):
    """timm's 'bottle' block with bottle_in / linear_out: 1x1 expand to `mid`, depthwise kxk, 1x1
    project; a residual only where the shape is kept (downsample='' drops it otherwise)."""
    in_chs = int(x.shape[-1])
    y = _conv_bn(x, mid, 1, f"{name}_expand")
    y = _conv_bn(y, mid, 3, f"{name}_dw", stride=stride, depthwise=True)
    y = _conv_bn(y, out_chs, 1, f"{name}_project", act=False)
    if stride == 1 and in_chs == out_chs:
        y = tf_keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def mobilevit_block(x, dim, depth, name, patch=2, heads=4, mlp_ratio=2.0):
    """Local 3x3 conv, 1x1 to the transformer width, unfold, pre-norm transformer blocks (SiLU MLP),
    norm, fold, 1x1 back, fuse with the input by a 3x3 conv on the concatenation."""
    L = tf_keras.layers
    h, w, chs = (int(d) for d in x.shape[1:])
    y = _conv_bn(x, chs, 3, f"{name}_local")
    y = L.Conv2D(dim, 1, use_bias=False, name=f"{name}_to_tokens")(y)
    t = Unfold(patch, name=f"{name}_unfold")(y)
    for i in range(depth):
        p = f"{name}_t{i}"
        u = L.LayerNormalization(epsilon=LN_EPS, name=f"{p}_norm1")(t)
        u = L.Dense(3 * dim, name=f"{p}_qkv")(u)
        u = PatchAttention(heads, name=f"{p}_attn")(u)
        u = L.Dense(dim, name=f"{p}_proj")(u)
        t = L.Add(name=f"{p}_add1")([t, u])
        u = L.LayerNormalization(epsilon=LN_EPS, name=f"{p}_norm2")(t)
        u = L.Dense(int(dim * mlp_ratio), name=f"{p}_fc1")(u)
        u = L.Activation("swish", name=f"{p}_act")(u)
        u = L.Dense(dim, name=f"{p}_fc2")(u)
        t = L.Add(name=f"{p}_add2")([t, u])
    t = L.LayerNormalization(epsilon=LN_EPS, name=f"{name}_norm")(t)
    y = Fold(patch, h, w, name=f"{name}_fold")(t)
    y = _conv_bn(y, chs, 1, f"{name}_proj")
    y = L.Concatenate(name=f"{name}_concat")([x, y])
    return _conv_bn(y, chs, 3, f"{name}_fusion")


def mobilevit_backbone(inp, spec: dict, round_channels):
    """MobileViT on `inp`: returns the final 1x1 conv's map (the classifier pools it: timm's
    pre-logits are that map's global average). `round_channels` is timm's make_divisible."""
    x = _conv_bn(inp, spec["stem"], 3, "stem", stride=2)
    for s, stage in enumerate(spec["stages"]):
        kind, chs, stride, ratio = stage[:4]
        blocks = stage[4] if kind == "ir" else 1
        for b in range(blocks):
            mid = round_channels(int(x.shape[-1]) * ratio)
            x = inverted_residual(x, chs, stride if b == 0 else 1, mid, f"s{s}b{b}")
        if kind == "mv":
            x = mobilevit_block(x, stage[4], stage[5], f"s{s}b1")
    return _conv_bn(x, spec["features"], 1, "final")
