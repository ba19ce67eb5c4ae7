"""gram_tf: small, fast Gram-stain image classifiers with TF-MOT and LiteRT.

TF-MOT only works with Keras 2 (tf_keras), so the legacy-Keras switch must be set before TensorFlow
is first imported anywhere in the process. Importing this package does that; it never imports
TensorFlow itself, so the LiteRT-only runtime (`gram_tf.runtime`) stays light.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
