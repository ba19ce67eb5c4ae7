"""Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization and
Bias Correction", ICCV 2019) on a BatchNorm-folded Keras model.

Per-tensor int8 gives a weight tensor one scale. After BatchNorm folding, MobileNet's depthwise
kernels have per-channel ranges that differ by orders of magnitude, so one scale rounds most
channels to zero. For two layers A -> B where A's output channel i feeds only B's input channel i
(through zero padding, pooling, ReLU), scaling A's channel i (kernel and bias) by 1/s_i and B's
input channel i by s_i computes the same function for any positive s_i, since those glue layers
commute with a positive per-channel scale. s_i = sqrt(r1_i / r2_i) (r = per-channel absolute
max) gives both the same range sqrt(r1_i r2_i); iterating over all pairs converges for chains.

ReLU6 does not commute: relu6(x / s) * s clips at 6 s, not 6. `relu6="relu"` (DFQ's choice)
replaces the cap by a plain ReLU on equalized pairs: the float model then differs only where an
activation exceeded 6, and the int8 range of that tensor comes from calibration. Its cost on the
float model is measured by the benchmark (`benchmarks/experiments/int8_recipes.py`), not assumed.
`relu6="skip"` leaves such pairs alone (exact, but MobileNets then barely change).
"""
from __future__ import annotations

import copy

import numpy as np

from .fold import LINEAR, _inbound_names, fold_batchnorm, layer_graph

# layers that commute with a positive per-channel scale of their (only) input
PASSTHROUGH = ("ZeroPadding2D", "Dropout", "GlobalAveragePooling2D", "AveragePooling2D", "MaxPooling2D",
               "SpatialDropout2D")
RELU6_POLICIES = ("relu", "skip")


def _is_linear(cfg: dict, producer: bool = True) -> bool:
    """A Conv2D (groups 1), DepthwiseConv2D (multiplier 1) or Dense; as the producer A its own
    activation must commute with the scale too (the consumer B's activation comes after)."""
    c = cfg["config"]
    if cfg["class_name"] not in LINEAR:
        return False
    if cfg["class_name"] == "Conv2D" and c.get("groups", 1) != 1:
        return False
    if cfg["class_name"] == "DepthwiseConv2D" and c.get("depth_multiplier", 1) != 1:
        return False
    return not producer or c.get("activation", "linear") in ("linear", "relu", "relu6")


def _relu_kind(cfg: dict):
    """'relu', 'relu6' or None (not a scale-commuting ReLU) for a glue layer."""
    c = cfg["config"]
    if cfg["class_name"] == "ReLU":
        if c.get("negative_slope", 0.0) or c.get("threshold", 0.0):
            return None
        cap = c.get("max_value")
        return "relu" if cap is None else ("relu6" if float(cap) == 6.0 else None)
    if cfg["class_name"] == "Activation" and c.get("activation") in ("relu", "relu6", "linear"):
        return {"linear": "linear"}.get(c["activation"], c["activation"])
    return None


def equalizable_pairs(model) -> list[dict]:
    """Every A -> glue -> B chain where channel i of A reaches only channel i of B.

    Each pair: {"a", "b", "relu6": [names of capped ReLUs between them (A's own fused relu6
    included)], "rectified": whether a ReLU sits between them}. A and B are Conv2D (groups 1),
    DepthwiseConv2D (multiplier 1) or Dense; the glue layers are in PASSTHROUGH or ReLU (capped at 6
    or not); every tensor on the way has one consumer.
    """
    cfg, by_name, consumers, outputs = layer_graph(model)
    pairs = []
    for l in cfg["layers"]:
        if not _is_linear(l) or len(l.get("inbound_nodes", [])) != 1:
            continue
        capped = [l["name"]] if l["config"].get("activation") == "relu6" else []
        rectified = l["config"].get("activation") in ("relu", "relu6")
        name = l["name"]
        while True:
            nxt = consumers.get(name, [])
            if len(nxt) != 1 or name in outputs:
                break
            c = by_name[nxt[0]]
            if len(c.get("inbound_nodes", [])) != 1 or len(_inbound_names(c)) != 1:
                break
            if _is_linear(c, producer=False):
                pairs.append({"a": l["name"], "b": c["name"], "relu6": capped, "rectified": rectified})
                break
            kind = _relu_kind(c)
            if c["class_name"] in PASSTHROUGH or kind in ("relu", "linear"):
                rectified = rectified or kind == "relu"
                name = c["name"]
            elif kind == "relu6":
                capped, rectified = capped + [c["name"]], True
                name = c["name"]
            else:
                break
    return pairs


def _out_ranges(kind: str, kernel: np.ndarray) -> np.ndarray:
    """Per output channel absolute max (depthwise: per channel, multiplier 1)."""
    if kind == "DepthwiseConv2D":
        return np.abs(kernel).max(axis=(0, 1, 3))
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)


def _in_ranges(kind: str, kernel: np.ndarray) -> np.ndarray:
    """Per input channel absolute max."""
    if kind == "Dense":
        return np.abs(kernel).max(axis=1)
    return np.abs(kernel).max(axis=tuple(i for i in range(kernel.ndim) if i != kernel.ndim - 2))


def _zero_dead_inputs(kinds: dict, weights: dict, pair: dict) -> int:
    """Zero B's input channels that read a channel of A with an all-zero kernel and a bias the
    ReLU sends to 0: that input is 0 for every image, so B's weights there are free, and a
    large one (BatchNorm folding leaves them, e.g. MobileNetV2's first depthwise) would set the
    whole tensor's per-tensor int8 scale. Exact for all inputs. Returns how many were zeroed."""
    if not pair["rectified"]:
        return 0
    a, b = pair["a"], pair["b"]
    kernel, bias = weights[a][0], weights[a][1]
    fan_in = kernel.size // kernel.shape[-1] if kinds[a] != "DepthwiseConv2D" else kernel.shape[0] * kernel.shape[1]
    # BatchNorm folding leaves kernels of ~1e-20 where gamma was ~0: "all zero" means no input
    # up to |x| = 1e3 can lift the pre-activation above 0
    dead = _out_ranges(kinds[a], kernel) * fan_in * 1e3 < -bias
    dead &= _in_ranges(kinds[b], weights[b][0]) > 0
    if dead.any():
        if kinds[b] == "Dense":
            weights[b][0][dead, :] = 0.0
        else:
            weights[b][0][:, :, dead, :] = 0.0
    return int(dead.sum())


def _zero_unread_outputs(kinds: dict, weights: dict, pair: dict) -> int:
    """Zero A's output channels (kernel and bias) that B never reads: B's weights on that input are
    all zero (pruning leaves many: MobileNetV2-0.5 at 75 % reads 155 of Conv_1's 1280 channels).
    Exact, since A's channel i reaches only B's input channel i; it saves those weights' bytes, and a
    large unread channel no longer sets A's per-tensor int8 scale. Returns how many were zeroed."""
    a, b = pair["a"], pair["b"]
    kernel, bias = weights[a][0], weights[a][1]
    unread = (_in_ranges(kinds[b], weights[b][0]) == 0) & ((_out_ranges(kinds[a], kernel) > 0) | (bias != 0))
    if unread.any():
        if kinds[a] == "DepthwiseConv2D":
            kernel[:, :, unread, :] = 0.0
        else:
            kernel[..., unread] = 0.0
        bias[unread] = 0.0
    return int(unread.sum())


def _scale_out(kind: str, weights: list, s: np.ndarray) -> None:
    if kind == "DepthwiseConv2D":
        weights[0] = weights[0] / s.reshape(1, 1, -1, 1)
    else:
        weights[0] = weights[0] / s
    weights[1] = weights[1] / s


def _scale_in(kind: str, weights: list, s: np.ndarray) -> None:
    if kind == "Dense":
        weights[0] = weights[0] * s.reshape(-1, 1)
    else:
        weights[0] = weights[0] * s.reshape(1, 1, -1, 1)


def channel_range_spread(model) -> dict:
    """Per weight tensor, median channel range / largest channel range (1.0 = even; per-tensor int8
    gives a channel with ratio r about 127 r levels), summarised over the model's LINEAR layers."""
    ratios = {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in LINEAR or not layer.get_weights():
            continue
        r = _out_ranges(kind, layer.get_weights()[0])
        r = r[r > 0]  # channels pruned or zeroed empty hold no value to round
        if r.size:
            ratios[layer.name] = float(np.median(r) / r.max())
    values = np.array(list(ratios.values())) if ratios else np.array([1.0])
    return {"median": float(np.median(values)), "worst": float(values.min()),
            "worst_layer": min(ratios, key=ratios.get) if ratios else None}


def _chain_maxima(model, pairs: list[dict], images: np.ndarray, batch_size: int = 16) -> dict:
    """Per pair, each channel's largest |activation| on the tensor B reads, over `images`."""
    import tf_keras

    tensors = [model.get_layer(p["b"]).input for p in pairs]
    probe = tf_keras.Model(model.input, tensors)
    maxima = [None] * len(pairs)
    for i in range(0, len(images), batch_size):
        acts = probe(images[i: i + batch_size], training=False)
        acts = acts if isinstance(acts, (list, tuple)) else [acts]
        for j, a in enumerate(acts):
            m = np.abs(np.asarray(a)).reshape(-1, a.shape[-1]).max(axis=0)
            maxima[j] = m if maxima[j] is None else np.maximum(maxima[j], m)
    return {p["a"] + "->" + p["b"]: m for p, m in zip(pairs, maxima)}


def equalize(model, images: np.ndarray | None = None, relu6: str = "relu", iterations: int = 20,
             tolerance: float = 1e-3):
    """A new model with BatchNorm folded and the channel ranges of every equalizable pair evened
    out; returns (model, report).

    Without `images` (data-free, as in the paper) the scales are unbounded and `relu6` decides
    what happens to ReLU6 caps. With calibration `images` (normalized float32), each channel's
    scale is bounded so that the activation tensor between A and B keeps its measured range
    (a channel with peak a_i in a tensor with peak M gets s_i >= a_i / M: no channel grows past
    the others, which per-tensor activation quantization could not absorb), and channels that
    reach a ReLU6 cap (or are never active) on the images keep s_i = 1: the caps stay, and the
    model computes the same function as before on the calibration images.
    """
    import tf_keras

    from ..models import custom_objects

    if relu6 not in RELU6_POLICIES:
        raise ValueError(f"relu6 must be one of {RELU6_POLICIES}, got {relu6!r}")
    folded, folded_pairs = fold_batchnorm(model)
    pairs = equalizable_pairs(folded)
    if relu6 == "skip" and images is None:
        pairs = [p for p in pairs if not p["relu6"]]
    before = channel_range_spread(folded)
    lifted = sorted({n for p in pairs for n in p["relu6"]}) if images is None else []
    lower, upper = {}, {}  # per pair: bounds on the cumulative scale of each channel
    if images is not None and pairs:
        maxima = _chain_maxima(folded, pairs, images)
        for p in pairs:
            key = p["a"] + "->" + p["b"]
            a = maxima[key]
            peak = float(a.max()) if a.size else 0.0
            lower[key] = a / peak if peak > 0 else np.ones_like(a)
            upper[key] = np.full_like(a, np.inf)
            # dead channels (never active on the images) keep s = 1: any scale is exact on the
            # data, and an unbounded one would blow up the weight tensor's range
            fixed = a <= 1e-6 * peak
            if p["relu6"]:
                fixed |= a >= 6.0 * (1 - 1e-6)
            lower[key][fixed] = 1.0
            upper[key][fixed] = 1.0
    cfg = copy.deepcopy(folded.get_config())
    scaled_out = {p["a"] for p in pairs}
    for l in cfg["layers"]:
        if l["name"] in scaled_out:
            l["config"]["use_bias"] = True  # its channels' biases scale with it
        if l["name"] in lifted:
            if l["class_name"] == "ReLU":
                l["config"]["max_value"] = None
            else:  # Activation('relu6') or a LINEAR layer's fused relu6
                l["config"]["activation"] = "relu"
    with tf_keras.utils.custom_object_scope(custom_objects()):
        out = tf_keras.Model.from_config(cfg)
    kinds = {l.name: type(l).__name__ for l in folded.layers}
    weights = {l.name: [w.copy() for w in l.get_weights()] for l in folded.layers}
    for name in scaled_out:  # a layer without bias gets one (zeros)
        if len(weights[name]) == 1:
            k = weights[name][0]
            n = k.shape[-2] if kinds[name] == "DepthwiseConv2D" else k.shape[-1]
            weights[name].append(np.zeros(n, np.float32))
    zeroed = sum(_zero_dead_inputs(kinds, weights, p) for p in pairs)
    unread = 0
    for _ in range(len(pairs)):  # backwards along chains: a zeroed depthwise channel frees the expansion's
        step = sum(_zero_unread_outputs(kinds, weights, p) for p in reversed(pairs))
        unread += step
        if not step:
            break
    total = {p["a"] + "->" + p["b"]: None for p in pairs}
    done = 0
    for done in range(1, iterations + 1):
        worst = 0.0
        for p in pairs:
            a, b, key = p["a"], p["b"], p["a"] + "->" + p["b"]
            r1 = _out_ranges(kinds[a], weights[a][0])
            r2 = _in_ranges(kinds[b], weights[b][0])
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            # a kernel channel of A pruned empty: the channel is the constant act(bias), with no
            # weights of A to balance. Left at s = 1 its B channel keeps its range and can set B's
            # per-tensor scale alone (MobileNetV2-0.5 at 75 %: a 10x depthwise channel behind an
            # empty stem channel, 0.87 test accuracy); bring it down to the pair's largest
            # equalized range. Never up: the constant's int8 rounding in A's output reaches B times
            # s, and bias correction only sees weight rounding (MobileNet v1-0.25 per-tensor lost
            # a test image when such channels were scaled up as well)
            const = (r1 == 0) & (r2 > 0)
            if const.any() and ok.any():
                s[const] = np.minimum(1.0, np.sqrt(r1[ok] * r2[ok]).max() / r2[const])
            if key in lower:
                cum = total[key] if total[key] is not None else np.ones_like(s)
                s = np.clip(cum * s, lower[key], upper[key]) / cum
            total[key] = s if total[key] is None else total[key] * s
            _scale_out(kinds[a], weights[a], s)
            _scale_in(kinds[b], weights[b], s)
            worst = max(worst, float(np.abs(np.log(s)).max()) if s.size else 0.0)
        if worst < tolerance:
            break
    for layer in out.layers:
        if layer.weights:
            layer.set_weights([x.astype(np.float32) for x in weights[layer.name]])
    report = {"pairs": len(pairs), "folded_batchnorm": len(folded_pairs), "iterations": done,
              "dead_inputs_zeroed": zeroed, "unread_outputs_zeroed": unread,
              "data_aware": images is not None, "relu6_lifted": lifted,
              "spread_before": before, "spread_after": channel_range_spread(out)}
    return out, report
