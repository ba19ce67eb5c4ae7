"""Decoding a manifest's images into uint8 arrays (optionally cached on disk), through the shared
decoder in `gram_tf.deploy.imaging`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..deploy.stream import decode_stream
from ..io_utils import atomic_path
from .dataset import _progress, manifest_labels, split_rows


def load_images(rows, size: int, resize: str = "squash", progress: bool = True,
                cache_dir=None, labels=None) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    """Decode and resize manifest rows into a uint8 array (N, size, size, 3).

    Returns (images, label_indices, kept_rows, errors). A file that fails to decode is reported
    once in `errors` and left out; nothing raises for a single bad image. With `cache_dir` the
    decoded array is stored as .npy keyed by the files' hashes, size and resize rule.
    """
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
    decoded = decode_stream((r["path"] for r in rows), size, resize)
    for i, d in enumerate(_progress(decoded, total=len(rows), desc=f"decoding {size}px", enabled=progress)):
        if d.image is None:
            errors.append({"path": rows[i]["path"], "error": d.error})
            continue
        out[len(kept_idx)] = d.image
        kept_idx.append(i)
    kept = [rows[i] for i in kept_idx]
    x = out[: len(kept)]
    y = np.array([labels.index(r["label"]) for r in kept], np.int64)
    if cache_file is not None:
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
