"""Regenerate the README pictures: a contact sheet of synthetic Gram stains, one of the shifted styles
(docs/generalization.md), the reliability diagram and accuracy-coverage curves of the real-weights
generalization measurement (from benchmarks/results/generalization_real.json's study rows) and (if the
quickstart has run) its accuracy-vs-latency plot.

    python benchmarks/make_docs_figures.py [--out DIR] [--results DIR]     # default: docs/, benchmarks/results/
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


def generalization_plots(results: Path, out: Path) -> list:
    """docs/generalization_{reliability,coverage}.png from the real-weights measurement's own rows (the report's
    calibration plots of its in-domain rows); [] when that results file is absent."""
    import json
    import tempfile

    from gram_tf.report import normalize_row
    from gram_tf.report.calibration import calibration_sections
    from gram_tf.report.schema import in_domain
    from gram_tf.report.view import ResultView

    saved = results / "generalization_real.json"
    if not saved.is_file():
        return []
    rows = [normalize_row(r) for r in json.loads(saved.read_text())["study_rows"]]
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        _, plots, _ = calibration_sections(ResultView([r for r in rows if in_domain(r)]), tmp)
        for plot, name in ((Path(tmp) / "reliability.png", "generalization_reliability.png"),
                           (Path(tmp) / "accuracy_coverage.png", "generalization_coverage.png")):
            if plot in [Path(p) for p in plots]:
                shutil.copy(plot, out / name)
                made.append(out / name)
    return made


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder the pictures go to")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="where the results files are")
    args = ap.parse_args(argv)
    docs = Path(args.out)
    contact_sheet(docs / "synth_examples.png")
    styles_sheet(docs / "synth_styles.png")
    generalization_plots(Path(args.results), docs)
    plot = ROOT / "runs" / "quickstart" / "report" / "accuracy_vs_latency.png"
    if plot.is_file():
        shutil.copy(plot, docs / "quickstart_accuracy_vs_latency.png")
    print(f"-> {docs}")

if __name__ == "__main__":
    main()
