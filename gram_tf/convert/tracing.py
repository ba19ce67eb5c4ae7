"""The convert wing's ground floor under the toolkit: the traced model function the converter
reads, the normalized representative images it calibrates with, and quieting its warnings."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..deploy import IN_GRAPH, normalize, outside_graph


def concrete_function(model, batch_size: int, size: int, preprocessing: Optional[dict] = None):
    """The traced function the converter reads. With a pixel-input preprocessing (deploy.pixel_input)
    the channel order and mean/std go into the graph: the model takes RGB pixels 0-255."""
    import tensorflow as tf

    spec = tf.TensorSpec([batch_size, size, size, 3], tf.float32, name="image")
    if preprocessing and preprocessing.get(IN_GRAPH):
        fn = tf.function(lambda x: model(graph_normalize(x, preprocessing), training=False))
    else:
        fn = tf.function(lambda x: model(x, training=False))
    return fn.get_concrete_function(spec)


def graph_normalize(pixels, preprocessing: dict):
    """The normalization a pixel-input graph applies, in the form XNNPACK runs fastest. One mean and one
    std for all channels (most backbones): a subtract and a multiply by scalars. Per-channel values or
    BGR: one 1x1 convolution whose 3x3 kernel reorders and scales the channels (bias -mean/std), since
    broadcasting a 3-vector over the last axis costs XNNPACK 3-4x more per op (measured in
    benchmarks/pixel_input.py's first run: 0.17 ms each for SUB and MUL at 224 px)."""
    import tensorflow as tf

    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)
    bgr = preprocessing.get("channel_order", "RGB") == "BGR"
    if not bgr and np.all(mean == mean[0]) and np.all(std == std[0]):
        return (pixels - float(mean[0])) * float(1.0 / std[0])
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out in range(3):
        kernel[0, 0, 2 - out if bgr else out, out] = 1.0 / std[out]
    return tf.nn.conv2d(pixels, kernel, 1, "VALID") + (-mean / std)


def normalized_images(images_uint8: np.ndarray, preprocessing: dict) -> np.ndarray:
    """uint8 images -> the float32 input of the converted graph, as the deployed classifier makes it
    (pixels as they are for a pixel-input graph)."""
    return normalize(images_uint8, preprocessing).astype(np.float32)


def model_inputs(images_uint8: np.ndarray, preprocessing: dict) -> np.ndarray:
    """uint8 images -> the float32 input of the Keras model itself (always normalized)."""
    return normalize(images_uint8, outside_graph(preprocessing)).astype(np.float32)


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
