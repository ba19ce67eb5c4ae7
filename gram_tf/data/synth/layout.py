"""Where the bacteria of one field lie and how they take up the stains; debris and precipitate."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .stamp import Cells
from .style import IS_ROD, SpecimenStyle


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


def layout_bacteria(rng, st: SpecimenStyle, coverage: float, clump_field) -> dict:
    """Geometry of all bacteria of one field (um); returns Cells arrays without stain weights."""
    fov = st.fov_um
    cells = Cells()
    w = np.asarray(st.morphology, dtype=np.float64)
    r0 = st.coccus_diam_um / 2
    ra, rb = st.rod_length_um / 2, st.rod_width_um / 2
    a_coccus = math.pi * r0 * r0
    a_rod = 4 * ra * rb - (4 - math.pi) * (st.rod_corner * rb) ** 2
    area_per_cell = np.where(IS_ROD, a_rod, a_coccus)
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


def stain_bacteria(rng, cells: dict, st: SpecimenStyle, positive: bool) -> None:
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


def add_spores(rng, cells: dict, st: SpecimenStyle) -> None:
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


def debris(rng, st: SpecimenStyle, cells: Cells) -> None:
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
