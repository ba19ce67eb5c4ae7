"""PoolFormer backbones (MetaFormer with an average-pool token mixer): registration and timm
checkpoint import.

timm 1.0 names (`stem.conv`, `stages.S.downsample.conv`, `stages.S.blocks.B.{norm1,layer_scale1,
norm2,mlp.fc1,mlp.fc2,layer_scale2}`, `head.norm`); the classifier `head.fc` is dropped. timm pools
and then normalizes (`head.norm` is a LayerNorm on the pooled vector), so the features match
timm's pre-logits. Hugging Face's `sail/poolformer_*` files (the original implementation's weights
and head) apply a GroupNorm to the map and then pool: a model built from such a file is built that
way (the builder looks at the file's tensor names), so its features match Hugging Face's.
"""
from __future__ import annotations

import re

from .checkpoint import CheckpointLoader, assign, check_names, conv_kernel, read_tensors, tensor_names
from .registry import PRE_TORCH, Backbone, gelu_choice, register, register_layer_module

DIMS = (64, 128, 320, 512)
# name: (blocks per stage, layer-scale init)
SPECS = {
    "poolformer_s12": ((2, 2, 6, 2), 1e-5),
    "poolformer_s24": ((4, 4, 12, 4), 1e-5),
}
_IGNORED = re.compile(r"^head\.fc\.")


def expected_shapes(depths, dims=DIMS) -> dict:
    """Every tensor a timm checkpoint of this PoolFormer holds (torch layouts), head.fc excluded."""
    shapes = {"stem.conv.weight": (dims[0], 3, 7, 7), "stem.conv.bias": (dims[0],)}
    for s, (depth, dim) in enumerate(zip(depths, dims)):
        if s > 0:
            shapes[f"stages.{s}.downsample.conv.weight"] = (dim, dims[s - 1], 3, 3)
            shapes[f"stages.{s}.downsample.conv.bias"] = (dim,)
        for b in range(depth):
            p = f"stages.{s}.blocks.{b}"
            shapes.update({
                f"{p}.norm1.weight": (dim,), f"{p}.norm1.bias": (dim,), f"{p}.layer_scale1.scale": (dim,),
                f"{p}.norm2.weight": (dim,), f"{p}.norm2.bias": (dim,),
                f"{p}.mlp.fc1.weight": (4 * dim, dim, 1, 1), f"{p}.mlp.fc1.bias": (4 * dim,),
                f"{p}.mlp.fc2.weight": (dim, 4 * dim, 1, 1), f"{p}.mlp.fc2.bias": (dim,),
                f"{p}.layer_scale2.scale": (dim,),
            })
    shapes.update({"head.norm.weight": (dims[-1],), "head.norm.bias": (dims[-1],)})
    return shapes


_HF_BLOCK = {"before_norm": "norm1", "after_norm": "norm2", "output.conv1": "mlp.fc1", "output.conv2": "mlp.fc2"}


def is_hugging_face(names) -> bool:
    return any(str(k).startswith("poolformer.") for k in names)


def to_timm_names(tensors: dict) -> dict:
    """Rename a Hugging Face PoolFormer state dict to timm's names (timm names pass through);
    Hugging Face's final GroupNorm `norm` becomes `head.norm` (the builder put it before the pool)."""
    if not is_hugging_face(tensors):
        return dict(tensors)
    out = {}
    for key, value in tensors.items():
        m = re.match(r"poolformer\.encoder\.patch_embeddings\.(\d+)\.projection\.(weight|bias)$", key)
        b = re.match(r"poolformer\.encoder\.block\.(\d+)\.(\d+)\.(.+)$", key)
        if m:
            s_, kind = int(m.group(1)), m.group(2)
            out[f"stem.conv.{kind}" if s_ == 0 else f"stages.{s_}.downsample.conv.{kind}"] = value
        elif b:
            s_, j, rest = b.groups()
            if rest in ("layer_scale_1", "layer_scale_2"):
                rest = f"layer_scale{rest[-1]}.scale"
            else:
                stem, kind = rest.rsplit(".", 1)
                rest = f"{_HF_BLOCK.get(stem, stem)}.{kind}"
            out[f"stages.{s_}.blocks.{j}.{rest}"] = value
        elif key.startswith("norm."):
            out["head." + key] = value
        elif key.startswith("classifier."):
            out["head.fc." + key.split(".", 1)[1]] = value
        else:
            out[key] = value
    return out


def load_checkpoint(layers: dict, path, depths) -> None:
    tensors = to_timm_names(read_tensors(path))
    shapes = expected_shapes(depths)
    check_names(path, tensors, shapes, _IGNORED, "this PoolFormer")

    def conv(prefix):
        return [conv_kernel(tensors[f"{prefix}.weight"]), tensors[f"{prefix}.bias"]]

    def pair(prefix):
        return [tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]]

    assignments = [("stem", conv("stem.conv"))]
    for s, depth in enumerate(depths):
        if s > 0:
            assignments.append((f"stage{s}_down", conv(f"stages.{s}.downsample.conv")))
        for b in range(depth):
            src, dst = f"stages.{s}.blocks.{b}", f"stage{s}_block{b}"
            assignments += [
                (f"{dst}_norm1", pair(f"{src}.norm1")), (f"{dst}_ls1", [tensors[f"{src}.layer_scale1.scale"]]),
                (f"{dst}_norm2", pair(f"{src}.norm2")), (f"{dst}_fc1", conv(f"{src}.mlp.fc1")),
                (f"{dst}_fc2", conv(f"{src}.mlp.fc2")), (f"{dst}_ls2", [tensors[f"{src}.layer_scale2.scale"]]),
            ]
    assignments.append(("features_norm", pair("head.norm")))
    assign(path, layers, assignments)


def _build(bb: Backbone, inp, options):
    from .poolformer_layers import poolformer_backbone

    depths, layer_scale = bb.app_kwargs["depths"], bb.app_kwargs["layer_scale"]
    weights = options.get("weights_file")
    norm_first = bool(weights) and is_hugging_face(tensor_names(weights))
    feats = poolformer_backbone(inp, depths, DIMS, gelu=gelu_choice(options), layer_scale=layer_scale,
                                norm_first=norm_first)
    return CheckpointLoader(inp, feats, lambda layers, path: load_checkpoint(layers, path, depths)), feats


register_layer_module("gram_tf.models.poolformer_layers")
for _name, (_depths, _ls) in SPECS.items():
    register(Backbone(
        name=_name, family="PoolFormer", default_size=224, min_size=32, build=_build,
        preprocessing=dict(PRE_TORCH), source="gram_tf (Keras 2)",
        app_kwargs={"depths": _depths, "layer_scale": _ls},
        notes="weights: a timm or Hugging Face .safetensors/.npz file",
    ))
