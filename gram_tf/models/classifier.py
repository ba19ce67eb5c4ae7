"""The flat classifier built on a registered backbone (image -> backbone -> GAP -> dropout ->
softmax), its feature extractor, and MAC counting."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import GramTFError
from .registry import Backbone, check_input_size, get_backbone
from .weights import resolve_weights

HEAD_POOL, HEAD_DROPOUT, HEAD_DENSE = "head_pool", "head_dropout", "head_dense"
HEAD_LAYERS = (HEAD_POOL, HEAD_DROPOUT, HEAD_DENSE)


def _load_backbone_weights(base, bb: Backbone, path: Path) -> Optional[dict]:
    """Load the file; a gram_tf importer may return {"preprocessing": ...} when the file's source
    expects other input than the registry's default (e.g. Hugging Face MobileViT: BGR)."""
    try:
        loaded = base.load_weights(str(path))
        return loaded if isinstance(loaded, dict) else None
    except GramTFError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        expected = f" (expected e.g. {bb.imagenet_files[0]})" if bb.imagenet_files else ""
        raise GramTFError(
            f"weights file {path} does not fit backbone {bb.name}{expected}: {reason}") from None


def build_classifier(backbone: str, n_classes: int, input_size: Optional[int] = None,
                     weights: Optional[str] = "imagenet", weights_dir=None, dropout: float = 0.2,
                     batch_size: Optional[int] = None, options: Optional[dict] = None):
    """A flat tf_keras functional model: image -> backbone layers -> GAP -> dropout -> softmax.

    Returns (model, info) where info has the backbone name, input size, preprocessing and the
    weights file used.
    """
    import tf_keras

    bb = get_backbone(backbone)
    size = int(input_size or bb.default_size)
    check_input_size(bb, size)
    if n_classes < 2:
        raise GramTFError(f"a classifier needs at least 2 classes, got {n_classes}")
    weights_path = resolve_weights(bb, weights, weights_dir)
    inp = tf_keras.Input((size, size, 3), batch_size=batch_size, name="image")
    # a builder may shape its graph by the file's source (Hugging Face PoolFormer normalizes before pooling)
    base, features = bb.build(bb, inp, {**(options or {}), "weights_file": str(weights_path) if weights_path else None})
    from_file = _load_backbone_weights(base, bb, weights_path) if weights_path is not None else None
    if len(features.shape) == 4:
        pooled = tf_keras.layers.GlobalAveragePooling2D(name=HEAD_POOL)(features)
    else:  # transformers return the pooled token already
        pooled = tf_keras.layers.Activation("linear", name=HEAD_POOL)(features)
    x = tf_keras.layers.Dropout(dropout, name=HEAD_DROPOUT)(pooled)
    out = tf_keras.layers.Dense(n_classes, activation="softmax", name=HEAD_DENSE)(x)
    model = tf_keras.Model(inp, out, name=f"{bb.name}_classifier")
    info = {
        "backbone": bb.name,
        "input_size": size,
        "preprocessing": {"resize": "squash", **((from_file or {}).get("preprocessing") or bb.preprocessing)},
        "weights": str(weights_path) if weights_path else "none",
        "n_backbone_layers": sum(1 for layer in model.layers if layer.name not in HEAD_LAYERS) - 1,
    }
    return model, info


def feature_extractor(model):
    """The sub-graph from the image to the pooled features (shares the model's layers)."""
    import tf_keras

    return tf_keras.Model(model.input, model.get_layer(HEAD_POOL).output, name="features")


def backbone_layers(model) -> list:
    """Backbone layers of a flat classifier, input to top (excludes the input and the head)."""
    import tf_keras

    return [layer for layer in model.layers
            if layer.name not in HEAD_LAYERS and not isinstance(layer, tf_keras.layers.InputLayer)]


def _shape(s):
    return list(s[0] if isinstance(s, list) else s)


def count_macs(model) -> int:
    """Multiply-accumulates per image for conv, depthwise, dense and attention layers."""
    import numpy as np
    import tf_keras

    L = tf_keras.layers
    total = 0
    for layer in model.layers:
        try:
            out = _shape(layer.output_shape)
            inp = _shape(layer.input_shape)
        except (AttributeError, RuntimeError):
            continue
        if isinstance(layer, L.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += int(np.prod(out[1:])) * kh * kw
        elif isinstance(layer, L.SeparableConv2D):  # depthwise then pointwise (Xception)
            kh, kw = layer.kernel_size
            mid = inp[-1] * layer.depth_multiplier
            total += int(np.prod(out[1:-1])) * mid * (kh * kw + out[-1])
        elif isinstance(layer, L.Conv2D):
            kh, kw = layer.kernel_size
            groups = getattr(layer, "groups", 1) or 1
            total += int(np.prod(out[1:])) * kh * kw * inp[-1] // groups
        elif isinstance(layer, L.Dense):
            total += int(np.prod(inp[1:])) * out[-1]
        elif hasattr(layer, "count_macs"):  # our transformer layers report their own
            total += int(layer.count_macs())
    return int(total)
