"""Selective int8: keep the layers with the largest quantization error in float.

The study found per-channel int8 collapsing DeiT's accuracy. When full-integer int8 loses more than
`max_drop` accuracy against the float model on the validation split, TFLite's quantization
debugger measures every quantized tensor's error (RMSE relative to its quantization step) with the
float activations as input, and the model is re-converted with the worst 1, 2, 4, 8... nodes
denylisted (kept in float) until the accuracy is back within `max_drop` or `max_nodes` is reached.
The report says which nodes stayed float and what each step bought.
"""
from __future__ import annotations

import csv
import io
import os
import tempfile

import numpy as np

from .errors import GramTFError
from .stats import within_drop


def blob_probs(blob: bytes, images: np.ndarray, labels, size, preprocessing) -> np.ndarray:
    """Class probabilities of TFLite model bytes on uint8 images, through the deployment runtime."""
    from .runtime import Classifier

    fd, path = tempfile.mkstemp(suffix=".tflite")
    os.close(fd)
    try:
        with open(path, "wb") as fh:
            fh.write(blob)
        clf = Classifier(path, threads=2, labels=labels, input_size=size, preprocessing=preprocessing)
        return clf.predict_arrays(images)
    finally:
        os.unlink(path)


def _accuracy(blob: bytes, images: np.ndarray, y: np.ndarray, labels, size, preprocessing) -> float:
    return float(np.mean(blob_probs(blob, images, labels, size, preprocessing).argmax(1) == y))


def layer_errors(debugger) -> list[dict]:
    """Per-tensor error of the quantized model, worst first (rmse / quantization scale)."""
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    rows = []
    for r in csv.DictReader(buf):
        scale = float(r.get("scale") or 0.0)
        mse = float(r.get("mean_squared_error") or 0.0)
        rows.append({"tensor": r["tensor_name"], "op": r["op_name"],
                     "rmse_over_scale": (mse ** 0.5) / scale if scale > 0 else 0.0})
    return sorted(rows, key=lambda r: -r["rmse_over_scale"])


def ranked_errors(debugger) -> list[dict]:
    """Run the debugger (float and quantized models side by side) and rank its quantized tensors."""
    from .convert import _quiet_absl

    with _quiet_absl():
        debugger.run()
    return [r for r in layer_errors(debugger) if r["rmse_over_scale"] > 0]


def float_accuracy(model, images: np.ndarray, y: np.ndarray, preprocessing: dict) -> float:
    """The Keras model's accuracy: what a mixed-precision artifact is held to."""
    from .data import make_dataset

    probs = model.predict(make_dataset(images, None, preprocessing, 32), verbose=0)
    return float(np.mean(probs.argmax(1) == y))


def recover_accuracy(try_nodes, ranked: list[str], float_acc: float, max_drop: float, max_nodes: int):
    """Keep the worst 1, 2, 4, 8... `ranked` nodes in float until the accuracy is within `max_drop`.

    `try_nodes(nodes)` converts with `nodes` float and returns (accuracy, payload). Returns
    (accuracy, payload, nodes, steps) of the first step within `max_drop`, else of the most accurate.
    """
    best, steps, k = None, [], 1
    while k <= min(max_nodes, len(ranked)):
        nodes = ranked[:k]
        acc, payload = try_nodes(nodes)
        steps.append({"float_nodes": k, "accuracy": acc})
        if within_drop(float_acc, acc, max_drop):
            return acc, payload, nodes, steps
        if best is None or acc > best[0]:
            best = (acc, payload, nodes)
        k *= 2
    if best is None:
        return None, None, [], steps
    return (*best, steps)


def selective_int8(model, size: int, preprocessing: dict, representative: np.ndarray, val_images: np.ndarray,
                   val_y: np.ndarray, labels, max_drop: float = 0.01, max_nodes: int = 64,
                   batch_size: int = 1) -> tuple[bytes, dict]:
    """Full-int8 conversion with the fewest float nodes that keep accuracy within `max_drop`."""
    from .convert import CalibratedInt8, representative_gen

    if representative is None or len(representative) == 0:
        raise GramTFError("int8-selective needs a representative dataset (training images)")
    if len(val_images) == 0:
        raise GramTFError("int8-selective needs validation (or test) images to measure the accuracy drop")
    rep_gen = representative_gen(representative, preprocessing, batch_size)
    float_acc = float_accuracy(model, val_images, val_y, preprocessing)

    int8 = CalibratedInt8(model, size, rep_gen, batch_size)
    blob = int8.quantize()
    acc = _accuracy(blob, val_images, val_y, labels, size, preprocessing)
    steps = [{"float_nodes": 0, "accuracy": acc}]
    report = {"float_accuracy": float_acc, "int8_accuracy": acc, "max_drop": max_drop, "n_val": int(len(val_y)),
              "float_nodes": [], "steps": steps}
    if within_drop(float_acc, acc, max_drop):
        report["final_accuracy"] = acc
        return blob, report
    ranked = int8.ranked_errors()
    report["worst_layers"] = ranked[:10]

    def try_nodes(nodes):
        candidate = int8.quantize(nodes)
        return _accuracy(candidate, val_images, val_y, labels, size, preprocessing), candidate

    got, candidate, nodes, more = recover_accuracy(try_nodes, [r["tensor"] for r in ranked], float_acc, max_drop,
                                                   max_nodes)
    steps.extend(more)
    if got is None or got <= acc:  # nothing helped: full int8 stays
        got, candidate, nodes = acc, blob, []
    report.update(final_accuracy=got, float_nodes=nodes, recovered=got - acc)
    return candidate, report
