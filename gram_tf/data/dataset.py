"""ImageFolder datasets: scanning and checking, reproducible (grouped) splits, the split manifest.

Decoding always goes through `gram_tf.deploy.imaging.load_image` (Pillow), the same function the
deployed classifier uses, so training and deployment see identical pixels for every odd file
(RGBA, 16-bit, CMYK, EXIF-rotated...).
"""
from __future__ import annotations

import csv
import io
import os
import random
import re
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from ..deploy.imaging import IMAGE_EXTENSIONS, check_pixels, is_image_file, load_image
from ..deploy import is_label
from ..errors import GramTFError
from ..io_utils import atomic_write_text, require_dir, sha256_file
from .synth import GROUP_PATTERN as SYNTH_GROUP_PATTERN, is_synthetic_folder

MANIFEST_COLUMNS = ("path", "label", "split", "group", "sha256", "status")
SPLITS = ("train", "val", "test")


def _progress(iterable, total=None, desc="", enabled=True):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def scan_image_folder(root) -> tuple[list[tuple[Path, str]], list[str], dict]:
    """Return ([(path, class)], classes, {class: n_images}) for an ImageFolder (one sub-folder per
    class, images found recursively inside each). Raises if the folder does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise GramTFError(f"data folder {root} does not exist or is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    check_class_folders(root, classes)
    items = []
    counts = {}
    for cls in classes:
        files = sorted(p for p in (root / cls).rglob("*") if p.is_file() and is_image_file(p))
        counts[cls] = len(files)
        items.extend((p, cls) for p in files)
    return items, classes, counts


def check_class_folders(root: Path, classes: list[str]) -> None:
    """Class names become labels (labels.txt holds one per line) and every class folder is a class of its
    own: a name with a control character or without a visible character, or a link back to the data folder
    (or an ancestor) or to another class folder (which made a third class of duplicates), is refused."""
    seen: dict[Path, str] = {}
    top = root.resolve()
    for cls in classes:
        if not is_label(cls):
            raise GramTFError(f"{root}: class folder {cls!r} has no visible name or a control character (e.g. a "
                              "newline) in it; rename it: class names become labels, one per line")
        target = (root / cls).resolve()
        if target == top or target in top.parents:
            raise GramTFError(f"{root}: class folder {cls!r} is a link to the data folder itself or one above it; "
                              "remove the link")
        if target in seen:
            raise GramTFError(f"{root}: class folders {seen[target]!r} and {cls!r} are the same folder (a link); "
                              "remove the link")
        seen[target] = cls


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


def external_items(root, labels, name: str, quiet: bool = False) -> list[tuple[Path, str]]:
    """[(path, class)] of an external test set: an ImageFolder whose class folders are classes of the model
    (`labels`). A folder naming another class is an error (its images could be scored against nothing);
    a class with no folder or no images is allowed (one notice line, unless `quiet`): a lab's set may
    hold only the species it sees."""
    where = f"external set {name!r} ({root})"
    root = Path(root)
    if not root.is_dir():
        raise GramTFError(f"{where}: folder does not exist; pass an ImageFolder with one sub-folder per class")
    items, classes, counts = scan_image_folder(root)
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise GramTFError(f"{where}: class folder {unknown[0]!r} is not a class of the model ({', '.join(labels)}); "
                          "rename it to one of them or remove it")
    if not items:
        raise GramTFError(f"{where}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    missing = [c for c in labels if counts.get(c, 0) == 0]
    if missing and not quiet:
        print(f"notice: {where} has no images of {', '.join(missing)}; its accuracy is over "
              f"{', '.join(c for c in labels if c not in missing)} only", file=sys.stderr)
    return items


def probe_image(path) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    """Fully decode one image (reduced-scale for JPEG) and return ((w, h), None) or (None, error)."""
    from PIL import Image

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None, f"{path}: empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                size = img.size
                check_pixels(path, size)
                if img.format == "JPEG":
                    img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
        return size, None
    except GramTFError as exc:
        return None, str(exc)
    except Exception:
        try:  # the shared decoder gives the canonical message
            load_image(path)
        except GramTFError as exc:
            return None, str(exc)
        except Exception as exc:  # pragma: no cover - unexpected decoder failure
            return None, f"{path}: cannot decode ({type(exc).__name__}: {exc})"
        return None, f"{path}: cannot decode"


def check_dataset(root, progress: bool = True, group_pattern: Optional[str] = None) -> dict:
    """Per-class counts, image size ranges, duplicate files (by sha256) and every unreadable file;
    `warnings` says when file names suggest groups that no group pattern keeps together."""
    items, classes, counts = scan_image_folder(root)
    compile_group_pattern(group_pattern)  # a bad regex is an error before any image is read
    hint = None if resolve_group_pattern(items, classes, group_pattern) else suggested_groups(items)
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
        "warnings": [hint] if hint else [],
        "ok": not problems,
    }


# A name ending in a separator, optional letters and a number (P01_3.png, photo2-tile4.jpg,
# slide7__f12.png): group 1, the part before it, may be a photo, slide or patient shared by several files.
SUFFIX_GROUP_PATTERN = r"^(.+?)[-_. ]+[A-Za-z]*\d+\.\w+$"
_SUFFIX = re.compile(SUFFIX_GROUP_PATTERN)


def suggested_groups(items) -> Optional[str]:
    """One line when file names look grouped: some class holds at least 3 name prefixes shared by 2+ files
    each, and such files are at least half of all files. A camera's IMG_0001, IMG_0002... is one prefix
    per class and does not count."""
    by_prefix = defaultdict(list)
    for path, cls in items:
        m = _SUFFIX.match(Path(path).name)
        if m:
            by_prefix[(cls, m.group(1))].append(Path(path).name)
    shared = {k: v for k, v in by_prefix.items() if len(v) >= 2}
    per_class = Counter(cls for cls, _ in shared)
    n_shared = sum(len(v) for v in shared.values())
    if not per_class or max(per_class.values()) < 3 or 2 * n_shared < len(items):
        return None
    (_, prefix), names = max(shared.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return (f"file names look grouped (e.g. {names[0]} and {names[1]} share {prefix!r}; {n_shared} files in "
            f"{len(shared)} such groups) and no group pattern is set, so a group can land in train and test at once; "
            f"pass --group-pattern (data.group_pattern), e.g. '{SUFFIX_GROUP_PATTERN}'")


def compile_group_pattern(group_pattern: Optional[str]) -> Optional[re.Pattern]:
    try:
        return re.compile(group_pattern) if group_pattern else None
    except re.error as exc:
        raise GramTFError(f"--group-pattern {group_pattern!r} is not a valid regex: {exc}") from None


def resolve_group_pattern(items, classes, group_pattern: Optional[str]) -> Optional[str]:
    """The group pattern a split uses: the one given ('' turns grouping off), else the synthetic
    specimen pattern for a folder `gram-tf data synth` wrote, else None (each file its own group).
    `data split`, `train --data` and `run` all split through this, so they split alike."""
    if group_pattern is None and is_synthetic_folder(classes, (Path(p).name for p, _ in items)):
        return SYNTH_GROUP_PATTERN
    return group_pattern


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
    every later stage skips them and the record says why. Without a group pattern, a synthetic folder is
    grouped by specimen (see resolve_group_pattern).
    """
    items, classes, counts = scan_image_folder(root)
    require_classes(root, classes, counts)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise GramTFError(f"--val {val} and --test {test} must be fractions that sum to less than 1")
    pattern = compile_group_pattern(resolve_group_pattern(items, classes, group_pattern))

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


def manifest_path(path) -> Path:
    """`path` as a manifest to write: a one-line error when it is a folder or sits under a file."""
    path = Path(path)
    if path.is_dir():
        raise GramTFError(f"{path} is a folder; pass the manifest file to write, e.g. {path / 'manifest.csv'}")
    require_dir(path.parent, f"the manifest's folder ({path.name})")
    return path


def write_manifest(rows: Iterable[dict], path) -> Path:
    path = manifest_path(path)
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
