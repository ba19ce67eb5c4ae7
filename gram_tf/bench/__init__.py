"""Bench wing: LiteRT benchmark rows (one per model x variant x threads, the report schema), timed in
rounds by warm worker processes, the measured GEMM peak and roofline columns, and ONNX Runtime as a
peer runtime.

Names are imported on first use: a timing worker (`python -m gram_tf.bench.worker`) must not pay for
the evaluation code's imports (scipy, Pillow: 0.7 s and ~60 MB per process, measured).
"""
import importlib

_EXPORTS = {
    "bench_paths": "litert", "discover": "litert", "evaluate_tflite": "litert",
    "add_roofline_columns": "roofline", "compute_dtype": "roofline", "cpu_flags": "roofline",
    "measure_peak": "roofline", "theoretical_peak": "roofline", "time_keras": "worker", "time_tflite": "worker",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    # `annotate` was this wing's name for add_roofline_columns; optimize.annotate (QAT) keeps the word
    if name == "annotate":
        import warnings

        warnings.warn("gram_tf.bench.annotate is deprecated; use gram_tf.bench.add_roofline_columns",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(".roofline", __name__), "add_roofline_columns")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
