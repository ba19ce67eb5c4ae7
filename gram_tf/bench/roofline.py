"""This CPU's multiply-accumulate peak, measured, and the roofline columns of benchmark rows.

The peak is *measured*: a GEMM-shaped micro-benchmark (four 1x1 convolutions, 28x28x512, i.e.
M=784, K=N=512) converted to fp32 and to int8 and timed with the same LiteRT/XNNPACK runtime as the
models, at each thread count. That is the best rate this runtime's kernels reach here, so
`frac_of_peak` says how far a model is from what its kernels can do. The ISA-derived figure
(`theoretical_peak`) is printed beside it for reference: FMA units x SIMD lanes x clock, from
/proc/cpuinfo; it assumes two 256-bit FMA pipes per core (AVX2) and reports the nominal clock, so
it is an estimate, not a measurement.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..convert.variants import VARIANTS
from ..deploy import time_blob
from .device import cpu_flags

# the micro-benchmark's GEMM: 4 x (784 x 512 x 512) MACs
GEMM_HW, GEMM_C, GEMM_LAYERS = 28, 512, 4
PEAK_MACS = GEMM_LAYERS * GEMM_HW * GEMM_HW * GEMM_C * GEMM_C


def theoretical_peak(flags: dict, threads: int) -> dict:
    """GMAC/s from ISA and nominal clock (estimate; see module doc)."""
    f = set(flags.get("flags", []))
    ghz = (flags.get("mhz") or 0) / 1000
    lanes = 16 if "avx512f" in f else 8 if "avx2" in f else 4
    fp32 = 2 * lanes if "fma" in f else lanes  # 2 FMA pipes; MACs per cycle
    if f & {"avx512_vnni", "avx_vnni"}:
        int8 = 4 * fp32  # VPDPBUSD: 4 int8 MACs per 32-bit lane
    elif "avx2" in f:
        int8 = 2 * fp32  # VPMADDUBSW: 2 per 16-bit lane (the u8 x s8 trick); XNNPACK uses VPMADDWD: = fp32
    else:
        int8 = fp32
    return {"fp32_gmacs": round(fp32 * ghz * threads, 1), "int8_gmacs": round(int8 * ghz * threads, 1),
            "ghz_nominal": ghz}


def gemm_keras_model():
    """The micro-benchmark as a Keras model (shared with the ONNX Runtime peer)."""
    import tf_keras

    inp = tf_keras.Input((GEMM_HW, GEMM_HW, GEMM_C), batch_size=1)
    x = inp
    for _ in range(GEMM_LAYERS):
        x = tf_keras.layers.Conv2D(GEMM_C, 1, use_bias=True)(x)
    return tf_keras.Model(inp, x)


def _gemm_model(kind: str) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(gemm_keras_model())
    if kind == "int8":
        rng = np.random.default_rng(0)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.standard_normal((1, GEMM_HW, GEMM_HW, GEMM_C)).astype("float32")]
                                               for _ in range(4))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def measure_peak(threads=(1, 2), runs: int = 20) -> dict:
    """Measured peak GMAC/s per (dtype, threads): best of `runs` on the GEMM micro-benchmark."""
    rng = np.random.default_rng(0)
    out = {"method": f"LiteRT/XNNPACK 1x1-conv GEMM {GEMM_HW * GEMM_HW}x{GEMM_C}x{GEMM_C} x{GEMM_LAYERS}, best of {runs}",
           "macs": PEAK_MACS, "cpu": cpu_flags(), "peak": {}}
    for kind in ("fp32", "int8"):
        blob = _gemm_model(kind)
        for t in threads:
            best = min(time_blob(blob, t, 1, 2, rng) for _ in range(runs))
            out["peak"][f"{kind}@{t}"] = round(PEAK_MACS / (best / 1e3) / 1e9, 1)
    out["theoretical"] = {str(t): theoretical_peak(out["cpu"], t) for t in threads}
    out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out["cores"] = os.cpu_count()
    return out


def compute_dtype(variant: str) -> str:
    """Which peak a variant is held against: integer variants of the variant table -> int8, the
    rest -> fp32; names outside the table (ONNX Runtime's "ort-int8") by their name."""
    if variant in VARIANTS:
        return "int8" if VARIANTS[variant].integer else "fp32"
    return "int8" if "int8" in variant else "fp32"


def add_roofline_columns(rows: list[dict], peak: dict) -> list[dict]:
    """Add peak_gmacs_per_s and frac_of_peak (achieved / measured peak, same dtype and threads)."""
    for r in rows:
        p = peak["peak"].get(f"{compute_dtype(str(r.get('variant', '')))}@{r.get('threads')}")
        r["peak_gmacs_per_s"] = p
        g = r.get("gmacs_per_s")
        r["frac_of_peak"] = round(g / p, 3) if p and g else None
    return rows
