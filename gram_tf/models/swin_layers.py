"""Keras-2 layers of the Swin Transformer backbone (imported only when a Swin is built or loaded).

The residual stream stays NHWC (B, H, W, C), as in timm 1.0. Every weighted projection (patch
embedding, qkv, proj, fc1, fc2, patch-merging reduction) is a plain Conv2D or Dense that TF-MOT can
prune and quantize; the glue declares no prunable weights:

- `WindowPartition` / `WindowReverse`: the cyclic shift (two slices and a concat per axis, no ROLL
  op) and the window split (reshape, rank-4 transpose, reshape). Windows travel as (B, nW, N, C):
  one image per batch row, so Dense layers and MAC counts stay per image; every tensor is rank <= 5
  and every shape is static apart from the batch.
- `WindowAttention`: the attention core on the fused qkv of a window batch. It owns the relative
  position bias table ((2w-1)^2, heads), a trainable weight, and indexes it with a constant index;
  table and index are both constant in an exported graph, so the converter folds the lookup into a
  constant (heads, N, N) tensor (no GATHER runs). The shifted-window mask is a numpy constant
  (0 / -100, as timm) added to the logits.
- `PatchMerge`: the 2x2 neighbourhood concat as one SPACE_TO_DEPTH. Its channel order is (row,
  column, C), timm's is (column, row, C); the importer permutes the merge norm and reduction weights
  to match, so the model computes exactly timm's function.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from .common_layers import GELU, NoPrune


def relative_position_index(window: int) -> np.ndarray:
    """(N, N) index into the ((2w-1)^2, heads) bias table of the pair (query i, key j), N = w*w."""
    rows, cols = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), 0 .. 2w-2
    return (rel[0] * (2 * window - 1) + rel[1]).astype(np.int32)


MASK_VALUE = -100.0  # timm's; smaller ones measured no better (docs/transformers.md)


def shifted_window_mask(grid: int, window: int, shift: int, value: float = None) -> np.ndarray:
    """(nW, N, N) additive mask of a shifted-window block: 0 inside a region, `value` (timm: -100)
    across regions."""
    value = MASK_VALUE if value is None else value
    region = np.zeros((grid, grid), np.float32)
    bounds = ((0, grid - window), (grid - window, grid - shift), (grid - shift, grid))
    label = 0
    for r0, r1 in bounds:
        for c0, c1 in bounds:
            region[r0:r1, c0:c1] = label
            label += 1
    n = grid // window
    wins = region.reshape(n, window, n, window).transpose(0, 2, 1, 3).reshape(n * n, window * window)
    return np.where(wins[:, None, :] != wins[:, :, None], value, 0.0).astype(np.float32)


def _cyclic_shift(x, shift: int, size: int):
    """torch.roll(x, -shift) on axes 1 and 2 of (B, H, W, C), as slices + concat (no ROLL op)."""
    if shift % size == 0:
        return x
    s = shift % size
    x = tf.concat([x[:, s:], x[:, :s]], axis=1)
    return tf.concat([x[:, :, s:], x[:, :, :s]], axis=2)


@tf_keras.utils.register_keras_serializable("gram_tf")
class WindowPartition(tf_keras.layers.Layer, NoPrune):
    """(B, H, W, C) -> cyclic shift by -shift -> windows (B, nW, w * w, C), windows row-major."""

    def __init__(self, window: int, shift: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.window, self.shift = int(window), int(shift)

    def call(self, x):
        h, w, c = (int(d) for d in x.shape[1:])
        win = self.window
        x = _cyclic_shift(x, self.shift, h)
        x = tf.reshape(x, [-1, win, w // win, win * c])  # (B * H/w, row in window, W/w, w * C)
        x = tf.transpose(x, [0, 2, 1, 3])  # (B * H/w, W/w, row in window, w * C)
        return tf.reshape(x, [-1, (h // win) * (w // win), win * win, c])

    def get_config(self):
        return {**super().get_config(), "window": self.window, "shift": self.shift}


@tf_keras.utils.register_keras_serializable("gram_tf")
class WindowReverse(tf_keras.layers.Layer, NoPrune):
    """Windows (B, nW, w * w, C) -> (B, H, W, C), then the cyclic shift undone (+shift)."""

    def __init__(self, grid: int, window: int, shift: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.grid, self.window, self.shift = int(grid), int(window), int(shift)

    def call(self, x):
        c = int(x.shape[-1])
        g, win = self.grid, self.window
        x = tf.reshape(x, [-1, g // win, win, win * c])  # (B * H/w, W/w, row in window, w * C)
        x = tf.transpose(x, [0, 2, 1, 3])
        x = tf.reshape(x, [-1, g, g, c])
        return _cyclic_shift(x, -self.shift, g)

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "window": self.window, "shift": self.shift}


@tf_keras.utils.register_keras_serializable("gram_tf")
class WindowAttention(tf_keras.layers.Layer, NoPrune):
    """Multi-head attention inside each window, on the fused qkv (B, nW, N, 3C) -> (B, nW, N, C),
    with the relative position bias and, on shifted windows, the region mask. Its one weight, the
    relative position bias table, is not a kernel: nothing to prune."""

    def __init__(self, num_heads: int, grid: int, window: int, shift: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.grid, self.window, self.shift = int(num_heads), int(grid), int(window), int(shift)

    def build(self, input_shape):
        self.relative_position_bias_table = self.add_weight(
            name="relative_position_bias_table", shape=((2 * self.window - 1) ** 2, self.num_heads),
            initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02))
        super().build(input_shape)

    def relative_bias(self):
        """(heads, N, N) bias: a constant lookup of the table (folded away in an exported graph)."""
        n = self.window * self.window
        index = relative_position_index(self.window).reshape(-1)
        bias = tf.gather(self.relative_position_bias_table, tf.constant(index))  # (N*N, heads)
        return tf.transpose(tf.reshape(bias, [n, n, self.num_heads]), [2, 0, 1])

    def call(self, qkv):
        n_win, n, dim = int(qkv.shape[1]), int(qkv.shape[2]), int(qkv.shape[3]) // 3
        heads = self.num_heads
        head_dim = dim // heads

        def split_heads(t):  # (B, nW, N, C) -> (B*nW, heads, N, hd)
            return tf.transpose(tf.reshape(t, [-1, n, heads, head_dim]), [0, 2, 1, 3])

        q, k, v = (split_heads(t) for t in tf.split(qkv, 3, axis=-1))
        q = q * (head_dim ** -0.5)
        logits = tf.matmul(q, k, transpose_b=True) + self.relative_bias()
        if self.shift:
            mask = shifted_window_mask(self.grid, self.window, self.shift)[:, None]  # (nW, 1, N, N)
            logits = tf.reshape(tf.reshape(logits, [-1, n_win, heads, n, n]) + tf.constant(mask),
                                [-1, heads, n, n])
        attn = tf.nn.softmax(logits, axis=-1)
        out = tf.transpose(tf.matmul(attn, v), [0, 2, 1, 3])
        return tf.reshape(out, [-1, n_win, n, dim])

    def count_macs(self) -> int:
        n_win, n, dim = int(self.input_shape[1]), int(self.input_shape[2]), int(self.input_shape[3]) // 3
        return 2 * n_win * n * n * dim  # q.k^T and attn.v in every window

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "grid": self.grid,
                "window": self.window, "shift": self.shift}


@tf_keras.utils.register_keras_serializable("gram_tf")
class PatchMerge(tf_keras.layers.Layer, NoPrune):
    """(B, H, W, C) -> (B, H/2, W/2, 4C), each 2x2 neighbourhood's channels in (row, column, C) order."""

    def call(self, x):
        return tf.nn.space_to_depth(x, 2)


CUSTOM_OBJECTS = {c.__name__: c for c in (WindowPartition, WindowReverse, WindowAttention, PatchMerge, GELU)}


def stage_window(grid: int, window: int, shift: int) -> tuple[int, int]:
    """timm's rule: a stage whose grid fits in one window attends over the whole grid, unshifted."""
    if grid <= window:
        return grid, 0
    return window, shift


def swin_backbone(inp, embed: int, depths, heads, patch: int = 4, window: int = 7, mlp_ratio: int = 4,
                  gelu: str = "erf", eps: float = 1e-5):
    """Flat Swin on `inp`; returns the final normed feature map (B, H/32, W/32, 8 * embed)."""
    L = tf_keras.layers
    grid = int(inp.shape[1]) // patch
    x = L.Conv2D(embed, patch, strides=patch, name="patch_embed")(inp)
    x = L.LayerNormalization(epsilon=eps, name="patch_embed_norm")(x)
    dim = embed
    for s, (depth, n_heads) in enumerate(zip(depths, heads)):
        if s > 0:
            x = PatchMerge(name=f"stage{s}_merge")(x)
            x = L.LayerNormalization(epsilon=eps, name=f"stage{s}_merge_norm")(x)
            dim *= 2
            grid //= 2
            x = L.Dense(dim, use_bias=False, name=f"stage{s}_reduction")(x)
        for b in range(depth):
            win, shift = stage_window(grid, window, 0 if b % 2 == 0 else window // 2)
            p = f"stage{s}_block{b}"
            y = L.LayerNormalization(epsilon=eps, name=f"{p}_norm1")(x)
            y = WindowPartition(win, shift, name=f"{p}_partition")(y)
            y = L.Dense(3 * dim, name=f"{p}_qkv")(y)
            y = WindowAttention(n_heads, grid, win, shift, name=f"{p}_attn")(y)
            y = L.Dense(dim, name=f"{p}_proj")(y)
            y = WindowReverse(grid, win, shift, name=f"{p}_reverse")(y)
            x = L.Add(name=f"{p}_add1")([x, y])
            y = L.LayerNormalization(epsilon=eps, name=f"{p}_norm2")(x)
            y = L.Dense(mlp_ratio * dim, name=f"{p}_fc1")(y)
            y = GELU(approximate=(gelu == "tanh"), name=f"{p}_gelu")(y)
            y = L.Dense(dim, name=f"{p}_fc2")(y)
            x = L.Add(name=f"{p}_add2")([x, y])
    return L.LayerNormalization(epsilon=eps, name="norm")(x)
