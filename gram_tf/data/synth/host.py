"""Host cells: pale pink neutrophils and squamous epithelial cells, drawn straight into the maps."""
from __future__ import annotations

import math

import numpy as np

from .raster import lowfreq, resize, soft_step
from .style import SpecimenStyle


def _seg_dist(X, Y, p0, p1):
    """Distance from grid points to the segment p0-p1."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    L2 = vx * vx + vy * vy + 1e-9
    t = np.clip(((X - p0[0]) * vx + (Y - p0[1]) * vy) / L2, 0.0, 1.0)
    ex = X - p0[0] - t * vx
    ey = Y - p0[1] - t * vy
    return np.sqrt(ex * ex + ey * ey)


def host_cells(rng, st: SpecimenStyle, size: int, ppu: float, pad: int, cv: np.ndarray,
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
        mask = soft_step(rr - R * edge, soft)
        tex = lowfreq(rng, gh, gw, max(3, int(2 * R / ppu / 1.5))) - 0.5  # ~1.5 um granules
        if neut:
            nuc = np.zeros((gh, gw), np.float32)
            centres = []
            for j in range(n_lobes):
                aj = arc0 + (j - (n_lobes - 1) / 2) * (0.7 + 0.4 * lobe[j, 0])
                c = (math.cos(aj) * arc_r, math.sin(aj) * arc_r)
                centres.append(c)
                lr = (0.16 + 0.08 * lobe[j, 1]) * R
                nuc = np.maximum(nuc, soft_step(np.sqrt((X - c[0]) ** 2 + (Y - c[1]) ** 2) - lr, soft))
            for c0, c1 in zip(centres[:-1], centres[1:]):  # thin chromatin strands between lobes
                nuc = np.maximum(nuc, soft_step(_seg_dist(X, Y, c0, c1) - 0.05 * R, soft))
            nuc *= nuc_d * (1 + 0.25 * tex)
            s_map = cyto_d * mask * (1 + 0.6 * tex) + nuc
            c_map = nuc * (0.06 + 0.7 * st.cv_retained_negative)
        else:
            nuc = soft_step(np.sqrt((X - nuc_off[0]) ** 2 + (Y - nuc_off[1]) ** 2) - nuc_r, soft)
            s_map = cyto_d * mask * (1 + 0.9 * tex) + nuc * nuc_d
            c_map = nuc * (0.03 + 0.1 * st.cv_retained_negative)
        if f > 1:
            s_map = resize(s_map, gw * f, gh * f)
            c_map = resize(c_map, gw * f, gh * f)
        w, h = x1 - x0, y1 - y0
        saf[y0 + pad:y1 + pad, x0 + pad:x1 + pad] += s_map[:h, :w]
        cv[y0 + pad:y1 + pad, x0 + pad:x1 + pad] += c_map[:h, :w]
