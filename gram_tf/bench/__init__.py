"""Bench wing: LiteRT benchmark rows (one per model x variant x threads, the report schema), the
measured GEMM peak and roofline columns, and ONNX Runtime as a peer runtime."""
from .litert import bench_paths, discover, evaluate_tflite
from .roofline import annotate, compute_dtype, cpu_flags, measure_peak, theoretical_peak
from .worker import time_keras, time_tflite

__all__ = ["bench_paths", "discover", "evaluate_tflite", "annotate", "compute_dtype", "cpu_flags",
           "measure_peak", "theoretical_peak", "time_keras", "time_tflite"]
