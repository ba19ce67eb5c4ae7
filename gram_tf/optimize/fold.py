"""BatchNorm folded into the convolution before it: the kernels the `.tflite` ends up with.

Magnitude pruning of an unfolded kernel ranks weights without the BatchNorm scale
gamma / sqrt(var + eps) that multiplies them at inference, and that scale spans orders of
magnitude across MobileNet channels, so the wrong weights are cut; and the frozen BatchNorm
statistics stop matching the pruned convolution. Folding first removes both problems: the folded
kernel is what runs, and its bias is trained with the rest during the fine-tune.
"""
from __future__ import annotations

import copy

import numpy as np

# The layers with a kernel: what a BatchNorm folds into, equalization scales and int8 rounds (one list
# for fold, equalize and bias_correction)
LINEAR = ("Conv2D", "DepthwiseConv2D", "Dense")


def _refs(node) -> list:
    """The [layer, node, tensor, kwargs] references of one inbound node (TFOpLambda layers store a
    single flat reference instead of a list of them)."""
    return [node] if node and isinstance(node[0], str) else list(node)


def _inbound_names(layer_cfg) -> list[str]:
    return [ref[0] for node in layer_cfg.get("inbound_nodes", []) for ref in _refs(node)]


def layer_graph(model) -> tuple[dict, dict, dict, set]:
    """A functional model's config as a graph: (config, {name: layer config}, {name: names of
    the layers that read it}, names of the output layers)."""
    cfg = model.get_config()
    by_name = {l["name"]: l for l in cfg["layers"]}
    consumers: dict[str, list[str]] = {}
    for l in cfg["layers"]:
        for src in _inbound_names(l):
            consumers.setdefault(src, []).append(l["name"])
    return cfg, by_name, consumers, {ref[0] for ref in cfg["output_layers"]}


def foldable_pairs(model) -> list[tuple[str, str]]:
    """(producer, batchnorm) pairs where the BatchNorm normalises the last axis of a linear
    Conv2D/DepthwiseConv2D/Dense whose only consumer it is."""
    cfg, by_name, consumers, outputs = layer_graph(model)
    pairs = []
    for l in cfg["layers"]:
        if l["class_name"] != "BatchNormalization":
            continue
        srcs = _inbound_names(l)
        if len(srcs) != 1 or len(l["inbound_nodes"]) != 1:
            continue
        prod = by_name[srcs[0]]
        axis = l["config"].get("axis")
        axis = list(axis) if isinstance(axis, (list, tuple)) else [axis]
        rank = len(model.get_layer(prod["name"]).output_shape)
        if (prod["class_name"] in LINEAR and prod["config"].get("activation", "linear") == "linear"
                and consumers.get(prod["name"]) == [l["name"]] and prod["name"] not in outputs
                and axis in ([-1], [rank - 1])):
            pairs.append((prod["name"], l["name"]))
    return pairs


def _folded_weights(producer, bn) -> list[np.ndarray]:
    """Kernel and bias of producer followed by bn, as one layer."""
    weights = producer.get_weights()
    kernel = weights[0]
    bias = weights[1] if len(weights) > 1 else np.zeros(kernel.shape[-1] if type(producer).__name__ != "DepthwiseConv2D"
                                                         else kernel.shape[-2] * kernel.shape[-1], kernel.dtype)
    cfg = bn.get_config()
    params = dict(zip([w.name.split("/")[-1].split(":")[0] for w in bn.weights], bn.get_weights()))
    n = params["moving_mean"].shape[0]
    gamma = params.get("gamma", np.ones(n, np.float32)) if cfg.get("scale", True) else np.ones(n, np.float32)
    beta = params.get("beta", np.zeros(n, np.float32)) if cfg.get("center", True) else np.zeros(n, np.float32)
    scale = gamma / np.sqrt(params["moving_variance"] + cfg["epsilon"])
    if type(producer).__name__ == "DepthwiseConv2D":
        # output channel c * multiplier + m comes from input channel c
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        kernel = kernel * scale
    bias = (bias - params["moving_mean"]) * scale + beta
    return [kernel.astype(np.float32), bias.astype(np.float32)]


def fold_batchnorm(model):
    """A new model with every foldable BatchNorm merged into its producer; returns (model, pairs).

    Every other layer keeps its weights; the result computes the same function as `model` in
    inference mode (to float rounding)."""
    import tf_keras

    from ..models import custom_objects

    pairs = foldable_pairs(model)
    if not pairs:
        return model, []
    bn_to_producer = {bn: prod for prod, bn in pairs}
    cfg = copy.deepcopy(model.get_config())
    layers = []
    for l in cfg["layers"]:
        if l["name"] in bn_to_producer:
            continue
        if l["name"] in {p for p, _ in pairs}:
            l["config"]["use_bias"] = True
        for node in l.get("inbound_nodes", []):
            for ref in _refs(node):
                ref[0] = bn_to_producer.get(ref[0], ref[0])
        layers.append(l)
    cfg["layers"] = layers
    for ref in cfg["output_layers"]:
        ref[0] = bn_to_producer.get(ref[0], ref[0])
    with tf_keras.utils.custom_object_scope(custom_objects()):
        folded = tf_keras.Model.from_config(cfg)
    producer_bn = dict(pairs)
    for layer in folded.layers:
        src = model.get_layer(layer.name)
        if layer.name in producer_bn:
            layer.set_weights(_folded_weights(src, model.get_layer(producer_bn[layer.name])))
        elif layer.weights:
            layer.set_weights(src.get_weights())
    return folded, pairs
