"""The convert wing's ground floor under the toolkit: the traced model function the converter
reads, the normalized representative images it calibrates with, and quieting its warnings."""
from __future__ import annotations

import numpy as np

from ..deploy import normalize


def concrete_function(model, batch_size: int, size: int):
    import tensorflow as tf

    spec = tf.TensorSpec([batch_size, size, size, 3], tf.float32, name="image")
    fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(spec)


def normalized_images(images_uint8: np.ndarray, preprocessing: dict) -> np.ndarray:
    """uint8 images -> the float32 model input (channel order, mean/std), as the deployed classifier does."""
    return normalize(images_uint8, preprocessing).astype(np.float32)


def representative_gen(images_uint8: np.ndarray, preprocessing: dict, batch_size: int = 1):
    """The converter's representative_dataset: normalized images, one batch at a time."""
    x = normalized_images(images_uint8, preprocessing)

    def gen():
        for i in range(len(x)):
            yield [x[i : i + 1].repeat(batch_size, axis=0)]

    return gen


class quiet_absl:
    """Silence the converter's deprecation warning about the trackable-free path."""

    def __enter__(self):
        import logging
        import warnings

        self.logger = logging.getLogger("absl")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        self.warnings.__exit__(*exc)
        self.logger.setLevel(self.level)
