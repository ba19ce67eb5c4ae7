"""Images at the scale of a lab: decode in parallel with inference, in order, in bounded memory.

`decode_stream` runs `load_resized` on a pool of threads (Pillow releases the GIL while it decodes
and resizes, and LiteRT's invoke releases it too, so decoding and inference overlap on every core)
and yields the images in input order. At most `queue_size` images are decoded ahead of the
consumer, so memory is bounded by the queue, never by the folder. Training, evaluation and
`gram-tf predict` all decode through it: one decode path.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from ..errors import GramTFError
from .imaging import load_resized
from .output import ResultFile


@dataclass
class Decoded:
    """One input of the stream: its path, the decoded image (None when it failed) and the error."""
    path: Path
    image: Optional[np.ndarray]
    error: Optional[str] = None


def default_workers() -> int:
    """Decode threads: one per core (decoding is the bottleneck of a folder run)."""
    return max(1, os.cpu_count() or 1)


def ordered_map(fn: Callable, items: Iterable, executor: Executor, max_pending: int) -> Iterator:
    """`map(fn, items)` on `executor`, results in input order, at most `max_pending` submitted and
    not yet consumed: a slow consumer holds back the producers instead of growing a queue."""
    if max_pending < 1:
        raise GramTFError(f"queue size must be >= 1, got {max_pending}")
    pending: deque = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= max_pending:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _decode_one(path, size: int, resize: str) -> Decoded:
    try:
        return Decoded(Path(path), load_resized(path, size, resize))
    except GramTFError as exc:
        return Decoded(Path(path), None, str(exc))


def decode_stream(paths: Iterable, size: int, resize: str = "squash", workers: Optional[int] = None,
                  queue_size: Optional[int] = None) -> Iterator[Decoded]:
    """Decoded, resized images of `paths` in order; unreadable files come through with `error` set."""
    workers = workers or default_workers()
    queue_size = queue_size or 4 * workers
    if workers == 1:  # no thread hand-off for a single worker
        for p in paths:
            yield _decode_one(p, size, resize)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="gram_tf-decode") as pool:
        yield from ordered_map(lambda p: _decode_one(p, size, resize), paths, pool, queue_size)


def batched(items: Iterable, n: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_to_file(clf, files: list, out, top_k: int = 1, resume: bool = False, workers: Optional[int] = None,
                    queue_size: Optional[int] = None, progress: bool = True) -> dict:
    """Classify `files` into a result file row by row (see output.ResultFile); returns a summary."""
    t0 = time.perf_counter()
    with ResultFile(out, clf.labels, top_k, resume, model_sha256=clf.sha256) as rf:
        todo = [f for f in files if not rf.is_done(f)]
        bar = None
        if progress:
            try:  # optional on a device: LiteRT, numpy and Pillow are all predict needs
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=len(todo), unit="img", desc="classifying", disable=None, leave=False)
        errors = 0
        for row in clf.predict_stream(todo, top_k, workers, queue_size):
            rf.write(row)
            errors += "error" in row
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    return {"files": len(files), "already_done": len(files) - len(todo), "classified": len(todo) - errors,
            "errors": errors, "seconds": round(seconds, 2),
            "images_per_s": round(len(todo) / seconds, 1) if seconds > 0 and todo else None}
