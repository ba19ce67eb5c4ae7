"""The tf.data input pipeline with Gram-stain-safe augmentation. TensorFlow is imported only inside
the functions that build pipelines."""
from __future__ import annotations

from typing import Optional

import numpy as np


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
    """The TensorFlow twin of deploy.imaging.normalize: channel order, then (x - mean) / std on 0..255."""
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
