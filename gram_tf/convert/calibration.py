"""Activation ranges for full-integer variants: min/max, percentile, MSE and entropy calibration.

The TFLite converter calibrates every activation with the global min and max over the
representative images; one outlier pixel then stretches a tensor's int8 step for every image.
The route here (the one TensorFlow's QuantizationDebugger uses): convert with calibration only
(`_experimental_calibrate_only`: a float model whose tensors carry the calibrated min/max), run
that model over the representative images with every tensor kept to histogram each calibrated
activation, compute each range in numpy, write it into the tensor's min/max fields, and quantize
with `mlir_quantize`. The model input keeps its range (clipping pixels is the preprocessing's job),
and so do tensors whose range the quantizer fixes (softmax, logistic, tanh outputs) and the logits
a softmax reads (clipping them ties the top classes).

Methods, each from its published definition:
- minmax: the converter's own ranges (the route gives back exactly the converter's model).
- percentile (ONNX Runtime, TensorRT): the `percentile` and 100 - `percentile` quantiles of all
  values seen (only the upper one for a non-negative tensor).
- mse (TensorFlow's StableHLO quantizer, Banner et al.'s ACIQ): the range [a lo, a hi], a in
  (0, 1], that minimises the expected squared error of 8-bit rounding (step^2 / 12 for values
  inside) plus clipping (squared distance to the bound for values outside).
- entropy (TensorRT, Migacz 2017): the range whose 8-bit quantized histogram Q (built from the
  values inside) is closest in KL divergence to the reference P (outliers piled into the edge
  bins), over the same family of ranges holding at least 256 bins (with the default 2048 bins:
  clipping to 1/8 of the range at most).
- meanmax (ONNX Runtime's MinMax with moving average, NNCF's mean min/max, the moving-average
  ranges of quantization-aware training): the mean over representative samples of each sample's
  own min and max. Every image counts once, however extreme: where per-image ranges drift several
  times from image to image (EfficientNet's swish + squeeze-excitation), the pooled quantiles above
  are set by the few widest images, and by which ones happened to be drawn.
- search: each method of SEARCH_CANDIDATES quantizes the model and the one most accurate on the
  validation images is kept (gram_tf.convert.recipe; one calibration pass, one histogram pass).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from ..config import CALIBRATION_METHODS, CALIBRATION_SEARCH, LEVELS, field_range
from ..errors import GramTFError
from .tracing import concrete_function, quiet_absl

METHODS = CALIBRATION_METHODS  # the methods below, each implemented here (LEVELS: int8's 256 steps)
SEARCH = CALIBRATION_SEARCH
# what `search` tries, in order (ties keep the earlier): per-tensor int8's measured default first,
# then the methods that won on pruned MobileNetV2s in docs/pruning.md (entropy left out: it
# collapsed a pruned MobileNetV2-0.35 to a constant output there)
SEARCH_CANDIDATES = (("percentile", 99.99), ("percentile", 99.9), ("percentile", 99.999), ("minmax", None), ("mse", None))
FIXED_RANGE_OPS = ("SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX")


@dataclass(frozen=True)
class Calibration:
    """How activation ranges are set (convert.calibration and its parameters)."""
    method: str = "minmax"
    percentile: float = 99.99  # percentile: the quantile kept (both tails of a signed tensor)
    bins: int = 2048  # histogram bins between a tensor's min and max (percentile, mse, entropy)
    candidates: int = 128  # mse, entropy: ranges tried, a = 1/candidates ... 1

    def __post_init__(self):
        if self.method not in METHODS + (SEARCH,):  # "auto" is the recipe's word, resolved before this
            raise GramTFError(f"convert.calibration: unknown method {self.method!r}; "
                              f"choose one of {', '.join(METHODS + (SEARCH,))}")
        # the config's declared ranges: one definition for both
        field_range("convert.calibration_percentile").check(self.percentile, "convert.calibration_percentile")
        field_range("convert.calibration_bins").check(self.bins, "convert.calibration_bins")

    def as_dict(self) -> dict:
        d = asdict(self)
        if self.method == SEARCH:
            d["tries"] = [m if p is None else f"{m} {p:g}" for m, p in SEARCH_CANDIDATES]
        if self.method != "percentile":
            d.pop("percentile")
        if self.method in ("minmax", "meanmax"):
            d.pop("bins"), d.pop("candidates")
        return d


# ---- ranges from a histogram -------------------------------------------------------------------

def _quantile(hist: np.ndarray, edges: np.ndarray, q: float) -> float:
    """The q-quantile (0..1) of the values a histogram counts, linear inside a bin."""
    cdf = np.cumsum(hist, dtype=np.float64)
    total = cdf[-1]
    if total <= 0:
        return float(edges[0])
    target = q * total
    i = int(np.searchsorted(cdf, target, side="left"))
    i = min(i, len(hist) - 1)
    before = cdf[i - 1] if i > 0 else 0.0
    frac = (target - before) / hist[i] if hist[i] > 0 else 0.0
    return float(edges[i] + frac * (edges[i + 1] - edges[i]))


def _candidate_ranges(lo: float, hi: float, candidates: int):
    """The family [a lo, a hi] for a = 1/candidates ... 1 (zero stays inside)."""
    for k in range(1, candidates + 1):
        a = k / candidates
        yield a * lo, a * hi


def _mse(hist: np.ndarray, centers: np.ndarray, lo: float, hi: float) -> float:
    step = (hi - lo) / (LEVELS - 1)
    inside = (centers >= lo) & (centers <= hi)
    clip = np.where(centers < lo, lo - centers, np.where(centers > hi, centers - hi, 0.0))
    return float(np.sum(hist[inside]) * step * step / 12.0 + np.sum(hist * clip * clip))


def _kl(hist: np.ndarray, centers: np.ndarray, lo: float, hi: float) -> float:
    """KL(P || Q): P = the histogram with outliers piled into the edge bins of [lo, hi], Q = P
    quantized to LEVELS steps (each step's mass spread evenly over its non-empty bins)."""
    inside = np.nonzero((centers >= lo) & (centers <= hi))[0]
    if len(inside) < LEVELS:  # finer steps than bins: Q would copy P (TensorRT starts at 128 bins too)
        return np.inf
    raw = hist[inside].astype(np.float64)
    p = raw.copy()
    p[0] += hist[: inside[0]].sum()
    p[-1] += hist[inside[-1] + 1:].sum()
    step = (hi - lo) / (LEVELS - 1)
    level = np.clip(np.floor((centers[inside] - lo) / step + 0.5), 0, LEVELS - 1).astype(np.int64)
    # Q from the slice without the outliers (as TensorRT does): clipping shows up as divergence
    mass = np.bincount(level, weights=raw, minlength=LEVELS)
    nonzero = np.bincount(level, weights=(raw > 0).astype(np.float64), minlength=LEVELS)
    q = np.where(raw > 0, mass[level] / np.maximum(nonzero[level], 1), 0.0)
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum <= 0 or q_sum <= 0:
        return np.inf
    p, q = p / p_sum, q / q_sum
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))


def range_from_histogram(hist: np.ndarray, edges: np.ndarray, calibration: Calibration) -> tuple[float, float]:
    """The (min, max) a method picks for the values a histogram over [edges[0], edges[-1]] counts."""
    lo, hi = float(edges[0]), float(edges[-1])
    method = calibration.method
    if method == "minmax" or hist.sum() <= 0 or hi <= lo:
        return lo, hi
    if method == "percentile":
        p = float(calibration.percentile) / 100.0
        new_hi = _quantile(hist, edges, p) if hi > 0 else hi
        new_lo = _quantile(hist, edges, 1.0 - p) if lo < 0 else lo
        return min(new_lo, 0.0) if lo < 0 else lo, max(new_hi, 0.0) if hi > 0 else hi
    centers = 0.5 * (edges[:-1] + edges[1:])
    cost = _mse if method == "mse" else _kl
    best, best_cost = (lo, hi), np.inf
    for cand in _candidate_ranges(lo, hi, int(calibration.candidates)):
        c = cost(hist, centers, *cand)
        if c < best_cost - 1e-15 * abs(best_cost if np.isfinite(best_cost) else 0):
            best, best_cost = cand, c
    return float(best[0]), float(best[1])


def histogram(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Counts of `values` in `bins` equal bins over [lo, hi] (values outside go to the edges)."""
    if hi <= lo:
        return np.zeros(bins, np.int64)
    idx = np.floor((values.ravel().astype(np.float64) - lo) * (bins / (hi - lo))).astype(np.int64)
    return np.bincount(np.clip(idx, 0, bins - 1), minlength=bins)


def range_from_extremes(mins: np.ndarray, maxs: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """meanmax: the mean of the samples' own minima and maxima; a side of the calibrated range
    [lo, hi] that does not cross zero stays (a non-negative tensor keeps its lower end), and zero
    stays inside, as the quantizer needs."""
    if hi <= lo or len(mins) == 0:
        return lo, hi
    new_lo = min(float(np.mean(mins)), 0.0) if lo < 0 else lo
    new_hi = max(float(np.mean(maxs)), 0.0) if hi > 0 else hi
    return new_lo, new_hi


# ---- the calibrate-only route ------------------------------------------------------------------

def calibrate_only(model, size: int, rep_gen, batch_size: int = 1, preprocessing: Optional[dict] = None) -> bytes:
    """The float TFLite model with the converter's calibrated min/max on every activation (the graph takes
    pixels when `preprocessing` is a pixel-input one)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function(model, batch_size, size,
                                                                               preprocessing)])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep_gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.experimental_mlir_quantizer = True
    conv._experimental_calibrate_only = True  # what QuantizationDebugger converts with
    with quiet_absl():
        return conv.convert()


def _model_object(blob: bytes):
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))


def calibrated_ranges(calibrated: bytes) -> dict:
    """{tensor index: (min, max)} of the activations a calibrated model may have edited: every
    calibrated tensor except the model inputs and the outputs of fixed-range ops."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = _model_object(calibrated)
    graph = obj.subgraphs[0]
    fixed = set(int(i) for i in graph.inputs)
    for op in graph.operators:
        name = flatbuffer_utils.opcode_to_name(obj, op.opcodeIndex)
        if name in FIXED_RANGE_OPS:
            fixed.update(int(i) for i in op.outputs)
        if name in ("SOFTMAX", "LOG_SOFTMAX"):  # clipped logits tie classes: the argmax breaks
            fixed.update(int(i) for i in op.inputs)
    out = {}
    for i, t in enumerate(graph.tensors):
        q = t.quantization
        if i in fixed or q is None or q.min is None or q.max is None or len(q.min) != 1:
            continue
        out[i] = (float(q.min[0]), float(q.max[0]))
    return out


def _each_sample(calibrated: bytes, rep_gen):
    """The calibrated float model's interpreter after each representative sample, every tensor kept."""
    from ..deploy import make_interpreter

    interp = make_interpreter(calibrated, threads=2, delegate=False, experimental_preserve_all_tensors=True)
    inp = interp.get_input_details()[0]
    for sample in rep_gen():
        interp.set_tensor(inp["index"], np.asarray(sample[0], inp["dtype"]))
        interp.invoke()
        yield interp


def collect_histograms(calibrated: bytes, rep_gen, ranges: dict, bins: int) -> dict:
    """{tensor index: histogram over its calibrated [min, max]} over the representative images."""
    hists = {i: np.zeros(bins, np.int64) for i in ranges}
    for interp in _each_sample(calibrated, rep_gen):
        for i, (lo, hi) in ranges.items():
            hists[i] += histogram(interp.get_tensor(i), lo, hi, bins)
    return hists


def collect_extremes(calibrated: bytes, rep_gen, ranges: dict) -> dict:
    """{tensor index: (minima, maxima)}, one entry per representative sample."""
    mins = {i: [] for i in ranges}
    maxs = {i: [] for i in ranges}
    for interp in _each_sample(calibrated, rep_gen):
        for i in ranges:
            t = interp.get_tensor(i)
            mins[i].append(float(t.min()))
            maxs[i].append(float(t.max()))
    return {i: (np.asarray(mins[i]), np.asarray(maxs[i])) for i in ranges}


def set_ranges(calibrated: bytes, ranges: dict) -> bytes:
    """The calibrated model with the given {tensor index: (min, max)} written into its tensors."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = _model_object(calibrated)
    tensors = obj.subgraphs[0].tensors
    for i, (lo, hi) in ranges.items():
        q = tensors[i].quantization
        q.min = np.array([lo], np.float32)
        q.max = np.array([hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def search_candidates(calibration: Calibration) -> list[Calibration]:
    """The methods `search` tries, with the configured bins and candidate ranges."""
    return [Calibration(m, percentile=p if p is not None else calibration.percentile, bins=calibration.bins,
                        candidates=calibration.candidates) for m, p in SEARCH_CANDIDATES]


def recalibrate(calibrated: bytes, rep_gen, calibration: Calibration, hists: Optional[dict] = None) -> tuple[bytes, dict]:
    """Apply a calibration method to a calibrated model; returns (model, report). `hists` (from
    collect_histograms with the same bins) saves the pass over the representative images."""
    if calibration.method == SEARCH:
        raise GramTFError(f"convert.calibration {SEARCH} needs validation images to choose with; "
                          f"this variant takes one of {', '.join(METHODS)}")
    if calibration.method == "minmax":
        return calibrated, {"method": "minmax", "tensors": 0}
    ranges = calibrated_ranges(calibrated)
    new = {}
    if calibration.method == "meanmax":
        extremes = collect_extremes(calibrated, rep_gen, ranges)
        for i, (lo, hi) in ranges.items():
            new[i] = range_from_extremes(*extremes[i], lo, hi)
    else:
        if hists is None:
            hists = collect_histograms(calibrated, rep_gen, ranges, int(calibration.bins))
        for i, (lo, hi) in ranges.items():
            edges = np.linspace(lo, hi, int(calibration.bins) + 1)
            new[i] = range_from_histogram(hists[i], edges, calibration)
    shrink = [(n[1] - n[0]) / (o[1] - o[0]) for n, o in ((new[i], ranges[i]) for i in new) if o[1] > o[0]]
    report = {**calibration.as_dict(), "tensors": len(new),
              "median_range_kept": float(np.median(shrink)) if shrink else 1.0,
              "min_range_kept": float(np.min(shrink)) if shrink else 1.0}
    return set_ranges(calibrated, new), report


def quantize_calibrated(calibrated: bytes, per_channel: bool = True, io_type: str = "float32",
                        float_nodes=(), debug: bool = False) -> bytes:
    """Full-integer model from a calibrated one (what the converter does after calibrating)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    dtype = tf.as_dtype(io_type)  # config.IO_TYPES are TensorFlow's dtype names
    with quiet_absl():
        return tfl_convert.mlir_quantize(calibrated, disable_per_channel=not per_channel,
                                         input_data_type=dtype, output_data_type=dtype,
                                         enable_numeric_verify=debug,
                                         denylisted_nodes=sorted(float_nodes) or None)


def tensor_ranges(blob: bytes) -> dict:
    """{tensor name: (min, max)} of a quantized model's int8 activations, from scale and zero point."""
    from ..deploy import make_interpreter

    interp = make_interpreter(blob, threads=1, delegate=False)
    out = {}
    for d in interp.get_tensor_details():
        q = d["quantization_parameters"]
        if np.dtype(d["dtype"]) != np.int8 or len(q["scales"]) != 1:
            continue
        s, z = float(q["scales"][0]), int(q["zero_points"][0])
        out[d["name"]] = (s * (-128 - z), s * (127 - z))
    return out
