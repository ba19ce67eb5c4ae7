"""Plain-numpy forward passes in PyTorch's NCHW layout, written from the papers and timm's module
definitions, to check our Keras ports against (no TensorFlow, no PyTorch)."""
from __future__ import annotations

import numpy as np
from scipy.special import erf


def conv2d(x, w, b=None, stride=1, padding=0, groups=1):
    """torch.nn.functional.conv2d on one image: x (C, H, W), w (O, C/groups, kh, kw)."""
    c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((o, oh, ow), np.float64)
    og = o // groups
    for g in range(groups):
        xs = x[g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i:i + stride * oh:stride, j:j + stride * ow:stride]  # (cg, oh, ow)
                out[g * og:(g + 1) * og] += np.einsum("chw,oc->ohw", patch, ws[:, :, i, j])
    if b is not None:
        out += b[:, None, None]
    return out


def batch_norm(x, t, prefix, eps=1e-5):
    mean, var = t[f"{prefix}.running_mean"], t[f"{prefix}.running_var"]
    return ((x - mean[:, None, None]) / np.sqrt(var[:, None, None] + eps) * t[f"{prefix}.weight"][:, None, None]
            + t[f"{prefix}.bias"][:, None, None])


def layer_norm(x, w, b, eps):
    """LayerNorm over the last axis."""
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def group_norm1(x, w, b, eps=1e-5):
    """GroupNorm(1, C) on (C, H, W)."""
    mu, var = x.mean(), x.var()
    return (x - mu) / np.sqrt(var + eps) * w[:, None, None] + b[:, None, None]


def avg_pool_exclude_pad(x, k=3):
    """AvgPool2d(k, stride 1, padding k//2, count_include_pad=False) on (C, H, W)."""
    p = k // 2
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    ones = np.pad(np.ones((h, w)), p)
    total = sum(xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k))
    count = sum(ones[i:i + h, j:j + w] for i in range(k) for j in range(k))
    return total / count


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def silu(x):
    return x / (1 + np.exp(-x))


def attention(x, qkv_w, qkv_b, proj_w, proj_b, heads, bias=None):
    """Multi-head self-attention on tokens (N, D) with a fused qkv linear (timm layout)."""
    n, d = x.shape
    hd = d // heads
    qkv = x @ qkv_w.T + qkv_b
    q, k, v = np.split(qkv, 3, axis=1)
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        a = q[:, sl] @ k[:, sl].T * hd ** -0.5
        if bias is not None:
            a = a + bias[h]
        a = np.exp(a - a.max(1, keepdims=True))
        outs.append((a / a.sum(1, keepdims=True)) @ v[:, sl])
    return np.concatenate(outs, 1) @ proj_w.T + proj_b
