"""One micrograph: layout -> stain density maps -> Beer-Lambert -> optics -> illumination -> camera.

Beer-Lambert absorption turns the crystal violet (CV) and safranin (SAF) density maps into
transmittance. Defocus blur comes next; then an uneven illuminant (white balance, vignetting,
gradient) lights the result, and the camera adds a small colour shift, sensor noise and sometimes
JPEG softness. Cell borders get a dark rim and a faint bright halo (unsharp masking of the density).
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from ...errors import GramTFError
from .host import host_cells
from .layout import add_spores, debris, layout_bacteria, stain_bacteria
from .raster import blur, lowfreq, resize
from .stamp import Cells, stamp
from .style import SpecimenStyle, gram_is_positive


def check_size(size) -> int:
    """The image side in pixels, 16..4096 (config.data.synth_size declares the same range)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 16 <= size <= 4096:
        raise GramTFError(f"--size must be an integer from 16 to 4096 pixels, got {size!r}")
    return int(size)


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
    positive = gram_is_positive(gram)
    size = check_size(size)
    st = specimen if specimen is not None else \
        SpecimenStyle.sample(rng, "positive" if positive else "negative")
    ppu = size / st.fov_um

    # per-field variation around the specimen style
    coverage = st.coverage * float(np.exp(rng.normal(0, 0.35)))
    clump = lowfreq(rng, 16, 16, 3) if st.clumping >= 0.05 else None
    cells = layout_bacteria(rng, st, coverage, clump)
    stain_bacteria(rng, cells, st, positive)
    if st.spores > 0:
        add_spores(rng, cells, st)
    junk = Cells()
    debris(rng, st, junk)
    jd = junk.arrays()
    if len(jd["x"]):
        cells = {k: np.concatenate([cells[k], jd[k]]) for k in cells}
    soft = 0.42
    cv, saf, pad = stamp(cells, ppu, size, soft)
    host_cells(rng, st, size, ppu, pad, cv, saf)
    # refraction at cell borders: unsharp masking of the total density darkens the rim inside a
    # cell (in its own colour) and leaves a faint neutral bright halo outside it
    np.maximum(cv, 0, out=cv)
    np.maximum(saf, 0, out=saf)
    tot = (cv + saf).astype(np.float32)
    r_px = ppu * (st.coccus_diam_um / 2 if sum(st.morphology[:4]) > 0.5 else st.rod_width_um / 2)
    edge = tot - blur(tot, min(max(0.4 * r_px, 0.6), 8.0))
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
        hz = (0.4 * lowfreq(rng, lo, lo, 3) + 0.6 * lowfreq(rng, lo, lo, 9)) ** 1.5
        saf += st.haze * resize(hz, size, size)
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
    img = blur(img, sigma)

    # illumination: vignetting around an off-centre point, linear gradient, low-frequency blotches,
    # rarely a circular field stop; white balance + camera colour response as one 3x3 matrix
    c = (np.arange(lo, dtype=np.float32) + 0.5) / lo * 2 - 1
    vx, vy = rng.uniform(-0.35, 0.35, 2)
    g_ang = rng.uniform(0, 2 * np.pi)
    illum = 1 - st.vignette * 0.5 * ((c[None, :] - vx) ** 2 + (c[:, None] - vy) ** 2) \
        + st.gradient * (c[None, :] * math.cos(g_ang) + c[:, None] * math.sin(g_ang)) \
        + 0.03 * (lowfreq(rng, lo, lo, 2) - 0.5)
    if st.field_stop > 0:
        rr = np.sqrt((c[None, :] - vx * 0.3) ** 2 + (c[:, None] - vy * 0.3) ** 2)
        illum = illum * (0.03 + 0.97 / (1 + np.exp((rr - st.field_stop) * 40.0)))
    illum = resize(np.maximum(illum, 0.0) ** g, size, size)
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
