"""What an artifact's standard TFLite metadata says (deploy.classifier_card), from the facts of its run.

What the standard cannot say, the text does: the resize a model was trained with (MediaPipe always
stretches the whole image to the input size, without anti-aliasing) and, for a model that is not
pixel-input, a BGR channel order (the schema has RGB and GRAYSCALE only).
"""
from __future__ import annotations

from typing import Optional

from .. import __version__
from ..deploy import IN_GRAPH, check_labels, classifier_card
from ..errors import GramTFError

_RESIZE_TEXT = {"squash": "the whole image stretched to {n}x{n} (no crop)",
                "center_crop": "the short side resized to {n}, then the centre {n}x{n} cropped"}


def _collapse(values: list) -> list:
    """[v, v, v] -> [v] (MediaPipe takes one value or three equal ones)."""
    return values[:1] if len(set(values)) == 1 else list(values)


def artifact_card(*, labels, size: int, preprocessing: dict, backbone: str, variant: str,
                  sparsity: float = 0.0, model_sha256: Optional[str] = None, overrides=None) -> dict:
    """The standard metadata of one artifact; `overrides` is the config's convert.metadata section."""
    labels = check_labels(labels, f"{backbone} run")
    o = overrides
    pruned = f", {sparsity:.0%} of weights pruned" if sparsity else ""
    names = ", ".join(labels)
    resize = _RESIZE_TEXT[preprocessing["resize"]].format(n=size)
    mean, std = list(preprocessing["mean"]), list(preprocessing["std"])
    if preprocessing.get(IN_GRAPH):
        norm_mean, norm_std, lo, hi = [0.0], [1.0], [0.0], [255.0]
        feed = (f"RGB pixels 0-255, {resize}. The graph applies the channel order "
                f"({preprocessing['channel_order']}) and mean/std normalization itself.")
    else:
        norm_mean, norm_std = _collapse(mean), _collapse(std)
        lo = _collapse([(0 - m) / s for m, s in zip(mean, std)])
        hi = _collapse([(255 - m) / s for m, s in zip(mean, std)])
        feed = f"{resize}, then (pixel - mean) / std per channel."
        if preprocessing["channel_order"] == "BGR":
            feed += " Channels in BGR order: reverse them before normalizing."
    return classifier_card(
        name=(o.name if o and o.name else f"Gram stain classifier ({backbone}, {variant})"),
        description=(o.description if o and o.description else
                     f"Classifies a Gram-stained micrograph as one of: {names}. {backbone}, {variant}{pruned}; "
                     f"exported by gram_tf {__version__}."),
        version=(o.version if o and o.version else f"{backbone}-{(model_sha256 or 'unknown')[:12]}"),
        author=(o.author if o else ""), license=(o.license if o else ""),
        input_size=size, mean=norm_mean, std=norm_std, value_min=lo, value_max=hi,
        input_description=feed, labels=labels)
