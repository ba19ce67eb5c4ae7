"""The TFLite converter toolkit: plain conversions (the variants it registers), calibration-once
full-int8 with any nodes kept float, and the checks every artifact gets (weight stats, IO types,
agreement with the Keras model).

Imports the variant table below it and nothing above it (never the strategies or the stage).
"""
from __future__ import annotations

import csv
import dataclasses
import io
from typing import Optional

import numpy as np

from ..config import IO_TYPES
from ..deploy import IN_GRAPH, Classifier, make_interpreter, prepare_failure
from ..deploy.profile import MAC_OPS
from ..errors import GramTFError
from .calibration import SEARCH, quantize_calibrated
from .tracing import concrete_function, quiet_absl, representative_gen
from .recipe import Int8Recipe, calibrate, full_integer
from .variants import BuildRequest, Variant, get_variant, register_variant


def _setup_fp32(conv, ctx):
    pass


def _setup_fp16(conv, ctx):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]


def _setup_dynamic(conv, ctx):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]


def _setup_int16x8(conv, ctx):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = ctx["representative"]
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


def _setup_int8(conv, ctx, per_channel: bool = True):
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = ctx["representative"]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io = tf.as_dtype(ctx["io_type"])  # config.IO_TYPES are TensorFlow's dtype names
    conv.inference_input_type = io
    conv.inference_output_type = io
    if not per_channel:
        conv._experimental_disable_per_channel = True  # the only switch TFLite offers for this


def _setup_int8_per_tensor(conv, ctx):
    _setup_int8(conv, ctx, per_channel=False)


class CalibratedInt8:
    """Full-int8 conversions of one model with any set of nodes kept float, calibrated once.

    The calibrate-only route (convert.calibration): the representative dataset runs through the
    model once, the int8 recipe (equalization, bias correction, calibration method) is applied,
    and each `quantize(float_nodes)` only re-runs the quantizer on the calibrated model with those
    nodes (output tensor names) denylisted. Float IO, since some nodes stay float. Shared by
    int8-selective and int8-fast, whose searches try many denylists.
    """

    def __init__(self, model, size: int, rep_gen, batch_size: int = 1, recipe: Optional[Int8Recipe] = None,
                 representative: Optional[np.ndarray] = None, preprocessing: Optional[dict] = None):
        self.recipe = recipe or Int8Recipe()
        if self.recipe.calibration.method == SEARCH:  # these variants search float nodes on validation instead
            self.recipe = dataclasses.replace(self.recipe, calibration=dataclasses.replace(self.recipe.calibration,
                                                                                           method="minmax"))
        self.rep_gen = rep_gen
        self.calibrated, self.report = calibrate(model, size, preprocessing or {}, representative, self.recipe,
                                                 per_channel=True, batch_size=batch_size, rep_gen=rep_gen)
        self._cache: dict = {}

    def quantize(self, float_nodes=()) -> bytes:
        """Model bytes with `float_nodes` kept float (cached per set of nodes)."""
        key = frozenset(float_nodes)
        if key not in self._cache:
            self._cache[key] = quantize_calibrated(self.calibrated, per_channel=True, io_type="float32",
                                                   float_nodes=key)
        return self._cache[key]

    def ranked_errors(self, float_nodes=()) -> list[dict]:
        """The quantized tensors of the model with `float_nodes` float, worst error first."""
        import tensorflow as tf

        debug = quantize_calibrated(self.calibrated, per_channel=True, io_type="float32", float_nodes=float_nodes,
                                    debug=True)
        with quiet_absl():
            debugger = tf.lite.experimental.QuantizationDebugger(quant_debug_model_content=debug,
                                                                 debug_dataset=self.rep_gen)
        return ranked_errors(debugger)


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
    with quiet_absl():
        debugger.run()
    return [r for r in layer_errors(debugger) if r["rmse_over_scale"] > 0]


def convert_with(model, setup, size: int, ctx: dict, batch_size: int = 1, what: str = "",
                 preprocessing: Optional[dict] = None) -> bytes:
    """Convert with a converter `setup(conv, ctx)`: the trackable-free path first, SavedModel second
    (a pixel-input `preprocessing` puts the normalization into the graph)."""
    import tensorflow as tf

    # Without a trackable object the converter freezes the traced graph directly: ~2 s for a
    # MobileNet instead of ~30 s for its SavedModel round trip (measured on 2 cores). The
    # SavedModel path is the fallback.
    errors = []
    for trackable in (None, model):
        try:
            with quiet_absl():
                conv = tf.lite.TFLiteConverter.from_concrete_functions(
                    [concrete_function(model, batch_size, size, preprocessing)], trackable)
                setup(conv, ctx)
                return conv.convert()
        except Exception as exc:
            errors.append(" ".join(str(exc).split())[:240] or type(exc).__name__)
    raise GramTFError(f"TFLite conversion to {what} failed: {errors[-1]}")


# variants whose models LiteRT may abort on while preparing (checked in a child process first;
# measured: int16x8 with Keras' LayerNormalization aborts LiteRT 2.3's allocate_tensors)
PREPARED_IN_CHILD = {"int16x8"}


def _converter_builder(setup, name: str):
    def build(req: BuildRequest):
        spec = get_variant(name)
        io_type = req.io_type if req.io_type in spec.io_types else spec.io_types[0]
        if spec.per_channel is not None and req.recipe is not None and not req.recipe.trivial:
            blob, recipe = full_integer(req.model, req.size, req.preprocessing, req.representative, req.recipe,
                                        per_channel=spec.per_channel, io_type=io_type, batch_size=req.batch_size,
                                        validation=req.validation)
            return blob, {"recipe": recipe}
        ctx = {"representative": representative_gen(req.representative, req.preprocessing, req.batch_size)
               if spec.integer else None, "io_type": io_type}
        blob = convert_with(req.model, setup, req.size, ctx, req.batch_size, name, req.preprocessing)
        if name in PREPARED_IN_CHILD:
            failure = prepare_failure(blob)
            if failure:
                raise GramTFError(f"{name}: {failure}; LiteRT's 16-bit kernels do not take one of this model's "
                                  "ops (e.g. LayerNormalization): use int8, int8-fast, dynamic or fp16")
        # the converter's own path: min/max calibration, nothing else
        return blob, ({"recipe": {**Int8Recipe().as_dict(), "applied": {}}} if spec.per_channel is not None else None)

    return build


def _plain(name: str, description: str, setup, integer: bool = False, **kw) -> None:
    register_variant(Variant(name, description, integer, _converter_builder(setup, name), **kw))


_INT_IO = IO_TYPES  # every IO type the config offers
_plain("fp32", "float32 reference", _setup_fp32)
_plain("fp16", "float16 weights (half the size; float compute on CPU)", _setup_fp16)
_plain("dynamic", "int8 weights, float activations (dynamic range)", _setup_dynamic)
_plain("int16x8", "int16 activations, int8 weights (accuracy over speed)", _setup_int16x8, integer=True)
_plain("int8", "full integer, per-channel weight scales", _setup_int8, integer=True, io_types=_INT_IO,
       per_channel=True)
_plain("int8-per-tensor", "full integer, one scale per weight tensor", _setup_int8_per_tensor, integer=True,
       io_types=_INT_IO, per_channel=False)
_plain("qat-int8", "quantization-aware training, then full integer", _setup_int8, integer=True, training="qat",
       io_types=_INT_IO)
_plain("pqat-int8", "pruning-preserving QAT on a pruned model, then full integer", _setup_int8, integer=True,
       training="pqat", io_types=_INT_IO)


def pin_pixel_input(blob: bytes) -> bytes:
    """An integer pixel-input model's input set to exactly the pixel values: scale 1, zero point 0 for uint8
    (-128 for int8), what MediaPipe and the Task Library feed. Calibration gave the input tensor the range
    the representative images happened to span; every kernel reads its input's scale at prepare time, so
    the first op (the converter's QUANTIZE from uint8) now requantizes pixels exactly into the range
    calibration chose for the graph after it."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    zero_points = {3: 0, 9: -128}  # TFLite TensorType UINT8, INT8
    subgraph = model.subgraphs[0]
    changed = False
    for index in subgraph.inputs:
        tensor = subgraph.tensors[index]
        q = tensor.quantization
        if tensor.type in zero_points and q is not None and q.scale is not None and len(q.scale) == 1:
            q.scale, q.zeroPoint = [1.0], [zero_points[tensor.type]]
            q.min, q.max = None, None
            changed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if changed else blob


def convert_variant(model, variant: str, size: int, preprocessing: dict,
                    representative: Optional[np.ndarray] = None, io_type: str = "int8", batch_size: int = 1,
                    validation: Optional[tuple] = None, options: Optional[dict] = None,
                    recipe: Optional[Int8Recipe] = None) -> tuple[bytes, Optional[dict]]:
    """Convert a Keras model to TFLite bytes for one variant through its builder in the variant
    table; returns (bytes, the builder's report or None). No files written."""
    spec = get_variant(variant)
    if spec.integer and (representative is None or len(representative) == 0):
        raise GramTFError(f"variant {variant} needs a representative dataset (training images); none was given")
    if spec.needs_validation and (validation is None or len(validation[1]) == 0):
        raise GramTFError(f"{variant} needs validation (or test) images to measure the accuracy drop: "
                          "use gram_tf.convert.convert_run or pass validation=(images, labels)")
    req = BuildRequest(model, size, preprocessing, representative, io_type, batch_size, validation,
                       dict(options or {}), recipe if spec.per_channel is not None else None)
    blob, report = spec.build(req)
    return (pin_pixel_input(blob) if preprocessing.get(IN_GRAPH) else blob), report


def convert_model(model, variant: str, size: int, preprocessing: dict,
                  representative: Optional[np.ndarray] = None, io_type: str = "int8",
                  batch_size: int = 1, options: Optional[dict] = None, recipe: Optional[Int8Recipe] = None) -> bytes:
    """Convert a Keras model to TFLite bytes for one variant (no files written)."""
    return convert_variant(model, variant, size, preprocessing, representative, io_type, batch_size,
                           options=options, recipe=recipe)[0]


def tflite_weight_stats(path) -> dict:
    """Kernel sparsity and weight-quantization granularity read from the .tflite itself."""
    # Builtin kernels (no XNNPACK) with every tensor kept, after one inference: float16 and
    # dynamic-range weights then hold their dequantized values too.
    interp = make_interpreter(str(path), threads=1, delegate=False, experimental_preserve_all_tensors=True)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interp.invoke()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    zeros = total = 0
    granularity = set()
    weight_dtypes = set()
    for op in interp._get_ops_details():
        if op["op_name"] not in MAC_OPS:
            continue
        if len(op["inputs"]) < 2 or op["inputs"][1] < 0:
            continue
        idx = op["inputs"][1]
        try:
            w = interp.get_tensor(idx)
        except ValueError:
            continue  # not a constant (e.g. an activation matmul)
        d = details[idx]
        if op["op_name"] == "BATCH_MATMUL" and not np.any(w):
            continue
        zeros += int(np.sum(w == 0))  # int8 weights are symmetric (zero point 0)
        total += w.size
        weight_dtypes.add(np.dtype(d["dtype"]).name)
        scales = d["quantization_parameters"]["scales"]
        if len(scales) > 1:
            granularity.add("per-channel")
        elif len(scales) == 1:
            granularity.add("per-tensor")
    return {"sparsity": zeros / total if total else 0.0, "weight_dtypes": sorted(weight_dtypes),
            "weight_quantization": "+".join(sorted(granularity)) or "none"}


def io_details(path) -> dict:
    interp = make_interpreter(str(path), threads=1, delegate=False)
    out = {}
    for kind, det in (("input", interp.get_input_details()[0]), ("output", interp.get_output_details()[0])):
        q = det["quantization_parameters"]
        out[kind] = {"dtype": np.dtype(det["dtype"]).name, "shape": det["shape"].tolist(),
                     "scale": [float(s) for s in q["scales"]], "zero_point": [int(z) for z in q["zero_points"]]}
    return out


def check_artifact(path, keras_probs: np.ndarray, images: np.ndarray, max_disagreement: float) -> dict:
    """Run the artifact in LiteRT on the check images and compare with the Keras probabilities (the
    artifact's own scores: its temperature would move them away from the Keras model's)."""
    clf = Classifier(str(path), threads=2, temperature=False)
    probs = clf.predict_arrays(images)
    agree = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
    diff = np.abs(probs - keras_probs)
    return {"n": int(len(images)), "top1_agreement": agree, "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "flagged": bool(agree < 1.0 - max_disagreement)}


