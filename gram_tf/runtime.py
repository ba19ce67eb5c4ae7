"""Compatibility face of the deploy wing: `from gram_tf.runtime import Classifier` keeps working.

New code imports from `gram_tf.deploy`. Like the deploy wing, this imports no TensorFlow.
"""
from .deploy import *  # noqa: F401,F403
from .deploy import __all__  # noqa: F401


def __getattr__(name):
    # the old name of format_predictions; `format_table` is gram_tf.table's (any rows as a text table)
    if name == "format_table":
        import warnings

        from .deploy.output import format_predictions

        warnings.warn("gram_tf.runtime.format_table is deprecated; use gram_tf.deploy.format_predictions",
                      DeprecationWarning, stacklevel=2)
        return format_predictions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
