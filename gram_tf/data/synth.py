"""Procedural synthetic Gram-stained micrographs: the built-in default dataset.

The renderer works like a bright-field microscope in miniature. Each field starts as two stain
optical-density maps, crystal violet (CV) and safranin (SAF). Bacteria, debris, stain
precipitate and host cells add density to these maps. Beer-Lambert absorption turns the maps into
transmittance. Defocus blur comes next; then an uneven illuminant (white balance, vignetting,
gradient) lights the result, and the camera adds a small colour shift, sensor noise and sometimes
JPEG softness. Cell borders get a dark rim and a faint bright halo (unsharp masking of the density).

Cells are analytic rounded-box SDFs (circle -> capsule -> boxcar rod, with an optional bend). They
are evaluated at pixel centres with a soft edge, which anti-aliases them without supersampling. All
cells of a field are stamped in a few vectorised batches grouped by patch size; ``np.bincount``
scatters the patches into the maps.

Images come in specimens. The fields of one specimen share a :class:`SpecimenStyle` (stain
strength, decolourisation, magnification, morphology mix, background tint, optics). On disk they
are ``<out>/<class>/<class>_s{specimen:04d}_f{field:02d}.png``, so the regex ``_s(\\d+)_`` finds
the specimen. Every file has its own RNG, seeded by ``SeedSequence([seed, class_index, specimen,
field])``. A file's bytes therefore do not depend on ``per_class`` or on which files already exist.
"""
from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from ..errors import GramTFError

CLASSES = ("gram_negative", "gram_positive")

# Cell arrangements; SpecimenStyle.morphology holds one weight per entry (fraction of cells).
ARRANGEMENTS = (
    "coccus",          # single cocci
    "diplococcus",     # pairs (kidney-bean Neisseria-like or lancet pneumococcus-like)
    "streptococcus",   # chains of cocci
    "staphylococcus",  # grape-like clusters
    "bacillus",        # single rods / coccobacilli
    "diplobacillus",   # rod pairs, end to end or V-shaped
    "streptobacillus",  # short chains of rods
    "palisade",        # rods side by side
)
_IS_ROD = np.array([False, False, False, False, True, True, True, True])

# Extra last SeedSequence word for the specimen-style stream. SeedSequence([a, b, c]) and
# SeedSequence([a, b, c, 0]) give the same state, so the style stream needs its own tag. The tag
# must also differ from any field index.
_STYLE_TAG = 0x53504543  # "SPEC"
_MAX_FIELDS = 100_000

# Stain optical density per unit density, for the R, G and B channels.
_CV_OD = np.array([1.10, 1.65, 0.42])   # crystal violet: absorbs red+green -> deep violet
_SAF_OD = np.array([0.13, 0.74, 0.22])  # safranin: absorbs green (+some blue) -> pink/red

_BG_TINTS = (  # (RGB gain, weight): illuminant / white balance families
    ((1.00, 0.98, 0.90), 0.30),   # warm halogen, cream background
    ((1.00, 1.00, 1.00), 0.25),   # neutral
    ((1.00, 0.95, 0.97), 0.17),   # faint pink
    ((0.94, 0.97, 1.00), 0.18),   # faint blue
    ((0.88, 0.85, 1.00), 0.10),   # lavender (phone-on-eyepiece look)
)


@dataclass
class SpecimenStyle:
    """What the fields of one specimen (slide) share. Lengths are in micrometres."""

    fov_um: float                 # field-of-view width: the magnification (px/um = size / fov_um)
    coccus_diam_um: float
    rod_width_um: float
    rod_length_um: float
    rod_corner: float             # end roundness of rods, 0.3 (square, boxcar) .. 1 (round)
    diplo_elong: float            # diplococcus cell extent along the pair axis / across (<1 kidney)
    size_jitter: float            # per-cell log-size standard deviation
    bend: float                   # rod curvature standard deviation (1/um)
    spores: float                 # fraction of rods showing an unstained endospore
    morphology: tuple             # weights over ARRANGEMENTS (fractions of cells)
    chain_len: float              # mean cells per chain
    cluster_size: float           # mean cocci per cluster
    coverage: float               # median fraction of the field covered by bacteria
    clumping: float               # 0 uniform .. 1 patchy spatial distribution
    decolourisation: float        # 0 under- .. 0.5 correct .. 1 over-decolourised
    cv_strength: float            # stain uptake multipliers
    saf_strength: float
    cv_od: tuple                  # jittered stain OD vectors (RGB)
    saf_od: tuple
    illuminant: tuple             # RGB gain incl. exposure: background colour
    vignette: float
    gradient: float
    haze: float                   # safranin-stained background smear (proteinaceous material)
    debris: float                 # faint specks per 100 um^2
    precipitate: float            # crystal-violet precipitate groups per 100 um^2
    host_cells: float             # expected host cells (neutrophils / epithelial) per field
    defocus_um: float
    rim: float                    # dark cell rim strength
    halo: float                   # bright refraction halo strength
    noise: float                  # sensor noise sigma (0..1 intensity scale)
    jpeg_quality: int             # 0 = no JPEG round trip
    hue_shift_deg: float
    saturation: float
    gamma: float
    field_stop: float             # 0 = none, else radius of the circular field stop (x half-width)

    # -- sampling ---------------------------------------------------------------------------------
    @classmethod
    def sample(cls, rng: np.random.Generator, gram: str) -> "SpecimenStyle":
        """Draw a random specimen style. Morphology and sizes lean towards what is typical for the
        Gram class, but every arrangement is possible for both classes."""
        positive = _gram_is_positive(gram)
        u = rng.uniform
        morph = np.zeros(len(ARRANGEMENTS))
        # cell dimensions (um)
        coccus_d = u(0.75, 1.2)
        if positive:
            p_cocci = 0.55
            cocci_types = (([0.20, 0.20, 0.05, 0.55], 0.45),   # staphylococcus-like
                           ([0.10, 0.25, 0.60, 0.05], 0.35),   # streptococcus-like
                           ([0.25, 0.60, 0.10, 0.05], 0.20))   # pneumococcus / enterococcus-like
            rod_types = (((0.9, 1.3), (3.0, 6.0), (0.25, 0.55), [0.35, 0.12, 0.45, 0.08], 0.4),
                         ((0.5, 0.8), (1.5, 3.5), (0.8, 1.0), [0.30, 0.30, 0.05, 0.35], 0.3),
                         ((0.6, 1.0), (2.0, 7.0), (0.6, 1.0), [0.50, 0.20, 0.25, 0.05], 0.3))
            diplo_elong = u(0.95, 1.35)
        else:
            p_cocci = 0.30
            cocci_types = (([0.25, 0.65, 0.05, 0.05], 0.60),   # Neisseria-like diplococci
                           ([0.50, 0.35, 0.10, 0.05], 0.25),   # Moraxella / Acinetobacter-like
                           ([0.30, 0.20, 0.10, 0.40], 0.15))   # Veillonella-like clumps
            rod_types = (((0.5, 0.8), (1.5, 3.0), (0.85, 1.0), [0.70, 0.20, 0.07, 0.03], 0.55),
                         ((0.4, 0.6), (0.8, 1.4), (0.9, 1.0), [0.60, 0.30, 0.07, 0.03], 0.25),
                         ((0.4, 0.7), (2.0, 5.0), (0.8, 1.0), [0.60, 0.20, 0.15, 0.05], 0.20))
            diplo_elong = u(0.7, 1.05)
            coccus_d *= 0.92
        tw = np.array([t[1] for t in cocci_types])
        cw = np.asarray(cocci_types[rng.choice(len(tw), p=tw / tw.sum())][0])
        rw = np.array([t[4] for t in rod_types])
        rt_i = int(rng.choice(len(rw), p=rw / rw.sum()))
        rt = rod_types[rt_i]
        spores = u(0.1, 0.6) if positive and rt_i != 1 and rng.random() < 0.35 else 0.0
        rod_w, rod_l, corner = u(*rt[0]), u(*rt[1]), u(*rt[2])
        rod_l = max(rod_l, rod_w * 1.3)
        cw = rng.dirichlet(cw * 25 + 0.05)
        rodw = rng.dirichlet(np.asarray(rt[3]) * 25 + 0.05)
        cocci_first = rng.random() < p_cocci
        minor = u(0.1, 0.3) if rng.random() < 0.22 else 0.0  # mixed morphology
        frac_cocci = (1 - minor) if cocci_first else minor
        morph[:4] = cw * frac_cocci
        morph[4:] = rodw * (1 - frac_cocci)
        morph = morph / morph.sum()

        tints = np.array([t[0] for t in _BG_TINTS])
        tw = np.array([t[1] for t in _BG_TINTS])
        tint = tints[rng.choice(len(tw), p=tw / tw.sum())] * np.exp(rng.normal(0, 0.015, 3))
        illuminant = tint / tint.max() * u(0.88, 0.94)

        cv_od = _CV_OD * np.exp(rng.normal(0, [0.08, 0.04, 0.10]))
        saf_od = _SAF_OD * np.exp(rng.normal(0, [0.15, 0.04, 0.12]))
        host = 0.0
        if rng.random() < 0.4:  # clinical smear rather than a culture
            host = float(np.exp(u(np.log(0.2), np.log(2.0))))
        return cls(
            fov_um=float(np.exp(u(np.log(18.0), np.log(60.0)))),
            coccus_diam_um=float(coccus_d),
            rod_width_um=float(rod_w),
            rod_length_um=float(rod_l),
            rod_corner=float(corner),
            diplo_elong=float(diplo_elong),
            size_jitter=float(u(0.06, 0.16)),
            bend=float(u(0.0, 0.04) if positive else u(0.0, 0.08)),
            spores=float(spores),
            morphology=tuple(float(m) for m in morph),
            chain_len=float(u(3.5, 12.0)),
            cluster_size=float(np.exp(u(np.log(5.0), np.log(35.0)))),
            coverage=float(np.exp(u(np.log(0.03), np.log(0.40)))),
            clumping=float(u(0.0, 1.0)),
            decolourisation=float(rng.beta(3.0, 3.0)),
            cv_strength=float(np.exp(rng.normal(0, 0.12))),
            saf_strength=float(np.exp(rng.normal(0, 0.18))),
            cv_od=tuple(float(v) for v in cv_od),
            saf_od=tuple(float(v) for v in saf_od),
            illuminant=tuple(float(v) for v in illuminant),
            vignette=float(u(0.02, 0.22)),
            gradient=float(u(0.0, 0.08)),
            haze=float(u(0.0, 0.07) if rng.random() < 0.5 else u(0.0, 0.015)),
            debris=float(np.exp(u(np.log(0.05), np.log(1.5)))),
            precipitate=float(0.0 if rng.random() < 0.6 else np.exp(u(np.log(0.01), np.log(0.25)))),
            host_cells=host,
            defocus_um=float(u(0.02, 0.11)),
            rim=float(u(0.8, 2.2)),
            halo=float(u(0.0, 0.1) if rng.random() < 0.4 else u(0.1, 0.35)),
            noise=float(np.exp(u(np.log(0.003), np.log(0.018)))),
            jpeg_quality=int(0 if rng.random() < 0.5 else rng.integers(55, 93)),
            hue_shift_deg=float(rng.normal(0, 4.0)),
            saturation=float(u(0.85, 1.2)),
            gamma=float(u(0.9, 1.1)),
            field_stop=float(u(1.05, 1.4) if rng.random() < 0.07 else 0.0),
        )

    # derived stain behaviour -------------------------------------------------------------------
    @property
    def over_decolourised_fraction(self) -> float:
        """Fraction of Gram-positive cells that lost most of their crystal violet."""
        return 0.03 + 0.5 * _smoothstep(0.6, 1.0, self.decolourisation)

    @property
    def cv_retained_negative(self) -> float:
        """Crystal violet that Gram-negative cells keep (under-decolourised smears)."""
        return 0.02 + 0.4 * _smoothstep(0.4, 0.0, self.decolourisation)


def _smoothstep(e0: float, e1: float, x: float) -> float:
    t = min(max((x - e0) / (e1 - e0), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _gram_is_positive(gram: str) -> bool:
    g = str(gram).lower().strip()
    if g in ("positive", "gram_positive", "pos", "+"):
        return True
    if g in ("negative", "gram_negative", "neg", "-"):
        return False
    raise GramTFError(f"gram must be 'positive' or 'negative', got {gram!r}")


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 4096:
        raise GramTFError(f"--size must be an integer from 16 to 4096 pixels, got {size!r}")
    return int(size)


# -- low-level helpers ----------------------------------------------------------------------------
def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] (bicubic upsampling of a coarse random grid)."""
    g = rng.random((cells + 1, cells + 1)).astype(np.float32)
    im = Image.fromarray(g).resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)


def _resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
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


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
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


def _soft_step(d: np.ndarray, soft: float) -> np.ndarray:
    """Smooth 1 -> 0 transition of a signed distance over about 4*soft pixels (cheap tanh)."""
    t = np.clip(0.5 - d * (0.25 / soft), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class _Cells:
    """Column store of primitives (all lengths in um until stamping)."""

    def __init__(self):
        self.cols = {k: [] for k in ("x", "y", "ang", "a", "b", "c", "bend", "wcv", "wsaf")}

    def add(self, **kw):
        n = len(np.atleast_1d(kw["x"]))
        for k, lst in self.cols.items():
            lst.append(np.broadcast_to(np.asarray(kw.get(k, 0.0), dtype=np.float64), (n,)))

    def arrays(self) -> dict:
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in self.cols.items()}


_BUCKETS = np.unique(np.round(1.25 ** np.arange(40)).astype(np.int64))  # patch half-sizes
_CHUNK = 16_000  # patch pixels per vectorised batch (keeps the temporaries cache-sized)


def _merge_patch_shapes(bx: np.ndarray, by: np.ndarray, circle: np.ndarray, waste: int = 4000):
    """Fold small groups of patch shapes into a larger shape when the extra pixels cost less than
    another round of numpy calls (about `waste` patch pixels)."""
    key = (bx * 1000 + by) * 2 + circle
    uk, counts = np.unique(key, return_counts=True)
    if len(uk) <= 1:
        return bx, by
    shapes = [(int(k) // 2000, (int(k) // 2) % 1000, int(k) % 2, int(n)) for k, n in zip(uk, counts)]
    area = lambda sx, sy: (2 * int(_BUCKETS[sx]) + 1) * (2 * int(_BUCKETS[sy]) + 1)  # noqa: E731
    shapes.sort(key=lambda t: -area(t[0], t[1]))
    kept, remap = [], {}
    for sx, sy, circ, n in shapes:
        best, best_cost = None, waste
        for j, (kx, ky, kc, _) in enumerate(kept):
            if kc == circ and kx >= sx and ky >= sy:
                cost = n * (area(kx, ky) - area(sx, sy))
                if cost < best_cost:
                    best, best_cost = j, cost
        if best is None:
            kept.append((sx, sy, circ, n))
            remap[(sx, sy, circ)] = (sx, sy)
        else:
            kx, ky, kc, kn = kept[best]
            kept[best] = (kx, ky, kc, kn + n)
            remap[(sx, sy, circ)] = (kx, ky)
    new = np.array([remap[(int(k) // 2000, (int(k) // 2) % 1000, int(k) % 2)] for k in uk])
    pos = np.searchsorted(uk, key)
    return new[pos, 0], new[pos, 1]


def _stamp(cells: dict, ppu: float, size: int, soft: float):
    """Render primitives into (cv, saf) density maps of shape (size+2*pad, size+2*pad).

    Every primitive is evaluated on its own axis-aligned patch; patches of the same (bucketed)
    shape are evaluated together and scattered with ``np.bincount``. Circles take a cheaper path.
    """
    x = cells["x"] * ppu
    y = cells["y"] * ppu
    a = np.maximum(cells["a"] * ppu, 0.25)
    b = np.maximum(cells["b"] * ppu, 0.25)
    c = np.minimum(np.maximum(cells["c"] * ppu, 0.0), np.minimum(a, b))
    bend = cells["bend"] / ppu
    ca, sa = np.cos(cells["ang"]), np.sin(cells["ang"])
    margin = np.abs(bend) * a * a + 2 * soft + 0.7
    ex = np.abs(a * ca) + np.abs(b * sa) + margin
    ey = np.abs(a * sa) + np.abs(b * ca) + margin
    keep = (x > -ex) & (x < size + ex) & (y > -ey) & (y < size + ey)
    if not keep.all():
        x, y, a, b, c, bend, ca, sa, ex, ey = (
            v[keep] for v in (x, y, a, b, c, bend, ca, sa, ex, ey))
        cells = {k: v[keep] for k, v in cells.items()}
    circle = (a == b) & (b == c) & (bend == 0)
    top = len(_BUCKETS) - 1
    bx = np.minimum(np.searchsorted(_BUCKETS, np.ceil(ex)), top)
    by = np.minimum(np.searchsorted(_BUCKETS, np.ceil(ey)), top)
    # a kept centre lies within ex of the image and its patch reaches R beyond that
    pad = int(max((_BUCKETS[bx] + np.ceil(ex)).max(), (_BUCKETS[by] + np.ceil(ey)).max())) + 2 \
        if len(x) else 2
    W = size + 2 * pad
    n_px = W * W
    cv = np.zeros(n_px)
    saf = np.zeros(n_px)
    f32 = np.float32
    ix_all = np.floor(x).astype(np.int64)
    iy_all = np.floor(y).astype(np.int64)
    bx, by = _merge_patch_shapes(bx, by, circle)
    order = np.lexsort((iy_all, circle, by, bx))  # by patch shape, then top to bottom
    key = (bx[order] * 1000 + by[order]) * 2 + circle[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    k_soft = f32(0.25 / soft)
    for grp in (np.split(order, cuts) if len(order) else []):
        Rx, Ry = int(_BUCKETS[bx[grp[0]]]), int(_BUCKETS[by[grp[0]]])
        is_circle = bool(circle[grp[0]])
        offx = np.arange(-Rx, Rx + 1, dtype=f32)
        offy = np.arange(-Ry, Ry + 1, dtype=f32)
        patch_off = (np.arange(-Ry, Ry + 1)[:, None] * W + np.arange(-Rx, Rx + 1)[None, :]).ravel()
        npx = len(patch_off)
        step = max(1, _CHUNK // npx)
        for s in range(0, len(grp), step):
            idx = grp[s:s + step]
            ix, iy = ix_all[idx], iy_all[idx]
            dx = (ix - x[idx] + 0.5).astype(f32)[:, None, None] + offx[None, None, :]
            dy = (iy - y[idx] + 0.5).astype(f32)[:, None, None] + offy[None, :, None]
            if is_circle:
                d = dx * dx + dy * dy
                np.sqrt(d, out=d)
                d -= c[idx].astype(f32)[:, None, None]
            else:
                co = ca[idx].astype(f32)[:, None, None]
                si = sa[idx].astype(f32)[:, None, None]
                u = dx * co + dy * si
                v = dy * co - dx * si
                bd = bend[idx]
                if np.any(bd != 0):
                    v -= bd.astype(f32)[:, None, None] * u * u
                cc = c[idx].astype(f32)[:, None, None]
                qx = np.abs(u, out=u)
                qx -= a[idx].astype(f32)[:, None, None] - cc
                qy = np.abs(v, out=v)
                qy -= b[idx].astype(f32)[:, None, None] - cc
                d = np.maximum(qx, qy)
                np.minimum(d, 0, out=d)
                d -= cc
                np.maximum(qx, 0, out=qx)
                np.maximum(qy, 0, out=qy)
                qx *= qx
                qy *= qy
                qx += qy
                d += np.sqrt(qx, out=qx)
            # soft inside -> outside step over ~4*soft px: smoothstep of a clipped ramp
            d *= -k_soft
            d += 0.5
            t = np.clip(d, 0.0, 1.0, out=d)
            prof = t * t
            t *= -2
            t += 3
            prof *= t
            base = (iy + pad) * W + ix + pad
            flat = (base[:, None] + patch_off[None, :]).ravel()
            lo = int(flat.min())
            hi = int(flat.max()) + 1
            flat -= lo
            prof = prof.reshape(len(idx), npx)
            cv[lo:hi] += np.bincount(flat, (prof * cells["wcv"][idx].astype(f32)[:, None]).ravel(), hi - lo)
            saf[lo:hi] += np.bincount(flat, (prof * cells["wsaf"][idx].astype(f32)[:, None]).ravel(), hi - lo)
    shape = (W, W)
    return cv.reshape(shape), saf.reshape(shape), pad


# -- bacteria layout ------------------------------------------------------------------------------
def _centers(rng, n: int, fov: float, clump_field: Optional[np.ndarray], clumping: float):
    """n group centres (um), uniform or following a patchy density field."""
    margin = 0.04 * fov
    if n <= 0:
        return np.zeros(0), np.zeros(0)
    if clump_field is None or clumping < 0.05:
        return rng.uniform(-margin, fov + margin, n), rng.uniform(-margin, fov + margin, n)
    g = clump_field.shape[0]
    p = clump_field.ravel().astype(np.float64) ** (1 + 5 * clumping)
    p /= p.sum()
    cell = rng.choice(g * g, size=n, p=p)
    cy, cx = np.divmod(cell, g)
    span = fov + 2 * margin
    xs = (cx + rng.random(n)) / g * span - margin
    ys = (cy + rng.random(n)) / g * span - margin
    return xs, ys


def _seg_cumsum(vals: np.ndarray, starts: np.ndarray, exclusive: bool = False) -> np.ndarray:
    """Cumulative sum restarting at each group start (groups are contiguous)."""
    cs = np.cumsum(vals, axis=0)
    base = np.repeat(cs[starts] - vals[starts], np.diff(np.append(starts, len(vals))), axis=0)
    out = cs - base
    return out - vals if exclusive else out


def _group_index(counts: np.ndarray):
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    gid = np.repeat(np.arange(len(counts)), counts)
    return starts, gid


_HEX = None


def _hex_lattice(rmax: int = 7) -> np.ndarray:
    global _HEX
    if _HEX is None:
        j, i = np.mgrid[-rmax:rmax + 1, -rmax:rmax + 1]
        pts = np.stack([i + 0.5 * (j % 2), j * math.sqrt(3) / 2], -1).reshape(-1, 2)
        pts = pts - pts[np.argmin(np.hypot(pts[:, 0], pts[:, 1]))]
        _HEX = pts[np.hypot(pts[:, 0], pts[:, 1]) <= rmax]
    return _HEX


def _layout_bacteria(rng, st: SpecimenStyle, coverage: float, clump_field) -> dict:
    """Geometry of all bacteria of one field (um); returns _Cells arrays without stain weights."""
    fov = st.fov_um
    cells = _Cells()
    w = np.asarray(st.morphology, dtype=np.float64)
    r0 = st.coccus_diam_um / 2
    ra, rb = st.rod_length_um / 2, st.rod_width_um / 2
    a_coccus = math.pi * r0 * r0
    a_rod = 4 * ra * rb - (4 - math.pi) * (st.rod_corner * rb) ** 2
    area_per_cell = np.where(_IS_ROD, a_rod, a_coccus)
    n_cells = coverage * fov * fov / float((w * area_per_cell).sum())
    n_cells = min(max(n_cells, 4.0), 3000.0)
    cells_per_group = np.array([1, 2, st.chain_len, st.cluster_size * 1.1, 1, 2,
                                max(2.0, st.chain_len * 0.5), 4.5])
    groups = rng.poisson(n_cells * w / cells_per_group)
    jit = st.size_jitter

    def centers(n):
        return _centers(rng, n, fov, clump_field, st.clumping)

    def cocci_r(n):
        return r0 * np.exp(rng.normal(0, jit, n))

    # single cocci
    n = groups[0]
    if n:
        x, y = centers(n)
        r = cocci_r(n)
        cells.add(x=x, y=y, ang=0.0, a=r, b=r, c=r)  # exact circles take the fast path
    # diplococci
    n = groups[1]
    if n:
        x, y = centers(n)
        phi = rng.uniform(0, 2 * np.pi, n)
        r = cocci_r(n)
        ha, hb = r * st.diplo_elong, r * (1.0 if st.diplo_elong >= 1 else 1.05)
        gap = rng.uniform(0.02, 0.12, n) * r0
        dx, dy = np.cos(phi) * (ha + gap / 2), np.sin(phi) * (ha + gap / 2)
        corner = np.minimum(ha, hb) * (0.95 if st.diplo_elong >= 1 else 0.75)
        for sgn in (-1, 1):
            cells.add(x=x + sgn * dx, y=y + sgn * dy, ang=phi + rng.normal(0, 0.08, n), a=ha, b=hb,
                      c=corner)
    # chains of cocci
    n = groups[2]
    if n:
        counts = 2 + rng.poisson(max(st.chain_len - 2, 0.5), n)
        starts, gid = _group_index(counts)
        tot = counts.sum()
        phi0 = rng.uniform(0, 2 * np.pi, n)
        turn = rng.normal(0, 0.22, tot)
        turn[starts] = 0
        phi = phi0[gid] + _seg_cumsum(turn, starts)
        r = cocci_r(tot)
        along = r * rng.uniform(0.82, 0.95)
        k = np.arange(tot) - starts[gid]
        step = 2 * along * (0.97 + 0.10 * (k % 2))
        vec = np.stack([np.cos(phi) * step, np.sin(phi) * step], -1)
        pos = _seg_cumsum(vec, starts, exclusive=True)
        mean = np.add.reduceat(pos, starts, axis=0) / counts[:, None]
        x, y = centers(n)
        pos = pos - mean[gid] + np.stack([x, y], -1)[gid]
        cells.add(x=pos[:, 0], y=pos[:, 1], ang=phi, a=along, b=r, c=np.minimum(along, r))
    # clusters (grape-like)
    n = groups[3]
    if n:
        hexp = _hex_lattice()
        L = len(hexp)
        m = np.clip(np.exp(rng.normal(np.log(st.cluster_size), 0.5, n)), 3, 120)
        R = np.sqrt(m / (1.155 * math.pi))
        th = np.arctan2(hexp[:, 1], hexp[:, 0])[None, :]
        rr = np.hypot(hexp[:, 0], hexp[:, 1])[None, :]
        harm = 1 + rng.uniform(0, 0.3, (n, 1)) * np.cos(2 * th + rng.uniform(0, 6.3, (n, 1))) \
            + rng.uniform(0, 0.25, (n, 1)) * np.cos(3 * th + rng.uniform(0, 6.3, (n, 1)))
        inside = rr < R[:, None] * harm + rng.uniform(-0.6, 0.6, (n, L))
        inside &= rng.random((n, L)) > 0.12
        inside[:, 0] = True
        # a second, partial layer on top (piled cells look darker)
        top = (rr < 0.65 * R[:, None] * harm) & (rng.random((n, L)) < rng.uniform(0, 0.6, (n, 1)))
        gi, li = np.nonzero(inside)
        gt, lt = np.nonzero(top)
        gid = np.concatenate([gi, gt])
        pts = np.concatenate([hexp[li], hexp[lt] + np.array([0.5, 0.2887])])
        pts = pts + rng.normal(0, 0.07, pts.shape)
        r = cocci_r(len(gid))
        scale = 2 * r0 * 0.93
        ang = rng.uniform(0, 2 * np.pi, n)[gid]
        px = (pts[:, 0] * np.cos(ang) - pts[:, 1] * np.sin(ang)) * scale
        py = (pts[:, 0] * np.sin(ang) + pts[:, 1] * np.cos(ang)) * scale
        x, y = centers(n)
        cells.add(x=x[gid] + px, y=y[gid] + py, ang=0.0, a=r, b=r, c=r)

    def rod_dims(n):
        la = ra * np.exp(rng.normal(0, jit * 1.5, n))
        lb = rb * np.exp(rng.normal(0, jit * 0.6, n))
        la = np.maximum(la, lb * 1.05)
        return la, lb, lb * np.clip(st.rod_corner + rng.normal(0, 0.05, n), 0.2, 1.0), \
            rng.normal(0, st.bend, n)

    # single rods
    n = groups[4]
    if n:
        x, y = centers(n)
        la, lb, lc, bd = rod_dims(n)
        cells.add(x=x, y=y, ang=rng.uniform(0, 2 * np.pi, n), a=la, b=lb, c=lc, bend=bd)
    # rod pairs (end to end, often at an angle: V / L shapes)
    n = groups[5]
    if n:
        x, y = centers(n)
        phi = rng.uniform(0, 2 * np.pi, n)
        delta = rng.normal(0, 0.5, n) * (rng.random(n) < 0.6)
        gap = rng.uniform(0.03, 0.12, n)
        for sgn in (-1, 1):
            la, lb, lc, bd = rod_dims(n)
            d = phi + sgn * delta / 2
            off = la + gap / 2
            cells.add(x=x + sgn * np.cos(d) * off, y=y + sgn * np.sin(d) * off, ang=d, a=la, b=lb,
                      c=lc, bend=bd)
    # chains of rods
    n = groups[6]
    if n:
        counts = 2 + rng.poisson(max(st.chain_len * 0.5 - 2, 0.5), n)
        starts, gid = _group_index(counts)
        tot = counts.sum()
        turn = rng.normal(0, 0.12, tot)
        turn[starts] = 0
        phi = rng.uniform(0, 2 * np.pi, n)[gid] + _seg_cumsum(turn, starts)
        la, lb, lc, bd = rod_dims(tot)
        step = 2 * la + rng.uniform(0.03, 0.15, tot)
        vec = np.stack([np.cos(phi) * step, np.sin(phi) * step], -1)
        pos = _seg_cumsum(vec, starts, exclusive=True)
        pos += np.stack([np.cos(phi), np.sin(phi)], -1) * la[:, None]
        mean = np.add.reduceat(pos, starts, axis=0) / counts[:, None]
        x, y = centers(n)
        pos = pos - mean[gid] + np.stack([x, y], -1)[gid]
        cells.add(x=pos[:, 0], y=pos[:, 1], ang=phi, a=la, b=lb, c=lc, bend=bd * 0.5)
    # palisades
    n = groups[7]
    if n:
        counts = rng.integers(3, 8, n)
        starts, gid = _group_index(counts)
        tot = counts.sum()
        k = (np.arange(tot) - starts[gid]) - (counts[gid] - 1) / 2
        phi = rng.uniform(0, 2 * np.pi, n)[gid]
        la, lb, lc, bd = rod_dims(tot)
        along = k * 0 + rng.normal(0, 0.25, tot) * la
        across = k * 2 * rb * rng.uniform(1.05, 1.3, tot)
        x, y = centers(n)
        ang = phi + rng.normal(0, 0.07, tot)
        cells.add(x=x[gid] + np.cos(phi) * along - np.sin(phi) * across,
                  y=y[gid] + np.sin(phi) * along + np.cos(phi) * across,
                  ang=ang, a=la, b=lb, c=lc, bend=bd * 0.3)
    return cells.arrays()


def _stain_bacteria(rng, cells: dict, st: SpecimenStyle, positive: bool) -> None:
    n = len(cells["x"])
    if n == 0:
        return
    thick = np.clip(np.sqrt(2 * cells["b"] / 0.8), 0.65, 1.35)  # thin cells absorb less
    if positive:
        wcv = st.cv_strength * np.exp(rng.normal(0, 0.12, n))
        over = rng.random(n) < st.over_decolourised_fraction
        wcv[over] *= rng.uniform(0.08, 0.5, over.sum())
        wsaf = st.saf_strength * rng.uniform(0.45, 0.85, n)
    else:
        wsaf = st.saf_strength * np.exp(rng.normal(0, 0.15, n))
        wcv = st.cv_retained_negative * st.cv_strength * np.exp(rng.normal(0, 0.35, n))
    cells["wcv"] = wcv * thick
    cells["wsaf"] = wsaf * thick


def _add_spores(rng, cells: dict, st: SpecimenStyle) -> None:
    """Endospores: oval unstained gaps (negative density) inside some rods, central to terminal."""
    rod = np.flatnonzero((cells["a"] > 1.6 * cells["b"]) & (rng.random(len(cells["a"])) < st.spores))
    if len(rod) == 0:
        return
    a, b, ang = cells["a"][rod], cells["b"][rod], cells["ang"][rod]
    pos = rng.choice([0.0, 0.55, 1.0], len(rod), p=[0.4, 0.3, 0.3]) * rng.choice([-1, 1], len(rod))
    sa = b * rng.uniform(0.75, 1.0, len(rod))  # half-length along the rod
    t = pos * (a - sa - 0.05 * b)
    new = {
        "x": cells["x"][rod] + np.cos(ang) * t, "y": cells["y"][rod] + np.sin(ang) * t, "ang": ang,
        "a": sa, "b": b * 0.62, "bend": np.zeros(len(rod)),
        "wcv": -0.85 * cells["wcv"][rod], "wsaf": -0.85 * cells["wsaf"][rod],
    }
    new["c"] = np.minimum(new["a"], new["b"])
    for k in cells:
        cells[k] = np.concatenate([cells[k], new[k]])


def _debris(rng, st: SpecimenStyle, cells: _Cells) -> None:
    fov = st.fov_um
    area = fov * fov / 100.0
    # faint irregular specks: 1-4 tiny blobs each
    n = rng.poisson(st.debris * area)
    if n:
        counts = rng.integers(1, 5, n)
        gid = np.repeat(np.arange(n), counts)
        tot = len(gid)
        x, y = rng.uniform(0, fov, n), rng.uniform(0, fov, n)
        sz = np.exp(rng.normal(np.log(0.25), 0.45, n))[gid]
        a = sz * rng.uniform(0.5, 1.3, tot)
        b = sz * rng.uniform(0.3, 1.0, tot)
        purple = (rng.random(n) < 0.35)[gid]
        strength = rng.uniform(0.1, 0.55, n)[gid]
        cells.add(x=x[gid] + rng.normal(0, 1, tot) * sz, y=y[gid] + rng.normal(0, 1, tot) * sz,
                  ang=rng.uniform(0, np.pi, tot), a=a, b=b,
                  c=np.minimum(a, b) * rng.uniform(0.3, 1, tot),
                  wcv=np.where(purple, strength * 0.7, strength * 0.08),
                  wsaf=np.where(purple, 0.2, 1.0) * strength)
    # crystal-violet precipitate: dark angular crystals / needles in small groups
    n = rng.poisson(st.precipitate * area)
    if n:
        counts = rng.integers(1, 7, n)
        gid = np.repeat(np.arange(n), counts)
        tot = len(gid)
        x, y = rng.uniform(0, fov, n), rng.uniform(0, fov, n)
        a = np.exp(rng.normal(np.log(0.22), 0.45, tot))
        b = a * rng.uniform(0.12, 0.5, tot)
        cells.add(x=x[gid] + rng.normal(0, 0.5, tot), y=y[gid] + rng.normal(0, 0.5, tot),
                  ang=rng.uniform(0, np.pi, tot), a=a, b=b, c=b * 0.25,
                  wcv=rng.uniform(0.8, 2.0, tot) * st.cv_strength, wsaf=0.1)


def _seg_dist(X, Y, p0, p1):
    """Distance from grid points to the segment p0-p1."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    L2 = vx * vx + vy * vy + 1e-9
    t = np.clip(((X - p0[0]) * vx + (Y - p0[1]) * vy) / L2, 0.0, 1.0)
    ex = X - p0[0] - t * vx
    ey = Y - p0[1] - t * vy
    return np.sqrt(ex * ex + ey * ey)


def _host_cells(rng, st: SpecimenStyle, size: int, ppu: float, pad: int, cv: np.ndarray,
                saf: np.ndarray) -> None:
    """Pale pink host cells, added in place: neutrophils with a lobed nucleus, squamous epithelial
    cells. They are smooth, so big ones are evaluated on a coarse grid and upsampled."""
    n = rng.poisson(st.host_cells)
    for _ in range(n):
        neut = rng.random() < 0.7
        R = (rng.uniform(5.0, 6.8) if neut else rng.uniform(14.0, 28.0)) * ppu
        cx, cy = rng.uniform(-0.1, 1.1, 2) * size
        ext = 1.3 * R + 3
        x0, x1 = int(max(0, cx - ext)), int(min(size, cx + ext + 1))
        y0, y1 = int(max(0, cy - ext)), int(min(size, cy + ext + 1))
        amps = rng.uniform(0, 0.05 if neut else 0.09, 4) * np.exp(1j * rng.uniform(0, 2 * np.pi, 4))
        cyto_d = rng.uniform(0.10, 0.22) if neut else rng.uniform(0.05, 0.12)
        nuc_d = rng.uniform(0.45, 0.8) if neut else rng.uniform(0.35, 0.6)
        n_lobes = int(rng.integers(2, 6))
        lobe = rng.uniform(size=(n_lobes, 3))
        arc0, arc_r = rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.42) * R
        nuc_off = rng.normal(0, 0.15, 2) * R
        nuc_r = rng.uniform(2.2, 3.5) * ppu
        if x1 <= x0 or y1 <= y0:
            continue
        f = max(1, int(R // 24))
        gw, gh = -(-(x1 - x0) // f), -(-(y1 - y0) // f)
        X = (x0 + (np.arange(gw, dtype=np.float32) + 0.5) * f - cx)[None, :]
        Y = (y0 + (np.arange(gh, dtype=np.float32) + 0.5) * f - cy)[:, None]
        rr = np.sqrt(X * X + Y * Y)
        z = (X + 1j * Y) / np.maximum(rr, 1e-3)
        edge = np.ones((gh, gw), np.float32)
        zk = z
        for k in range(4 if not neut else 2):
            zk = zk * z  # z^(k+2)
            edge += (amps[k] * zk).real.astype(np.float32)
        soft = max(0.5, 0.15 * ppu, 0.6 * f)
        mask = _soft_step(rr - R * edge, soft)
        tex = _lowfreq(rng, gh, gw, max(3, int(2 * R / ppu / 1.5))) - 0.5  # ~1.5 um granules
        if neut:
            nuc = np.zeros((gh, gw), np.float32)
            centres = []
            for j in range(n_lobes):
                aj = arc0 + (j - (n_lobes - 1) / 2) * (0.7 + 0.4 * lobe[j, 0])
                c = (math.cos(aj) * arc_r, math.sin(aj) * arc_r)
                centres.append(c)
                lr = (0.16 + 0.08 * lobe[j, 1]) * R
                nuc = np.maximum(nuc, _soft_step(np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2) - lr, soft))
            for c0, c1 in zip(centres[:-1], centres[1:]):  # thin chromatin strands between lobes
                nuc = np.maximum(nuc, _soft_step(_seg_dist(X, Y, c0, c1) - 0.05 * R, soft))
            nuc *= nuc_d * (1 + 0.25 * tex)
            s_map = cyto_d * mask * (1 + 0.6 * tex) + nuc
            c_map = nuc * (0.06 + 0.7 * st.cv_retained_negative)
        else:
            nuc = _soft_step(np.sqrt((X - nuc_off[0]) ** 2 + (Y - nuc_off[1]) ** 2) - nuc_r, soft)
            s_map = cyto_d * mask * (1 + 0.9 * tex) + nuc * nuc_d
            c_map = nuc * (0.03 + 0.1 * st.cv_retained_negative)
        if f > 1:
            s_map = _resize(s_map, gw * f, gh * f)
            c_map = _resize(c_map, gw * f, gh * f)
        w, h = x1 - x0, y1 - y0
        saf[y0 + pad:y1 + pad, x0 + pad:x1 + pad] += s_map[:h, :w]
        cv[y0 + pad:y1 + pad, x0 + pad:x1 + pad] += c_map[:h, :w]


def _colour_matrix(hue_deg: float, sat: float) -> np.ndarray:
    """Hue rotation about the grey axis followed by a saturation change."""
    t = math.radians(hue_deg)
    k = np.ones((3, 3)) / 3.0
    kx = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
    rot = math.cos(t) * np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * k
    S = k + sat * (np.eye(3) - k)
    return (S @ rot).astype(np.float32)


# -- public API -----------------------------------------------------------------------------------
def render_micrograph(rng: np.random.Generator, gram: str, size: int = 256,
                      specimen: "SpecimenStyle | None" = None) -> Image.Image:
    """One RGB size x size image; gram is 'positive' or 'negative'."""
    positive = _gram_is_positive(gram)
    size = _check_size(size)
    st = specimen if specimen is not None else \
        SpecimenStyle.sample(rng, "positive" if positive else "negative")
    ppu = size / st.fov_um

    # per-field variation around the specimen style
    coverage = st.coverage * float(np.exp(rng.normal(0, 0.35)))
    clump = _lowfreq(rng, 16, 16, 3) if st.clumping >= 0.05 else None
    cells = _layout_bacteria(rng, st, coverage, clump)
    _stain_bacteria(rng, cells, st, positive)
    if st.spores > 0:
        _add_spores(rng, cells, st)
    junk = _Cells()
    _debris(rng, st, junk)
    jd = junk.arrays()
    if len(jd["x"]):
        cells = {k: np.concatenate([cells[k], jd[k]]) for k in cells}
    soft = 0.42
    cv, saf, pad = _stamp(cells, ppu, size, soft)
    _host_cells(rng, st, size, ppu, pad, cv, saf)
    # refraction at cell borders: unsharp masking of the total density darkens the rim inside a
    # cell (in its own colour) and leaves a faint neutral bright halo outside it
    np.maximum(cv, 0, out=cv)
    np.maximum(saf, 0, out=saf)
    tot = (cv + saf).astype(np.float32)
    r_px = ppu * (st.coccus_diam_um / 2 if sum(st.morphology[:4]) > 0.5 else st.rod_width_um / 2)
    edge = tot - _blur(tot, min(max(0.4 * r_px, 0.6), 8.0))
    sl = slice(pad, pad + size)
    edge = edge[sl, sl]
    tot = tot[sl, sl]
    gain = np.maximum(edge, 0) * np.float32(st.rim)
    gain /= tot + np.float32(0.05)
    gain += 1
    cv = cv[sl, sl].astype(np.float32) * gain
    saf = saf[sl, sl].astype(np.float32) * gain
    halo = np.minimum(edge, 0) * np.float32(st.halo)  # <= 0: a neutral brightening

    # background smear haze (safranin-stained protein) with a little mottling; smooth fields are
    # made at a quarter of the resolution and upsampled
    lo = max(4, size // 4)
    if st.haze > 0:
        hz = (0.4 * _lowfreq(rng, lo, lo, 3) + 0.6 * _lowfreq(rng, lo, lo, 9)) ** 1.5
        saf += st.haze * _resize(hz, size, size)
    # soft saturation of very dense (overlapping) regions; camera gamma folded into the density
    dmax = np.float32(2.6)
    g = np.float32(st.gamma)
    cv *= g / (1 + cv / dmax)
    saf *= g / (1 + saf / dmax)
    np.maximum(halo, -0.2, out=halo)
    halo *= g
    cvo, sfo = np.asarray(st.cv_od, np.float32), np.asarray(st.saf_od, np.float32)
    img = np.empty((3, size, size), np.float32)  # channel-first: long inner loops
    for ch in range(3):
        o = img[ch]
        np.multiply(cv, -cvo[ch], out=o)
        o -= saf * sfo[ch]
        o -= halo
    np.exp(img, out=img)

    # optics: defocus blur
    sigma = math.hypot(0.35, st.defocus_um * rng.uniform(0.8, 1.25) * ppu)
    img = _blur(img, sigma)

    # illumination: vignetting around an off-centre point, linear gradient, low-frequency blotches,
    # rarely a circular field stop; white balance + camera colour response as one 3x3 matrix
    c = (np.arange(lo, dtype=np.float32) + 0.5) / lo * 2 - 1
    vx, vy = rng.uniform(-0.35, 0.35, 2)
    g_ang = rng.uniform(0, 2 * np.pi)
    illum = 1 - st.vignette * 0.5 * ((c[None, :] - vx) ** 2 + (c[:, None] - vy) ** 2) \
        + st.gradient * (c[None, :] * math.cos(g_ang) + c[:, None] * math.sin(g_ang)) \
        + 0.03 * (_lowfreq(rng, lo, lo, 2) - 0.5)
    if st.field_stop > 0:
        rr = np.sqrt((c[None, :] - vx * 0.3) ** 2 + (c[:, None] - vy * 0.3) ** 2)
        illum = illum * (0.03 + 0.97 / (1 + np.exp((rr - st.field_stop) * 40.0)))
    illum = _resize(np.maximum(illum, 0.0) ** g, size, size)
    M = _colour_matrix(st.hue_shift_deg, st.saturation) * (np.asarray(st.illuminant, np.float32) ** g)
    mixed = np.empty_like(img)
    for ch in range(3):  # plain loops: BLAS would spin up threads for a 3x3 product
        o = mixed[ch]
        np.multiply(img[0], np.float32(M[ch, 0]), out=o)
        o += img[1] * np.float32(M[ch, 1])
        o += img[2] * np.float32(M[ch, 2])
        o *= illum
    img = mixed

    # sensor noise (signal-dependent), quantisation, optional JPEG round trip
    np.clip(img, 0, 1, out=img)
    noise = np.frombuffer(rng.bytes(img.size), dtype=np.uint8).reshape(img.shape).astype(np.float32)
    noise -= 127.5
    noise *= np.float32(st.noise / 73.9)  # unit-variance uniform noise times sigma
    noise *= np.sqrt(img) * np.float32(0.6) + np.float32(0.4)
    img += noise
    np.clip(img, 0, 1, out=img)
    img *= 255
    img += 0.5
    q = img.astype(np.uint8)
    out = Image.merge("RGB", [Image.fromarray(q[ch]) for ch in range(3)])
    if st.jpeg_quality:
        buf = io.BytesIO()
        out.save(buf, format="JPEG", quality=int(st.jpeg_quality))
        buf.seek(0)
        out = Image.open(buf).convert("RGB")
    return out


def _specimen_style(seed: int, class_index: int, specimen: int, gram: str) -> SpecimenStyle:
    rng = np.random.default_rng(np.random.SeedSequence([seed, class_index, specimen, _STYLE_TAG]))
    return SpecimenStyle.sample(rng, gram)


def field_rng(seed: int, class_index: int, specimen: int, field: int) -> np.random.Generator:
    """The RNG of one image: independent of per_class and of the other files."""
    return np.random.default_rng(np.random.SeedSequence([seed, class_index, specimen, field]))


def synthesize_dataset(out_dir, per_class: int, size: int = 256, seed: int = 0,
                       fields_per_specimen: int = 4, progress: bool = True) -> dict:
    """Write out_dir/<class>/<file>.png for both classes; return a summary dict
    {"out_dir": str, "classes": {name: count}, "size": size, "seed": seed, "n_written": int,
    "n_skipped": int}."""
    def _int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not _int(per_class) or per_class < 1:
        raise GramTFError(f"--per-class must be an integer >= 1, got {per_class!r}")
    size = _check_size(size)
    if not _int(seed) or seed < 0:
        raise GramTFError(f"--seed must be an integer >= 0, got {seed!r}")
    if not _int(fields_per_specimen) or not 1 <= fields_per_specimen <= _MAX_FIELDS:
        raise GramTFError(f"fields_per_specimen must be an integer from 1 to {_MAX_FIELDS}, "
                          f"got {fields_per_specimen!r}")
    per_class, seed, fps = int(per_class), int(seed), int(fields_per_specimen)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GramTFError(f"output path {str(out)!r} exists and is not a directory; pick another OUT")
    try:
        for name in CLASSES:
            (out / name).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GramTFError(f"cannot create output directory {str(out)!r}: {exc.strerror or exc}") from None
    # left-overs of an interrupted run
    tmp_re = re.compile(r"^gram_(positive|negative)_s\d+_f\d+\.tmp\.png$")
    for name in CLASSES:
        for p in (out / name).iterdir():
            if tmp_re.match(p.name):
                try:
                    p.unlink()
                except OSError:
                    pass

    jobs = [(ci, name, i) for ci, name in enumerate(CLASSES) for i in range(per_class)]
    it = jobs
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(jobs, desc="synth", unit="img")
            it = bar
        except ImportError:  # pragma: no cover
            pass
    written = skipped = 0
    styles: dict = {}
    try:
        for ci, name, i in it:
            sp, f = divmod(i, fps)
            path = out / name / f"{name}_s{sp:04d}_f{f:02d}.png"
            if path.exists():
                skipped += 1
                continue
            gram = name.split("_", 1)[1]
            key = (ci, sp)
            if key not in styles:
                styles.clear()  # fields of a specimen are consecutive
                styles[key] = _specimen_style(seed, ci, sp, gram)
            img = render_micrograph(field_rng(seed, ci, sp, f), gram, size, styles[key])
            tmp = path.with_name(path.stem + ".tmp.png")
            try:
                img.save(tmp, format="PNG", compress_level=2)  # fast; noise compresses poorly anyway
                os.replace(tmp, path)
            except BaseException:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise
            written += 1
    except OSError as exc:
        raise GramTFError(f"cannot write images under {str(out)!r}: {exc.strerror or exc}") from None
    finally:
        if bar is not None:
            bar.close()
    return {"out_dir": str(out), "classes": {name: per_class for name in CLASSES}, "size": size,
            "seed": seed, "n_written": written, "n_skipped": skipped}


__all__ = ["CLASSES", "ARRANGEMENTS", "SpecimenStyle", "render_micrograph", "synthesize_dataset",
           "field_rng"]
