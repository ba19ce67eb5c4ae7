"""Stamping primitives into the stain density maps.

Cells are analytic rounded-box SDFs (circle -> capsule -> boxcar rod, with an optional bend). They
are evaluated at pixel centres with a soft edge, which anti-aliases them without supersampling. All
cells of a field are stamped in a few vectorised batches grouped by patch size; ``np.bincount``
scatters the patches into the maps.
"""
from __future__ import annotations

import numpy as np


class Cells:
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


def stamp(cells: dict, ppu: float, size: int, soft: float):
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
