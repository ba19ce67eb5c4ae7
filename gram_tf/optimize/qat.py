"""Quantization-aware training (QAT) and pruning-preserving QAT with TF-MOT.

TF-MOT's `quantize_model` fails on a whole model as soon as one layer is outside its registry
(Rescaling, TFOpLambda, LayerNormalization, MultiHeadAttention, a BatchNormalization it cannot fold
into a convolution...). We annotate only the layers its registry supports and that are safe to
annotate, leave the rest in float, and report which ones stayed float.
"""
from __future__ import annotations

from typing import Optional

from ..errors import GramTFError
from ..models import custom_objects

# BatchNormalization is only quantized when folded into the convolution right before it.
_FOLDABLE_INTO = ("Conv2D", "DepthwiseConv2D")


def _registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def _inbound_layers(layer) -> list:
    try:
        nodes = layer._inbound_nodes
    except AttributeError:
        return []
    out = []
    for node in nodes:
        inbound = node.inbound_layers
        out.extend(inbound if isinstance(inbound, (list, tuple)) else [inbound])
    return out


def _why_not_quantizable(layer, registry) -> Optional[str]:
    import tf_keras

    name = type(layer).__name__
    if isinstance(layer, tf_keras.layers.InputLayer):
        return "input"
    if hasattr(layer, "get_quantize_config"):  # our own layers may declare a config
        return None
    if isinstance(layer, tf_keras.layers.BatchNormalization):
        # not in the registry on its own, but TF-MOT folds an annotated Conv+BN pair
        parents = _inbound_layers(layer)
        if not parents or type(parents[0]).__name__ not in _FOLDABLE_INTO:
            return "BatchNormalization not directly after a convolution (cannot be folded)"
        return None
    if not registry.supports(layer):
        return f"{name} is not in TF-MOT's 8-bit registry"
    return None


def qat_layer_report(model) -> dict:
    registry = _registry()
    quantizable, floating = [], []
    n = 0
    for layer in model.layers:
        reason = _why_not_quantizable(layer, registry)
        if reason == "input":
            continue
        n += 1
        if reason:
            floating.append({"layer": layer.name, "reason": reason})
        else:
            quantizable.append(layer.name)
    return {"quantizable": quantizable, "float": floating, "n_quantizable": len(quantizable), "n_layers": n}


def annotate(model, report: Optional[dict] = None):
    """A clone of `model` with every quantizable layer annotated for QAT."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    report = report or qat_layer_report(model)
    targets = set(report["quantizable"])
    annotate_layer = tfmot.quantization.keras.quantize_annotate_layer

    def clone(layer):
        if layer.name in targets:
            return annotate_layer(layer)
        return layer

    with tf_keras.utils.custom_object_scope(custom_objects()):
        return tf_keras.models.clone_model(model, clone_function=clone)


def _prune_preserve_scheme():
    """TF-MOT's pruning-preserving 8-bit scheme, with its registry's `supports` narrowed.

    Why: that registry calls every layer without trainable weights supported, then asks the 8-bit
    registry for its config, which raises for layers it does not know (GELU, the attention cores,
    any custom glue). quantize_apply asks exactly that for the layer after a quantized one, so
    pqat-int8 failed on every transformer and MetaFormer. Narrowed, such a layer stays float, as
    in qat-int8.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        default_8bit_prune_preserve_quantize_scheme as pp_scheme,
        prune_preserve_quantize_registry as pp_registry,
    )

    eight_bit = _registry()

    class Registry(pp_registry.Default8bitPrunePreserveQuantizeRegistry):
        def supports(self, layer):
            return super().supports(layer) and eight_bit.supports(layer)

    class Scheme(pp_scheme.Default8BitPrunePreserveQuantizeScheme):
        def get_quantize_registry(self):
            return Registry()

    return Scheme()


def quantize_aware(model, preserve_sparsity: bool = False):
    """Apply (pruning-preserving) QAT to the annotated-where-possible model.

    Returns (qat_model, report). Raises GramTFError naming the layer when TF-MOT still fails.
    """
    import tensorflow_model_optimization as tfmot

    report = qat_layer_report(model)
    if not report["quantizable"]:
        raise GramTFError(f"no layer of {model.name} is supported by TF-MOT's QAT registry")
    annotated = annotate(model, report)
    scheme = _prune_preserve_scheme() if preserve_sparsity else None
    try:
        with tfmot.quantization.keras.quantize_scope(custom_objects()):
            if scheme is None:
                qat = tfmot.quantization.keras.quantize_apply(annotated)
            else:
                qat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise GramTFError(f"TF-MOT could not apply QAT to {model.name}: {msg}; "
                          "use the int8 (post-training) variant for this backbone") from None
    return qat, report
