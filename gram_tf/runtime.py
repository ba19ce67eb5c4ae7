"""Compatibility face of the deploy wing: `from gram_tf.runtime import Classifier` keeps working.

New code imports from `gram_tf.deploy`. Like the deploy wing, this imports no TensorFlow.
"""
from .deploy import *  # noqa: F401,F403
from .deploy import __all__  # noqa: F401
from .deploy.output import format_predictions as format_table  # noqa: F401  (the old name)
