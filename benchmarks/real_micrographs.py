"""The real-micrograph benchmark set: fields of view cut from ../shared/data/real, with a manifest.

Six classes: E. coli and P. aeruginosa (GramStainR, 30 photos each, 3264x1840) and the four
Mendeley pure cultures (one photo per class, a circular field of view). Each GramStainR photo gives
8 square fields (a 4x2 grid of 816 px squares); each Mendeley photo gives 9 overlapping fields
inside the circle's inscribed square. Fields are stored at 256 px (a model at 224 px squashes them
further, as `gram-tf train` does).

Split: GramStainR fields are grouped by their photo (`--group-pattern '^(.+)__f\\d+'`), so no test
field comes from a photo seen in training. Each Mendeley class has one photo only, so its fields are
split one by one: those four classes measure little (same photo in train and test), and the numbers
that matter are the two GramStainR classes. This is a benchmark set, not a clinical one.

    python benchmarks/real_micrographs.py OUT_DIR     # writes OUT_DIR/images/... and OUT_DIR/manifest.csv
    python benchmarks/real_micrographs.py OUT_DIR --source DIR   # photos laid out as ../shared/data/real
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
FIELD_PX = 256
GROUP_PATTERN = r"^(.+)__f\d+"


def _save(img: Image.Image, path: Path) -> None:
    img.resize((FIELD_PX, FIELD_PX), Image.BICUBIC, reducing_gap=3.0).save(path)


def _gramstainr_boxes(img: Image.Image):
    """A 4x2 grid of squares, centred; file suffix "__f<k>" groups fields by photo."""
    w, h = img.size
    side = min(w // 4, h // 2)
    x0, y0 = (w - 4 * side) // 2, (h - 2 * side) // 2
    for k in range(8):
        col, row = k % 4, k // 4
        yield f"__f{k}", (x0 + col * side, y0 + row * side, x0 + (col + 1) * side, y0 + (row + 1) * side)


def _mendeley_boxes(img: Image.Image):
    """3x3 overlapping squares in the circle's inscribed square; no "__f": every field is its own
    group (one photo per class)."""
    square = int(min(img.size) / 2 ** 0.5) - 8
    x0, y0 = (img.size[0] - square) // 2, (img.size[1] - square) // 2
    side, step = square // 2, square // 4
    for k in range(9):
        col, row = k % 3, k // 3
        yield f"-{k}", (x0 + col * step, y0 + row * step, x0 + col * step + side, y0 + row * step + side)


def _rgb_on_white(photo: Path) -> Image.Image:
    rgba = Image.open(photo).convert("RGBA")
    img = Image.new("RGB", rgba.size, (255, 255, 255))
    img.paste(rgba, mask=rgba.getchannel("A"))
    return img


def _write_fields(src: Path, out: Path, boxes) -> int:
    """Every photo of src/<class>/ cut into the fields `boxes` yields, saved under out/<class>/."""
    n = 0
    for cls_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        dest = out / cls_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        for photo in sorted(cls_dir.iterdir()):
            img = _rgb_on_white(photo)
            for suffix, box in boxes(img):
                _save(img.crop(box), dest / f"{photo.stem}{suffix}.png")
                n += 1
    return n


def build(out_dir, val: float = 0.2, test: float = 0.25, seed: int = 0, source: Path = REAL) -> Path:
    """Write the fields of the photos under `source` (gramstainr_reference/<class>/, mendeley_examples/<class>/)
    and a grouped, stratified manifest; returns the manifest path (cached)."""
    from gram_tf.data import split_dataset, write_manifest

    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    if manifest.is_file():
        return manifest
    source = Path(source)
    if not source.is_dir():
        raise SystemExit(f"error: {source} is missing; this benchmark needs ../shared/data/real")
    images = out_dir / "images"
    n = (_write_fields(source / "gramstainr_reference", images, _gramstainr_boxes)
         + _write_fields(source / "mendeley_examples", images, _mendeley_boxes))
    rows = split_dataset(images, val=val, test=test, seed=seed, group_pattern=GROUP_PATTERN, progress=False)
    write_manifest(rows, manifest)
    print(f"{n} fields -> {images}; manifest -> {manifest}")
    return manifest


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--source", default=str(REAL), help="the photos (default: ../shared/data/real)")
    args = ap.parse_args()
    build(args.out_dir, source=args.source)
