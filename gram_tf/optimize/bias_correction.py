"""Bias correction of int8 weight error (Nagel et al. 2019, empirical variant).

Rounding a kernel W to int8 gives W + dW, and dW shifts every output channel's mean by
E[conv(x, dW)]: with per-tensor scales on narrow channels that shift is systematic, not noise, and
it pushes a classifier's logits toward one class. With calibration images, E[conv(x, dW)] is
measured on each layer's real inputs and subtracted from the layer's bias, so the int8 model's
mean output matches the float one's. The int8 weights themselves do not change (the converter
rounds the same float kernel the same way); only the float bias the converter quantizes to int32
does. `quantized_kernel` simulates the converter's symmetric int8 rounding (per output channel or
per tensor), on the BatchNorm-folded kernel that the converter quantizes.

`inputs="quantized"` measures each layer's inputs in the model whose upstream weights are already
int8-rounded and corrected (the error that reaches the layer), one layer at a time, at the cost of
one forward pass of the calibration images per layer; `inputs="float"` (one pass) uses the float
model's inputs.
"""
from __future__ import annotations

import copy

import numpy as np

from ..config import BIAS_CORRECTION_INPUTS
from .fold import LINEAR, fold_batchnorm


def quantized_kernel(kind: str, kernel: np.ndarray, per_channel: bool = True, bits: int = 8) -> np.ndarray:
    """The kernel after TFLite's symmetric weight quantization ([-127, 127], zero point 0)."""
    qmax = 2 ** (bits - 1) - 1
    if not per_channel:
        amax = np.abs(kernel).max()
        scale = amax / qmax if amax > 0 else 1.0
    elif kind == "DepthwiseConv2D":  # TFLite's depthwise kernel [1, h, w, C*m]: one scale per output channel
        amax = np.abs(kernel).max(axis=(0, 1), keepdims=True)
        scale = np.where(amax > 0, amax / qmax, 1.0)
    else:  # Conv2D [h, w, in, out], Dense [in, out]: per output channel (last axis)
        amax = np.abs(kernel).max(axis=tuple(range(kernel.ndim - 1)), keepdims=True)
        scale = np.where(amax > 0, amax / qmax, 1.0)
    # TFLite rounds half away from zero
    q = np.clip(np.sign(kernel) * np.floor(np.abs(kernel) / scale + 0.5), -qmax, qmax)
    return (q * scale).astype(np.float32)


def _apply(layer, x, kernel):
    """The layer's linear part (no bias, no activation) with `kernel`, on input batch `x`."""
    import tensorflow as tf

    kind = type(layer).__name__
    if kind == "Dense":
        return tf.tensordot(x, kernel, axes=1)
    strides = (1, *layer.strides, 1)
    padding = layer.padding.upper()
    dilations = layer.dilation_rate
    if kind == "DepthwiseConv2D":
        return tf.nn.depthwise_conv2d(x, kernel, strides, padding, dilations=dilations)
    return tf.nn.conv2d(x, kernel, strides, padding, dilations=dilations)


def _mean_output(layer, inputs, kernel) -> np.ndarray:
    """E[conv(x, kernel)] per output channel over a list of input batches."""
    total, count = 0.0, 0
    for x in inputs:
        out = np.asarray(_apply(layer, x, kernel))
        out = out.reshape(-1, out.shape[-1])
        total = total + out.sum(axis=0, dtype=np.float64)
        count += out.shape[0]
    return (total / max(count, 1)).astype(np.float32)


def _mean_outputs(model, layers, images, batch_size, kernels: dict) -> dict:
    """{layer name: E[conv(x, kernels[name])]} with x each layer's input in `model`, one pass."""
    import tf_keras

    probe = tf_keras.Model(model.input, [l.input for l in layers])
    totals = {l.name: 0.0 for l in layers}
    count = {l.name: 0 for l in layers}
    for xb in _batches(images, batch_size):
        acts = probe(xb, training=False)
        acts = acts if isinstance(acts, (list, tuple)) else [acts]
        for layer, a in zip(layers, acts):
            y = np.asarray(_apply(layer, a, kernels[layer.name]))
            y = y.reshape(-1, y.shape[-1])
            totals[layer.name] = totals[layer.name] + y.sum(axis=0, dtype=np.float64)
            count[layer.name] += y.shape[0]
    return {name: (totals[name] / max(count[name], 1)).astype(np.float32) for name in totals}


def _layer_inputs(model, layer, images, batch_size) -> list:
    import tf_keras

    probe = tf_keras.Model(model.input, layer.input)
    return [np.asarray(probe(xb, training=False)) for xb in _batches(images, batch_size)]


def _with_biases(model):
    """A copy of the (folded) model in which every target layer has a bias."""
    import tf_keras

    from ..models import custom_objects

    cfg = copy.deepcopy(model.get_config())
    for l in cfg["layers"]:
        if l["class_name"] in LINEAR:
            l["config"]["use_bias"] = True
    with tf_keras.utils.custom_object_scope(custom_objects()):
        out = tf_keras.Model.from_config(cfg)
    for layer in out.layers:
        src = model.get_layer(layer.name).get_weights()
        if not layer.weights:
            continue
        if type(layer).__name__ in LINEAR and len(src) == 1:
            k = src[0]
            n = k.shape[-2] * k.shape[-1] if type(layer).__name__ == "DepthwiseConv2D" else k.shape[-1]
            src = [k, np.zeros(n, np.float32)]
        layer.set_weights(src)
    return out


def _batches(x: np.ndarray, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i: i + batch_size]


def correct_bias(model, images: np.ndarray, per_channel: bool = True, inputs: str = "float", bits: int = 8,
                 batch_size: int = 16):
    """A new (BatchNorm-folded) model whose biases cancel the mean shift of int8 weight rounding.

    `images`: normalized float32 calibration images (the model's input). Returns (model, report).
    """
    if inputs not in BIAS_CORRECTION_INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(BIAS_CORRECTION_INPUTS)}, got {inputs!r}")
    folded, _ = fold_batchnorm(model)
    out = _with_biases(folded)
    targets = [l for l in out.layers if type(l).__name__ in LINEAR]
    shifts = {}
    if inputs == "float":
        # E[conv(x_f, dW)] of every target layer, in one pass of the calibration images
        dws = {l.name: quantized_kernel(type(l).__name__, l.get_weights()[0], per_channel, bits) - l.get_weights()[0]
               for l in targets}
        shifts = _mean_outputs(out, targets, images, batch_size, dws)
        for layer in targets:
            k, b = layer.get_weights()
            layer.set_weights([k, b - shifts[layer.name]])
    else:
        # one layer at a time, in graph order, upstream layers already rounded and corrected: the
        # bias absorbs E[conv(x_f, W)] - E[conv(x_q, Wq)], the weight error plus what reaches the layer
        reference = _mean_outputs(out, targets, images, batch_size, {l.name: l.get_weights()[0] for l in targets})
        originals = {l.name: l.get_weights() for l in targets}
        for layer in targets:
            k, b = originals[layer.name]
            kq = quantized_kernel(type(layer).__name__, k, per_channel, bits)
            x_q = _layer_inputs(out, layer, images, batch_size)
            shifts[layer.name] = _mean_output(layer, x_q, kq) - reference[layer.name]
            layer.set_weights([kq, b - shifts[layer.name]])
        for layer in targets:  # the float kernels back: the converter rounds them itself
            layer.set_weights([originals[layer.name][0], layer.get_weights()[1]])
    report = {"layers": len(targets), "inputs": inputs, "per_channel": per_channel,
              "mean_abs_shift": float(np.mean([np.abs(s).mean() for s in shifts.values()])) if shifts else 0.0}
    return out, report
