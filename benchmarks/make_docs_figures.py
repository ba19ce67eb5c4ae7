"""Regenerate the README pictures: a contact sheet of synthetic Gram stains, one of the shifted styles
(docs/generalization.md) and (if the quickstart has run) its accuracy-vs-latency plot.

    python benchmarks/make_docs_figures.py [--out DIR]     # default: docs/
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gram_tf.data import render_micrograph  # noqa: E402
from gram_tf.data.synth import CLASSES, STYLES, field_rng, specimen_style  # noqa: E402


def contact_sheet(path: Path, n: int = 6, size: int = 160, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for gram in ("positive", "negative"):
        rows.append(np.concatenate([np.asarray(render_micrograph(rng, gram, size)) for _ in range(n)], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)


def styles_sheet(path: Path, n: int = 6, size: int = 128, seed: int = 7) -> None:
    """One row per style of STYLES (in its order), the same n specimens in each: columns alternate
    Gram-negative and Gram-positive, so a row differs from the first only by its shift."""
    rows = []
    for style in STYLES:
        tiles = []
        for k in range(n):
            ci = k % 2
            gram = CLASSES[ci].split("_", 1)[1]
            st = specimen_style(seed, ci, k, gram, style.name)
            tiles.append(np.asarray(render_micrograph(field_rng(seed, ci, k, 0), gram, size, st)))
        rows.append(np.concatenate(tiles, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder the pictures go to")
    args = ap.parse_args(argv)
    docs = Path(args.out)
    contact_sheet(docs / "synth_examples.png")
    styles_sheet(docs / "synth_styles.png")
    plot = ROOT / "runs" / "quickstart" / "report" / "accuracy_vs_latency.png"
    if plot.is_file():
        shutil.copy(plot, docs / "quickstart_accuracy_vs_latency.png")
    print(f"-> {docs}")

if __name__ == "__main__":
    main()
