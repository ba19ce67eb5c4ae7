"""Array helpers of the renderer: smooth random fields, resizing, Gaussian blur, soft edges."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] (bicubic upsampling of a coarse random grid)."""
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray(g).resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)


def resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    """Bilinear resize of a 2-D float array (PIL, mode F)."""
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    return np.asarray(im.resize((w, h), Image.BILINEAR), dtype=np.float32)


def _gauss_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur_direct(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian over the last two axes of a float32 array, reflected borders."""
    h, w = img.shape[-2:]
    k = _gauss_kernel(sigma)
    r = min(len(k) // 2, h - 1, w - 1)
    k = k[len(k) // 2 - r: len(k) // 2 + r + 1]
    k = k / k.sum()
    lead = [(0, 0)] * (img.ndim - 2)
    pad = np.pad(img, lead + [(r, r), (0, 0)], mode="reflect")
    out = k[0] * pad[..., 0:h, :]
    for i in range(1, 2 * r + 1):
        out += k[i] * pad[..., i:i + h, :]
    pad = np.pad(out, lead + [(0, 0), (r, r)], mode="reflect")
    out = k[0] * pad[..., 0:w]
    for i in range(1, 2 * r + 1):
        out += k[i] * pad[..., i:i + w]
    return out


def _upsample_axis(a: np.ndarray, n: int, k: int, axis: int) -> np.ndarray:
    src = np.clip((np.arange(n, dtype=np.float32) + 0.5) / k - 0.5, 0, a.shape[axis] - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
    f = (src - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n
    f = f.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - f) + np.take(a, i1, axis=axis) * f


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the last two axes ((H, W) or (C, H, W) float32), reflected borders.

    Large sigmas blur a k-times pooled copy and upsample it bilinearly (cost independent of sigma).
    """
    if sigma < 0.2:
        return img
    if sigma <= 2.5:
        return _blur_direct(img, sigma)
    h, w = img.shape[-2:]
    k = int(sigma / 1.25)
    hp, wp = -(-h // k) * k, -(-w // k) * k
    lead = img.shape[:-2]
    a = img
    if (hp, wp) != (h, w):
        a = np.pad(img, [(0, 0)] * len(lead) + [(0, hp - h), (0, wp - w)], mode="edge")
    small = a.reshape(*lead, hp // k, k, wp // k, k).mean(axis=(-3, -1), dtype=np.float32)
    small = _blur_direct(small, math.sqrt(max(sigma * sigma - k * k / 4.0, 0.25)) / k)
    up = _upsample_axis(_upsample_axis(small, h, k, img.ndim - 2), w, k, img.ndim - 1)
    return up.astype(np.float32, copy=False)


def soft_step(d: np.ndarray, soft: float) -> np.ndarray:
    """Smooth 1 -> 0 transition of a signed distance over about 4*soft pixels (cheap tanh)."""
    t = np.clip(0.5 - d * (0.25 / soft), 0.0, 1.0)
    return t * t * (3 - 2 * t)
