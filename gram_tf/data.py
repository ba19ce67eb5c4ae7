"""Datasets: ImageFolder scanning and checking, reproducible (grouped) splits, and the tf.data input
pipeline with Gram-stain-safe augmentation.

Decoding always goes through `gram_tf.runtime.load_image` (Pillow), the same function the deployed
runtime uses, so training and deployment see identical pixels for every odd file (RGBA, 16-bit,
CMYK, EXIF-rotated...). TensorFlow is imported only inside the functions that build tf.data pipelines.
"""
from __future__ import annotations

import csv
import io
import os
import random
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .errors import GramTFError
from .io_utils import atomic_write_text, sha256_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MANIFEST_COLUMNS = ("path", "label", "split", "group", "sha256", "status")
SPLITS = ("train", "val", "test")


def _progress(iterable, total=None, desc="", enabled=True):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def is_image_file(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS and not Path(path).name.startswith(".")


def scan_image_folder(root) -> tuple[list[tuple[Path, str]], list[str], dict]:
    """Return ([(path, class)], classes, {class: n_images}) for an ImageFolder (one sub-folder per
    class, images found recursively inside each). Raises if the folder does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise GramTFError(f"data folder {root} does not exist or is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = []
    counts = {}
    for cls in classes:
        files = sorted(p for p in (root / cls).rglob("*") if p.is_file() and is_image_file(p))
        counts[cls] = len(files)
        items.extend((p, cls) for p in files)
    return items, classes, counts


def require_classes(root, classes, counts) -> None:
    empty = [c for c in classes if counts.get(c, 0) == 0]
    if empty:
        raise GramTFError(
            f"{root}: class folder(s) {', '.join(empty)} contain no images "
            f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
        )
    if len(classes) < 2:
        raise GramTFError(
            f"{root}: found {len(classes)} class folder(s); an ImageFolder needs at least 2 "
            "sub-folders, one per class"
        )


def probe_image(path) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    """Fully decode one image (reduced-scale for JPEG) and return ((w, h), None) or (None, error)."""
    from PIL import Image

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None, f"{path}: empty file (0 bytes)"
        with Image.open(path) as img:
            size = img.size
            if img.format == "JPEG":
                img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
        return size, None
    except Exception:
        from . import runtime

        try:  # the runtime's decoder gives the canonical message
            runtime.load_image(path)
        except GramTFError as exc:
            return None, str(exc)
        except Exception as exc:  # pragma: no cover - unexpected decoder failure
            return None, f"{path}: cannot decode ({type(exc).__name__}: {exc})"
        return None, f"{path}: cannot decode"


def check_dataset(root, progress: bool = True) -> dict:
    """Per-class counts, image size ranges, duplicate files (by sha256) and every unreadable file."""
    items, classes, counts = scan_image_folder(root)
    readable = Counter()
    sizes = defaultdict(list)
    unreadable = []
    by_hash = defaultdict(list)
    for path, cls in _progress(items, total=len(items), desc="checking", enabled=progress):
        size, err = probe_image(path)
        by_hash[sha256_file(path)].append(str(path))
        if err:
            unreadable.append({"path": str(path), "class": cls, "error": err})
            continue
        readable[cls] += 1
        sizes[cls].append(size)
    problems = []
    for cls in classes:
        if readable[cls] == 0:
            problems.append(f"class '{cls}' has no readable images")
    if len(classes) < 2:
        problems.append(f"{len(classes)} class folder(s) found; at least 2 are needed")
    per_class = {}
    for cls in classes:
        s = np.array(sizes[cls]) if sizes[cls] else np.zeros((0, 2), int)
        per_class[cls] = {
            "files": counts[cls],
            "readable": readable[cls],
            "min_size": [int(s[:, 0].min()), int(s[:, 1].min())] if len(s) else None,
            "max_size": [int(s[:, 0].max()), int(s[:, 1].max())] if len(s) else None,
        }
    duplicates = [paths for paths in by_hash.values() if len(paths) > 1]
    return {
        "root": str(root),
        "classes": classes,
        "per_class": per_class,
        "n_files": len(items),
        "unreadable": unreadable,
        "duplicates": duplicates,
        "problems": problems,
        "ok": not problems,
    }


def _group_of(path: Path, pattern: Optional[re.Pattern]) -> str:
    if pattern is None:
        return path.stem
    m = pattern.search(path.name)
    if not m:
        return path.stem  # a file the pattern does not match is its own group
    return m.group(1) if m.groups() else m.group(0)


def split_dataset(root, val: float = 0.15, test: float = 0.2, seed: int = 0,
                  group_pattern: Optional[str] = None, progress: bool = True) -> list[dict]:
    """Stratified train/val/test split of an ImageFolder; whole groups go to one split.

    Unreadable files are kept in the manifest with split 'excluded' and the decoder's message, so
    every later stage skips them and the record says why.
    """
    items, classes, counts = scan_image_folder(root)
    require_classes(root, classes, counts)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise GramTFError(f"--val {val} and --test {test} must be fractions that sum to less than 1")
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as exc:
        raise GramTFError(f"--group-pattern {group_pattern!r} is not a valid regex: {exc}") from None

    rows = []
    for path, cls in _progress(items, total=len(items), desc="hashing", enabled=progress):
        _, err = probe_image(path)
        rows.append({
            "path": path, "label": cls, "split": "excluded" if err else "",
            "group": f"{cls}/{_group_of(path, pattern)}" if pattern is None else _group_of(path, pattern),
            "sha256": sha256_file(path), "status": err or "ok",
        })

    good = [r for r in rows if r["status"] == "ok"]
    for cls in classes:
        if not any(r["label"] == cls for r in good):
            raise GramTFError(f"{root}: class '{cls}' has no readable images; run 'gram-tf data check {root}'")

    # A group's stratum is its majority label; groups are dealt to test, then val, then train,
    # class by class, until each split holds its share of that class's images.
    groups = defaultdict(list)
    for r in good:
        groups[r["group"]].append(r)
    by_label = defaultdict(list)
    for g, members in sorted(groups.items()):
        label = Counter(m["label"] for m in members).most_common(1)[0][0]
        by_label[label].append(g)
    rng = random.Random(seed)
    for label in sorted(by_label):
        names = by_label[label]
        rng.shuffle(names)
        total = sum(len(groups[g]) for g in names)
        targets = {"test": round(total * test), "val": round(total * val)}
        # Every non-zero fraction gets at least one group when the class has enough groups.
        for split in ("test", "val"):
            if targets[split] == 0 and (test if split == "test" else val) > 0 and len(names) >= 3:
                targets[split] = 1
        filled = {"test": 0, "val": 0}
        for g in names:
            split = "train"
            for candidate in ("test", "val"):
                if filled[candidate] < targets[candidate]:
                    split = candidate
                    break
            if split != "train":
                filled[split] += len(groups[g])
            for m in groups[g]:
                m["split"] = split
    return rows


def write_manifest(rows: Iterable[dict], path) -> Path:
    path = Path(path)
    base = path.parent.resolve()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        p = Path(r["path"]).resolve()
        try:
            rel = os.path.relpath(p, base)
        except ValueError:  # another drive on Windows
            rel = str(p)
        writer.writerow({**{k: r.get(k, "") for k in MANIFEST_COLUMNS}, "path": rel})
    return atomic_write_text(path, buf.getvalue())


def read_manifest(path) -> list[dict]:
    """Rows with absolute paths. Paths in the CSV are relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise GramTFError(f"manifest {path} not found; create one with 'gram-tf data split DIR --out {path}'")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GramTFError(f"manifest {path} lacks column(s) {', '.join(missing)}; regenerate it with 'gram-tf data split'")
        rows = []
        for i, r in enumerate(reader, start=2):
            if r["split"] not in SPLITS + ("excluded",):
                raise GramTFError(f"manifest {path} line {i}: unknown split {r['split']!r}")
            p = Path(r["path"])
            r["path"] = str(p if p.is_absolute() else (path.parent / p).resolve())
            rows.append(r)
    if not rows:
        raise GramTFError(f"manifest {path} has no rows")
    return rows


def manifest_labels(rows) -> list[str]:
    return sorted({r["label"] for r in rows})


def split_rows(rows, split: str) -> list[dict]:
    return [r for r in rows if r["split"] == split]


def summarize_split(rows) -> dict:
    table = defaultdict(Counter)
    for r in rows:
        table[r["split"]][r["label"]] += 1
    return {s: dict(c) for s, c in table.items()}


def load_images(rows, size: int, resize: str = "squash", progress: bool = True,
                cache_dir=None, labels=None) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    """Decode and resize manifest rows into a uint8 array (N, size, size, 3).

    Returns (images, label_indices, kept_rows, errors). A file that fails to decode is reported
    once in `errors` and left out; nothing raises for a single bad image. With `cache_dir` the
    decoded array is stored as .npy keyed by the files' hashes, size and resize rule.
    """
    from . import runtime

    labels = list(labels) if labels is not None else manifest_labels(rows)
    rows = [r for r in rows if r["split"] != "excluded"]
    cache_file = None
    if cache_dir is not None and rows:
        import hashlib

        key = hashlib.sha256(("|".join(r["sha256"] + r["label"] for r in rows)
                              + f"|{size}|{resize}").encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"images_{key}.npz"
        if cache_file.exists():
            with np.load(cache_file, allow_pickle=False) as z:
                keep = set(z["kept"].tolist())
                kept = [r for i, r in enumerate(rows) if i in keep]
                return z["x"], np.array([labels.index(r["label"]) for r in kept], np.int64), kept, []
    out = np.zeros((len(rows), size, size, 3), np.uint8)
    kept_idx, errors = [], []
    for i, r in enumerate(_progress(rows, total=len(rows), desc=f"decoding {size}px", enabled=progress)):
        try:
            img = runtime.load_image(r["path"])
        except GramTFError as exc:
            errors.append({"path": r["path"], "error": str(exc)})
            continue
        out[len(kept_idx)] = runtime.resize_image(img, size, resize)
        kept_idx.append(i)
    kept = [rows[i] for i in kept_idx]
    x = out[: len(kept)]
    y = np.array([labels.index(r["label"]) for r in kept], np.int64)
    if cache_file is not None:
        from .io_utils import atomic_path

        with atomic_path(cache_file, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x, kept=np.array(kept_idx, np.int64))
    return x, y, kept, errors


def load_split(manifest_rows, split: str, size: int, resize: str = "squash", progress=True,
               cache_dir=None):
    """Images and label indices of one split; label indices are positions in manifest_labels()."""
    rows = split_rows(manifest_rows, split)
    x, y, kept, errors = load_images(rows, size, resize, progress, cache_dir,
                                     labels=manifest_labels(manifest_rows))
    for e in errors:
        print(f"warning: excluded {e['error']}")
    return x, y, kept


# ----------------------------------------------------------------------------- tf.data pipeline

def augment_image(image, seed_pair):
    """Gram-stain-safe augmentation for one float32 image in 0..255: flips, 90-degree rotations,
    a small zoom crop, brightness/contrast and only a tiny hue shift (colour is the Gram signal)."""
    import tensorflow as tf

    size = tf.shape(image)[0]
    seeds = tf.random.experimental.stateless_split(seed_pair, num=8)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    k = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=4, dtype=tf.int32)
    image = tf.image.rot90(image, k)
    scale = tf.random.stateless_uniform([], seeds[3], 0.85, 1.0)
    crop = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
    image = tf.image.stateless_random_crop(image, [crop, crop, 3], seeds[4])
    image = tf.image.resize(image, [size, size], method="bilinear")
    image = tf.image.stateless_random_brightness(image / 255.0, 0.08, seeds[5])
    image = tf.image.stateless_random_contrast(image, 0.9, 1.1, seeds[6])
    image = tf.image.stateless_random_hue(tf.clip_by_value(image, 0.0, 1.0), 0.02, seeds[7])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def normalize_tf(images, preprocessing: dict):
    """The TensorFlow twin of runtime.normalize: channel order, then (x - mean) / std on 0..255."""
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    if preprocessing.get("channel_order", "RGB") == "BGR":
        x = x[..., ::-1]
    mean = tf.constant(preprocessing["mean"], tf.float32)
    std = tf.constant(preprocessing["std"], tf.float32)
    return (x - mean) / std


def make_dataset(images: np.ndarray, labels: Optional[np.ndarray], preprocessing: dict,
                 batch_size: int, augment: bool = False, shuffle: bool = False, seed: int = 0,
                 repeat_views: int = 1):
    """tf.data pipeline over decoded uint8 images: (augment) -> normalise -> batch -> prefetch.

    `repeat_views` > 1 yields that many differently-augmented passes (for feature caching).
    """
    import tensorflow as tf

    n = len(images)
    ds = tf.data.Dataset.from_tensor_slices((images, labels if labels is not None else np.zeros(n, np.int64)))
    ds = ds.enumerate()
    if repeat_views > 1:
        ds = ds.repeat(repeat_views).enumerate().map(lambda j, t: (j, t[1]))
    if shuffle:
        ds = ds.shuffle(min(n * max(1, repeat_views), 4096), seed=seed, reshuffle_each_iteration=True)

    def _map(index, pair):
        image, label = pair
        image = tf.cast(image, tf.float32)
        if augment:
            image = augment_image(image, tf.stack([tf.cast(seed, tf.int64), index]))
        return normalize_tf(image, preprocessing), label

    ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
