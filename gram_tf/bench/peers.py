"""Peer runtime: the same Keras model in ONNX Runtime, fp32 and static int8 (QDQ, per-channel).

Optional extra: `pip install -e ".[peers]"` (tf2onnx, onnx, onnxruntime). tf2onnx pins an old
protobuf, so it is kept out of the default install. Rows have the bench row shape with
runtime="onnxruntime" and variants "ort-fp32" / "ort-int8", so they sit beside LiteRT's in one
table. ORT's int8 uses uint8 activations x int8 weights (its recommended x86 format), which its
AVX2 kernels multiply with VPMADDUBSW (32 MACs per instruction, twice XNNPACK's VPMADDWD path).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..deploy import latency_stats, sample_ms
from ..deploy.timing import first_call_ms
from ..errors import GramTFError
from ..io_utils import atomic_path
from .roofline import GEMM_C, GEMM_HW, GEMM_LAYERS, PEAK_MACS, gemm_keras_model


def require_peers():
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as exc:
        raise GramTFError(f"ONNX Runtime peers need the 'peers' extra: pip install 'gram_tf[peers]' ({exc.name} "
                          "missing)") from None


def export_onnx(model, size: int, path, batch_size: int = 1, opset: int = 17, channels: int = 3) -> Path:
    """Keras model -> ONNX file (static batch, NHWC float input like the .tflite)."""
    require_peers()
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec((batch_size, size, size, channels), tf.float32, name="image")
    fn = tf.function(lambda x: model(x, training=False))
    onnx_model, _ = tf2onnx.convert.from_function(fn, input_signature=(spec,), opset=opset)
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        tmp.write_bytes(onnx_model.SerializeToString())
    return path


def quantize_onnx(fp32_path, out_path, calibration: np.ndarray, per_channel: bool = True) -> Path:
    """Static int8 (QDQ) with ORT's calibrator on already-normalized float images."""
    require_peers()
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".onnx") as tmp:
        q.quantize_static(str(fp32_path), str(tmp), Reader(), quant_format=q.QuantFormat.QDQ,
                          per_channel=per_channel, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=q.CalibrationMethod.MinMax)
    return out_path


def session(path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def time_onnx(path, threads: int, x: np.ndarray, runs: int = 50, warmup: int = 10) -> dict:
    """Latency of one image (batch 1) in the bench row's terms."""
    t0 = time.perf_counter()
    sess = session(path, threads)
    init_ms = (time.perf_counter() - t0) * 1e3
    name = sess.get_inputs()[0].name
    feed = {name: x[:1].astype(np.float32)}
    first_ms = first_call_ms(lambda: sess.run(None, feed))
    stats = latency_stats(sample_ms(lambda: sess.run(None, feed), runs, warmup))
    return {"runtime": "onnxruntime", "threads": threads, "size_bytes": Path(path).stat().st_size,
            **{k: stats[k] for k in ("latency_ms_mean", "latency_ms_std", "latency_ms_p50", "latency_ms_p90",
                                     "latency_ms_p99")},
            "first_ms": first_ms, "init_ms": init_ms, "images_per_s": stats["images_per_s"], "runs": runs,
            "path": str(path)}


def measure_peak_onnx(threads=(1, 2), runs: int = 20) -> dict:
    """ONNX Runtime's fp32 and int8 (QDQ u8 x s8) GMAC/s on the same GEMM micro-benchmark as
    gram_tf.roofline.measure_peak, so the two runtimes' kernels are compared on equal work."""
    import tempfile

    require_peers()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, GEMM_HW, GEMM_HW, GEMM_C)).astype(np.float32)
    out = {"method": f"ONNX Runtime 1x1-conv GEMM {GEMM_HW * GEMM_HW}x{GEMM_C}x{GEMM_C} x{GEMM_LAYERS}, best of {runs}", "peak": {}}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = export_onnx(gemm_keras_model(), GEMM_HW, Path(tmp) / "gemm.onnx", channels=GEMM_C)
        int8_path = quantize_onnx(spec_path, Path(tmp) / "gemm_int8.onnx", data)
        for kind, path in (("fp32", spec_path), ("int8", int8_path)):
            for t in threads:
                sess = session(path, t)
                feed = {sess.get_inputs()[0].name: data[:1]}
                best_ms = sample_ms(lambda: sess.run(None, feed), runs, warmup=3).min()
                out["peak"][f"{kind}@{t}"] = round(PEAK_MACS / (best_ms / 1e3) / 1e9, 1)
    return out
