"""BatchNorm statistics re-estimated on data (random-weight backbones, pruned or fine-tuned models)."""
from __future__ import annotations

import numpy as np

from ..data import normalize_tf


def recalibrate_batchnorm(model, images: np.ndarray, preprocessing: dict, max_images: int = 256) -> int:
    """Set every BatchNormalization's moving statistics to the statistics of `images`.

    With random weights (no ImageNet file) the default statistics (mean 0, variance 1) let the
    signal vanish through a deep network and every image gets the same features; one forward
    pass in training mode with momentum 0 normalises each layer on real data instead, which
    turns the random backbone into a usable random-feature extractor. Also repairs the
    statistics after a short from-scratch fine-tune. Returns the number of layers updated.
    """
    import tf_keras

    bns = [l for l in model.layers if isinstance(l, tf_keras.layers.BatchNormalization)]
    if not bns or len(images) == 0:
        return 0
    x = normalize_tf(images[:max_images], preprocessing)
    saved = [(l.momentum, l.trainable) for l in bns]
    for l in bns:
        l.momentum, l.trainable = 0.0, True
    model(x, training=True)
    for l, (m, t) in zip(bns, saved):
        l.momentum, l.trainable = m, t
    return len(bns)
