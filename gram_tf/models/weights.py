"""Where a backbone's ImageNet weights come from: a file, the weights folders, or a Keras download."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import GramTFError
from .registry import Backbone

WEIGHTS_ENV = "GRAM_TF_WEIGHTS_DIR"


def weights_search_dirs(weights_dir=None) -> list[Path]:
    dirs = []
    for d in (weights_dir, os.environ.get(WEIGHTS_ENV)):
        if d:
            dirs.append(Path(d).expanduser())
    dirs.append(Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models")
    return dirs


def resolve_weights(bb: Backbone, weights: Optional[str], weights_dir=None) -> Optional[Path]:
    """Map 'imagenet' | 'none' | a path to a weights file on disk (or None for random init)."""
    if weights is None or str(weights).lower() in ("none", "random", ""):
        return None
    if str(weights).lower() != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise GramTFError(f"weights file {path} not found; pass 'imagenet', 'none' or an existing file")
        return path
    if not bb.imagenet_files:
        raise GramTFError(
            f"backbone {bb.name} has no standard Keras ImageNet weights file; use --weights none or --weights FILE")
    dirs = weights_search_dirs(weights_dir)
    for d in dirs:
        for fname in bb.imagenet_files:
            if (d / fname).is_file():
                return d / fname
    return _download_imagenet(bb, dirs)


def _download_imagenet(bb: Backbone, dirs) -> Path:
    """Let Keras fetch the weights into its cache (~/.keras/models); offline this is a clear error."""
    fname = bb.imagenet_files[0]
    try:
        import tf_keras

        # Keras applications download on weights="imagenet"; build the backbone that way once.
        inp = tf_keras.Input((bb.default_size, bb.default_size, 3))
        getattr(tf_keras.applications, bb.app)(include_top=False, weights="imagenet", input_tensor=inp, **bb.app_kwargs)
    except Exception as exc:  # URLError, HTTP errors, no network
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise GramTFError(
            f"ImageNet weights for {bb.name} are not on this machine and could not be downloaded "
            f"({reason}); place {fname} in {dirs[0]} (or set {WEIGHTS_ENV} / weights_dir / --weights-dir)"
        ) from None
    for d in dirs:
        for f in bb.imagenet_files:
            if (d / f).is_file():
                return d / f
    raise GramTFError(f"Keras downloaded the weights for {bb.name} but {fname} is not in {dirs[-1]}")
