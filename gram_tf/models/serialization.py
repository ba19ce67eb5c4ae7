"""Saving and loading gram_tf's Keras models (custom transformer layers included)."""
from __future__ import annotations

from pathlib import Path

from ..io_utils import atomic_path
from . import vit


def quiet_tensorflow() -> None:
    """Keep TensorFlow's Python logger to errors (its retracing notices drown the progress bars)."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")


def load_model(path):
    """Load a .keras model saved by gram_tf (custom transformer layers included)."""
    import tf_keras

    quiet_tensorflow()
    with tf_keras.utils.custom_object_scope(vit.custom_objects()):
        return tf_keras.models.load_model(str(path), compile=False)


def save_model(model, path) -> Path:
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(str(tmp))
    return Path(path)


def custom_objects() -> dict:
    """Keras custom objects of every gram_tf layer (for clone_model / quantize_scope)."""
    return vit.custom_objects()
