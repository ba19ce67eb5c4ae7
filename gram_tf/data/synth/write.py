"""Writing a synthetic dataset: <out>/<class>/FILE_NAME_FORMAT, resumable, one atomic write per file."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ...errors import GramTFError
from .names import CLASSES, FILE_NAME_FORMAT, GROUP_PATTERN
from .render import check_size, render_micrograph
from .style import MAX_FIELDS, field_rng, get_style, specimen_style

TMP_SUFFIX = ".tmp.png"  # a file being written; renamed into place when complete
TMP_NAME = re.compile(GROUP_PATTERN + r"\d+" + re.escape(TMP_SUFFIX) + "$")  # left by an interrupted run


def synthesize_dataset(out_dir, per_class: int, size: int = 256, seed: int = 0,
                       fields_per_specimen: int = 4, progress: bool = True, style: str = "default") -> dict:
    """Write out_dir/<class>/FILE_NAME_FORMAT for both classes, in `style` (a name of STYLES); return a
    summary dict {"out_dir": str, "classes": {name: count}, "size": size, "seed": seed, "style": style,
    "n_written": int, "n_skipped": int}."""
    def _int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not _int(per_class) or per_class < 1:
        raise GramTFError(f"--per-class must be an integer >= 1, got {per_class!r}")
    size = check_size(size)
    if not _int(seed) or seed < 0:
        raise GramTFError(f"--seed must be an integer >= 0, got {seed!r}")
    if not _int(fields_per_specimen) or not 1 <= fields_per_specimen <= MAX_FIELDS:
        raise GramTFError(f"fields_per_specimen must be an integer from 1 to {MAX_FIELDS}, "
                          f"got {fields_per_specimen!r}")
    get_style(style)  # an unknown name before any folder is made
    per_class, seed, fps = int(per_class), int(seed), int(fields_per_specimen)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GramTFError(f"output path {str(out)!r} exists and is not a directory; pick another OUT")
    try:
        for name in CLASSES:
            (out / name).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GramTFError(f"cannot create output directory {str(out)!r}: {exc.strerror or exc}") from None
    # left-overs of an interrupted run
    for name in CLASSES:
        for p in (out / name).iterdir():
            if TMP_NAME.match(p.name):
                try:
                    p.unlink()
                except OSError:
                    pass

    jobs = [(ci, name, i) for ci, name in enumerate(CLASSES) for i in range(per_class)]
    it = jobs
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(jobs, desc="synth", unit="img")
            it = bar
        except ImportError:  # pragma: no cover
            pass
    written = skipped = 0
    styles: dict = {}
    try:
        for ci, name, i in it:
            sp, f = divmod(i, fps)
            path = out / name / FILE_NAME_FORMAT.format(cls=name, specimen=sp, field=f)
            if path.exists():
                skipped += 1
                continue
            gram = name.split("_", 1)[1]
            key = (ci, sp)
            if key not in styles:
                styles.clear()  # fields of a specimen are consecutive
                styles[key] = specimen_style(seed, ci, sp, gram, style)
            img = render_micrograph(field_rng(seed, ci, sp, f), gram, size, styles[key])
            tmp = path.with_name(path.stem + TMP_SUFFIX)
            try:
                img.save(tmp, format="PNG", compress_level=2)  # fast; noise compresses poorly anyway
                os.replace(tmp, path)
            except BaseException:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise
            written += 1
    except OSError as exc:
        raise GramTFError(f"cannot write images under {str(out)!r}: {exc.strerror or exc}") from None
    finally:
        if bar is not None:
            bar.close()
    return {"out_dir": str(out), "classes": {name: per_class for name in CLASSES}, "size": size,
            "seed": seed, "style": style, "n_written": written, "n_skipped": skipped}
