"""ViT and DeiT backbones: registration and pretrained-checkpoint import.

Checkpoints people actually have are timm or Hugging Face files (`.safetensors` or `.npz`). They
are read with numpy (no PyTorch) and mapped onto our layers by name; a missing, unexpected or
mis-shaped tensor is an error that lists the names. Position embeddings are interpolated when the
model's patch grid differs from the checkpoint's.
"""
from __future__ import annotations

import re

import numpy as np

from .checkpoint import CheckpointLoader, assign, check_names, conv_kernel, fuse_qkv, read_tensors
from .registry import PRE_TF, PRE_TORCH, Backbone, gelu_choice, register, register_layer_module

# name: (embed dim, depth, heads, distillation token, preprocessing)
SPECS = {
    "vit_tiny_16": (192, 12, 3, False, PRE_TF),
    "vit_small_16": (384, 12, 6, False, PRE_TF),
    "vit_base_16": (768, 12, 12, False, PRE_TF),
    "deit_tiny": (192, 12, 3, False, PRE_TORCH),
    "deit_small": (384, 12, 6, False, PRE_TORCH),
    "deit_base": (768, 12, 12, False, PRE_TORCH),
    "deit_tiny_distilled": (192, 12, 3, True, PRE_TORCH),
    "deit_small_distilled": (384, 12, 6, True, PRE_TORCH),
    "deit_base_distilled": (768, 12, 12, True, PRE_TORCH),
}
PATCH = 16


def _build(bb: Backbone, inp, options):
    from .vit_layers import vit_backbone

    kw = bb.app_kwargs
    gelu = gelu_choice(options)
    feats = vit_backbone(inp, kw["dim"], kw["depth"], kw["heads"], PATCH, distilled=kw["distilled"], gelu=gelu)
    grid = int(inp.shape[1]) // PATCH
    return CheckpointLoader(inp, feats, lambda layers, path: load_checkpoint(layers, path, kw, grid)), feats


register_layer_module("gram_tf.models.vit_layers")
for _name, (_dim, _depth, _heads, _dist, _pre) in SPECS.items():
    register(Backbone(
        name=_name, family="DeiT" if _name.startswith("deit") else "ViT", default_size=224, min_size=32,
        build=_build, preprocessing=dict(_pre), source="gram_tf (Keras 2)", patch_size=PATCH,
        app_kwargs={"dim": _dim, "depth": _depth, "heads": _heads, "distilled": _dist},
        notes="weights: a timm/Hugging Face .safetensors or .npz file" + (", distillation token" if _dist else ""),
    ))


# ------------------------------------------------------------------------------ checkpoints

_HF_BLOCK = {
    "layernorm_before.weight": "norm1.weight", "layernorm_before.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
    "layernorm_after.weight": "norm2.weight", "layernorm_after.bias": "norm2.bias",
    "intermediate.dense.weight": "mlp.fc1.weight", "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight", "output.dense.bias": "mlp.fc2.bias",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
}
# classifier heads of the source model: dropped, since gram_tf trains its own head
_IGNORED = re.compile(r"^(head|head_dist|fc_norm|pre_logits|classifier|cls_classifier|distillation_classifier)\b")


def to_timm_names(tensors: dict) -> dict:
    """Rename a Hugging Face ViT/DeiT state dict to timm's names (timm names pass through)."""
    if not any(k.startswith(("vit.", "deit.", "embeddings.", "encoder.")) for k in tensors):
        return dict(tensors)
    out, qkv = {}, {}
    for key, value in tensors.items():
        k = re.sub(r"^(vit|deit)\.", "", key)
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", k)
        if m:
            i, rest = m.groups()
            qm = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if qm:
                qkv.setdefault((i, qm.group(2)), {})[qm.group(1)] = value
                continue
            out[f"blocks.{i}.{_HF_BLOCK.get(rest, rest)}"] = value
        else:
            out[_HF_TOP.get(k, k)] = value
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = fuse_qkv(parts, f"blocks.{i}.attn.qkv.{kind}")
    return out


def _resize_pos_embed(pos: np.ndarray, n_prefix: int, grid: int) -> np.ndarray:
    import tensorflow as tf

    prefix, patches = pos[:, :n_prefix], pos[:, n_prefix:]
    old = int(round(np.sqrt(patches.shape[1])))
    if old == grid:
        return pos
    img = patches.reshape(1, old, old, -1)
    resized = tf.image.resize(img, [grid, grid], method="bicubic").numpy().reshape(1, grid * grid, -1)
    return np.concatenate([prefix, resized.astype(pos.dtype)], axis=1)


def expected_names(spec: dict) -> list[str]:
    names = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"]
    if spec["distilled"]:
        names.append("dist_token")
    for i in range(spec["depth"]):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            names += [f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"]
    return names


def load_checkpoint(layers: dict, path, spec: dict, grid: int) -> None:
    """Copy a timm / Hugging Face checkpoint into our layers (torch layouts transposed)."""
    tensors = to_timm_names(read_tensors(path))
    check_names(path, tensors, expected_names(spec), _IGNORED, "this transformer")
    n_prefix = 2 if spec["distilled"] else 1
    assignments = []  # (layer, [arrays])

    def dense(prefix):
        return [tensors[f"{prefix}.weight"].T, tensors[f"{prefix}.bias"]]

    def norm(prefix):
        return [tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"]]

    w = tensors["patch_embed.proj.weight"]
    assignments.append(("patch_embed", [conv_kernel(w), tensors["patch_embed.proj.bias"]]))
    tokens = [tensors["cls_token"]] + ([tensors["dist_token"]] if spec["distilled"] else [])
    assignments.append(("class_token", tokens))
    assignments.append(("pos_embed", [_resize_pos_embed(tensors["pos_embed"], n_prefix, grid)]))
    for i in range(spec["depth"]):
        b = f"blocks.{i}"
        assignments += [(f"block{i}_norm1", norm(f"{b}.norm1")), (f"block{i}_qkv", dense(f"{b}.attn.qkv")),
                        (f"block{i}_proj", dense(f"{b}.attn.proj")), (f"block{i}_norm2", norm(f"{b}.norm2")),
                        (f"block{i}_fc1", dense(f"{b}.mlp.fc1")), (f"block{i}_fc2", dense(f"{b}.mlp.fc2"))]
    assignments.append(("norm", norm("norm")))
    assign(path, layers, assignments)
