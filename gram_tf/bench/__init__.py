"""Bench wing: LiteRT benchmark rows (one per model x variant x threads, the report schema), the
measured GEMM peak and roofline columns, and ONNX Runtime as a peer runtime."""
from .litert import bench_paths, discover, evaluate_tflite
from .roofline import add_roofline_columns, compute_dtype, cpu_flags, measure_peak, theoretical_peak
from .worker import time_keras, time_tflite

__all__ = ["bench_paths", "discover", "evaluate_tflite", "add_roofline_columns", "compute_dtype", "cpu_flags",
           "measure_peak", "theoretical_peak", "time_keras", "time_tflite"]


def __getattr__(name):
    # `annotate` was this wing's name for add_roofline_columns; optimize.annotate (QAT) keeps the word
    if name == "annotate":
        import warnings

        warnings.warn("gram_tf.bench.annotate is deprecated; use gram_tf.bench.add_roofline_columns",
                      DeprecationWarning, stacklevel=2)
        return add_roofline_columns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
