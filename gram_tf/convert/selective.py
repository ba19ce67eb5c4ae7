"""Selective int8: keep the layers with the largest quantization error in float.

The study found per-channel int8 collapsing DeiT's accuracy. When full-integer int8 loses more than
`max_drop` accuracy against the float model on the validation split, TFLite's quantization
debugger measures every quantized tensor's error (RMSE relative to its quantization step) with the
float activations as input, and the model is re-converted with the worst 1, 2, 4, 8... nodes
denylisted (kept in float) until the accuracy is back within `max_drop` or `max_nodes` is reached.
The report says which nodes stayed float and what each step bought.
"""
from __future__ import annotations

import numpy as np

from ..errors import GramTFError
from ..metrics import within_drop
from .converter import CalibratedInt8, representative_gen
from .guard import float_accuracy, recover_accuracy
from .scoring import blob_accuracy
from .variants import Variant, register_variant


def selective_int8(model, size: int, preprocessing: dict, representative: np.ndarray, val_images: np.ndarray,
                   val_y: np.ndarray, labels, max_drop: float = 0.01, max_nodes: int = 64,
                   batch_size: int = 1, recipe=None) -> tuple[bytes, dict]:
    """Full-int8 conversion with the fewest float nodes that keep accuracy within `max_drop`."""
    if representative is None or len(representative) == 0:
        raise GramTFError("int8-selective needs a representative dataset (training images)")
    if len(val_images) == 0:
        raise GramTFError("int8-selective needs validation (or test) images to measure the accuracy drop")
    rep_gen = representative_gen(representative, preprocessing, batch_size)
    float_acc = float_accuracy(model, val_images, val_y, preprocessing)

    int8 = CalibratedInt8(model, size, rep_gen, batch_size, recipe, representative, preprocessing)
    blob = int8.quantize()
    acc = blob_accuracy(blob, val_images, val_y, labels, size, preprocessing)
    steps = [{"float_nodes": 0, "accuracy": acc}]
    report = {"recipe": int8.report, "float_accuracy": float_acc, "int8_accuracy": acc, "max_drop": max_drop, "n_val": int(len(val_y)),
              "float_nodes": [], "steps": steps}
    if within_drop(float_acc, acc, max_drop):
        report["final_accuracy"] = acc
        return blob, report
    ranked = int8.ranked_errors()
    report["worst_layers"] = ranked[:10]

    def try_nodes(nodes):
        candidate = int8.quantize(nodes)
        return blob_accuracy(candidate, val_images, val_y, labels, size, preprocessing), candidate

    got, candidate, nodes, more = recover_accuracy(try_nodes, [r["tensor"] for r in ranked], float_acc, max_drop,
                                                   max_nodes)
    steps.extend(more)
    if got is None or got <= acc:  # nothing helped: full int8 stays
        got, candidate, nodes = acc, blob, []
    report.update(final_accuracy=got, float_nodes=nodes, recovered=got - acc)
    return candidate, report


def _build(req):
    val_x, val_y = req.validation
    labels = [str(i) for i in range(int(req.model.output_shape[-1]))]
    # options: selective_int8's keyword arguments (max_drop, max_nodes)
    return selective_int8(req.model, req.size, req.preprocessing, req.representative, val_x, val_y, labels,
                          batch_size=req.batch_size, recipe=req.recipe, **req.options)


# float IO, since some nodes stay float
register_variant(Variant("int8-selective", "int8 with the highest-error layers kept in float", True, _build,
                         needs_validation=True, report_key="selective", per_channel=True,
                         config_options=lambda cfg: {"max_drop": cfg.selective_max_drop_pp / 100}))  # a fraction here
